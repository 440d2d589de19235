"""Phantom upper-limb radiographs (MURA-like): bones and soft tissue of seven body parts, a fracture or hardware."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dadam.synthetic.chest import Box
from dadam.synthetic.drawing import blur, box_from_mask, capsule, check_size, polyline, smooth_noise, to_uint8

__all__ = ["MURA_PARTS", "LimbBone", "SoftTissue", "limb_bones", "render_limb"]

MURA_PARTS: tuple[str, ...] = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")


class LimbBone(NamedTuple):
    """One bone in the part's canonical frame (fractions of the image height, long axis vertical)."""

    x0: float
    y0: float
    x1: float
    y1: float
    r0: float  # radius at (x0, y0)
    r1: float  # radius at (x1, y1)
    flare: float  # widening of both ends (epiphyses), as a fraction of the radius
    main: bool  # may carry the lesion of an abnormal study


class SoftTissue(NamedTuple):
    """A soft-tissue capsule from ``(x0, y0)`` to ``(x1, y1)`` of ``radius``, canonical frame."""

    x0: float
    y0: float
    x1: float
    y1: float
    radius: float


def _hand_bones(rng: np.random.Generator, *, with_fingers: bool = True) -> list[LimbBone]:
    bones: list[LimbBone] = []
    base_y, top_y = 0.78, 0.5
    for k in range(4):  # metacarpals II-V and fingers
        x0 = 0.4 + 0.075 * k
        x1 = 0.34 + 0.11 * k + rng.normal(0, 0.005)
        bones.append(LimbBone(x0, base_y, x1, top_y, 0.02, 0.018, 0.35, True))
        if with_fingers:
            dx, y = (x1 - x0) * 0.35, top_y - 0.02
            for length, r in ((0.15, 0.016), (0.09, 0.014), (0.06, 0.012)):  # phalanges
                bones.append(LimbBone(x1, y, x1 + dx * length / 0.28, y - length, r, r * 0.9, 0.3, True))
                x1, y = x1 + dx * length / 0.28, y - length - 0.02
    bones.append(LimbBone(0.36, 0.84, 0.24, 0.66, 0.022, 0.02, 0.35, True))  # thumb metacarpal
    if with_fingers:
        bones.append(LimbBone(0.235, 0.645, 0.17, 0.54, 0.018, 0.016, 0.3, True))
        bones.append(LimbBone(0.165, 0.525, 0.13, 0.46, 0.015, 0.012, 0.3, False))
    for i in range(8):  # carpals, two rows
        cx = 0.4 + 0.055 * (i % 4) + rng.normal(0, 0.004)
        cy = 0.83 + 0.05 * (i // 4)
        bones.append(LimbBone(cx, cy, cx + 0.01, cy + 0.005, 0.026, 0.026, 0.0, False))
    return bones


def limb_bones(part: str, rng: np.random.Generator) -> tuple[list[LimbBone], list[SoftTissue]]:
    """Bones and soft-tissue capsules of one body part in its canonical frame."""
    j = rng.normal(0, 0.01)  # a slight bend of the main shaft
    if part == "HUMERUS":
        bones = [(0.5, 0.08, 0.5 + j, 0.95, 0.045, 0.04, 0.5, True), (0.52, 0.05, 0.52, 0.06, 0.09, 0.09, 0.0, False)]
        soft = [(0.5, -0.1, 0.5, 1.1, 0.2)]
    elif part == "FOREARM":
        bones = [
            (0.44, 0.03, 0.45 + j, 0.97, 0.028, 0.035, 0.45, True),
            (0.56, 0.03, 0.55, 0.97, 0.03, 0.022, 0.45, True),
        ]
        soft = [(0.5, -0.1, 0.5, 1.1, 0.15)]
    elif part == "ELBOW":
        bend = rng.uniform(-0.25, 0.1)
        end_x, end_y = 0.5 + np.sin(bend) * 0.5, 0.5 + np.cos(bend) * 0.5
        bones = [
            (0.5, -0.05, 0.5, 0.46, 0.045, 0.06, 0.5, True),
            (0.46, 0.52, end_x - 0.05, end_y + 0.02, 0.03, 0.028, 0.4, True),
            (0.55, 0.47, end_x + 0.05, end_y, 0.034, 0.022, 0.4, True),
        ]
        soft = [(0.5, -0.1, 0.5, 0.5, 0.18), (0.5, 0.5, end_x, end_y + 0.1, 0.16)]
    elif part == "WRIST":
        bones = [(0.42, 0.62, 0.42 + j, 1.1, 0.05, 0.045, 0.35, True), (0.58, 0.66, 0.59, 1.1, 0.028, 0.028, 0.3, True)]
        bones += [
            (b.x0, b.y0 - 0.3, b.x1, b.y1 - 0.3, b.r0 * 1.3, b.r1 * 1.3, b.flare, b.main)
            for b in _hand_bones(rng, with_fingers=False)
        ]
        soft = [(0.5, 0.0, 0.5, 1.1, 0.2)]
    elif part == "HAND":
        bones = _hand_bones(rng)
        soft = [(0.5, 0.62, 0.5, 1.1, 0.16), (0.5, 0.55, 0.5, 0.75, 0.17)]
        soft += [(b.x0, b.y0, b.x1, b.y1, 0.035) for b in bones[:13] if b.main]
    elif part == "FINGER":
        bones = [
            (0.5, 1.05, 0.5 + j, 0.68, 0.065, 0.055, 0.35, True),
            (0.5 + j, 0.64, 0.5, 0.4, 0.055, 0.045, 0.35, True),
            (0.5, 0.37, 0.5, 0.21, 0.048, 0.04, 0.35, True),
            (0.5, 0.18, 0.5, 0.07, 0.04, 0.025, 0.3, True),
        ]
        soft = [(0.5, 0.05, 0.5, 1.1, 0.12)]
    elif part == "SHOULDER":
        bones = [
            (0.56, 0.42, 0.57, 0.43, 0.15, 0.15, 0.0, False),  # humeral head
            (0.6, 0.5, 0.66, 1.1, 0.075, 0.07, 0.2, True),  # humeral shaft
            (-0.05, 0.2, 0.6, 0.26, 0.035, 0.04, 0.2, True),  # clavicle
            (0.36, 0.32, 0.2, 0.95, 0.1, 0.04, 0.0, False),  # scapula
            (0.38, 0.3, 0.75, 0.27, 0.03, 0.03, 0.2, False),  # acromion
        ]
        soft = [(0.4, 0.2, 0.6, 1.2, 0.45)]
    else:
        raise ValueError(f"part must be one of {list(MURA_PARTS)}, got {part!r}")
    return [LimbBone(*b) for b in bones], [SoftTissue(*s) for s in soft]


def render_limb(part: str, *, abnormal: bool, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[Box]]:
    """Draw one phantom upper-limb radiograph (MURA-like) of ``part``.

    Args:
        part: one of :data:`MURA_PARTS`.
        abnormal: draw a lesion: a fracture line through a bone, or orthopaedic hardware (plate and screws).
        size: image height in pixels (64 to 4096, :data:`~dadam.synthetic.drawing.MAX_SIZE`); the width is
            ``size * U(0.72, 1.0)``.
        rng: the image's generator.

    Returns:
        ``(image, boxes)``: ``image`` uint8 ``(size, W)``; ``boxes`` ``[("Fracture" | "Hardware", x0, y0, x1, y1)]``
        for an abnormal image (half-open pixels), else empty.

    Example:
        >>> img, boxes = render_limb("WRIST", abnormal=True, size=128, rng=np.random.default_rng(0))
        >>> img.shape[0], len(boxes)
        (128, 1)
    """
    if part not in MURA_PARTS:
        raise ValueError(f"part must be one of {list(MURA_PARTS)}, got {part!r}")
    height = check_size(size)
    width = int(round(height * rng.uniform(0.72, 1.0)))
    bones, soft = limb_bones(part, rng)
    rotation = rng.uniform(-0.35, 0.35)
    scale = rng.uniform(0.85, 1.05)
    cos_r, sin_r = np.cos(rotation), np.sin(rotation)
    centre_x = width / 2 + rng.normal(0, 0.03) * width
    centre_y = height / 2 + rng.normal(0, 0.03) * height
    unit = height * scale  # pixels per canonical unit

    def to_pixels(x: float, y: float) -> tuple[float, float]:
        """Canonical frame -> pixels (rotated about the centre, scaled, shifted)."""
        return (
            centre_x + unit * ((x - 0.5) * cos_r - (y - 0.5) * sin_r),
            centre_y + unit * ((x - 0.5) * sin_r + (y - 0.5) * cos_r),
        )

    tissue = np.zeros((height, width), np.float32)
    for t in soft:
        radius = t.radius * height * scale
        tissue = np.maximum(tissue, capsule(height, width, to_pixels(t.x0, t.y0), to_pixels(t.x1, t.y1), radius))
    tissue = blur(np.minimum(tissue * 3.0, 1.0), height / 100)
    bone = np.zeros((height, width), np.float32)
    capsules = []
    for b in bones:
        r0, r1 = b.r0 * height * scale, b.r1 * height * scale
        cap = capsule(height, width, to_pixels(b.x0, b.y0), to_pixels(b.x1, b.y1), r0, r1, flare=b.flare, cortex=0.55)
        capsules.append(cap)
        bone += cap
    added = np.zeros((height, width), np.float32)
    boxes: list[Box] = []
    if abnormal:
        mains = [i for i, b in enumerate(bones) if b.main]
        k = mains[int(rng.integers(len(mains)))]
        b = bones[k]
        t = rng.uniform(0.3, 0.7)  # where along the bone
        mid_x, mid_y = b.x0 + t * (b.x1 - b.x0), b.y0 + t * (b.y1 - b.y0)
        axis_x, axis_y = b.x1 - b.x0, b.y1 - b.y0
        length = max(np.hypot(axis_x, axis_y), 1e-6)
        axis_x, axis_y = axis_x / length, axis_y / length  # bone axis
        r = (b.r0 + t * (b.r1 - b.r0)) * 1.6
        inside_bone = capsules[k] > 0.05
        if rng.random() < 0.6:  # fracture: an oblique dark line across the bone
            angle = rng.uniform(-0.6, 0.6)
            nx = -axis_y * np.cos(angle) + axis_x * np.sin(angle)
            ny = axis_x * np.cos(angle) + axis_y * np.sin(angle)
            p0, p1 = to_pixels(mid_x - nx * r, mid_y - ny * r), to_pixels(mid_x + nx * r, mid_y + ny * r)
            gap = polyline(height, width, np.array([p0[0], p1[0]]), np.array([p0[1], p1[1]]), max(1.5, height / 160))
            gap *= inside_bone
            bone = bone * (1 - 0.9 * gap)
            added += 0.25 * blur(gap, height / 200) * inside_bone
            m = gap > 0.3
            name = "Fracture"
        else:  # plate along the bone plus screws across it
            half = rng.uniform(0.08, 0.14)
            off = r * 0.9
            q0 = to_pixels(mid_x - axis_x * half - axis_y * off, mid_y - axis_y * half + axis_x * off)
            q1 = to_pixels(mid_x + axis_x * half - axis_y * off, mid_y + axis_y * half + axis_x * off)
            plate = capsule(height, width, q0, q1, max(2.0, height * 0.012))
            hardware = plate
            for along in np.linspace(-half * 0.8, half * 0.8, int(rng.integers(3, 6))):
                s0 = to_pixels(mid_x + axis_x * along - axis_y * off * 1.3, mid_y + axis_y * along + axis_x * off * 1.3)
                s1 = to_pixels(mid_x + axis_x * along + axis_y * off * 1.1, mid_y + axis_y * along - axis_x * off * 1.1)
                hardware = np.maximum(hardware, capsule(height, width, s0, s1, max(1.2, height * 0.006)))
            added += 2.5 * hardware
            m = hardware > 0.2
            name = "Hardware"
        box = box_from_mask(m)
        if box is not None:
            boxes.append((name, *box))
    dens = 0.55 * tissue + 0.9 * bone + added
    dens += tissue * smooth_noise(height, width, height / 12, rng) * 0.04
    img = 1.0 - np.exp(-rng.uniform(0.9, 1.3) * dens)
    img = img * rng.uniform(0.85, 1.0) + 0.04
    img = img + blur(rng.standard_normal((height, width)).astype(np.float32), 0.7) * rng.uniform(0.01, 0.025)
    return to_uint8(img), boxes
