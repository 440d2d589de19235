"""Lung fields: an on-device estimate of a chest radiograph's lung-field box, and the lung-aware placement rule.

A **lung box** is the bounding box of both lung fields together (from the apices to the costophrenic angles, between
the lateral lung margins), normalised to ``[0, 1]`` xyxy with a top-left origin, one ``(4,)`` row per image; a row of
NaN means "unknown". :data:`LUNG_BOX_COLUMNS` names its four columns in a label table or a box table.

:func:`lung_box` estimates it from intensity profiles (the method is described there): a batch of images in, ``(B,
4)`` out, with torch ops only (no host sync, no loop over samples).

``placement="lung"`` (:class:`~dadam.config.DadamConfig`) moves a patch from its donor's lung field into the
recipient's, patch size unchanged:

1. the **anchor** of a bank patch (:func:`lung_anchor`, once per bank): its box centre in its donor's lung box
   coordinates, ``(centre - lung_lo) / (lung_hi - lung_lo)`` per axis (0 and 1 are the lung box's edges), clamped
   to ``[-2, 3]``;
2. its top-left corner on a recipient (:func:`lung_corner`, per draw): ``round(c * canvas - size / 2)`` with the
   recipient's centre ``c = lo + anchor * (hi - lo)``, then clamped so that the patch lies inside the canvas. Every
   step is one float32 operation (the sampler kernel does the same ones), rounding half to even.

So a patch from the base of a donor's lung lands at the base of the recipient's, whatever their diaphragm heights.
A recipient or donor without a lung box (NaN) keeps the aligned box.

Example:
    >>> images = torch.zeros(2, 1, 64, 64)
    >>> lung_box(images).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "ANCHOR_RANGE",
    "LUNG_BOX_COLUMNS",
    "PROFILE_SIZE",
    "check_lung_boxes",
    "lung_anchor",
    "lung_box",
    "lung_box_errors",
    "lung_corner",
]

LUNG_BOX_COLUMNS = ("lung_x0", "lung_y0", "lung_x1", "lung_y1")
"""The lung box's columns in a label table (one row per image) or a box table (one row per box of the donor)."""
PROFILE_SIZE = 128
"""Side of the grid the profiles of :func:`lung_box` are taken on (its boxes are multiples of ``1 / 128``)."""
ANCHOR_RANGE = (-2.0, 3.0)
"""An anchor is clamped into this range (lung-box widths from its top-left corner), which keeps every pixel value of
the placement far below ``2**22``, where the kernel's rounding is exact."""

# The rules of lung_box, in units of the normalised intensity (the image's 1st to 99th percentile mapped to [0, 1]).
_BAND = (0.3, 0.6)  # rows of the column profile: mid-lung in any chest film
_MEDIASTINUM = (0.35, 0.65)  # columns where the mediastinum's brightness peak is searched
_SEED_ROWS = (0.25, 0.65)  # rows where a lung's darkest row is searched
_RISE = 0.12  # a border starts where the profile rises this much above the darkest value since the lung
_DROP = 0.05  # ... and ends at its peak, where the profile falls this much below its running maximum
_DARK = 0.5  # lung columns: darker than this fraction of the way from the darkest column to the mediastinum
_STRIPS = 3  # vertical strips per lung (the costophrenic angle and the apex are in different ones)
_BASE = 0.8  # a strip's base: where its profile reaches this fraction of the way from the lung to the abdomen


