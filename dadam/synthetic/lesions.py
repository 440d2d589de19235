"""Lesion painters of the phantom chest: one function per CXR-LT class that edits the body's density maps.

A painter gets the chest's :class:`~dadam.synthetic.body.ChestLayers` and the lesion generator, draws its finding
(adding density, scaling the lung air or markings) and returns the ``(H, W)`` bool mask of each thing it drew; the
caller turns each mask into a tight box. Three findings change the anatomy itself instead (Cardiomegaly, Enlarged
Cardiomediastinum, Emphysema; see :data:`ANATOMY_FINDINGS`) and are drawn by :mod:`dadam.synthetic.chest`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from dadam.labels import CXR_LT_CLASSES, NO_FINDING
from dadam.synthetic.body import SIDES, ChestLayers
from dadam.synthetic.drawing import blur, disk, polyline, smooth_noise, smoothstep

__all__ = ["ANATOMY_FINDINGS", "DRAW_ORDER", "LESION_PAINTERS", "LesionPainter", "lesion_mask"]

#: ``painter(layers, rng) -> masks``: draws one finding into ``layers``, returns the ``(H, W)`` bool mask of each part.
LesionPainter = Callable[[ChestLayers, np.random.Generator], list[np.ndarray]]


def _window(layers: ChestLayers, x0: float, y0: float, rx: float, ry: float) -> tuple[slice, slice]:
    """Full-resolution pixel window ``(rows, cols)`` covering body coordinates ``x0 +- rx``, ``y0 +- ry``."""
    anatomy = layers.anatomy
    (px0, px1), (py0, py1) = anatomy.to_pixels(np.array([x0 - rx, x0 + rx]), np.array([y0 - ry, y0 + ry]))
    c0, c1 = max(0, int(np.floor(px0)) - 2), min(anatomy.size, int(np.ceil(px1)) + 3)
    r0, r1 = max(0, int(np.floor(py0)) - 2), min(anatomy.size, int(np.ceil(py1)) + 3)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _blob(
    layers: ChestLayers, x0: float, y0: float, radius: float, rng: np.random.Generator, *, lobulation: float = 0.15
) -> np.ndarray:
    """Lobulated soft disk around body point ``(x0, y0)`` of ``radius`` (fraction); drawn in its window only."""
    phases = rng.uniform(0, 2 * np.pi, 3)
    extent = radius * (1 + 2.0 * lobulation) + 0.004
    rows, cols = _window(layers, x0, y0, extent, extent)
    size = layers.anatomy.size
    out = np.zeros((size, size), np.float32)
    x, y = layers.anatomy.pixel_x[:, cols] - x0, layers.anatomy.pixel_y[rows] - y0
    angle = np.arctan2(y, x)
    edge = radius * (
        1
        + lobulation
        * (np.sin(3 * angle + phases[0]) + 0.6 * np.sin(5 * angle + phases[1]) + 0.4 * np.sin(7 * angle + phases[2]))
    )
    out[rows, cols] = smoothstep(edge - np.sqrt(x * x + y * y), -0.0015, 0.0025)
    return out


def _cloud(
    layers: ChestLayers, side: int, x0: float, y0: float, rx: float, ry: float, rng, *, patchy: float
) -> np.ndarray:
    """Patchy airspace opacity: an elliptic envelope times smooth noise, inside one lung; drawn in its window."""
    rows, cols = _window(layers, x0, y0, rx, ry)
    size = layers.anatomy.size
    out = np.zeros((size, size), np.float32)
    h, w = rows.stop - rows.start, cols.stop - cols.start
    if h == 0 or w == 0:
        return out
    x, y = (layers.anatomy.pixel_x[:, cols] - x0) / rx, (layers.anatomy.pixel_y[rows] - y0) / ry
    envelope = np.clip(1 - np.sqrt(x * x + y * y), 0, 1) ** 0.6
    noise = smooth_noise(h, w, size / 22, rng)
    out[rows, cols] = np.clip(envelope * (1.0 + patchy * noise) - 0.15, 0, 1) * layers.full_sides[side].lung[rows, cols]
    return out


def lesion_mask(density: np.ndarray, frac: float = 0.3) -> np.ndarray:
    """Where ``|density|`` exceeds ``frac`` of its maximum (at least 1e-3): the drawn lesion as a bool mask."""
    peak = float(np.abs(density).max())
    return np.abs(density) > max(frac * peak, 1e-3) if peak > 0 else np.zeros(density.shape, bool)


# ----------------------------------------------------------------------------------------------- focal opacities
def _paint_nodule(layers, rng):
    _, x0, y0 = layers.lung_point(rng)
    m = _blob(layers, x0, y0, rng.uniform(0.006, 0.013), rng, lobulation=0.05)
    layers.add_density(rng.uniform(0.3, 0.45) * m)
    return [lesion_mask(m)]


def _paint_mass(layers, rng):
    _, x0, y0 = layers.lung_point(rng)
    m = _blob(layers, x0, y0, rng.uniform(0.03, 0.055), rng, lobulation=0.12)
    layers.add_density(rng.uniform(0.35, 0.5) * m * (0.85 + 0.15 * m))
    return [lesion_mask(m)]


def _paint_lung_lesion(layers, rng):
    _, x0, y0 = layers.lung_point(rng, zone="upper")
    m = _blob(layers, x0, y0, rng.uniform(0.018, 0.03), rng, lobulation=0.3)
    layers.add_density(rng.uniform(0.3, 0.42) * m)
    return [lesion_mask(m)]


def _cloud_painter(zone: str, size: tuple[float, float], density: tuple[float, float], patchy: float) -> LesionPainter:
    """A painter of patchy airspace opacity in ``zone`` (consolidation, pneumonia, opacity, infiltration)."""

    def paint(layers, rng):
        side, x0, y0 = layers.lung_point(rng, zone=zone)
        rx, ry = rng.uniform(*size), rng.uniform(*size)
        c = _cloud(layers, side, x0, y0, rx, ry, rng, patchy=patchy)
        layers.add_density(rng.uniform(*density) * c)
        layers.scale_air(1 - 0.5 * c)
        return [lesion_mask(c, 0.2)]

    return paint


def _paint_edema(layers, rng):
    anatomy = layers.anatomy
    c = np.zeros((anatomy.size, anatomy.size), np.float32)
    for side in SIDES:
        x0 = anatomy.midline + side * rng.uniform(0.1, 0.14)
        c = np.maximum(c, _cloud(layers, side, x0, rng.uniform(0.42, 0.5), 0.14, 0.16, rng, patchy=0.4))
    layers.add_density(rng.uniform(0.22, 0.32) * c)
    layers.scale_air(1 - 0.4 * c)
    return [lesion_mask(c, 0.2)]


# ----------------------------------------------------------------------------------------------------- pleura
def _paint_effusion(layers, rng):
    # drawn on the half-resolution grid (it is smooth) and upsampled: fluid and its mask
    side = int(rng.choice(SIDES))
    anatomy, maps = layers.anatomy, layers.half_sides[side]
    toward_wall, y = side * (layers.grid_x - np.float32(anatomy.midline)), layers.grid_y
    height = rng.uniform(0.07, 0.2)
    medial = anatomy.mediastinum_half_width
    t = np.clip((toward_wall - medial) / (maps.lateral_edge - medial), 0, 1)
    depth = anatomy.costophrenic_depth
    meniscus = maps.diaphragm - height + (depth + height * 0.2) - (depth + height * 0.9) * t**2.2
    fluid = smoothstep(y - meniscus, 0.0, 0.012) * smoothstep(maps.pleural_margin + 0.02, 0, 0.01)
    fluid *= smoothstep(toward_wall, medial - 0.01, medial + 0.01) * smoothstep(maps.diaphragm + 0.004 - y, 0, 0.004)
    in_lung = layers.upsample(fluid * maps.lung)
    fluid = layers.upsample(fluid)
    layers.scale_air(1 - 0.95 * fluid)
    layers.add_density(0.14 * fluid)
    layers.scale_markings(1 - fluid)
    return [lesion_mask(in_lung, 0.3)]


def _paint_pneumothorax(layers, rng):
    side = int(rng.choice(SIDES))
    anatomy, maps = layers.anatomy, layers.full_sides[side]
    width = rng.uniform(0.025, 0.06)
    margin = maps.pleural_margin
    zone = smoothstep(anatomy.apex_level + rng.uniform(0.3, 0.45) - anatomy.pixel_y, 0, 0.05)
    region = smoothstep(width - margin, 0, 0.004) * zone * maps.lung
    line = np.exp(-(((margin - width) / 0.0018) ** 2)) * zone * maps.lung  # the visceral pleural line
    layers.scale_markings(1 - region)
    layers.scale_air(1 + 0.7 * region)
    layers.add_density(0.09 * line - 0.06 * region)
    return [lesion_mask(region + line, 0.3)]


def _paint_pleural_thickening(layers, rng):
    side = int(rng.choice(SIDES))
    anatomy, maps = layers.anatomy, layers.full_sides[side]
    y = anatomy.pixel_y
    top = rng.uniform(anatomy.apex_level + 0.05, 0.55)
    zone = smoothstep(y, top, top + 0.02) * smoothstep(top + rng.uniform(0.1, 0.2) - y, 0, 0.02)
    m = smoothstep(rng.uniform(0.012, 0.02) - maps.pleural_margin, 0, 0.004) * zone * maps.lung
    layers.add_density(0.3 * m)
    layers.scale_air(1 - 0.6 * m)
    return [lesion_mask(m, 0.3)]


def _paint_pleural_other(layers, rng):
    masks = []
    for _ in range(int(rng.integers(1, 3))):  # plaques
        side, x0, y0 = layers.lung_point(rng, zone="peripheral")
        m = _blob(layers, x0, y0, rng.uniform(0.008, 0.014), rng, lobulation=0.3) * layers.full_sides[side].lung
        layers.add_density(0.45 * m)
        masks.append(lesion_mask(m, 0.3))
    return masks


# -------------------------------------------------------------------------------------------- parenchyma, bone
def _paint_fibrosis(layers, rng):
    anatomy = layers.anatomy
    size = anatomy.size
    noise = smooth_noise(size, size, size / 55, rng)
    net = np.exp(-((noise / 0.3) ** 2))  # a reticular net along the noise's zero lines
    zone = np.zeros_like(noise)
    for side in SIDES:
        maps = layers.full_sides[side]
        zone += maps.lung * smoothstep(maps.pleural_margin, 0.12, 0.05)
    zone *= smoothstep(anatomy.pixel_y, 0.35, 0.5)
    f = net * zone
    layers.add_density(rng.uniform(0.16, 0.24) * f)
    return [lesion_mask(f * (zone > 0.5), 0.4)]


def _paint_atelectasis(layers, rng):
    anatomy = layers.anatomy
    size = anatomy.size
    side, x0, y0 = layers.lung_point(rng, zone="lower")
    px, py = anatomy.to_pixels(x0, y0)
    if rng.random() < 0.6:  # plate-like band
        m = disk(
            size,
            size,
            float(px),
            float(py),
            size * rng.uniform(0.05, 0.09),
            size * rng.uniform(0.006, 0.012),
            soft=2.0,
            angle=rng.uniform(-0.35, 0.35),
        )
    else:  # wedge towards the hilum
        m = disk(size, size, float(px), float(py), size * 0.06, size * 0.03, soft=3.0, angle=rng.uniform(-0.6, 0.6))
    m = m * layers.full_sides[side].lung
    layers.add_density(rng.uniform(0.3, 0.4) * m)
    layers.scale_air(1 - 0.6 * m)
    return [lesion_mask(m, 0.3)]


def _paint_fracture(layers, rng):
    anatomy = layers.anatomy
    size = anatomy.size
    side = int(rng.choice(SIDES))
    ribs, maps = layers.full.ribs, layers.full_sides[side]
    ok = (ribs > 0.8 * ribs.max()) & (maps.lung > 0.5) & (maps.pleural_margin < 0.06)
    ok &= anatomy.pixel_y > anatomy.apex_level + 0.08
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        idx = np.flatnonzero(ribs > 0.5 * ribs.max())
    x0, y0 = anatomy.body_point(idx[rng.integers(idx.size)])
    angle = rng.uniform(-0.4, 0.4) + np.pi / 2
    px, py = anatomy.to_pixels(
        x0 + np.cos(angle) * np.array([-0.03, 0.03]), y0 + np.sin(angle) * np.array([-0.03, 0.03])
    )
    gap = polyline(size, size, px, py, max(1.5, size / 220))
    rib_mask = ribs > 0.3 * ribs.max()
    break_line = gap * rib_mask
    # the break: a dark gap through the rib and a sliver of callus
    layers.add_density(0.12 * blur(break_line, 1.2) - 0.95 * gap * ribs)
    return [lesion_mask(break_line, 0.3)]


# ------------------------------------------------------------------------------------------------------ devices
def _paint_devices(layers, rng):
    anatomy = layers.anatomy
    size = anatomy.size
    masks = []
    kinds = rng.choice(["ett", "ng", "cvc", "ecg", "pacer"], size=int(rng.integers(1, 4)), replace=False)
    line_width = max(1.5, size / 200)
    right_dome = anatomy.dome_levels[1]
    for kind in kinds:
        if kind == "ett":  # endotracheal tube
            y = np.linspace(-0.02, rng.uniform(0.22, 0.28), 20)
            m = polyline(size, size, *anatomy.to_pixels(anatomy.midline + 0.003 * np.sin(y * 9), y), line_width * 1.6)
        elif kind == "ng":  # nasogastric tube, into the stomach
            y = np.linspace(-0.02, right_dome + 0.08, 40)
            x = anatomy.midline - 0.01 + 0.02 * smoothstep(y, right_dome - 0.02, right_dome + 0.08)
            x = x + 0.12 * smoothstep(y, right_dome, right_dome + 0.08)
            m = polyline(size, size, *anatomy.to_pixels(x, y), line_width)
        elif kind == "cvc":  # central venous catheter
            side = rng.choice(SIDES)
            t = np.linspace(0, 1, 30)
            x = anatomy.midline + side * (0.3 * (1 - t) ** 1.5 + 0.03)
            y = 0.13 + 0.1 * t**1.3 + 0.02 * np.sin(t * 3)
            m = polyline(size, size, *anatomy.to_pixels(x, y), line_width)
        elif kind == "ecg":  # electrodes: rings with a dot
            m = np.zeros((size, size), np.float32)
            for _ in range(int(rng.integers(2, 5))):
                _, x0, y0 = layers.lung_point(rng, zone="peripheral")
                px, py = anatomy.to_pixels(x0, y0)
                px, py = float(px), float(py)
                r = size * rng.uniform(0.012, 0.016)
                ring = disk(size, size, px, py, r, r) - 0.6 * disk(size, size, px, py, r * 0.7, r * 0.7)
                dot = disk(size, size, px, py, r * 0.3, r * 0.3)
                m = np.maximum(m, np.maximum(ring, dot))
                masks.append(lesion_mask(ring + dot, 0.3))
            layers.add_density(0.9 * m)
            continue
        else:  # pacemaker: generator box in the upper chest plus leads to the heart
            side = rng.choice(SIDES)
            x0, y0 = anatomy.midline + side * rng.uniform(0.2, 0.28), rng.uniform(0.18, 0.24)
            px, py = anatomy.to_pixels(x0, y0)
            generator = disk(size, size, float(px), float(py), size * 0.04, size * 0.028, soft=1.5) ** 0.3
            t = np.linspace(0, 1, 40)
            heart_x, heart_y = anatomy.heart_centre
            x = x0 + (heart_x - x0) * t + 0.04 * np.sin(t * np.pi) * side
            y = y0 + (heart_y - y0) * t**0.8
            m = np.maximum(generator, polyline(size, size, *anatomy.to_pixels(x, y), line_width * 1.3))
        layers.add_density(1.0 * m)
        masks.append(lesion_mask(m, 0.3))
    return masks


# ------------------------------------------------------------------------------------------- aorta, diaphragm, air
def _paint_aortic_calcification(layers, rng):
    anatomy = layers.anatomy
    knob_dx, knob_y, knob_r = anatomy.aortic_knob
    angle = np.linspace(np.pi * rng.uniform(1.05, 1.25), np.pi * rng.uniform(1.7, 1.95), 30)
    px, py = anatomy.to_pixels(
        anatomy.midline + knob_dx + knob_r * 0.95 * np.cos(angle), knob_y + knob_r * 0.95 * np.sin(angle)
    )
    m = polyline(anatomy.size, anatomy.size, px, py, max(1.5, anatomy.size / 200))
    layers.add_density(0.55 * m)
    return [lesion_mask(m)]


def _paint_tortuous_aorta(layers, rng):
    anatomy = layers.anatomy
    knob_dx, knob_y, _ = anatomy.aortic_knob
    t = np.linspace(0, 1, 60)
    x = (
        anatomy.midline
        + knob_dx * 0.6
        + 0.035 * np.sin(np.pi * t * rng.uniform(1.2, 2.0) + rng.uniform(0, 1))
        + 0.02 * t
    )
    y = knob_y + t * (anatomy.dome_levels[1] - knob_y)
    px, py = anatomy.to_pixels(x, y)
    m = polyline(anatomy.size, anatomy.size, px, py, anatomy.size * 0.045)
    m = blur(m, anatomy.size / 250)
    layers.add_density(0.2 * m)
    layers.scale_air(1 - 0.5 * m)
    return [lesion_mask(m, 0.3)]


def _paint_hernia(layers, rng):
    anatomy = layers.anatomy
    x0, y0 = anatomy.midline + rng.uniform(-0.02, 0.04), anatomy.dome_levels[1] - rng.uniform(0.02, 0.06)
    radius = rng.uniform(0.035, 0.055)
    sac = _blob(layers, x0, y0, radius, rng, lobulation=0.04)
    gas = sac * smoothstep(y0 + radius * rng.uniform(0.0, 0.4) - anatomy.pixel_y, 0, 0.003)  # with a fluid level
    rim = np.clip(_blob(layers, x0, y0, radius * 1.08, rng, lobulation=0.0) - sac, 0, 1)
    layers.add_density(-0.45 * gas + 0.1 * rim)
    return [lesion_mask(sac + rim, 0.3)]


def _paint_subcutaneous_emphysema(layers, rng):
    anatomy = layers.anatomy
    size = anatomy.size
    side = int(rng.choice(SIDES))
    toward_wall = side * layers.offset
    zone = smoothstep(toward_wall - layers.full_sides[side].lateral_edge, 0.015, 0.035) * smoothstep(
        0.48 - toward_wall, 0, 0.02
    )
    zone *= smoothstep(anatomy.pixel_y, 0.15, 0.25) * smoothstep(rng.uniform(0.55, 0.7) - anatomy.pixel_y, 0, 0.05)
    coarse = rng.standard_normal((12, 60)).astype(np.float32)  # streaks along the muscle fibres
    noise = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC), dtype=np.float32)
    streak = np.exp(-((noise / 0.3) ** 2)) * zone
    layers.add_density(-0.35 * streak)
    return [lesion_mask(streak, 0.35)]


def _paint_pneumomediastinum(layers, rng):
    anatomy = layers.anatomy
    x, y = anatomy.pixel_x, anatomy.pixel_y
    heart_x, heart_y = anatomy.heart_centre
    heart_r = np.hypot((x - heart_x) / anatomy.heart_radii[1], (y - heart_y) / anatomy.heart_radii[2])
    stripe = np.exp(-(((heart_r - 1.04) / 0.02) ** 2)) * (x > heart_x) * (y < heart_y)  # air along the heart
    edge = np.abs(layers.offset) - anatomy.mediastinum_half_width - 0.008
    mediastinal_edge = np.exp(-((edge / 0.004) ** 2)) * smoothstep(y, 0.12, 0.2) * (y < heart_y - 0.08)
    m = np.maximum(stripe, mediastinal_edge)
    layers.add_density(-0.3 * m)
    return [lesion_mask(m, 0.3)]


def _paint_pneumoperitoneum(layers, rng):
    anatomy = layers.anatomy
    side = -1 if rng.random() < 0.8 else 1  # mostly under the right dome, over the liver
    toward_wall = side * layers.offset
    t = np.clip((toward_wall - 0.06) / (anatomy.half_width * 0.85), 0, 1)
    thickness = rng.uniform(0.015, 0.03) * np.clip(np.sin(np.pi * t), 0, 1) ** 0.7
    under = anatomy.pixel_y - layers.full_sides[side].diaphragm - 0.006
    m = (
        smoothstep(under, -0.002, 0.002)
        * smoothstep(thickness - under, 0.0, 0.003)
        * (t > 0)
        * (t < 1)
        * (toward_wall > 0)
    )
    layers.add_density(-0.6 * m)
    return [lesion_mask(m, 0.3)]


LESION_PAINTERS: dict[str, LesionPainter] = {
    "Atelectasis": _paint_atelectasis,
    "Calcification of the Aorta": _paint_aortic_calcification,
    "Consolidation": _cloud_painter("lower", (0.05, 0.09), (0.4, 0.5), 0.25),
    "Edema": _paint_edema,
    "Fibrosis": _paint_fibrosis,
    "Fracture": _paint_fracture,
    "Hernia": _paint_hernia,
    "Infiltration": _cloud_painter("any", (0.05, 0.1), (0.18, 0.26), 0.9),
    "Lung Lesion": _paint_lung_lesion,
    "Lung Opacity": _cloud_painter("any", (0.05, 0.09), (0.25, 0.35), 0.5),
    "Mass": _paint_mass,
    "Nodule": _paint_nodule,
    "Pleural Effusion": _paint_effusion,
    "Pleural Other": _paint_pleural_other,
    "Pleural Thickening": _paint_pleural_thickening,
    "Pneumomediastinum": _paint_pneumomediastinum,
    "Pneumonia": _cloud_painter("lower", (0.06, 0.1), (0.3, 0.42), 0.6),
    "Pneumoperitoneum": _paint_pneumoperitoneum,
    "Pneumothorax": _paint_pneumothorax,
    "Subcutaneous Emphysema": _paint_subcutaneous_emphysema,
    "Support Devices": _paint_devices,
    "Tortuous Aorta": _paint_tortuous_aorta,
}
#: Findings drawn by changing the anatomy before the body's maps are built, not by a painter.
ANATOMY_FINDINGS: tuple[str, ...] = ("Cardiomegaly", "Enlarged Cardiomediastinum", "Emphysema")
#: Drawing order: anatomy changes first, then fluid, then what lies on top.
DRAW_ORDER: tuple[str, ...] = (
    "Cardiomegaly",
    "Enlarged Cardiomediastinum",
    "Emphysema",
    "Tortuous Aorta",
    "Pleural Effusion",
    "Pneumothorax",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Lung Opacity",
    "Infiltration",
    "Atelectasis",
    "Fibrosis",
    "Mass",
    "Nodule",
    "Lung Lesion",
    "Pleural Thickening",
    "Pleural Other",
    "Calcification of the Aorta",
    "Hernia",
    "Pneumomediastinum",
    "Pneumoperitoneum",
    "Subcutaneous Emphysema",
    "Fracture",
    "Support Devices",
)
if set(DRAW_ORDER) != set(CXR_LT_CLASSES) - {NO_FINDING} or set(LESION_PAINTERS) != set(DRAW_ORDER) - set(
    ANATOMY_FINDINGS
):
    raise RuntimeError("DRAW_ORDER, LESION_PAINTERS and ANATOMY_FINDINGS must cover every CXR-LT finding once")
