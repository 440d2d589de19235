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
from dadam.sampling.draws import (
    Slots,
    categorical,
    has_class,
    lung_placement,
    pick_and_place,
    pick_in_range,
    recipients,
)
from dadam.sampling.params import DadamParams
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
    B, jitter = labels.shape[0], config.jitter
    lung = lung_placement(tables, config, lung_boxes)
    rows = (tables.template_start, tables.template_count, tables.template_last)
    pos, pos_other, normal, gate = recipients(labels, u.gate, tables, config.p, mask)  # (B, C), (B, C), (B, 1) x 2

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

    pid0, box0 = pick_and_place(cls0, u.patch[:, None], u.jitter[:, None], tables, jitter, lung)  # (B, 1), (B, 1, 4)
    slots = Slots(pid0, box0, cls0, active0)
    for k in range(1, config.max_patches):  # static loop over slots, vectorised over batch and candidates
        cls_k, ok_k = categorical(remaining.to(torch.float32), u.slot_class[:, k - 1])  # (B, R) uniform, (B, 1)
        pid_k, box_k = pick_and_place(cls_k, u.slot_patch[:, k - 1], u.slot_jitter[:, k - 1], tables, jitter, lung)
        accept, cls_sel = slots.fill_first(pid_k, box_k, cls_k, ok_k)  # (B, 1), (B, 1)
        remaining &= ~((cls_sel == tables.class_index) & accept)  # (B, C)
    # template classes left unplaced are counted in dropped
    return slots.params(labels, paste=paste, blend=blend, config=config, template=row.view(B), dropped=remaining.sum(1))
