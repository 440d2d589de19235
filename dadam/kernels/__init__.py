"""Triton GPU kernels of DADAM, one module per kernel; each imports without Triton (``HAS_TRITON`` is then False).

- :mod:`dadam.kernels.paste`: the paste / blend of bank patches into images (:func:`paste_patches_triton`).

On CPU tensors the kernels run under Triton's interpreter (slow; for tests and debugging).
"""

from __future__ import annotations

from dadam.kernels.paste import HAS_TRITON, TILE, paste_patches_triton

__all__ = ["HAS_TRITON", "TILE", "paste_patches_triton"]