def lung_box(images: torch.Tensor) -> torch.Tensor:
    """Estimate the lung box of each chest radiograph from intensity profiles (torch ops, no host sync).

    The lungs are the dark fields between the bright chest wall and the bright mediastinum, above the bright
    abdomen. On a ``128 x 128`` grid of the image (area mean over the channels, a 3 x 3 box blur, intensities mapped
    to ``[0, 1]`` between the image's 1st and 99th percentile):

    1. **sides**: the column profile of the mid-lung rows; the mediastinum is its brightest column near the middle.
       Going outward from it on each side, the chest wall starts where the profile rises ``0.12`` above its lowest
       value since the mediastinum (the lung), and the lung margin is that rise's peak (followed until the profile
       falls ``0.05`` below its running maximum);
    2. **top and bottom**: the lung columns (darker than halfway from the darkest column to the mediastinum) are cut
       into three strips per lung, and each strip's row profile is followed from its darkest row: up to the apex by
       the same rise-and-peak rule, down to the base where it reaches ``0.8`` of the way from that darkest value to
       the abdomen (the profile's maximum below). The box takes the highest apex and the lowest base (the
       costophrenic angles are the lateral strips').

    The rule expects dark lungs (radiographs as :func:`dadam.io.read_image` returns them). It always returns a
    non-empty box. Measured against hand-annotated boxes of real NIH images and against the phantom generator's lung
    fields: see ``python -m benchmarks.lung_box``.

    Args:
        images: ``(B, C, H, W)`` radiographs, any C (the channels are averaged), uint8 or float, any size.

    Returns:
        ``(B, 4)`` float32 lung boxes, normalised xyxy in ``[0, 1]``, on the images' device.

    Shape:
        ``(B, C, H, W)`` -> ``(B, 4)``.

    Example:
        >>> boxes = lung_box(images)  # doctest: +SKIP
        >>> aug(images, labels, lung_boxes=boxes)  # doctest: +SKIP
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {got}")
    n = PROFILE_SIZE
    B = images.shape[0]
    if B == 0:
        return torch.zeros(0, 4, dtype=torch.float32, device=images.device)
    x = _normalised_grid(images)  # (B, n, n) in [0, 1]
    idx = torch.arange(n, device=images.device)  # (n,)

    # 1. sides: the column profile of the mid-lung rows, walked outward from the mediastinum on both sides at once
    cols = x[:, int(_BAND[0] * n) : int(_BAND[1] * n)].mean(1)  # (B, n)
    middle = (idx >= _MEDIASTINUM[0] * n) & (idx < _MEDIASTINUM[1] * n)  # (n,)
    mid = torch.where(middle, cols, -1.0).argmax(1)  # (B,) the mediastinum's column
    outward = torch.cat([cols.flip(1), cols])  # (2B, n): the left half read right to left, then the right half
    start = torch.cat([n - 1 - mid, mid])  # (2B,)
    wall = _rise_peak(outward, start, idx)  # (2B,) index in the walked direction
    left, right = n - 1 - wall[:B], wall[B:]  # (B,), (B,) the lung margins' columns

    # 2. top and bottom: row profiles of strips of the lung columns
    inside = (idx > left[:, None]) & (idx < right[:, None])  # (B, n)
    darkest = torch.where(inside, cols, 2.0).amin(1, keepdim=True)  # (B, 1)
    centre = cols.gather(1, mid[:, None])  # (B, 1)
    lung_cols = inside & (cols <= darkest + _DARK * (centre - darkest))  # (B, n)
    strips = _strips(lung_cols, mid, idx)  # (B, 2 * STRIPS, n) float column weights
    rows = torch.einsum("bys,bks->bky", x, strips) / strips.sum(2, keepdim=True).clamp_min(1.0)  # (B, K, n)
    rows = rows.flatten(0, 1)  # (B K, n)
    seed_rows = (idx >= _SEED_ROWS[0] * n) & (idx < _SEED_ROWS[1] * n)  # (n,)
    seed = torch.where(seed_rows, rows, 2.0).argmin(1)  # (B K,) each strip's darkest row
    apex = n - 1 - _rise_peak(rows.flip(1), n - 1 - seed, idx)  # (B K,)
    base = _base(rows, seed, idx)  # (B K,) the row below the base
    filled = strips.sum(2) > 0  # (B, K) strips with a column (a narrow lung has fewer than STRIPS)
    top = torch.where(filled, apex.view(B, -1), n).amin(1)  # (B,)
    based = filled & (base.view(B, -1) < n)  # (B, K) strips that reach the abdomen's level
    bottom = torch.where(based, base.view(B, -1), 0).amax(1)  # (B,)
    bottom = torch.where(based.any(1), bottom, n)
    empty = top >= bottom  # (B,) no lung column at all: the whole height
    top, bottom = torch.where(empty, 0, top), torch.where(empty, n, bottom)
    return torch.stack([left, top, right + 1, bottom], 1).to(torch.float32) / n  # (B, 4)


def _normalised_grid(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, n, n)`` float32: channel mean, area mean to ``n x n``, 3 x 3 box blur, the 1st..99th
    percentile mapped to ``[0, 1]`` (clamped)."""
    n = PROFILE_SIZE
    x = images.to(torch.float32).mean(1, keepdim=True)  # (B, 1, H, W)
    x = F.adaptive_avg_pool2d(x, n)  # (B, 1, n, n)
    x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False).flatten(0, 1)  # (B, n, n)
    ranked = x.flatten(1).sort(1).values  # (B, n n)
    last = n * n - 1
    lo, hi = ranked[:, round(0.01 * last), None, None], ranked[:, round(0.99 * last), None, None]  # (B, 1, 1) each
    return ((x - lo) / (hi - lo).clamp_min(1e-6)).clamp_(0.0, 1.0)


