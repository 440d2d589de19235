"""The density maps of one phantom chest: lungs, heart, mediastinum, abdomen, soft tissue, bones and vessels.

The body is smooth, so it is drawn on a half-resolution grid and combined into one density map
(:attr:`ChestMaps.base_density`, larger = brighter) that is upsampled once. Lesions draw at full resolution through
:class:`ChestLayers`: they add density, scale the lung air or the lung markings, and read the full-resolution anatomy
they need (:attr:`ChestLayers.full`, :attr:`ChestLayers.full_sides`), which is upsampled on first use, so a
lesion-free image pays for none of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dadam.synthetic.anatomy import ChestAnatomy
from dadam.synthetic.drawing import smooth_noise, smoothstep, upsample
from dadam.synthetic.skeleton import draw_bones, draw_ribs
from dadam.synthetic.vessels import draw_vessels

__all__ = ["SIDES", "ChestLayers", "ChestMaps", "LungSideMaps", "UpsampledMaps"]

#: -1: image-left (the patient's right); 1: image-right.
SIDES: tuple[int, int] = (-1, 1)


@dataclass
class LungSideMaps:
    """Half-resolution maps of one side of the chest (shapes broadcast to ``(n, n)``)."""

    lung: np.ndarray  # (n, n) soft mask of the lung field
    pleural_margin: np.ndarray  # (n, n) distance inside the lateral and apical pleura (negative outside)
    lateral_edge: np.ndarray  # (n, 1) offset of the lateral chest wall from the midline, per row
    diaphragm: np.ndarray  # (1, n) y of the diaphragm under each column
    inner_margin: np.ndarray  # (n, n) distance inside the lung from its nearest border
    abdomen_top: np.ndarray  # (1, n) y where the abdomen starts under this dome


@dataclass
class ChestMaps:
    """Half-resolution maps ``(n, n)`` of the whole chest."""

    lung_field: np.ndarray  # both lungs
    heart: np.ndarray
    mediastinum: np.ndarray
    abdomen: np.ndarray
    body: np.ndarray  # inside the patient
    ribs: np.ndarray
    markings: np.ndarray  # the vessels' density
    lung_air: np.ndarray  # the darkening by the aerated lung (subtracted from the density)
    base_density: np.ndarray  # everything combined


class UpsampledMaps:
    """Full-resolution ``(size, size)`` views of the half-resolution maps in ``maps``, each upsampled on first use.

    ``UpsampledMaps(chest_maps, n, size).heart`` is ``chest_maps.heart`` upsampled (and kept for the next use).
    """

    def __init__(self, maps: ChestMaps | LungSideMaps, grid_size: int, size: int):
        self._maps, self._grid_size, self._size = maps, grid_size, size

    def __getattr__(self, name: str) -> np.ndarray:  # called only for a name not computed yet
        if name.startswith("_"):
            raise AttributeError(name)
        n = self._grid_size
        full = upsample(np.broadcast_to(getattr(self._maps, name), (n, n)), self._size, self._size)
        setattr(self, name, full)
        return full


def _lung_sides(anatomy: ChestAnatomy, y: np.ndarray, offset: np.ndarray) -> dict[int, LungSideMaps]:
    """The lung fields, one side at a time, and the borders around them."""
    sides = {}
    for side, dome in zip(SIDES, anatomy.dome_levels, strict=True):
        toward_wall = offset * side
        t = np.clip((y - anatomy.apex_level) / 0.3, 0.0, 1.0)
        lateral = anatomy.half_width * (0.3 + 0.7 * np.sin(t * (np.pi / 2)) ** 0.75)
        top = anatomy.apex_level + 2.2 * (toward_wall - 0.15) ** 2
        depth = anatomy.costophrenic_depth / 0.3
        diaphragm = (
            dome
            + depth * ((toward_wall - 0.45 * anatomy.half_width) / anatomy.half_width) ** 2
            + 0.07 * smoothstep(toward_wall, 0.17, 0.05)
        )
        medial = anatomy.mediastinum_half_width + 0.006 + 0.03 * smoothstep(y, 0.1, 0.0)
        pleural_margin = np.minimum(lateral - toward_wall, y - top)
        inner_margin = np.minimum(np.minimum(toward_wall - medial, pleural_margin), diaphragm - y)
        sides[side] = LungSideMaps(
            lung=smoothstep(inner_margin, 0.0, 0.01) * (toward_wall > 0),
            pleural_margin=pleural_margin,
            lateral_edge=lateral,
            diaphragm=diaphragm,
            inner_margin=inner_margin,
            abdomen_top=dome
            + depth * (np.maximum(toward_wall - 0.45 * anatomy.half_width, 0) / anatomy.half_width) ** 2,
        )
    return sides


class ChestLayers:
    """The density maps of one chest phantom, and the edits its lesions make.

    Attributes:
        anatomy: the chest.
        grid_size: side ``n`` of the half-resolution grid.
        grid_x, grid_y: ``(1, n)``, ``(n, 1)`` body coordinates of the half-resolution grid.
        half: the half-resolution maps of the chest; ``half_sides[side]`` those of one side.
        full, full_sides[side]: the same maps at full resolution, upsampled on first use.
    """

    def __init__(self, anatomy: ChestAnatomy, rng: np.random.Generator):
        self.anatomy = anatomy
        n = max(32, (anatomy.size + 1) // 2)
        self.grid_size = n
        x, y = anatomy.body_grid(n)
        self.grid_x, self.grid_y = x, y
        offset = x - np.float32(anatomy.midline)  # (1, n)
        abs_offset = np.abs(offset)
        sides = _lung_sides(anatomy, y, offset)
        self.half_sides = sides
        lung = sides[-1].lung + sides[1].lung
        dome_low = max(anatomy.dome_levels)
        # --- heart, mediastinum, aorta, trachea
        heart_x, heart_y = anatomy.heart_centre
        to_left, to_right, vertical = anatomy.heart_radii
        radius_x = np.where(x < heart_x, np.float32(to_left), np.float32(to_right))
        heart_r = np.sqrt(((x - heart_x) / radius_x) ** 2 + ((y - heart_y) / vertical) ** 2)
        heart = smoothstep(1.0 - heart_r, 0.0, 0.05) * smoothstep(y, heart_y - vertical * 0.95, heart_y - 0.05)
        knob_dx, knob_y, knob_r = anatomy.aortic_knob
        knob = smoothstep(
            1.0 - np.sqrt((x - (anatomy.midline + knob_dx)) ** 2 + ((y - knob_y) * 0.8) ** 2) / knob_r, 0.0, 0.35
        )
        med_width = anatomy.mediastinum_half_width * (0.72 + 0.33 * smoothstep(y, 0.12, 0.42))
        mediastinum = (
            smoothstep(med_width - abs_offset, 0.0, 0.01)
            * smoothstep(y, 0.05, 0.2)
            * smoothstep(dome_low + 0.03 - y, 0.0, 0.05)
        )
        mediastinum = np.maximum(mediastinum, knob)
        trachea = smoothstep(0.012 - abs_offset, 0.0, 0.004) * smoothstep(0.33 - y, 0.0, 0.03)
        # --- abdomen: liver on the patient's right, stomach with its gas bubble under the left dome, fading down
        below = np.where(offset < 0, sides[-1].abdomen_top, sides[1].abdomen_top)
        under = y - below  # depth below the diaphragm
        abdomen = smoothstep(under, -0.004, 0.006)
        liver = smoothstep(-offset, -0.12, 0.1) * smoothstep(
            0.12 + 0.25 * anatomy.liver_size + 0.3 * np.maximum(-offset, 0) - under, 0.0, 0.04
        )
        # fundal gas: a dome-shaped lucency under the left hemidiaphragm, flat below
        bubble_dx, fluid_level, bubble_rx, bubble_ry = anatomy.gastric_bubble
        depth = anatomy.costophrenic_depth / 0.3
        dome_at_bubble = (
            anatomy.dome_levels[1] + depth * (max(bubble_dx - 0.45 * anatomy.half_width, 0.0) / anatomy.half_width) ** 2
        )
        bubble_y = dome_at_bubble + 0.008 + bubble_ry * 0.8
        bubble = smoothstep(
            1.0 - np.sqrt(((offset - bubble_dx) / bubble_rx) ** 2 + ((y - bubble_y) / bubble_ry) ** 2), 0.0, 0.25
        )
        bubble = (
            bubble * smoothstep(bubble_y + fluid_level * bubble_ry - y, 0.0, 0.003) * smoothstep(under, 0.006, 0.014)
        )
        gas = smooth_noise(n, n, n / 14, rng)
        right_dome = anatomy.dome_levels[1]
        bowel = smoothstep(gas, 0.9, 1.6) * smoothstep(y, right_dome + 0.2, right_dome + 0.3) * abdomen
        fade = 1.0 - 0.68 * ((y - dome_low) / (1.1 - dome_low)).clip(0.0, 1.0) ** 0.75 * abdomen
        # --- soft tissue: rounded shoulders, tapered chest wall, arms beside the chest, axillae
        thickness, body = self._soft_tissue(y, offset, abs_offset)
        # --- lung air: thinner at the periphery and apices, a little behind the domes
        air_depth = anatomy.lung_air * (0.72 + 0.3 * smoothstep(y, anatomy.apex_level, 0.5))
        inner = np.maximum(sides[-1].inner_margin * (offset < 0), sides[1].inner_margin * (offset > 0))
        periphery = 0.6 + 0.4 * smoothstep(inner, 0.0, 0.06)
        # the heart's lower border merges with the diaphragm
        heart_visible = heart * (1.0 - abdomen * smoothstep(under, 0.0, 0.025))
        lung_air = lung * periphery * (1.0 - 0.7 * abdomen) * (1.0 - 0.85 * heart_visible) * air_depth
        # --- bones and markings
        lateral = {side: sides[side].lateral_edge for side in SIDES}
        diaphragm = {side: sides[side].diaphragm for side in SIDES}
        ribs = draw_ribs(anatomy, y, offset, lateral, diaphragm)
        bone = draw_bones(anatomy, y, offset, abs_offset)
        markings = draw_vessels(anatomy, x, y, lung, heart, rng) * (0.2 * anatomy.lung_markings)
        texture = smooth_noise(n, n, n / 10, rng) * 0.03
        texture += smooth_noise(n, n, max(2.0, n / 60), rng) * (0.022 * lung)  # fine parenchymal mottle
        # --- combine (density: larger = brighter)
        soft = thickness * (0.53 + 0.04 * anatomy.chest_wall / 0.05) + 0.22 * body
        # the abdomen is brightest just under the domes
        abdomen_density = abdomen * (0.36 + 0.12 * liver + 0.38 * smoothstep(under, 0.14, 0.0))
        central = np.maximum(np.maximum(0.55 * mediastinum, 0.92 * heart_visible), abdomen_density)
        air = lung_air * (1.0 - 0.45 * np.clip(markings, 0, 1)) * body
        dens = soft + 0.6 * central - 0.18 * trachea + bone + ribs * (1 - 0.6 * abdomen) + markings + texture * body
        dens -= air + 0.3 * bubble + 0.1 * bowel
        dens *= fade * (1.0 + anatomy.heel_effect * (y - 0.5))
        dens = np.maximum(dens, 0.0) * body + 0.03 * (1 - body)
        self.half = ChestMaps(
            lung_field=lung,
            heart=heart,
            mediastinum=mediastinum,
            abdomen=abdomen,
            body=body,
            ribs=ribs,
            markings=markings,
            lung_air=air,
            base_density=dens.astype(np.float32),
        )
        self.full = UpsampledMaps(self.half, n, anatomy.size)
        self.full_sides = {side: UpsampledMaps(sides[side], n, anatomy.size) for side in SIDES}
        self._added: np.ndarray | None = None  # lesion density (+ bright, - dark), full resolution, made on first use
        self._air_scale: np.ndarray | None = None
        self._markings_gain: np.ndarray | None = None
        self._offset: np.ndarray | None = None

    def _soft_tissue(self, y: np.ndarray, offset: np.ndarray, abs_offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Projected soft-tissue thickness and the body mask ``(n, n)``: shoulders, chest wall, arms, neck."""
        anatomy = self.anatomy
        trunk_width = (
            np.float32(anatomy.half_width + anatomy.chest_wall)
            + 0.03 * smoothstep(y, 0.3, 0.7)
            - 0.025 * smoothstep(y, 0.8, 1.05)
        )  # (n, 1)
        arm_centre, arm_radius = anatomy.arm
        arm_centre_y = arm_centre + 0.06 * np.clip(y - anatomy.axilla_level, 0.0, None)  # arms hang a little away
        # above the axilla, the trunk is as wide as the shoulders
        trunk_width = trunk_width + (arm_centre + arm_radius * 0.5 - trunk_width) * smoothstep(
            anatomy.axilla_level - y, 0.0, 0.09
        )
        trunk = np.sqrt(np.clip(1.0 - (offset / trunk_width) ** 2, 0.0, 1.0))
        arm = np.sqrt(np.clip(1.0 - ((abs_offset - arm_centre_y) / arm_radius) ** 2, 0.0, 1.0))
        deltoid = 0.11  # the shoulder's rounding radius
        x_shoulder = np.minimum(np.maximum(abs_offset - (arm_centre + arm_radius - deltoid), 0.0), deltoid)
        top = anatomy.shoulder_level + 0.05 * np.clip((abs_offset - 0.07) / 0.3, 0.0, None) ** 1.3  # trapezius
        top = top + deltoid - np.sqrt(deltoid**2 - x_shoulder**2)
        below_top = smoothstep(y - top, 0.0, 0.03)
        neck = np.sqrt(np.clip(1.0 - (offset / 0.075) ** 2, 0.0, 1.0)) * smoothstep(0.2 - y, 0.0, 0.1)
        thickness = np.maximum(np.maximum(trunk, 0.9 * arm) * np.sqrt(below_top), 0.8 * neck)
        return thickness, smoothstep(thickness, 0.0, 0.2)

    # ---- full-resolution views and edits used by the lesions
    def upsample(self, half_map: np.ndarray) -> np.ndarray:
        """A half-resolution map ``(n, n)`` (or broadcastable to it) upsampled to ``(size, size)``."""
        n = self.grid_size
        return upsample(np.broadcast_to(half_map, (n, n)), self.anatomy.size, self.anatomy.size)

    @property
    def offset(self) -> np.ndarray:
        """``(1, size)`` body x of the full-resolution columns minus the midline."""
        if self._offset is None:
            self._offset = self.anatomy.pixel_x - np.float32(self.anatomy.midline)
        return self._offset

    def add_density(self, density: np.ndarray) -> None:
        """Add lesion density ``(size, size)`` (+ bright, - dark)."""
        if self._added is None:
            self._added = np.full((self.anatomy.size, self.anatomy.size), 0.0, np.float32)
        self._added += density

    def scale_air(self, factor: np.ndarray) -> None:
        """Multiply the lung air by ``factor`` ``(size, size)`` (fluid < 1, hyperlucency > 1)."""
        if self._air_scale is None:
            self._air_scale = np.full((self.anatomy.size, self.anatomy.size), 1.0, np.float32)
        self._air_scale *= factor

    def scale_markings(self, factor: np.ndarray) -> None:
        """Multiply the lung markings by ``factor`` ``(size, size)``."""
        if self._markings_gain is None:
            self._markings_gain = np.full((self.anatomy.size, self.anatomy.size), 1.0, np.float32)
        self._markings_gain *= factor

    def density(self) -> np.ndarray:
        """Full-resolution density ``(size, size)``: the upsampled anatomy plus the lesions' edits."""
        size = self.anatomy.size
        dens = upsample(self.half.base_density, size, size)
        if self._air_scale is not None:
            dens -= self.full.lung_air * (self._air_scale - 1.0)
        if self._markings_gain is not None:
            dens += self.full.markings * (self._markings_gain - 1.0)
        if self._added is not None:
            dens += self._added * self.full.body
            np.maximum(dens, 0.0, out=dens)
        return dens

    def lung_point(
        self, rng: np.random.Generator, side: int | None = None, *, zone: str = "any"
    ) -> tuple[int, float, float]:
        """A random point ``(side, x, y)`` in body coordinates well inside a lung (and not behind the heart).

        ``zone`` is ``"any"``, ``"lower"``, ``"upper"`` or ``"peripheral"`` (near the lateral or apical pleura).
        """
        side = int(rng.choice(SIDES)) if side is None else side
        maps = self.half_sides[side]
        ok = (maps.lung > 0.95) & (self.half.heart < 0.05)
        if zone == "lower":
            ok &= self.grid_y > 0.42
        elif zone == "upper":
            ok &= self.grid_y < 0.45
        elif zone == "peripheral":
            ok &= maps.pleural_margin < 0.08
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            idx = np.flatnonzero(maps.lung > 0.5)
        row, col = divmod(int(idx[rng.integers(idx.size)]), self.grid_size)
        return side, float(self.grid_x[0, col]), float(self.grid_y[row, 0])
