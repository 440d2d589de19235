"""The building blocks of the samplers: pure functions of uniforms, written per row so that a kernel can follow them.

Each takes uniforms in ``[0, 1)`` and lookup tables and returns indices or boxes; none draws random numbers, syncs
with the host or loops over samples (fixed small loops over slots and candidates live in the rules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dadam.anatomy import lung_corner

if TYPE_CHECKING:
    from dadam.config import DadamConfig
    from dadam.sampling.tables import SamplerTables

__all__ = [
    "categorical",
    "first_fit",
    "has_class",
    "lung_placement",
    "overlaps",
    "pick_in_range",
    "place",
    "sequential_cdf",
]


def sequential_cdf(weights: torch.Tensor) -> torch.Tensor:
    """The CDF of the co-occurrence rule: a float64 running sum from the first class to the last, each partial sum
    rounded to float32. The same numbers on every device (the sampler kernel adds in this order too).

    Args:
        weights: ``(B, C)`` weights ``>= 0``, any float dtype.

    Returns:
        ``(B, C)`` float32 partial sums.

    Shape:
        ``(B, C)`` -> ``(B, C)``.

    Example:
        >>> sequential_cdf(torch.tensor([[2.0**24, 1.0, 1.0]])).tolist()  # float32 partial sums would stay 2**24
        [[16777216.0, 16777216.0, 16777218.0]]
    """
    w = weights.to(torch.float64)  # (B, C)
    if w.device.type == "cpu":
        return torch.cumsum(w, -1).to(torch.float32)  # the CPU's cumsum is this very loop (tested)
    # elsewhere cumsum is a parallel scan, whose float64 sums may differ in the last bit: add in class order
    acc = w.narrow(-1, 0, 1)  # (B, 1)
    sums = [acc]
    for c in range(1, w.shape[-1]):
        acc = acc + w.narrow(-1, c, 1)
        sums.append(acc)
    return torch.cat(sums, -1).to(torch.float32)


def categorical(
    weights: torch.Tensor, u: torch.Tensor, *, sequential: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF draws over the last dimension of ``weights`` (one row per sample, a few classes).

    Args:
        weights: ``(B, C)`` unnormalised weights ``>= 0``.
        u: ``(B, R)`` uniforms in ``[0, 1)``: R draws per row from the same weights.
        sequential: take the CDF of :func:`sequential_cdf` (the co-occurrence rule: equal on every device);
            False: ``torch.cumsum`` in the weights' dtype (the correlation rule, the stream of release 0.1.0; the CPU
            accumulates in float64 in class order, CUDA in float32 by a parallel scan).

    Returns:
        ``index (B, R)`` long, always a class with positive weight when the row has one (0 when none), and
        ``ok (B, 1)`` bool, the row has a positive weight.

    Shape:
        weights ``(B, C)``, u ``(B, R)`` -> ``(B, R)``, ``(B, 1)``.

    Example:
        >>> categorical(torch.tensor([[0.0, 1.0, 3.0]]), torch.tensor([[0.1, 0.5]]))
        (tensor([[1, 2]]), tensor([[True]]))
    """
    cdf = sequential_cdf(weights) if sequential else torch.cumsum(weights, -1)  # (B, C)
    total = cdf.narrow(-1, cdf.shape[-1] - 1, 1)  # (B, 1)
    v = u * total  # (B, R)
    # u * total may round up to total: the classes from the last positive one on (cdf == total) never count as
    # "below v", so such a draw lands on the last positive class (and on class 0 when every weight is 0).
    cdf = cdf.masked_fill(cdf >= total, float("inf"))  # (B, C), still non-decreasing
    if cdf.device.type != "cpu" or torch.get_num_threads() == 1 or cdf.shape[0] >= 4096:
        idx = torch.searchsorted(cdf, v, right=True)  # (B, R)
    else:
        # the same index as a count of cdf values <= v (cdf is non-decreasing): CPU searchsorted forks its threads
        # even for a few values, which stalls a small batch on a busy machine; elementwise ops and sums fork only
        # above torch's grain size (a large batch is worth the fork: searchsorted is then the faster)
        idx = (cdf[..., None, :] <= v[..., None]).sum(-1)  # (B, R)
    return idx, total > 0


def pick_in_range(
    cls: torch.Tensor, u: torch.Tensor, start: torch.Tensor, count: torch.Tensor, last: torch.Tensor
) -> torch.Tensor:
    """A uniform entry of class ``cls``'s range: ``start[cls] + min(floor(u * count[cls]), last[cls])``.

    Serves the bank's patches and the label rows alike (both sorted by class, with a start and count per class).

    Args:
        cls: class indices, any shape, long.
        u: uniforms of the same shape.
        start: ``(C,)`` long, first entry of each class (clamped into the table, so an empty class stays indexable).
        count: ``(C,)`` long, entries per class (``u * count`` is computed in ``u``'s float32).
        last: ``(C,)`` long, ``count - 1`` clamped at 0.

    Returns:
        entry indices, the shape of ``cls``, long.
    """
    draw = torch.minimum((u * count.take(cls)).long(), last.take(cls))
    return draw.add_(start.take(cls))


