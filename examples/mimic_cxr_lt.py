"""The paper's recipe on CXR-LT 2023, in one command.

1. a DADAM patch bank from the boxes of NIH ChestX-ray14, VinDr-CXR and ChestX-Det, cut at the training canvas;
2. two base models, FPSM (TResNet-L, stages 4+3+2, 448 px, ImageNet weights) on CXR-LT (MIMIC-CXR-JPG images), each
   with its best checkpoint chosen on held-out training patients: ``base_enc0`` without the binary encoding,
   ``base_enc1`` with it (``dataset_code="augmented"``: 1 marks a DADAM-changed sample, 0 an original and every test
   image);
3. ``dadam``: ``base_enc1``'s best weights fine-tuned for one epoch in the paper's composition (``mode="extend"``:
   the originals plus 50k/210k pasted and 50k/210k blended extra samples, the extras marked 1);
4. predict the development split with the three best checkpoints and average them (the paper's ensemble), writing
   per-model and ensemble reports (per-class AP/AUC/F1, mean row) and a summary.

The paper's ensemble is "base (binary encoding 0) + base (binary encoding 1) + the DADAM fine-tuned model"; reading
the encoding as off / on (the fine-tune continues the model that has it) is this recipe's interpretation.

The recipe needs ImageNet weights: ``--pretrained`` (timm's download or cache; at 448 px the backbone defaults to
``tresnet_l.miil_in1k_448``) or ``--backbone-weights FILE``; without either it refuses to start unless
``--from-scratch``. With the data::

    python examples/mimic_cxr_lt.py --cxr-lt /data/mimic-cxr-jpg --nih /data/nih --vindr /data/vindr \\
        --chestx-det /data/chestx-det/ChestX_Det_train.json --pretrained --out runs/cxr_lt

(``--cxr-lt`` holds ``files/`` and CXR-LT's ``train.csv``/``development.csv``; ``--nih`` holds ``images/`` and
``BBox_List_2017.csv``; ``--vindr`` holds ``train.csv`` and ``train/``; ``--chestx-det`` is the JSON, its images in
``train/`` next to it or in ``--chestx-det-images``.) Without data, on phantoms in the same layouts (``--tiny``:
resnet10t at 64 px from scratch, a few steps)::

    python examples/mimic_cxr_lt.py --phantom /tmp/phantom --tiny --out /tmp/cxr_lt_run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from dadam import PatchBank
from dadam.config import add_dadam_arguments, dadam_config_from_args
from dadam.data import default_num_workers
from dadam.files import atomic_write
from dadam.formats import read_chestx_det, read_cxr_lt, read_nih_boxes, read_vindr
from dadam.labels import CXR_LT_CLASSES
from fpsm.ensemble import average_predictions
from fpsm.evaluate import EvalConfig, predict
from fpsm.train import TrainConfig, fit, write_report
from fpsm.training import best_weights_file

MODELS = ("base_enc0", "base_enc1", "dadam")
"""The ensemble's members, in order: base without the binary encoding, base with it, the DADAM fine-tune."""


def default_backbone(canvas: int) -> str:
    """TResNet-L with the weights timm trained at the canvas: ``tresnet_l.miil_in1k_448`` at 448 px."""
    return "tresnet_l.miil_in1k_448" if canvas == 448 else "tresnet_l.miil_in1k"


def make_phantoms(root: Path, *, size: int, n_cxr: int, progress: bool, overwrite: bool) -> dict[str, Path]:
    """Phantom CXR-LT, NIH, VinDr and ChestX-Det datasets in their real layouts under ``root``."""
    from dadam.synthetic import generate

    n = {"cxr-lt": n_cxr, "nih": 24, "vindr": 12, "chestx-det": 16}
    return {
        k: generate(k, root / k, n=v, size=size, seed=i, progress=progress, overwrite=overwrite)
        for i, (k, v) in enumerate(n.items())
    }


