"""Triton GPU kernel of :func:`dadam.ops.paste_patches`: one launch pastes / blends every patch of a batch.

Why a hand-written kernel: no library pastes a ragged set of variable-size patches, each at its own offset in its
own image, with a per-patch weight, in one launch. kornia's CutMix loops over samples on the host;
``torchvision.transforms.v2.CutMix`` swaps one rectangle of another image of the batch; the pure-torch
``"vectorised"`` path of :func:`dadam.ops.paste_patches` pads every patch to the bank's largest one (``max_size``,
e.g. 207 x 335 at canvas 448 for NIH cardiomegaly: with K = 3 slots that grid alone has as many cells as the image)
and moves int32 indices, masks and float32 temporaries of that grid, tens of bytes per cell and channel.

What the kernel does: ``out = images.clone()`` (the out-of-place copy, the roofline), then one launch writes the
patch pixels into ``out`` in place. The grid is ``(B * K, tiles)`` with ``tiles`` the ``TH x TW`` tiles of the
``max_size`` grid; a program whose slot is inactive, or whose tile lies outside its patch, exits after reading a few
scalars. The others read the patch's uint8 pixels once, the background only where ``alpha < 1`` (a paste does not
read it), and store the value to all ``C`` channels through the image strides (contiguous and channels_last alike).

Memory traffic: the clone (read + write ``B*C*H*W`` elements) plus, per active patch pixel inside the image, one
uint8 read and ``C`` element writes (plus ``C`` element reads for a blend), i.e. 2x (paste) to 3x (blend) the
patch pixels on top of the clone: with patches covering ~10 % of an image, ~10-15 % more bytes than the clone alone
(the vectorised path moves several times the clone's bytes).

Values are bit-identical to :func:`dadam.ops.blend_values`: float32 ``alpha * q + (1 - alpha) * x`` evaluated as
three separately rounded operations (the launch passes ``enable_fp_fusion=False``, so no FMA contraction),
``q / 255`` as an IEEE division (``div_rn``, not Triton's approximate ``/``), uint8 rounding half-to-even by the
``1.5 * 2**23`` trick (exact for ``0 <= v <= 255``), float16 by the round-to-nearest-even cast, and bfloat16 by
explicit bit arithmetic (round-to-nearest-even, NaN kept a NaN) on an int16 view of the image.

On CPU tensors the same kernel runs under Triton's interpreter (numpy, one program at a time; slow, for tests and
debugging), without ``TRITON_INTERPRET`` having to be set before Triton is imported. The module imports without
Triton (``HAS_TRITON`` is then False and :func:`paste_patches_triton` raises).
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

__all__ = ["HAS_TRITON", "TILE", "paste_patches_triton"]

HAS_TRITON = triton is not None
TILE = (16, 64)  # (TH, TW) pixels of one program's tile
_MAX_GRID_Y = 65535  # CUDA limit of the second grid axis
_KIND = {torch.uint8: 0, torch.float16: 1, torch.float32: 1, torch.bfloat16: 2}
# Compile options of every launch: no FMA contraction (torch rounds a * q and (1 - a) * x separately).
_OPTIONS = {"enable_fp_fusion": False, "num_warps": 4}

if HAS_TRITON:

    @triton.jit
    def _paste_kernel(
        out_ptr,  # (B, C, H, W) image elements, any strides; bfloat16 images as an int16 view
        pixels_ptr,  # (P,) uint8 flat patch buffer
        offsets_ptr,  # (N,) int64 start of each patch in pixels
        sizes_ptr,  # (N, 2) int64 (h, w), contiguous
        boxes_ptr,  # (B*K, 4) int64 xyxy, contiguous (x1, y1 not read)
        patch_ids_ptr,  # (B*K,) int64
        active_ptr,  # (B*K,) uint8 (bool viewed as uint8)
        alpha_ptr,  # (B*K,) float32
        K,
        H,
        W,
        stride_b,
        stride_c,
        stride_h,
        stride_w,
        tiles_w,
        C: tl.constexpr,
        KIND: tl.constexpr,  # 0 uint8, 1 float16 / float32 (native cast), 2 bfloat16 (int16 bits)
        TH: tl.constexpr,
        TW: tl.constexpr,
    ):
        # Only triton.language builtins here, none of its @jit helpers (tl.zeros, tl.cdiv, ...): the CPU path runs
        # this function under InterpretedFunction without TRITON_INTERPRET, where those helpers cannot be called.
        slot = tl.program_id(0)  # b * K + k
        tile = tl.program_id(1)
        if tl.load(active_ptr + slot) == 0:
            return
        pid = tl.load(patch_ids_ptr + slot)
        h = tl.load(sizes_ptr + 2 * pid).to(tl.int32)
        w = tl.load(sizes_ptr + 2 * pid + 1).to(tl.int32)
        ty0 = (tile // tiles_w) * TH
        tx0 = (tile % tiles_w) * TW
        if (ty0 >= h) | (tx0 >= w):
            return
        # Clamped in int64 before the int32 cast (keeps out-of-image cells out of the image, no wrap-around).
        x0 = tl.minimum(tl.maximum(tl.load(boxes_ptr + 4 * slot), -w), W).to(tl.int32)
        y0 = tl.minimum(tl.maximum(tl.load(boxes_ptr + 4 * slot + 1), -h), H).to(tl.int32)
        src0 = tl.load(offsets_ptr + pid)  # int64
        a = tl.load(alpha_ptr + slot)  # float32
        b = slot // K

        dy = ty0 + tl.arange(0, TH)[:, None]  # (TH, 1) row in the patch
        dx = tx0 + tl.arange(0, TW)[None, :]  # (1, TW) column in the patch
        y = y0 + dy
        x = x0 + dx
        inside = (dy < h) & (dx < w) & (y >= 0) & (y < H) & (x >= 0) & (x < W)  # (TH, TW)
        q = tl.load(pixels_ptr + src0 + (dy * w + dx), mask=inside, other=0).to(tl.float32)
        if KIND != 0:
            q = tl.math.div_rn(q, tl.full(q.shape, 255.0, tl.float32))  # IEEE q / 255, as torch
        a = tl.full((TH, TW), 0.0, tl.float32) + a  # broadcast first (the interpreter cannot mix scalar & tensor)
        paste = a >= 1.0
        blend = inside & (a < 1.0)  # a paste does not read the background
        base = out_ptr + b.to(tl.int64) * stride_b + (y * stride_h + x * stride_w)  # (TH, TW) pointers
        for c in tl.static_range(C):
            ptr = base + c * stride_c
            if KIND == 2:
                xbits = tl.load(ptr, mask=blend, other=0).to(tl.int32)
                bg = (xbits << 16).to(tl.float32, bitcast=True)  # bfloat16 -> float32, exact
            else:
                bg = tl.load(ptr, mask=blend, other=0).to(tl.float32)
            mixed = a * q + (1.0 - a) * bg  # three rounded float32 ops (no FMA: enable_fp_fusion=False)
            v = tl.where(paste, q, mixed)
            if KIND == 0:
                v = tl.minimum(tl.maximum(v, 0.0), 255.0)
                v = (v + 12582912.0) - 12582912.0  # round half to even (1.5 * 2**23), exact on [0, 255]
                tl.store(ptr, v.to(tl.uint8), mask=inside)
            elif KIND == 1:
                tl.store(ptr, v.to(ptr.dtype.element_ty), mask=inside)  # round-to-nearest-even cast
            else:
                vbits = v.to(tl.uint32, bitcast=True)
                rounded = (vbits + 0x7FFF + ((vbits >> 16) & 1)) >> 16  # float32 -> bfloat16, nearest even
                rounded = tl.where(v != v, 0x7FC0, rounded)  # NaN stays a (quiet) NaN
                tl.store(ptr, rounded.to(tl.uint16).to(tl.int16, bitcast=True), mask=inside)

    _interpreted_kernel = None

    def _kernel_for(device: torch.device):
        """The compiled kernel for CUDA tensors, the same kernel under Triton's interpreter for CPU tensors."""
        global _interpreted_kernel
        if device.type != "cpu":
            return _paste_kernel
        if _interpreted_kernel is None:
            from triton.runtime.interpreter import InterpretedFunction

            fn = _paste_kernel.fn if hasattr(_paste_kernel, "fn") else _paste_kernel
            _interpreted_kernel = fn if isinstance(fn, InterpretedFunction) else InterpretedFunction(fn)
        return _interpreted_kernel


