"""The paper's offline DADAM on one image: numpy, one patch at a time, the parity reference of the online op.

:func:`placements` turns one sample's :class:`~dadam.sampling.DadamParams` into a list of :class:`Placement` (patch
pixels, position, weight); :func:`augment_image` applies them to one ``(H, W)`` or ``(H, W, C)`` numpy image. It is
deliberately slow and obviously correct, and uses the value rule of :mod:`dadam.paste.values` (float32 arithmetic,
half-to-even rounding to uint8, a weight ``>= 1`` gives exactly the patch value; the feather ramp; the intensity map
of ``match``, measured here from the image where the params record none), so for the same params and options its
output is bit-identical to :class:`dadam.DiseasedAreaAugment`'s.

Writing an augmented copy of a whole label table to disk (params for every row, PNG images, ``labels.csv``, a
manifest, resume after a kill) is :mod:`dadam.export` (``python -m dadam.export --help``); its public names can also
be imported from here (``from dadam.offline import export``).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dadam.bank import PatchBank
from dadam.config import MATCH_MODES
from dadam.paste.values import MATCH_GAIN_RANGE
from dadam.sampling import DadamParams

__all__ = ["Placement", "augment_image", "match_map", "placements"]

# Names of the export machinery that this module also answers to: (module, attribute) where each one lives.
_ELSEWHERE = {
    "MANIFEST_VERSION": ("dadam.export", "MANIFEST_VERSION"),
    "ExportReport": ("dadam.export", "ExportReport"),
    "draw_params": ("dadam.export", "draw_params"),
    "export": ("dadam.export", "export"),
    "load_params": ("dadam.export", "load_params"),
    "make_augment": ("dadam.export", "make_augment"),
    "cat_params": ("dadam.sampling", "DadamParams.cat"),
    "labels_tensor": ("dadam.formats", "labels_tensor"),
}


def __getattr__(name: str) -> object:
    """Resolve the names of :data:`_ELSEWHERE` on first use (imported lazily: ``dadam.export`` imports this module)."""
    if name not in _ELSEWHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _ELSEWHERE[name]
    value = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_ELSEWHERE])


@dataclass(frozen=True)
class Placement:
    """One patch placed on one image.

    Attributes:
        patch: ``(h, w)`` uint8 patch pixels.
        x0: left column of the patch on the canvas (may be negative or run past the edge: clipped).
        y0: top row.
        alpha: weight of the patch (1.0 = paste: the result is exactly the patch).
        cls: class index of the patch.
        patch_id: index of the patch in the bank.
        gain, offset: the recorded intensity map, ``min(max(gain * q + offset, 0), 255)``; ``gain`` NaN: none
            recorded (measured from the image with ``match``, else no map). Default: no map.
        feather: pixels over which the weight rises from the box edge (0: the hard edge).
        match: ``"none"``, ``"mean"`` or ``"meanstd"``: how a map that is not recorded is measured.
    """

    patch: np.ndarray
    x0: int
    y0: int
    alpha: float
    cls: int = -1
    patch_id: int = -1
    gain: float = math.nan
    offset: float = 0.0
    feather: int = 0
    match: str = "none"


def placements(
    bank: PatchBank, params: DadamParams, index: int, *, feather: int = 0, match: str = "none"
) -> list[Placement]:
    """The patches that ``params`` place on sample ``index``, in slot order (host-side; not for hot paths).

    Args:
        bank: the bank the params refer to.
        params: params of a batch (e.g. from ``aug(..., return_params=True)`` or :func:`dadam.export.draw_params`).
        index: the sample.
        feather: the ``feather`` option the patches are pasted with (``DadamConfig.feather``).
        match: the ``match`` option (``DadamConfig.match``): measures the slots whose map ``params`` do not record.

    Returns:
        one :class:`Placement` per active slot of the sample.

    Example:
        >>> out = augment_image(image, placements(bank, params, 0))  # doctest: +SKIP
    """
    if not 0 <= index < len(params):
        raise ValueError(f"index must be in [0, {len(params)}), got {index}")
    if isinstance(feather, bool) or not isinstance(feather, int) or feather < 0:
        raise ValueError(f"feather must be an int >= 0, got {feather!r}")
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")
    active = params.active[index].cpu()
    maps = None if params.gain is None else (params.gain[index].tolist(), params.offset[index].tolist())
    out = []
    for k in range(active.shape[0]):
        if not bool(active[k]):
            continue
        pid = int(params.patch_ids[index, k])
        x0, y0 = (int(v) for v in params.boxes[index, k, :2])
        patch = bank.patch(pid).cpu().numpy()
        gain, offset = (math.nan, 0.0) if maps is None else (maps[0][k], maps[1][k])
        alpha, cls = float(params.alpha[index, k]), int(params.classes[index, k])
        out.append(Placement(patch, x0, y0, alpha, cls, pid, gain, offset, feather, match))
    return out


def augment_image(image: np.ndarray, patches: Sequence[Placement]) -> np.ndarray:
    """Paste / blend patches into one image, one patch at a time (the reference of :func:`dadam.ops.paste_patches`).

    Per patch, over the part of ``[y0, y0 + h) x [x0, x0 + w)`` inside the image, in float32 (the rule of
    :mod:`dadam.paste.values`): the intensity map ``m = clip(gain * q + offset, 0, 255)`` (measured from ``image``
    by :func:`match_map` where the placement's ``gain`` is NaN and its ``match`` is not ``"none"``; none where
    ``gain`` is NaN otherwise), ``p = m`` (uint8 images) or ``m / 255`` (float images in [0, 1]), the weight
    ``w = alpha * min(1, (d + 0.5) / feather)`` (``d`` the pixel's distance to the nearest box edge; ``w = alpha``
    without feather), then ``v = p`` where ``w >= 1`` else ``w * p + (1 - w) * x``; uint8 results are rounded half to
    even (``numpy.rint``) and clipped to 0..255, float results cast to the image dtype. Every channel gets the same
    grayscale patch. Patches are applied in order; maps are measured on the image as given.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, uint8 (0..255) or float16 / float32 (in [0, 1]). Not modified.
        patches: the :class:`Placement` list of this image (:func:`placements`).

    Returns:
        a new array, same shape and dtype.

    Shape:
        ``(H, W)`` -> ``(H, W)``; ``(H, W, C)`` -> ``(H, W, C)``.

    Example:
        >>> img = np.zeros((8, 8), np.uint8)
        >>> out = augment_image(img, [Placement(np.full((2, 2), 200, np.uint8), 1, 1, 0.6)])
        >>> int(out[1, 1]), int(out[0, 0])
        (120, 0)
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ValueError(
            f"image must be a (H, W) or (H, W, C) numpy array, got {type(image).__name__} "
            f"{getattr(image, 'shape', None)}"
        )
    if image.dtype not in (np.uint8, np.float16, np.float32):
        raise ValueError(f"image dtype must be uint8, float16 or float32, got {image.dtype}")
    out = image.copy()
    H, W = image.shape[:2]
    one = np.float32(1)
    for i, pl in enumerate(patches):
        patch = np.asarray(pl.patch)
        if patch.ndim != 2 or patch.dtype != np.uint8:
            raise ValueError(f"patch {i} must be a (h, w) uint8 array, got {patch.dtype} {patch.shape}")
        h, w = patch.shape
        ys, ye, xs, xe = max(pl.y0, 0), min(pl.y0 + h, H), max(pl.x0, 0), min(pl.x0 + w, W)
        if ye <= ys or xe <= xs:
            continue
        gain, offset = pl.gain, pl.offset
        if math.isnan(gain) and pl.match != "none":
            gain, offset = match_map(image, pl)
        q = patch[ys - pl.y0 : ye - pl.y0, xs - pl.x0 : xe - pl.x0].astype(np.float32)
        if not math.isnan(gain):
            q = np.clip(np.float32(gain) * q + np.float32(offset), np.float32(0), np.float32(255))
        if image.dtype != np.uint8:
            q = q / np.float32(255)
        a = np.full(q.shape, np.float32(pl.alpha), np.float32)
        if pl.feather:
            r = np.arange(ys - pl.y0, ye - pl.y0)[:, None]
            c = np.arange(xs - pl.x0, xe - pl.x0)[None, :]
            d = np.minimum(np.minimum(r, h - 1 - r), np.minimum(c, w - 1 - c)).astype(np.float32)
            a = a * np.minimum((d + np.float32(0.5)) / np.float32(pl.feather), one)
        region = out[ys:ye, xs:xe]  # (h', w') or (h', w', C) view
        if region.ndim == 3:
            q, a = q[:, :, None], a[:, :, None]
        v = np.where(a >= 1, q, a * q + (one - a) * region.astype(np.float32))
        if image.dtype == np.uint8:
            region[...] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
        else:
            region[...] = v.astype(image.dtype)
    return out


