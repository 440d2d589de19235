"""The pure-torch GPU path of :func:`dadam.ops.paste_patches` and :func:`dadam.ops.match_intensity`: fixed shapes, no
host sync, no per-slot loop.

Every slot is padded to the bank's largest patch: a ``(B, K, max_h, max_w)`` grid of cells, each either a patch pixel
placed in the image (``valid``) or padding. One gather reads the patch pixels of the grid; the paste writes each
channel with one ``index_put_``, the statistics of ``match`` sum the grid's cells per slot. The grid costs tens of
bytes per cell and channel (int32 indices, masks, float32 temporaries): this path is the fallback of the Triton
kernels (:mod:`dadam.kernels`), and the one ``torch.compile`` traces.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dadam.paste.values import blend_values, feather_ramp, map_patch_values, stat_values

__all__ = ["INT32_LIMIT", "TRASH", "SlotGrid", "box_sums_vectorised", "paste_vectorised", "slot_grid"]

TRASH = 1024  # distinct trash slots of the paste's flat output buffer
INT32_LIMIT = 2**31  # the grid indexes with int32 below this many elements


class SlotGrid(NamedTuple):
    """The padded grid of the slots' patch pixels (shapes ``(B, K, max_h, max_w)`` after broadcasting).

    Attributes:
        valid: bool, the cell is a pixel of an active slot's patch inside the image.
        src: index of the cell's patch pixel in the bank's flat pixels (0 where not valid).
        dst: channel-0 index of the cell's image pixel in the images' memory order (``trash`` where not valid, with
            ``trash`` given to :func:`slot_grid`; else 0).
        dist: the cell's distance to the nearest edge of its box, ``min(r, c, h - 1 - r, w - 1 - c)``, or None.
    """

    valid: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    dist: torch.Tensor | None


def slot_grid(
    images: torch.Tensor,
    pixels,
    offsets,
    sizes,
    boxes,
    patch_ids,
    active,
    max_size,
    *,
    trash: int | None = None,
    distances: bool = False,
) -> SlotGrid:
    """The :class:`SlotGrid` of every slot for ``images`` (contiguous or channels_last; their strides are read);
    ``dist`` only with ``distances`` (else None)."""
    B, C, H, W = images.shape
    sB, sC, sH, sW = images.stride()
    mh, mw = max_size
    dev = images.device
    # int32 indices when every intermediate fits (halves the index traffic); boxes are clamped first so that an
    # absurd box cannot wrap around into the image (the clamp keeps every out-of-image cell out of the image).
    reach = images.numel() + TRASH + (C - 1) * sC + (mh + 1) * sH + (mw + 1) * sW
    small = reach < INT32_LIMIT and pixels.numel() + mh * mw < INT32_LIMIT
    idx = torch.int32 if small else torch.int64
    hw = sizes.to(idx)[patch_ids]  # (B, K, 2)
    h = hw[..., 0, None, None]  # (B, K, 1, 1)
    w = hw[..., 1, None, None]
    x0 = boxes[..., 0].clamp(-mw, W).to(idx)[..., None, None]  # (B, K, 1, 1)
    y0 = boxes[..., 1].clamp(-mh, H).to(idx)[..., None, None]
    dy = torch.arange(mh, device=dev, dtype=idx).view(mh, 1)
    dx = torch.arange(mw, device=dev, dtype=idx).view(1, mw)
    y = y0 + dy  # (B, K, mh, 1)
    x = x0 + dx  # (B, K, 1, mw)
    valid = (dy < h) & (dx < w) & (y >= 0) & (y < H) & (x >= 0) & (x < W) & active[..., None, None]  # (B, K, mh, mw)
    src = torch.where(valid, offsets.to(idx)[patch_ids][..., None, None] + dy * w + dx, 0)  # (B, K, mh, mw)
    b = torch.arange(B, device=dev, dtype=idx).view(B, 1, 1, 1)
    if trash is None:
        spill = torch.zeros((), device=dev, dtype=idx)
    else:  # invalid cells write to trash + (cell % TRASH): spread, so the GPU does not serialise them on one address
        spill = trash + (torch.arange(mh * mw, device=dev, dtype=idx).view(mh, mw) % TRASH)  # (mh, mw)
    dst = torch.where(valid, b * sB + y * sH + x * sW, spill)  # (B, K, mh, mw)
    dist = None
    if distances:
        dist = torch.minimum(torch.minimum(dy, h - 1 - dy), torch.minimum(dx, w - 1 - dx))  # (B, K, mh, mw)
    return SlotGrid(valid, src, dst, dist)


def _memory_order(images: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``images`` as contiguous or channels_last (a copy only for other layouts), and whether channels_last."""
    nhwc = not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last)
    if not (nhwc or images.is_contiguous()):
        images = images.contiguous()
    return images, nhwc


