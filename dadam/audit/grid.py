"""A grid of augmented images with each placed patch's box drawn and named (red: pasted, cyan: blended)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np
import torch

from dadam.files import atomic_write
from dadam.labels import CXR_LT_CLASSES
from dadam.sampling import MODE_BLEND, MODE_NONE, MODE_PASTE, DadamParams

__all__ = ["BLEND_COLOR", "PASTE_COLOR", "save_grid"]

PASTE_COLOR = (255, 40, 40)
BLEND_COLOR = (0, 200, 255)


def save_grid(
    images: torch.Tensor,
    params: DadamParams,
    path: str | os.PathLike,
    *,
    labels: torch.Tensor | None = None,
    class_names: Sequence[str] = CXR_LT_CLASSES,
    ncols: int = 4,
    width: int = 2,
    padding: int = 4,
    captions: bool = True,
) -> pathlib.Path:
    """A PNG grid of (augmented) images with each placed patch's box drawn and named.

    Boxes come from ``params`` (active slots): red (:data:`PASTE_COLOR`) for pasted patches, cyan
    (:data:`BLEND_COLOR`) for blended ones, labelled with the class name; the rectangle is drawn on the box's own
    outermost pixels. With ``captions`` each tile gets a caption strip at its bottom (mode and the positive labels).
    Tile ``b`` sits at row ``b // ncols``, column ``b % ncols``, its top-left at
    ``(padding + row * (H + padding), padding + col * (W + padding))`` (``torchvision.utils.make_grid``).

    Args:
        images: ``(B, C, H, W)``, C in {1, 3}; uint8, or float in [0, 1].
        params: the :class:`~dadam.sampling.DadamParams` of these images.
        path: the PNG to write (atomically).
        labels: ``(B, num_classes)`` labels for the captions (default ``params.labels``).
        class_names: names of the classes.
        ncols: tiles per row.
        width: box line width in pixels.
        padding: white pixels between tiles.
        captions: draw the caption strips.

    Returns:
        the path written.

    Shape:
        images ``(B, C, H, W)`` -> a PNG of ``rows * (H + padding) + padding`` by ``ncols * (W + padding) + padding``.

    Example:
        >>> out, y2, params = aug(images, labels, return_params=True)  # doctest: +SKIP
        >>> save_grid(out, params, "grid.png", ncols=4)  # doctest: +SKIP
    """
    from PIL import Image, ImageDraw
    from torchvision.utils import draw_bounding_boxes, make_grid

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
    if len(params) != images.shape[0]:
        raise ValueError(f"params are for {len(params)} images, got {images.shape[0]} images")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    images = images.detach().cpu()
    params = params.to("cpu")
    if images.dtype != torch.uint8:
        from dadam.ops import round_to_uint8

        images = round_to_uint8(images.float() * 255)
    labels = params.labels if labels is None else labels.detach().cpu()
    names = list(class_names)
    tiles = []
    for b in range(images.shape[0]):
        tile = images[b].expand(3, -1, -1).contiguous()
        act = params.active[b]
        if bool(act.any()):
            boxes = params.boxes[b][act].clone()
            boxes[:, 2:] -= 1  # PIL rectangles include their end pixel: draw on the box's own last row / column
            colors = [PASTE_COLOR if float(a) >= 1 else BLEND_COLOR for a in params.alpha[b][act]]
            box_names = [names[int(c)] for c in params.classes[b][act]]
            tile = draw_bounding_boxes(tile, boxes, labels=box_names, colors=colors, width=width)
        if captions:
            mode = {MODE_NONE: "unchanged", MODE_PASTE: "paste", MODE_BLEND: "blend"}[int(params.mode[b])]
            pos = [names[i] for i, v in enumerate(labels[b].tolist()) if v > 0.5]
            pil = Image.fromarray(tile.permute(1, 2, 0).numpy())
            draw = ImageDraw.Draw(pil)
            text = f"{mode}: {', '.join(pos) or '-'}"
            h = pil.height
            draw.rectangle([0, h - 14, pil.width, h], fill=(0, 0, 0))
            draw.text((3, h - 13), text, fill=(255, 255, 255))
            tile = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
        tiles.append(tile)
    grid = make_grid(torch.stack(tiles), nrow=ncols, padding=padding, pad_value=255)  # (3, H', W') uint8
    picture = Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy())
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: picture.save(f, format="PNG"))
