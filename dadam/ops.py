"""Pure tensor ops of DADAM: paste / blend bank patches into a batch of images. No randomness, inputs never mutated.

Value convention (both paths, bit-identical): with the patch pixel ``q`` (uint8 from the bank), the background
``x`` and the slot weight ``a`` (1.0 = paste), computed in float32,

- uint8 images: ``out = round_to_uint8(a * q + (1 - a) * x)``;
- float images (in ``[0, 1]``): ``out = (a * (q / 255) + (1 - a) * x).to(dtype)``;
- ``a == 1`` gives exactly the patch (``q``, or ``q / 255`` cast to the image dtype), whatever the background.

Rounding to uint8 is defined once, in :func:`round_to_uint8` (half to even, clamped to 0..255).

Backends (:func:`paste_backend`): on CUDA the Triton kernels of :mod:`dadam.kernels` (``"triton"``), or the
vectorised torch path when Triton is missing or cannot build its kernel on this machine (the reason is in the warning
and in the backend string); on the CPU the slice loop (``"cpu-loop"``).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["OVERLAP_MESSAGE", "blend_values", "check_image_values", "paste_backend", "paste_patches", "round_to_uint8"]

SUPPORTED_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32)
# The device-side assert of overlapping active patches (a ValueError with the sample and slots on the CPU).
OVERLAP_MESSAGE = "DADAM: two active patches of one sample share image pixels (were replayed params edited?)"
_TRASH = 1024  # distinct trash slots of the vectorised path
_INT32_LIMIT = 2**31  # the vectorised path indexes with int32 below this many elements


def round_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round a float tensor half-to-even and clamp to ``0..255`` as uint8 (the one rounding rule of DADAM)."""
    return torch.round(x).clamp_(0, 255).to(torch.uint8)


