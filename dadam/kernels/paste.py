"""Triton GPU kernels of :func:`dadam.ops.paste_patches`: one launch writes a whole batch, out of place or in place.

Why hand-written kernels: no library pastes a ragged set of variable-size patches, each at its own offset in its
own image, with a per-patch weight, in one launch. kornia's CutMix loops over samples on the host;
``torchvision.transforms.v2.CutMix`` swaps one rectangle of another image of the batch; the pure-torch
``"vectorised"`` path of :func:`dadam.ops.paste_patches` pads every patch to the bank's largest one and moves int32
indices, masks and float32 temporaries of that grid, tens of bytes per cell and channel.

Two kernels, both sized by the work (never by the bank's largest patch):

- **copy + paste** (out of place, ``_copy_paste_kernel``): one program per tile of ``TH`` rows x ``TE`` memory-row
  elements of one image (grid ``B * tiles``); it tests the sample's ``K`` slots against its tile (a few scalars each:
  slot boxes never overlap, so a pixel has at most one patch), then writes every output element of the tile once:
  a copy of the input, the patch value or the blend. Memory traffic is that of ``images.clone()`` plus the patch's
  uint8 pixels; the output is ``torch.empty_like`` (no clone launch).
- **paste in place** (``_paste_in_place_kernel``): ``SPLIT`` programs per slot (grid ``(B * K, SPLIT)``), each
  walking every ``SPLIT``-th tile of its clipped patch; it writes only the patch pixels into the input and reads the
  background only for a blend.

Layouts: "planar" (any strides; a tile row is one channel's pixels and the program loops over the channels) and
"packed" (channels_last: a tile row is ``TE`` consecutive elements of an image row, ``C`` per pixel, so loads and
stores are contiguous). Image offsets inside one image are int32, the image base int64 (batches past 2**31 elements).

Checks (the ``ok`` word of :mod:`dadam.kernels.runtime`): both kernels store 0 into ``ok`` where two active patches
of a sample cover the same image pixel; with ``check_values`` they also do where a float pixel they read is outside
``[0, 1]`` (or NaN). Out of place every pixel is read, so the value check is complete; in place only the background
under blended patches and feather ramps is read, so only those pixels are checked.

Values are bit-identical to the rule of :mod:`dadam.paste.values`: with ``MAP`` the patch value is first
``min(max(g * q + o, 0), 255)``; with ``FEATHER = F`` the weight is ``alpha * min(1, (d + 0.5) / F)`` (``div_rn``;
``d`` the pixel's distance to the nearest box edge), and a paste then reads the background under its ramp; then
float32 ``w * q + (1 - w) * x`` evaluated as three separately rounded operations (launched with
``enable_fp_fusion=False``: no FMA contraction), ``q / 255`` as an IEEE division (``div_rn``, not Triton's
approximate ``/``), uint8 rounding half-to-even by the ``1.5 * 2**23`` trick (exact for ``0 <= v <= 255``), float16
by the round-to-nearest-even cast, and bfloat16 by explicit bit arithmetic (round-to-nearest-even, NaN kept a NaN) on
an int16 view of the image. Pixels without a patch are copied bit for bit.
"""

from __future__ import annotations

import torch

from dadam.kernels.runtime import (
    HAS_TRITON,
    IMAGE_KINDS,
    INT32,
    NUM_WARPS,
    assert_ok,
    bank_arguments,
    launch,
    new_ok_flag,
    slot_arguments,
    tl,
    triton,
)
from dadam.ops import OVERLAP_MESSAGE

__all__ = ["HAS_TRITON", "SPLIT", "TILE", "paste_patches_triton"]

# (TH rows, TE memory-row elements) of one program's tile, by element size in bytes: 16 elements per thread at
# 4 warps (ptxas for sm_90: 80-150 registers, no spills; larger tiles spill).
TILE = {1: (8, 256), 2: (8, 256), 4: (8, 128)}
SPLIT = 4  # programs per slot of the in-place kernel

