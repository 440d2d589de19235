"""Image I/O for chest X-rays: PNG (8/16 bit, gray/RGB/RGBA), JPEG and DICOM to a grayscale ``(1, H, W)`` tensor.

pydicom is an optional dependency (``pip install dadam-fpsm[dicom]``): it is imported inside the DICOM functions
only, so the rest of the package works without it. JPEG-compressed DICOM needs a pixel handler (Pillow suffices for
JPEG baseline).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import torch
from PIL import Image

__all__ = ["image_size", "is_dicom", "read_image"]

_DICOM_SUFFIXES = {".dcm", ".dicom"}


def _check_file(path: str | os.PathLike) -> pathlib.Path:
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p}")
    return p


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM file: a ``.dcm``/``.dicom`` suffix or the ``DICM`` magic at byte 128."""
    p = pathlib.Path(path)
    if p.suffix.lower() in _DICOM_SUFFIXES:
        return True
    with open(p, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _import_pydicom():
    try:
        import pydicom
    except ImportError as e:  # pragma: no cover - pydicom is in the dev extras
        raise ImportError("reading DICOM needs pydicom: pip install 'dadam-fpsm[dicom]'") from e
    return pydicom


def _dicom_to_unit(p: pathlib.Path) -> np.ndarray:
    """Decode a DICOM file to float32 in [0, 1] (modality LUT, VOI LUT/window, MONOCHROME1 inverted, min-max)."""
    pydicom = _import_pydicom()
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(p)
        if "PixelData" not in ds:
            raise ValueError("no PixelData element")
        arr = ds.pixel_array
    except Exception as e:
        raise ValueError(f"cannot decode DICOM file {p}: {type(e).__name__}: {e}") from e
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ValueError(f"{p}: multi-frame DICOM ({frames} frames) is not supported; expected one radiograph")
    if samples == 3:  # colour DICOM (rare for radiographs): pixel_array is RGB after decoding.
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    else:
        arr = apply_modality_lut(arr, ds)  # rescale slope / intercept (or modality LUT)
        arr = apply_voi_lut(arr, ds)  # VOI LUT or window centre/width when present, else unchanged
    arr = np.asarray(arr, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":  # 0 = white: invert
        arr = 1.0 - arr
    return arr


def _open_error(p: pathlib.Path, e: Exception) -> ValueError:
    """The ValueError of a file PIL cannot open or decode, naming the file (and the fix for oversized images)."""
    if isinstance(e, Image.DecompressionBombError):
        return ValueError(
            f"{p}: {e}; PIL refuses images this large as a guard against decompression bombs. If the file is a "
            "genuine radiograph, raise the limit with PIL.Image.MAX_IMAGE_PIXELS = <pixels> before reading it"
        )
    return ValueError(f"cannot read image file {p}: {type(e).__name__}: {e}")


def _pil_to_array(p: pathlib.Path) -> tuple[np.ndarray, float]:
    """Decode a PIL-readable file to a 2-D array and the value that means white (255 or 65535, 1.0 for float)."""
    try:
        with Image.open(p) as im:
            frames = int(getattr(im, "n_frames", 1) or 1)
            if frames == 1:
                im.load()
                decoded = _pil_pixels(im)
            file_format = im.format
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _open_error(p, e) from e
    if frames > 1:
        raise ValueError(
            f"{p}: {file_format} file with {frames} frames; expected one radiograph (save its first frame alone)"
        )
    return decoded


def _pil_pixels(im: Image.Image) -> tuple[np.ndarray, float]:
    """The pixels of a loaded PIL image as a 2-D array, and the value that means white."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im).astype(np.float32), 65535.0
    if mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float32)
        if mode == "I" and im.format == "PNG":  # older Pillow opens 16-bit gray PNG as "I"
            return arr, 65535.0
        # 32-bit integer or float images have no fixed white level: min-max to [0, 1].
        lo, hi = float(arr.min()), float(arr.max())
        return ((arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)), 1.0
    if mode == "L":
        return np.asarray(im), 255.0
    if mode == "LA":
        return np.asarray(im.getchannel("L")), 255.0
    if mode in ("RGB", "RGBA"):  # PIL's luma of the RGB channels; alpha is ignored
        return np.asarray(im.convert("L")), 255.0
    # P, CMYK, 1, ...: through RGB to the ITU-R 601 luminance.
    return np.asarray(im.convert("RGB").convert("L")), 255.0


def _resolve_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, bool):
        raise TypeError(f"size must be an int, an (H, W) tuple or None, got {size!r}")
    if isinstance(size, int):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) for s in size)):
        raise TypeError(f"size must be an int, an (H, W) tuple of ints or None, got {size!r}")
    if min(size) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return int(size[0]), int(size[1])


def read_image(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.uint8,
    size: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Read a chest X-ray as a grayscale ``(1, H, W)`` tensor.

    * 8-bit files are returned as they are (uint8), or divided by 255 (float).
    * 16-bit PNG/TIFF are scaled by their full range (``x / 65535``), never clipped: uint8 output is
      ``round(x * 255 / 65535)``.
    * RGB/RGBA/palette files become the ITU-R 601 luminance of RGB; the alpha channel is ignored (some NIH
      ChestX-ray14 PNGs are RGBA).
    * DICOM (``.dcm``/``.dicom`` or ``DICM`` magic) goes through pydicom: rescale slope/intercept (modality LUT),
      VOI LUT or window centre/width when present, min-max to the full range, MONOCHROME1 inverted.

    Args:
        path: The image file.
        dtype: ``torch.uint8`` (0..255) or a floating dtype (values in [0, 1]).
        size: Resize the image (antialiased bilinear, ``torchvision.transforms.v2.functional.resize``): an int gives a
            square ``(size, size)`` image (the aspect ratio is not kept, as chest X-ray pipelines do), a tuple is
            ``(H, W)``. None keeps the file's size.

    Returns:
        The image tensor.

    Shape:
        Output: ``(1, H, W)``, ``(H, W)`` = the file's size or ``size``.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: naming the path, if the file cannot be decoded, holds several frames (animated GIF, multi-page
            TIFF) or exceeds PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``); or if ``dtype``/``size``
            is invalid.

    Example:
        >>> x = read_image("00000001_000.png", dtype=torch.float32, size=512)  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        torch.Size([1, 512, 512])
    """
    if dtype != torch.uint8 and not dtype.is_floating_point:
        raise ValueError(f"dtype must be torch.uint8 or a floating dtype, got {dtype}")
    out_size = _resolve_size(size)
    p = _check_file(path)
    if is_dicom(p):
        arr, white = _dicom_to_unit(p), 1.0
    else:
        arr, white = _pil_to_array(p)
    if arr.ndim != 2:
        raise ValueError(f"{p}: decoded to an array of shape {arr.shape}; expected a 2-D grayscale image")
    if white == 255.0 and arr.dtype == np.uint8 and out_size is None:
        arr = np.ascontiguousarray(arr)
        x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())[None]  # (1, H, W) uint8
        return x if dtype == torch.uint8 else x.to(dtype) / 255.0
    work = np.float64 if dtype == torch.float64 else np.float32
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=work))[None] / white  # (1, H, W) float in [0, 1]
    if out_size is not None and tuple(x.shape[-2:]) != out_size:
        from torchvision.transforms.v2 import functional as TF

        x = TF.resize(x, list(out_size), antialias=True).clamp_(0.0, 1.0)
    if dtype == torch.uint8:
        return (x * 255.0).round_().to(torch.uint8)
    return x.to(dtype)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file without decoding its pixels.

    PIL reads only the header of PNG/JPEG/TIFF files; DICOM's Rows/Columns are read with pydicom's
    ``stop_before_pixels``.

    Args:
        path: The image file.

    Returns:
        ``(height, width)`` in pixels.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the file is not a readable image (the message names the path).

    Example:
        >>> image_size("00000001_000.png")  # doctest: +SKIP
        (1024, 1024)
    """
    p = _check_file(path)
    if is_dicom(p):
        pydicom = _import_pydicom()
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        except Exception as e:
            raise ValueError(f"cannot read the DICOM header of {p}: {type(e).__name__}: {e}") from e
    try:
        with Image.open(p) as im:
            return im.height, im.width
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _open_error(p, e) from e
