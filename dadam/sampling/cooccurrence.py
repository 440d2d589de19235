"""The co-occurrence companion rule (``companions="cooccurrence"``, the default): companions from a real label row.

Per sample, with probability ``p``:

- a normal image (only "No Finding" positive) gets a tail class ``t ~ tail_weight`` (as the correlation rule), then
  a *template*: one training label row that shows ``t``, uniform among such rows (:class:`~dadam.stats.LabelStats`
  keeps them sorted by class). ``t`` goes to slot 0 at its aligned (jittered) box. The template's other classes that
  the bank covers fill the further slots: per slot, ``candidates`` (class, patch, position) triples with the class
  uniform among the template classes not placed yet, the first that overlaps no placed patch kept (as the
  correlation rule, with equal weights over the template's classes instead of ``corr ** beta``). A template class
  left unplaced, for want of room without overlap or of slots (``max_patches``), is dropped and counted in
  ``params.dropped``. The labels become exactly the placed classes, a subset of the template's covered classes;
- an image showing a tail class gets one of them, ``t ~ blend_tail_weight``, and one companion ``j`` it lacks among
  the covered classes, drawn from ``P(j | t)`` (the co-occurrence counts of ``t``), blended with ``alpha``;
- anything else, or a sample with nothing to draw, is unchanged.

So a pasted image carries a real image's combination of (covered) classes, and the label correlation keeps its
structure. :func:`cooccurrence_uniforms` declares the random stream.
"""

from __future__ import annotations

import torch

from dadam.config import DadamConfig
from dadam.sampling.draws import categorical, first_fit, has_class, lung_placement, pick_in_range, place
from dadam.sampling.params import DadamParams, apply_labels
from dadam.sampling.tables import SamplerTables
from dadam.sampling.uniforms import Interleaved, Quantity, Uniforms, UniformSpec

__all__ = ["cooccurrence_params", "cooccurrence_uniforms"]


def cooccurrence_uniforms(config: DadamConfig) -> UniformSpec:
    """The uniforms of one call of the co-occurrence rule (per sample; K = ``max_patches``, R = ``candidates``)."""
    slots, candidates = config.max_patches - 1, config.candidates
    return UniformSpec(
        Quantity("gate"),  # u < p: the sample may change
        Quantity("tail"),  # the tail class t
        Quantity("template"),  # a paste's template row among the rows showing t
        Quantity("companion"),  # a blend's companion class j
        Quantity("patch"),  # slot 0: the patch of its class
        Quantity("jitter", 2),  # slot 0: the shift (dx, dy)
        # slots 1..K-1, R candidates each: class (among the template's remaining classes), patch, shift
        Interleaved((slots, candidates), Quantity("slot_class"), Quantity("slot_patch"), Quantity("slot_jitter", 2)),
    )