def paste_patches_triton(
    images: torch.Tensor,
    pixels: torch.Tensor,
    offsets: torch.Tensor,
    sizes: torch.Tensor,
    boxes: torch.Tensor,
    patch_ids: torch.Tensor,
    active: torch.Tensor,
    alpha: torch.Tensor,
    *,
    max_size: tuple[int, int],
) -> torch.Tensor:
    """Paste / blend bank patches into images with one Triton launch after a clone (no host sync).

    Same contract and bit-identical values as :func:`dadam.ops.paste_patches` (which validates the arguments and
    calls this for ``path="triton"``). Every patch must fit in ``max_size``; tiles beyond it are not launched.

    Args:
        images: ``(B, C, H, W)`` uint8, float16, bfloat16 or float32; any strides (contiguous, channels_last, ...).
        pixels: ``(P,)`` uint8 flat patch buffer; offsets ``(N,)`` long; sizes ``(N, 2)`` long ``(h, w)``.
        boxes: ``(B, K, 4)`` long xyxy (``x0, y0`` read); patch_ids ``(B, K)`` long; active ``(B, K)`` bool;
            alpha ``(B, K)`` float.
        max_size: ``(max_h, max_w)`` of the bank's patches.

    Returns:
        a new tensor like ``images`` (``clone(memory_format=torch.preserve_format)``) with the patches written.

    Shape:
        images ``(B, C, H, W)``, boxes ``(B, K, 4)``, patch_ids / active / alpha ``(B, K)`` -> ``(B, C, H, W)``.

    Example:
        >>> out = paste_patches_triton(images, bank.pixels, bank.offsets, bank.sizes, params.boxes,  # doctest: +SKIP
        ...                            params.patch_ids, params.active, params.alpha, max_size=bank.max_size)
    """
    if not HAS_TRITON:
        raise RuntimeError("paste_patches_triton needs the 'triton' package; use path='vectorised' without it")
    if images.dtype not in _KIND:
        raise ValueError(f"images dtype must be one of {tuple(_KIND)}, got {images.dtype}")
    named = {"pixels": pixels, "offsets": offsets, "sizes": sizes, "boxes": boxes}
    for name, t in {**named, "patch_ids": patch_ids, "active": active, "alpha": alpha}.items():
        if t.device != images.device:
            raise ValueError(f"{name} is on {t.device} but images are on {images.device}")
    if images.device.type not in ("cuda", "cpu"):
        raise ValueError(f"paste_patches_triton runs on CUDA (or CPU, interpreted), got device {images.device}")
    out = images.clone(memory_format=torch.preserve_format)
    B, K = out.shape[0], patch_ids.shape[1]
    mh, mw = (int(v) for v in max_size)
    if out.numel() == 0 or K == 0 or mh <= 0 or mw <= 0:
        return out
    th, tw = TILE
    tiles_w = triton.cdiv(mw, tw)
    tiles = triton.cdiv(mh, th) * tiles_w
    if tiles > _MAX_GRID_Y:
        raise ValueError(f"max_size={max_size} needs {tiles} tiles of {TILE}, more than the grid limit {_MAX_GRID_Y}")
    target = out.view(torch.int16) if out.dtype == torch.bfloat16 else out  # bfloat16 handled as its bits
    grid = (B * K, tiles)
    with torch.cuda.device(out.device) if out.is_cuda else contextlib.nullcontext():  # launch on the images' GPU
        _launch(_kernel_for(out.device), grid, target, pixels, offsets, sizes, boxes, patch_ids, active, alpha, tiles_w)
    return out


def _launch(kernel, grid, target, pixels, offsets, sizes, boxes, patch_ids, active, alpha, tiles_w):
    _, C, H, W = target.shape
    th, tw = TILE
    kernel[grid](
        target,
        pixels.contiguous(),
        offsets.to(torch.int64).contiguous(),
        sizes.to(torch.int64).contiguous(),
        boxes.to(torch.int64).contiguous(),
        patch_ids.to(torch.int64).contiguous(),
        active.to(torch.bool).contiguous().view(torch.uint8),
        alpha.to(torch.float32).contiguous(),
        patch_ids.shape[1],
        H,
        W,
        *target.stride(),
        tiles_w,
        C=C,
        KIND=2 if target.dtype == torch.int16 else _KIND[target.dtype],
        TH=th,
        TW=tw,
        **_OPTIONS,
    )
