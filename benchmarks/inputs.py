"""Synthetic inputs of the benchmarks: a patch bank, CXR-LT-like label batches, image batches and JPEG files."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import torch

from benchmarks.config import DADAM
from dadam import DiseasedAreaAugment, LabelStats, PatchBank
from dadam.labels import CXR_LT_CLASSES, CXR_LT_TRAIN_COUNTS, CXR_LT_TRAIN_IMAGES, NO_FINDING

__all__ = [
    "NF",
    "NUM_CLASSES",
    "AugmentSetup",
    "augment_setup",
    "benchmark_labels",
    "image_batch",
    "smooth_images",
    "synthetic_bank",
    "synthetic_label_pool",
    "write_jpegs",
]

NUM_CLASSES = len(CXR_LT_CLASSES)
NF = CXR_LT_CLASSES.index(NO_FINDING)


def synthetic_bank(canvas: int, *, per_class: int = 6, seed: int = 0) -> PatchBank:
    """A bank of random uint8 patches for every disease class, sides 5-30 % of the canvas, anywhere on it.

    Args:
        canvas: canvas side ``S``.
        per_class: patches per class (25 disease classes; "No Finding" has none).
        seed: seed of the sizes, positions and pixels.

    Returns:
        the :class:`~dadam.PatchBank`.

    Example:
        >>> len(synthetic_bank(128, per_class=2))
        50
    """
    g = torch.Generator().manual_seed(seed)
    lo, hi = max(1, round(0.05 * canvas)), max(1, round(0.30 * canvas))
    classes = torch.tensor([c for c in range(NUM_CLASSES) if c != NF]).repeat_interleave(per_class)  # (N,)
    hw = torch.randint(lo, hi + 1, (len(classes), 2), generator=g)  # (N, 2) height, width
    yx = (torch.rand(len(classes), 2, generator=g) * (canvas - hw + 1)).long()  # (N, 2) top-left, inside the canvas
    boxes = torch.cat([yx.flip(1), (yx + hw).flip(1)], 1)  # (N, 4) xyxy, half-open
    patches = [torch.randint(0, 256, (h, w), generator=g, dtype=torch.uint8) for h, w in hw.tolist()]
    return PatchBank.from_patches(patches, boxes.tolist(), classes.tolist(), canvas=canvas)


def synthetic_label_pool(n: int, *, seed: int = 0) -> torch.Tensor:
    """``(n, 26)`` float32 CXR-LT-like labels: "No Finding" at its train frequency, else the real long tail.

    An abnormal row has each disease class ``c`` positive with probability ``freq_c / (1 - freq_NF)`` (capped at
    0.9), redrawn until it has one; this gives the classes positive correlation through the normal/abnormal split.
    """
    g = torch.Generator().manual_seed(seed)
    freq = torch.tensor([CXR_LT_TRAIN_COUNTS[c] / CXR_LT_TRAIN_IMAGES for c in CXR_LT_CLASSES])
    p_nf = float(freq[NF])
    q = (freq / (1 - p_nf)).clamp(max=0.9)
    q[NF] = 0
    normal = torch.rand(n, generator=g) < p_nf
    y = torch.zeros(n, NUM_CLASSES)
    todo = torch.arange(n)[~normal]
    while todo.numel():
        hits = (torch.rand(todo.numel(), NUM_CLASSES, generator=g) < q).float()
        ok = hits.sum(1) > 0
        y[todo[ok]] = hits[ok]
        todo = todo[~ok]
    y[:, NF] = (y.sum(1) == 0).float()
    return y


def benchmark_labels(
    batch: int,
    tail_mask: torch.Tensor,
    *,
    normal: float = 0.4,
    tail: float = 0.3,
    seed: int = 0,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """A label batch with a fixed mix: ``normal`` normal images, ``tail`` with a tail class, the rest other.

    Rows come from :func:`synthetic_label_pool` (or ``pool``), shuffled.

    Args:
        batch: ``B``.
        tail_mask: ``(26,)`` bool, the augmentation's tail classes.
        normal: fraction of normal ("No Finding" only) rows.
        tail: fraction of rows with at least one tail class.
        seed: seed of the row choice.
        pool: label rows to draw from (default: 4096 synthetic rows).

    Returns:
        ``(B, 26)`` float32.
    """
    g = torch.Generator().manual_seed(seed + 1)
    pool = synthetic_label_pool(4096, seed=seed) if pool is None else pool
    is_normal = pool[:, NF] > 0.5
    has_tail = ((pool > 0.5) & tail_mask.cpu()[None]).any(1) & ~is_normal
    other = ~is_normal & ~has_tail
    n_normal = round(normal * batch)
    n_tail = round(tail * batch)
    counts = (n_normal, n_tail, batch - n_normal - n_tail)
    rows = []
    for mask, count in zip((is_normal, has_tail, other), counts, strict=True):
        idx = torch.arange(pool.shape[0])[mask]
        if idx.numel() == 0:  # e.g. a tiny pool: fall back to any abnormal row
            idx = torch.arange(pool.shape[0])[~is_normal]
        rows.append(idx[torch.randint(0, idx.numel(), (count,), generator=g)])
    order = torch.cat(rows)[torch.randperm(batch, generator=g)]
    return pool[order].clone()


@dataclass(frozen=True)
class AugmentSetup:
    """What a benchmark of DADAM starts from (:func:`augment_setup`).

    Attributes:
        bank: :func:`synthetic_bank` on the benchmark's device.
        pool: ``(8192, 26)`` rows of :func:`synthetic_label_pool` on the CPU, the source of the label batches.
        stats: the pool's :class:`~dadam.LabelStats`.
        aug: the :class:`~dadam.DiseasedAreaAugment` with the options :data:`~benchmarks.config.DADAM`, on the device.
    """

    bank: PatchBank
    pool: torch.Tensor
    stats: LabelStats
    aug: DiseasedAreaAugment


def augment_setup(canvas: int, *, device: torch.device | str = "cpu", seed: int = 0) -> AugmentSetup:
    """The bank, label pool, statistics and DADAM module of a benchmark on a ``canvas`` x ``canvas`` canvas."""
    bank = synthetic_bank(canvas, seed=seed).to(device)
    pool = synthetic_label_pool(8192, seed=seed)
    stats = LabelStats.from_labels(pool)
    aug = DiseasedAreaAugment.from_config(bank, stats, DADAM, generator=seed).to(device)
    return AugmentSetup(bank, pool, stats, aug)


def image_batch(
    batch: int, channels: int, dtype: str, size: int, *, device: torch.device | str = "cpu", seed: int = 0
) -> torch.Tensor:
    """``(batch, channels, size, size)`` random images: uint8 in 0..255, or float in [0, 1) of ``dtype``."""
    g = torch.Generator().manual_seed(seed + 2)
    if dtype == "uint8":
        x = torch.randint(0, 256, (batch, channels, size, size), generator=g, dtype=torch.uint8)
    else:
        x = torch.rand(batch, channels, size, size, generator=g).to(getattr(torch, dtype))
    return x.to(device)


def smooth_images(n: int, size: int, *, seed: int = 0) -> torch.Tensor:
    """``(n, 1, size, size)`` uint8 X-ray-like test images: smooth random shading plus mild noise.

    They compress like radiographs, unlike uniform noise, so the offline reference's disk estimate is realistic.
    """
    g = torch.Generator().manual_seed(seed + 3)
    low = torch.rand(n, 1, 12, 12, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return (img * 200 + 20 + torch.rand(n, 1, size, size, generator=g) * 16).clamp(0, 255).to(torch.uint8)


def write_jpegs(root: pathlib.Path, n: int, size: int, *, seed: int = 0):
    """Write ``n`` :func:`smooth_images` as grayscale JPEGs (quality 90) into ``root``; return their label table.

    Returns:
        a ``pandas.DataFrame`` with ``image_id``, ``path`` (relative to ``root``) and one column per class.
    """
    import numpy as np
    import pandas as pd
    from PIL import Image

    labels = synthetic_label_pool(n, seed=seed).numpy()
    images = smooth_images(n, size, seed=seed)
    rows = []
    for i in range(n):
        name = f"img_{i:05d}.jpg"
        Image.fromarray(np.ascontiguousarray(images[i, 0].numpy())).save(root / name, quality=90)
        rows.append({"image_id": name, "path": name, **dict(zip(CXR_LT_CLASSES, labels[i].tolist(), strict=True))})
    return pd.DataFrame(rows)
