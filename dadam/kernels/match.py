"""Triton kernel of :func:`dadam.ops.match_intensity`: each slot's statistics and intensity map, no host sync.

Why a kernel: the statistics are sums over ragged boxes, one per slot, each at its own place in its own image; torch
would pad every box to the bank's largest patch (:mod:`dadam.paste.vectorised`) or loop over the slots on the host.
Here ``SPLIT`` programs per slot (grid ``(B * K, SPLIT)``) walk every ``SPLIT``-th tile of ``BLOCK`` pixels of the
slot's box clipped to the image and accumulate the integer sums of :mod:`dadam.paste.values` (the recipient's channel
0 on the bank's 0..255 scale, and the patch's pixels); each adds its sums into the slot's with integer atomics (exact
in any order) and counts itself done, and the slot's last program computes ``(gain, offset)`` with the float32
operations of :func:`dadam.paste.values.intensity_map`, in the same order: integer-to-float conversions round to
nearest, the divisions are IEEE (``div_rn``), the square root too (``sqrt_rn``), and the launch disables FMA
contraction. The sums are exact integers, so their order does not matter: the map is bit-identical to the torch
paths'. Two launches: the zeroed sums (a fill) and the kernel.

Checks (the ``ok`` word of :mod:`dadam.kernels.runtime`): with ``check_values`` a float pixel it reads outside
``[0, 1]`` (or NaN) stores 0 into ``ok``.
"""

from __future__ import annotations

import torch

from dadam.kernels.runtime import (
    HAS_TRITON,
    IMAGE_KINDS,
    INT32,
    NUM_WARPS,
    bank_arguments,
    launch,
    slot_arguments,
    tl,
    triton,
)
from dadam.paste.values import MATCH_GAIN_RANGE

__all__ = ["HAS_TRITON", "match_intensity_triton"]

BLOCK, BW = 1024, 64  # pixels per tile, columns per tile row (16 rows)
SPLIT = 8  # programs per slot: a large box is walked by several programs at once

