"""The pyramid loss: the sum over FPSM heads of a multi-label loss, with NaN targets masked out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.loss import AsymmetricLossMultiLabel

from fpsm.model import FPSMOutput

__all__ = ["LOSSES", "masked_asymmetric_loss", "masked_soft_margin_loss", "pyramid_loss"]

LOSSES = ("soft_margin", "asl")


def _check_pair(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 2 or logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must both be (B, C) with equal shapes, got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    if not targets.dtype.is_floating_point:
        raise TypeError(f"targets must be a float tensor (NaN = unknown), got {targets.dtype}")
    outside = (targets < 0) | (targets > 1)  # (B, C); NaN (unknown) compares False: allowed
    if targets.device.type == "cpu":
        if bool(outside.any()):
            row, col = (int(v) for v in outside.nonzero()[0])
            raise ValueError(
                f"targets must be in [0, 1] or NaN (unknown), got {float(targets[row, col])} at row {row}, column "
                f"{col}; labels of -1 or 255 for 'unknown' must become NaN"
            )
    else:  # no host sync on the device: a device-side assert
        torch._assert_async(~outside.any(), "pyramid_loss: targets must be in [0, 1] or NaN (unknown)")


def masked_soft_margin_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``torch.nn.MultiLabelSoftMarginLoss`` over the known (non-NaN) targets.

    Per element ``l_ic = -(y log sigmoid(x) + (1 - y) log sigmoid(-x))``; per sample the mean of ``l_ic`` over its
    known classes; then the mean over the samples with at least one known class (0 if there is none). Without NaN
    this is exactly ``MultiLabelSoftMarginLoss()(logits, targets)``.

    Args:
        logits: ``(B, C)`` raw scores.
        targets: ``(B, C)`` float in [0, 1], NaN = unknown.

    Returns:
        Scalar float32 loss.

    Shape:
        logits, targets: ``(B, C)`` -> ``()``.

    Example:
        >>> masked_soft_margin_loss(torch.zeros(1, 2), torch.tensor([[1.0, float("nan")]]))
        tensor(0.6931)
    """
    _check_pair(logits, targets)
    x = logits.float()
    known = ~torch.isnan(targets)  # (B, C)
    y = torch.where(known, targets, 0.0).to(x.dtype)
    per_elem = -(y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x))  # (B, C), the same formula as torch's
    per_elem = torch.where(known, per_elem, 0.0)
    n_known = known.sum(dim=1)  # (B,)
    per_sample = per_elem.sum(dim=1) / n_known.clamp(min=1)  # (B,)
    has_known = n_known > 0
    return per_sample.sum() / has_known.sum().clamp(min=1)


def masked_asymmetric_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, asl: AsymmetricLossMultiLabel | None = None
) -> torch.Tensor:
    """timm's ``AsymmetricLossMultiLabel`` over the known (non-NaN) targets.

    The per-element terms come from timm's loss (``reduction="none"``); unknown entries are zeroed and the rest
    reduced as timm's default ``"batchmean"``: the sum over known entries divided by the batch size. Without NaN
    this equals ``AsymmetricLossMultiLabel()(logits, targets)``.

    Args:
        logits: ``(B, C)`` raw scores.
        targets: ``(B, C)`` float in [0, 1], NaN = unknown.
        asl: a configured ``AsymmetricLossMultiLabel`` with ``reduction="none"`` (default: timm's defaults,
            gamma_neg=4, gamma_pos=1, clip=0.05).

    Returns:
        Scalar float32 loss.

    Shape:
        logits, targets: ``(B, C)`` -> ``()``.

    Example:
        >>> masked_asymmetric_loss(torch.zeros(2, 3), torch.tensor([[1.0, 0.0, float("nan")], [0.0, 1.0, 1.0]]))
        tensor(0.5444)
    """
    _check_pair(logits, targets)
    if asl is None:
        asl = AsymmetricLossMultiLabel(reduction="none")
    elif asl.reduction != "none":
        raise ValueError(f"asl must be built with reduction='none', got reduction={asl.reduction!r}")
    known = ~torch.isnan(targets)  # (B, C)
    y = torch.where(known, targets, 0.0)
    per_elem = torch.where(known, asl(logits, y), 0.0)  # (B, C)
    return per_elem.sum() / max(logits.shape[0], 1)


def pyramid_loss(
    out: FPSMOutput | Sequence[torch.Tensor], targets: torch.Tensor, *, loss: str = "soft_margin"
) -> torch.Tensor:
    """The FPSM training loss: the sum over heads of a multi-label loss (Kim et al., 2023).

    Args:
        out: an :class:`~fpsm.model.FPSMOutput` (its ``stage_logits`` are used) or a list of ``(B, C)`` logits.
        targets: ``(B, C)`` float targets in [0, 1]; NaN marks an unknown label, left out of the loss. Values outside
            [0, 1] raise ``ValueError`` on the CPU (a device-side assert on CUDA, which does not wait for the device).
        loss: ``"soft_margin"`` (the paper: ``MultiLabelSoftMarginLoss``, see :func:`masked_soft_margin_loss`) or
            ``"asl"`` (timm's ``AsymmetricLossMultiLabel``, see :func:`masked_asymmetric_loss`).

    Returns:
        Scalar float32 loss, ``sum_k loss(stage_logits[k], targets)``.

    Shape:
        targets: ``(B, C)``; each stage logit ``(B, C)`` -> ``()``.

    Example:
        >>> pyramid_loss([torch.zeros(2, 3), torch.zeros(2, 3)], torch.ones(2, 3))
        tensor(1.3863)
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    stage_logits = out.stage_logits if isinstance(out, FPSMOutput) else list(out)
    if not stage_logits:
        raise ValueError("out has no stage logits")
    if loss == "soft_margin":
        terms = [masked_soft_margin_loss(lg, targets) for lg in stage_logits]
    else:
        asl = AsymmetricLossMultiLabel(reduction="none")
        terms = [masked_asymmetric_loss(lg, targets, asl=asl) for lg in stage_logits]
    return torch.stack(terms).sum()
