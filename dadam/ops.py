"""Pure tensor ops of DADAM: paste / blend bank patches into a batch of images, and the intensity map of ``match``.
No randomness, inputs never mutated (unless ``inplace``).

The value rule, defined once in :mod:`dadam.paste.values` (all paths bit-identical): with the patch pixel ``q``
(uint8 from the bank), the background ``x``, the slot weight ``a`` (1.0 = paste) times the feather ramp
(``w = a * min(1, (d + 0.5) / feather)``, ``d`` the pixel's distance to the box edge) and the optional intensity map
``m = min(max(g * q + o, 0), 255)``, computed in float32,

- uint8 images: ``out = round_to_uint8(w * m + (1 - w) * x)``;
- float images (in ``[0, 1]``): ``out = (w * (m / 255) + (1 - w) * x).to(dtype)``;
- ``w >= 1`` gives exactly the (mapped) patch value, whatever the background.

With ``feather=0`` and no map this is the paper's hard paste. Rounding to uint8 is :func:`round_to_uint8` (half to
even, clamped to 0..255).

Backends (:func:`paste_backend`): on CUDA the Triton kernels of :mod:`dadam.kernels` (``"triton"``), or the
vectorised torch path of :mod:`dadam.paste.vectorised` when Triton is missing or cannot build its kernel on this
machine (the reason is in the warning and in the backend string); on the CPU the slice loop of
:mod:`dadam.paste.loop` (``"cpu-loop"``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

from dadam.config import MATCH_MODES
from dadam.paste.loop import box_sums_loop, paste_loop
from dadam.paste.values import blend_values, intensity_map, round_to_uint8
from dadam.paste.vectorised import box_sums_vectorised, paste_vectorised

__all__ = [
    "OVERLAP_MESSAGE",
    "blend_values",
    "check_image_values",
    "match_intensity",
    "paste_backend",
    "paste_patches",
    "round_to_uint8",
]

SUPPORTED_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32)
# The device-side assert of overlapping active patches (a ValueError with the sample and slots on the CPU).
OVERLAP_MESSAGE = "DADAM: two active patches of one sample share image pixels (were replayed params edited?)"
PATHS = ("auto", "triton", "vectorised", "loop")
_T = TypeVar("_T")


def check_image_values(
    images: torch.Tensor, boxes: torch.Tensor | None = None, active: torch.Tensor | None = None
) -> None:
    """Float images must be in ``[0, 1]`` (uint8 always is in range).

    On the CPU a ``ValueError`` names the range found; on a GPU a device-side assert (``torch._assert_async``, no host
    sync) stops the process at the next synchronisation. With ``boxes`` ``(B, K, 4)`` and ``active`` ``(B, K)`` (a
    call's params), the CPU checks only the pixels under the active patches, the ones DADAM reads or replaces: a
    whole-image scan would cost a fifth of an out-of-place paste, and an image on the wrong scale (0..255, or already
    normalised) shows it under any patch.
    """
    if not images.is_floating_point() or images.numel() == 0:
        return
    if boxes is not None and images.device.type == "cpu":
        H, W = images.shape[2:]
        slots = active.reshape(-1).nonzero().flatten().tolist()  # CPU-only path: host ints are free here
        rows = boxes.reshape(-1, 4)[slots].tolist()  # CPU-only path
        K = active.shape[1]
        ranges = [
            torch.aminmax(images[i // K, :, max(y0, 0) : min(y1, H), max(x0, 0) : min(x1, W)])
            for i, (x0, y0, x1, y1) in zip(slots, rows, strict=True)
            if min(y1, H) > max(y0, 0) and min(x1, W) > max(x0, 0)
        ]
        if not ranges:
            return
        low, high = torch.stack([r.min for r in ranges]).min(), torch.stack([r.max for r in ranges]).max()
    else:
        low, high = torch.aminmax(images)  # NaN propagates and fails the test below
    if images.device.type != "cpu":
        torch._assert_async((low >= 0) & (high <= 1), "DADAM: float images must be in [0, 1]")
    elif not (float(low) >= 0 and float(high) <= 1):
        raise ValueError(
            f"images ({images.dtype}) must be in [0, 1], got values in [{float(low):g}, {float(high):g}]; apply "
            "DADAM to images scaled to [0, 1] (or uint8), before normalising them"
        )


def _check(images, pixels, offsets, sizes, boxes, patch_ids, active, alpha=None) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if images.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"images dtype must be one of {SUPPORTED_DTYPES}, got {images.dtype}")
    if pixels.dtype != torch.uint8 or pixels.ndim != 1:
        raise ValueError(f"pixels must be a flat uint8 tensor, got {pixels.dtype} {tuple(pixels.shape)}")
    B = images.shape[0]
    K = patch_ids.shape[1] if patch_ids.ndim == 2 else -1
    slots = {"boxes": (boxes, (B, K, 4)), "patch_ids": (patch_ids, (B, K)), "active": (active, (B, K))}
    if alpha is not None:
        slots["alpha"] = (alpha, (B, K))
    for name, (t, shape) in slots.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for {B} images, got {tuple(t.shape)}")
    if offsets.ndim != 1 or sizes.shape != (offsets.shape[0], 2):
        raise ValueError(f"offsets (N,) and sizes (N, 2) do not match: {tuple(offsets.shape)}, {tuple(sizes.shape)}")
    named = {"pixels": pixels, "offsets": offsets, "sizes": sizes, **{name: t for name, (t, _) in slots.items()}}
    for name, t in named.items():
        if t.device != images.device:
            raise ValueError(f"{name} is on {t.device} but images are on {images.device}")


def _check_options(images, patch_ids, gain, offset, feather) -> None:
    """``gain`` / ``offset``: both None or both ``(B, K)`` floating tensors on the images' device; ``feather`` an int
    ``>= 0``."""
    if isinstance(feather, bool) or not isinstance(feather, int) or feather < 0:
        raise ValueError(f"feather must be an int >= 0 (pixels), got {feather!r}")
    if (gain is None) != (offset is None):
        raise ValueError(
            f"gain and offset go together: got gain {'None' if gain is None else 'a tensor'} and offset "
            f"{'None' if offset is None else 'a tensor'}; pass both (the intensity map) or neither"
        )
    if gain is None:
        return
    shape = tuple(patch_ids.shape)
    for name, t in (("gain", gain), ("offset", offset)):
        if tuple(t.shape) != shape or not t.is_floating_point():
            raise ValueError(f"{name} must be a float tensor of shape {shape} (one per slot), got {t.dtype} "
                             f"{tuple(t.shape)}")  # fmt: skip
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
    gain: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    feather: int = 0,
) -> torch.Tensor:
    """Paste (``alpha = 1``) or blend bank patches into images, out of place (default) or in place.

    Patch ``patch_ids[b, k]`` (``sizes[id] = (h, w)`` pixels starting at ``pixels[offsets[id]]``) goes to the
    canvas region starting at ``boxes[b, k, :2] = (x0, y0)``, i.e. ``[y0, y0 + h) x [x0, x0 + w)`` (the box's
    ``x1, y1`` are not read; :func:`dadam.sampling.sample` keeps them equal to ``x0 + w, y0 + h``), the same
    grayscale value in every channel, with the value rule of :mod:`dadam.paste.values` (``feather``: the weight
    ramps up from the box edge; ``gain`` / ``offset``: the patch's intensity map). Pixels of a region outside the
    image are dropped. Active patches of one sample must not share an image pixel (the sampler never places them
    so): on the CPU that raises a ``ValueError``, on a GPU a device-side assert (no host sync).

    Paths with bit-identical results: ``"triton"`` (:mod:`dadam.kernels`: out of place, one kernel writes every
    output pixel; in place, one kernel writes only the patch pixels; on CPU tensors it runs under Triton's slow
    interpreter, for tests), ``"vectorised"`` (pure torch, :mod:`dadam.paste.vectorised`: one gather/scatter per
    channel over a padded ``(B, K, max_h, max_w)`` grid of patch pixels, no host sync) and ``"loop"`` (slicing one
    active patch at a time with host-side ints, :mod:`dadam.paste.loop`). ``"auto"`` takes the backend of
    :func:`paste_backend`: the loop on the CPU; Triton on a GPU, or the vectorised path when Triton is missing or
    cannot build its kernel here (one ``RuntimeWarning`` with the reason; any other error propagates).

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
            float pixels in ``[0, 1]`` (those it reads: every pixel out of place; in place the background under
            blends and feather ramps) and stores 0 into ``ok`` on a bad value or overlapping patches instead of asserting; the caller
            asserts ``ok`` once. On the CPU both checks raise a ``ValueError`` and ``ok`` is left alone.
        gain, offset: ``(B, K)`` float32 intensity map of each slot, ``m = min(max(gain * q + offset, 0), 255)`` on the
            bank's 0..255 scale (:func:`match_intensity` computes it; ``DadamParams.gain`` / ``offset`` record it);
            None (default): no map.
        feather: pixels on the canvas over which a slot's weight rises from the box edge to full weight
            (``w = alpha * min(1, (d + 0.5) / feather)``); 0 (default): the hard edge. With ``feather > 0`` a paste
            reads the background under its ramp.

    Returns:
        a new tensor like ``images`` (same shape, dtype, device and memory format), or ``images`` when ``inplace``.

    Shape:
        images ``(B, C, H, W)``, boxes ``(B, K, 4)``, patch_ids / active / alpha / gain / offset ``(B, K)``
        -> ``(B, C, H, W)``.

    Example:
        >>> out = paste_patches(images, bank.pixels, bank.offsets, bank.sizes, params.boxes,  # doctest: +SKIP
        ...                     params.patch_ids, params.active, params.alpha, max_size=bank.max_size)
    """
    _check(images, pixels, offsets, sizes, boxes, patch_ids, active, alpha)
    _check_options(images, patch_ids, gain, offset, feather)
    if path not in PATHS:
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
    options = dict(gain=gain, offset=offset, feather=feather)
    cpu = images.device.type == "cpu" and not torch.compiler.is_compiling()  # compiled: the device-side checks
    if cpu:
        _check_overlaps_cpu(sizes, boxes, patch_ids, active, *images.shape[2:])
        if ok is not None:
            check_image_values(images, boxes, active)
    path, out = _try_triton(path, cpu, lambda: _triton(*args, inplace=inplace, ok=ok, **options))
    if out is not None:
        return out
    if not cpu:
        _check_on_device(images, sizes, boxes, patch_ids, active, ok)  # asserted, or folded into ok
    if path == "loop":
        return paste_loop(*args, inplace=inplace, **options)
    out = paste_vectorised(*args, max_size, **options)
    return images.copy_(out) if inplace else out


def match_intensity(
    images: torch.Tensor,
    pixels: torch.Tensor,
    offsets: torch.Tensor,
    sizes: torch.Tensor,
    boxes: torch.Tensor,
    patch_ids: torch.Tensor,
    active: torch.Tensor,
    *,
    mode: str,
    max_size: tuple[int, int],
    path: str = "auto",
    ok: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The intensity map ``(gain, offset)`` of each slot: its patch's mean (``mode="mean"``) or mean and standard
    deviation (``"meanstd"``) made equal to the recipient's under the box (:func:`dadam.paste.values.intensity_map`).

    Statistics over the slot's box inside the image, on the bank's 0..255 scale (the recipient's channel 0; float
    images as ``round_to_uint8(255 * x)``), summed exactly as int64, then mapped in float32: every path gives the same
    bits. On CUDA one Triton launch (:mod:`dadam.kernels.match`) and no host sync; the paths and ``"auto"`` are those
    of :func:`paste_patches` (``"loop"`` copies off-CPU tensors to the CPU).

    Args:
        images: ``(B, C, H, W)`` as for :func:`paste_patches` (not modified).
        pixels, offsets, sizes, boxes, patch_ids, active: as for :func:`paste_patches`.
        mode: ``"mean"`` or ``"meanstd"``.
        max_size: ``(max_h, max_w)`` of the bank's patches (the vectorised path's grid).
        path: ``"auto"``, ``"triton"``, ``"vectorised"`` or ``"loop"``.
        ok: the caller's ``ok`` word (see :func:`paste_patches`): on a GPU the kernel stores 0 into it for a float
            pixel outside ``[0, 1]`` it reads; on the CPU the values are checked with a ``ValueError``.

    Returns:
        ``(gain, offset)``: ``(B, K)`` float32 each on the images' device; ``(1, 0)`` for inactive slots and boxes
        wholly outside the image.

    Shape:
        images ``(B, C, H, W)``, boxes ``(B, K, 4)``, patch_ids / active ``(B, K)`` -> ``(B, K)``, ``(B, K)``.

    Example:
        >>> gain, offset = match_intensity(images, bank.pixels, bank.offsets, bank.sizes,  # doctest: +SKIP
        ...                                params.boxes, params.patch_ids, params.active, mode="meanstd",
        ...                                max_size=bank.max_size)
        >>> out = paste_patches(..., gain=gain, offset=offset)  # doctest: +SKIP
    """
    _check(images, pixels, offsets, sizes, boxes, patch_ids, active)
    if mode not in MATCH_MODES[1:]:
        raise ValueError(f"mode must be one of {MATCH_MODES[1:]}, got {mode!r}")
    if path not in PATHS:
        raise ValueError(f"path must be 'auto', 'triton', 'vectorised' or 'loop', got {path!r}")
    args = (images, pixels, offsets, sizes, boxes, patch_ids, active)
    cpu = images.device.type == "cpu" and not torch.compiler.is_compiling()
    if cpu and ok is not None:
        check_image_values(images, boxes, active)
    path, out = _try_triton(path, cpu, lambda: _match_triton(*args, mode=mode, ok=ok))
    if out is not None:
        return out
    sums = box_sums_loop(*args) if path == "loop" else box_sums_vectorised(*args, max_size)  # (B, K, 5) int64
    return intensity_map(sums, mode)


def _try_triton(path: str, cpu: bool, kernel: Callable[[], _T]) -> tuple[str, _T | None]:
    """Run ``kernel()`` (a Triton path) where ``path`` takes it: ``"triton"``, or ``"auto"`` on a GPU while Triton
    can run here. Returns the path for the torch code and the kernel's result (None when it did not run: then the
    path is ``"loop"``, ``"vectorised"`` or the one asked for). With ``"auto"``, a kernel that cannot be built here
    (:class:`~dadam.kernels.KernelBuildError`) records the reason, warns once and leaves the path ``"vectorised"``;
    any other error propagates."""
    auto = path == "auto"
    if auto:
        path = "loop" if cpu else _gpu_path()
    if path != "triton":
        return path, None
    if not auto:
        return path, kernel()
    try:
        return path, kernel()
    except Exception as e:
        from dadam.kernels import KernelBuildError

        if not isinstance(e, KernelBuildError):
            raise
        _fall_back(f"{type(e).__name__}: {e}")
        return "vectorised", None


def _triton(*args: torch.Tensor, ok: torch.Tensor | None, **options) -> torch.Tensor:
    """:func:`dadam.kernels.paste_patches_triton` (imported on first use), checking float values into ``ok``."""
    from dadam.kernels import paste_patches_triton

    return paste_patches_triton(*args, ok=ok, check_values=ok is not None, **options)


def _match_triton(*args: torch.Tensor, mode: str, ok: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dadam.kernels.match_intensity_triton` (imported on first use), checking float values into ``ok``."""
    from dadam.kernels import match_intensity_triton

    return match_intensity_triton(*args, mode=mode, ok=ok, check_values=ok is not None)


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
        stacklevel=4,  # the caller of paste_patches / match_intensity
    )


def _has_triton() -> bool:
    """Whether :mod:`dadam.kernels` has Triton (imported lazily: the core never imports Triton by itself)."""
    from dadam.kernels import HAS_TRITON

    return HAS_TRITON
