"""The CPU paths of :func:`dadam.ops.paste_patches` and :func:`dadam.ops.match_intensity`: one active slot at a time.

Host-side ints and slices are free on the CPU, so these loops walk the active slots in order and work on each slot's
clipped box with NumPy views (about 1 us per slice instead of torch's ~5 us per op). Values follow
:mod:`dadam.paste.values` operation for operation; :func:`paste_loop_torch` is the same loop in torch ops (bfloat16,
autograd, tensors off the CPU).
"""

from __future__ import annotations

import numpy as np
import torch

from dadam.paste.values import feather_ramp, stat_values

__all__ = ["box_sums_loop", "paste_loop", "paste_loop_torch"]

_F255 = np.float32(255.0)
_ONE = np.float32(1.0)


def _slot_rows(offsets, sizes, boxes, patch_ids, active):
    """``(slot, x0, y0, offset, h, w)`` host ints of every active slot, in slot order (CPU tensors)."""
    on = active.reshape(-1).numpy()  # CPU-only path: (B*K,) bool
    slots = np.flatnonzero(on)  # CPU-only path: active slots, in order
    pid = patch_ids.reshape(-1).numpy()[slots]  # CPU-only path
    xy = boxes.reshape(-1, 4).numpy()[slots, :2]  # CPU-only path: (n, 2) x0, y0
    info = np.concatenate([slots[:, None], xy, offsets.numpy()[pid, None], sizes.numpy()[pid]], 1)  # CPU-only path
    return slots, info.tolist()  # CPU-only path


def paste_loop(
    images, pixels, offsets, sizes, boxes, patch_ids, active, alpha, *, gain=None, offset=None, feather=0, inplace=False
):
    """CPU-only path: one slice assignment per active patch, with host-side ints (free on the CPU).

    Works on NumPy views of the output and the bank with the values of :mod:`dadam.paste.values`: a hard paste
    copies the patch (``q / 255`` in float32 for float images, then rounded once to the image dtype); otherwise the
    weight map ``w`` (the slot weight, times the feather ramp) gives ``w * p + (1 - w) * x`` as the same separately
    rounded float32 operations, then rounds half to even and clamps for uint8. Tensors off the CPU, bfloat16 images
    (NumPy has no bfloat16) and images that require grad take :func:`paste_loop_torch`.

    Args: as :func:`dadam.ops.paste_patches` (validated there).

    Returns:
        the output ``(B, C, H, W)``: ``images`` itself when ``inplace``.
    """
    if images.device.type != "cpu" or images.dtype == torch.bfloat16 or images.requires_grad or pixels.requires_grad:
        return paste_loop_torch(
            images, pixels, offsets, sizes, boxes, patch_ids, active, alpha,
            gain=gain, offset=offset, feather=feather, inplace=inplace,
        )  # fmt: skip
    B, C, H, W = images.shape
    out = images if inplace else images.clone(memory_format=torch.preserve_format)
    if out.numel() == 0 or active.numel() == 0:
        return out
    K = active.shape[1]
    o = out.numpy()  # CPU-only path: (B, C, H, W) view of the output, torch's strides
    pix = pixels.numpy()  # CPU-only path: (P,) uint8 view of the bank
    slots, rows = _slot_rows(offsets, sizes, boxes, patch_ids, active)
    a32 = alpha.reshape(-1).to(torch.float32).numpy()[slots]  # CPU-only path: (n,) float32 weights
    maps = None
    if gain is not None:  # CPU-only path: (n, 2) float32 gain, offset
        maps = torch.stack([gain.reshape(-1), offset.reshape(-1)], 1).to(torch.float32).numpy()[slots]
    # the ramp at distances 0..F (1 from F on), computed once by the one rule
    ramp = feather_ramp(torch.arange(feather + 1), feather).numpy() if feather else None  # CPU-only path
    ramps: dict[tuple[int, int], np.ndarray] = {}  # (h, w) -> the ramp factors of a patch of that size
    uint8 = images.dtype == torch.uint8
    for n, ((i, x0, y0, off, h, w), a) in enumerate(zip(rows, a32.tolist(), strict=True)):  # CPU-only path: host ints
        b = i // K
        ys, ye, xs, xe = max(y0, 0), min(y0 + h, H), max(x0, 0), min(x0 + w, W)
        if ye <= ys or xe <= xs:
            continue
        patch = pix[off : off + h * w].reshape(h, w)[ys - y0 : ye - y0, xs - x0 : xe - x0]  # (h', w') uint8 view
        region = o[b, :, ys:ye, xs:xe]  # (C, h', w') view, broadcast over the channels
        a = np.float32(a)
        if maps is None and ramp is None and a >= 1:  # the hard paste: exactly the patch
            region[...] = patch if uint8 else patch.astype(np.float32) / _F255
            continue
        p = patch.astype(np.float32)  # (h', w') float32 copy
        if maps is not None:
            p *= maps[n, 0]  # g * q
            p += maps[n, 1]  # + o
            np.clip(p, 0, 255, out=p)
        if not uint8:
            p /= _F255
        weight = a
        if ramp is not None:  # the ramp of an (h, w) patch, cut to the region: one map per patch size and call
            if (h, w) not in ramps:
                r, c = np.arange(h), np.arange(w)
                d = np.minimum(np.minimum(r, h - 1 - r)[:, None], np.minimum(c, w - 1 - c)[None, :])
                ramps[h, w] = ramp[np.minimum(d, feather)]  # (h, w) float32
            weight = a * ramps[h, w][ys - y0 : ye - y0, xs - x0 : xe - x0]  # (h', w') float32
        _write(region, p, weight, uint8)
    return out


