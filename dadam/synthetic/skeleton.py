"""The bones of the phantom chest: ribs, spine, clavicles, humeri and scapulae, as half-resolution density maps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dadam.synthetic.anatomy import ChestAnatomy
from dadam.synthetic.drawing import smoothstep

__all__ = ["draw_bones", "draw_ribs"]


def draw_ribs(
    anatomy: ChestAnatomy,
    y: np.ndarray,
    offset: np.ndarray,
    lateral_edge: Mapping[int, np.ndarray],
    diaphragm: Mapping[int, np.ndarray],
) -> np.ndarray:
    """Posterior and anterior ribs ``(n, n)``, each side with its own spacing, tilt and phase.

    Posterior ribs curve up from the spine, then down along the wall, their spacing widening downwards; the fainter
    anterior ribs slope the other way.

    Args:
        anatomy: the chest.
        y: ``(n, 1)`` body y of the grid rows.
        offset: ``(1, n)`` body x of the grid columns minus the midline.
        lateral_edge: side -> the lateral chest wall's offset from the midline, ``(n, 1)``.
        diaphragm: side -> the diaphragm's y under each column, ``(1, n)``.
    """
    n = y.shape[0]
    out = np.zeros((n, n), np.float32)
    k = np.arange(14, dtype=np.float64)  # rib number
    for i, side in enumerate((-1, 1)):
        toward_wall = offset * side
        lateral = lateral_edge[side]
        cage = smoothstep(lateral + 0.03 - toward_wall, 0.0, 0.02) * smoothstep(toward_wall, 0.015, 0.05)
        cage *= smoothstep(y, anatomy.apex_level - 0.07, anatomy.apex_level - 0.02) * smoothstep(
            diaphragm[side] + 0.1 - y, 0, 0.04
        )
        spacing = anatomy.rib_spacing * (0.72 + 0.045 * k) * (1.0 + anatomy.rib_jitter[i])
        first = anatomy.apex_level - 0.055 + (anatomy.rib_phase - 0.5) * 0.02 + 0.006 * side
        centres = first + np.concatenate([[0.0], np.cumsum(spacing[:-1])])  # rib centre heights at the spine
        tilt = anatomy.rib_tilt[i] * (0.75 + 0.9 * np.clip(y - 0.15, 0.0, 0.6))
        phi = y - tilt * (-0.32 * toward_wall + 1.9 * toward_wall * toward_wall)
        rib = np.interp(phi, centres, k, left=-1.0, right=99.0).astype(np.float32)  # fractional rib number
        frac = rib - np.floor(rib) - 0.5
        width = 0.2 + 0.04 * smoothstep(toward_wall, 0.05, 0.3)  # half-width as a fraction of the spacing
        posterior = smoothstep(width - np.abs(frac), 0.0, 0.07)
        rim = smoothstep(np.abs(frac + 0.6 * width), 0.6 * width, 0.0) * posterior  # brighter lower cortex
        posterior = (0.75 * posterior + 0.45 * rim) * (rib >= -0.5) * (rib < 13.5)
        posterior *= 0.55 + 0.45 * smoothstep(toward_wall, 0.03, 0.1)
        # anterior ribs: from the lateral wall down and in, fading toward the costal cartilage
        phi_anterior = y - 0.5 * (lateral - toward_wall) + 0.4 * (lateral - toward_wall) ** 2
        spacing_anterior = anatomy.rib_spacing * 1.3 * (1.0 + 0.5 * anatomy.rib_jitter[1 - i, :8])
        centres_anterior = (
            anatomy.apex_level
            + 0.05
            + anatomy.rib_phase * 0.03
            + np.concatenate([[0.0], np.cumsum(spacing_anterior[:-1])])
        )
        rib_anterior = np.interp(phi_anterior, centres_anterior, k[:8], left=-1.0, right=99.0).astype(np.float32)
        frac_anterior = np.abs(rib_anterior - np.floor(rib_anterior) - 0.5)
        anterior = (
            smoothstep(0.22 - frac_anterior, 0.0, 0.1)
            * (rib_anterior >= -0.5)
            * (rib_anterior < 7.5)
            * smoothstep(toward_wall, 0.1, 0.22)
            * smoothstep(lateral + 0.01 - toward_wall, 0, 0.03)
        )
        out += cage * (0.1 * posterior + 0.035 * anterior)
    return out


def draw_bones(anatomy: ChestAnatomy, y: np.ndarray, offset: np.ndarray, abs_offset: np.ndarray) -> np.ndarray:
    """Spine, clavicles, humeral heads and shafts, scapular borders ``(n, n)`` (half resolution).

    Args:
        anatomy: the chest.
        y: ``(n, 1)`` body y of the grid rows.
        offset: ``(1, n)`` body x of the grid columns minus the midline; ``abs_offset`` its absolute value.
    """
    vertebra = 0.5 + 0.5 * np.cos((2 * np.pi / 0.048) * (y - anatomy.rib_phase * 0.05))
    spine = smoothstep(0.034 - abs_offset, 0.0, 0.008) * (0.7 + 0.3 * smoothstep(vertebra, 0.55, 0.95))
    pedicle = smoothstep(0.5 - np.sqrt(((abs_offset - 0.022) / 0.006) ** 2 + ((vertebra - 0.6) / 0.5) ** 2), 0, 0.3)
    bone = (0.15 * spine + 0.07 * pedicle) * smoothstep(y, 0.0, 0.05) * (1.0 - 0.5 * smoothstep(y, 0.55, 0.8))
    arm_centre, _ = anatomy.arm
    for side in (-1, 1):
        toward_wall = offset * side
        # clavicle: rising laterally
        clavicle_y = (
            0.17 - 0.2 * (toward_wall - 0.02) + 0.1 * (toward_wall - 0.02) ** 2 + 0.01 * np.sin(toward_wall * 14)
        )
        clavicle_y = clavicle_y + (anatomy.shoulder_level - 0.03) * 0.8
        clavicle = (
            smoothstep(0.016 - np.abs(y - clavicle_y), 0.0, 0.005)
            * smoothstep(toward_wall, 0.025, 0.045)
            * smoothstep(anatomy.half_width - 0.04 - toward_wall, 0.0, 0.02)
        )
        bone += 0.2 * clavicle * (0.8 + 0.3 * smoothstep(np.abs(y - clavicle_y), 0.006, 0.012))
        head_x = arm_centre - 0.02
        head = np.sqrt((toward_wall - head_x) ** 2 + (y - 0.2) ** 2)
        bone += 0.2 * smoothstep(0.058 - head, 0, 0.008) * (0.8 + 0.4 * smoothstep(head, 0.043, 0.056))
        across_shaft = np.abs(toward_wall - arm_centre)
        shaft = smoothstep(0.032 - across_shaft, 0, 0.008) * smoothstep(y, 0.2, 0.24)
        bone += 0.2 * shaft * (0.75 + 0.4 * smoothstep(across_shaft, 0.018, 0.03))
        scapula = smoothstep(0.006 - np.abs(toward_wall - (arm_centre - 0.14 + 0.25 * (y - 0.2))), 0, 0.004)
        bone += 0.05 * scapula * smoothstep(y, 0.16, 0.2) * smoothstep(0.45 - y, 0, 0.05)
    return bone
