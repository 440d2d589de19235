"""How realistic DADAM's pastes look: the seam at each patch's border and the lesion kept inside it.

Two measures per placed patch (active slot), both on channel 0 of the images on the 0..255 scale:

- **border-step ratio** (:func:`border_step_ratio`): the mean absolute intensity step across the patch's border in the
  augmented image, divided by the natural step over the same pixel pairs in the image before DADAM (1 = no seam
  added). A pair straddles one side of the box: its outside pixel is the image pixel next to the box, its inside
  pixel is the first one at full weight, ``feather`` pixels inside the box edge (the box's outermost pixel without
  feather), at the same position along the side. Along a side the pairs cover the positions whose inside pixel has
  full weight across too (``feather`` pixels from each corner). So the step spans the whole ramp: a feather alone
  cannot hide an intensity mismatch, it is measured from the background to the patch at full weight. Sides outside
  the image, boxes without a full-weight pixel and zero natural steps give no ratio (NaN).
- **edge-step ratio** (``adjacent=True``): the same with the inside pixel the box's outermost one, whatever the
  feather: the one-pixel seam.
- **interior fidelity** (:func:`interior_pearson`): the Pearson correlation between the augmented image inside the
  box shrunk by ``feather`` on each side (the full-weight interior) and the donor patch at the same pixels (1 = the
  lesion's texture kept up to an affine map; blends mix in the background).

:func:`realism_table` runs the options side by side on the same draws (the params do not depend on ``feather`` or
``match``), :func:`save_realism_grid` draws the same patches with each option next to the image before.

Example:
    >>> table = realism_table(images, labels, bank, stats, REALISM_OPTIONS, seeds=range(10))  # doctest: +SKIP
    >>> print(format_realism_table(table))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Mapping

import numpy as np
import torch

from dadam.bank import PatchBank
from dadam.config import DadamConfig
from dadam.files import atomic_write
from dadam.sampling import DadamParams
from dadam.stats import LabelStats

__all__ = [
    "REALISM_OPTIONS",
    "border_step_ratio",
    "format_realism_table",
    "interior_pearson",
    "realism_table",
    "save_realism_grid",
]

#: The options compared by default: the paper, each option alone, and both (the issue's target setting).
REALISM_OPTIONS: dict[str, dict] = {
    "paper (hard paste)": {"feather": 0, "match": "none"},
    "feather=8": {"feather": 8, "match": "none"},
    "match=mean": {"feather": 0, "match": "mean"},
    "match=meanstd": {"feather": 0, "match": "meanstd"},
    "feather=8, match=meanstd": {"feather": 8, "match": "meanstd"},
}


def _plane(images: torch.Tensor) -> np.ndarray:
    """``(B, H, W)`` float64 channel 0 on the 0..255 scale."""
    x = images[:, 0].detach().cpu().double()
    return (x if images.dtype == torch.uint8 else x * 255).numpy()


def _side_pairs(x0, y0, x1, y1, H, W, depth):
    """Index arrays ``(y_in, x_in, y_out, x_out)`` of the pixel pairs across the four sides of one box.

    ``depth``: how far inside the box edge the inside pixel is (0: the outermost pixel); along a side only the
    positions at least ``depth`` pixels from each corner count.
    """
    ys_in, xs_in, ys_out, xs_out = [], [], [], []
    if y1 - y0 <= 2 * depth or x1 - x0 <= 2 * depth:
        return (np.zeros(0, np.int64),) * 4  # no pixel at full weight
    cols = np.arange(max(x0 + depth, 0), min(x1 - depth, W))
    rows = np.arange(max(y0 + depth, 0), min(y1 - depth, H))
    for y_out, y_in in ((y0 - 1, y0 + depth), (y1, y1 - 1 - depth)):  # top, bottom
        if 0 <= y_out < H and 0 <= y_in < H and cols.size:
            ys_in.append(np.full(cols.size, y_in)), xs_in.append(cols)
            ys_out.append(np.full(cols.size, y_out)), xs_out.append(cols)
    for x_out, x_in in ((x0 - 1, x0 + depth), (x1, x1 - 1 - depth)):  # left, right
        if 0 <= x_out < W and 0 <= x_in < W and rows.size:
            ys_in.append(rows), xs_in.append(np.full(rows.size, x_in))
            ys_out.append(rows), xs_out.append(np.full(rows.size, x_out))
    if not ys_in:
        return (np.zeros(0, np.int64),) * 4
    return tuple(np.concatenate(v) for v in (ys_in, xs_in, ys_out, xs_out))


def border_step_ratio(
    before: torch.Tensor, after: torch.Tensor, params: DadamParams, *, feather: int = 0, adjacent: bool = False
) -> np.ndarray:
    """The border-step ratio of every slot (see the module docstring).

    Args:
        before: ``(B, C, H, W)`` the images DADAM got (uint8, or float in [0, 1]).
        after: ``(B, C, H, W)`` its output for ``params``.
        params: the params of the call.
        feather: the ``feather`` the patches were pasted with (the inside pixel's depth).
        adjacent: measure the one-pixel seam (the inside pixel is the box's outermost one) instead.

    Returns:
        ``(B, K)`` float64 ratios, NaN for inactive slots and where there is no pair or no natural step.

    Example:
        >>> ratio = border_step_ratio(images, out, params, feather=8)  # doctest: +SKIP
    """
    if before.shape != after.shape or before.ndim != 4:
        raise ValueError(f"before and after must be (B, C, H, W) of one shape, got {tuple(before.shape)} and "
                         f"{tuple(after.shape)}")  # fmt: skip
    x, y = _plane(before), _plane(after)
    H, W = x.shape[1:]
    depth = 0 if adjacent else feather
    out = np.full(tuple(params.active.shape), np.nan)
    active = params.active.cpu().numpy()
    boxes = params.boxes.cpu().numpy()
    for b, k in zip(*np.nonzero(active), strict=True):
        yi, xi, yo, xo = _side_pairs(*(int(v) for v in boxes[b, k]), H, W, depth)  # xyxy: x1 = x0 + w
        if yi.size == 0:
            continue
        natural = np.abs(x[b, yi, xi] - x[b, yo, xo]).mean()
        if natural > 0:
            out[b, k] = np.abs(y[b, yi, xi] - y[b, yo, xo]).mean() / natural
    return out


def interior_pearson(after: torch.Tensor, params: DadamParams, bank: PatchBank, *, feather: int = 0) -> np.ndarray:
    """The Pearson correlation of each slot's full-weight interior with its donor patch (see the module docstring).

    Args:
        after: ``(B, C, H, W)`` DADAM's output.
        params: the params of the call.
        bank: the bank the params refer to.
        feather: the ``feather`` the patches were pasted with (the box is shrunk by it on each side).

    Returns:
        ``(B, K)`` float64, NaN for inactive slots and interiors of fewer than 3 pixels or without variation.
    """
    y = _plane(after)
    H, W = y.shape[1:]
    out = np.full(tuple(params.active.shape), np.nan)
    active = params.active.cpu().numpy()
    boxes, pids = params.boxes.cpu().numpy(), params.patch_ids.cpu().numpy()
    for b, k in zip(*np.nonzero(active), strict=True):
        x0, y0, x1, y1 = (int(v) for v in boxes[b, k])
        ys, ye = max(y0 + feather, 0), min(y1 - feather, H)
        xs, xe = max(x0 + feather, 0), min(x1 - feather, W)
        if ye <= ys or xe <= xs or (ye - ys) * (xe - xs) < 3:
            continue
        patch = bank.patch(int(pids[b, k])).cpu().numpy().astype(np.float64)
        a = y[b, ys:ye, xs:xe].ravel()
        q = patch[ys - y0 : ye - y0, xs - x0 : xe - x0].ravel()
        if a.std() > 0 and q.std() > 0:
            out[b, k] = float(np.corrcoef(a, q)[0, 1])
    return out


def _stats(values: list[float], quantiles: Mapping[str, float]) -> dict:
    v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
    summary = {name: (round(float(np.quantile(v, q)), 4) if v.size else None) for name, q in quantiles.items()}
    return {**summary, "n": int(v.size)}


def realism_table(
    images: torch.Tensor,
    labels: torch.Tensor,
    bank: PatchBank,
    stats: LabelStats,
    options: Mapping[str, Mapping] = REALISM_OPTIONS,
    *,
    config: DadamConfig | None = None,
    seeds: Iterable[int] = range(10),
) -> dict:
    """The realism measures of each option set over the same draws (per seed, one :meth:`sample` shared by all).

    Args:
        images: ``(B, C, S, S)`` the images before DADAM, ``S = bank.canvas``.
        labels: ``(B, num_classes)`` their labels.
        bank: the patch bank; stats: the label statistics the classes are drawn from.
        options: name -> ``{"feather": int, "match": str}``, the option sets compared.
        config: the other DADAM options (default ``DadamConfig(p=1.0)``).
        seeds: the generator seeds, one draw per seed.

    Returns:
        ``{"seeds", "images", "config", "options": {name: {feather, match, border_step_ratio: {median, p90, n},
        edge_step_ratio: {...}, interior_pearson_paste: {median, p10, n}, interior_pearson_blend: {...}}}}``.
    """
    from dadam.augment import DiseasedAreaAugment

    config = DadamConfig(p=1.0) if config is None else config
    seeds = list(seeds)
    modules = {name: DiseasedAreaAugment.from_config(bank, stats, config.replace(**o)) for name, o in options.items()}
    collected = {name: {"border": [], "edge": [], "paste": [], "blend": []} for name in options}
    for seed in seeds:
        draw = DiseasedAreaAugment.from_config(bank, stats, config, generator=int(seed))
        params = draw.sample(labels)
        is_paste = (params.alpha >= 1).numpy()
        active = params.active.numpy()
        for name, aug in modules.items():
            after = aug.apply(images, params)
            feather = aug.feather
            got = collected[name]
            got["border"] += border_step_ratio(images, after, params, feather=feather)[active].tolist()
            got["edge"] += border_step_ratio(images, after, params, adjacent=True)[active].tolist()
            pearson = interior_pearson(after, params, bank, feather=feather)
            got["paste"] += pearson[active & is_paste].tolist()
            got["blend"] += pearson[active & ~is_paste].tolist()
    ratio_q, pearson_q = {"median": 0.5, "p90": 0.9}, {"median": 0.5, "p10": 0.1}
    table = {
        name: {
            **dict(options[name]),
            "border_step_ratio": _stats(got["border"], ratio_q),
            "edge_step_ratio": _stats(got["edge"], ratio_q),
            "interior_pearson_paste": _stats(got["paste"], pearson_q),
            "interior_pearson_blend": _stats(got["blend"], pearson_q),
        }
        for name, got in collected.items()
    }
    return {"seeds": seeds, "images": int(images.shape[0]), "config": config.to_dict(), "options": table}


def format_realism_table(result: Mapping) -> str:
    """The options of :func:`realism_table` as a Markdown table (medians, p90 / p10 and the patch counts)."""

    def f(v):
        return "-" if v is None else f"{v:.2f}"

    lines = [
        "| options | border-step ratio median (p90) | one-pixel edge ratio median (p90) | interior Pearson, pasted "
        "median (p10) | blended median | patches |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["options"].items():
        b, e, p, q = (row[k] for k in ("border_step_ratio", "edge_step_ratio", "interior_pearson_paste",
                                       "interior_pearson_blend"))  # fmt: skip
        lines.append(
            f"| {name} | {f(b['median'])} ({f(b['p90'])}) | {f(e['median'])} ({f(e['p90'])}) | "
            f"{f(p['median'])} ({f(p['p10'])}) | {f(q['median'])} | {b['n']} |"
        )
    return "\n".join(lines)


def save_realism_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    bank: PatchBank,
    stats: LabelStats,
    path: str | os.PathLike,
    options: Mapping[str, Mapping] = REALISM_OPTIONS,
    *,
    config: DadamConfig | None = None,
    seed: int = 0,
    rows: int = 4,
    crop: int = 192,
) -> pathlib.Path:
    """A PNG grid: one row per image with pasted patches, the image before DADAM then each option set.

    Each tile is a ``crop`` x ``crop`` window at full resolution around one pasted patch (the largest that fits with a
    margin, each patch and image once), so the seams are visible; the same draw (``seed``) is used in every column.
    No boxes are drawn (they would add edges).

    Returns:
        the path written (atomically).
    """
    from PIL import Image, ImageDraw

    from dadam.augment import DiseasedAreaAugment
    from dadam.ops import round_to_uint8

    config = DadamConfig(p=1.0) if config is None else config
    params = DiseasedAreaAugment.from_config(bank, stats, config, generator=int(seed)).sample(labels)
    S = images.shape[-1]
    crop = min(crop, S)
    w = params.boxes[..., 2] - params.boxes[..., 0]  # (B, K)
    h = params.boxes[..., 3] - params.boxes[..., 1]
    fits = params.active & (params.alpha >= 1) & (torch.maximum(w, h) <= crop * 3 // 4)  # pasted, with margin
    area = torch.where(fits, w * h, -1)
    chosen, shown = [], set()  # (image, slot), largest first, each patch once
    for b, k in zip(*np.unravel_index(np.argsort(-area.numpy(), axis=None), tuple(area.shape)), strict=True):
        pid = int(params.patch_ids[b, k])
        if int(area[b, k]) <= 0 or len(chosen) == rows:
            break
        if pid not in shown and b not in {c[0] for c in chosen}:
            chosen.append((int(b), int(k)))
            shown.add(pid)
    if not chosen:
        raise ValueError(f"no image got a pasted patch of at most {crop * 3 // 4} px with these labels and this seed")
    columns = {"before": images}
    for name, o in options.items():
        columns[name] = DiseasedAreaAugment.from_config(bank, stats, config.replace(**o)).apply(images, params)
    pad, head = 4, 16
    canvas = Image.new("L", (len(columns) * (crop + pad) + pad, head + len(chosen) * (crop + pad) + pad), 255)
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((pad + c * (crop + pad) + 2, 2), name, fill=0)
    for r, (b, k) in enumerate(chosen):
        x0, y0, x1, y1 = (int(v) for v in params.boxes[b, k])
        cx = min(max((x0 + x1) // 2 - crop // 2, 0), S - crop)
        cy = min(max((y0 + y1) // 2 - crop // 2, 0), S - crop)
        for c, out in enumerate(columns.values()):
            tile = out[b, 0, cy : cy + crop, cx : cx + crop]
            tile = tile if tile.dtype == torch.uint8 else round_to_uint8(tile.float() * 255)
            canvas.paste(Image.fromarray(tile.cpu().numpy()), (pad + c * (crop + pad), head + pad + r * (crop + pad)))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: canvas.save(f, format="PNG", optimize=True))