def _write(region: np.ndarray, p: np.ndarray, weight, uint8: bool) -> None:
    """Write ``v = p`` where ``weight >= 1`` else ``weight * p + (1 - weight) * x`` into ``region`` (``(C, h, w)``
    view; ``p`` ``(h, w)`` float32 on the image's scale; ``weight`` a float32 scalar or ``(h, w)`` map), rounded
    half to even and clamped for uint8. ``p`` may be modified."""
    if np.ndim(weight) == 0 and weight >= 1:
        mixed = np.broadcast_to(p, region.shape)
    elif np.ndim(weight) == 0:
        p *= weight  # alpha * p
        mixed = region.astype(np.float32)
        mixed *= _ONE - weight  # (1 - alpha) * x, the float32 1 - alpha of blend_values
        mixed += p  # (C, h, w)
    else:
        mixed = region.astype(np.float32)
        mixed *= _ONE - weight  # (1 - w) * x
        mixed += weight * p  # + w * p
        np.copyto(mixed, np.broadcast_to(p, mixed.shape), where=weight >= 1)  # w >= 1: exactly p
    if uint8:
        mixed = np.clip(np.rint(mixed), 0, 255)  # round_to_uint8: half to even, clamped
    region[...] = mixed  # one rounding to the image dtype (exact for uint8)