if HAS_TRITON:

    @triton.jit
    def _copy_paste_kernel(
        src_ptr,  # (B, C, H, W) input elements, any strides; bfloat16 images as an int16 view
        dst_ptr,  # (B, C, H, W) output elements (its own strides)
        pixels_ptr,  # (P,) uint8 flat patch buffer
        offsets_ptr,  # (N,) int64 start of each patch in pixels
        sizes_ptr,  # (N, 2) int64 (h, w), contiguous
        boxes_ptr,  # (B*K, 4) int64 xyxy, contiguous (x1, y1 not read)
        patch_ids_ptr,  # (B*K,) int64
        active_ptr,  # (B*K,) uint8 (bool viewed as uint8)
        alpha_ptr,  # (B*K,) float32
        gain_ptr,  # (B*K,) float32 intensity map (read with MAP only)
        offset_ptr,  # (B*K,) float32
        ok_ptr,  # (1,) int32: 0 stored on overlapping patches / bad values
        H,
        W,
        tiles,  # tiles per image
        tiles_e,  # tiles per memory row
        s_b,
        s_c,
        s_h,
        s_w,
        d_b,
        d_c,
        d_h,
        d_w,
        K: tl.constexpr,
        CP: tl.constexpr,  # elements per pixel in a memory row: C when packed (channels_last), else 1
        PLANES: tl.constexpr,  # channel planes walked by the program: 1 when packed, else C
        KIND: tl.constexpr,  # 0 uint8, 1 float16 / float32 (native cast), 2 bfloat16 (int16 bits)
        CHECK: tl.constexpr,  # check float values in [0, 1]
        MAP: tl.constexpr,  # apply the intensity map (gain, offset)
        FEATHER: tl.constexpr,  # feather ramp width in pixels, 0: none
        TH: tl.constexpr,
        TE: tl.constexpr,
    ):
        # Only triton.language builtins (see dadam.kernels.runtime.kernel_for): the CPU path interprets this source.
        prog = tl.program_id(0)
        b = prog // tiles
        tile = prog % tiles
        ty0 = (tile // tiles_e) * TH
        te0 = (tile % tiles_e) * TE
        y = ty0 + tl.arange(0, TH)[:, None]  # (TH, 1) image row
        e = te0 + tl.arange(0, TE)[None, :]  # (1, TE) element of the memory row
        x = e // CP  # (1, TE) pixel column
        inside = (y < H) & (e < W * CP)  # (TH, TE)
        px_lo = te0 // CP
        px_hi = (te0 + TE - 1) // CP
        q = tl.full((TH, TE), 0.0, tl.float32)  # patch value where a patch covers the element
        a = tl.full((TH, TE), 0.0, tl.float32)  # its weight
        hits = tl.full((TH, TE), 0, tl.int32)  # patches covering the element
        meeting = prog * 0  # slots whose patch meets this tile
        for k in tl.static_range(K):
            slot = b * K + k
            pid = tl.load(patch_ids_ptr + slot)
            h = tl.load(sizes_ptr + 2 * pid).to(tl.int32)
            w = tl.load(sizes_ptr + 2 * pid + 1).to(tl.int32)
            # Clamped in int64 before the int32 cast (keeps out-of-image cells out of the image, no wrap-around).
            x0 = tl.minimum(tl.maximum(tl.load(boxes_ptr + 4 * slot), -w), W).to(tl.int32)
            y0 = tl.minimum(tl.maximum(tl.load(boxes_ptr + 4 * slot + 1), -h), H).to(tl.int32)
            on = tl.load(active_ptr + slot) != 0
            meets = on & (y0 < ty0 + TH) & (y0 + h > ty0) & (x0 <= px_hi) & (x0 + w > px_lo)
            meeting += meets.to(tl.int32)
            if meets:
                dy = y - y0
                dx = x - x0
                m = inside & (dy >= 0) & (dy < h) & (dx >= 0) & (dx < w)  # (TH, TE)
                src0 = tl.load(offsets_ptr + pid)  # int64
                qk = tl.load(pixels_ptr + src0 + (dy * w + dx), mask=m, other=0).to(tl.float32)
                if MAP:  # min(max(g * q + o, 0), 255): two rounded ops (no FMA), then the clamp
                    qk = tl.minimum(tl.maximum(qk * tl.load(gain_ptr + slot) + tl.load(offset_ptr + slot), 0.0), 255.0)
                ak = tl.full((TH, TE), 0.0, tl.float32) + tl.load(alpha_ptr + slot)  # broadcast first (interpreter)
                if FEATHER > 0:  # a * min(1, (d + 0.5) / F), d the distance to the nearest box edge
                    # the ramp is monotonic, so ramp(min(d_row, d_col)) = min(ramp(d_row), ramp(d_col)) exactly:
                    # TH + TE divisions per tile instead of TH * TE
                    d_row = tl.minimum(dy, h - 1 - dy).to(tl.float32) + 0.5  # (TH, 1)
                    d_col = tl.minimum(dx, w - 1 - dx).to(tl.float32) + 0.5  # (1, TE)
                    ramp_row = tl.math.div_rn(d_row, tl.full((TH, 1), FEATHER, tl.float32))
                    ramp_col = tl.math.div_rn(d_col, tl.full((1, TE), FEATHER, tl.float32))
                    ak = ak * tl.minimum(tl.minimum(ramp_row, ramp_col), 1.0)
                q = tl.where(m, qk, q)
                a = tl.where(m, ak, a)
                hits += m.to(tl.int32)
        ok_ptrs = ok_ptr + hits * 0  # (TH, TE) pointers to the one ok word
        if meeting > 1:
            tl.store(ok_ptrs, 0, mask=hits > 1)  # overlapping patches
        covered = hits > 0
        if KIND != 0:
            q = tl.math.div_rn(q, tl.full((TH, TE), 255.0, tl.float32))  # IEEE q / 255, as torch
        paste = a >= 1.0
        one_minus_a = 1.0 - a
        base_src = src_ptr + b.to(tl.int64) * s_b
        base_dst = dst_ptr + b.to(tl.int64) * d_b
        for c in tl.static_range(PLANES):
            if CP > 1:  # packed: the elements of a row are consecutive (s_w == C, s_c == 1)
                src = base_src + (y * s_h + e)
                dst = base_dst + (y * d_h + e)
            else:
                src = base_src + (c * s_c + y * s_h + x * s_w)
                dst = base_dst + (c * d_c + y * d_h + x * d_w)
            xv = tl.load(src, mask=inside, other=0)  # (TH, TE) native elements
            if KIND == 2:
                bg = (xv.to(tl.int32) << 16).to(tl.float32, bitcast=True)  # bfloat16 -> float32, exact
            else:
                bg = xv.to(tl.float32)
            if CHECK:
                if KIND != 0:
                    tl.store(ok_ptrs, 0, mask=inside & ~((bg >= 0.0) & (bg <= 1.0)))  # NaN fails too
            res = xv  # a tile without a patch is a copy
            if meeting > 0:
                mixed = a * q + one_minus_a * bg  # three rounded float32 ops (no FMA: enable_fp_fusion=False)
                v = tl.where(paste, q, mixed)
                if KIND == 0:
                    v = tl.minimum(tl.maximum(v, 0.0), 255.0)
                    v = (v + 12582912.0) - 12582912.0  # round half to even (1.5 * 2**23), exact on [0, 255]
                    new = v.to(tl.uint8)
                elif KIND == 1:
                    new = v.to(dst.dtype.element_ty)  # round-to-nearest-even cast
                else:
                    vbits = v.to(tl.uint32, bitcast=True)
                    rounded = (vbits + 0x7FFF + ((vbits >> 16) & 1)) >> 16  # float32 -> bfloat16, nearest even
                    rounded = tl.where(v != v, 0x7FC0, rounded)  # NaN stays a (quiet) NaN
                    new = rounded.to(tl.uint16).to(tl.int16, bitcast=True)
                res = tl.where(covered, new, xv)
            tl.store(dst, res, mask=inside)

    @triton.jit
    def _paste_in_place_kernel(
        img_ptr,  # (B, C, H, W) image elements, any strides; bfloat16 images as an int16 view
        pixels_ptr,
        offsets_ptr,
        sizes_ptr,
        boxes_ptr,
        patch_ids_ptr,
        active_ptr,
        alpha_ptr,
        gain_ptr,
        offset_ptr,
        ok_ptr,
        H,
        W,
        s_b,
        s_c,
        s_h,
        s_w,
        K: tl.constexpr,
        CP: tl.constexpr,
        PLANES: tl.constexpr,
        KIND: tl.constexpr,
        CHECK: tl.constexpr,
        MAP: tl.constexpr,
        FEATHER: tl.constexpr,
        TH: tl.constexpr,
        TE: tl.constexpr,
        SPLIT: tl.constexpr,
    ):
        slot = tl.program_id(0)  # b * K + k
        part = tl.program_id(1)  # this program takes tiles part, part + SPLIT, ...
        if tl.load(active_ptr + slot) == 0:
            return
        b = slot // K
        pid = tl.load(patch_ids_ptr + slot)
        h = tl.load(sizes_ptr + 2 * pid).to(tl.int32)
        w = tl.load(sizes_ptr + 2 * pid + 1).to(tl.int32)
        x0 = tl.minimum(tl.maximum(tl.load(boxes_ptr + 4 * slot), -w), W).to(tl.int32)
        y0 = tl.minimum(tl.maximum(tl.load(boxes_ptr + 4 * slot + 1), -h), H).to(tl.int32)
        ys = tl.maximum(y0, 0)  # the patch clipped to the image: rows [ys, ye), pixels [xs, xe)
        ye = tl.minimum(y0 + h, H)
        xs = tl.maximum(x0, 0)
        xe = tl.minimum(x0 + w, W)
        if part == 0:  # the other active slots of the sample must not meet this one inside the image
            for j in tl.static_range(K):
                other = b * K + j
                hj = tl.load(sizes_ptr + 2 * tl.load(patch_ids_ptr + other)).to(tl.int32)
                wj = tl.load(sizes_ptr + 2 * tl.load(patch_ids_ptr + other) + 1).to(tl.int32)
                xj = tl.minimum(tl.maximum(tl.load(boxes_ptr + 4 * other), -wj), W).to(tl.int32)
                yj = tl.minimum(tl.maximum(tl.load(boxes_ptr + 4 * other + 1), -hj), H).to(tl.int32)
                meet_x = (tl.maximum(xs, xj) < tl.minimum(xe, xj + wj)) & (xs < xe)
                meet_y = (tl.maximum(ys, yj) < tl.minimum(ye, yj + hj)) & (ys < ye)
                clash = (other != slot) & (tl.load(active_ptr + other) != 0) & meet_x & meet_y
                tl.store(ok_ptr, 0, mask=clash)
        es = xs * CP  # memory-row elements [es, ee)
        ee = xe * CP
        rows = tl.maximum(ye - ys, 0)
        cols = tl.maximum(ee - es, 0)
        n_te = (cols + TE - 1) // TE
        n_tiles = ((rows + TH - 1) // TH) * n_te
        src0 = tl.load(offsets_ptr + pid)  # int64
        a_slot = tl.full((TH, TE), 0.0, tl.float32) + tl.load(alpha_ptr + slot)  # broadcast first (interpreter)
        if MAP:
            g = tl.load(gain_ptr + slot)
            o = tl.load(offset_ptr + slot)
        base = img_ptr + b.to(tl.int64) * s_b
        for t in range(part, n_tiles, SPLIT):
            y = ys + (t // n_te) * TH + tl.arange(0, TH)[:, None]  # (TH, 1)
            e = es + (t % n_te) * TE + tl.arange(0, TE)[None, :]  # (1, TE)
            x = e // CP
            m = (y < ye) & (e < ee)  # (TH, TE)
            q = tl.load(pixels_ptr + src0 + ((y - y0) * w + (x - x0)), mask=m, other=0).to(tl.float32)
            if MAP:
                q = tl.minimum(tl.maximum(q * g + o, 0.0), 255.0)
            if KIND != 0:
                q = tl.math.div_rn(q, tl.full((TH, TE), 255.0, tl.float32))
            a = a_slot
            if FEATHER > 0:  # as in _copy_paste_kernel: the row's and the column's ramp, then their minimum
                dy = y - y0  # (TH, 1)
                dx = x - x0  # (1, TE)
                ramp_row = tl.math.div_rn(
                    tl.minimum(dy, h - 1 - dy).to(tl.float32) + 0.5, tl.full((TH, 1), FEATHER, tl.float32)
                )
                ramp_col = tl.math.div_rn(
                    tl.minimum(dx, w - 1 - dx).to(tl.float32) + 0.5, tl.full((1, TE), FEATHER, tl.float32)
                )
                a = a * tl.minimum(tl.minimum(ramp_row, ramp_col), 1.0)
            paste = a >= 1.0
            one_minus_a = 1.0 - a
            blend = m & (a < 1.0)  # a paste (full weight) does not read the background
            for c in tl.static_range(PLANES):
                if CP > 1:
                    ptr = base + (y * s_h + e)
                else:
                    ptr = base + (c * s_c + y * s_h + x * s_w)
                if KIND == 2:
                    bg = (tl.load(ptr, mask=blend, other=0).to(tl.int32) << 16).to(tl.float32, bitcast=True)
                else:
                    bg = tl.load(ptr, mask=blend, other=0).to(tl.float32)
                if CHECK:
                    if KIND != 0:
                        tl.store(ok_ptr + (y * 0 + e * 0), 0, mask=blend & ~((bg >= 0.0) & (bg <= 1.0)))
                mixed = a * q + one_minus_a * bg
                v = tl.where(paste, q, mixed)
                if KIND == 0:
                    v = tl.minimum(tl.maximum(v, 0.0), 255.0)
                    v = (v + 12582912.0) - 12582912.0
                    tl.store(ptr, v.to(tl.uint8), mask=m)
                elif KIND == 1:
                    tl.store(ptr, v.to(ptr.dtype.element_ty), mask=m)
                else:
                    vbits = v.to(tl.uint32, bitcast=True)
                    rounded = (vbits + 0x7FFF + ((vbits >> 16) & 1)) >> 16
                    rounded = tl.where(v != v, 0x7FC0, rounded)
                    tl.store(ptr, rounded.to(tl.uint16).to(tl.int16, bitcast=True), mask=m)


def _layout(images: torch.Tensor) -> tuple[int, int]:
    """``(CP, PLANES)``: ``(C, 1)`` for a packed channels_last image (``s_w == C, s_c == 1``), else ``(1, C)``."""
    _, C, _, _ = images.shape
    s_c, s_w = images.stride(1), images.stride(3)
    packed = C > 1 and not images.is_contiguous() and s_c == 1 and s_w == C
    return (C, 1) if packed else (1, C)


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
    max_size: tuple[int, int] | None = None,
    inplace: bool = False,
    ok: torch.Tensor | None = None,
    check_values: bool = False,
    gain: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    feather: int = 0,
) -> torch.Tensor:
    """Paste / blend bank patches into images with one Triton launch (no host sync).

    Same contract and bit-identical values as :func:`dadam.ops.paste_patches` (which validates the arguments and
    calls this for the Triton path).

    Args:
        images: ``(B, C, H, W)`` uint8, float16, bfloat16 or float32; any strides (contiguous, channels_last, ...).
        pixels: ``(P,)`` uint8 flat patch buffer; offsets ``(N,)`` long; sizes ``(N, 2)`` long ``(h, w)``.
        boxes: ``(B, K, 4)`` long xyxy (``x0, y0`` read); patch_ids ``(B, K)`` long; active ``(B, K)`` bool;
            alpha ``(B, K)`` float.
        max_size: ``(max_h, max_w)`` of the bank's patches; accepted for compatibility, not used (the grids are
            sized by the image and by the slots).
        inplace: write the patch pixels into ``images`` and return it (the same tensor, modified); else a new tensor
            like ``images`` (``torch.empty_like(images, memory_format=torch.preserve_format)``).
        ok: the caller's ``(1,)`` int32 ``ok`` word (:func:`dadam.kernels.runtime.new_ok_flag`): the kernel stores 0
            into it on overlapping patches (and, with ``check_values``, on float pixels outside ``[0, 1]``), and the
            caller asserts it. None: a word of this call, asserted here (:data:`dadam.ops.OVERLAP_MESSAGE`).
        check_values: also check the float pixels the kernel reads (every pixel out of place; in place the
            background under blends and feather ramps). Needs ``ok``.
        gain, offset: ``(B, K)`` float intensity map of each slot, or None (no map): see
            :func:`dadam.ops.paste_patches`.
        feather: the feather ramp's width in pixels (0: the hard edge); each value is its own kernel variant.

    Returns:
        the output ``(B, C, H, W)``: ``images`` itself when ``inplace``.

    Shape:
        images ``(B, C, H, W)``, boxes ``(B, K, 4)``, patch_ids / active / alpha ``(B, K)`` -> ``(B, C, H, W)``.

    Example:
        >>> out = paste_patches_triton(images, bank.pixels, bank.offsets, bank.sizes, params.boxes,  # doctest: +SKIP
        ...                            params.patch_ids, params.active, params.alpha)
    """
    if not HAS_TRITON:
        raise RuntimeError("paste_patches_triton needs the 'triton' package; use path='vectorised' without it")
    if images.dtype not in IMAGE_KINDS:
        raise ValueError(f"images dtype must be one of {tuple(IMAGE_KINDS)}, got {images.dtype}")
    if check_values and ok is None:
        raise ValueError("check_values=True needs the caller's ok word (ok=new_ok_flag(device)), got ok=None")
    named = {"pixels": pixels, "offsets": offsets, "sizes": sizes, "boxes": boxes, "patch_ids": patch_ids}
    optional = {"ok": ok, "gain": gain, "offset": offset}
    for name, t in {**named, "active": active, "alpha": alpha, **optional}.items():
        if t is None:
            continue
        if t.device != images.device:
            raise ValueError(f"{name} is on {t.device} but images are on {images.device}")
    if images.device.type not in ("cuda", "cpu"):
        raise ValueError(f"paste_patches_triton runs on CUDA (or CPU, interpreted), got device {images.device}")
    out = images if inplace else torch.empty_like(images, memory_format=torch.preserve_format)
    B, C, H, W = images.shape
    K = patch_ids.shape[1]
    if images.numel() == 0 or (inplace and K == 0):
        return out
    for t in (images, out):
        reach = sum((n - 1) * abs(s) for n, s in zip(t.shape[1:], t.stride()[1:], strict=True))
        if reach >= INT32:
            raise ValueError(f"one image spans {reach + 1} elements, more than the kernels' int32 offsets allow")
    own = ok is None
    if own:
        ok = new_ok_flag(images.device)
    cp, planes = _layout(images)
    if _layout(out) != (cp, planes):  # out of place from a non-dense input: walk the planes of both
        cp, planes = 1, C
    th, te = TILE[images.element_size()]
    src = images.view(torch.int16) if images.dtype == torch.bfloat16 else images  # bfloat16 handled as its bits
    dst = out.view(torch.int16) if out.dtype == torch.bfloat16 else out
    alpha32 = alpha.to(torch.float32).contiguous()
    maps = (
        (alpha32, alpha32)
        if gain is None
        else (gain.to(torch.float32).contiguous(), offset.to(torch.float32).contiguous())
    )
    meta = (
        *bank_arguments(pixels, offsets, sizes),
        *slot_arguments(boxes, patch_ids, active),
        alpha32,
        *maps,  # not read without MAP
        ok,
    )
    constexprs = {
        "K": K,
        "CP": cp,
        "PLANES": planes,
        "KIND": IMAGE_KINDS[images.dtype],
        "CHECK": bool(check_values),
        "MAP": gain is not None,
        "FEATHER": int(feather),
        "TH": th,
        "TE": te,
        "num_warps": NUM_WARPS,
        "enable_fp_fusion": False,  # torch rounds a * q and (1 - a) * x separately
    }
    if inplace:
        if B * K >= INT32:
            raise ValueError(f"{B} x {K} slots are more than one launch's grid allows")
        args = (dst, *meta, H, W, *dst.stride())
        launch(_paste_in_place_kernel, (B * K, SPLIT), args, {**constexprs, "SPLIT": SPLIT}, images.device)
    else:
        tiles_e = triton.cdiv(W * cp, te)
        tiles = triton.cdiv(H, th) * tiles_e
        if B * tiles >= INT32:
            raise ValueError(f"{B} images of {tiles} tiles are more than one launch's grid allows")
        args = (src, dst, *meta, H, W, tiles, tiles_e, *src.stride(), *dst.stride())
        launch(_copy_paste_kernel, (B * tiles,), args, constexprs, images.device)
    if own:
        assert_ok(ok, OVERLAP_MESSAGE)
    return out
