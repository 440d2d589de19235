"""One phantom frontal chest radiograph: anatomy, then lesions, then exposure and grain; a tight box per lesion."""

from __future__ import annotations

import numpy as np

from dadam.labels import NUM_CLASSES, class_index
from dadam.synthetic.anatomy import sample_anatomy
from dadam.synthetic.body import ChestLayers
from dadam.synthetic.drawing import box_from_mask, check_size, to_uint8
from dadam.synthetic.lesions import ANATOMY_FINDINGS, DRAW_ORDER, LESION_PAINTERS

__all__ = ["Box", "compose_radiograph", "render_chest", "render_chest_with_masks"]

#: One drawn lesion: ``(class_name, x0, y0, x1, y1)``, xyxy pixels, half-open, top-left origin.
Box = tuple[str, int, int, int, int]


def _check_labels(labels_row: np.ndarray) -> np.ndarray:
    row = np.asarray(labels_row)
    if row.shape != (NUM_CLASSES,):
        raise ValueError(f"labels_row must have shape ({NUM_CLASSES},), got {row.shape}")
    return row > 0.5


def compose_radiograph(layers: ChestLayers, rng: np.random.Generator) -> np.ndarray:
    """Density layers -> uint8 radiograph ``(size, size)`` with exposure, window, tone curve and grain."""
    anatomy, size = layers.anatomy, layers.anatomy.size
    img = 1.0 - np.exp(-np.float32(anatomy.attenuation) * layers.density())
    low, high = anatomy.window
    img -= np.float32(low)
    img *= np.float32(1.0 / (high - low))
    np.clip(img, 0.0, 1.0, out=img)
    img **= np.float32(anatomy.tone_gamma)
    # grain: uniform noise smoothed with a [1, 2, 1] kernel each way (near-Gaussian, ~0.6 px correlation)
    g = rng.random((size + 2, size + 2), dtype=np.float32)
    g = g[:, :-2] + 2 * g[:, 1:-1] + g[:, 2:]
    g = g[:-2] + 2 * g[1:-1] + g[2:]  # mean 8, std sqrt(3)
    g -= np.float32(8.0)
    g *= np.float32(anatomy.grain * 2.0 * 0.47 / np.sqrt(3.0))
    img += g
    return to_uint8(img)


def render_chest(labels_row: np.ndarray, *, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[Box]]:
    """Draw one phantom frontal chest radiograph with a lesion for each positive class.

    Args:
        labels_row: ``(26,)`` 0/1 in CXR-LT class order (``No Finding`` is ignored: it means "draw nothing").
        size: side of the square image in pixels (64 to 4096, :data:`~dadam.synthetic.drawing.MAX_SIZE`).
        rng: the image's generator; it is split into anatomy / lesion / grain streams, so the anatomy of a given
            ``rng`` state is the same whatever the labels (lesion-free and lesion renders differ only at lesions).

    Returns:
        ``(image, boxes)``: ``image`` uint8 ``(size, size)``; ``boxes`` a list of ``(class_name, x0, y0, x1, y1)``,
        tight half-open pixel boxes of each drawn lesion (several per class for ECG leads or pleural plaques;
        ``Cardiomegaly`` boxes the heart, ``Emphysema`` both lungs).

    Example:
        >>> y = np.zeros(26, np.float32); y[15] = 1  # Nodule
        >>> img, boxes = render_chest(y, size=128, rng=np.random.default_rng(0))
        >>> img.shape, [b[0] for b in boxes]
        ((128, 128), ['Nodule'])
    """
    img, boxes, _ = render_chest_with_masks(labels_row, size=size, rng=rng)
    return img, boxes


def render_chest_with_masks(
    labels_row: np.ndarray, *, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[Box], list[np.ndarray]]:
    """:func:`render_chest` plus the ``(size, size)`` bool mask of the lesion in each box (for polygons)."""
    size = check_size(size)
    positive = _check_labels(labels_row)
    anatomy_rng, lesion_rng, grain_rng = rng.spawn(3)
    anatomy = sample_anatomy(size, anatomy_rng)
    # anatomy-changing findings (drawn before the layers are built)
    changed = [name for name in ANATOMY_FINDINGS if positive[class_index(name)]]
    if "Cardiomegaly" in changed:
        k = lesion_rng.uniform(1.3, 1.5)
        to_left, to_right, vertical = anatomy.heart_radii
        anatomy.heart_radii = (to_left * k, to_right * k * 1.05, vertical * (1 + (k - 1) * 0.6))
    if "Enlarged Cardiomediastinum" in changed:
        anatomy.mediastinum_half_width *= lesion_rng.uniform(1.5, 1.8)
    if "Emphysema" in changed:  # flat low domes, blunt angles, dark lungs with few markings, a wider chest
        anatomy.dome_levels = (anatomy.dome_levels[0] + 0.06, anatomy.dome_levels[1] + 0.05)
        anatomy.costophrenic_depth *= 0.35
        anatomy.lung_air *= 1.3
        anatomy.lung_markings *= 0.45
        anatomy.half_width *= 1.04
    if positive.any():
        anatomy.set_pixel_grid()  # full-resolution body coordinates, for the lesions
    layers = ChestLayers(anatomy, anatomy_rng)
    drawn: list[tuple[str, np.ndarray]] = []
    y = anatomy.pixel_y
    for name in changed:
        if name == "Cardiomegaly":
            m = (layers.full.heart > 0.02) & (y < anatomy.dome_levels[1] + 0.03)
        elif name == "Enlarged Cardiomediastinum":
            heart_top = anatomy.heart_centre[1] - anatomy.heart_radii[2] * 0.6
            m = (layers.full.mediastinum > 0.5) & (layers.full.heart < 0.5) & (y > 0.12) & (y < heart_top)
        else:
            m = layers.full.lung_field > 0.5
        drawn.append((name, m))
    for name in DRAW_ORDER:
        if name in ANATOMY_FINDINGS or not positive[class_index(name)]:
            continue
        drawn.extend((name, m) for m in LESION_PAINTERS[name](layers, lesion_rng))
    boxes: list[Box] = []
    masks: list[np.ndarray] = []
    for name, m in drawn:
        box = box_from_mask(m)
        if box is not None:
            boxes.append((name, *box))
            masks.append(m)
    img = compose_radiograph(layers, grain_rng)
    return img, boxes, masks