def paste_loop_torch(
    images, pixels, offsets, sizes, boxes, patch_ids, active, alpha, *, gain=None, offset=None, feather=0, inplace=False
):
    """The loop of :func:`paste_loop` in torch ops (any dtype, autograd, any device): one slice per patch.

    Same values as :mod:`dadam.paste.values`, with fewer ops: a hard paste copies the patch (``q / 255`` for float
    images) without reading the background; otherwise ``w * p + (1 - w) * x`` evaluated as the same separately
    rounded float32 operations (IEEE ``+`` and ``*`` commute, so the operand order is free).
    """
    B, C, H, W = images.shape
    out = images if inplace else images.clone(memory_format=torch.preserve_format)
    if out.numel() == 0 or active.numel() == 0:
        return out
    K = active.shape[1]
    sB, sC, sH, sW = out.stride()
    base = out.storage_offset()
    alpha32 = alpha.to(torch.float32).reshape(-1)
    # One host transfer for all the bookkeeping (below): (B*K, 7) ints per slot.
    pid = patch_ids.reshape(-1)
    rows = torch.cat(
        [
            boxes[..., :2].reshape(-1, 2),
            offsets[pid, None],
            sizes[pid],
            active.reshape(-1, 1),
            (alpha32 >= 1).reshape(-1, 1),
        ],
        1,
    )
    uint8 = images.dtype == torch.uint8
    fp32 = images.dtype == torch.float32
    hard = gain is None and feather == 0  # a slot with alpha >= 1 is a copy of the patch
    # float32 single-channel: divide in place in the image (no temporary); else divide the (h, w) patch once and copy
    # it to every channel (one op over C * h * w elements: ops above torch's grain size fork threads)
    fp32_inplace = fp32 and C == 1
    d255 = None if uint8 else torch.full((), 255.0, device=images.device)  # blend_values' IEEE division by a tensor
    g32 = o32 = None
    if gain is not None:
        g32, o32 = gain.to(torch.float32).reshape(-1), offset.to(torch.float32).reshape(-1)
    for i, (x0, y0, off, h, w, on, paste) in enumerate(rows.tolist()):  # CPU-only path: host ints
        if not on:
            continue
        b = i // K
        ys, ye, xs, xe = max(y0, 0), min(y0 + h, H), max(x0, 0), min(x0 + w, W)
        if ye <= ys or xe <= xs:
            continue
        ph, pw = ye - ys, xe - xs
        patch = pixels.as_strided((ph, pw), (w, 1), off + (ys - y0) * w + (xs - x0))  # (h', w') uint8 view
        region = out.as_strided((C, ph, pw), (sC, sH, sW), base + b * sB + ys * sH + xs * sW)
        if hard and paste:
            if uint8:
                region.copy_(patch)  # exactly the patch
            elif fp32_inplace:
                region.copy_(patch).div_(d255)  # q = float32(patch) / 255, exactly, in place
            else:
                region.copy_(patch.to(torch.float32).div_(d255))  # float32 q, rounded once to the image dtype
            continue
        p = patch.to(torch.float32)
        if g32 is not None:
            p = p.mul_(g32[i]).add_(o32[i]).clamp_(0, 255)  # map_patch_values
        if not uint8:
            p.div_(d255)
        a = alpha32[i]  # 0-d float32 tensor
        if feather:
            r = torch.arange(ys - y0, ye - y0, device=images.device)
            c = torch.arange(xs - x0, xe - x0, device=images.device)
            d = torch.minimum(torch.minimum(r, h - 1 - r)[:, None], torch.minimum(c, w - 1 - c)[None, :])
            a = a * feather_ramp(d, feather)  # (h', w') weight map
        x = region if uint8 or fp32 else region.to(torch.float32)
        mixed = torch.mul(x, 1 - a).add_(torch.mul(a, p))  # (1 - w) * x + w * p, (C, h', w') float32
        mixed = torch.where(a >= 1, p, mixed)
        if uint8:
            mixed.round_().clamp_(0, 255)  # round_to_uint8
        region.copy_(mixed)
    return out


def box_sums_loop(images, pixels, offsets, sizes, boxes, patch_ids, active) -> torch.Tensor:
    """The integer statistics of :func:`dadam.paste.values.intensity_map` for every slot, one active slot at a time.

    Tensors off the CPU are copied to the CPU for the loop (host syncs: this path is the CPU's).

    Returns:
        ``(B, K, 5)`` int64 ``n, Sx, Sxx, Sq, Sqq`` on the images' device (zeros for inactive slots).
    """
    device = images.device
    B, _, H, W = images.shape
    K = active.shape[1]
    sums = np.zeros((B * K, 5), np.int64)
    cpu = [t.detach().cpu() for t in (images, pixels, offsets, sizes, boxes, patch_ids, active)]
    images, pixels, offsets, sizes, boxes, patch_ids, active = cpu
    if images.numel() and active.numel():
        pix = pixels.numpy()  # CPU-only path
        plane = images[:, 0].numpy() if images.dtype == torch.uint8 else None  # CPU-only path: (B, H, W) view
        for i, x0, y0, off, h, w in _slot_rows(offsets, sizes, boxes, patch_ids, active)[1]:  # CPU-only path
            b = i // K
            ys, ye, xs, xe = max(y0, 0), min(y0 + h, H), max(x0, 0), min(x0 + w, W)
            if ye <= ys or xe <= xs:
                continue
            if plane is not None:
                x = plane[b, ys:ye, xs:xe]
            else:
                x = stat_values(images[b, 0, ys:ye, xs:xe]).numpy()  # CPU-only path: (h', w') uint8
            q = pix[off : off + h * w].reshape(h, w)[ys - y0 : ye - y0, xs - x0 : xe - x0]
            sums[i] = (x.size, *_sum_and_squares(x), *_sum_and_squares(q))
    return torch.from_numpy(sums).view(B, K, 5).to(device)


def _sum_and_squares(v: np.ndarray) -> tuple[int, int]:
    """``(sum v, sum v^2)`` of uint8 values, exactly (a histogram of the 256 values, then int64 dot products)."""
    hist = np.bincount(v.reshape(-1), minlength=256).astype(np.int64)
    levels = np.arange(256, dtype=np.int64)
    return int(hist @ levels), int(hist @ (levels * levels))
