"""The building blocks of the samplers: pure functions of uniforms, written per row so that a kernel can follow them.

Each takes uniforms in ``[0, 1)`` and lookup tables and returns indices or boxes; none draws random numbers, syncs
with the host or loops over samples (fixed small loops over slots and candidates live in the rules). What every rule
does alike is here once: :func:`recipients` (positives, normal images, the gate), :func:`pick_and_place` (a patch of a
class and its box) and :class:`Slots` (slots filled first-fit, then the params).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from dadam.anatomy import lung_corner
from dadam.sampling.params import DadamParams, apply_labels

if TYPE_CHECKING:
    from dadam.config import DadamConfig
    from dadam.sampling.tables import SamplerTables

__all__ = [
    "Recipients",
    "Slots",
    "categorical",
    "first_fit",
    "has_class",
    "lung_placement",
    "overlaps",
    "pick_and_place",
    "pick_in_range",
    "place",
    "recipients",
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


class Recipients(NamedTuple):
    """What a rule reads from the recipients' labels before it draws a class (:func:`recipients`)."""

    pos: torch.Tensor  # (B, C) bool, positive (> 0.5; NaN unknown, not positive)
    pos_other: torch.Tensor  # (B, C) bool, positive and not "No Finding"
    normal: torch.Tensor  # (B, 1) bool, "No Finding" and nothing else: a paste's recipient
    gate: torch.Tensor  # (B, 1) bool, the sample may change: its gate uniform is below p, and it is in the mask


def recipients(
    labels: torch.Tensor, u_gate: torch.Tensor, tables: SamplerTables, p: float, mask: torch.Tensor | None = None
) -> Recipients:
    """The positives, the normal images and the gate of a batch (the first lines of every rule).

    Args:
        labels: ``(B, C)`` multi-hot labels (> 0.5 positive; NaN unknown, not positive).
        u_gate: ``(B,)`` uniforms in ``[0, 1)``: a sample may change when its uniform is below ``p``.
        tables: the :class:`~dadam.sampling.SamplerTables` (``not_nf`` and ``no_finding`` are read).
        p: the per-sample probability.
        mask: ``(B,)`` bool, the samples that may change (None: all).

    Returns:
        the :class:`Recipients`.

    Shape:
        labels ``(B, C)``, u_gate ``(B,)`` -> pos / pos_other ``(B, C)``, normal / gate ``(B, 1)``.
    """
    pos = labels > 0.5  # (B, C), NaN -> False
    pos_other = pos & tables.not_nf  # (B, C)
    normal = pos[:, tables.no_finding, None] > pos_other.any(1, keepdim=True)  # (B, 1) "No Finding" and nothing else
    gate = u_gate[:, None] < p  # (B, 1)
    if mask is not None:
        gate = gate & mask[:, None]
    return Recipients(pos, pos_other, normal, gate)


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


def pick_and_place(
    cls: torch.Tensor,
    u_patch: torch.Tensor,
    u_jitter: torch.Tensor,
    tables: SamplerTables,
    jitter: float,
    lung: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform patch of each class (:func:`pick_in_range` over the bank's ranges) and its box (:func:`place`).

    Args:
        cls: ``(B, R)`` long classes (R candidates per sample).
        u_patch: ``(B, R)`` uniforms of the patches.
        u_jitter: ``(B, R, 2)`` uniforms of the shifts.
        tables: the :class:`~dadam.sampling.SamplerTables` (the bank's patch ranges, boxes and canvas).
        jitter: largest shift, fraction of the canvas.
        lung: as for :func:`place` (:func:`lung_placement`).

    Returns:
        ``pid (B, R)`` long and ``box (B, R, 4)`` long xyxy.
    """
    pid = pick_in_range(cls, u_patch, tables.patch_start, tables.patch_count, tables.patch_last)  # (B, R)
    return pid, place(pid, u_jitter, tables.patch_boxes, tables.canvas, jitter, lung)


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


class Slots:
    """The slots of a batch, filled one after the other by a rule: slot 0 first, then each further slot with the
    first of its candidates that overlaps no placed patch (:meth:`fill_first`); :meth:`params` makes the
    :class:`~dadam.sampling.DadamParams`.

    Args:
        pid: ``(B, 1)`` long, slot 0's patch; box: ``(B, 1, 4)`` long, its box; cls: ``(B, 1)`` long, its class.
        active: ``(B, 1)`` bool, slot 0 holds a patch (its box is zeroed where not, so it overlaps nothing).

    Attributes:
        boxes: ``(B, k, 4)`` long, the boxes of the k slots filled so far (0 where inactive).
    """

    def __init__(self, pid: torch.Tensor, box: torch.Tensor, cls: torch.Tensor, active: torch.Tensor) -> None:
        self.boxes = box * active[..., None]  # (B, 1, 4), 0 if inactive
        self._pids, self._classes, self._actives = [pid], [cls], [active]

    def fill_first(
        self, pid: torch.Tensor, box: torch.Tensor, cls: torch.Tensor, ok: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill the next slot with the first of R candidates that overlaps no placed box (:func:`first_fit`).

        Args:
            pid: ``(B, R)`` long, the candidates' patches; box: ``(B, R, 4)`` their boxes; cls: ``(B, R)`` their
                classes.
            ok: ``(B, 1)`` bool, the slot may be filled.

        Returns:
            ``accept (B, 1)`` bool (the slot holds a patch) and the class taken ``(B, 1)`` long.
        """
        accept, first, pid_sel, box_sel = first_fit(pid, box, self.boxes, ok)  # (B, 1) ... (B, 1, 4)
        cls_sel = torch.gather(cls, 1, first)  # (B, 1)
        self.boxes = torch.cat([self.boxes, box_sel], 1)  # (B, k + 1, 4)
        self._pids.append(pid_sel)
        self._classes.append(cls_sel)
        self._actives.append(accept)
        return accept, cls_sel

    def params(
        self,
        labels: torch.Tensor,
        *,
        paste: torch.Tensor,
        blend: torch.Tensor,
        config: DadamConfig,
        template: torch.Tensor | None = None,
        dropped: torch.Tensor | None = None,
    ) -> DadamParams:
        """The params of the filled slots, with the new labels (:func:`~dadam.sampling.apply_labels`).

        Args:
            labels: ``(B, C)`` the input labels.
            paste: ``(B, 1)`` bool, the sample is a paste; blend: ``(B, 1)`` bool, a blend (never both).
            config: the options (``alpha``, ``soft_label``).
            template: ``(B,)`` long label rows (the co-occurrence rule), None: all -1.
            dropped: ``(B,)`` long template classes left unplaced, None: all 0.

        Returns:
            the :class:`~dadam.sampling.DadamParams` (inactive slots: patch 0, class -1, alpha 0).
        """
        B = labels.shape[0]
        active = torch.cat(self._actives, 1)  # (B, K)
        params = DadamParams(
            boxes=self.boxes,
            patch_ids=torch.cat(self._pids, 1) * active,
            classes=torch.where(active, torch.cat(self._classes, 1), -1),
            active=active,
            alpha=active * torch.where(blend, config.alpha, 1.0),  # (B, K) float32
            mode=(paste.long() + 2 * blend.long()).view(B),  # MODE_NONE, MODE_PASTE or MODE_BLEND
            changed=(paste | blend).view(B),
            labels=labels,
            template=template,
            dropped=dropped,
        )
        params.labels = apply_labels(labels, params, soft_label=config.soft_label)
        return params
