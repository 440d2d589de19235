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
from dadam.sampling.draws import categorical, first_fit, lung_placement, pick_in_range, place
from dadam.sampling.params import DadamParams, apply_labels
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
    B = labels.shape[0]
    boxes, canvas, jitter = tables.patch_boxes, tables.canvas, config.jitter
    lung = lung_placement(tables, config, lung_boxes)
    patches = (tables.patch_start, tables.patch_count, tables.patch_last)

    pos = labels > 0.5  # (B, C), NaN -> False
    pos_other = pos & tables.not_nf  # (B, C)
    normal = pos[:, tables.no_finding, None] > pos_other.any(1, keepdim=True)  # (B, 1) "No Finding" and nothing else
    gate = u.gate[:, None] < config.p  # (B, 1)
    if mask is not None:
        gate = gate & mask[:, None]

    # The tail class t: for a normal image from tail_weight (a paste: covered classes), else among the image's own
    # tail classes, covered or not (a blend). One draw over the row's weights serves both.
    w_tail = torch.where(normal, tables.tail_weight, tables.blend_tail_weight * pos_other)  # (B, C)
    t, ok_t = categorical(w_tail, u.tail[:, None])  # (B, 1), (B, 1)
    w_row = tables.companion_weight.index_select(0, t.view(B))  # (B, C) companion weights of t
    j, ok_j = categorical(w_row.masked_fill(pos, 0.0), u.companion[:, None])  # (B, 1) a class the image lacks
    active0 = gate & ok_t & (normal | ok_j)  # (B, 1)
    paste, blend = active0 & normal, active0 & ~normal  # (B, 1)

    cls0 = torch.where(paste, t, j)  # (B, 1) slot 0: t for a paste, j for a blend
    pid0 = pick_in_range(cls0, u.patch[:, None], *patches)  # (B, 1)
    placed = (
        place(pid0, u.jitter[:, None], boxes, canvas, jitter, lung) * active0[..., None]
    )  # (B, 1, 4), 0 if inactive
    pids, classes, actives = [pid0], [cls0], [active0]
    used = (cls0 == tables.class_index) & active0  # (B, C) classes placed so far
    for k in range(1, config.max_patches):  # static loop over slots, vectorised over batch and candidates
        cls_k, ok_k = categorical(w_row.masked_fill(used, 0.0), u.slot_class[:, k - 1])  # (B, R), (B, 1)
        pid_k = pick_in_range(cls_k, u.slot_patch[:, k - 1], *patches)  # (B, R)
        box_k = place(pid_k, u.slot_jitter[:, k - 1], boxes, canvas, jitter, lung)  # (B, R, 4)
        accept, first, pid_sel, box_sel = first_fit(pid_k, box_k, placed, paste & ok_k)  # (B, 1) ... (B, 1, 4)
        cls_sel = torch.gather(cls_k, 1, first)  # (B, 1)
        placed = torch.cat([placed, box_sel], 1)  # (B, k + 1, 4)
        pids.append(pid_sel)
        classes.append(cls_sel)
        actives.append(accept)
        used |= (cls_sel == tables.class_index) & accept

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
    )
    params.labels = apply_labels(labels, params, soft_label=config.soft_label)
    return params
