"""The paper's offline DADAM on one image: numpy, one patch at a time, the parity reference of the online op.

:func:`placements` turns one sample's :class:`~dadam.sampling.DadamParams` into a list of :class:`Placement` (patch
pixels, position, weight); :func:`augment_image` applies them to one ``(H, W)`` or ``(H, W, C)`` numpy image. It is
deliberately slow and obviously correct, and uses the value convention of :mod:`dadam.ops` (float32 arithmetic,
half-to-even rounding to uint8, ``alpha >= 1`` gives exactly the patch), so for the same params its uint8 output is
bit-identical to :class:`dadam.DiseasedAreaAugment`'s.

Writing an augmented copy of a whole label table to disk (params for every row, PNG images, ``labels.csv``, a
manifest, resume after a kill) is :mod:`dadam.export` (``python -m dadam.export --help``); its public names can also
be imported from here (``from dadam.offline import export``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dadam.bank import PatchBank
from dadam.sampling import DadamParams

__all__ = ["Placement", "augment_image", "placements"]

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
    """

    patch: np.ndarray
    x0: int
    y0: int
    alpha: float
    cls: int = -1
    patch_id: int = -1


def placements(bank: PatchBank, params: DadamParams, index: int) -> list[Placement]:
    """The patches that ``params`` place on sample ``index``, in slot order (host-side; not for hot paths).

    Args:
        bank: the bank the params refer to.
        params: params of a batch (e.g. from ``aug(..., return_params=True)`` or :func:`dadam.export.draw_params`).
        index: the sample.

    Returns:
        one :class:`Placement` per active slot of the sample.

    Example:
        >>> out = augment_image(image, placements(bank, params, 0))  # doctest: +SKIP
    """
    if not 0 <= index < len(params):
        raise ValueError(f"index must be in [0, {len(params)}), got {index}")
    active = params.active[index].cpu()
    out = []
    for k in range(active.shape[0]):
        if not bool(active[k]):
            continue
        pid = int(params.patch_ids[index, k])
        x0, y0 = (int(v) for v in params.boxes[index, k, :2])
        patch = bank.patch(pid).cpu().numpy()
        out.append(Placement(patch, x0, y0, float(params.alpha[index, k]), int(params.classes[index, k]), patch_id=pid))
    return out


def augment_image(image: np.ndarray, patches: Sequence[Placement]) -> np.ndarray:
    """Paste / blend patches into one image, one patch at a time (the reference of :func:`dadam.ops.paste_patches`).

    Per patch, over the part of ``[y0, y0 + h) x [x0, x0 + w)`` inside the image, in float32: ``v = q`` if
    ``alpha >= 1`` else ``alpha * q + (1 - alpha) * x`` with ``q`` the patch pixel (uint8 images) or ``q / 255``
    (float images in [0, 1]); uint8 results are rounded half to even (``numpy.rint``) and clipped to 0..255, float
    results cast to the image dtype. Every channel gets the same grayscale patch. Patches are applied in order.

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
    for i, pl in enumerate(patches):
        patch = np.asarray(pl.patch)
        if patch.ndim != 2 or patch.dtype != np.uint8:
            raise ValueError(f"patch {i} must be a (h, w) uint8 array, got {patch.dtype} {patch.shape}")
        h, w = patch.shape
        ys, ye, xs, xe = max(pl.y0, 0), min(pl.y0 + h, H), max(pl.x0, 0), min(pl.x0 + w, W)
        if ye <= ys or xe <= xs:
            continue
        q = patch[ys - pl.y0 : ye - pl.y0, xs - pl.x0 : xe - pl.x0].astype(np.float32)
        if image.dtype != np.uint8:
            q = q / np.float32(255)
        region = out[ys:ye, xs:xe]  # (h', w') or (h', w', C) view
        if region.ndim == 3:
            q = q[:, :, None]
        a = np.float32(pl.alpha)
        if a >= 1:
            v = np.broadcast_to(q, region.shape)
        else:
            v = a * q + (np.float32(1) - a) * region.astype(np.float32)
        if image.dtype == np.uint8:
            region[...] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
        else:
            region[...] = v.astype(image.dtype)
    return out
