"""The paper's companion rule (``companions="correlation"``, release 0.1.0): companions drawn ``~ corr ** beta``.

Per sample, with probability ``p``:

- a normal image (only "No Finding" positive) gets a tail class ``t ~ tail_weight`` at its aligned (jittered) box,
  then, for each further slot, ``candidates`` (class, patch, position) triples with classes
  ``j ~ companion_weight[t]`` over the classes not placed yet; the first that overlaps no placed patch is kept (none:
  the slot stays empty). Its labels become exactly the placed classes;
- an image showing a tail class gets one of them, ``t ~ blend_tail_weight``, and one companion
  ``j ~ companion_weight[t]`` it lacks, blended with ``alpha``; its labels gain ``j``;
- anything else, or a sample with nothing to draw, is unchanged.

Its random stream is that of release 0.1.0, number for number: :func:`correlation_uniforms` declares it.
"""

from __future__ import annotations

import torch

from dadam.config import DadamConfig
from dadam.sampling.draws import Slots, categorical, lung_placement, pick_and_place, recipients
from dadam.sampling.params import DadamParams
from dadam.sampling.tables import SamplerTables
from dadam.sampling.uniforms import Interleaved, Quantity, Uniforms, UniformSpec

__all__ = ["correlation_params", "correlation_uniforms"]


def correlation_uniforms(config: DadamConfig) -> UniformSpec:
    """The uniforms of one call of the correlation rule (per sample; K = ``max_patches``, R = ``candidates``)."""
    return UniformSpec(
        Quantity("gate"),  # u < p: the sample may change
        Quantity("tail"),  # the tail class t
        Quantity("companion"),  # a blend's companion class j
        Quantity("patch"),  # slot 0: the patch of its class
        Quantity("jitter", 2),  # slot 0: the shift (dx, dy)
        # slots 1..K-1, R candidates each: class, patch, shift
        Interleaved(
            (config.max_patches - 1, config.candidates),
            Quantity("slot_class"),
            Quantity("slot_patch"),
            Quantity("slot_jitter", 2),
        ),
    )


def correlation_params(
    labels: torch.Tensor,
    u: Uniforms,
    tables: SamplerTables,
    config: DadamConfig,
    mask: torch.Tensor | None = None,
    lung_boxes: torch.Tensor | None = None,
) -> DadamParams:
    """The correlation rule, a pure function of the uniforms (see the module docstring).

    Args:
        labels: ``(B, C)`` multi-hot labels (> 0.5 positive; NaN unknown, not positive).
        u: the uniforms of :func:`correlation_uniforms` for B samples.
        tables: the :class:`~dadam.sampling.SamplerTables` on the labels' device.
        config: the options (``p``, ``alpha``, ``max_patches``, ``jitter``, ``soft_label``, ``placement``).
        mask: ``(B,)`` bool, the samples that may change (None: all).
        lung_boxes: ``(B, 4)`` float32 recipients' lung boxes, normalised xyxy (NaN rows: unknown); read with
            ``config.placement="lung"`` only, which needs them (see :func:`~dadam.sampling.draws.place`).

    Returns:
        the :class:`~dadam.sampling.DadamParams`.

    Shape:
        labels ``(B, C)`` -> params with B samples and K = ``max_patches`` slots.
    """
    B, jitter = labels.shape[0], config.jitter
    lung = lung_placement(tables, config, lung_boxes)
    pos, pos_other, normal, gate = recipients(labels, u.gate, tables, config.p, mask)  # (B, C), (B, C), (B, 1) x 2

    # The tail class t: for a normal image from tail_weight (a paste: covered classes), else among the image's own
    # tail classes, covered or not (a blend). One draw over the row's weights serves both.
    w_tail = torch.where(normal, tables.tail_weight, tables.blend_tail_weight * pos_other)  # (B, C)
    t, ok_t = categorical(w_tail, u.tail[:, None])  # (B, 1), (B, 1)
    w_row = tables.companion_weight.index_select(0, t.view(B))  # (B, C) companion weights of t
    j, ok_j = categorical(w_row.masked_fill(pos, 0.0), u.companion[:, None])  # (B, 1) a class the image lacks
    active0 = gate & ok_t & (normal | ok_j)  # (B, 1)
    paste, blend = active0 & normal, active0 & ~normal  # (B, 1)

    cls0 = torch.where(paste, t, j)  # (B, 1) slot 0: t for a paste, j for a blend
    pid0, box0 = pick_and_place(cls0, u.patch[:, None], u.jitter[:, None], tables, jitter, lung)  # (B, 1), (B, 1, 4)
    slots = Slots(pid0, box0, cls0, active0)
    used = (cls0 == tables.class_index) & active0  # (B, C) classes placed so far
    for k in range(1, config.max_patches):  # static loop over slots, vectorised over batch and candidates
        cls_k, ok_k = categorical(w_row.masked_fill(used, 0.0), u.slot_class[:, k - 1])  # (B, R), (B, 1)
        pid_k, box_k = pick_and_place(cls_k, u.slot_patch[:, k - 1], u.slot_jitter[:, k - 1], tables, jitter, lung)
        accept, cls_sel = slots.fill_first(pid_k, box_k, cls_k, paste & ok_k)  # (B, 1), (B, 1)
        used |= (cls_sel == tables.class_index) & accept
    return slots.params(labels, paste=paste, blend=blend, config=config)
