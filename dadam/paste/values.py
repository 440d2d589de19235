"""The value rule of DADAM's paste, defined once: what a patch pixel, its weight and the background make.

Every path (the CPU loops, the vectorised torch path, the Triton kernels, the offline reference) evaluates the same
float32 operations in the same order, so their outputs are bit-identical. For a slot with weight ``a`` (1.0 for a
paste, ``alpha`` for a blend), intensity map ``(g, o)`` and the option ``feather = F`` (pixels), the patch pixel
``q`` (uint8, the bank's 0..255 scale) at row ``r``, column ``c`` of the ``(h, w)`` patch and the background pixel
``x`` (the image's own scale) become, in float32:

1. **intensity map** (with ``match`` only): ``m = min(max(g * q + o, 0), 255)`` (the product and the sum each rounded,
   then the clamp to the valid range); without a map ``m = q``;
2. **scale**: ``p = m`` for uint8 images, ``p = m / 255`` (an IEEE division) for float images in ``[0, 1]``;
3. **weight** (:func:`feather_ramp`): ``w = a * min(1, (d + 0.5) / F)`` with ``d = min(r, c, h - 1 - r, w - 1 - c)``
   the pixel's distance in whole pixels to the nearest edge of its box (``d + 0.5``: the distance of its centre).
   The weight rises from ``a * 0.5 / F`` on the box's outermost pixels to full weight ``a`` from ``F`` pixels inside;
   ``F = 0``: ``w = a`` (the paper's hard edge);
4. **value** (:func:`blend_values`): ``v = p`` where ``w >= 1`` (exactly the patch value, whatever the background),
   else ``v = w * p + (1 - w) * x`` (``w * p``, ``1 - w``, ``(1 - w) * x`` and the sum each rounded: no fused
   multiply-add);
5. **output**: uint8 images :func:`round_to_uint8` ``(v)`` (half to even, clamped to 0..255), float images ``v`` cast
   to their dtype (round to nearest even).

With ``F = 0`` and no map this is the paper's hard paste and blend, bit for bit.

**Intensity matching** (``match``, :func:`intensity_map`): the map ``(g, o)`` of a slot makes the patch's mean
(``"mean"``: ``g = 1``) or mean and standard deviation (``"meanstd"``) equal the recipient's under the box:

- pixels: those of the slot's box that lie inside the image, the same set in the patch and in the recipient;
- values on the bank's 0..255 scale (:func:`stat_values`): the recipient's channel 0 (grayscale images repeat it),
  uint8 as it is, float images as ``round_to_uint8(255 * x)`` (a float32 product); the patch's uint8 pixels;
- integer sums per slot: ``n``, ``Sx = sum x``, ``Sxx = sum x^2``, ``Sq``, ``Sqq`` (int64, exact: their order does not
  matter, so every path and device gets the same numbers; exact for boxes up to 11.9 M pixels);
- then float32, each operation rounded once: ``mx = Sx / n``, ``mq = Sq / n``; ``Vx = n * Sxx - Sx^2`` and
  ``Vq = n * Sqq - Sq^2`` (int64, exact: ``n^2`` times the variances); ``"meanstd"``:
  ``g = clamp(sqrt(Vx / Vq), 1/4, 4)`` (:data:`MATCH_GAIN_RANGE`; ``g = 1`` for a flat patch, ``Vq = 0``),
  ``o = mx - g * mq``; ``"mean"``: ``g = 1``, ``o = mx - mq``. A slot with no pixel in the image: ``g = 1, o = 0``.

Statistics and map are computed per slot on the device without a host sync; the map is recorded in the params
(:class:`~dadam.sampling.DadamParams` ``gain`` / ``offset``), so a replay uses it as recorded.
"""

from __future__ import annotations

import numpy as np
import torch

from dadam.config import MATCH_MODES

__all__ = [
    "MATCH_GAIN_RANGE",
    "MATCH_MODES",
    "SUM_FIELDS",
    "blend_values",
    "feather_ramp",
    "intensity_map",
    "map_patch_values",
    "round_to_uint8",
    "sqrt_nearest",
    "stat_values",
]

MATCH_GAIN_RANGE = (0.25, 4.0)
"""The gain of ``match="meanstd"`` is clamped to this range: a nearly flat patch is not blown up into noise, and a
flat recipient region does not flatten the lesion away."""
SUM_FIELDS = ("n", "sum_x", "sum_xx", "sum_q", "sum_qq")
"""The integer sums of one slot (last axis of the sums tensor of :func:`intensity_map`)."""


