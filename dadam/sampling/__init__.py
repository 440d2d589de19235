"""All of DADAM's randomness: which samples change, which classes and patches, where they go.

The sampler needs labels and the bank's index (boxes and per-class ranges), never pixels, so an audit can run it
over a whole label table on the CPU. Each companion rule is two steps:

1. **draw uniforms**: the rule declares its random numbers once, by name and shape (a
   :class:`~dadam.sampling.uniforms.UniformSpec`: gate, tail class, template row, per slot the class and per
   candidate the patch and shift), and draws them with one ``torch.rand(B, columns)`` call, the only random call;
2. **a pure function** ``(labels, uniforms, tables, config[, mask]) -> DadamParams``, vectorised over the batch with
   per-row logic a kernel can follow: inverse-CDF draws over at most 32 classes (:func:`~dadam.sampling.draws.
   categorical`), gathers from the :class:`SamplerTables`, fixed small loops over slots and candidates, the first
   candidate that overlaps no placed patch taken with ``argmax``. The new labels come from :func:`apply_labels`,
   the same function a replay uses.

Where a patch goes (``DadamConfig.placement``): its aligned box, or (``"lung"``) that box mapped from its donor's
lung-field box into the recipient's (the ``lung_boxes`` of :func:`sample_batch`; the rule is in
:mod:`dadam.anatomy`), then jittered. Placement draws no random number: both give the same stream.

Nothing syncs with the host: it runs under ``torch.cuda.set_sync_debug_mode("error")``.

On CUDA the co-occurrence rule runs as one Triton kernel (:mod:`dadam.kernels.sampler`): two launches per call,
the ``torch.rand`` and the kernel, with the same params as the torch function for the same uniforms. The torch
function stays the CPU path and the reference; the correlation rule runs as torch ops on every device. See
:mod:`dadam.sampling.backend` (``backend=`` of :func:`sample_batch`, :func:`sampler_backend`).

The rules (``DadamConfig.companions``, a normal image's companions; see :mod:`dadam.sampling.cooccurrence` and
:mod:`dadam.sampling.correlation`):

- ``"cooccurrence"`` (default): the covered classes of a real training label row that shows the tail class;
- ``"correlation"``: drawn ``~ corr ** beta`` (the paper's rule; the random stream of release 0.1.0).

Modules: ``params`` (:class:`DadamParams`, :func:`apply_labels`), ``uniforms`` (the named draws), ``tables``
(:class:`SamplerTables`, :func:`build_tables`, :func:`sampling_weights`), ``draws`` (the building blocks),
``correlation`` and ``cooccurrence`` (one per rule), ``backend`` (kernel or torch rule).
"""

from __future__ import annotations

import torch

from dadam.anatomy import check_lung_boxes
from dadam.config import DadamConfig
from dadam.sampling.backend import BACKENDS, SamplerBackend, draw_params, sampler_backend
from dadam.sampling.cooccurrence import cooccurrence_params, cooccurrence_uniforms
from dadam.sampling.correlation import correlation_params, correlation_uniforms
from dadam.sampling.params import MODE_BLEND, MODE_NONE, MODE_PASTE, DadamParams, apply_labels
from dadam.sampling.tables import (
    NO_FINDING_INDEX,
    SamplerTables,
    build_tables,
    sampling_weights,
    tables_from_weights,
)
from dadam.sampling.uniforms import Uniforms, UniformSpec

__all__ = [
    "BACKENDS",
    "MODE_BLEND",
    "MODE_NONE",
    "MODE_PASTE",
    "RULES",
    "DadamParams",
    "SamplerBackend",
    "SamplerTables",
    "UniformSpec",
    "Uniforms",
    "apply_labels",
    "build_tables",
    "check_mask",
    "cooccurrence_params",
    "cooccurrence_uniforms",
    "correlation_params",
    "correlation_uniforms",
    "sample",
    "sample_batch",
    "sampler_backend",
    "sampling_weights",
    "tables_from_weights",
]

#: companion rule name -> (its uniforms for a config, its pure function)
RULES = {
    "cooccurrence": (cooccurrence_uniforms, cooccurrence_params),
    "correlation": (correlation_uniforms, correlation_params),
}