if HAS_TRITON:

    @triton.jit
    def _add(a, b):
        return a + b

    # tl.sum is itself a @triton.jit helper, which a kernel run by dadam.kernels.runtime.kernel_for on CPU tensors
    # cannot call; tl.reduce is a builtin there, and Triton's own sum combiner runs as one NumPy sum (the same
    # reduction as tl.sum when compiled).
    _SUM = getattr(getattr(tl, "standard", None), "_sum_combine", _add)

    @triton.jit
    def _match_kernel(
        img_ptr,  # (B, C, H, W) image elements, any strides (channel 0 read); bfloat16 as an int16 view
        pixels_ptr,  # (P,) uint8 flat patch buffer
        offsets_ptr,  # (N,) int64
        sizes_ptr,  # (N, 2) int64 (h, w), contiguous
        boxes_ptr,  # (B*K, 4) int64 xyxy, contiguous (x0, y0 read)
        patch_ids_ptr,  # (B*K,) int64
        active_ptr,  # (B*K,) uint8
        gain_ptr,  # (B*K,) float32 out
        offset_ptr,  # (B*K,) float32 out
        sums_ptr,  # (B*K, 5) int64, zeros: Sx, Sxx, Sq, Sqq and the count of parts done, per slot
        ok_ptr,  # (1,) int32: 0 stored on a bad float value (read with CHECK only)
        K,  # slots per image
        H,
        W,
        s_b,
        s_h,
        s_w,
        KIND: tl.constexpr,  # 0 uint8, 1 float16 / float32, 2 bfloat16 (int16 bits)
        CHECK: tl.constexpr,
        MEANSTD: tl.constexpr,  # match="meanstd" (else "mean")
        GAIN_LO: tl.constexpr,
        GAIN_HI: tl.constexpr,
        BLOCK: tl.constexpr,
        BW: tl.constexpr,
        SPLIT: tl.constexpr,  # programs per slot
    ):
        slot = tl.program_id(0)
        part = tl.program_id(1)  # this program takes the tiles part, part + SPLIT, ... of the slot's box
        pid = tl.load(patch_ids_ptr + slot)
        h = tl.load(sizes_ptr + 2 * pid).to(tl.int32)
        w = tl.load(sizes_ptr + 2 * pid + 1).to(tl.int32)
        x0 = tl.minimum(tl.maximum(tl.load(boxes_ptr + 4 * slot), -w), W).to(tl.int32)
        y0 = tl.minimum(tl.maximum(tl.load(boxes_ptr + 4 * slot + 1), -h), H).to(tl.int32)
        on = tl.load(active_ptr + slot) != 0
        ys = tl.maximum(y0, 0)  # the box clipped to the image: rows [ys, ye), columns [xs, xe)
        ye = tl.minimum(y0 + h, H)
        xs = tl.maximum(x0, 0)
        xe = tl.minimum(x0 + w, W)
        rows = tl.where(on, tl.maximum(ye - ys, 0), 0)
        cols = tl.maximum(xe - xs, 0)
        n_bw = (cols + BW - 1) // BW
        n_tiles = ((rows + (BLOCK // BW) - 1) // (BLOCK // BW)) * n_bw
        i = tl.arange(0, BLOCK)
        ti = i // BW  # (BLOCK,) row in the tile
        tj = i % BW  # column in the tile
        src0 = tl.load(offsets_ptr + pid)  # int64
        base = img_ptr + (slot // K).to(tl.int64) * s_b  # image b = slot // K, channel 0
        acc_x = tl.full((BLOCK,), 0, tl.int32)  # per-lane sums (int32: the wrapper bounds the tiles per box)
        acc_xx = tl.full((BLOCK,), 0, tl.int32)
        acc_q = tl.full((BLOCK,), 0, tl.int32)
        acc_qq = tl.full((BLOCK,), 0, tl.int32)
        for t in range(part, n_tiles, SPLIT):
            y = ys + (t // n_bw) * (BLOCK // BW) + ti
            x = xs + (t % n_bw) * BW + tj
            m = (y < ye) & (x < xe)
            xv = tl.load(base + (y * s_h + x * s_w), mask=m, other=0)
            if KIND == 0:
                v = xv.to(tl.int32)
            else:
                if KIND == 2:
                    f = (xv.to(tl.int32) << 16).to(tl.float32, bitcast=True)  # bfloat16 -> float32, exact
                else:
                    f = xv.to(tl.float32)
                if CHECK:
                    tl.store(ok_ptr + i * 0, 0, mask=m & ~((f >= 0.0) & (f <= 1.0)))  # NaN fails too
                f = tl.minimum(tl.maximum(f * 255.0, 0.0), 255.0)  # round_to_uint8(255 * x)
                f = (f + 12582912.0) - 12582912.0  # round half to even (1.5 * 2**23), exact on [0, 255]
                v = tl.where(m, f.to(tl.int32), 0)
            q = tl.load(pixels_ptr + src0 + ((y - y0) * w + (x - x0)), mask=m, other=0).to(tl.int32)
            acc_x += v
            acc_q += q
            if MEANSTD:
                acc_xx += v * v
                acc_qq += q * q
        # this part's sums into the slot's (integer atomics: exact whatever the order), then count the part done;
        # the last part of the slot (every other part's sums are in: acquire/release atomics) computes the map
        tl.atomic_add(sums_ptr + 5 * slot, tl.reduce(acc_x.to(tl.int64), 0, _SUM))
        tl.atomic_add(sums_ptr + 5 * slot + 2, tl.reduce(acc_q.to(tl.int64), 0, _SUM))
        if MEANSTD:
            tl.atomic_add(sums_ptr + 5 * slot + 1, tl.reduce(acc_xx.to(tl.int64), 0, _SUM))
            tl.atomic_add(sums_ptr + 5 * slot + 3, tl.reduce(acc_qq.to(tl.int64), 0, _SUM))
        done = tl.atomic_add(sums_ptr + 5 * slot + 4, 1)
        if done != SPLIT - 1:
            return
        n = rows.to(tl.int64) * cols.to(tl.int64)
        sx = tl.atomic_add(sums_ptr + 5 * slot, 0)  # read through L2, after the acquire above
        sq = tl.atomic_add(sums_ptr + 5 * slot + 2, 0)
        # dadam.paste.values.intensity_map, operation for operation (float32, each operation rounded once)
        nf = tl.maximum(n, 1).to(tl.float32)
        mx = tl.math.div_rn(sx.to(tl.float32), nf)
        mq = tl.math.div_rn(sq.to(tl.float32), nf)
        if MEANSTD:
            sxx = tl.atomic_add(sums_ptr + 5 * slot + 1, 0)
            sqq = tl.atomic_add(sums_ptr + 5 * slot + 3, 0)
            vx = n * sxx - sx * sx  # exact int64: n^2 times the variances
            vq = n * sqq - sq * sq
            ratio = tl.math.div_rn(vx.to(tl.float32), tl.maximum(vq, 1).to(tl.float32))
            g = tl.minimum(tl.maximum(tl.math.sqrt_rn(ratio), GAIN_LO), GAIN_HI)
            g = tl.where(vq > 0, g, 1.0)
            o = mx - g * mq
        else:
            g = mx * 0.0 + 1.0
            o = mx - mq
        tl.store(gain_ptr + slot, tl.where(n > 0, g, 1.0))
        tl.store(offset_ptr + slot, tl.where(n > 0, o, 0.0))


def match_intensity_triton(
    images: torch.Tensor,
    pixels: torch.Tensor,
    offsets: torch.Tensor,
    sizes: torch.Tensor,
    boxes: torch.Tensor,
    patch_ids: torch.Tensor,
    active: torch.Tensor,
    *,
    mode: str,
    ok: torch.Tensor | None = None,
    check_values: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The intensity map of every slot with one Triton launch (no host sync).

    Same contract and bit-identical values as :func:`dadam.ops.match_intensity` (which validates the arguments and
    calls this for the Triton path); on CPU tensors the kernel runs under Triton's interpreter (slow: tests).

    Args:
        images: ``(B, C, H, W)`` uint8, float16, bfloat16 or float32; any strides.
        pixels, offsets, sizes, boxes, patch_ids, active: as for :func:`dadam.ops.paste_patches`.
        mode: ``"mean"`` or ``"meanstd"``.
        ok: the caller's ``(1,)`` int32 ``ok`` word, needed with ``check_values``.
        check_values: store 0 into ``ok`` for a float pixel read outside ``[0, 1]``.

    Returns:
        ``(gain, offset)``, ``(B, K)`` float32 each.

    Shape:
        images ``(B, C, H, W)``, boxes ``(B, K, 4)``, patch_ids / active ``(B, K)`` -> ``(B, K)``, ``(B, K)``.

    Example:
        >>> gain, offset = match_intensity_triton(images, bank.pixels, bank.offsets, bank.sizes,  # doctest: +SKIP
        ...                                       params.boxes, params.patch_ids, params.active, mode="meanstd")
    """
    if not HAS_TRITON:
        raise RuntimeError("match_intensity_triton needs the 'triton' package; use path='vectorised' without it")
    if mode not in ("mean", "meanstd"):
        raise ValueError(f"mode must be 'mean' or 'meanstd', got {mode!r}")
    if images.dtype not in IMAGE_KINDS:
        raise ValueError(f"images dtype must be one of {tuple(IMAGE_KINDS)}, got {images.dtype}")
    if check_values and ok is None:
        raise ValueError("check_values=True needs the caller's ok word (ok=new_ok_flag(device)), got ok=None")
    B, _, H, W = images.shape
    K = patch_ids.shape[1]
    gain = torch.empty(B, K, dtype=torch.float32, device=images.device)
    sums = torch.zeros(B * K, 5, dtype=torch.int64, device=images.device)  # the parts' sums (one fill launch)
    offset = torch.empty(B, K, dtype=torch.float32, device=images.device)
    if B * K == 0:
        return gain, offset
    if images.numel() == 0:  # no pixel under any box
        return gain.fill_(1.0), offset.fill_(0.0)
    reach = sum((n - 1) * abs(s) for n, s in zip(images.shape[1:], images.stride()[1:], strict=True))
    if reach >= INT32 or B * K >= INT32:
        raise ValueError(f"{B} images of {reach + 1} elements and {K} slots are more than the kernel's int32 allows")
    if -(-H // (BLOCK // BW)) * -(-W // BW) * 255 * 255 >= INT32:  # a lane's int32 sum of squares could overflow
        raise ValueError(f"images of {H}x{W} are too large for match's statistics (at most about 5800x5800)")
    src = images.view(torch.int16) if images.dtype == torch.bfloat16 else images
    args = (
        src,
        *bank_arguments(pixels, offsets, sizes),
        *slot_arguments(boxes, patch_ids, active),
        gain,
        offset,
        sums,
        ok if ok is not None else gain,  # not read without CHECK
        K,
        H,
        W,
        src.stride(0),
        src.stride(2),
        src.stride(3),
    )
    constexprs = {
        "KIND": IMAGE_KINDS[images.dtype],
        "CHECK": bool(check_values) and images.dtype != torch.uint8,
        "MEANSTD": mode == "meanstd",
        "GAIN_LO": MATCH_GAIN_RANGE[0],
        "GAIN_HI": MATCH_GAIN_RANGE[1],
        "BLOCK": BLOCK,
        "BW": BW,
        "SPLIT": SPLIT,
        "num_warps": NUM_WARPS,
        "enable_fp_fusion": False,  # torch rounds g * mq and mx - g * mq separately
    }
    launch(_match_kernel, (B * K, SPLIT), args, constexprs, images.device)
    return gain, offset