def round_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round a float tensor half-to-even and clamp to ``0..255`` as uint8 (the one rounding rule of DADAM)."""
    return torch.round(x).clamp_(0, 255).to(torch.uint8)


def blend_values(patch: torch.Tensor, background: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``alpha * patch + (1 - alpha) * background`` in float32, converted to the background's dtype (steps 2, 4, 5).

    Args:
        patch: patch values on the 0..255 scale: uint8 bank pixels, or float32 values of :func:`map_patch_values`.
        background: image pixels (uint8 0..255, or float in [0, 1]); its dtype is the output dtype.
        alpha: float32 weights ``w`` (the slot weight times :func:`feather_ramp`), broadcastable; where
            ``alpha >= 1`` the result is exactly the patch value.

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


def feather_ramp(distance: torch.Tensor, feather: int) -> torch.Tensor:
    """The factor of the slot weight at a pixel ``distance`` whole pixels from the nearest box edge (step 3).

    ``min(1, (distance + 0.5) / feather)`` in float32 (an IEEE division); ``feather = 0``: 1 everywhere.

    Args:
        distance: integer distances ``d >= 0`` (``min(r, c, h - 1 - r, w - 1 - c)`` of a patch pixel).
        feather: the option, pixels (``>= 0``).

    Returns:
        float32 factors in ``(0, 1]``, the shape of ``distance``.

    Example:
        >>> feather_ramp(torch.arange(5), 4).tolist()
        [0.125, 0.375, 0.625, 0.875, 1.0]
    """
    if feather == 0:
        return torch.ones(distance.shape, dtype=torch.float32, device=distance.device)
    centre = distance.to(torch.float32) + 0.5
    # a tensor divisor (see blend_values): the IEEE quotient on every device
    return torch.clamp(centre / torch.full((), float(feather), device=centre.device), max=1.0)


def map_patch_values(patch: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The intensity map of step 1: ``min(max(gain * q + offset, 0), 255)`` in float32.

    Args:
        patch: uint8 patch pixels ``q``.
        gain, offset: float32 maps, broadcastable to ``patch``.

    Returns:
        float32 values in ``[0, 255]``, the broadcast shape.

    Example:
        >>> map_patch_values(torch.tensor([0, 100, 250], dtype=torch.uint8), torch.tensor(1.5), torch.tensor(-20.0))
        tensor([  0., 130., 255.])
    """
    return torch.clamp(gain * patch.to(torch.float32) + offset, 0.0, 255.0)


def stat_values(images: torch.Tensor) -> torch.Tensor:
    """Image pixels as the integer values the statistics of ``match`` use: uint8 as they are, float images (in
    ``[0, 1]``) as ``round_to_uint8(255 * x)`` (the float32 product, rounded half to even).

    Returns:
        uint8, the shape of ``images``.

    Example:
        >>> stat_values(torch.tensor([0.0, 0.5, 1.0])).tolist()
        [0, 128, 255]
    """
    if images.dtype == torch.uint8:
        return images
    return round_to_uint8(images.to(torch.float32) * 255)


def sqrt_nearest(x: torch.Tensor) -> torch.Tensor:
    """The IEEE square root of float32 values (correctly rounded), on every device.

    torch's CPU ``sqrt`` may go through MKL's vector math, which is not always correctly rounded (1 ulp off for some
    inputs); NumPy's float32 square root is the IEEE one, as are CUDA's ``sqrtf`` and Triton's ``sqrt_rn``.
    """
    if x.device.type == "cpu" and not x.requires_grad:
        return torch.from_numpy(np.asarray(np.sqrt(x.numpy())))  # CPU-only path
    return torch.sqrt(x)


def intensity_map(sums: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The map ``(gain, offset)`` of each slot from its integer statistics (see the module docstring).

    Args:
        sums: ``(..., 5)`` int64: ``n, Sx, Sxx, Sq, Sqq`` (:data:`SUM_FIELDS`) per slot; ``n = 0`` for inactive slots.
        mode: ``"mean"`` or ``"meanstd"``.

    Returns:
        ``(gain, offset)``, float32, shape ``sums.shape[:-1]``: ``(1, 0)`` where ``n = 0``.

    Shape:
        ``(B, K, 5)`` -> ``(B, K)``, ``(B, K)``.

    Example:
        >>> s = torch.tensor([[4, 400, 40400, 40, 800]])  # recipient 90, 110, 90, 110; patch 0, 20, 0, 20
        >>> [t.tolist() for t in intensity_map(s, "meanstd")]
        [[1.0], [90.0]]
    """
    if mode not in ("mean", "meanstd"):
        raise ValueError(f"mode must be 'mean' or 'meanstd', got {mode!r}")
    if sums.dtype != torch.int64 or sums.shape[-1:] != (5,):
        raise ValueError(f"sums must be (..., 5) int64 (n, Sx, Sxx, Sq, Sqq), got {sums.dtype} {tuple(sums.shape)}")
    n, sx, sxx, sq, sqq = sums.unbind(-1)
    nf = n.clamp(min=1).to(torch.float32)
    mx = sx.to(torch.float32) / nf  # tensor divisors: IEEE quotients on every device
    mq = sq.to(torch.float32) / nf
    if mode == "meanstd":
        vx = n * sxx - sx * sx  # exact int64: n^2 times the variances
        vq = n * sqq - sq * sq
        ratio = vx.to(torch.float32) / vq.clamp(min=1).to(torch.float32)
        gain = sqrt_nearest(ratio).clamp(*MATCH_GAIN_RANGE)
        gain = torch.where(vq > 0, gain, 1.0)
        offset = mx - gain * mq
    else:
        gain = torch.ones_like(mx)
        offset = mx - mq
    placed = n > 0
    return torch.where(placed, gain, 1.0), torch.where(placed, offset, 0.0)