def has_class(row_bits: torch.Tensor, class_bits: torch.Tensor) -> torch.Tensor:
    """Decode class bit masks: ``row_bits (...)`` int32, ``class_bits (C,)`` int32 (``1 << c``) -> ``(..., C)`` bool."""
    return (row_bits[..., None] & class_bits) != 0


def lung_placement(
    tables: SamplerTables, config: DadamConfig, lung_boxes: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ``lung`` argument of :func:`place` for one call: None with ``config.placement="aligned"``, else the
    patches' anchors and the recipients' ``(B, 4)`` lung boxes (a ``ValueError`` when those are missing)."""
    if config.placement != "lung":
        return None
    if lung_boxes is None:
        raise ValueError(
            "placement='lung' needs the recipients' lung boxes: pass lung_boxes=(B, 4) normalised xyxy boxes (from "
            "the label table's lung_x0..lung_y1 columns, dadam.formats.lung_boxes_tensor, or estimated with "
            "dadam.anatomy.lung_box(images))"
        )
    return tables.patch_anchor, lung_boxes


def place(
    pid: torch.Tensor,
    u: torch.Tensor,
    patch_boxes: torch.Tensor,
    canvas: int,
    jitter: float,
    lung: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Box of patch ``pid``: aligned (or mapped into the recipient's lung box), shifted by up to ``jitter * canvas``
    pixels per axis, kept inside the canvas.

    Args:
        pid: patch indices ``(B, ...)``.
        u: ``(B, ..., 2)`` uniforms (unused without jitter).
        patch_boxes: ``(N, 4)`` long, the bank's aligned boxes.
        canvas: canvas side.
        jitter: largest shift, fraction of the canvas.
        lung: ``placement="lung"``: ``(patch_anchor (N, 2), recipient lung boxes (B, 4))``; the box moves to
            :func:`dadam.anatomy.lung_corner` (kept aligned where the anchor or the lung box is unknown). None:
            aligned.

    Returns:
        ``(B, ..., 4)`` long xyxy boxes.
    """
    box = patch_boxes[pid]  # (B, ..., 4)
    if lung is not None:
        anchor, recipient = lung  # (N, 2), (B, 4)
        wh = box[..., 2:] - box[..., :2]  # (B, ..., 2) (w, h)
        recipient = recipient.view(recipient.shape[0], *(1,) * (pid.ndim - 1), 4)  # (B, 1.., 4)
        corner, known = lung_corner(anchor[pid], wh, recipient, canvas)  # (B, ..., 2), (B, ..., 1)
        xy0 = torch.where(known, corner, box[..., :2])  # (B, ..., 2)
        box = torch.cat([xy0, xy0 + wh], -1)
    if jitter <= 0:
        return box
    wh = box[..., 2:] - box[..., :2]  # (..., 2) (w, h)
    shift = torch.round((2 * u - 1) * (jitter * canvas)).long()  # (..., 2) (dx, dy)
    xy0 = torch.minimum((box[..., :2] + shift).clamp_min(0), canvas - wh)
    return torch.cat([xy0, xy0 + wh], -1)


def overlaps(cand: torch.Tensor, placed: torch.Tensor) -> torch.Tensor:
    """cand ``(B, R, 4)``, placed ``(B, k, 4)`` -> ``(B, R)`` bool, the candidate overlaps a placed box.

    Boxes are non-empty (a bank's boxes are); an all-zero placed box (an inactive slot) overlaps nothing.
    """
    c = cand[:, :, None, :]  # (B, R, 1, 4)
    a = placed[:, None, :, :]  # (B, 1, k, 4)
    lo = torch.maximum(c[..., :2], a[..., :2])  # (B, R, k, 2) intersection's x0, y0
    hi = torch.minimum(c[..., 2:], a[..., 2:])  # (B, R, k, 2) intersection's x1, y1
    return (lo < hi).all(-1).any(-1)


def first_fit(
    pid: torch.Tensor, box: torch.Tensor, placed: torch.Tensor, ok: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first of R candidates that overlaps no placed box.

    Args:
        pid: ``(B, R)`` long, candidate patches.
        box: ``(B, R, 4)`` their boxes.
        placed: ``(B, k, 4)`` boxes placed so far (all zero where inactive).
        ok: ``(B, 1)`` bool, the slot may be filled.

    Returns:
        ``accept (B, 1)`` bool, ``first (B, 1)`` long (the candidate taken), its patch ``(B, 1)`` and its box
        ``(B, 1, 4)`` (all zero where not accepted).
    """
    fits = ~overlaps(box, placed)  # (B, R)
    first = torch.argmax(fits.to(torch.uint8), 1, keepdim=True)  # (B, 1), the first candidate that fits
    accept = ok & fits.any(1, keepdim=True)  # (B, 1)
    box_sel = torch.gather(box, 1, first[..., None].expand(-1, 1, 4)) * accept[..., None]  # (B, 1, 4)
    return accept, first, torch.gather(pid, 1, first), box_sel
