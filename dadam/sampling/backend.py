"""Which implementation turns the uniforms into params: the Triton kernel or the torch rule.

The co-occurrence rule (the default) has a Triton kernel (:mod:`dadam.kernels.sampler`): on CUDA one launch after
the ``torch.rand``, the same values as :func:`~dadam.sampling.cooccurrence_params` for the same uniforms. The
correlation rule, the CPU and a call the kernel cannot take (no Triton, more than 32 classes, integer labels) run
the torch rule. :func:`draw_params` picks with ``backend``:

- ``"auto"`` (default): the kernel where it applies on CUDA; if it cannot be built (compiled, its launcher built,
  its module loaded: :class:`~dadam.kernels.KernelBuildError`) on its first use on a device, a warning names the
  reason and that device keeps the torch rule (same values, more launches); every other error propagates;
- ``"torch"``: the torch rule everywhere (the reference);
- ``"triton"``: the kernel, errors propagate; CPU tensors run it under Triton's interpreter (slow: tests).

:func:`sampler_backend` says which one ``"auto"`` uses on a device, and why. Triton is imported on the first CUDA
call only (the core of dadam never imports it by itself).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from dadam.config import DadamConfig
from dadam.sampling.params import DadamParams
from dadam.sampling.tables import SamplerTables
from dadam.sampling.uniforms import Uniforms, UniformSpec

__all__ = ["BACKENDS", "SamplerBackend", "check_ok_word", "clear_ok_if_bad", "draw_params", "sampler_backend"]

BACKENDS = ("auto", "torch", "triton")
_FAILED: dict[torch.device, str] = {}  # device -> why the kernel could not run there (its first use failed)
_LAUNCHED: set[torch.device] = set()  # devices where the kernel ran


class SamplerBackend(NamedTuple):
    """What draws the params: ``name`` is ``"triton"`` or ``"torch"``; ``reason`` says why (empty for a kernel that
    ran). ``str()`` gives ``"triton"`` or ``"torch (reason)"``, the form a benchmark prints."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})" if self.reason else self.name


def sampler_backend(device: torch.device | str, companions: str = "cooccurrence") -> SamplerBackend:
    """Which implementation ``sample_batch(..., backend="auto")`` uses on ``device`` for a companion rule.

    Args:
        device: where the labels live.
        companions: the rule (``DadamConfig.companions``).

    Returns:
        the :class:`SamplerBackend`; ``"triton"`` with the reason ``"not launched yet"`` before the kernel's first use
        on that device (it falls back to torch if it cannot be built). A call with labels the kernel does not take
        (more than 32 classes, a dtype outside :data:`dadam.kernels.sampler.LABEL_DTYPES`) runs torch whatever this
        says.

    Example:
        >>> str(sampler_backend("cpu"))
        'torch (CPU tensors: the kernel runs on CUDA)'
    """
    device = torch.device(device)
    if companions != "cooccurrence":
        return SamplerBackend("torch", f"companions={companions!r} has no kernel")
    if device.type != "cuda":
        return SamplerBackend("torch", f"{device.type.upper()} tensors: the kernel runs on CUDA")
    from dadam.kernels.runtime import HAS_TRITON

    if not HAS_TRITON:
        return SamplerBackend("torch", "triton is not installed")
    device = _indexed(device)
    if device in _FAILED:
        return SamplerBackend("torch", f"the kernel failed on first use: {_FAILED[device]}")
    return SamplerBackend("triton", "" if device in _LAUNCHED else "not launched yet")


