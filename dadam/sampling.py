"""All of DADAM's randomness: which samples change, which classes and patches, where they go.

The sampler needs labels and the bank's index (boxes and per-class ranges), never pixels, so an audit can run it
over a whole label table on the CPU. It is vectorised over the batch (and over the candidate patches), draws every
random number in one ``torch.rand`` call and never syncs with the host: categorical draws use an inverse CDF with
``torch.searchsorted``, the non-overlap rule draws ``candidates`` boxes per slot and takes the first that fits with
``argmax``. It runs under ``torch.cuda.set_sync_debug_mode("error")``.

Per sample, with probability ``p`` (see :func:`sample` for the details):

- a *normal* image (only "No Finding" positive) gets a tail-class patch at its aligned position plus up to
  ``max_patches - 1`` non-overlapping companion patches; its labels become exactly the pasted classes (mode 1);
- an image showing a tail class ``t`` gets one companion class ``j`` it lacks, blended with ``alpha`` at its aligned
  position; its labels gain ``j`` (mode 2);
- any other image, or one for which no class can be drawn (all weights zero), is unchanged (mode 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch

from dadam.labels import CXR_LT_CLASSES, NO_FINDING

__all__ = ["MODE_BLEND", "MODE_NONE", "MODE_PASTE", "DadamParams", "apply_labels", "sample", "sampling_weights"]

MODE_NONE, MODE_PASTE, MODE_BLEND = 0, 1, 2
NO_FINDING_INDEX = CXR_LT_CLASSES.index(NO_FINDING)


@dataclass
class DadamParams:
    """What one DADAM call did, as on-device tensors (B samples, K = ``max_patches`` slots).

    Attributes:
        boxes: ``(B, K, 4)`` long, where each patch goes on the canvas, xyxy, pixels, half-open (0 where inactive).
        patch_ids: ``(B, K)`` long, bank patch index (0 where inactive).
        classes: ``(B, K)`` long, class of the patch (-1 where inactive).
        active: ``(B, K)`` bool, slot holds a placed patch. Active patches of a sample never overlap.
        alpha: ``(B, K)`` float32, patch weight: 1.0 for a paste, ``alpha`` for a blend (0 where inactive).
        mode: ``(B,)`` long, 0 unchanged, 1 paste (normal image), 2 blend (tail-class image); blends use slot 0 only.
        changed: ``(B,)`` bool, ``mode != 0``.
        labels: ``(B, num_classes)`` the new labels (dtype of the input labels).
    """

    boxes: torch.Tensor
    patch_ids: torch.Tensor
    classes: torch.Tensor
    active: torch.Tensor
    alpha: torch.Tensor
    mode: torch.Tensor
    changed: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.mode.shape[0])

    def __getitem__(self, index) -> DadamParams:
        """Params of a subset of the batch (``int`` keeps the batch dimension: ``params[3]`` has B = 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return DadamParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str) -> DadamParams:
        """A copy with every tensor on ``device``."""
        return DadamParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def max_patches(self) -> int:
        return int(self.active.shape[1])

    @classmethod
    def cat(cls, parts: Sequence[DadamParams]) -> DadamParams:
        """Params of several batches joined along the batch dimension (``torch.cat`` of every field).

        Args:
            parts: params with the same ``max_patches`` and number of classes, on one device.

        Returns:
            params with ``sum(len(p) for p in parts)`` samples, in order.

        Example:
            >>> params = DadamParams.cat([aug.sample(y[:4096]), aug.sample(y[4096:])])  # doctest: +SKIP
        """
        if not parts:
            raise ValueError("DadamParams.cat needs at least one DadamParams, got an empty sequence")
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})