def match_map(image: np.ndarray, placement: Placement) -> tuple[float, float]:
    """The intensity map ``(gain, offset)`` of ``match`` for one placement on one image (numpy, one patch).

    Statistics over the placement's box inside the image: the image's channel 0 on the 0..255 scale (float images as
    ``rint(clip(255 * x, 0, 255))``) and the patch's pixels, summed as Python ints; the map in float32 scalars as in
    :func:`dadam.paste.values.intensity_map`.

    Returns:
        ``(gain, offset)`` as Python floats holding float32 values; ``(1.0, 0.0)`` for a box wholly outside the image.

    Example:
        >>> img = np.tile(np.array([[90, 110]], np.uint8), (2, 1))
        >>> match_map(img, Placement(np.array([[0, 20], [0, 20]], np.uint8), 0, 0, 1.0, match="meanstd"))
        (1.0, 90.0)
    """
    if placement.match not in MATCH_MODES[1:]:
        raise ValueError(f"placement.match must be one of {MATCH_MODES[1:]}, got {placement.match!r}")
    H, W = image.shape[:2]
    h, w = placement.patch.shape
    x0, y0 = placement.x0, placement.y0
    ys, ye, xs, xe = max(y0, 0), min(y0 + h, H), max(x0, 0), min(x0 + w, W)
    if ye <= ys or xe <= xs:
        return 1.0, 0.0
    x = image[ys:ye, xs:xe] if image.ndim == 2 else image[ys:ye, xs:xe, 0]
    if image.dtype != np.uint8:
        x = np.rint(np.clip(x.astype(np.float32) * np.float32(255), 0, 255))
    xi = [int(v) for v in x.reshape(-1)]
    qi = [int(v) for v in placement.patch[ys - y0 : ye - y0, xs - x0 : xe - x0].reshape(-1)]
    n, sx, sq = len(xi), sum(xi), sum(qi)

    def f32(v: int) -> np.float32:  # one rounding from the exact integer (no detour through float64)
        return np.array(v, np.int64).astype(np.float32)

    mx, mq = f32(sx) / f32(n), f32(sq) / f32(n)
    if placement.match == "mean":
        return 1.0, float(mx - mq)
    vx = n * sum(v * v for v in xi) - sx * sx
    vq = n * sum(v * v for v in qi) - sq * sq
    gain = np.float32(1)
    if vq > 0:
        lo, hi = (np.float32(v) for v in MATCH_GAIN_RANGE)
        gain = min(max(np.sqrt(f32(vx) / f32(vq)), lo), hi)
    return float(gain), float(mx - gain * mq)
