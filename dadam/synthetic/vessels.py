"""The lung markings of the phantom chest: pulmonary vessels branching out of each hilum (half resolution)."""

from __future__ import annotations

import numpy as np

from dadam.synthetic.anatomy import ChestAnatomy
from dadam.synthetic.drawing import blur, smoothstep

__all__ = ["draw_vessels"]


def draw_vessels(
    anatomy: ChestAnatomy,
    x: np.ndarray,
    y: np.ndarray,
    lung_field: np.ndarray,
    heart: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Branching pulmonary vessels ``(n, n)`` from each hilum, on the half-resolution grid.

    Thick and dense near the hila, thinning and fading toward the periphery, more and larger in the lower zones.
    Every generation splits each branch in two (vectorised over the branches); the branches are sampled as points
    weighted by their length, splatted into two maps (large and small vessels) and blurred to their width.

    Args:
        anatomy: the chest.
        x: ``(1, n)`` body x of the grid columns; ``y``: ``(n, 1)`` body y of the grid rows.
        lung_field: ``(n, n)`` soft mask of both lungs; ``heart``: ``(n, n)`` soft mask of the heart.
        rng: the anatomy's generator.
    """
    n = y.shape[0]
    zoom = anatomy.pose[0]
    trunks = 11  # per side
    start, angle, length, weight = [], [], [], []
    for side in (-1, 1):
        # trunks fan out from the hilum, mostly laterally and downward (+ angle = down)
        fan = np.linspace(-1.35, 1.5, trunks) + rng.normal(0, 0.1, trunks)
        angle.append(np.where(side > 0, fan, np.pi - fan))
        hilum_y = 0.43 + 0.05 * np.sin(fan) + rng.normal(0, 0.01, trunks)  # along the hilum
        start.append(np.stack([anatomy.midline + side * (0.07 + 0.02 * np.cos(fan)), hilum_y], 1))
        length.append((0.05 + 0.03 * np.clip(fan, 0, None)) * rng.uniform(0.8, 1.2, trunks))
        weight.append(0.75 + 0.35 * np.clip(fan, 0, None))
    start, angle = np.concatenate(start), np.concatenate(angle)
    length, weight = np.concatenate(length), np.concatenate(weight)
    paths, path_weights, is_large = [], [], []
    steps = 6
    for generation in range(8):
        m = start.shape[0]
        bend = rng.normal(0, 0.3, m)[:, None] * np.linspace(0.0, 1.0, steps)[None, :]
        heading = angle[:, None] + bend  # (m, steps)
        dx = np.cos(heading) * (length[:, None] / steps)
        dy = np.sin(heading) * (length[:, None] / steps)
        xs = start[:, :1] + np.concatenate([np.zeros((m, 1)), np.cumsum(dx, 1)], 1)  # (m, steps + 1)
        ys = start[:, 1:] + np.concatenate([np.zeros((m, 1)), np.cumsum(dy, 1)], 1)
        paths.append((xs, ys))
        path_weights.append(np.repeat(weight[:, None], steps + 1, 1))
        is_large.append(np.full((m, steps + 1), generation < 2))
        end = np.stack([xs[:, -1], ys[:, -1]], 1)
        spread = rng.uniform(0.3, 0.65, m)
        start = np.concatenate([end, end])
        angle = np.concatenate([heading[:, -1] + spread, heading[:, -1] - spread * rng.uniform(0.5, 1.0, m)])
        angle += rng.normal(0, 0.12, 2 * m)
        length = np.concatenate([length, length]) * rng.uniform(0.65, 0.9, 2 * m)
        weight = np.concatenate([weight, weight]) * 0.68
        keep = rng.random(2 * m) < (1.0 if generation < 2 else 0.8)
        start, angle, length, weight = start[keep], angle[keep], length[keep], weight[keep]
    # resample every branch polyline at ~0.5 grid pixel and splat; weight = length per sample
    scale = n * zoom
    xs = np.concatenate([p for p, _ in paths])
    ys = np.concatenate([p for _, p in paths])
    segment_weight = np.concatenate([w[:, :-1] for w in path_weights])
    segment_large = np.concatenate([g[:, :-1] for g in is_large])
    sub = 4  # samples per segment
    frac = (np.arange(sub, dtype=np.float64) / sub)[None, None, :]
    px, py = anatomy.to_pixels(xs, ys)
    px, py = px * (n / anatomy.size), py * (n / anatomy.size)
    seg_len = np.hypot(np.diff(px, axis=1), np.diff(py, axis=1))  # (M, steps) grid pixels
    sample_x = (px[:, :-1, None] + np.diff(px, axis=1)[..., None] * frac).ravel()
    sample_y = (py[:, :-1, None] + np.diff(py, axis=1)[..., None] * frac).ravel()
    sample_weight = np.repeat(segment_weight * seg_len / sub, sub, axis=1).ravel()
    sample_large = np.repeat(segment_large, sub, axis=1).ravel()
    ix, iy = np.rint(sample_x - 0.5).astype(np.int64), np.rint(sample_y - 0.5).astype(np.int64)
    ok = (ix >= 0) & (iy >= 0) & (ix < n) & (iy < n)
    flat, sample_weight, sample_large = iy[ok] * n + ix[ok], sample_weight[ok], sample_large[ok]
    large = np.bincount(flat, weights=sample_weight * sample_large, minlength=n * n).reshape(n, n).astype(np.float32)
    small = np.bincount(flat, weights=sample_weight * ~sample_large, minlength=n * n).reshape(n, n).astype(np.float32)
    sigma_large, sigma_small = 1.6 * scale / 512, 0.9 * scale / 512
    vessels = blur(large, sigma_large) * (3.5 * sigma_large) + blur(small, sigma_small) * (3.2 * sigma_small)
    # hilar shadows, the fade toward the periphery, more perfusion in the lower zones
    offset = x - np.float32(anatomy.midline)
    rho = np.sqrt((np.abs(offset) - 0.085) ** 2 + (y - 0.44) ** 2)  # distance from the hilum
    hilum = 0.7 * np.exp(-((rho / 0.04) ** 2)) * smoothstep(y, 0.33, 0.4)
    fade = 0.4 + 0.6 * np.exp(-rho / 0.3)
    lower = 0.85 + 0.3 * smoothstep(y, 0.35, 0.6)
    lung = lung_field * (1.0 - 0.75 * heart)  # little of the vessels shows through the heart
    return (
        (np.minimum(vessels, 1.2) * fade * lower + hilum)
        * np.maximum(lung, np.minimum(hilum, 1.0))
        * (0.4 + 0.6 * lung)
    )