def check_mask(mask: torch.Tensor | None, labels: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``mask`` is None or a ``(B,)`` bool tensor on the labels' device."""
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a (B,) bool tensor or None, got {type(mask).__name__}")
    B = labels.shape[0]
    if tuple(mask.shape) != (B,) or mask.dtype != torch.bool or mask.device != labels.device:
        raise ValueError(
            f"mask must be a ({B},) torch.bool tensor on {labels.device} (the labels' device), got "
            f"shape {tuple(mask.shape)}, dtype {mask.dtype}, device {mask.device}"
        )


def sample_batch(
    labels: torch.Tensor,
    tables: SamplerTables,
    config: DadamConfig,
    *,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
    ok: torch.Tensor | None = None,
    backend: str = "auto",
    lung_boxes: torch.Tensor | None = None,
) -> DadamParams:
    """Draw DADAM params for a batch of labels with ``config.companions``'s rule: one ``torch.rand``, then its pure
    function (on CUDA, for the co-occurrence rule, its Triton kernel: two launches in all, no host sync).

    Args:
        labels: ``(B, C)`` multi-hot labels (1 positive, 0 negative, NaN unknown) on the tables' device.
        tables: the :class:`SamplerTables` (:func:`build_tables`, moved with ``.to(device)``).
        config: the validated options.
        generator: a ``torch.Generator`` on the labels' device (None: torch's default generator).
        mask: ``(B,)`` bool, the samples that may change (``p`` still applies); None: all.
        ok: ``(1,)`` int32 on the labels' device, set to 0 when a label is not 0, 1 or NaN (checked on the device,
            no host sync; follow with ``torch._assert_async(ok)``); None: no check here.
        backend: ``"auto"`` (the kernel where it applies on CUDA, else the torch function), ``"torch"`` or
            ``"triton"`` (CPU tensors: under Triton's interpreter); see :mod:`dadam.sampling.backend`.
        lung_boxes: ``(B, 4)`` float recipients' lung boxes, normalised xyxy in ``[0, 1]``, a row of NaN where
            unknown (that sample keeps the aligned boxes), on the labels' device; needed with
            ``config.placement="lung"`` and ignored otherwise (see :mod:`dadam.anatomy`). Their values are checked
            on the CPU (``ValueError``); elsewhere bad values give boxes clamped into the canvas
            (:class:`~dadam.DiseasedAreaAugment` checks given lung boxes into its ``ok`` word).

    Returns:
        the :class:`DadamParams` on the labels' device.

    Example:
        >>> tables, _ = build_tables(bank, stats, DadamConfig())  # doctest: +SKIP
        >>> params = sample_batch(labels, tables, DadamConfig(), generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    """
    check_mask(mask, labels)
    if config.placement != "lung":
        lung_boxes = None
    elif lung_boxes is not None:
        check_lung_boxes(lung_boxes, labels.shape[0], labels.device)
        lung_boxes = lung_boxes.to(torch.float32)
    uniforms, rule = RULES[config.companions]
    spec = uniforms(config)
    u = spec.draw(labels.shape[0], generator=generator, device=labels.device)
    return draw_params(labels, u, spec, rule, tables, config, mask=mask, ok=ok, backend=backend, lung_boxes=lung_boxes)


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
    mask: torch.Tensor | None = None,
) -> DadamParams:
    """The correlation rule from explicit weights (no bank or statistics objects needed; no host sync).

    The same draws as ``DiseasedAreaAugment(..., companions="correlation")`` with these weights. The tables are built
    on the labels' device with tensor ops (CPU inputs arrive by non-blocking pinned copies); a caller that samples
    often builds them once with :func:`tables_from_weights` and calls :func:`sample_batch`.

    Args:
        labels: ``(B, C)`` multi-hot labels (1 positive, 0 negative, NaN unknown).
        tail_weight: ``(C,)`` unnormalised tail-class weights of the pastes (see :func:`sampling_weights`): only
            classes the bank covers.
        companion_weight: ``(C, C)`` unnormalised companion weights, row = tail class (its diagonal and the
            "No Finding" column are ignored).
        patch_boxes: ``(N, 4)`` long, the bank's canvas boxes (``bank.boxes``).
        class_start: ``(C + 1,)`` long, first bank patch of each class; class_count: ``(C,)`` long.
        canvas: side of the square canvas.
        blend_tail_weight: ``(C,)`` weights of the tail classes that trigger a blend (default: ``tail_weight``).
        p: per-sample probability of augmenting an eligible sample, in ``[0, 1]``.
        alpha: blend weight of the patch in ``(0, 1]``.
        max_patches: slots per sample (``>= 1``); pastes use up to all of them, blends slot 0.
        jitter: maximal shift of a patch from its aligned position, as a fraction of the canvas, in ``[0, 1]``.
        candidates: candidate draws per companion slot (``>= 1``).
        soft_label: blended classes get label ``alpha`` instead of 1.
        no_finding: index of "No Finding".
        generator: a ``torch.Generator`` on ``labels.device`` (None: the default generator).
        mask: ``(B,)`` bool, the samples that may change; None: all.

    Returns:
        :class:`DadamParams` on ``labels.device``.

    Shape:
        labels ``(B, C)`` -> params with ``B`` samples and ``K = max_patches`` slots.

    Example:
        >>> params = sample(labels, tail_weight=tw, companion_weight=cw, patch_boxes=bank.boxes,  # doctest: +SKIP
        ...                 class_start=bank.class_start, class_count=bank.class_count, canvas=bank.canvas)
    """
    config = DadamConfig(
        p=p,
        alpha=alpha,
        max_patches=max_patches,
        jitter=jitter,
        candidates=candidates,
        soft_label=soft_label,
        companions="correlation",
    ).validate()
    if labels.ndim != 2 or labels.shape[1] != tail_weight.shape[0]:
        raise ValueError(f"labels must have shape (B, {tail_weight.shape[0]}), got {tuple(labels.shape)}")
    if patch_boxes.shape[0] == 0:
        raise ValueError("the patch bank is empty")
    tables = tables_from_weights(
        tail_weight,
        companion_weight,
        patch_boxes,
        class_start,
        class_count,
        blend_tail_weight=blend_tail_weight,
        canvas=canvas,
        no_finding=no_finding,
        device=labels.device,
    )
    return sample_batch(labels, tables, config, generator=generator, mask=mask)