def blend_values(patch: torch.Tensor, background: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``alpha * patch + (1 - alpha) * background`` in float32, converted to the background's dtype.

    Args:
        patch: uint8 patch pixels (0..255).
        background: image pixels (uint8 0..255, or float in [0, 1]); its dtype is the output dtype.
        alpha: float32 weights, broadcastable; where ``alpha >= 1`` the result is exactly the patch.

    Returns:
        the blended values, broadcast shape, dtype of ``background``.

    Shape:
        any broadcastable shapes.

    Example:
        >>> blend_values(torch.tensor([200], dtype=torch.uint8), torch.tensor([100], dtype=torch.uint8),
        ...              torch.tensor(0.6))
        tensor([160], dtype=torch.uint8)
    """
    q = patch.to(torch.float32)
    if background.dtype != torch.uint8:
        # A tensor divisor, not the Python number: CUDA turns ``t / 255`` into ``t * (1 / 255)``, 1 ulp off the IEEE
        # quotient for half of the q values; ``t / tensor`` is the IEEE quotient on every device.
        q = q / torch.full((), 255.0, device=q.device)
    mixed = alpha * q + (1 - alpha) * background.to(torch.float32)
    v = torch.where(alpha >= 1, q, mixed)
    return round_to_uint8(v) if background.dtype == torch.uint8 else v.to(background.dtype)


def check_image_values(images: torch.Tensor) -> None:
    """Float images must be in ``[0, 1]`` (uint8 always is in range). On the CPU a ``ValueError`` names the range
    found; on a GPU a device-side assert (``torch._assert_async``, no host sync) stops the process at the next
    synchronisation."""
    if not images.is_floating_point() or images.numel() == 0:
        return
    low, high = torch.aminmax(images)  # NaN propagates and fails the test below
    if images.device.type != "cpu":
        torch._assert_async((low >= 0) & (high <= 1), "DADAM: float images must be in [0, 1]")
    elif not (float(low) >= 0 and float(high) <= 1):
        raise ValueError(
            f"images ({images.dtype}) must be in [0, 1], got values in [{float(low):g}, {float(high):g}]; apply "
            "DADAM to images scaled to [0, 1] (or uint8), before normalising them"
        )


def _check(images, pixels, offsets, sizes, boxes, patch_ids, active, alpha) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if images.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"images dtype must be one of {SUPPORTED_DTYPES}, got {images.dtype}")
    if pixels.dtype != torch.uint8 or pixels.ndim != 1:
        raise ValueError(f"pixels must be a flat uint8 tensor, got {pixels.dtype} {tuple(pixels.shape)}")
    B = images.shape[0]
    K = patch_ids.shape[1] if patch_ids.ndim == 2 else -1
    for name, t, shape in (
        ("boxes", boxes, (B, K, 4)),
        ("patch_ids", patch_ids, (B, K)),
        ("active", active, (B, K)),
        ("alpha", alpha, (B, K)),
    ):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for {B} images, got {tuple(t.shape)}")
    if offsets.ndim != 1 or sizes.shape != (offsets.shape[0], 2):
        raise ValueError(f"offsets (N,) and sizes (N, 2) do not match: {tuple(offsets.shape)}, {tuple(sizes.shape)}")
    named = {"pixels": pixels, "offsets": offsets, "sizes": sizes, "boxes": boxes, "patch_ids": patch_ids}
    for name, t in {**named, "active": active, "alpha": alpha}.items():
        if t.device != images.device:
            raise ValueError(f"{name} is on {t.device} but images are on {images.device}")


def _overlaps(sizes, boxes, patch_ids, active, H, W) -> torch.Tensor:
    """``(B, K, K)`` bool: active slots ``k != j`` of a sample whose patches share an image pixel (no host sync)."""
    h, w = sizes[patch_ids].unbind(-1)  # (B, K) each
    x0, y0 = boxes[..., 0], boxes[..., 1]
    lo = torch.stack([x0.clamp(min=0), y0.clamp(min=0)], -1)  # (B, K, 2) the patch clipped to the image
    hi = torch.stack([(x0 + w).clamp(max=W), (y0 + h).clamp(max=H)], -1)
    meet = (torch.maximum(lo[:, :, None], lo[:, None]) < torch.minimum(hi[:, :, None], hi[:, None])).all(-1)
    K = active.shape[1]
    others = ~torch.eye(K, dtype=torch.bool, device=active.device)  # (K, K)
    return meet & active[:, :, None] & active[:, None] & others  # (B, K, K)


def _check_overlaps_cpu(sizes, boxes, patch_ids, active, H, W) -> None:
    clash = _overlaps(sizes, boxes, patch_ids, active, H, W)  # (B, K, K)
    if bool(clash.any()):  # CPU-only path
        b, k, j = (int(v) for v in clash.nonzero()[0])  # CPU-only path
        raise ValueError(
            f"active patches of one sample must not overlap: sample {b}, slots {k} and {j} (boxes "
            f"{boxes[b, k].tolist()} and {boxes[b, j].tolist()}, patches {int(patch_ids[b, k])} and "  # CPU-only path
            f"{int(patch_ids[b, j])}) share image pixels; the sampler never places them so: were the params edited?"
        )


def _check_on_device(images, sizes, boxes, patch_ids, active, ok) -> None:
    """The torch paths on a GPU: overlaps (and, with ``ok``, float values) folded into ``ok`` or asserted."""
    _, _, H, W = images.shape
    fine = ~_overlaps(sizes, boxes, patch_ids, active, H, W).any()
    if ok is None:
        torch._assert_async(fine, OVERLAP_MESSAGE)
        return
    if images.is_floating_point() and images.numel():
        low, high = torch.aminmax(images)
        fine = fine & (low >= 0) & (high <= 1)
    ok.mul_(fine)


def paste_patches(
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
    path: str = "auto",
    inplace: bool = False,
    ok: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paste (``alpha = 1``) or blend bank patches into images, out of place (default) or in place.

    Patch ``patch_ids[b, k]`` (``sizes[id] = (h, w)`` pixels starting at ``pixels[offsets[id]]``) goes to the
    canvas region starting at ``boxes[b, k, :2] = (x0, y0)``, i.e. ``[y0, y0 + h) x [x0, x0 + w)`` (the box's
    ``x1, y1`` are not read; :func:`dadam.sampling.sample` keeps them equal to ``x0 + w, y0 + h``), the same
    grayscale value in every channel. Pixels of a region outside the image are dropped. Active patches of one
    sample must not share an image pixel (the sampler never places them so): on the CPU that raises a
    ``ValueError``, on a GPU a device-side assert (no host sync).

    Paths with bit-identical results: ``"triton"`` (:mod:`dadam.kernels`: out of place, one kernel writes every
    output pixel; in place, one kernel writes only the patch pixels; on CPU tensors it runs under Triton's slow
    interpreter, for tests), ``"vectorised"`` (pure torch: one gather/scatter per channel over a padded
    ``(B, K, max_h, max_w)`` grid of patch pixels, no host sync) and ``"loop"`` (slicing one active patch at a time
    with host-side ints). ``"auto"`` takes the backend of :func:`paste_backend`: the loop on the CPU; Triton on a GPU,
    or the vectorised path when Triton is missing or cannot build its kernel here (one ``RuntimeWarning`` with the
    reason; any other error propagates).

    Args:
        images: ``(B, C, H, W)`` uint8, float16, bfloat16 or float32 (float in [0, 1]); any strides (contiguous and
            channels_last are kept).
        pixels: ``(P,)`` uint8 flat patch buffer (``bank.pixels``); offsets ``(N,)``, sizes ``(N, 2)`` (h, w).
        boxes: ``(B, K, 4)`` long xyxy canvas pixels; patch_ids ``(B, K)`` long; active ``(B, K)`` bool;
            alpha ``(B, K)`` float weights of the patch (1.0 paste).
        max_size: ``(max_h, max_w)`` of the bank's patches (``bank.max_size``), for the vectorised path's grid.
        path: ``"auto"``, ``"triton"``, ``"vectorised"`` or ``"loop"``.
        inplace: write the patches into ``images`` and return ``images`` itself: the caller's tensor is modified
            (aliasing: the result *is* the input). Needs images whose elements do not share memory and that
            autograd lets be modified. Default: a new tensor.
        ok: a caller's ``(1,)`` int32 ``ok`` word (:func:`dadam.kernels.new_ok_flag`): on a GPU the op also checks
            float pixels in ``[0, 1]`` (those it reads: every pixel out of place, the background under blends in
            place) and stores 0 into ``ok`` on a bad value or overlapping patches instead of asserting; the caller
            asserts ``ok`` once. On the CPU both checks raise a ``ValueError`` and ``ok`` is left alone.

    Returns:
        a new tensor like ``images`` (same shape, dtype, device and memory format), or ``images`` when ``inplace``.

    Shape:
        images ``(B, C, H, W)``, boxes ``(B, K, 4)``, patch_ids / active / alpha ``(B, K)`` -> ``(B, C, H, W)``.

    Example:
        >>> out = paste_patches(images, bank.pixels, bank.offsets, bank.sizes, params.boxes,  # doctest: +SKIP
        ...                     params.patch_ids, params.active, params.alpha, max_size=bank.max_size)
    """
    _check(images, pixels, offsets, sizes, boxes, patch_ids, active, alpha)
    if path not in ("auto", "triton", "vectorised", "loop"):
        raise ValueError(f"path must be 'auto', 'triton', 'vectorised' or 'loop', got {path!r}")
    if inplace and any(s == 0 and n > 1 for s, n in zip(images.stride(), images.shape, strict=True)):
        raise ValueError(
            f"inplace=True needs images whose elements do not share memory, got strides {images.stride()} for shape "
            f"{tuple(images.shape)} (an expanded tensor); pass images.contiguous() or use inplace=False"
        )
    if ok is not None and (ok.shape != (1,) or ok.dtype != torch.int32 or ok.device != images.device):
        raise ValueError(
            f"ok must be a (1,) torch.int32 tensor on {images.device} (dadam.kernels.new_ok_flag), got shape "
            f"{tuple(ok.shape)}, dtype {ok.dtype}, device {ok.device}"
        )
    args = (images, pixels, offsets, sizes, boxes, patch_ids, active, alpha)
    cpu = images.device.type == "cpu" and not torch.compiler.is_compiling()  # compiled: the device-side checks
    if cpu:
        _check_overlaps_cpu(sizes, boxes, patch_ids, active, *images.shape[2:])
        if ok is not None:
            check_image_values(images)
    if path == "auto":
        path = "loop" if cpu else _gpu_path()
        if path == "triton":
            try:
                return _triton(*args, inplace=inplace, ok=ok)
            except Exception as e:
                from dadam.kernels import KernelBuildError

                if not isinstance(e, KernelBuildError):
                    raise
                _fall_back(f"{type(e).__name__}: {e}")
                path = "vectorised"
    if path == "triton":
        return _triton(*args, inplace=inplace, ok=ok)
    if not cpu:
        _check_on_device(images, sizes, boxes, patch_ids, active, ok)  # asserted, or folded into ok
    if path == "loop":
        return _paste_loop(*args, inplace=inplace)
    out = _paste_vectorised(*args, max_size)
    return images.copy_(out) if inplace else out


def _triton(images, pixels, offsets, sizes, boxes, patch_ids, active, alpha, *, inplace, ok):
    from dadam.kernels import paste_patches_triton

    return paste_patches_triton(
        images,
        pixels,
        offsets,
        sizes,
        boxes,
        patch_ids,
        active,
        alpha,
        inplace=inplace,
        ok=ok,
        check_values=ok is not None,
    )


_triton_failure: str | None = None  # why the Triton kernels cannot run in this process (then: vectorised)


def paste_backend(device: torch.device | str) -> str:
    """The backend ``path="auto"`` uses on ``device``: ``"cpu-loop"``, ``"triton"``, or
    ``"torch-vectorised (triton unavailable: <reason>)"`` when Triton is missing or could not build its kernel in this
    process (tried on the first GPU call).

    Example:
        >>> paste_backend("cpu")
        'cpu-loop'
    """
    if torch.device(device).type == "cpu":
        return "cpu-loop"
    if _gpu_path() == "triton":
        return "triton"
    return f"torch-vectorised (triton unavailable: {_triton_failure})"


def _gpu_path() -> str:
    global _triton_failure
    if _triton_failure is None and not _has_triton():
        _triton_failure = "the triton package does not import"
    return "triton" if _triton_failure is None else "vectorised"


def _fall_back(reason: str) -> None:
    """Record why Triton cannot run here and warn once; the bit-identical vectorised path takes over."""
    global _triton_failure
    _triton_failure = reason
    warnings.warn(
        f"DADAM's Triton kernels cannot run here ({reason}); using the vectorised torch path for the rest of the "
        "process (same values, more launches and memory traffic)",
        RuntimeWarning,
        stacklevel=3,
    )


def _has_triton() -> bool:
    """Whether :mod:`dadam.kernels` has Triton (imported lazily: the core never imports Triton by itself)."""
    from dadam.kernels import HAS_TRITON

    return HAS_TRITON


def _paste_vectorised(images, pixels, offsets, sizes, boxes, patch_ids, active, alpha, max_size):
    """Gather/scatter over the padded patch grid, one channel at a time; fixed shapes, no host sync.

    Written for ``torch.compile`` too: the output is a fresh flat buffer (the image in memory order, then a trash
    region) mutated only through ``index_put_`` on that base tensor, never through an ``as_strided`` view.
    """
    nhwc = not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last)
    if not (nhwc or images.is_contiguous()):
        images = images.contiguous()
    B, C, H, W = images.shape
    sB, sC, sH, sW = images.stride()
    numel = images.numel()
    flat = (images.permute(0, 2, 3, 1) if nhwc else images).reshape(-1)  # memory order: a view, no copy
    # Flat output with a trash region after the image: invalid grid cells write to numel + (cell % TRASH) (plus the
    # channel's c * sC), spread over TRASH slots so that the GPU does not serialise millions of writes to one address.
    buf = torch.cat([flat, flat.new_zeros(_TRASH + (C - 1) * sC)])  # the one copy of the image (as a clone)
    out = buf[:numel].view(B, H, W, C).permute(0, 3, 1, 2) if nhwc else buf[:numel].view(B, C, H, W)
    mh, mw = max_size
    if numel == 0 or patch_ids.shape[1] == 0 or mh == 0 or mw == 0:
        return out
    dev = images.device
    # int32 indices when every intermediate fits (halves the index traffic); boxes are clamped first so that an
    # absurd box cannot wrap around into the image (the clamp keeps every out-of-image cell out of the image).
    small = buf.numel() + (mh + 1) * sH + (mw + 1) * sW < _INT32_LIMIT and pixels.numel() + mh * mw < _INT32_LIMIT
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
    trash = numel + (torch.arange(mh * mw, device=dev, dtype=idx).view(mh, mw) % _TRASH)  # (mh, mw)
    dst = torch.where(valid, b * sB + y * sH + x * sW, trash)  # (B, K, mh, mw) channel-0 index; trash where invalid
    patch = pixels[src]  # (B, K, mh, mw) uint8, gathered once for all channels
    a = alpha.to(torch.float32)[..., None, None]  # (B, K, 1, 1)
    for c in range(C):  # C is a shape: no host sync
        dst_c = dst + c * sC  # the same cells in channel c (the trash region is long enough for every channel)
        buf.index_put_((dst_c,), blend_values(patch, buf[dst_c], a))
    return out


