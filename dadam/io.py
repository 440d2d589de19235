"""Image I/O for chest X-rays (placeholder: the readers issue extends this; keep the signatures)."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

__all__ = ["read_image", "image_size"]


def read_image(path: str | os.PathLike, *, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """Read an image file as a grayscale ``(1, H, W)`` tensor (uint8 0..255, or float in [0, 1])."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"))
    x = torch.from_numpy(arr.copy())[None]
    return x if dtype == torch.uint8 else x.to(dtype) / 255.0


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file without decoding its pixels."""
    with Image.open(path) as im:
        return im.height, im.width
