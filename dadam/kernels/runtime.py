"""What every DADAM Triton kernel shares: the optional import, the ``ok`` word, the CPU interpreter and the launch.

- :data:`HAS_TRITON`: whether ``triton`` imports (the core of dadam imports without it).
- The ``ok`` word (:func:`new_ok_flag`, :func:`assert_ok`): one int32 per call, 1 = fine; a kernel that finds bad
  input stores 0 into it, and the caller asserts it once (``torch._assert_async``: no host sync on CUDA).
- :func:`kernel_for`: the compiled kernel for CUDA tensors, the same source under Triton's interpreter for CPU tensors
  (slow; for tests), without ``TRITON_INTERPRET`` having to be set before Triton is imported.
- The shared conventions of the paste and match kernels: :data:`IMAGE_KINDS` (the ``KIND`` of an image dtype),
  :data:`INT32` (their offsets and grids are int32), :data:`NUM_WARPS`, and :func:`bank_arguments` /
  :func:`slot_arguments` (the bank's buffers and the slots as the kernels read them).
- :func:`launch`: builds a kernel variant on its first use (compile, launcher, module load) and raises
  :class:`KernelBuildError` naming the cause when that fails; the launch itself, and every later error, propagates.
"""

from __future__ import annotations

import contextlib

import torch

try:  # optional dependency: the core of dadam imports without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None

__all__ = [
    "HAS_TRITON",
    "IMAGE_KINDS",
    "INT32",
    "NUM_WARPS",
    "KernelBuildError",
    "assert_ok",
    "bank_arguments",
    "kernel_for",
    "launch",
    "new_ok_flag",
    "slot_arguments",
    "tl",
    "triton",
]

HAS_TRITON = triton is not None
# The KIND constexpr of an image dtype: 0 uint8, 1 float16 / float32 (loaded as such), 2 bfloat16 (read as int16 bits)
IMAGE_KINDS = {torch.uint8: 0, torch.float16: 1, torch.float32: 1, torch.bfloat16: 2}
INT32 = 2**31  # the kernels compute element offsets and program ids in int32: sizes must stay below this
NUM_WARPS = 4


class KernelBuildError(RuntimeError):
    """A Triton kernel could not be built or loaded on this machine (compile error, no C compiler for its launcher,
    not enough resources); the message names the kernel and the cause."""


def new_ok_flag(device: torch.device | str) -> torch.Tensor:
    """A fresh ``ok`` word: ``(1,)`` int32 holding 1 on ``device`` (one fill launch on CUDA, no host sync).

    Kernels that check their input store 0 into it where they find a bad value; :func:`assert_ok` tests it once.
    """
    return torch.ones(1, dtype=torch.int32, device=device)


def assert_ok(ok: torch.Tensor, message: str) -> None:
    """Fail when ``ok`` holds 0: a device-side assert on CUDA (``torch._assert_async``: no host sync; the process
    stops at the next synchronisation), a ``ValueError`` with ``message`` on the CPU."""
    if ok.device.type == "cpu":
        if not bool(ok[0]):  # CPU-only path
            raise ValueError(message)
        return
    torch._assert_async(ok, message)


def bank_arguments(
    pixels: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The bank's flat buffers as the paste and match kernels read them (a copy only where a tensor is not already
    so): ``pixels`` contiguous (uint8), ``offsets`` and ``sizes`` contiguous int64.

    Shape:
        pixels ``(P,)``, offsets ``(N,)``, sizes ``(N, 2)``: kept.
    """
    return pixels.contiguous(), offsets.to(torch.int64).contiguous(), sizes.to(torch.int64).contiguous()


def slot_arguments(
    boxes: torch.Tensor, patch_ids: torch.Tensor, active: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The slots as the paste and match kernels read them (a copy only where a tensor is not already so): ``boxes``
    and ``patch_ids`` contiguous int64, ``active`` as contiguous uint8.

    Shape:
        boxes ``(B, K, 4)``, patch_ids / active ``(B, K)``: kept.
    """
    return (
        boxes.to(torch.int64).contiguous(),
        patch_ids.to(torch.int64).contiguous(),
        active.to(torch.bool).contiguous().view(torch.uint8),
    )


_interpreted: dict = {}  # kernel -> its InterpretedFunction


def kernel_for(kernel, device: torch.device):
    """``kernel`` for tensors on ``device``: itself on CUDA, under Triton's interpreter on the CPU.

    The interpreter runs one program at a time with NumPy. Kernels run this way use only ``triton.language``
    builtins (no ``@triton.jit`` helpers such as ``tl.zeros``, ``tl.cdiv`` or ``tl.max``: outside
    ``TRITON_INTERPRET=1`` they cannot be called from an interpreted kernel).
    """
    if device.type != "cpu":
        return kernel
    if kernel not in _interpreted:
        from triton.runtime.interpreter import InterpretedFunction

        fn = kernel.fn if hasattr(kernel, "fn") else kernel
        _interpreted[kernel] = fn if isinstance(fn, InterpretedFunction) else InterpretedFunction(fn)
    return _interpreted[kernel]


_built: set = set()  # (kernel name, device, constexpr values) built in this process


def launch(kernel, grid: tuple[int, ...], args: tuple, constexprs: dict, device: torch.device) -> None:
    """Launch ``kernel[grid](*args, **constexprs)`` on ``device`` (the tensors' device; no host sync).

    On the first use of a variant (its constexprs) on a GPU the kernel is built first (compiled, its launcher built
    with the host's C compiler, its module loaded); a failure there raises :class:`KernelBuildError` with the cause.
    Errors of the launch itself propagate unchanged.
    """
    fn = kernel_for(kernel, device)
    if device.type == "cpu":
        fn[grid](*args, **constexprs)
        return
    # A guard only when there is a choice of GPU: Triton launches on the current device.
    many = torch.cuda.device_count() > 1
    with torch.cuda.device(device) if many else contextlib.nullcontext():
        key = (getattr(kernel, "__name__", str(kernel)), str(device), tuple(sorted(constexprs.items())))
        if key not in _built:
            try:
                compiled = fn.warmup(*args, grid=grid, **constexprs)
                if compiled is not None:
                    compiled.run  # noqa: B018 - the property builds the launcher and loads the module
            except Exception as e:  # noqa: BLE001 - any failure to build is a reason to fall back
                name = getattr(kernel, "__name__", "kernel")
                raise KernelBuildError(f"Triton cannot build {name} here: {type(e).__name__}: {e}") from e
            _built.add(key)
        fn[grid](*args, **constexprs)