def check_ok_word(ok: torch.Tensor | None, labels: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``ok`` is None or a ``(1,)`` int32 tensor on the labels' device."""
    if ok is None:
        return
    if not isinstance(ok, torch.Tensor) or tuple(ok.shape) != (1,) or ok.dtype != torch.int32:
        got = f"shape {tuple(ok.shape)}, dtype {ok.dtype}" if isinstance(ok, torch.Tensor) else type(ok).__name__
        raise ValueError(f"ok must be a (1,) torch.int32 tensor (e.g. torch.ones(1, dtype=torch.int32)), got {got}")
    if ok.device != labels.device:
        raise ValueError(f"ok is on {ok.device}, the labels on {labels.device}: create it on the labels' device")


def clear_ok_if_bad(ok: torch.Tensor, labels: torch.Tensor) -> None:
    """Set ``ok`` to 0 when a label is not 0, 1 or NaN (torch ops, no host sync): what the kernel does."""
    good = ((labels == 0) | (labels == 1) | torch.isnan(labels)).all()  # () bool
    ok.mul_(good)


def draw_params(
    labels: torch.Tensor,
    u: Uniforms,
    spec: UniformSpec,
    rule,
    tables: SamplerTables,
    config: DadamConfig,
    *,
    mask: torch.Tensor | None = None,
    ok: torch.Tensor | None = None,
    backend: str = "auto",
    lung_boxes: torch.Tensor | None = None,
) -> DadamParams:
    """The params of the rule for these uniforms, by the kernel or by ``rule`` (see the module docstring).

    Args:
        labels: ``(B, C)`` labels; u: their uniforms (``spec.draw``); spec: the rule's :class:`UniformSpec`;
            rule: the torch function of ``config.companions``; tables: on the labels' device; config: the options.
        mask: ``(B,)`` bool, the samples that may change (checked by the caller).
        ok: ``(1,)`` int32, set to 0 when a label is not 0, 1 or NaN (None: no check).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        lung_boxes: ``(B, 4)`` float32 recipients' lung boxes (``config.placement="lung"``; checked by the caller).

    Returns:
        the :class:`DadamParams`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_ok_word(ok, labels)
    if tables.device != labels.device:
        raise ValueError(
            f"the sampler tables are on {tables.device}, the labels on {labels.device}: move them with "
            "tables.to(labels.device)"
        )
    device = _indexed(labels.device)
    use_kernel = backend == "triton" or (backend == "auto" and labels.is_cuda and device not in _FAILED)
    unsupported = _unsupported(labels, tables, config) if use_kernel else ""
    if backend == "triton" and unsupported:
        raise ValueError(f"backend='triton' cannot draw these params: {unsupported}; use backend='auto' or 'torch'")
    if use_kernel and not unsupported:
        if backend == "triton":
            return _kernel_params(labels, u, spec, tables, config, mask, ok, lung_boxes)
        from dadam.kernels import KernelBuildError

        try:
            params = _kernel_params(labels, u, spec, tables, config, mask, ok, lung_boxes)
        except KernelBuildError as e:  # raised on a variant's first use only: the launch itself propagates
            _FAILED[device] = str(e)
            warnings.warn(
                f"DADAM sampler: the Triton kernel cannot run on {device} ({e}); sampling with torch ops instead (the "
                "same values, more launches)",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            _LAUNCHED.add(device)
            return params
    if ok is not None:
        clear_ok_if_bad(ok, labels)
    return rule(labels, u, tables, config, mask, lung_boxes)


def _indexed(device: torch.device) -> torch.device:
    """``cuda`` as ``cuda:<current index>`` (the key of the per-device state)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return device


def _unsupported(labels: torch.Tensor, tables: SamplerTables, config: DadamConfig) -> str:
    """Why the kernel cannot draw these params ("" if it can)."""
    if config.companions != "cooccurrence":
        return f"companions={config.companions!r} has no kernel"
    from dadam.kernels.sampler import HAS_TRITON, LABEL_DTYPES

    if not HAS_TRITON:
        return "triton is not installed"
    if labels.dtype not in LABEL_DTYPES:
        return f"labels of dtype {labels.dtype} (the kernel takes {LABEL_DTYPES})"
    if labels.shape[1] > 32:
        return f"{labels.shape[1]} classes (at most 32)"
    if tables.template_rows.numel() == 0:
        return "tables without label rows"
    if labels.device.type not in ("cuda", "cpu"):
        return f"labels on {labels.device}"
    return ""


def _kernel_params(labels, u, spec, tables, config, mask, ok, lung_boxes) -> DadamParams:
    """The kernel's params (the tables made contiguous only if they are not: they are, as built)."""
    from dadam.kernels.sampler import cooccurrence_triton
    from dadam.sampling.draws import lung_placement

    lung = lung_placement(tables, config, lung_boxes)

    tables = tables._replace(**{k: t.contiguous() for k, t in tables.tensors().items() if not t.is_contiguous()})
    lung_boxes = None if lung is None else lung[1].contiguous()
    out = cooccurrence_triton(
        labels, u.raw.contiguous(), tables, config, layout=spec.layout(), mask=mask, ok=ok, lung_boxes=lung_boxes
    )
    return DadamParams(**out)