def _rise_peak(p: torch.Tensor, start: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Walk each profile from ``start`` toward higher indices: where it first rises ``_RISE`` above its minimum since
    ``start``, then on to its peak (until it falls ``_DROP`` below its running maximum). The end index when it never
    rises; ``p (R, n)``, ``start (R,)``, ``idx = arange(n)`` -> ``(R,)`` long."""
    n = p.shape[1]
    after = idx >= start[:, None]  # (R, n)
    low = torch.cummin(torch.where(after, p, float("inf")), 1).values  # (R, n) minimum since start
    rise = torch.where(after & (p - low > _RISE), idx, n - 1).amin(1, keepdim=True)  # (R, 1)
    past = idx >= rise  # (R, n)
    high = torch.cummax(torch.where(past, p, -1.0), 1).values  # (R, n) running maximum since the rise
    fall = torch.where(past & (p < high - _DROP), idx, n).amin(1, keepdim=True)  # (R, 1)
    return torch.where(past & (idx < fall), p, -1.0).argmax(1)  # (R,) the first maximum before the fall


def _base(p: torch.Tensor, seed: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The first row below ``seed`` where the profile reaches ``_BASE`` of the way from ``p[seed]`` to its maximum
    below ``seed`` (``n`` when it never does): the box's half-open bottom; ``p (R, n)``, ``seed (R,)``, ``idx =
    arange(n)`` -> ``(R,)`` long."""
    n = p.shape[1]
    below = idx > seed[:, None]  # (R, n)
    lung = p.gather(1, seed[:, None])  # (R, 1)
    abdomen = torch.where(below, p, -1.0).amax(1, keepdim=True)  # (R, 1)
    level = lung + _BASE * (abdomen - lung)  # (R, 1)
    return torch.where(below & (p >= level), idx, n).amin(1)


def _strips(lung_cols: torch.Tensor, mid: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``(B, n)`` lung columns, ``(B,)`` mediastinum column, ``idx = arange(n)`` -> ``(B, 2 STRIPS, n)`` float32
    weights: each side's lung columns cut into STRIPS strips of equal span, from its left to its right column."""
    n = lung_cols.shape[1]
    out = []
    for side in (idx < mid[:, None], idx > mid[:, None]):  # (B, n) each: the left lung, the right lung
        cols = lung_cols & side  # (B, n)
        first = torch.where(cols, idx, n).amin(1, keepdim=True)  # (B, 1)
        span = (torch.where(cols, idx, -1).amax(1, keepdim=True) - first + 1).clamp_min(0)  # (B, 1)
        strip = torch.div((idx - first) * _STRIPS, span.clamp_min(1), rounding_mode="floor")  # (B, n)
        out.append(cols[:, None] & (strip[:, None] == idx[:_STRIPS, None]))  # (B, STRIPS, n)
    return torch.cat(out, 1).to(torch.float32)


def lung_anchor(boxes: torch.Tensor, lungs: torch.Tensor, canvas: int) -> torch.Tensor:
    """The anchors of patches: their box centres in their donors' lung-box coordinates (see the module docstring).

    Args:
        boxes: ``(N, 4)`` canvas boxes of the patches, pixels, xyxy.
        lungs: ``(N, 4)`` their donors' lung boxes, normalised xyxy (NaN rows: unknown).
        canvas: side of the canvas the boxes are on.

    Returns:
        ``(N, 2)`` float32 ``(ax, ay)``: 0 at the lung box's left/top edge, 1 at its right/bottom edge; clamped to
        :data:`ANCHOR_RANGE`; NaN where the lung box is unknown.

    Shape:
        ``(N, 4)``, ``(N, 4)`` -> ``(N, 2)``.

    Example:
        >>> lung_anchor(torch.tensor([[10, 70, 30, 90]]), torch.tensor([[0.0, 0.25, 0.5, 1.0]]), 100).tolist()
        [[0.4000000059604645, 0.7333333492279053]]
    """
    b, lung = boxes.to(torch.float64), lungs.to(torch.float64)  # (N, 4) each
    centre = (b[:, :2] + b[:, 2:]) / (2 * canvas)  # (N, 2) normalised
    anchor = (centre - lung[:, :2]) / (lung[:, 2:] - lung[:, :2])  # (N, 2), NaN for an unknown lung box
    return anchor.clamp(*ANCHOR_RANGE).to(torch.float32)


def lung_corner(
    anchor: torch.Tensor, size: torch.Tensor, lungs: torch.Tensor, canvas: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-left corner of patches placed by their anchors in recipients' lung boxes (see the module docstring).

    Args:
        anchor: ``(..., 2)`` float32 anchors (:func:`lung_anchor`).
        size: ``(..., 2)`` long ``(w, h)`` of the patches.
        lungs: ``(..., 4)`` float32 recipients' lung boxes, normalised xyxy (broadcast against ``anchor``).
        canvas: canvas side.

    Returns:
        ``corner (..., 2)`` long ``(x0, y0)``, inside the canvas for the patch's size, and ``known (..., 1)`` bool:
        anchor and lung box are both known (where not, the corner is meaningless: keep the aligned one).

    Shape:
        ``(..., 2)``, ``(..., 2)``, ``(..., 4)`` -> ``(..., 2)``, ``(..., 1)``.

    Example:
        >>> lung_corner(torch.tensor([0.5, 1.0]), torch.tensor([10, 20]), torch.tensor([0.2, 0.1, 0.6, 0.7]), 100)
        (tensor([35, 60]), tensor([True]))
    """
    lo, hi = lungs[..., :2], lungs[..., 2:]  # (..., 2) each
    centre = lo + anchor * (hi - lo)  # (..., 2) float32, three rounded operations
    corner = centre * canvas - size * 0.5  # (..., 2) float32
    known = ~torch.isnan(corner).any(-1, keepdim=True)  # (..., 1)
    xy = torch.round(torch.where(known, corner, 0.0)).long()  # (..., 2), half to even
    return torch.minimum(xy.clamp_min(0), canvas - size), known


def lung_box_errors(lungs: torch.Tensor) -> torch.Tensor:
    """``(B, 4)`` lung boxes -> ``(B,)`` bool, the row is neither unknown (all NaN) nor a box in ``[0, 1]`` with
    ``x0 < x1`` and ``y0 < y1``. Torch ops only (on a GPU: fold it into a device-side check)."""
    unknown = torch.isnan(lungs).all(1)  # (B,)
    inside = ((lungs >= 0) & (lungs <= 1)).all(1)  # (B,), NaN fails
    ordered = (lungs[:, 0] < lungs[:, 2]) & (lungs[:, 1] < lungs[:, 3])  # (B,)
    return ~(unknown | (inside & ordered))


def check_lung_boxes(lungs: object, batch: int, device: torch.device, *, name: str = "lung_boxes") -> None:
    """Raise ``ValueError``/``TypeError`` unless ``lungs`` is a ``(batch, 4)`` float tensor on ``device``; on the CPU
    also unless every row is unknown (all NaN) or a box in ``[0, 1]`` with ``x0 < x1`` and ``y0 < y1`` (on a GPU the
    caller checks the values on the device: :func:`lung_box_errors`)."""
    if not isinstance(lungs, torch.Tensor):
        raise TypeError(f"{name} must be a ({batch}, 4) float tensor or None, got {type(lungs).__name__}")
    if tuple(lungs.shape) != (batch, 4) or not lungs.is_floating_point():
        raise ValueError(
            f"{name} must be a ({batch}, 4) float tensor of normalised xyxy lung boxes, got shape "
            f"{tuple(lungs.shape)} and dtype {lungs.dtype}"
        )
    if lungs.device != device:
        raise ValueError(f"{name} are on {lungs.device}, the labels on {device}: move them with .to(labels.device)")
    if lungs.device.type == "cpu":
        bad = lung_box_errors(lungs)
        if bool(bad.any()):
            row = int(bad.to(torch.uint8).argmax())
            values = ", ".join(f"{v:.6g}" for v in lungs[row].tolist())
            raise ValueError(
                f"{name} row {row} is [{values}]: a lung box is normalised xyxy in [0, 1] with x0 < x1 and y0 < y1, "
                f"or all NaN when unknown ({int(bad.sum())} such rows)"
            )