def sampling_weights(
    freq: torch.Tensor,
    corr: torch.Tensor,
    tail: torch.Tensor,
    covered: torch.Tensor,
    *,
    gamma: float = 1.0,
    beta: float = 1.0,
    min_freq: float = 1e-6,
    no_finding: int = NO_FINDING_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised class weights for the sampler.

    ``tail_weight[c] = max(freq[c], min_freq) ** -gamma`` for the tail classes the bank covers, else 0.
    ``companion_weight[t, j] = corr[t, j] ** beta`` where ``corr[t, j] > 0``, ``j != t``, ``j`` covered and not
    "No Finding", else 0.

    Args:
        freq: ``(C,)`` class frequencies.
        corr: ``(C, C)`` label correlation.
        tail: ``(C,)`` bool tail mask.
        covered: ``(C,)`` bool, classes the bank has patches of.
        gamma: tail-class sharpening (``>= 0``; 0 draws tail classes uniformly).
        beta: companion sharpening (``>= 0``; 0 draws every positively correlated class uniformly).
        min_freq: frequencies below this count as ``min_freq`` (keeps unseen classes finite).
        no_finding: index of "No Finding" (never a tail or companion class).

    Returns:
        ``tail_weight (C,)`` and ``companion_weight (C, C)``, float32.

    Shape:
        freq ``(C,)``, corr ``(C, C)``, tail ``(C,)``, covered ``(C,)`` -> ``(C,)``, ``(C, C)``.

    Example:
        >>> tw, cw = sampling_weights(torch.full((26,), 0.1), torch.eye(26), torch.ones(26, dtype=torch.bool),
        ...                           torch.ones(26, dtype=torch.bool))
        >>> float(tw[0]), float(tw[14]), float(cw.sum())
        (10.0, 0.0, 0.0)
    """
    if not (gamma >= 0 and beta >= 0):  # NaN fails too
        raise ValueError(f"gamma and beta must be >= 0, got gamma={gamma}, beta={beta}")
    freq = freq.float()
    corr = corr.float()
    ok = tail.bool() & covered.bool()
    ok[no_finding] = False
    tail_weight = torch.where(ok, freq.clamp_min(min_freq) ** -gamma, torch.zeros_like(freq))
    comp_ok = (corr > 0) & covered.bool()[None, :] & ~torch.eye(len(freq), dtype=torch.bool, device=corr.device)
    comp_ok[:, no_finding] = False
    comp_ok[no_finding, :] = False
    companion_weight = torch.where(comp_ok, corr.clamp_min(0) ** beta, torch.zeros_like(corr))
    return tail_weight, companion_weight


class _Tables(NamedTuple):
    """The sampler's per-call constants, built once per module (or once per :func:`sample` call), on one device."""

    tail_weight: torch.Tensor  # (C,) float32
    blend_tail_weight: torch.Tensor  # (C,) float32
    companion_weight: torch.Tensor  # (C, C) float32
    patch_boxes: torch.Tensor  # (N, 4) long
    count_f: torch.Tensor  # (C,) float32 patches per class
    count_max: torch.Tensor  # (C,) long, (count - 1).clamp_min(0)
    start: torch.Tensor  # (C,) long, first patch of each class, clamped into [0, N)
    not_nf: torch.Tensor  # (C,) bool, every class but "No Finding"
    arange_c: torch.Tensor  # (C,) long
    u_first: torch.Tensor  # (4 * M,) long, columns of u for slot 0 and the slot-1 candidates (M = 1 + R or 1)
    first_col: torch.Tensor  # (M,) bool, column 0 (slot 0) of that block


def _tables(
    tail_weight: torch.Tensor,
    companion_weight: torch.Tensor,
    patch_boxes: torch.Tensor,
    class_start: torch.Tensor,
    class_count: torch.Tensor,
    *,
    blend_tail_weight: torch.Tensor | None = None,
    max_patches: int,
    candidates: int,
    no_finding: int,
    device: torch.device,
) -> _Tables:
    """The constants of :func:`_draw` on ``device`` (see :class:`_Tables`)."""
    C = tail_weight.shape[0]
    n_patches = patch_boxes.shape[0]
    class_count = class_count.to(device)
    not_nf = torch.ones(C, dtype=torch.bool, device=device)
    not_nf[no_finding] = False
    # u columns (see _draw): slot 0 uses 2 (companion j), 3 (patch), 4, 5 (jitter); candidate r of slot 1 uses
    # 6 + 4 r + (0 class, 1 patch, 2, 3 jitter). Gathered as [classes (M), patches (M), jitters (M, 2)].
    R = candidates if max_patches > 1 else 0
    cls_cols = [2] + [6 + 4 * r for r in range(R)]
    pid_cols = [3] + [7 + 4 * r for r in range(R)]
    jit_cols = [4, 5] + [c for r in range(R) for c in (8 + 4 * r, 9 + 4 * r)]
    return _Tables(
        tail_weight=tail_weight.to(device=device, dtype=torch.float32),
        blend_tail_weight=(tail_weight if blend_tail_weight is None else blend_tail_weight).to(
            device=device, dtype=torch.float32
        ),
        # a class is never its own companion, nor is "No Finding" (sampling_weights gives both weight 0 already)
        companion_weight=companion_weight.to(device=device, dtype=torch.float32, copy=True)
        .fill_diagonal_(0.0)
        .index_fill_(1, torch.tensor([no_finding], device=device), 0.0),
        patch_boxes=patch_boxes.to(device),
        count_f=class_count.to(torch.float32),  # u * count in float32, as with the long counts
        count_max=(class_count - 1).clamp_min(0),
        # a class without patches (only drawn for inactive slots) stays indexable
        start=class_start[:C].to(device).clamp(0, max(n_patches - 1, 0)),
        not_nf=not_nf,
        arange_c=torch.arange(C, device=device),
        u_first=torch.tensor(cls_cols + pid_cols + jit_cols, dtype=torch.long, device=device),
        first_col=torch.arange(1 + R, device=device) == 0,
    )


def _categorical(weights: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF draws without host sync.

    weights ``(B, C)`` >= 0, u ``(B, R)`` in [0, 1) -> index ``(B, R)`` long (always a class with positive weight
    when any; 0 when none) and ``ok (B, 1)`` bool (some weight is positive).
    """
    cdf = torch.cumsum(weights, -1)  # (B, C)
    total = cdf.narrow(-1, cdf.shape[-1] - 1, 1)  # (B, 1)
    v = u * total  # (B, R)
    # u * total may round up to total: the classes from the last positive one on (cdf == total) never count as
    # "below v", so such a draw lands on the last positive class (and on class 0 when every weight is 0).
    cdf = cdf.masked_fill(cdf >= total, float("inf"))  # (B, C), still non-decreasing
    if cdf.device.type != "cpu" or torch.get_num_threads() == 1:
        idx = torch.searchsorted(cdf, v, right=True)  # (B, R)
    else:
        # the same index as a count of cdf values <= v (cdf is non-decreasing): CPU searchsorted forks its threads
        # even for a few values, which stalls a small batch on a busy machine; elementwise ops and sums fork only
        # above torch's grain size
        idx = (cdf[..., None, :] <= v[..., None]).sum(-1)  # (B, R)
    return idx, total > 0


def _draw_patch(cls: torch.Tensor, u: torch.Tensor, tables: _Tables) -> torch.Tensor:
    """Uniform patch of class ``cls``: ``start[cls] + min(floor(u * count[cls]), count[cls] - 1)`` (any shape, long).

    A class without patches (only drawn for inactive slots) gives its clamped start, a valid patch index.
    """
    draw = torch.minimum((u * tables.count_f.take(cls)).long(), tables.count_max.take(cls))
    return draw.add_(tables.start.take(cls))


def _place(pid: torch.Tensor, u: torch.Tensor | None, patch_boxes: torch.Tensor, canvas: int, jitter: float):
    """Aligned box of patch ``pid`` shifted by up to ``jitter * canvas`` pixels, kept inside the canvas.

    pid ``(...)``, u ``(..., 2)`` in [0, 1) (unused without jitter) -> boxes ``(..., 4)`` long xyxy.
    """
    box = patch_boxes[pid]  # (..., 4)
    if jitter <= 0:
        return box
    wh = box[..., 2:] - box[..., :2]  # (..., 2) (w, h)
    shift = torch.round((2 * u - 1) * (jitter * canvas)).long()  # (..., 2) (dx, dy)
    xy0 = torch.minimum((box[..., :2] + shift).clamp_min(0), canvas - wh)
    return torch.cat([xy0, xy0 + wh], -1)


def _one_hot(cls: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(...)`` long -> ``(..., num_classes)`` bool; all False for -1 (inactive). A comparison: never syncs."""
    return cls[..., None] == torch.arange(num_classes, device=cls.device)


def _overlaps(cand: torch.Tensor, placed: torch.Tensor) -> torch.Tensor:
    """cand ``(B, R, 4)``, placed ``(B, k, 4)`` -> ``(B, R)`` bool, overlaps any placed box.

    Boxes are non-empty (a bank's boxes are); an all-zero placed box (an inactive slot) overlaps nothing.
    """
    c = cand[:, :, None, :]  # (B, R, 1, 4)
    a = placed[:, None, :, :]  # (B, 1, k, 4)
    lo = torch.maximum(c[..., :2], a[..., :2])  # (B, R, k, 2) intersection's x0, y0
    hi = torch.minimum(c[..., 2:], a[..., 2:])  # (B, R, k, 2) intersection's x1, y1
    return (lo < hi).all(-1).any(-1)


def apply_labels(labels: torch.Tensor, params: DadamParams, *, soft_label: bool = False) -> torch.Tensor:
    """The labels after DADAM, from the params alone.

    Mode 1 (paste): exactly the active slots' classes (1.0), everything else 0 ("No Finding" cleared).
    Mode 2 (blend): the input labels with the slot-0 class set to 1.0 (or to its ``alpha`` if ``soft_label``).
    Mode 0: unchanged.

    Args:
        labels: ``(B, C)`` multi-hot labels.
        params: the :class:`DadamParams` of the call.
        soft_label: blended classes get ``alpha`` instead of 1.

    Returns:
        ``(B, C)`` new labels, dtype of ``labels``; the input is not modified.

    Shape:
        labels ``(B, C)`` -> ``(B, C)``.

    Example:
        >>> y2 = apply_labels(y, params)  # doctest: +SKIP
    """
    num_classes = labels.shape[1]
    hot = _one_hot(params.classes, num_classes).to(labels.dtype)  # (B, K, C)
    hot = hot * params.active[..., None].to(labels.dtype)
    pasted = hot.amax(1) if hot.shape[1] else torch.zeros_like(labels)  # (B, C)
    value = params.alpha[:, :1].to(labels.dtype) if soft_label else torch.ones_like(labels[:, :1])  # (B, 1)
    blended = torch.where(hot[:, 0] > 0, value, labels) if hot.shape[1] else labels
    mode = params.mode[:, None]
    return torch.where(mode == MODE_PASTE, pasted, torch.where(mode == MODE_BLEND, blended, labels))


def sample(
    labels: torch.Tensor,
    *,
    tail_weight: torch.Tensor,
    companion_weight: torch.Tensor,
    patch_boxes: torch.Tensor,
    class_start: torch.Tensor,
    class_count: torch.Tensor,
    canvas: int,
    blend_tail_weight: torch.Tensor | None = None,
    p: float = 0.5,
    alpha: float = 0.6,
    max_patches: int = 3,
    jitter: float = 0.0,
    candidates: int = 8,
    soft_label: bool = False,
    no_finding: int = NO_FINDING_INDEX,
    generator: torch.Generator | None = None,
) -> DadamParams:
    """Draw DADAM parameters for a batch of labels (no pixels needed, no host sync).

    Per sample, a gate ``u < p`` decides whether it may change. Then:

    - normal image (only "No Finding" positive; values > 0.5 count as positive, NaN as not): draw a tail class
      ``t ~ tail_weight`` and a uniform patch of ``t``, placed at its aligned box (the box it was cut from on the
      canvas) shifted by a uniform jitter of up to ``jitter * canvas`` pixels per axis, kept inside the canvas.
      For each further slot ``k < max_patches``, draw ``candidates`` (class, patch, position) triples with classes
      ``j ~ companion_weight[t]`` over classes not yet placed, and keep the first that overlaps no placed patch;
      if none fits or no class has weight, the slot stays inactive. Labels: exactly the placed classes.
    - image with a tail class (``blend_tail_weight > 0``) positive: draw one of its tail classes
      ``t ~ blend_tail_weight``,
      then ``j ~ companion_weight[t]`` over the classes not positive, and blend a uniform patch of ``j`` at its
      aligned (jittered) box with weight ``alpha``. Labels: input plus ``j`` (1, or ``alpha`` if ``soft_label``).
    - anything else, or when the weights leave nothing to draw: unchanged.

    Args:
        labels: ``(B, C)`` multi-hot labels (1 positive, 0 negative, NaN unknown).
        tail_weight: ``(C,)`` unnormalised tail-class weights of the pastes (see :func:`sampling_weights`): only
            classes the bank covers.
        companion_weight: ``(C, C)`` unnormalised companion weights, row = tail class (its diagonal and the
            "No Finding" column are ignored: a class is never its own companion, "No Finding" never a companion).
        patch_boxes: ``(N, 4)`` long, the bank's canvas boxes (``bank.boxes``).
        class_start: ``(C + 1,)`` long, first bank patch of each class; class_count: ``(C,)`` long.
        canvas: side of the square canvas.
        blend_tail_weight: ``(C,)`` weights of the tail classes that trigger a blend; a tail class the bank does
            not cover has weight here (an image showing it gets a companion) but not in ``tail_weight``. Default:
            ``tail_weight``.
        p: per-sample probability of augmenting an eligible sample, in ``[0, 1]``.
        alpha: blend weight of the patch in ``(0, 1]``.
        max_patches: slots per sample (``>= 1``); pastes use up to all of them, blends slot 0.
        jitter: maximal shift of a patch from its aligned position, as a fraction of the canvas, in ``[0, 1]``.
        candidates: candidate draws per companion slot (``>= 1``).
        soft_label: blended classes get label ``alpha`` instead of 1.
        no_finding: index of "No Finding".
        generator: a ``torch.Generator`` on ``labels.device`` (None: the default generator).

    Returns:
        :class:`DadamParams` on ``labels.device``.

    Shape:
        labels ``(B, C)`` -> params with ``B`` samples and ``K = max_patches`` slots.

    Example:
        >>> params = sample(labels, tail_weight=tw, companion_weight=cw, patch_boxes=bank.boxes,  # doctest: +SKIP
        ...                 class_start=bank.class_start, class_count=bank.class_count, canvas=bank.canvas)
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if max_patches < 1 or candidates < 1:
        raise ValueError(f"max_patches and candidates must be >= 1, got {max_patches} and {candidates}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], got {jitter}")
    if labels.ndim != 2 or labels.shape[1] != tail_weight.shape[0]:
        raise ValueError(f"labels must have shape (B, {tail_weight.shape[0]}), got {tuple(labels.shape)}")
    if patch_boxes.shape[0] == 0:
        raise ValueError("the patch bank is empty")
    tables = _tables(
        tail_weight,
        companion_weight,
        patch_boxes,
        class_start,
        class_count,
        blend_tail_weight=blend_tail_weight,
        max_patches=max_patches,
        candidates=candidates,
        no_finding=no_finding,
        device=labels.device,
    )
    return _draw(
        labels,
        tables,
        canvas=canvas,
        p=p,
        alpha=alpha,
        max_patches=max_patches,
        jitter=jitter,
        candidates=candidates,
        soft_label=soft_label,
        no_finding=no_finding,
        generator=generator,
    )


def _first_fit(
    cls: torch.Tensor, pid: torch.Tensor, box: torch.Tensor, placed: torch.Tensor, ok: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first of R candidates that overlaps no placed box.

    cls, pid ``(B, R)``, box ``(B, R, 4)``, placed ``(B, k, 4)``, ok ``(B, 1)`` (the slot may be filled) ->
    accept ``(B, 1)`` bool, class ``(B, 1)``, patch ``(B, 1)`` and box ``(B, 1, 4)`` (all zero where not accepted).
    """
    fits = ~_overlaps(box, placed)  # (B, R)
    first = torch.argmax(fits.to(torch.uint8), 1, keepdim=True)  # (B, 1), the first candidate that fits
    accept = ok & fits.any(1, keepdim=True)  # (B, 1)
    box_sel = torch.gather(box, 1, first[..., None].expand(-1, 1, 4)) * accept[..., None]  # (B, 1, 4)
    return accept, torch.gather(cls, 1, first), torch.gather(pid, 1, first), box_sel


def _draw(
    labels: torch.Tensor,
    tables: _Tables,
    *,
    canvas: int,
    p: float,
    alpha: float,
    max_patches: int,
    jitter: float,
    candidates: int,
    soft_label: bool,
    no_finding: int,
    generator: torch.Generator | None,
) -> DadamParams:
    """:func:`sample` with its constants given (options already checked)."""
    device = labels.device
    B, C = labels.shape
    K, R = max_patches, candidates

    # All random numbers at once: gate, tail pick, companion pick (blend), slot-0 patch and jitter, then per further
    # slot R class picks, R patch picks and R jitters (2 each).
    n_u = 1 + 1 + 1 + 1 + 2 + (K - 1) * R * 4
    u = torch.rand(B, n_u, generator=generator, device=device)

    pos = labels > 0.5  # (B, C), NaN -> False
    pos_other = pos & tables.not_nf  # (B, C)
    normal = pos[:, no_finding, None] > pos_other.any(1, keepdim=True)  # (B, 1) "No Finding" and nothing else
    gate = u[:, :1] < p  # (B, 1)

    # Tail class t: for a normal image from tail_weight (a paste: covered classes), else among the image's own tail
    # classes, covered or not (a blend). Both draws use the same u, so one draw over the row's weights serves both.
    w_tail = torch.where(normal, tables.tail_weight, tables.blend_tail_weight * pos_other)  # (B, C)
    t, ok_t = _categorical(w_tail, u[:, 1:2])  # (B, 1), (B, 1)
    w_row = tables.companion_weight.index_select(0, t.view(B))  # (B, C) companion weights of t
    # One draw serves the blend's companion j (column 0: a class the image lacks) and the slot-1 candidates of a
    # paste (columns 1..R: a class not placed yet, i.e. not t). For a normal image the two weight rows are the same
    # (w_row is 0 at t and at "No Finding", the only positive class); for any other image the candidates are unused.
    M = tables.first_col.shape[0]  # 1 + R, or 1 without a slot 1
    u_first = u.index_select(1, tables.u_first)  # (B, 4 M): class, patch, jitter (2) u of each column
    jc, ok_j = _categorical(w_row.masked_fill(pos, 0.0), u_first[:, :M])  # (B, M), (B, 1)
    active0 = gate & ok_t & (normal | ok_j)  # (B, 1)
    mode_paste = active0 & normal  # (B, 1)
    mode_blend = active0 & ~normal  # (B, 1)

    cls = torch.where(tables.first_col & mode_paste, t, jc)  # (B, M) slot 0: t for a paste, j for a blend
    pid = _draw_patch(cls, u_first[:, M : 2 * M], tables)  # (B, M)
    box = _place(pid, u_first[:, 2 * M :].view(B, M, 2), tables.patch_boxes, canvas, jitter)  # (B, M, 4)

    placed = box[:, :1] * active0[..., None]  # (B, 1, 4) placed boxes; all zero where inactive
    pids, classes, actives = [pid[:, :1]], [cls[:, :1]], [active0]
    used = (cls[:, :1] == tables.arange_c) & active0  # (B, C) classes placed so far
    if K > 1:  # slot 1: its candidates were drawn above (weights: w_row without t, exactly w_row)
        accept, cls_sel, pid_sel, box_sel = _first_fit(cls[:, 1:], pid[:, 1:], box[:, 1:], placed, mode_paste & ok_j)
        placed = torch.cat([placed, box_sel], 1)
        pids.append(pid_sel)
        classes.append(cls_sel)
        actives.append(accept)
        used |= (cls_sel == tables.arange_c) & accept
    u_slots = u[:, 6:].view(B, max(K - 1, 0), R, 4)
    for k in range(2, K):  # static loop over slots (K <= max_patches), vectorised over batch and candidates
        us = u_slots[:, k - 1]  # (B, R, 4)
        cls_k, ok_k = _categorical(w_row.masked_fill(used, 0.0), us[..., 0])  # (B, R), (B, 1)
        pid_k = _draw_patch(cls_k, us[..., 1], tables)  # (B, R)
        box_k = _place(pid_k, us[..., 2:], tables.patch_boxes, canvas, jitter)  # (B, R, 4)
        accept, cls_sel, pid_sel, box_sel = _first_fit(cls_k, pid_k, box_k, placed, mode_paste & ok_k)
        placed = torch.cat([placed, box_sel], 1)
        pids.append(pid_sel)
        classes.append(cls_sel)
        actives.append(accept)
        used |= (cls_sel == tables.arange_c) & accept

    active = torch.cat(actives, 1) if K > 1 else active0  # (B, K)
    mode = mode_paste.long() + 2 * mode_blend.long()  # (B, 1): MODE_NONE, MODE_PASTE or MODE_BLEND
    alpha_out = active * torch.where(mode_blend, alpha, 1.0)  # (B, K) float32
    # New labels (as apply_labels computes them): a paste row gets exactly the placed classes (``used``), a blend row
    # its labels with the slot-0 class (its only ``used`` class) set to 1 or alpha, any other row is unchanged.
    used_f = used.to(labels.dtype)
    value = alpha_out[:, :1].to(labels.dtype) if soft_label else used_f
    return DadamParams(
        boxes=placed,
        patch_ids=torch.cat(pids, 1) * active,
        classes=torch.where(active, torch.cat(classes, 1), -1),
        active=active,
        alpha=alpha_out,
        mode=mode.view(B),
        changed=active0.view(B),
        labels=torch.where(mode_paste, used_f, torch.where(used, value, labels)),
    )
