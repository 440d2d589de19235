"""FPSM on MURA v1.1: study-level abnormality of musculoskeletal radiographs (7 body parts), one logit.

Image probabilities are averaged over the images of a study (MURA's protocol); the study is abnormal when the
mean exceeds the threshold. Reported per body part and overall: Cohen's kappa (MURA's metric), AUC, accuracy, on
MURA's valid split with the best checkpoint (chosen on 20% of the training patients held out).

With the data (``ROOT`` holds ``MURA-v1.1/``)::

    python examples/mura.py --mura ROOT --out runs/mura

On phantom MURA in the real layout::

    python examples/mura.py --phantom /tmp/phantom_mura --tiny --out /tmp/mura_run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torchmetrics.functional.classification import binary_accuracy, binary_auroc, binary_cohen_kappa

from dadam.data import default_num_workers
from dadam.files import atomic_write
from fpsm.evaluate import EvalConfig, predict
from fpsm.train import TrainConfig, fit, load_split
from fpsm.training import best_weights_file


def study_level(images: pd.DataFrame, probs: pd.Series) -> pd.DataFrame:
    """Mean image probability per study: one row per (body_part, patient, study) with its label."""
    df = images[["body_part", "patient", "study", "label"]].assign(prob=probs.to_numpy())
    return df.groupby(["body_part", "patient", "study"], as_index=False).agg(
        prob=("prob", "mean"), label=("label", "first"), images=("prob", "size")
    )


def kappa_table(studies: pd.DataFrame, *, threshold: float = 0.5) -> pd.DataFrame:
    """Cohen's kappa, AUC and accuracy per body part and over all studies, with a note where one is undefined.

    A body part whose studies are all normal (or all abnormal) has no AUC; when the model also calls every one of
    them the same, chance agreement is 1 and kappa is 0 / 0 (NaN). The ``note`` column says which, and why.
    """
    rows = []
    for part, g in [*studies.groupby("body_part"), ("ALL", studies)]:
        p = torch.tensor(g["prob"].to_numpy(), dtype=torch.float32)
        y = torch.tensor(g["label"].to_numpy(), dtype=torch.long)
        both = bool((y == 1).any() and (y == 0).any())
        called = p > threshold  # (n,) the study-level predictions
        one_call = bool(called.all() or not called.any())
        notes = []
        if not both:
            notes.append(f"AUC undefined: every study is {'abnormal' if bool(y[0]) else 'normal'}")
            if one_call:
                notes.append("kappa undefined: the model also calls every study the same (chance agreement 1)")
        rows.append(
            {
                "body_part": part,
                "studies": len(g),
                "abnormal": int(y.sum()),
                "kappa": float(binary_cohen_kappa(p, y, threshold=threshold)),
                "AUC": float(binary_auroc(p, y)) if both else float("nan"),
                "accuracy": float(binary_accuracy(p, y, threshold=threshold)),
                "note": "; ".join(notes),
            }
        )
    return pd.DataFrame(rows).set_index("body_part")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mura", help="folder holding MURA-v1.1/")
    parser.add_argument("--phantom", metavar="DIR", help="generate phantom MURA here and use it")
    parser.add_argument("--phantom-n", type=int, default=None, help="phantom images (default 2000; --tiny 240)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the phantom files in --phantom DIR and the runs in --out"
    )
    parser.add_argument("--out", default="runs/mura")
    parser.add_argument("--tiny", action="store_true", help="resnet10t at 64 px, a few steps")
    parser.add_argument("--backbone", default="tresnet_l")
    parser.add_argument("--backbone-weights", help="local timm checkpoint of the backbone")
    parser.add_argument("--canvas", type=int, default=448)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--num-workers", type=int, default=default_num_workers())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.tiny:
        args.backbone, args.canvas, args.batch_size, args.epochs = "resnet10t", 64, 8, 1
        args.max_steps, args.num_workers, args.lr = args.max_steps or 4, 0, 1e-3
    t0 = time.perf_counter()
    if args.phantom:
        from dadam.synthetic import generate

        n = args.phantom_n or (240 if args.tiny else 2000)
        size = 96 if args.tiny else 512
        args.mura = str(
            generate("mura", args.phantom, n=n, size=size, progress=not args.quiet, overwrite=args.overwrite)
        )
    if not args.mura:
        parser.error("give --mura ROOT (the folder holding MURA-v1.1/) or --phantom DIR")
    out = Path(args.out)

    res = fit(
        TrainConfig(
            dataset="mura",
            root=args.mura,
            out_dir=str(out / "train"),
            backbone=args.backbone,
            checkpoint_path=args.backbone_weights,
            canvas=args.canvas,
            batch_size=args.batch_size,
            epochs=args.epochs,
            max_steps=args.max_steps,
            lr=args.lr,
            num_workers=args.num_workers,
            device=args.device,
            progress=not args.quiet,
            log_every=1 if args.tiny else 50,
            threshold=args.threshold,
            overwrite=args.overwrite,
        )
    )
    ev = predict(
        EvalConfig(
            checkpoint=str(best_weights_file(res.run_dir)),
            dataset="mura",
            root=args.mura,
            split="valid",
            out=str(out / "valid"),
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=args.device,
            threshold=args.threshold,
            progress=not args.quiet,
        )
    )
    images, _, _ = load_split("mura", args.mura, "valid")
    if ev.predictions["image_id"].tolist() != images["image_id"].astype(str).tolist():
        raise RuntimeError("prediction rows do not line up with the MURA valid table")
    studies = study_level(images, ev.predictions["Abnormal"])
    atomic_write(out / "valid" / "study_predictions.csv", studies.to_csv(index=False))
    table = kappa_table(studies, threshold=args.threshold)
    atomic_write(out / "valid" / "kappa.csv", table.to_csv())
    md = ["| body part | studies | abnormal | kappa | AUC | accuracy |", "|---|---|---|---|---|---|"]
    md += [
        f"| {k} | {r.studies} | {r.abnormal} | {r.kappa:.4f} | {r.AUC:.4f} | {r.accuracy:.4f} |"
        for k, r in table.iterrows()
    ]
    notes = [f"- {k}: {r.note}." for k, r in table.iterrows() if r.note]
    if notes:  # why a cell reads nan
        md += ["", "nan marks a metric that is undefined for that body part:", *notes]
    atomic_write(out / "valid" / "kappa.md", "\n".join(md) + "\n")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"done in {time.perf_counter() - t0:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
