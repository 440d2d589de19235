"""How well :func:`dadam.anatomy.lung_box` finds the lung fields: IoU against hand-annotated and phantom boxes.

Two references:

- **real**: the 32 NIH ChestX-ray14 images of the shared data, whose lung-field boxes were annotated by hand by
  looking at each image (``tests/data/nih_lung_boxes.csv``: what is boxed and how is written at its top), resized to
  the training canvas (``--size``, default 448) as :class:`dadam.PatchBank` does with donors;
- **phantom**: 32 normal phantom chests of :mod:`dadam.synthetic`, whose lung-field masks are known exactly.

Prints the median, mean and worst IoU (with the image), the same for the annotations marked ``high`` confidence, and
the mean signed error of each edge (pixels of the 1024 image; positive: the estimate is right of / below the
annotation). ``--json`` writes the numbers; ``--png`` draws the worst real case beside the median one, the estimate
in red and the annotation in green.

Usage::

    python -m benchmarks.lung_box                                  # prints the table
    python -m benchmarks.lung_box --png docs/images/lung_box_worst.png --json /tmp/lung_box.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou
from torchvision.transforms.v2 import functional as TF

from dadam.anatomy import lung_box
from dadam.files import atomic_write
from dadam.io import read_image

__all__ = ["ANNOTATIONS", "main", "measure", "phantom_chests", "real_chests"]

ROOT = pathlib.Path(__file__).resolve().parents[1]
ANNOTATIONS = ROOT / "tests" / "data" / "nih_lung_boxes.csv"
SHARED_DATA = pathlib.Path(os.environ.get("DADAM_SHARED_DATA") or ROOT.parent / "shared" / "data")
PHANTOM_SEEDS = range(100, 132)


def real_chests(data: pathlib.Path, size: int) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame]:
    """The annotated NIH images resized to ``size`` ``(32, 1, size, size)`` uint8, their annotated lung boxes
    ``(32, 4)`` normalised, and the annotation table."""
    table = pd.read_csv(ANNOTATIONS, comment="#")
    images = [
        TF.resize(read_image(data / "nih14" / "images" / name, dtype=torch.uint8), [size, size], antialias=True)
        for name in table.image_id
    ]
    boxes = table[["x0", "y0", "x1", "y1"]].to_numpy() / table[["width", "height"]].to_numpy().repeat(2, 1)
    return torch.stack(images), torch.tensor(boxes, dtype=torch.float32), table


def phantom_chests(seeds: Iterable[int], size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal phantom chests ``(N, 1, size, size)`` uint8 and the boxes of their lung-field masks ``(N, 4)``
    normalised, as :func:`dadam.synthetic.render_chest` draws a chest without findings."""
    from dadam.synthetic.anatomy import sample_anatomy
    from dadam.synthetic.body import ChestLayers
    from dadam.synthetic.chest import compose_radiograph
    from dadam.synthetic.drawing import box_from_mask

    images, boxes = [], []
    for seed in seeds:
        anatomy_rng, _, grain_rng = np.random.default_rng(seed).spawn(3)
        layers = ChestLayers(sample_anatomy(size, anatomy_rng), anatomy_rng)
        images.append(torch.from_numpy(compose_radiograph(layers, grain_rng))[None])
        boxes.append(box_from_mask(layers.full.lung_field > 0.5))
    return torch.stack(images), torch.tensor(boxes, dtype=torch.float32) / size


def measure(found: torch.Tensor, truth: torch.Tensor, names: Sequence[str]) -> dict:
    """IoU summary of estimated against reference boxes ``(N, 4)`` normalised."""
    iou = box_iou(found, truth).diagonal()  # (N,)
    worst = int(iou.argmin())
    error = ((found - truth) * 1024).mean(0)  # (4,) mean signed error per edge, pixels of a 1024 image
    return {
        "images": len(names),
        "median_iou": round(float(iou.median()), 3),
        "mean_iou": round(float(iou.mean()), 3),
        "worst_iou": round(float(iou[worst]), 3),
        "worst_image": names[worst],
        "mean_signed_error_px_1024": dict(zip(("x0", "y0", "x1", "y1"), (round(float(e)) for e in error), strict=True)),
        "iou": {n: round(float(v), 3) for n, v in zip(names, iou, strict=True)},
    }


def _draw(image: torch.Tensor, found: torch.Tensor, truth: torch.Tensor, title: str, side: int = 512):
    from PIL import Image, ImageDraw

    im = Image.fromarray(image[0].numpy()).resize((side, side), Image.BILINEAR).convert("RGB")
    draw = ImageDraw.Draw(im)
    for box, colour in ((truth, (40, 220, 40)), (found, (235, 30, 30))):
        draw.rectangle([float(v) * side for v in box], outline=colour, width=3)
    draw.rectangle([0, 0, side, 22], fill=(0, 0, 0))
    draw.text((6, 5), title, fill=(255, 255, 255))
    return im


def write_png(path: pathlib.Path, images, found, truth, table, iou: torch.Tensor) -> None:
    """The worst real case beside the median one: annotation green, estimate red."""
    from PIL import Image, ImageDraw

    order = iou.argsort()
    worst, median = int(order[0]), int(order[len(order) // 2])
    panels = [
        _draw(images[k], found[k], truth[k], f"{what}: {table.image_id[k]}  IoU {float(iou[k]):.2f}")
        for what, k in (("worst", worst), ("median", median))
    ]
    sheet = Image.new("RGB", (2 * 512, 512 + 24), (255, 255, 255))
    for k, panel in enumerate(panels):
        sheet.paste(panel, (512 * k, 0))
    ImageDraw.Draw(sheet).text(
        (6, 517), "green: lung box annotated by hand;  red: dadam.anatomy.lung_box (448 px canvas)", fill=(0, 0, 0)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: sheet.save(f, format="PNG"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lung_box", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=SHARED_DATA, help="the shared data folder")
    parser.add_argument("--size", type=int, default=448, help="canvas the real images are resized to")
    parser.add_argument("--json", type=pathlib.Path, help="write the numbers here")
    parser.add_argument("--png", type=pathlib.Path, help="draw the worst and the median real case here")
    args = parser.parse_args(argv)

    images, truth, table = real_chests(args.data, args.size)
    found = lung_box(images)
    real = measure(found, truth, list(table.image_id))
    high = torch.from_numpy((table.confidence == "high").to_numpy().copy())
    confident = measure(found[high], truth[high], list(table.image_id[high.numpy()]))
    ph_images, ph_truth = phantom_chests(PHANTOM_SEEDS)
    phantom = measure(lung_box(ph_images), ph_truth, [f"seed {s}" for s in PHANTOM_SEEDS])
    result = {"canvas": args.size, "real": real, "real_high_confidence": confident, "phantom": phantom}

    print(f"lung_box IoU (real images on a {args.size} px canvas; phantoms at 256 px)")
    print("| reference | images | median | mean | worst (image) | mean edge error x0 y0 x1 y1 (px of 1024) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in (("NIH, hand-annotated", real), ("NIH, high confidence", confident), ("phantom", phantom)):
        edges = " ".join(f"{v:+d}" for v in r["mean_signed_error_px_1024"].values())
        print(
            f"| {name} | {r['images']} | {r['median_iou']:.3f} | {r['mean_iou']:.3f} | "
            f"{r['worst_iou']:.3f} ({r['worst_image']}) | {edges} |"
        )
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=2) + "\n")
    if args.png:
        write_png(args.png, images, found, truth, table, box_iou(found, truth).diagonal())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
