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

from dataclasses import dataclass, fields

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
    if gamma < 0 or beta < 0:
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


def _categorical(weights: torch.Tensor, u: torch.Tensor, arange_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF draws without host sync.

    weights ``(..., C)`` >= 0, u ``(..., R)`` in [0, 1), ``arange_c = arange(C)`` -> index ``(..., R)`` long (always a
    class with positive weight when any; 0 when none) and ``ok (..., 1)`` bool (some weight is positive).
    """
    cdf = torch.cumsum(weights, -1)  # (..., C)
    total = cdf[..., -1:]  # (..., 1)
    v = u * total  # (..., R)
    if cdf.device.type != "cpu" or torch.get_num_threads() == 1:
        idx = torch.searchsorted(cdf, v, right=True)  # (..., R)
    else:
        # the same index as a count of cdf values <= v (cdf is non-decreasing): CPU searchsorted forks its threads
        # even for a few values, which stalls a small batch on a busy machine; elementwise ops and sums fork only
        # above torch's grain size
        idx = (cdf[..., None, :] <= v[..., None]).sum(-1)  # (..., R)
    # u * total may round up to total: fall back to the last class with positive weight.
    last_pos = torch.argmax(torch.where(weights > 0, arange_c, -1), -1, keepdim=True)  # (..., 1)
    return torch.minimum(idx, last_pos), total > 0


def _draw_patch(
    cls: torch.Tensor,
    u: torch.Tensor,
    class_start: torch.Tensor,
    class_count: torch.Tensor,
    count_max: torch.Tensor,
    n_patches: int,
) -> torch.Tensor:
    """Uniform patch of class ``cls``: ``class_start[cls] + floor(u * class_count[cls])`` (any shape, long).

    ``count_max = (class_count - 1).clamp_min(0)``. Clamped into ``[0, n_patches)`` so that a class without patches
    (only drawn for inactive slots) stays indexable.
    """
    draw = torch.minimum((u * class_count.take(cls)).long(), count_max.take(cls))  # class_count as float32
    return draw.add_(class_start.take(cls)).clamp_(0, n_patches - 1)


def _place(pid: torch.Tensor, u: torch.Tensor, patch_boxes: torch.Tensor, canvas: int, jitter: float) -> torch.Tensor:
    """Aligned box of patch ``pid`` shifted by up to ``jitter * canvas`` pixels, kept inside the canvas.

    pid ``(...)``, u ``(..., 2)`` in [0, 1) -> boxes ``(..., 4)`` long xyxy.
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
    - image with a tail class (``tail_weight > 0``) positive: draw one of its tail classes ``t ~ tail_weight``,
      then ``j ~ companion_weight[t]`` over the classes not positive, and blend a uniform patch of ``j`` at its
      aligned (jittered) box with weight ``alpha``. Labels: input plus ``j`` (1, or ``alpha`` if ``soft_label``).
    - anything else, or when the weights leave nothing to draw: unchanged.

    Args:
        labels: ``(B, C)`` multi-hot labels (1 positive, 0 negative, NaN unknown).
        tail_weight: ``(C,)`` unnormalised tail-class weights (see :func:`sampling_weights`).
        companion_weight: ``(C, C)`` unnormalised companion weights, row = tail class.
        patch_boxes: ``(N, 4)`` long, the bank's canvas boxes (``bank.boxes``).
        class_start: ``(C + 1,)`` long, first bank patch of each class; class_count: ``(C,)`` long.
        canvas: side of the square canvas.
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
    device = labels.device
    B, C = labels.shape
    K, R = max_patches, candidates
    n_patches = patch_boxes.shape[0]
    if n_patches == 0:
        raise ValueError("the patch bank is empty")

    # All random numbers at once: gate, tail pick, companion pick (blend), slot-0 patch and jitter, then per further
    # slot R class picks, R patch picks and R jitters (2 each).
    n_u = 1 + 1 + 1 + 1 + 2 + (K - 1) * R * 4
    u = torch.rand(B, n_u, generator=generator, device=device)
    u_slots = u[:, 6:].reshape(B, max(K - 1, 0), R, 4)

    tail_weight = tail_weight.to(device=device, dtype=torch.float32)
    companion_weight = companion_weight.to(device=device, dtype=torch.float32)
    count_max = (class_count - 1).clamp_min(0)  # (C,)
    count_f = class_count.to(torch.float32)  # (C,) u * count in float32, as with the long counts
    pos = labels > 0.5  # (B, C), NaN -> False
    pos_other = pos.clone()
    pos_other[:, no_finding] = False
    normal = (pos[:, no_finding] & ~pos_other.any(1))[:, None]  # (B, 1)
    gate = u[:, :1] < p  # (B, 1)
    arange_c = torch.arange(C, device=device)  # (C,)

    # Tail class t: for a normal image from tail_weight (a paste), else among the image's own tail classes (a blend).
    # Both draws use the same u, so one draw over the row's weights serves both.
    t, ok_t = _categorical(tail_weight * (pos_other | normal), u[:, 1:2], arange_c)  # (B, 1), (B, 1)
    w_row = companion_weight.index_select(0, t.view(B))  # (B, C) companion weights of t
    # Blend: a companion j the image lacks.
    j, ok_j = _categorical(w_row.masked_fill(pos, 0.0), u[:, 2:3], arange_c)  # (B, 1), (B, 1)
    mode_paste = normal & gate & ok_t  # (B, 1)
    mode_blend = ~normal & gate & ok_t & ok_j  # (B, 1)

    active0 = mode_paste | mode_blend  # (B, 1)
    cls0 = torch.where(mode_paste, t, j)  # (B, 1)
    pid0 = _draw_patch(cls0, u[:, 3:4], class_start, count_f, count_max, n_patches)  # (B, 1)
    box0 = _place(pid0, u[:, None, 4:6], patch_boxes, canvas, jitter)  # (B, 1, 4)

    placed = [torch.where(active0[..., None], box0, 0)]  # (B, 1, 4) per slot; all zero where inactive
    pids = [pid0]
    classes = [cls0]
    actives = [active0]
    used = (cls0 == arange_c) & active0  # (B, C) classes placed so far
    for k in range(1, K):  # static loop over slots (K <= max_patches), vectorised over batch and candidates
        us = u_slots[:, k - 1]  # (B, R, 4)
        cls_k, ok_k = _categorical(w_row.masked_fill(used, 0.0), us[..., 0], arange_c)  # (B, R), (B, 1)
        pid_k = _draw_patch(cls_k, us[..., 1], class_start, count_f, count_max, n_patches)  # (B, R)
        box_k = _place(pid_k, us[..., 2:], patch_boxes, canvas, jitter)  # (B, R, 4)
        hit = _overlaps(box_k, torch.cat(placed, 1))  # (B, R)
        fits = ~hit
        first = torch.argmax(fits.to(torch.uint8), 1, keepdim=True)  # (B, 1), the first candidate that fits
        accept = mode_paste & ok_k & fits.any(1, keepdim=True)  # (B, 1)
        cls_sel = torch.gather(cls_k, 1, first)  # (B, 1)
        box_sel = torch.gather(box_k, 1, first[..., None].expand(B, 1, 4))  # (B, 1, 4)
        placed.append(torch.where(accept[..., None], box_sel, 0))
        pids.append(torch.gather(pid_k, 1, first))
        classes.append(cls_sel)
        actives.append(accept)
        used |= (cls_sel == arange_c) & accept

    active = torch.cat(actives, 1)  # (B, K)
    mode = torch.where(mode_paste, MODE_PASTE, torch.where(mode_blend, MODE_BLEND, MODE_NONE)).long()  # (B, 1)
    alpha_k = torch.where(mode_blend, alpha, 1.0).float()  # (B, 1)
    alpha_out = torch.where(active, alpha_k, 0.0)  # (B, K)
    # New labels (as apply_labels computes them): a paste row gets exactly the placed classes (``used``), a blend row
    # its labels with the slot-0 class (its only ``used`` class) set to 1 or alpha, any other row is unchanged.
    used_f = used.to(labels.dtype)
    value = alpha_out[:, :1].to(labels.dtype) if soft_label else used_f
    return DadamParams(
        boxes=torch.cat(placed, 1),
        patch_ids=torch.where(active, torch.cat(pids, 1), 0),
        classes=torch.where(active, torch.cat(classes, 1), -1),
        active=active,
        alpha=alpha_out,
        mode=mode.view(B),
        changed=active0.view(B),
        labels=torch.where(mode_paste, used_f, torch.where(used, value, labels)),
    )