def _paste_loop(images, pixels, offsets, sizes, boxes, patch_ids, active, alpha, *, inplace=False):
    """CPU-only path: one slice assignment per active patch, with host-side ints (free on the CPU).

    Works on NumPy views of the output and the bank (about 1 us per slice instead of torch's ~5 us per op), with
    the values of :func:`blend_values`: a paste copies the patch (``q / 255`` in float32 for float images, then
    rounded once to the image dtype); a blend computes ``alpha * q + (1 - alpha) * x`` as the same separately rounded
    float32 operations, then rounds half to even and clamps for uint8. Tensors off the CPU (``path="loop"`` asked
    for by name), bfloat16 images (NumPy has no bfloat16) and
    images that require grad take :func:`_paste_loop_torch`.
    """
    if images.device.type != "cpu" or images.dtype == torch.bfloat16 or images.requires_grad or pixels.requires_grad:
        return _paste_loop_torch(images, pixels, offsets, sizes, boxes, patch_ids, active, alpha, inplace=inplace)
    B, C, H, W = images.shape
    out = images if inplace else images.clone(memory_format=torch.preserve_format)
    if out.numel() == 0 or active.numel() == 0:
        return out
    K = active.shape[1]
    o = out.numpy()  # CPU-only path: (B, C, H, W) view of the output, torch's strides
    pix = pixels.numpy()  # CPU-only path: (P,) uint8 view of the bank
    on = active.reshape(-1).numpy()  # CPU-only path: (B*K,) bool
    slots = np.flatnonzero(on)  # CPU-only path: active slots, in order
    pid = patch_ids.reshape(-1).numpy()[slots]  # CPU-only path
    xy = boxes.reshape(-1, 4).numpy()[slots, :2]  # CPU-only path: (n, 2) x0, y0
    a32 = alpha.reshape(-1).to(torch.float32).numpy()[slots]  # CPU-only path: (n,) float32 weights
    info = np.concatenate([slots[:, None], xy, offsets.numpy()[pid, None], sizes.numpy()[pid]], 1)  # CPU-only path
    uint8 = images.dtype == torch.uint8
    f255 = np.float32(255.0)
    for (i, x0, y0, off, h, w), a in zip(info.tolist(), a32.tolist(), strict=True):  # CPU-only path: host ints
        b = i // K
        ys, ye, xs, xe = max(y0, 0), min(y0 + h, H), max(x0, 0), min(x0 + w, W)
        if ye <= ys or xe <= xs:
            continue
        patch = pix[off : off + h * w].reshape(h, w)[ys - y0 : ye - y0, xs - x0 : xe - x0]  # (h', w') uint8 view
        region = o[b, :, ys:ye, xs:xe]  # (C, h', w') view, broadcast over the channels
        if a >= 1:
            region[...] = patch if uint8 else patch.astype(np.float32) / f255  # exactly the patch
            continue
        a = np.float32(a)
        q = patch.astype(np.float32)
        if not uint8:
            q /= f255
        q *= a  # alpha * q
        mixed = region.astype(np.float32)
        mixed *= np.float32(1.0) - a  # (1 - alpha) * x, the float32 1 - alpha of blend_values
        mixed += q  # (C, h', w')
        if uint8:
            np.rint(mixed, out=mixed)  # round_to_uint8: half to even, clamped
            np.clip(mixed, 0, 255, out=mixed)
        region[...] = mixed  # one rounding to the image dtype (exact for uint8)
    return out


