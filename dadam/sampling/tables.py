"""The sampler's lookup tables (:class:`SamplerTables`): class weights, the bank's class ranges and the label rows.

:func:`build_tables` makes them once from a bank, label statistics and a :class:`~dadam.config.DadamConfig`, on the
CPU; :meth:`SamplerTables.to` moves them with pinned, non-blocking copies, so a CUDA device never waits for the host.
:func:`tables_from_weights` builds them from explicit weights (the functional :func:`dadam.sampling.sample`) with
tensor ops on the labels' device only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from dadam.anatomy import lung_anchor
from dadam.config import DadamConfig
from dadam.labels import CXR_LT_CLASSES, NO_FINDING
from dadam.stats import MAX_TEMPLATE_CLASSES, tail_classes

if TYPE_CHECKING:
    from dadam.bank import PatchBank
    from dadam.stats import LabelStats

__all__ = ["NO_FINDING_INDEX", "SamplerTables", "build_tables", "sampling_weights", "tables_from_weights", "to_device"]

NO_FINDING_INDEX = CXR_LT_CLASSES.index(NO_FINDING)


class SamplerTables(NamedTuple):
    """The constants of one sampler on one device (C classes, N bank patches, P label-row entries, M label rows).

    Attributes:
        tail_weight: ``(C,)`` float32, weights of the tail class pasted on a normal image (covered tail classes).
        blend_tail_weight: ``(C,)`` float32, weights of the tail classes that trigger a blend.
        companion_weight: ``(C, C)`` float32, row t: weights of the companion classes of tail class t (0 on the
            diagonal, in the "No Finding" column and in the columns of classes the bank does not cover):
            ``corr ** beta`` (correlation rule) or ``P(j | t)`` from the co-occurrence counts (co-occurrence rule).
        patch_boxes: ``(N, 4)`` long, the bank's aligned boxes.
        patch_anchor: ``(N, 2)`` float32, each patch's box centre in its donor's lung-box coordinates
            (:func:`dadam.anatomy.lung_anchor`; ``placement="lung"``), NaN where the donor's lung box is unknown.
        patch_start: ``(C,)`` long, first patch of each class, clamped into ``[0, N)``.
        patch_count: ``(C,)`` long, patches per class (long, so a module cast to half keeps it exact).
        patch_last: ``(C,)`` long, ``patch_count - 1`` clamped at 0.
        not_nf: ``(C,)`` bool, every class but "No Finding".
        covered: ``(C,)`` bool, the classes the bank has patches of, "No Finding" excluded.
        class_index: ``(C,)`` long, ``arange(C)``.
        class_bits: ``(C,)`` int32, ``1 << c`` (bit masks of :attr:`row_classes`).
        template_rows: ``(P,)`` int32, label rows sorted by class (empty for the correlation rule).
        template_start: ``(C,)`` long, first entry of each class in ``template_rows``, clamped into ``[0, P)``.
        template_count: ``(C,)`` long, rows per class.
        template_last: ``(C,)`` long, ``template_count - 1`` clamped at 0.
        row_classes: ``(M,)`` int32, positive classes of each label row as a bit mask.
        canvas: side of the square canvas.
        no_finding: index of "No Finding".
    """

    tail_weight: torch.Tensor
    blend_tail_weight: torch.Tensor
    companion_weight: torch.Tensor
    patch_boxes: torch.Tensor
    patch_anchor: torch.Tensor
    patch_start: torch.Tensor
    patch_count: torch.Tensor
    patch_last: torch.Tensor
    not_nf: torch.Tensor
    covered: torch.Tensor
    class_index: torch.Tensor
    class_bits: torch.Tensor
    template_rows: torch.Tensor
    template_start: torch.Tensor
    template_count: torch.Tensor
    template_last: torch.Tensor
    row_classes: torch.Tensor
    canvas: int
    no_finding: int

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields by name."""
        return {k: v for k, v in self._asdict().items() if isinstance(v, torch.Tensor)}

    def to(self, device: torch.device | str) -> SamplerTables:
        """The tables on ``device``; from the CPU to CUDA through pinned memory, without blocking the host."""
        return self._replace(**{k: to_device(v, device) for k, v in self.tensors().items()})

    @property
    def device(self) -> torch.device:
        return self.tail_weight.device


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor goes to CUDA by a non-blocking copy from pinned memory (no host sync)."""
    device = torch.device(device)
    if t.device == device or (device.index is None and t.device.type == device.type):
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


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
    """Unnormalised class weights of the correlation rule.

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
    not_nf = torch.arange(len(freq), device=freq.device) != no_finding  # (C,)
    ok = tail.bool() & covered.bool() & not_nf
    tail_weight = torch.where(ok, freq.clamp_min(min_freq) ** -gamma, torch.zeros_like(freq))
    comp_ok = (corr > 0) & _companion_mask(covered.bool(), not_nf.to(corr.device))
    companion_weight = torch.where(comp_ok, corr.clamp_min(0) ** beta, torch.zeros_like(corr))
    return tail_weight, companion_weight