def cooccurrence_params(
    labels: torch.Tensor,
    u: Uniforms,
    tables: SamplerTables,
    config: DadamConfig,
    mask: torch.Tensor | None = None,
    lung_boxes: torch.Tensor | None = None,
) -> DadamParams:
    """The co-occurrence rule, a pure function of the uniforms (see the module docstring).

    Args:
        labels: ``(B, C)`` multi-hot labels (> 0.5 positive; NaN unknown, not positive).
        u: the uniforms of :func:`cooccurrence_uniforms` for B samples.
        tables: the :class:`~dadam.sampling.SamplerTables` with label rows, on the labels' device.
        config: the options (``p``, ``alpha``, ``max_patches``, ``jitter``, ``soft_label``, ``placement``).
        mask: ``(B,)`` bool, the samples that may change (None: all).
        lung_boxes: ``(B, 4)`` float32 recipients' lung boxes, normalised xyxy (NaN rows: unknown); read with
            ``config.placement="lung"`` only, which needs them (see :func:`~dadam.sampling.draws.place`).

    Returns:
        the :class:`~dadam.sampling.DadamParams` (``template`` and ``dropped`` filled).

    Shape:
        labels ``(B, C)`` -> params with B samples and K = ``max_patches`` slots.
    """
    B = labels.shape[0]
    boxes, canvas, jitter = tables.patch_boxes, tables.canvas, config.jitter
    lung = lung_placement(tables, config, lung_boxes)
    patches = (tables.patch_start, tables.patch_count, tables.patch_last)
    rows = (tables.template_start, tables.template_count, tables.template_last)

    pos = labels > 0.5  # (B, C), NaN -> False
    pos_other = pos & tables.not_nf  # (B, C)
    normal = pos[:, tables.no_finding, None] > pos_other.any(1, keepdim=True)  # (B, 1) "No Finding" and nothing else
    gate = u.gate[:, None] < config.p  # (B, 1)
    if mask is not None:
        gate = gate & mask[:, None]

    w_tail = torch.where(normal, tables.tail_weight, tables.blend_tail_weight * pos_other)  # (B, C)
    t, ok_t = categorical(w_tail, u.tail[:, None], sequential=True)  # (B, 1), (B, 1)
    w_blend = tables.companion_weight.index_select(0, t.view(B)).masked_fill(pos, 0.0)  # (B, C) counts with t
    j, ok_j = categorical(w_blend, u.companion[:, None], sequential=True)  # (B, 1) a covered class it lacks
    active0 = gate & ok_t & (normal | ok_j)  # (B, 1)
    paste, blend = active0 & normal, active0 & ~normal  # (B, 1)

    # The template: a uniform row among those showing t; its other covered classes are the paste's companions.
    has_rows = paste & (tables.template_count.take(t) > 0)  # (B, 1)
    row = tables.template_rows.take(pick_in_range(t, u.template[:, None], *rows)).long()  # (B, 1)
    row = torch.where(has_rows, row, -1)  # (B, 1)
    row_bits = tables.row_classes.take(row.clamp_min(0)).view(B)  # (B,) int32
    cls0 = torch.where(paste, t, j)  # (B, 1) slot 0: t for a paste, j for a blend
    remaining = has_class(row_bits, tables.class_bits) & tables.covered & has_rows & (tables.class_index != t)

    pid0 = pick_in_range(cls0, u.patch[:, None], *patches)  # (B, 1)
    placed = (
        place(pid0, u.jitter[:, None], boxes, canvas, jitter, lung) * active0[..., None]
    )  # (B, 1, 4), 0 if inactive
    pids, classes, actives = [pid0], [cls0], [active0]
    for k in range(1, config.max_patches):  # static loop over slots, vectorised over batch and candidates
        cls_k, ok_k = categorical(remaining.to(torch.float32), u.slot_class[:, k - 1])  # (B, R) uniform, (B, 1)
        pid_k = pick_in_range(cls_k, u.slot_patch[:, k - 1], *patches)  # (B, R)
        box_k = place(pid_k, u.slot_jitter[:, k - 1], boxes, canvas, jitter, lung)  # (B, R, 4)
        accept, first, pid_sel, box_sel = first_fit(pid_k, box_k, placed, ok_k)  # (B, 1) ... (B, 1, 4)
        cls_sel = torch.gather(cls_k, 1, first)  # (B, 1)
        remaining &= ~((cls_sel == tables.class_index) & accept)  # (B, C)
        placed = torch.cat([placed, box_sel], 1)  # (B, k + 1, 4)
        pids.append(pid_sel)
        classes.append(cls_sel)
        actives.append(accept)
    dropped = remaining.sum(1)  # (B,) template classes left unplaced

    active = torch.cat(actives, 1)  # (B, K)
    params = DadamParams(
        boxes=placed,
        patch_ids=torch.cat(pids, 1) * active,
        classes=torch.where(active, torch.cat(classes, 1), -1),
        active=active,
        alpha=active * torch.where(blend, config.alpha, 1.0),  # (B, K) float32
        mode=(paste.long() + 2 * blend.long()).view(B),  # MODE_NONE, MODE_PASTE or MODE_BLEND
        changed=active0.view(B),
        labels=labels,
        template=row.view(B),
        dropped=dropped,
    )
    params.labels = apply_labels(labels, params, soft_label=config.soft_label)
    return params
