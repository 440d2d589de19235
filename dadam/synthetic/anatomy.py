"""The shape of one phantom chest: a few dozen random numbers that fix its body, organs, pose and exposure.

Positions are "body coordinates": fractions of the image width (``x``) and height (``y``) before the pose (zoom and
shift) is applied, with a top-left origin. Side ``-1`` is image-left (the patient's right), side ``1`` image-right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dadam.synthetic.drawing import grid

__all__ = ["ChestAnatomy", "sample_anatomy"]


@dataclass
class ChestAnatomy:
    """Anatomy of one phantom chest in body coordinates, plus the pixel grid of the image it is drawn on."""

    size: int  # image side in pixels
    midline: float  # x of the spine
    half_width: float  # thorax half-width at the lung bases
    apex_level: float  # y of the lung apices
    dome_levels: tuple[float, float]  # y of the diaphragm dome tops (image-left = patient right, image-right)
    costophrenic_depth: float  # how far the costophrenic angles reach below the domes
    heart_centre: tuple[float, float]  # (x, y)
    heart_radii: tuple[float, float, float]  # (toward image-left, toward image-right, vertical)
    mediastinum_half_width: float
    aortic_knob: tuple[float, float, float]  # (x offset from the midline, y, radius)
    rib_spacing: float
    rib_phase: float  # in [0, 1): shifts the ribs and vertebrae up or down
    lung_air: float  # darkness of the aerated lung
    lung_markings: float  # strength of the vessel markings
    pose: tuple[float, float, float]  # zoom, x shift, y shift (separable, so many maps stay 1-D until combined)
    attenuation: float  # exposure: density -> 1 - exp(-attenuation * density)
    window: tuple[float, float]  # (low, high) grey levels mapped to black and white
    tone_gamma: float
    grain: float  # standard deviation of the film grain
    shoulder_level: float = 0.07  # y of the trunk's top at the neck
    chest_wall: float = 0.05  # soft tissue outside the lungs
    arm: tuple[float, float] = (0.5, 0.065)  # arm centre (offset from the midline) and radius
    axilla_level: float = 0.3
    rib_jitter: np.ndarray = field(default=None, repr=False)  # (2, 14) rib spacing jitter per side
    rib_tilt: tuple[float, float] = (1.0, 1.0)
    gastric_bubble: tuple[float, float, float, float] = (0.2, 0.0, 0.05, 0.03)  # (x offset, fluid level, rx, ry)
    liver_size: float = 0.05
    heel_effect: float = 0.0  # exposure gradient from top to bottom (anode heel)
    pixel_x: np.ndarray = field(default=None, repr=False)  # (1, W) body x of the full-resolution pixel centres
    pixel_y: np.ndarray = field(default=None, repr=False)  # (H, 1) body y of the full-resolution pixel centres

    def to_pixels(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Body coordinates -> pixel coordinates of the ``size x size`` image."""
        zoom, shift_x, shift_y = self.pose
        px = 0.5 + shift_x + zoom * (np.asarray(x) - 0.5)
        py = 0.5 + shift_y + zoom * (np.asarray(y) - 0.5)
        return px * self.size, py * self.size

    def body_grid(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Body coordinates ``x (1, n)``, ``y (n, 1)`` float32 of the pixel centres of an ``n x n`` image grid."""
        zoom, shift_x, shift_y = self.pose
        u, v = grid(n, n)
        x = ((u - 0.5 - shift_x) / zoom + 0.5).astype(np.float32)
        y = ((v - 0.5 - shift_y) / zoom + 0.5).astype(np.float32)
        return x, y

    def set_pixel_grid(self) -> None:
        """Compute :attr:`pixel_x`, :attr:`pixel_y` (the inverse of :meth:`to_pixels` at every pixel centre)."""
        self.pixel_x, self.pixel_y = self.body_grid(self.size)

    def body_point(self, flat_index: int) -> tuple[float, float]:
        """Body coordinates ``(x, y)`` of the full-resolution pixel with row-major index ``flat_index``."""
        row, col = divmod(int(flat_index), self.size)
        return float(self.pixel_x[0, col]), float(self.pixel_y[row, 0])


def sample_anatomy(size: int, rng: np.random.Generator) -> ChestAnatomy:
    """Draw the anatomy of one chest (the draws happen in a fixed order, so a seed gives the same body)."""
    u = rng.uniform
    dome_right = u(0.60, 0.66)
    half_width = u(0.355, 0.405)
    chest_wall, arm_radius = u(0.035, 0.06), u(0.055, 0.075)
    anatomy = ChestAnatomy(
        size=size,
        midline=0.5 + rng.normal(0, 0.006),
        half_width=half_width,
        apex_level=u(0.10, 0.14),
        dome_levels=(dome_right, dome_right + u(0.01, 0.04)),
        costophrenic_depth=u(0.09, 0.12),
        heart_centre=(0.0, 0.0),
        heart_radii=(u(0.1, 0.12), u(0.16, 0.19), u(0.14, 0.16)),
        mediastinum_half_width=u(0.045, 0.058),
        aortic_knob=(u(0.05, 0.065), u(0.27, 0.31), u(0.028, 0.036)),
        rib_spacing=u(0.056, 0.064),
        rib_phase=u(0, 1),
        lung_air=u(0.5, 0.6),
        lung_markings=u(0.8, 1.2),
        pose=(u(0.93, 1.07), rng.normal(0, 0.012), u(-0.01, 0.035)),
        attenuation=u(0.85, 1.15),
        window=(u(0.0, 0.08), u(0.86, 1.0)),
        tone_gamma=u(0.85, 1.2),
        grain=u(0.008, 0.02),
        shoulder_level=u(0.01, 0.05),
        chest_wall=chest_wall,
        arm=(half_width + chest_wall + arm_radius + u(0.0, 0.035), arm_radius),
        axilla_level=u(0.26, 0.34),
        rib_jitter=rng.normal(0, 0.1, (2, 14)),
        rib_tilt=(u(0.85, 1.15), u(0.85, 1.15)),
        gastric_bubble=(u(0.18, 0.25), u(0.0, 0.5), u(0.04, 0.065), u(0.03, 0.05)),
        liver_size=u(0.03, 0.07),
        heel_effect=rng.normal(0, 0.04),
    )
    anatomy.heart_centre = (anatomy.midline + u(0.035, 0.055), anatomy.dome_levels[1] - u(0.01, 0.04))
    return anatomy
