"""``make demo``: the main job end to end on built-in phantom data (``python examples/demo.py --help``).

phantom data (NIH + ChestX-Det boxes, CXR-LT labels and images) -> patch bank -> a few FPSM steps with DADAM in the
paper's composition (each epoch: the originals plus extra pasted and blended samples) and the base augmentation ->
images/s and metrics -> a PNG grid of augmented samples with their boxes drawn.

On a GPU it trains TResNet-L at 448 px; on a CPU a small backbone at a small canvas, so it ends in well under a
minute on 2 cores.
"""

from __future__ import annotations

import argparse
import pathlib
import time
from collections.abc import Sequence

import pandas as pd
import torch

from dadam import DadamConfig, DiseasedAreaAugment, LabelStats, PatchBank
from dadam.audit import save_grid
from dadam.data import decode_image
from dadam.formats import read_chestx_det, read_cxr_lt, read_nih_boxes
from dadam.synthetic import generate
from fpsm.distributed import resolve_device
from fpsm.train import TrainConfig, fit

__all__ = ["main", "run_demo"]


def run_demo(
    out: str | pathlib.Path,
    *,
    device: str = "auto",
    canvas: int | None = None,
    backbone: str | None = None,
    steps: int = 12,
    batch_size: int | None = None,
    n_images: int = 160,
    seed: int = 0,
) -> dict[str, float]:
    """Run the demo into ``out`` and return the numbers it printed (img/s, mean AP/AUC, patches placed).

    Args:
        out: output folder (phantom data, bank, training run, grid).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        canvas: training canvas (default: 448 on a GPU, 192 on a CPU).
        backbone: timm name (default: tresnet_l on a GPU, resnet10t on a CPU).
        steps: FPSM training steps.
        batch_size: images per step (default: 32 on a GPU, 16 on a CPU).
        n_images: phantom CXR-LT images.
        seed: seed of the data, the run and DADAM.
    """
    out = pathlib.Path(out)
    dev = resolve_device(device)
    gpu = dev.type == "cuda"
    canvas = canvas or (448 if gpu else 192)
    backbone = backbone or ("tresnet_l" if gpu else "resnet10t")
    batch_size = batch_size or (32 if gpu else 16)

    # 1. Phantom data in the real on-disk layouts (the demo's own folder: a new demo replaces it).
    t0 = time.perf_counter()
    data = out / "phantom"
    common = dict(progress=True, overwrite=True)
    nih = generate("nih", data / "nih", n=96, size=256, seed=seed, **common)
    det = generate("chestx-det", data / "chestx-det", n=64, size=256, seed=seed + 1, **common)
    cxr = generate("cxr-lt", data / "cxr-lt", n=n_images, size=max(canvas, 128), seed=seed + 2, **common)
    print(f"[demo] phantom data written to {data} in {time.perf_counter() - t0:.1f} s")

    # 2. Patch bank from the box datasets (NIH + ChestX-Det), at the training canvas.
    boxes = pd.concat(
        [
            read_nih_boxes(nih / "BBox_List_2017.csv", image_root=nih / "images"),
            read_chestx_det(det / "ChestX_Det_train.json", image_size=(256, 256)),
        ],
        ignore_index=True,
    )
    bank = PatchBank.from_boxes(boxes, {"nih": nih / "images", "chestx_det": det / "train"}, canvas=canvas)
    bank_path = out / "bank.safetensors"
    bank.save(bank_path)
    print(f"[demo] {bank!r}")

    # 3. A few FPSM steps with DADAM on (the same fit() as `python -m fpsm.train`): extend mode, the paper's amounts.
    dadam = DadamConfig(mode="extend")
    cfg = TrainConfig(
        dataset="cxr-lt",
        root=str(cxr),
        out_dir=str(out / "run"),
        canvas=canvas,
        backbone=backbone,
        batch_size=batch_size,
        num_workers=2,
        epochs=2,  # max_steps ends it first
        max_steps=steps,
        lr=1e-3,
        warmup_steps=2,
        dadam=dadam,
        bank=str(bank_path),
        seed=seed,
        device=str(dev),
        ckpt_every=steps,
        log_every=2,
        tensorboard=False,
        overwrite=True,  # the demo's own folder: a new demo replaces the last one's run
    )
    t0 = time.perf_counter()
    res = fit(cfg)
    seconds = time.perf_counter() - t0
    img_s = res.step * batch_size / seconds
    print(
        f"[demo] {res.step} FPSM steps ({backbone}, {canvas} px, batch {batch_size}, {dev}): {img_s:.1f} img/s "
        f"including evaluation; mean AP {res.metrics.get('AP', float('nan')):.3f}, "
        f"mean AUC {res.metrics.get('AUC', float('nan')):.3f} (a few steps on phantom data: expect little)"
    )

    reports = sorted((out / "run" / "eval").glob("*_report.md"))
    if reports:
        print(f"[demo] per-class AP/AUC/F1 report: {reports[-1]} (CSV beside it); log: {out / 'run' / 'train_log.csv'}")

    # 4. A grid of augmented training images with the placed boxes drawn.
    table = read_cxr_lt(cxr / "train.csv")
    stats = LabelStats.from_labels(table)
    classes = list(stats.class_names)
    aug = DiseasedAreaAugment(bank, stats, generator=seed, **dadam.replace(p=1.0).augment_options()).to(dev)
    normal = table[table["No Finding"] == 1].head(8)  # pasted onto
    with_tail = table[(table[list(aug.tail_names)] == 1).any(axis=1)].head(8)  # blended onto
    rows = pd.concat([normal, with_tail])
    images = torch.stack([decode_image(cxr / p, canvas=canvas) for p in rows["path"]]).to(dev)  # (B, 1, S, S)
    labels = torch.tensor(rows[classes].to_numpy(dtype="float32")).to(dev)
    new_images, new_labels, params = aug(images, labels, return_params=True)
    grid = out / "grid.png"
    save_grid(new_images.cpu(), params.to("cpu"), grid, labels=new_labels.cpu())
    n_changed = int(params.changed.sum())
    n_patches = int(params.active.sum())
    print(f"[demo] grid of {len(rows)} augmented images ({n_changed} changed, {n_patches} patches) -> {grid}")
    return {
        "images_per_s": img_s,
        "AP": res.metrics.get("AP", float("nan")),
        "patches": n_patches,
        "grid_images": len(rows),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python examples/demo.py", description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--canvas", type=int, default=None, help="training canvas (default: 448 on GPU, 192 on CPU)")
    parser.add_argument("--backbone", default=None, help="timm name (default: tresnet_l on GPU, resnet10t on CPU)")
    parser.add_argument("--steps", type=int, default=12, help="FPSM training steps (default: 12)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (default: 32 on GPU, 16 on CPU)")
    parser.add_argument("--n-images", type=int, default=160, help="phantom CXR-LT images (default: 160)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the run and DADAM (default: 0)")
    args = parser.parse_args(argv)
    run_demo(
        args.out,
        device=args.device,
        canvas=args.canvas,
        backbone=args.backbone,
        steps=args.steps,
        batch_size=args.batch_size,
        n_images=args.n_images,
        seed=args.seed,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