def _companion_mask(covered: torch.Tensor, not_nf: torch.Tensor) -> torch.Tensor:
    """``(C, C)`` bool: j may be a companion of t (covered, not t, neither of them "No Finding"). Device ops only."""
    c = covered.shape[0]
    eye = torch.eye(c, dtype=torch.bool, device=covered.device)
    return (covered & not_nf)[None, :] & not_nf[:, None] & ~eye


def _class_bits(class_index: torch.Tensor) -> torch.Tensor:
    """``(C,)`` int32 ``1 << c`` (bit 31 as the int32 of the same bits). Device ops only."""
    bits = torch.ones_like(class_index) << class_index  # (C,) int64
    return torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32)


def _ranges(start: torch.Tensor, count: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Start (clamped into ``[0, size)``), count and last index of per-class ranges. Device ops only."""
    return start.clamp(0, max(size - 1, 0)), count, (count - 1).clamp_min(0)


def resolve_tail(
    class_names: tuple[str, ...], covered: torch.Tensor, freq: torch.Tensor, config: DadamConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tail classes: ``(tail_mask, blend_mask)``, ``(C,)`` bool each, on the CPU.

    ``tail_mask``: the tail classes that can be pasted (covered). ``blend_mask``: the classes that trigger a blend
    (with ``config.tail`` given, also those the bank does not cover). "No Finding" is in neither.

    Raises:
        ValueError: an unknown tail class, an index out of range, or no covered tail class.
    """
    names = list(class_names)
    nf = names.index(NO_FINDING)
    if config.tail is None:
        tail_mask = tail_classes(freq, covered, quantile=config.tail_quantile, class_names=names)
        blend_mask = tail_mask.clone()
    else:
        blend_mask = torch.zeros(len(names), dtype=torch.bool)
        for t in config.tail:
            if isinstance(t, str):
                if t not in names:
                    raise ValueError(f"tail class {t!r} is not one of {names}")
                t = names.index(t)
            if not 0 <= int(t) < len(names):
                raise ValueError(f"tail class index {t} is outside [0, {len(names)})")
            blend_mask[int(t)] = True
        tail_mask = blend_mask & covered
    tail_mask[nf] = blend_mask[nf] = False
    if not bool(tail_mask.any()):
        given = f"default (quantile {config.tail_quantile})" if config.tail is None else list(config.tail)
        is_covered = covered.tolist()  # CPU-only path: construction
        raise ValueError(
            f"no tail class is covered by the bank: tail={given}, covered classes="
            f"{[n for n, c in zip(names, is_covered, strict=True) if c]}; pass tail= classes the bank has patches of"
        )
    return tail_mask, blend_mask


def build_tables(bank: PatchBank, stats: LabelStats, config: DadamConfig) -> tuple[SamplerTables, torch.Tensor]:
    """The tables of ``config.companions``'s rule for a bank and label statistics, on the CPU.

    Args:
        bank: the patch bank (its index: classes, boxes, canvas).
        stats: the label statistics (the co-occurrence rule needs their label-row tables).
        config: the DADAM options (validated).

    Returns:
        ``(tables, tail_mask)``: the :class:`SamplerTables` and the ``(C,)`` bool mask of the tail classes that can
        be pasted.

    Raises:
        ValueError: classes of bank and statistics differ, no "No Finding" class, an empty bank, no covered tail
            class, (co-occurrence rule) statistics without label rows or more than 32 classes, or
            ``placement="lung"`` with a bank that does not know its donors' lung boxes.

    Example:
        >>> tables, tail = build_tables(bank, LabelStats.from_labels(table), DadamConfig())  # doctest: +SKIP
    """
    names = tuple(bank.class_names)
    if tuple(stats.class_names) != names:
        raise ValueError(f"stats classes {list(stats.class_names)} differ from the bank's {list(names)}")
    if len(bank) == 0:
        raise ValueError("the patch bank is empty: no class to paste")
    if NO_FINDING not in names:
        raise ValueError(f"the class list has no {NO_FINDING!r} class (DADAM pastes onto normal images): {list(names)}")
    nf, c = names.index(NO_FINDING), len(names)
    cooccurrence = config.companions == "cooccurrence"
    if cooccurrence and c > MAX_TEMPLATE_CLASSES:
        raise ValueError(
            f"companions='cooccurrence' supports at most {MAX_TEMPLATE_CLASSES} classes (a label row's classes are "
            f"one 32-bit mask), got {c}; use companions='correlation'"
        )
    if cooccurrence and not stats.has_rows:
        raise ValueError(
            "companions='cooccurrence' draws real label rows, but these LabelStats hold none (built as "
            "LabelStats(freq, corr)); build them with LabelStats.from_labels(table) or LabelStats.load(file), or "
            "use companions='correlation'"
        )
    if cooccurrence and stats.template_rows.shape[0] == 0:
        raise ValueError("companions='cooccurrence' needs label rows with a positive class; these LabelStats have none")
    # the tables are built once, at construction, on the CPU, then moved with SamplerTables.to
    sources = {**stats.tensors(), "boxes": bank.boxes, "class_start": bank.class_start, "covered": bank.covered}
    sources["lung_boxes"] = bank.lung_boxes
    host = {name: t.detach().to("cpu", copy=True) for name, t in sources.items()}  # CPU-only path: construction
    boxes, class_start, covered = host["boxes"], host["class_start"], host["covered"]
    anchor = lung_anchor(boxes, host["lung_boxes"], bank.canvas)  # (N, 2), NaN where a donor's lung box is unknown
    unknown = int(torch.isnan(anchor).any(1).sum())
    if config.placement == "lung" and unknown:
        raise ValueError(
            f"placement='lung' maps each patch through its donor's lung box, but {unknown} of the bank's {len(bank)} "
            "patches have none (a bank file written before banks stored them, or a bank built from patches without "
            "lung_boxes): rebuild the bank with PatchBank.from_boxes (it estimates each donor's lung box, or reads "
            "the lung_x0..lung_y1 columns of the box table), or use placement='aligned'"
        )
    covered[nf] = False
    freq, corr = host["freq"].float(), host["corr"].float()
    tail_mask, blend_mask = resolve_tail(names, covered, freq, config)
    weights = dict(gamma=config.gamma, beta=config.beta, no_finding=nf)
    weights["min_freq"] = 1.0 / stats.num_samples if stats.num_samples > 0 else 1e-6
    tail_weight, companion_weight = sampling_weights(freq, corr, tail_mask, covered, **weights)
    blend_tail_weight = sampling_weights(freq, corr, blend_mask, torch.ones_like(covered), **weights)[0]
    if cooccurrence:  # blends draw j ~ P(j | t): the co-occurrence counts of t over the covered classes
        counts = host["cooccurrence"].double()
        p_given = counts / counts.diagonal().clamp_min(1)[:, None]  # (C, C) row t: P(j | t)
        companion_weight = torch.where(_companion_mask(covered, torch.arange(c) != nf), p_given, 0.0).float()
    tables = tables_from_weights(
        tail_weight,
        companion_weight,
        boxes,
        class_start,
        class_start.diff()[:c],
        blend_tail_weight=blend_tail_weight,
        canvas=bank.canvas,
        no_finding=nf,
        device="cpu",
        covered=covered,
        patch_anchor=anchor,
    )
    if cooccurrence:
        rows = host["template_rows"]
        start, count, last = _ranges(host["template_start"][:c], host["template_start"].diff(), rows.shape[0])
        tables = tables._replace(
            template_rows=rows,
            template_start=start,
            template_count=count,
            template_last=last,
            row_classes=host["row_classes"],
        )
    return tables, tail_mask


def tables_from_weights(
    tail_weight: torch.Tensor,
    companion_weight: torch.Tensor,
    patch_boxes: torch.Tensor,
    class_start: torch.Tensor,
    class_count: torch.Tensor,
    *,
    canvas: int,
    no_finding: int,
    device: torch.device | str,
    blend_tail_weight: torch.Tensor | None = None,
    covered: torch.Tensor | None = None,
    patch_anchor: torch.Tensor | None = None,
) -> SamplerTables:
    """The correlation rule's tables from explicit weights and the bank's index, built on ``device`` with tensor
    ops only (inputs from the CPU arrive by non-blocking pinned copies), so nothing syncs with the host.

    Args:
        tail_weight: ``(C,)`` paste tail-class weights; companion_weight: ``(C, C)`` (its diagonal and "No Finding"
            column are zeroed here).
        patch_boxes: ``(N, 4)`` long; class_start: ``(C + 1,)`` or ``(C,)`` long; class_count: ``(C,)`` long.
        canvas: canvas side; no_finding: index of "No Finding"; device: where the tables live.
        blend_tail_weight: ``(C,)`` weights of the tail classes that trigger a blend (default: ``tail_weight``).
        covered: ``(C,)`` bool classes with patches (default: ``class_count > 0``).
        patch_anchor: ``(N, 2)`` float32 lung anchors of the patches (default: NaN, unknown: ``placement="lung"``
            then keeps the aligned boxes).

    Returns:
        the :class:`SamplerTables` (without label rows).
    """
    c = tail_weight.shape[0]
    n = patch_boxes.shape[0]
    dev = torch.device(device)
    class_index = torch.arange(c, device=dev)
    not_nf = class_index != no_finding
    class_count = to_device(class_count, dev)
    covered = (class_count > 0) if covered is None else to_device(covered, dev).bool()
    companion = to_device(companion_weight, dev).to(torch.float32)
    # a class is never its own companion, nor is "No Finding" (sampling_weights gives both weight 0 already)
    companion = torch.where(~torch.eye(c, dtype=torch.bool, device=dev) & not_nf[None, :], companion, 0.0)
    start, count, last = _ranges(to_device(class_start, dev)[:c], class_count, n)
    blend = tail_weight if blend_tail_weight is None else blend_tail_weight
    empty_rows = torch.zeros(0, dtype=torch.int32, device=dev)
    zeros_c = torch.zeros(c, dtype=torch.long, device=dev)
    if patch_anchor is None:
        patch_anchor = torch.full((n, 2), float("nan"), device=dev)
    return SamplerTables(
        tail_weight=to_device(tail_weight, dev).to(torch.float32),
        blend_tail_weight=to_device(blend, dev).to(torch.float32),
        companion_weight=companion,
        patch_boxes=to_device(patch_boxes, dev),
        patch_anchor=to_device(patch_anchor, dev).to(torch.float32),
        patch_start=start,
        patch_count=count,
        patch_last=last,
        not_nf=not_nf,
        covered=covered & not_nf,
        class_index=class_index,
        class_bits=_class_bits(class_index),
        template_rows=empty_rows,
        template_start=zeros_c,
        template_count=zeros_c,
        template_last=zeros_c,
        row_classes=empty_rows,
        canvas=int(canvas),
        no_finding=int(no_finding),
    )
