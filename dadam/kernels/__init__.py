"""Triton GPU kernels of DADAM, one module per kernel; each imports without Triton (``HAS_TRITON`` is then False).

- :mod:`dadam.kernels.runtime`: what the kernels share (the ``ok`` word, the CPU interpreter, the first-use build).
- :mod:`dadam.kernels.paste`: the paste / blend of bank patches into images (:func:`paste_patches_triton`), out of
  place (one kernel writes every output pixel) or in place (only the patch pixels);
- :mod:`dadam.kernels.match`: the intensity map of ``match`` (:func:`match_intensity_triton`), a few programs per
  slot (two more launches per forward with ``match`` on: the zeroed sums and the kernel).
- :mod:`dadam.kernels.sampler`: the co-occurrence sampler in one launch (used by :func:`dadam.sampling.sample_batch`
  on CUDA).

A forward of :class:`~dadam.augment.DiseasedAreaAugment` on a GPU is five launches: the ``ok`` word, the uniforms
(``torch.rand``), the sampler kernel, the paste kernel and the one assert; ``match`` adds the zeroed sums and the
match kernel (seven), ``feather`` nothing (the ramp is computed in the paste kernel).

On CPU tensors the kernels run under Triton's interpreter (slow; for tests and debugging).

**Input checks on CUDA: one ``ok`` word per call.** A checked call allocates ``ok = new_ok_flag(device)`` (``(1,)``
int32 holding 1: one fill launch), passes it to each kernel, and asserts it once at the end with
``assert_ok(ok, message)`` (``torch._assert_async``: no host sync; a bad value stops the process at the next
synchronisation with a device-side assert). A kernel never sets the word to 1: where it finds a bad input it stores
0 (a masked store of the constant 0 or an atomic AND: concurrent programs cannot conflict). In a
:class:`~dadam.augment.DiseasedAreaAugment` forward:

- the sampler's kernel stores 0 for labels outside ``{0, 1, NaN}``;
- the paste kernel stores 0 for two active patches of one sample that share an image pixel (replayed params) and
  for float pixels outside ``[0, 1]`` (or NaN) among those it reads: every pixel out of place, only the background
  under blended patches in place (a paste does not read the pixels it replaces).

On the CPU the same checks raise a ``ValueError`` naming the values found, before any kernel runs.
"""

from __future__ import annotations

from dadam.kernels.match import match_intensity_triton
from dadam.kernels.paste import TILE, paste_patches_triton
from dadam.kernels.runtime import HAS_TRITON, KernelBuildError, assert_ok, new_ok_flag

__all__ = [
    "HAS_TRITON",
    "TILE",
    "KernelBuildError",
    "assert_ok",
    "match_intensity_triton",
    "new_ok_flag",
    "paste_patches_triton",
]