def paste_vectorised(
    images, pixels, offsets, sizes, boxes, patch_ids, active, alpha, max_size, *, gain=None, offset=None, feather=0
):
    """Gather/scatter over the padded patch grid, one channel at a time; fixed shapes, no host sync.

    Written for ``torch.compile`` too: the output is a fresh flat buffer (the image in memory order, then a trash
    region) mutated only through ``index_put_`` on that base tensor, never through an ``as_strided`` view.

    Args: as :func:`dadam.ops.paste_patches` (validated there).

    Returns:
        a new ``(B, C, H, W)`` tensor, contiguous or channels_last like ``images``.
    """
    images, nhwc = _memory_order(images)
    B, C, H, W = images.shape
    sC = images.stride(1)
    numel = images.numel()
    flat = (images.permute(0, 2, 3, 1) if nhwc else images).reshape(-1)  # memory order: a view, no copy
    # Flat output with a trash region after the image: invalid grid cells write to numel + (cell % TRASH) (plus the
    # channel's c * sC), spread over TRASH slots.
    buf = torch.cat([flat, flat.new_zeros(TRASH + (C - 1) * sC)])  # the one copy of the image (as a clone)
    out = buf[:numel].view(B, H, W, C).permute(0, 3, 1, 2) if nhwc else buf[:numel].view(B, C, H, W)
    mh, mw = max_size
    if numel == 0 or patch_ids.shape[1] == 0 or mh == 0 or mw == 0:
        return out
    grid = slot_grid(
        images, pixels, offsets, sizes, boxes, patch_ids, active, max_size, trash=numel, distances=feather > 0
    )
    patch = pixels[grid.src]  # (B, K, mh, mw) uint8, gathered once for all channels
    if gain is not None:
        patch = map_patch_values(patch, gain[..., None, None], offset[..., None, None])  # (B, K, mh, mw) float32
    weight = alpha.to(torch.float32)[..., None, None]  # (B, K, 1, 1)
    if feather:
        weight = weight * feather_ramp(grid.dist, feather)  # (B, K, mh, mw)
    for c in range(C):  # C is a shape: no host sync
        dst_c = grid.dst + c * sC  # the same cells in channel c (the trash region is long enough for every channel)
        buf.index_put_((dst_c,), blend_values(patch, buf[dst_c], weight))
    return out


def box_sums_vectorised(images, pixels, offsets, sizes, boxes, patch_ids, active, max_size) -> torch.Tensor:
    """The integer statistics of :func:`dadam.paste.values.intensity_map` for every slot, over the padded grid.

    Returns:
        ``(B, K, 5)`` int64 ``n, Sx, Sxx, Sq, Sqq`` (zeros for inactive slots).
    """
    images, nhwc = _memory_order(images)
    B, K = patch_ids.shape
    mh, mw = max_size
    if images.numel() == 0 or K == 0 or mh == 0 or mw == 0:
        return torch.zeros(B, K, 5, dtype=torch.int64, device=images.device)
    flat = (images.permute(0, 2, 3, 1) if nhwc else images).reshape(-1)  # memory order: a view
    grid = slot_grid(images, pixels, offsets, sizes, boxes, patch_ids, active, max_size)
    x = torch.where(grid.valid, stat_values(flat[grid.dst]), 0).to(torch.int64)  # (B, K, mh, mw) channel 0
    q = torch.where(grid.valid, pixels[grid.src], 0).to(torch.int64)
    n = grid.valid.sum((-2, -1), dtype=torch.int64)  # (B, K)
    parts = [n, x.sum((-2, -1)), (x * x).sum((-2, -1)), q.sum((-2, -1)), (q * q).sum((-2, -1))]
    return torch.stack(parts, -1)  # (B, K, 5)