def _paste_loop_torch(images, pixels, offsets, sizes, boxes, patch_ids, active, alpha, *, inplace=False):
    """CPU-only path of :func:`_paste_loop` in torch ops (any dtype, autograd): one slice assignment per patch.

    Same values as :func:`blend_values`, with fewer ops: a paste (``alpha >= 1``) copies the patch (``q / 255`` for
    float images) without reading the background; a blend writes ``alpha * q + (1 - alpha) * x`` evaluated as the
    same separately rounded float32 operations (IEEE ``+`` and ``*`` commute, so the operand order is free).
    """
    B, C, H, W = images.shape
    out = images if inplace else images.clone(memory_format=torch.preserve_format)
    if out.numel() == 0 or active.numel() == 0:
        return out
    K = active.shape[1]
    sB, sC, sH, sW = out.stride()
    base = out.storage_offset()
    alpha32 = alpha.to(torch.float32)
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
    # float32 single-channel: divide in place in the image (no temporary); else divide the (h, w) patch once and copy
    # it to every channel (one op over C * h * w elements: ops above torch's grain size fork threads)
    fp32_inplace = fp32 and C == 1
    d255 = None if uint8 else torch.full((), 255.0)  # as in blend_values: an IEEE division by a tensor
    blend_a = blend_1ma = None
    for i, (x0, y0, off, h, w, on, paste) in enumerate(rows.tolist()):  # CPU-only path
        if not on:
            continue
        b = i // K
        ys, ye, xs, xe = max(y0, 0), min(y0 + h, H), max(x0, 0), min(x0 + w, W)
        if ye <= ys or xe <= xs:
            continue
        ph, pw = ye - ys, xe - xs
        patch = pixels.as_strided((ph, pw), (w, 1), off + (ys - y0) * w + (xs - x0))  # (h', w') uint8 view
        region = out.as_strided((C, ph, pw), (sC, sH, sW), base + b * sB + ys * sH + xs * sW)
        if paste:
            if uint8:
                region.copy_(patch)  # exactly the patch
            elif fp32_inplace:
                region.copy_(patch).div_(d255)  # q = float32(patch) / 255, exactly, in place
            else:
                region.copy_(patch.to(torch.float32).div_(d255))  # float32 q, rounded once to the image dtype
            continue
        if blend_a is None:
            blend_a = alpha32.reshape(-1)
            blend_1ma = 1 - blend_a
        a, one_minus_a = blend_a[i], blend_1ma[i]  # 0-d float32 tensors
        q = patch.to(torch.float32)
        if not uint8:
            q.div_(d255)
        q.mul_(a)  # alpha * q
        if uint8 or fp32:
            mixed = torch.mul(region, one_minus_a)  # (1 - alpha) * x, float32
        else:
            mixed = region.to(torch.float32).mul_(one_minus_a)
        mixed.add_(q)  # (C, h', w')
        if uint8:
            mixed.round_().clamp_(0, 255)  # round_to_uint8
        region.copy_(mixed)
    return out