def build_bank(args, *, chestx_det_size: tuple[int, int]) -> PatchBank:
    """One patch bank from the three box datasets."""
    nih, vindr = Path(args.nih), Path(args.vindr)
    cdet_json = Path(args.chestx_det)
    cdet_images = Path(args.chestx_det_images) if args.chestx_det_images else cdet_json.parent / "train"
    tables = [
        read_nih_boxes(nih / "BBox_List_2017.csv", image_root=nih / "images"),
        read_vindr(vindr / "train.csv", image_root=vindr / "train", raters=args.vindr_raters),
        read_chestx_det(cdet_json, image_size=chestx_det_size),
    ]
    for t in tables:
        print(t.attrs["report"].summary())
    boxes = pd.concat([t[[c for c in t.columns if c != "polygon"]] for t in tables], ignore_index=True)
    roots = {"nih": nih / "images", "vindr": vindr / "train", "chestx_det": cdet_images}
    bank = PatchBank.from_boxes(boxes, roots, canvas=args.canvas, progress=not args.quiet)
    print(f"{bank}\n{bank.report.summary()}")
    return bank


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--cxr-lt", help="MIMIC-CXR-JPG root with CXR-LT train.csv/development.csv")
    data.add_argument("--nih", help="NIH ChestX-ray14 root (images/, BBox_List_2017.csv)")
    data.add_argument("--vindr", help="VinDr-CXR root (train.csv, train/)")
    data.add_argument("--chestx-det", help="ChestX-Det JSON (ChestX_Det_train.json)")
    data.add_argument("--chestx-det-images", help="ChestX-Det image folder (default: train/ next to the JSON)")
    data.add_argument("--vindr-raters", default="union", choices=["all", "union", "majority"])
    data.add_argument("--phantom", metavar="DIR", help="generate phantom data in all four layouts here and use it")
    data.add_argument("--phantom-n", type=int, default=None, help="phantom CXR-LT images (default 2000; --tiny 64)")
    data.add_argument(
        "--val-split",
        default="patient",
        choices=["patient", "official", "none"],
        help="what chooses each best checkpoint: held-out training patients (default) or development.csv",
    )
    data.add_argument(
        "--overwrite", action="store_true", help="replace the phantom files in --phantom DIR and the runs in --out"
    )
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", default=None, help="timm name (default: tresnet_l.miil_in1k_448 at 448 px)")
    model.add_argument("--pretrained", action="store_true", help="timm's ImageNet weights (download or cache)")
    model.add_argument("--backbone-weights", help="local timm checkpoint of the backbone (ImageNet weights)")
    model.add_argument("--from-scratch", action="store_true", help="train without ImageNet weights (not the paper)")
    model.add_argument("--canvas", type=int, default=448)
    run = parser.add_argument_group("run")
    run.add_argument("--out", default="runs/cxr_lt", help="output folder")
    run.add_argument(
        "--tiny", action="store_true", help="resnet10t at 64 px from scratch, a few steps: a CPU smoke run"
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--epochs", type=int, default=20, help="base training epochs")
    run.add_argument("--ft-epochs", type=int, default=1, help="DADAM fine-tuning epochs (the paper: 1)")
    run.add_argument("--max-steps", type=int, default=None)
    run.add_argument("--ft-max-steps", type=int, default=None)
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--lr", type=float, default=1e-4)
    run.add_argument("--ft-lr", type=float, default=2e-5)
    run.add_argument(
        "--loss",
        default="soft_margin",
        choices=["soft_margin", "asl"],
        help="soft_margin: the paper's summed MultiLabelSoftMarginLoss (default); asl: timm's asymmetric loss",
    )
    run.add_argument("--aug", default="light", choices=["none", "light"], help="base augmentation on the device")
    add_dadam_arguments(parser.add_argument_group("DADAM fine-tuning"), prefix="dadam-", training=True)
    run.add_argument("--num-workers", type=int, default=default_num_workers())
    run.add_argument("--device", default="auto")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        dadam = dadam_config_from_args(args, prefix="dadam-")
    except ValueError as err:
        parser.error(f"DADAM option {err}")

    if args.tiny:
        args.backbone, args.canvas, args.batch_size, args.epochs, args.ft_epochs = "resnet10t", 64, 8, 1, 1
        args.max_steps = args.max_steps or 4
        args.ft_max_steps = args.ft_max_steps or 2
        args.num_workers, args.lr, args.ft_lr, args.from_scratch = 0, 1e-3, 5e-4, True
    args.backbone = args.backbone or default_backbone(args.canvas)
    if not (args.pretrained or args.backbone_weights or args.from_scratch):
        parser.error(
            f"the recipe starts from ImageNet weights: give --pretrained (timm's {args.backbone} weights, downloaded "
            "or cached) or --backbone-weights FILE, or --from-scratch to train without them"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    chestx_det_size = (1024, 1024)  # ChestX-Det images are NIH PNGs at 1024 x 1024
    if args.phantom:
        size = max(64, args.canvas + args.canvas // 2) if args.tiny else 512
        n = args.phantom_n or (64 if args.tiny else 2000)
        roots = make_phantoms(Path(args.phantom), size=size, n_cxr=n, progress=not args.quiet, overwrite=args.overwrite)
        args.cxr_lt, args.nih, args.vindr = str(roots["cxr-lt"]), str(roots["nih"]), str(roots["vindr"])
        args.chestx_det = str(roots["chestx-det"] / "ChestX_Det_train.json")
        chestx_det_size = (size, size)  # phantom ChestX-Det images are drawn at `size`
    missing = [f"--{k.replace('_', '-')}" for k in ("cxr_lt", "nih", "vindr", "chestx_det") if not getattr(args, k)]
    if missing:
        parser.error(f"missing {', '.join(missing)} (or give --phantom DIR)")

    # 1. patch bank
    bank_path = out / "bank.safetensors"
    build_bank(args, chestx_det_size=chestx_det_size).save(bank_path)
    print(read_cxr_lt(Path(args.cxr_lt) / "train.csv").attrs["report"].summary())

    # 2. the two base models: without and with the binary encoding; each keeps its best checkpoint
    base = TrainConfig(
        dataset="cxr-lt",
        root=args.cxr_lt,
        val_split=args.val_split,
        backbone=args.backbone,
        stages=(2, 3, 4),
        pretrained=args.pretrained and not args.backbone_weights,
        checkpoint_path=args.backbone_weights,
        canvas=args.canvas,
        batch_size=args.batch_size,
        aug=args.aug,
        loss=args.loss,
        num_workers=args.num_workers,
        device=args.device,
        progress=not args.quiet,
        ckpt_every=1000,
        log_every=1 if args.tiny else 50,
        overwrite=args.overwrite,
        seed=args.seed,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        warmup_steps=0 if args.tiny else 500,
    )
    runs = {
        "base_enc0": dataclasses.replace(base, out_dir=str(out / "base_enc0")),
        "base_enc1": dataclasses.replace(
            base, out_dir=str(out / "base_enc1"), use_binary_enc=True, dataset_code="augmented"
        ),
    }
    for name in ("base_enc0", "base_enc1"):
        fit(runs[name])
    # 3. the DADAM fine-tune: base_enc1's best weights, one epoch of originals + extra DADAM samples (coded 1)
    runs["dadam"] = dataclasses.replace(
        runs["base_enc1"],
        out_dir=str(out / "dadam"),
        init_from=str(best_weights_file(out / "base_enc1")),
        pretrained=False,
        checkpoint_path=None,
        epochs=args.ft_epochs,
        max_steps=args.ft_max_steps,
        lr=args.ft_lr,
        warmup_steps=0,
        dadam=dadam,
        bank=str(bank_path),
    )
    fit(runs["dadam"])

    # 4. each model's best checkpoint on the development split, then the ensemble of the three
    pred_files, summary = [], []
    for name in MODELS:
        run_dir = Path(runs[name].out_dir)
        ev = predict(
            EvalConfig(
                checkpoint=str(best_weights_file(run_dir)),
                dataset="cxr-lt",
                root=args.cxr_lt,
                split="development",
                out=str(run_dir / "development"),
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                device=args.device,
                progress=not args.quiet,
            )
        )
        pred_files.append(ev.out / "predictions.csv")
        summary.append({"model": name, **ev.report.loc["mean"].to_dict()})
    ens = average_predictions(pred_files)
    dev = read_cxr_lt(Path(args.cxr_lt) / "development.csv").set_index("image_id").loc[ens["image_id"]]
    report = write_report(
        torch.tensor(ens[list(CXR_LT_CLASSES)].to_numpy(), dtype=torch.float32),
        torch.tensor(dev[list(CXR_LT_CLASSES)].to_numpy(), dtype=torch.float32),
        CXR_LT_CLASSES,
        out / "ensemble" / "report",
    )
    atomic_write(out / "ensemble" / "predictions.csv", ens.to_csv(index=False))
    summary.append({"model": "ensemble", **report.loc["mean"].to_dict()})
    table = pd.DataFrame(summary).set_index("model")
    atomic_write(out / "summary.csv", table.to_csv())
    print(table[["AP", "AUC", "F1"]].to_string(float_format=lambda v: f"{v:.4f}"))
    members = {name: str(best_weights_file(runs[name].out_dir)) for name in MODELS}
    doc = {"seconds": time.perf_counter() - t0, "members": members, "models": summary}
    atomic_write(out / "summary.json", json.dumps(doc, indent=2))
    print(f"done in {time.perf_counter() - t0:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
