"""Phantom chest (and limb) radiographs with boxes, written in the on-disk layout of real datasets.

The phantoms stand in for data that cannot be shipped (NIH ChestX-ray14, CXR-LT/MIMIC-CXR-JPG, ChestX-Det,
VinDr-CXR, MURA) so that the readers, the patch bank, the augmentation and the training loop can be run end to end
without downloads. Each image is drawn procedurally: rounded shoulders, arms and a tapered chest wall, lung fields,
heart and mediastinum, spine, posterior and anterior ribs with uneven spacing, clavicles, diaphragm domes over an
abdomen that fades downward (liver, gastric bubble, bowel gas), branching lung vessels, pose, exposure variation and
grain, plus one drawn lesion per positive class with a tight box computed from the drawn mask. The smooth anatomy is
drawn on a half-resolution grid and upsampled once; lesions are drawn at full resolution.

Labels over the 26 CXR-LT classes follow the long tail of the real CXR-LT 2023 train counts and a co-occurrence
structure from a latent Gaussian copula with a few "syndrome" factors (heart failure, infection, ICU, chronic,
air leak/trauma, neoplasm). ``No Finding`` is 1 exactly when no other class is.

Everything is deterministic for a seed: image ``i`` is drawn from ``numpy.random.SeedSequence([seed, i, layout])``,
so any number of workers writes the same bytes.

Example:
    >>> import tempfile
    >>> root = generate("nih", tempfile.mkdtemp(), n=4, size=128, progress=False, workers=1)
    >>> sorted(p.name for p in root.iterdir())
    ['BBox_List_2017.csv', 'Data_Entry_2017_v2020.csv', 'images', 'test_list.txt', 'train_val_list.txt']
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import multiprocessing
import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy.special import ndtri

from dadam import _draw as dr
from dadam.labels import (
    CHEXPERT_TO_CXR_LT,
    CXR_LT_CLASSES,
    CXR_LT_TRAIN_COUNTS,
    CXR_LT_TRAIN_IMAGES,
    NO_FINDING,
    NUM_CLASSES,
)

__all__ = [
    "LAYOUTS",
    "MURA_PARTS",
    "Box",
    "generate",
    "main",
    "render_chest",
    "render_limb",
    "sample_labels",
]

LAYOUTS: tuple[str, ...] = ("nih", "cxr-lt", "chestx-det", "vindr", "mura")
MURA_PARTS: tuple[str, ...] = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")

#: One drawn lesion: ``(class_name, x0, y0, x1, y1)``, xyxy pixels, half-open, top-left origin.
Box = tuple[str, int, int, int, int]

_IDX = {name: i for i, name in enumerate(CXR_LT_CLASSES)}
_NF = _IDX[NO_FINDING]

# ---------------------------------------------------------------------------------------------------------------
# Labels: latent Gaussian copula with syndrome factors
# ---------------------------------------------------------------------------------------------------------------

_FACTORS = ("general", "cardiac", "infection", "icu", "chronic", "airleak", "neoplasm")
# class -> {factor: loading}; the rest of each class's variance is its own noise.
_LOADINGS: dict[str, dict[str, float]] = {
    "Atelectasis": {"general": 0.3, "infection": 0.3, "icu": 0.35, "cardiac": 0.25},
    "Calcification of the Aorta": {"chronic": 0.6, "general": 0.1},
    "Cardiomegaly": {"cardiac": 0.7, "general": 0.2, "chronic": 0.2},
    "Consolidation": {"infection": 0.65, "general": 0.2},
    "Edema": {"cardiac": 0.65, "icu": 0.3, "general": 0.2},
    "Emphysema": {"chronic": 0.45, "airleak": 0.2},
    "Enlarged Cardiomediastinum": {"cardiac": 0.55, "general": 0.2, "chronic": 0.2},
    "Fibrosis": {"chronic": 0.45, "general": 0.1},
    "Fracture": {"airleak": 0.5, "chronic": 0.2},
    "Hernia": {"chronic": 0.4},
    "Infiltration": {"infection": 0.5, "general": 0.2},
    "Lung Lesion": {"neoplasm": 0.6},
    "Lung Opacity": {"infection": 0.55, "general": 0.3, "icu": 0.2},
    "Mass": {"neoplasm": 0.6},
    "Nodule": {"neoplasm": 0.55, "chronic": 0.1},
    "Pleural Effusion": {"cardiac": 0.5, "icu": 0.35, "general": 0.25, "neoplasm": 0.15},
    "Pleural Other": {"chronic": 0.3, "airleak": 0.2, "neoplasm": 0.2},
    "Pleural Thickening": {"chronic": 0.45, "neoplasm": 0.15},
    "Pneumomediastinum": {"airleak": 0.65, "icu": 0.2},
    "Pneumonia": {"infection": 0.6, "general": 0.2},
    "Pneumoperitoneum": {"airleak": 0.3, "icu": 0.35},
    "Pneumothorax": {"airleak": 0.5, "icu": 0.4},
    "Subcutaneous Emphysema": {"airleak": 0.7, "icu": 0.2},
    "Support Devices": {"icu": 0.75, "general": 0.2},
    "Tortuous Aorta": {"chronic": 0.6, "cardiac": 0.1},
}


def _loading_matrix() -> np.ndarray:
    """``(26, F)`` loadings; the No Finding row is zero (it is derived, not sampled)."""
    mat = np.zeros((NUM_CLASSES, len(_FACTORS)), np.float64)
    for name, row in _LOADINGS.items():
        for f, val in row.items():
            mat[_IDX[name], _FACTORS.index(f)] = val
    return mat


def _latent(n: int, rng: np.random.Generator, lmat: np.ndarray) -> np.ndarray:
    """``(n, 26)`` standard-normal latents with correlation ``L L^T`` off the diagonal."""
    f = rng.standard_normal((n, lmat.shape[1]))
    e = rng.standard_normal((n, NUM_CLASSES))
    own = np.sqrt(np.clip(1.0 - (lmat**2).sum(1), 0.05, 1.0))
    return f @ lmat.T + e * own


@functools.lru_cache(maxsize=1)
def _thresholds() -> np.ndarray:
    """Latent thresholds ``(26,)`` so that, after rejecting all-negative rows, each class has its CXR-LT rate.

    A row is "No Finding" with the real rate; otherwise latents are drawn until one class is positive, so the
    conditional rate of class c must be ``count_c / (images - no_finding)``. Calibrated by a fixed-seed Monte Carlo
    fixed point on ``P(any positive)``.
    """
    lmat = _loading_matrix()
    p = np.array([CXR_LT_TRAIN_COUNTS[c] / CXR_LT_TRAIN_IMAGES for c in CXR_LT_CLASSES])
    p_sick = 1.0 - p[_NF]
    target = p / p_sick  # rate among rows with a finding
    target[_NF] = 1e-9
    z = _latent(200_000, np.random.default_rng(12345), lmat)
    p_any = 0.9
    thr = ndtri(1.0 - np.clip(target * p_any, 1e-9, 0.999))
    for _ in range(30):
        thr = ndtri(1.0 - np.clip(target * p_any, 1e-9, 0.999))
        hits = z > thr
        any_ = hits.any(1)
        rate = hits[any_].mean(0)
        # adjust each threshold so the conditional rate matches the target
        p_any = float(any_.mean())
        ratio = np.where(target > 1e-8, target / np.maximum(rate, 1e-9), 1.0)
        target_unc = np.clip(hits.mean(0) * ratio, 1e-9, 0.999)
        thr = ndtri(1.0 - target_unc)
        target = target_unc / p_any
    thr[_NF] = np.inf
    return thr


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def sample_labels(n: int, *, seed: int) -> np.ndarray:
    """Draw ``n`` rows of CXR-LT labels with the real long tail and a plausible co-occurrence structure.

    Args:
        n: number of rows (>= 0).
        seed: integer seed >= 0; the same seed gives the same rows.

    Returns:
        ``(n, 26)`` float32 of 0/1 in :data:`dadam.labels.CXR_LT_CLASSES` order; ``No Finding`` is 1 exactly when
        every other class is 0.

    Example:
        >>> y = sample_labels(1000, seed=0)
        >>> bool(((y.sum(1) - y[:, 14] == 0) == (y[:, 14] == 1)).all())
        True
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    _check_seed(seed)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1ABE1]))
    thr = _thresholds()
    lmat = _loading_matrix()
    p_nf = CXR_LT_TRAIN_COUNTS[NO_FINDING] / CXR_LT_TRAIN_IMAGES
    healthy = rng.random(n) < p_nf
    out = np.zeros((n, NUM_CLASSES), np.float32)
    todo = np.flatnonzero(~healthy)
    while todo.size:
        hits = _latent(todo.size, rng, lmat) > thr
        ok = hits.any(1)
        out[todo[ok]] = hits[ok]
        todo = todo[~ok]
    out[:, _NF] = (out.sum(1) == 0).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Chest phantom
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Chest:
    """Anatomy of one phantom in "body" coordinates (fractions of the image, before pose), plus drawing grids."""

    s: int
    cx: float
    hw: float  # thorax half-width at the lung bases
    v_ap: float  # lung apices
    dome: tuple[float, float]  # diaphragm dome tops, (image-left = patient right, image-right)
    cp: float  # costophrenic depth below the dome
    heart_c: tuple[float, float]
    heart_r: tuple[float, float, float]  # (to image-left, to image-right, vertical)
    medw: float
    knob: tuple[float, float, float]  # aortic knob (u, v, r)
    rib_sp: float
    rib_ph: float
    air: float
    marks: float
    pose: tuple[float, float, float]  # zoom, du, dv (separable, so many maps are 1-D until combined)
    mu: float
    window: tuple[float, float]
    gamma: float
    noise: float
    shoulder: float = 0.07  # height of the trunk's top at the neck
    wall: float = 0.05  # soft tissue outside the lungs
    arm: tuple[float, float] = (0.5, 0.065)  # arm centre and radius
    axilla: float = 0.3
    rib_jit: np.ndarray = field(default=None, repr=False)  # (2, K) rib spacing jitter per side
    rib_tilt: tuple[float, float] = (1.0, 1.0)
    bubble: tuple[float, float, float, float] = (0.2, 0.0, 0.05, 0.03)  # gastric bubble (du, level, rx, ry)
    liver: float = 0.05
    heel: float = 0.0
    a: np.ndarray = field(default=None, repr=False)  # body coordinates of the full-resolution pixels (1, W)
    b: np.ndarray = field(default=None, repr=False)  # (H, 1)

    def to_px(self, a: np.ndarray | float, b: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Body coordinates -> pixel coordinates."""
        z, du, dv = self.pose
        x = 0.5 + du + z * (np.asarray(a) - 0.5)
        y = 0.5 + dv + z * (np.asarray(b) - 0.5)
        return x * self.s, y * self.s

    def body_grid(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Body coordinates ``a (1, n)``, ``b (n, 1)`` float32 of the pixel centres of an ``n x n`` image grid."""
        z, du, dv = self.pose
        u, v = dr.grid(n, n)
        return ((u - 0.5 - du) / z + 0.5).astype(np.float32), ((v - 0.5 - dv) / z + 0.5).astype(np.float32)

    def at(self, k: int) -> tuple[float, float]:
        """Body coordinates of flat full-resolution pixel index ``k``."""
        row, col = divmod(int(k), self.s)
        return float(self.a[0, col]), float(self.b[row, 0])


def _anatomy(s: int, rng: np.random.Generator) -> _Chest:
    u = rng.uniform
    dome_r = u(0.60, 0.66)
    hw = u(0.355, 0.405)
    wall, arm_r = u(0.035, 0.06), u(0.055, 0.075)
    ch = _Chest(
        s=s,
        cx=0.5 + rng.normal(0, 0.006),
        hw=hw,
        v_ap=u(0.10, 0.14),
        dome=(dome_r, dome_r + u(0.01, 0.04)),
        cp=u(0.09, 0.12),
        heart_c=(0.0, 0.0),
        heart_r=(u(0.1, 0.12), u(0.16, 0.19), u(0.14, 0.16)),
        medw=u(0.045, 0.058),
        knob=(u(0.05, 0.065), u(0.27, 0.31), u(0.028, 0.036)),
        rib_sp=u(0.056, 0.064),
        rib_ph=u(0, 1),
        air=u(0.5, 0.6),
        marks=u(0.8, 1.2),
        pose=(u(0.93, 1.07), rng.normal(0, 0.012), u(-0.01, 0.035)),
        mu=u(0.85, 1.15),
        window=(u(0.0, 0.08), u(0.86, 1.0)),
        gamma=u(0.85, 1.2),
        noise=u(0.008, 0.02),
        shoulder=u(0.01, 0.05),
        wall=wall,
        arm=(hw + wall + arm_r + u(0.0, 0.035), arm_r),
        axilla=u(0.26, 0.34),
        rib_jit=rng.normal(0, 0.1, (2, 14)),
        rib_tilt=(u(0.85, 1.15), u(0.85, 1.15)),
        bubble=(u(0.18, 0.25), u(0.0, 0.5), u(0.04, 0.065), u(0.03, 0.05)),
        liver=u(0.03, 0.07),
        heel=rng.normal(0, 0.04),
    )
    ch.heart_c = (ch.cx + u(0.035, 0.055), ch.dome[1] - u(0.01, 0.04))
    return ch


def _pose_grid(ch: _Chest) -> None:
    """Full-resolution body coordinates ``ch.a, ch.b`` (H, W) of every pixel (inverse of :meth:`_Chest.to_px`)."""
    ch.a, ch.b = ch.body_grid(ch.s)


class _PerSide:
    """``x[side]`` for side -1/1, computed on first use (full-resolution maps the lesions ask for)."""

    def __init__(self, make: Callable[[int], np.ndarray]):
        self._make, self._cache = make, {}

    def __getitem__(self, side: int) -> np.ndarray:
        if side not in self._cache:
            self._cache[side] = self._make(side)
        return self._cache[side]


class _Layers:
    """The density maps of one chest phantom.

    The anatomy is drawn on a half-resolution grid (it is smooth) and combined into one density map ``base``
    that is upsampled once. Lesions draw at full resolution into ``add`` (density), ``air_scale`` (multiplies the
    lung air) and ``marks_gain`` (multiplies the lung markings); the full-resolution anatomy maps they need
    (``side_lung``, ``side_margin``, ``heart``, ...) are upsampled on first use, so a lesion-free image pays
    for none of them.
    """

    def __init__(self, ch: _Chest, rng: np.random.Generator):
        self.ch = ch
        s = ch.s
        n = max(32, (s + 1) // 2)
        self.n = n
        a, b = ch.body_grid(n)
        self.ha, self.hb = a, b
        d = a - np.float32(ch.cx)
        ad = np.abs(d)
        self.h: dict[str, np.ndarray] = {}  # half-resolution maps by name
        ss = dr.smoothstep
        # --- lungs, one side at a time: side -1 is image-left (patient right)
        for side, dome in ((-1, ch.dome[0]), (1, ch.dome[1])):
            ds = d * side
            t = np.clip((b - ch.v_ap) / 0.3, 0.0, 1.0)
            lat = ch.hw * (0.3 + 0.7 * np.sin(t * (np.pi / 2)) ** 0.75)
            top = ch.v_ap + 2.2 * (ds - 0.15) ** 2
            dia = dome + ch.cp / 0.3 * ((ds - 0.45 * ch.hw) / ch.hw) ** 2 + 0.07 * ss(ds, 0.17, 0.05)
            med = ch.medw + 0.006 + 0.03 * ss(b, 0.1, 0.0)
            m_pleura = np.minimum(lat - ds, b - top)
            margin = np.minimum(np.minimum(ds - med, m_pleura), dia - b)
            self.h[f"lung{side}"] = ss(margin, 0.0, 0.01) * (ds > 0)
            self.h[f"margin{side}"] = m_pleura
            self.h[f"lat{side}"] = lat
            self.h[f"dia{side}"] = dia
            self.h[f"inner{side}"] = margin
            self.h[f"abd{side}"] = dome + ch.cp / 0.3 * (np.maximum(ds - 0.45 * ch.hw, 0) / ch.hw) ** 2
        lung = self.h["lung-1"] + self.h["lung1"]
        self.h["lung"] = lung
        # --- heart, mediastinum, aorta, trachea
        hx, hy = ch.heart_c
        rx = np.where(a < hx, np.float32(ch.heart_r[0]), np.float32(ch.heart_r[1]))
        rh = np.sqrt(((a - hx) / rx) ** 2 + ((b - hy) / ch.heart_r[2]) ** 2)
        heart = ss(1.0 - rh, 0.0, 0.05) * ss(b, hy - ch.heart_r[2] * 0.95, hy - 0.05)
        self.h["heart"] = heart
        kx, ky, kr = ch.knob
        knob = ss(1.0 - np.sqrt((a - (ch.cx + kx)) ** 2 + ((b - ky) * 0.8) ** 2) / kr, 0.0, 0.35)
        medw = ch.medw * (0.72 + 0.33 * ss(b, 0.12, 0.42))
        med = ss(medw - ad, 0.0, 0.01) * ss(b, 0.05, 0.2) * ss(max(ch.dome) + 0.03 - b, 0.0, 0.05)
        med = np.maximum(med, knob)
        self.h["med"] = med
        trachea = ss(0.012 - ad, 0.0, 0.004) * ss(0.33 - b, 0.0, 0.03)
        # --- abdomen: liver on the patient's right, stomach with its gas bubble under the left dome, fading down
        below = np.where(d < 0, self.h["abd-1"], self.h["abd1"])
        under = b - below
        abd = ss(under, -0.004, 0.006)
        self.h["abdomen"] = abd
        liver = ss(-d, -0.12, 0.1) * ss(0.12 + 0.25 * ch.liver + 0.3 * np.maximum(-d, 0) - under, 0.0, 0.04)
        bx, by, brx, bry = ch.bubble  # fundal gas: a dome-shaped lucency under the left hemidiaphragm, flat below
        dia_x = ch.dome[1] + ch.cp / 0.3 * (max(bx - 0.45 * ch.hw, 0.0) / ch.hw) ** 2
        bub_c = dia_x + 0.008 + bry * 0.8
        bub = ss(1.0 - np.sqrt(((d - bx) / brx) ** 2 + ((b - bub_c) / bry) ** 2), 0.0, 0.25)
        bub = bub * ss(bub_c + by * bry - b, 0.0, 0.003) * ss(under, 0.006, 0.014)
        gas = dr.smooth_noise(n, n, n / 14, rng)
        bowel = ss(gas, 0.9, 1.6) * ss(b, ch.dome[1] + 0.2, ch.dome[1] + 0.3) * abd
        fade = 1.0 - 0.68 * ((b - max(ch.dome)) / (1.1 - max(ch.dome))).clip(0.0, 1.0) ** 0.75 * abd
        # --- soft tissue: rounded shoulders, tapered chest wall, arms beside the chest, axillae
        w_tr = np.float32(ch.hw + ch.wall) + 0.03 * ss(b, 0.3, 0.7) - 0.025 * ss(b, 0.8, 1.05)  # (n, 1)
        ac, ar = ch.arm
        ac_b = ac + 0.06 * np.clip(b - ch.axilla, 0.0, None)  # the arms hang a little away from the chest
        w_tr = w_tr + (ac + ar * 0.5 - w_tr) * ss(ch.axilla - b, 0.0, 0.09)  # above the axilla, trunk = shoulder
        trunk = np.sqrt(np.clip(1.0 - (d / w_tr) ** 2, 0.0, 1.0))
        arm = np.sqrt(np.clip(1.0 - ((ad - ac_b) / ar) ** 2, 0.0, 1.0))
        r_sh = 0.11  # the deltoid's rounding
        x_sh = np.minimum(np.maximum(ad - (ac + ar - r_sh), 0.0), r_sh)
        top = ch.shoulder + 0.05 * np.clip((ad - 0.07) / 0.3, 0.0, None) ** 1.3  # trapezius slope
        top = top + r_sh - np.sqrt(r_sh**2 - x_sh**2)
        top_m = ss(b - top, 0.0, 0.03)
        neck = np.sqrt(np.clip(1.0 - (d / 0.075) ** 2, 0.0, 1.0)) * ss(0.2 - b, 0.0, 0.1)
        thick = np.maximum(np.maximum(trunk, 0.9 * arm) * np.sqrt(top_m), 0.8 * neck)  # projected thickness
        body = ss(thick, 0.0, 0.2)
        self.h["body"] = body
        # --- lung air: thinner at the periphery and apices, a little behind the domes
        air_depth = ch.air * (0.72 + 0.3 * ss(b, ch.v_ap, 0.5))
        inner = np.maximum(self.h["inner-1"] * (d < 0), self.h["inner1"] * (d > 0))
        periph = 0.6 + 0.4 * ss(inner, 0.0, 0.06)
        heart_vis = heart * (1.0 - abd * ss(under, 0.0, 0.025))  # the heart's lower border merges with the diaphragm
        lung_air = lung * periph * (1.0 - 0.7 * abd) * (1.0 - 0.85 * heart_vis) * air_depth
        # --- bones and markings
        ribs = self._ribs(a, b, d)
        self.h["ribs"] = ribs
        bone = self._bones(b, d, ad)
        marks = _markings(self, rng) * (0.2 * ch.marks)
        self.h["marks"] = marks
        texture = dr.smooth_noise(n, n, n / 10, rng) * 0.03
        texture += dr.smooth_noise(n, n, max(2.0, n / 60), rng) * (0.022 * lung)  # fine parenchymal mottle
        # --- combine (density: larger = brighter)
        soft = thick * (0.53 + 0.04 * ch.wall / 0.05) + 0.22 * body
        abd_d = abd * (0.36 + 0.12 * liver + 0.38 * ss(under, 0.14, 0.0))  # brightest just under the domes
        central = np.maximum(np.maximum(0.55 * med, 0.92 * heart_vis), abd_d)
        air_eff = lung_air * (1.0 - 0.45 * np.clip(marks, 0, 1)) * body
        self.h["air_eff"] = air_eff
        dens = soft + 0.6 * central - 0.18 * trachea + bone + ribs * (1 - 0.6 * abd) + marks + texture * body
        dens -= air_eff + 0.3 * bub + 0.1 * bowel
        dens *= fade * (1.0 + ch.heel * (b - 0.5))
        dens = np.maximum(dens, 0.0) * body + 0.03 * (1 - body)
        self.h["base"] = dens.astype(np.float32)
        self.add: np.ndarray | None = None  # lesion density (+ bright, - dark), full resolution, made on first use
        self._air_scale: np.ndarray | None = None
        self._marks_gain: np.ndarray | None = None
        self._full: dict[str, np.ndarray] = {}
        self.side_lung = _PerSide(lambda side: self.full(f"lung{side}"))
        self.side_margin = _PerSide(lambda side: self.full(f"margin{side}"))
        self.lat = _PerSide(lambda side: self.full(f"lat{side}"))
        self.dia = _PerSide(lambda side: self.full(f"dia{side}"))

    # ---- full-resolution views used by the lesions
    def up(self, x: np.ndarray) -> np.ndarray:
        """A half-resolution map ``(n, n)`` (or broadcastable to it) upsampled to ``(s, s)``."""
        return dr.upsample(np.broadcast_to(x, (self.n, self.n)), self.ch.s, self.ch.s)

    def full(self, name: str) -> np.ndarray:
        """The half-resolution map ``name`` upsampled to ``(s, s)`` (cached)."""
        if name not in self._full:
            n = self.n
            self._full[name] = dr.upsample(np.broadcast_to(self.h[name], (n, n)), self.ch.s, self.ch.s)
        return self._full[name]

    @property
    def lung(self) -> np.ndarray:
        return self.full("lung")

    @property
    def heart(self) -> np.ndarray:
        return self.full("heart")

    @property
    def med(self) -> np.ndarray:
        return self.full("med")

    @property
    def ribs(self) -> np.ndarray:
        return self.full("ribs")

    @property
    def d(self) -> np.ndarray:
        if "d" not in self._full:
            self._full["d"] = self.ch.a - np.float32(self.ch.cx)
        return self._full["d"]

    @property
    def ad(self) -> np.ndarray:
        return np.abs(self.d)

    def _lesion_map(self, attr: str, fill: float) -> np.ndarray:
        if getattr(self, attr) is None:
            setattr(self, attr, np.full((self.ch.s, self.ch.s), fill, np.float32))
        return getattr(self, attr)

    def add_density(self, x: np.ndarray) -> None:
        """Add lesion density ``x`` (H, W) (+ bright, - dark)."""
        self._lesion_map("add", 0.0)
        self.add += x

    def scale_air(self, x: np.ndarray) -> None:
        """Multiply the lung air by ``x`` (H, W) (fluid < 1, hyperlucency > 1)."""
        self._lesion_map("_air_scale", 1.0)
        self._air_scale *= x

    def scale_marks(self, x: np.ndarray) -> None:
        """Multiply the lung markings by ``x`` (H, W)."""
        self._lesion_map("_marks_gain", 1.0)
        self._marks_gain *= x

    def density(self) -> np.ndarray:
        """Full-resolution density: the upsampled anatomy plus the lesions' edits."""
        s = self.ch.s
        dens = dr.upsample(self.h["base"], s, s)
        if self._air_scale is not None:
            dens -= self.full("air_eff") * (self._air_scale - 1.0)
        if self._marks_gain is not None:
            dens += self.full("marks") * (self._marks_gain - 1.0)
        if self.add is not None:
            dens += self.add * self.full("body")
            np.maximum(dens, 0.0, out=dens)
        return dens

    def _ribs(self, a: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Posterior ribs (curving up from the spine, then down along the wall; spacing widening downwards) and
        fainter anterior ribs sloping the other way, each side with its own spacing, tilt and phase."""
        ch, ss = self.ch, dr.smoothstep
        out = np.zeros((self.n, self.n), np.float32)
        k = np.arange(14, dtype=np.float64)
        for i, side in enumerate((-1, 1)):
            ds = d * side
            lat = self.h[f"lat{side}"]
            cage = ss(lat + 0.03 - ds, 0.0, 0.02) * ss(ds, 0.015, 0.05)
            cage *= ss(b, ch.v_ap - 0.07, ch.v_ap - 0.02) * ss(self.h[f"dia{side}"] + 0.1 - b, 0, 0.04)
            sp = ch.rib_sp * (0.72 + 0.045 * k) * (1.0 + ch.rib_jit[i])
            v0 = ch.v_ap - 0.055 + (ch.rib_ph - 0.5) * 0.02 + 0.006 * side
            centres = v0 + np.concatenate([[0.0], np.cumsum(sp[:-1])])  # rib centre heights at the spine
            tilt = ch.rib_tilt[i] * (0.75 + 0.9 * np.clip(b - 0.15, 0.0, 0.6))
            phi = b - tilt * (-0.32 * ds + 1.9 * ds * ds)
            f = np.interp(phi, centres, k, left=-1.0, right=99.0).astype(np.float32)
            fr = f - np.floor(f) - 0.5
            width = 0.2 + 0.04 * ss(ds, 0.05, 0.3)  # half-width as a fraction of the spacing
            post = ss(width - np.abs(fr), 0.0, 0.07)
            rim = ss(np.abs(fr + 0.6 * width), 0.6 * width, 0.0) * post  # brighter lower cortex
            post = (0.75 * post + 0.45 * rim) * (f >= -0.5) * (f < 13.5)
            post *= 0.55 + 0.45 * ss(ds, 0.03, 0.1)
            # anterior ribs: from the lateral wall down and in, fading toward the costal cartilage
            phi_a = b - 0.5 * (lat - ds) + 0.4 * (lat - ds) ** 2
            sp_a = ch.rib_sp * 1.3 * (1.0 + 0.5 * ch.rib_jit[1 - i, :8])
            cen_a = ch.v_ap + 0.05 + ch.rib_ph * 0.03 + np.concatenate([[0.0], np.cumsum(sp_a[:-1])])
            fa = np.interp(phi_a, cen_a, k[:8], left=-1.0, right=99.0).astype(np.float32)
            fra = np.abs(fa - np.floor(fa) - 0.5)
            ant = (
                ss(0.22 - fra, 0.0, 0.1) * (fa >= -0.5) * (fa < 7.5) * ss(ds, 0.1, 0.22) * ss(lat + 0.01 - ds, 0, 0.03)
            )
            out += cage * (0.1 * post + 0.035 * ant)
        return out

    def _bones(self, b: np.ndarray, d: np.ndarray, ad: np.ndarray) -> np.ndarray:
        """Spine, clavicles, humeral heads and shafts, scapular borders (half resolution)."""
        ch, ss = self.ch, dr.smoothstep
        vert = 0.5 + 0.5 * np.cos((2 * np.pi / 0.048) * (b - ch.rib_ph * 0.05))
        spine = ss(0.034 - ad, 0.0, 0.008) * (0.7 + 0.3 * ss(vert, 0.55, 0.95))
        pedicle = ss(0.5 - np.sqrt(((ad - 0.022) / 0.006) ** 2 + ((vert - 0.6) / 0.5) ** 2), 0, 0.3)
        bone = (0.15 * spine + 0.07 * pedicle) * ss(b, 0.0, 0.05) * (1.0 - 0.5 * ss(b, 0.55, 0.8))
        ac, ar = ch.arm
        for side in (-1, 1):
            ds = d * side
            vc = 0.17 - 0.2 * (ds - 0.02) + 0.1 * (ds - 0.02) ** 2 + 0.01 * np.sin(ds * 14)  # rising laterally
            vc = vc + (ch.shoulder - 0.03) * 0.8
            clav = ss(0.016 - np.abs(b - vc), 0.0, 0.005) * ss(ds, 0.025, 0.045) * ss(ch.hw - 0.04 - ds, 0.0, 0.02)
            bone += 0.2 * clav * (0.8 + 0.3 * ss(np.abs(b - vc), 0.006, 0.012))
            hx = ac - 0.02
            hum = np.sqrt((ds - hx) ** 2 + (b - 0.2) ** 2)
            bone += 0.2 * ss(0.058 - hum, 0, 0.008) * (0.8 + 0.4 * ss(hum, 0.043, 0.056))
            xs = np.abs(ds - ac)
            shaft = ss(0.032 - xs, 0, 0.008) * ss(b, 0.2, 0.24)
            bone += 0.2 * shaft * (0.75 + 0.4 * ss(xs, 0.018, 0.03))
            scap = ss(0.006 - np.abs(ds - (ac - 0.14 + 0.25 * (b - 0.2))), 0, 0.004)
            bone += 0.05 * scap * ss(b, 0.16, 0.2) * ss(0.45 - b, 0, 0.05)
        return bone

    def lung_point(self, rng: np.random.Generator, side: int | None = None, *, zone: str = "any") -> tuple:
        """A random body-coordinate point well inside a lung (and not behind the heart)."""
        side = int(rng.choice((-1, 1))) if side is None else side
        ok = (self.h[f"lung{side}"] > 0.95) & (self.h["heart"] < 0.05)
        if zone == "lower":
            ok &= self.hb > 0.42
        elif zone == "upper":
            ok &= self.hb < 0.45
        elif zone == "peripheral":
            ok &= self.h[f"margin{side}"] < 0.08
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            idx = np.flatnonzero(self.h[f"lung{side}"] > 0.5)
        row, col = divmod(int(idx[rng.integers(idx.size)]), self.n)
        return side, float(self.ha[0, col]), float(self.hb[row, 0])


def _markings(ly: _Layers, rng: np.random.Generator) -> np.ndarray:
    """Branching pulmonary vessels from each hilum: thick and dense near the hila, thinning and fading toward the
    periphery, more and larger in the lower zones. Half resolution.

    Every generation splits each branch in two (vectorised over the branches); the branches are sampled as points
    weighted by their length, splatted into two maps (large and small vessels) and blurred to their width.
    """
    ch, n = ly.ch, ly.n
    z = ch.pose[0]
    ss = dr.smoothstep
    k = 11
    p, ang, ln, wt = [], [], [], []
    for side in (-1, 1):
        # trunks fan out from the hilum, mostly laterally and downward (+ angle = down)
        base = np.linspace(-1.35, 1.5, k) + rng.normal(0, 0.1, k)
        ang.append(np.where(side > 0, base, np.pi - base))
        hy = 0.43 + 0.05 * np.sin(base) + rng.normal(0, 0.01, k)  # along the hilum
        p.append(np.stack([ch.cx + side * (0.07 + 0.02 * np.cos(base)), hy], 1))
        ln.append((0.05 + 0.03 * np.clip(base, 0, None)) * rng.uniform(0.8, 1.2, k))
        wt.append(0.75 + 0.35 * np.clip(base, 0, None))
    p, ang, ln, wt = np.concatenate(p), np.concatenate(ang), np.concatenate(ln), np.concatenate(wt)
    segs, weights, big = [], [], []
    steps = 6
    for gen in range(8):
        m = p.shape[0]
        bend = rng.normal(0, 0.3, m)[:, None] * np.linspace(0.0, 1.0, steps)[None, :]
        a_t = ang[:, None] + bend  # (m, steps)
        dx, dy = np.cos(a_t) * (ln[:, None] / steps), np.sin(a_t) * (ln[:, None] / steps)
        xs = p[:, :1] + np.concatenate([np.zeros((m, 1)), np.cumsum(dx, 1)], 1)  # (m, steps + 1)
        ys = p[:, 1:] + np.concatenate([np.zeros((m, 1)), np.cumsum(dy, 1)], 1)
        segs.append((xs, ys))
        weights.append(np.repeat(wt[:, None], steps + 1, 1))
        big.append(np.full((m, steps + 1), gen < 2))
        end = np.stack([xs[:, -1], ys[:, -1]], 1)
        spread = rng.uniform(0.3, 0.65, m)
        p = np.concatenate([end, end])
        ang = np.concatenate([a_t[:, -1] + spread, a_t[:, -1] - spread * rng.uniform(0.5, 1.0, m)])
        ang += rng.normal(0, 0.12, 2 * m)
        ln = np.concatenate([ln, ln]) * rng.uniform(0.65, 0.9, 2 * m)
        wt = np.concatenate([wt, wt]) * 0.68
        keep = rng.random(2 * m) < (1.0 if gen < 2 else 0.8)
        p, ang, ln, wt = p[keep], ang[keep], ln[keep], wt[keep]
    # resample every branch polyline at ~0.5 grid pixel and splat; weight = length per sample
    scale = n * z
    xs = np.concatenate([x for x, _ in segs])
    ys = np.concatenate([y for _, y in segs])
    w_ = np.concatenate([w[:, :-1] for w in weights])
    bg = np.concatenate([g[:, :-1] for g in big])
    sub = 4
    fr = (np.arange(sub, dtype=np.float64) / sub)[None, None, :]
    px, py = ch.to_px(xs, ys)
    px, py = px * (n / ch.s), py * (n / ch.s)
    seg_len = np.hypot(np.diff(px, axis=1), np.diff(py, axis=1))  # (M, steps) grid pixels
    sx = (px[:, :-1, None] + np.diff(px, axis=1)[..., None] * fr).ravel()
    sy = (py[:, :-1, None] + np.diff(py, axis=1)[..., None] * fr).ravel()
    sw = np.repeat(w_ * seg_len / sub, sub, axis=1).ravel()
    sb = np.repeat(bg, sub, axis=1).ravel()
    ix, iy = np.rint(sx - 0.5).astype(np.int64), np.rint(sy - 0.5).astype(np.int64)
    ok = (ix >= 0) & (iy >= 0) & (ix < n) & (iy < n)
    flat, sw, sb = iy[ok] * n + ix[ok], sw[ok], sb[ok]
    large = np.bincount(flat, weights=sw * sb, minlength=n * n).reshape(n, n).astype(np.float32)
    small = np.bincount(flat, weights=sw * ~sb, minlength=n * n).reshape(n, n).astype(np.float32)
    sig_l, sig_s = 1.6 * scale / 512, 0.9 * scale / 512
    vessels = dr.blur(large, sig_l) * (3.5 * sig_l) + dr.blur(small, sig_s) * (3.2 * sig_s)
    # hilar shadows, the fade toward the periphery, more perfusion in the lower zones
    ha, hb = ly.ha, ly.hb
    d = ha - np.float32(ch.cx)
    rho = np.sqrt((np.abs(d) - 0.085) ** 2 + (hb - 0.44) ** 2)
    hilum = 0.7 * np.exp(-((rho / 0.04) ** 2)) * ss(hb, 0.33, 0.4)
    fade = 0.4 + 0.6 * np.exp(-rho / 0.3)
    lower = 0.85 + 0.3 * ss(hb, 0.35, 0.6)
    lung = ly.h["lung"] * (1.0 - 0.75 * ly.h["heart"])  # little of the vessels shows through the heart
    return (
        (np.minimum(vessels, 1.2) * fade * lower + hilum)
        * np.maximum(lung, np.minimum(hilum, 1.0))
        * (0.4 + 0.6 * lung)
    )


def _compose(ly: _Layers, rng: np.random.Generator) -> np.ndarray:
    """Density layers -> uint8 radiograph with exposure, tone curve, grain."""
    ch, s = ly.ch, ly.ch.s
    dens = ly.density()
    img = 1.0 - np.exp(-np.float32(ch.mu) * dens)
    lo, hi = ch.window
    img -= np.float32(lo)
    img *= np.float32(1.0 / (hi - lo))
    np.clip(img, 0.0, 1.0, out=img)
    img **= np.float32(ch.gamma)
    # grain: uniform noise smoothed with a [1, 2, 1] kernel each way (near-Gaussian, ~0.6 px correlation)
    g = rng.random((s + 2, s + 2), dtype=np.float32)
    g = g[:, :-2] + 2 * g[:, 1:-1] + g[:, 2:]
    g = g[:-2] + 2 * g[1:-1] + g[2:]  # mean 8, std sqrt(3)
    g -= np.float32(8.0)
    g *= np.float32(ch.noise * 2.0 * 0.47 / np.sqrt(3.0))
    img += g
    return dr.to_uint8(img)


# --- lesions: each gets (ly, rng) and returns the masks of what it drew ------------------------------------------


def _window(ly: _Layers, a0: float, b0: float, ra: float, rb: float) -> tuple[slice, slice]:
    """Full-resolution pixel window ``(rows, cols)`` covering body coordinates ``a0 +- ra``, ``b0 +- rb``."""
    ch = ly.ch
    (x0, x1), (y0, y1) = ch.to_px(np.array([a0 - ra, a0 + ra]), np.array([b0 - rb, b0 + rb]))
    c0, c1 = max(0, int(np.floor(x0)) - 2), min(ch.s, int(np.ceil(x1)) + 3)
    r0, r1 = max(0, int(np.floor(y0)) - 2), min(ch.s, int(np.ceil(y1)) + 3)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _blob(ly: _Layers, a0: float, b0: float, r: float, rng: np.random.Generator, *, lob: float = 0.15) -> np.ndarray:
    """Lobulated soft disk around body point ``(a0, b0)`` of radius ``r`` (fraction); drawn in its window only."""
    ph = rng.uniform(0, 2 * np.pi, 3)
    ext = r * (1 + 2.0 * lob) + 0.004
    rows, cols = _window(ly, a0, b0, ext, ext)
    out = np.zeros((ly.ch.s, ly.ch.s), np.float32)
    x, y = ly.ch.a[:, cols] - a0, ly.ch.b[rows] - b0
    ang = np.arctan2(y, x)
    rr = r * (1 + lob * (np.sin(3 * ang + ph[0]) + 0.6 * np.sin(5 * ang + ph[1]) + 0.4 * np.sin(7 * ang + ph[2])))
    out[rows, cols] = dr.smoothstep(rr - np.sqrt(x * x + y * y), -0.0015, 0.0025)
    return out


def _cloud(ly: _Layers, side: int, a0: float, b0: float, rx: float, ry: float, rng, *, patchy: float) -> np.ndarray:
    """Patchy airspace opacity: an elliptic envelope times smooth noise, inside one lung; drawn in its window."""
    rows, cols = _window(ly, a0, b0, rx, ry)
    out = np.zeros((ly.ch.s, ly.ch.s), np.float32)
    h, w = rows.stop - rows.start, cols.stop - cols.start
    if h == 0 or w == 0:
        return out
    x, y = (ly.ch.a[:, cols] - a0) / rx, (ly.ch.b[rows] - b0) / ry
    env = np.clip(1 - np.sqrt(x * x + y * y), 0, 1) ** 0.6
    n = dr.smooth_noise(h, w, ly.ch.s / 22, rng)
    out[rows, cols] = np.clip(env * (1.0 + patchy * n) - 0.15, 0, 1) * ly.side_lung[side][rows, cols]
    return out


def _mask(x: np.ndarray, frac: float = 0.3) -> np.ndarray:
    m = float(np.abs(x).max())
    return np.abs(x) > max(frac * m, 1e-3) if m > 0 else np.zeros(x.shape, bool)


def _l_nodule(ly, rng):
    _, a0, b0 = ly.lung_point(rng)
    m = _blob(ly, a0, b0, rng.uniform(0.006, 0.013), rng, lob=0.05)
    ly.add_density(rng.uniform(0.3, 0.45) * m)
    return [_mask(m)]


def _l_mass(ly, rng):
    _, a0, b0 = ly.lung_point(rng)
    m = _blob(ly, a0, b0, rng.uniform(0.03, 0.055), rng, lob=0.12)
    ly.add_density(rng.uniform(0.35, 0.5) * m * (0.85 + 0.15 * m))
    return [_mask(m)]


def _l_lung_lesion(ly, rng):
    _, a0, b0 = ly.lung_point(rng, zone="upper")
    m = _blob(ly, a0, b0, rng.uniform(0.018, 0.03), rng, lob=0.3)
    ly.add_density(rng.uniform(0.3, 0.42) * m)
    return [_mask(m)]


def _cloud_lesion(zone: str, size: tuple[float, float], dens: tuple[float, float], patchy: float):
    def draw(ly, rng):
        side, a0, b0 = ly.lung_point(rng, zone=zone)
        rx, ry = rng.uniform(*size), rng.uniform(*size)
        c = _cloud(ly, side, a0, b0, rx, ry, rng, patchy=patchy)
        ly.add_density(rng.uniform(*dens) * c)
        ly.scale_air(1 - 0.5 * c)
        return [_mask(c, 0.2)]

    return draw


def _l_edema(ly, rng):
    c = np.zeros((ly.ch.s, ly.ch.s), np.float32)
    for side in (-1, 1):
        a0 = ly.ch.cx + side * rng.uniform(0.1, 0.14)
        c = np.maximum(c, _cloud(ly, side, a0, rng.uniform(0.42, 0.5), 0.14, 0.16, rng, patchy=0.4))
    ly.add_density(rng.uniform(0.22, 0.32) * c)
    ly.scale_air(1 - 0.4 * c)
    return [_mask(c, 0.2)]


def _l_effusion(ly, rng):
    # drawn on the half-resolution grid (it is smooth) and upsampled: fluid and its mask
    side = int(rng.choice((-1, 1)))
    ch, ds, b = ly.ch, side * (ly.ha - np.float32(ly.ch.cx)), ly.hb
    h = rng.uniform(0.07, 0.2)
    dia, lat = ly.h[f"dia{side}"], ly.h[f"lat{side}"]
    t = np.clip((ds - ch.medw) / (lat - ch.medw), 0, 1)
    meniscus = dia - h + (ch.cp + h * 0.2) - (ch.cp + h * 0.9) * t**2.2
    fluid = dr.smoothstep(b - meniscus, 0.0, 0.012) * dr.smoothstep(ly.h[f"margin{side}"] + 0.02, 0, 0.01)
    fluid *= dr.smoothstep(ds, ch.medw - 0.01, ch.medw + 0.01) * dr.smoothstep(dia + 0.004 - b, 0, 0.004)
    in_lung = ly.up(fluid * ly.h[f"lung{side}"])
    fluid = ly.up(fluid)
    ly.scale_air(1 - 0.95 * fluid)
    ly.add_density(0.14 * fluid)
    ly.scale_marks(1 - fluid)
    return [_mask(in_lung, 0.3)]


def _l_pneumothorax(ly, rng):
    side = int(rng.choice((-1, 1)))
    ch = ly.ch
    w = rng.uniform(0.025, 0.06)
    m = ly.side_margin[side]
    zone = dr.smoothstep(ch.v_ap + rng.uniform(0.3, 0.45) - ch.b, 0, 0.05)
    region = dr.smoothstep(w - m, 0, 0.004) * zone * ly.side_lung[side]
    line = np.exp(-(((m - w) / 0.0018) ** 2)) * zone * ly.side_lung[side]
    ly.scale_marks(1 - region)
    ly.scale_air(1 + 0.7 * region)
    ly.add_density(0.09 * line - 0.06 * region)
    return [_mask(region + line, 0.3)]


def _l_fibrosis(ly, rng):
    ch = ly.ch
    n = dr.smooth_noise(ch.s, ch.s, ch.s / 55, rng)
    net = np.exp(-((n / 0.3) ** 2))
    zone = np.zeros_like(n)
    for side in (-1, 1):
        zone += ly.side_lung[side] * dr.smoothstep(ly.side_margin[side], 0.12, 0.05)
    zone *= dr.smoothstep(ch.b, 0.35, 0.5)
    f = net * zone
    ly.add_density(rng.uniform(0.16, 0.24) * f)
    return [_mask(f * (zone > 0.5), 0.4)]


def _l_fracture(ly, rng):
    ch = ly.ch
    side = int(rng.choice((-1, 1)))
    ok = (ly.ribs > 0.8 * ly.ribs.max()) & (ly.side_lung[side] > 0.5) & (ly.side_margin[side] < 0.06)
    ok &= ch.b > ch.v_ap + 0.08
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        idx = np.flatnonzero(ly.ribs > 0.5 * ly.ribs.max())
    a0, b0 = ch.at(idx[rng.integers(idx.size)])
    ang = rng.uniform(-0.4, 0.4) + np.pi / 2
    x, y = ch.to_px(a0 + np.cos(ang) * np.array([-0.03, 0.03]), b0 + np.sin(ang) * np.array([-0.03, 0.03]))
    gap = dr.polyline(ch.s, ch.s, x, y, max(1.5, ch.s / 220))
    ribmask = ly.ribs > 0.3 * ly.ribs.max()
    brk = gap * ribmask
    # the break: a dark gap through the rib and a sliver of callus
    ly.add_density(0.12 * dr.blur(brk, 1.2) - 0.95 * gap * ly.ribs)
    return [_mask(brk, 0.3)]


def _l_devices(ly, rng):
    ch, s = ly.ch, ly.ch.s
    masks = []
    kinds = rng.choice(["ett", "ng", "cvc", "ecg", "pacer"], size=int(rng.integers(1, 4)), replace=False)
    lw = max(1.5, s / 200)
    for kind in kinds:
        if kind == "ett":
            b = np.linspace(-0.02, rng.uniform(0.22, 0.28), 20)
            m = dr.polyline(s, s, *ch.to_px(ch.cx + 0.003 * np.sin(b * 9), b), lw * 1.6)
        elif kind == "ng":
            b = np.linspace(-0.02, ch.dome[1] + 0.08, 40)
            a = ch.cx - 0.01 + 0.02 * dr.smoothstep(b, ch.dome[1] - 0.02, ch.dome[1] + 0.08)
            m = dr.polyline(s, s, *ch.to_px(a + 0.12 * dr.smoothstep(b, ch.dome[1], ch.dome[1] + 0.08), b), lw)
        elif kind == "cvc":
            side = rng.choice((-1, 1))
            t = np.linspace(0, 1, 30)
            a = ch.cx + side * (0.3 * (1 - t) ** 1.5 + 0.03)
            b = 0.13 + 0.1 * t**1.3 + 0.02 * np.sin(t * 3)
            m = dr.polyline(s, s, *ch.to_px(a, b), lw)
        elif kind == "ecg":
            m = np.zeros((s, s), np.float32)
            for _ in range(int(rng.integers(2, 5))):
                side, a0, b0 = ly.lung_point(rng, zone="peripheral")
                x0, y0 = ch.to_px(a0, b0)
                r = s * rng.uniform(0.012, 0.016)
                ring = dr.disk(s, s, float(x0), float(y0), r, r) - 0.6 * dr.disk(
                    s, s, float(x0), float(y0), r * 0.7, r * 0.7
                )
                dot = dr.disk(s, s, float(x0), float(y0), r * 0.3, r * 0.3)
                m = np.maximum(m, np.maximum(ring, dot))
                masks.append(_mask(ring + dot, 0.3))
            ly.add_density(0.9 * m)
            continue
        else:  # pacemaker: generator box in the upper chest plus leads to the heart
            side = rng.choice((-1, 1))
            a0, b0 = ch.cx + side * rng.uniform(0.2, 0.28), rng.uniform(0.18, 0.24)
            x0, y0 = ch.to_px(a0, b0)
            gen = dr.disk(s, s, float(x0), float(y0), s * 0.04, s * 0.028, soft=1.5) ** 0.3
            t = np.linspace(0, 1, 40)
            hx, hy = ch.heart_c
            a = a0 + (hx - a0) * t + 0.04 * np.sin(t * np.pi) * side
            b = b0 + (hy - b0) * t**0.8
            m = np.maximum(gen, dr.polyline(s, s, *ch.to_px(a, b), lw * 1.3))
        ly.add_density(1.0 * m)
        masks.append(_mask(m, 0.3))
    return masks


def _l_calcification(ly, rng):
    ch = ly.ch
    kx, ky, kr = ch.knob
    ang = np.linspace(np.pi * rng.uniform(1.05, 1.25), np.pi * rng.uniform(1.7, 1.95), 30)
    x, y = ch.to_px(ch.cx + kx + kr * 0.95 * np.cos(ang), ky + kr * 0.95 * np.sin(ang))
    m = dr.polyline(ch.s, ch.s, x, y, max(1.5, ch.s / 200))
    ly.add_density(0.55 * m)
    return [_mask(m)]


def _l_tortuous(ly, rng):
    ch = ly.ch
    kx, ky, kr = ch.knob
    t = np.linspace(0, 1, 60)
    a = ch.cx + kx * 0.6 + 0.035 * np.sin(np.pi * t * rng.uniform(1.2, 2.0) + rng.uniform(0, 1)) + 0.02 * t
    b = ky + t * (ch.dome[1] - ky)
    x, y = ch.to_px(a, b)
    m = dr.polyline(ch.s, ch.s, x, y, ch.s * 0.045)
    m = dr.blur(m, ch.s / 250)
    ly.add_density(0.2 * m)
    ly.scale_air(1 - 0.5 * m)
    return [_mask(m, 0.3)]


def _l_hernia(ly, rng):
    ch = ly.ch
    a0, b0 = ch.cx + rng.uniform(-0.02, 0.04), ch.dome[1] - rng.uniform(0.02, 0.06)
    r = rng.uniform(0.035, 0.055)
    bub = _blob(ly, a0, b0, r, rng, lob=0.04)
    gas = bub * dr.smoothstep(b0 + r * rng.uniform(0.0, 0.4) - ch.b, 0, 0.003)
    rim = np.clip(_blob(ly, a0, b0, r * 1.08, rng, lob=0.0) - bub, 0, 1)
    ly.add_density(-0.45 * gas + 0.1 * rim)
    return [_mask(bub + rim, 0.3)]


def _l_subq(ly, rng):
    ch, s = ly.ch, ly.ch.s
    side = int(rng.choice((-1, 1)))
    ds = side * ly.d
    zone = dr.smoothstep(ds - ly.lat[side], 0.015, 0.035) * dr.smoothstep(0.48 - ds, 0, 0.02)
    zone *= dr.smoothstep(ch.b, 0.15, 0.25) * dr.smoothstep(rng.uniform(0.55, 0.7) - ch.b, 0, 0.05)
    coarse = rng.standard_normal((12, 60)).astype(np.float32)
    n = np.asarray(Image.fromarray(coarse, mode="F").resize((s, s), Image.BICUBIC), dtype=np.float32)
    streak = np.exp(-((n / 0.3) ** 2)) * zone
    ly.add_density(-0.35 * streak)
    return [_mask(streak, 0.35)]


def _l_pneumomediastinum(ly, rng):
    ch = ly.ch
    hx, hy = ch.heart_c
    rh = np.hypot((ch.a - hx) / ch.heart_r[1], (ch.b - hy) / ch.heart_r[2])
    stripe = np.exp(-(((rh - 1.04) / 0.02) ** 2)) * (ch.a > hx) * (ch.b < hy)
    med_edge = np.exp(-(((ly.ad - ch.medw - 0.008) / 0.004) ** 2)) * dr.smoothstep(ch.b, 0.12, 0.2) * (ch.b < hy - 0.08)
    m = np.maximum(stripe, med_edge)
    ly.add_density(-0.3 * m)
    return [_mask(m, 0.3)]


def _l_pneumoperitoneum(ly, rng):
    ch = ly.ch
    side = -1 if rng.random() < 0.8 else 1
    ds = side * ly.d
    t = np.clip((ds - 0.06) / (ch.hw * 0.85), 0, 1)
    thick = rng.uniform(0.015, 0.03) * np.clip(np.sin(np.pi * t), 0, 1) ** 0.7
    under = ch.b - ly.dia[side] - 0.006
    m = dr.smoothstep(under, -0.002, 0.002) * dr.smoothstep(thick - under, 0.0, 0.003) * (t > 0) * (t < 1) * (ds > 0)
    ly.add_density(-0.6 * m)
    return [_mask(m, 0.3)]


def _l_pleural_thickening(ly, rng):
    side = int(rng.choice((-1, 1)))
    ch = ly.ch
    b0 = rng.uniform(ch.v_ap + 0.05, 0.55)
    zone = dr.smoothstep(ch.b, b0, b0 + 0.02) * dr.smoothstep(b0 + rng.uniform(0.1, 0.2) - ch.b, 0, 0.02)
    m = dr.smoothstep(rng.uniform(0.012, 0.02) - ly.side_margin[side], 0, 0.004) * zone * ly.side_lung[side]
    ly.add_density(0.3 * m)
    ly.scale_air(1 - 0.6 * m)
    return [_mask(m, 0.3)]


def _l_pleural_other(ly, rng):
    masks = []
    for _ in range(int(rng.integers(1, 3))):
        side, a0, b0 = ly.lung_point(rng, zone="peripheral")
        m = _blob(ly, a0, b0, rng.uniform(0.008, 0.014), rng, lob=0.3) * ly.side_lung[side]
        ly.add_density(0.45 * m)
        masks.append(_mask(m, 0.3))
    return masks


def _l_atelectasis(ly, rng):
    ch = ly.ch
    side, a0, b0 = ly.lung_point(rng, zone="lower")
    x0, y0 = ch.to_px(a0, b0)
    if rng.random() < 0.6:  # plate-like band
        m = dr.disk(
            ch.s,
            ch.s,
            float(x0),
            float(y0),
            ch.s * rng.uniform(0.05, 0.09),
            ch.s * rng.uniform(0.006, 0.012),
            soft=2.0,
            angle=rng.uniform(-0.35, 0.35),
        )
    else:  # wedge towards the hilum
        m = dr.disk(ch.s, ch.s, float(x0), float(y0), ch.s * 0.06, ch.s * 0.03, soft=3.0, angle=rng.uniform(-0.6, 0.6))
    m = m * ly.side_lung[side]
    ly.add_density(rng.uniform(0.3, 0.4) * m)
    ly.scale_air(1 - 0.6 * m)
    return [_mask(m, 0.3)]


_LESIONS: dict[str, Callable[[_Layers, np.random.Generator], list[np.ndarray]]] = {
    "Atelectasis": _l_atelectasis,
    "Calcification of the Aorta": _l_calcification,
    "Consolidation": _cloud_lesion("lower", (0.05, 0.09), (0.4, 0.5), 0.25),
    "Edema": _l_edema,
    "Fibrosis": _l_fibrosis,
    "Fracture": _l_fracture,
    "Hernia": _l_hernia,
    "Infiltration": _cloud_lesion("any", (0.05, 0.1), (0.18, 0.26), 0.9),
    "Lung Lesion": _l_lung_lesion,
    "Lung Opacity": _cloud_lesion("any", (0.05, 0.09), (0.25, 0.35), 0.5),
    "Mass": _l_mass,
    "Nodule": _l_nodule,
    "Pleural Effusion": _l_effusion,
    "Pleural Other": _l_pleural_other,
    "Pleural Thickening": _l_pleural_thickening,
    "Pneumomediastinum": _l_pneumomediastinum,
    "Pneumonia": _cloud_lesion("lower", (0.06, 0.1), (0.3, 0.42), 0.6),
    "Pneumoperitoneum": _l_pneumoperitoneum,
    "Pneumothorax": _l_pneumothorax,
    "Subcutaneous Emphysema": _l_subq,
    "Support Devices": _l_devices,
    "Tortuous Aorta": _l_tortuous,
}
# drawn in this order: anatomy changes first, then fluid, then what lies on top
_ORDER = (
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
assert set(_ORDER) == set(CXR_LT_CLASSES) - {NO_FINDING}


def _check_labels(labels_row: np.ndarray) -> np.ndarray:
    row = np.asarray(labels_row)
    if row.shape != (NUM_CLASSES,):
        raise ValueError(f"labels_row must have shape ({NUM_CLASSES},), got {row.shape}")
    return row > 0.5


def render_chest(labels_row: np.ndarray, *, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[Box]]:
    """Draw one phantom frontal chest radiograph with a lesion for each positive class.

    Args:
        labels_row: ``(26,)`` 0/1 in CXR-LT class order (``No Finding`` is ignored: it means "draw nothing").
        size: side of the square image in pixels (>= 64).
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
    img, boxes, _ = _render_chest(labels_row, size=size, rng=rng)
    return img, boxes


def _render_chest(labels_row, *, size, rng) -> tuple[np.ndarray, list[Box], list[np.ndarray]]:
    """:func:`render_chest` plus the ``(H, W)`` bool mask of each box (for polygons)."""
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise ValueError(f"size must be an integer >= 64, got {size!r}")
    pos = _check_labels(labels_row)
    anat_rng, lesion_rng, grain_rng = rng.spawn(3)
    ch = _anatomy(int(size), anat_rng)
    boxes: list[Box] = []
    masks: list[np.ndarray] = []
    # anatomy-changing findings (drawn before the layers are built)
    extra: list[tuple[str, str]] = []
    if pos[_IDX["Cardiomegaly"]]:
        k = lesion_rng.uniform(1.3, 1.5)
        ch.heart_r = (ch.heart_r[0] * k, ch.heart_r[1] * k * 1.05, ch.heart_r[2] * (1 + (k - 1) * 0.6))
        extra.append(("Cardiomegaly", "heart"))
    if pos[_IDX["Enlarged Cardiomediastinum"]]:
        ch.medw *= lesion_rng.uniform(1.5, 1.8)
        extra.append(("Enlarged Cardiomediastinum", "med"))
    if pos[_IDX["Emphysema"]]:
        ch.dome = (ch.dome[0] + 0.06, ch.dome[1] + 0.05)
        ch.cp *= 0.35
        ch.air *= 1.3
        ch.marks *= 0.45
        ch.hw *= 1.04
        extra.append(("Emphysema", "lung"))
    if pos.any():
        _pose_grid(ch)  # full-resolution body coordinates, for the lesions
    ly = _Layers(ch, anat_rng)
    drawn: list[tuple[str, np.ndarray]] = []
    for name, what in extra:
        if what == "heart":
            m = (ly.heart > 0.02) & (ch.b < ch.dome[1] + 0.03)
        elif what == "med":
            m = (ly.med > 0.5) & (ly.heart < 0.5) & (ch.b > 0.12) & (ch.b < ch.heart_c[1] - ch.heart_r[2] * 0.6)
        else:
            m = ly.lung > 0.5
        drawn.append((name, m))
    for name in _ORDER:
        if name in ("Cardiomegaly", "Enlarged Cardiomediastinum", "Emphysema") or not pos[_IDX[name]]:
            continue
        drawn.extend((name, m) for m in _LESIONS[name](ly, lesion_rng))
    for name, m in drawn:
        box = dr.box_from_mask(m)
        if box is not None:
            boxes.append((name, *box))
            masks.append(m)
    img = _compose(ly, grain_rng)
    return img, boxes, masks


# ---------------------------------------------------------------------------------------------------------------
# Limb phantom (MURA)
# ---------------------------------------------------------------------------------------------------------------

# bones per part in a canonical frame (fractions of the height; long axis vertical):
# (x0, y0, x1, y1, r0, r1, flare, main) -- "main" bones may carry the lesion of an abnormal study
_Bone = tuple[float, float, float, float, float, float, float, bool]


def _hand_bones(rng: np.random.Generator, *, with_fingers: bool = True) -> list[_Bone]:
    bones: list[_Bone] = []
    base_y, top_y = 0.78, 0.5
    for k in range(4):  # metacarpals II-V and fingers
        x0 = 0.4 + 0.075 * k
        x1 = 0.34 + 0.11 * k + rng.normal(0, 0.005)
        bones.append((x0, base_y, x1, top_y, 0.02, 0.018, 0.35, True))
        if with_fingers:
            dx, y = (x1 - x0) * 0.35, top_y - 0.02
            for length, r in ((0.15, 0.016), (0.09, 0.014), (0.06, 0.012)):
                bones.append((x1, y, x1 + dx * length / 0.28, y - length, r, r * 0.9, 0.3, True))
                x1, y = x1 + dx * length / 0.28, y - length - 0.02
    bones.append((0.36, 0.84, 0.24, 0.66, 0.022, 0.02, 0.35, True))  # thumb metacarpal
    if with_fingers:
        bones.append((0.235, 0.645, 0.17, 0.54, 0.018, 0.016, 0.3, True))
        bones.append((0.165, 0.525, 0.13, 0.46, 0.015, 0.012, 0.3, False))
    for i in range(8):  # carpals, two rows
        cx = 0.4 + 0.055 * (i % 4) + rng.normal(0, 0.004)
        cy = 0.83 + 0.05 * (i // 4)
        bones.append((cx, cy, cx + 0.01, cy + 0.005, 0.026, 0.026, 0.0, False))
    return bones


def _limb_bones(
    part: str, rng: np.random.Generator
) -> tuple[list[_Bone], list[tuple[float, float, float, float, float]]]:
    """Bones and soft-tissue capsules ``(x0, y0, x1, y1, r)`` of one body part, canonical frame."""
    j = rng.normal(0, 0.01)
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
        ex, ey = 0.5 + np.sin(bend) * 0.5, 0.5 + np.cos(bend) * 0.5
        bones = [
            (0.5, -0.05, 0.5, 0.46, 0.045, 0.06, 0.5, True),
            (0.46, 0.52, ex - 0.05, ey + 0.02, 0.03, 0.028, 0.4, True),
            (0.55, 0.47, ex + 0.05, ey, 0.034, 0.022, 0.4, True),
        ]
        soft = [(0.5, -0.1, 0.5, 0.5, 0.18), (0.5, 0.5, ex, ey + 0.1, 0.16)]
    elif part == "WRIST":
        bones = [(0.42, 0.62, 0.42 + j, 1.1, 0.05, 0.045, 0.35, True), (0.58, 0.66, 0.59, 1.1, 0.028, 0.028, 0.3, True)]
        bones += [
            (x0, y0 - 0.3, x1, y1 - 0.3, r0 * 1.3, r1 * 1.3, f, m)
            for (x0, y0, x1, y1, r0, r1, f, m) in _hand_bones(rng, with_fingers=False)
        ]
        soft = [(0.5, 0.0, 0.5, 1.1, 0.2)]
    elif part == "HAND":
        bones = _hand_bones(rng)
        soft = [(0.5, 0.62, 0.5, 1.1, 0.16), (0.5, 0.55, 0.5, 0.75, 0.17)]
        soft += [(b[0], b[1], b[2], b[3], 0.035) for b in bones[:13] if b[7]]
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
            (0.56, 0.42, 0.57, 0.43, 0.15, 0.15, 0.0, False),
            (0.6, 0.5, 0.66, 1.1, 0.075, 0.07, 0.2, True),
            (-0.05, 0.2, 0.6, 0.26, 0.035, 0.04, 0.2, True),
            (0.36, 0.32, 0.2, 0.95, 0.1, 0.04, 0.0, False),
            (0.38, 0.3, 0.75, 0.27, 0.03, 0.03, 0.2, False),
        ]
        soft = [(0.4, 0.2, 0.6, 1.2, 0.45)]
    else:
        raise ValueError(f"part must be one of {list(MURA_PARTS)}, got {part!r}")
    return bones, soft


def render_limb(part: str, *, abnormal: bool, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[Box]]:
    """Draw one phantom upper-limb radiograph (MURA-like) of ``part``.

    Args:
        part: one of :data:`MURA_PARTS`.
        abnormal: draw a lesion: a fracture line through a bone, or orthopaedic hardware (plate and screws).
        size: image height in pixels (>= 64); the width is ``size * U(0.72, 1.0)``.
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
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise ValueError(f"size must be an integer >= 64, got {size!r}")
    h = int(size)
    w = int(round(h * rng.uniform(0.72, 1.0)))
    bones, soft = _limb_bones(part, rng)
    th = rng.uniform(-0.35, 0.35)
    sc = rng.uniform(0.85, 1.05)
    c, s_ = np.cos(th), np.sin(th)
    ox, oy = w / 2 + rng.normal(0, 0.03) * w, h / 2 + rng.normal(0, 0.03) * h

    def px(x: float, y: float) -> tuple[float, float]:
        return ox + h * sc * ((x - 0.5) * c - (y - 0.5) * s_), oy + h * sc * ((x - 0.5) * s_ + (y - 0.5) * c)

    tissue = np.zeros((h, w), np.float32)
    for x0, y0, x1, y1, r in soft:
        tissue = np.maximum(tissue, dr.capsule(h, w, px(x0, y0), px(x1, y1), r * h * sc))
    tissue = dr.blur(np.minimum(tissue * 3.0, 1.0), h / 100)
    bone = np.zeros((h, w), np.float32)
    caps = []
    for x0, y0, x1, y1, r0, r1, flare, _main in bones:
        cap = dr.capsule(h, w, px(x0, y0), px(x1, y1), r0 * h * sc, r1 * h * sc, flare=flare, cortex=0.55)
        caps.append(cap)
        bone += cap
    add = np.zeros((h, w), np.float32)
    boxes: list[Box] = []
    if abnormal:
        mains = [i for i, b in enumerate(bones) if b[7]]
        k = mains[int(rng.integers(len(mains)))]
        x0, y0, x1, y1, r0, r1, *_ = bones[k]
        t = rng.uniform(0.3, 0.7)
        mx, my = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
        ax, ay = x1 - x0, y1 - y0
        ln = max(np.hypot(ax, ay), 1e-6)
        ax, ay = ax / ln, ay / ln  # bone axis
        r = (r0 + t * (r1 - r0)) * 1.6
        if rng.random() < 0.6:  # fracture: an oblique dark line across the bone
            ang = rng.uniform(-0.6, 0.6)
            nx, ny = -ay * np.cos(ang) + ax * np.sin(ang), ax * np.cos(ang) + ay * np.sin(ang)
            p0, p1 = px(mx - nx * r, my - ny * r), px(mx + nx * r, my + ny * r)
            gap = dr.polyline(h, w, np.array([p0[0], p1[0]]), np.array([p0[1], p1[1]]), max(1.5, h / 160))
            gap *= caps[k] > 0.05
            bone = bone * (1 - 0.9 * gap)
            add += 0.25 * dr.blur(gap, h / 200) * (caps[k] > 0.05)
            m = gap > 0.3
            name = "Fracture"
        else:  # plate along the bone plus screws across it
            half = rng.uniform(0.08, 0.14)
            off = r * 0.9
            q0 = px(mx - ax * half - ay * off, my - ay * half + ax * off)
            q1 = px(mx + ax * half - ay * off, my + ay * half + ax * off)
            hw_ = max(2.0, h * 0.012)
            plate = dr.capsule(h, w, q0, q1, hw_)
            m_all = plate
            for tt in np.linspace(-half * 0.8, half * 0.8, int(rng.integers(3, 6))):
                s0 = px(mx + ax * tt - ay * off * 1.3, my + ay * tt + ax * off * 1.3)
                s1 = px(mx + ax * tt + ay * off * 1.1, my + ay * tt - ax * off * 1.1)
                m_all = np.maximum(m_all, dr.capsule(h, w, s0, s1, max(1.2, h * 0.006)))
            add += 2.5 * m_all
            m = m_all > 0.2
            name = "Hardware"
        box = dr.box_from_mask(m)
        if box is not None:
            boxes.append((name, *box))
    dens = 0.55 * tissue + 0.9 * bone + add
    dens += tissue * dr.smooth_noise(h, w, h / 12, rng) * 0.04
    img = 1.0 - np.exp(-rng.uniform(0.9, 1.3) * dens)
    img = img * rng.uniform(0.85, 1.0) + 0.04
    img = img + dr.blur(rng.standard_normal((h, w)).astype(np.float32), 0.7) * rng.uniform(0.01, 0.025)
    return dr.to_uint8(img), boxes


# ---------------------------------------------------------------------------------------------------------------
# Dataset layouts
# ---------------------------------------------------------------------------------------------------------------

# CXR-LT class -> NIH ChestX-ray14 label (Data_Entry spelling) and NIH box-list spelling
_NIH_LABELS = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Pleural Effusion": "Effusion",
    "Emphysema": "Emphysema",
    "Fibrosis": "Fibrosis",
    "Hernia": "Hernia",
    "Infiltration": "Infiltration",
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pleural Thickening": "Pleural_Thickening",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}
_NIH_BOX = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Pleural Effusion": "Effusion",
    "Infiltration": "Infiltrate",
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}
NIH_DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
NIH_BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
_CHESTX_DET = {
    "Atelectasis": "Atelectasis",
    "Calcification of the Aorta": "Calcification",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Pleural Effusion": "Effusion",
    "Emphysema": "Emphysema",
    "Fibrosis": "Fibrosis",
    "Fracture": "Fracture",
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pleural Thickening": "Pleural Thickening",
    "Pneumothorax": "Pneumothorax",
}
VINDR_CLASSES: tuple[str, ...] = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other lesion",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
)
_VINDR = {
    "Tortuous Aorta": "Aortic enlargement",
    "Atelectasis": "Atelectasis",
    "Calcification of the Aorta": "Calcification",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Infiltration": "Infiltration",
    "Lung Opacity": "Lung Opacity",
    "Nodule": "Nodule/Mass",
    "Mass": "Nodule/Mass",
    "Lung Lesion": "Other lesion",
    "Fracture": "Other lesion",
    "Pleural Effusion": "Pleural effusion",
    "Pleural Thickening": "Pleural thickening",
    "Pneumothorax": "Pneumothorax",
    "Fibrosis": "Pulmonary fibrosis",
}
CHEXPERT_LABELS: tuple[str, ...] = tuple(CHEXPERT_TO_CXR_LT)  # the 14 CheXpert columns, in file order
_LAYOUT_CODE = {name: i + 1 for i, name in enumerate(LAYOUTS)}


@dataclass
class _Job:
    """One image to draw and write (picklable for the worker pool)."""

    index: int
    rel: str  # path relative to the dataset root
    fmt: str  # "png" | "jpg" | "dicom"
    labels: np.ndarray | None = None  # (26,) for chest images
    part: str = ""  # MURA body part
    abnormal: bool = False
    native: tuple[int, int] | None = None  # (H, W) to resize to (VinDr)
    monochrome1: bool = False
    polygons: bool = False


@dataclass
class _Result:
    boxes: list[Box]
    height: int
    width: int
    polygons: list[list[list[int]]] = field(default_factory=list)


def _atomic_write(path: pathlib.Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves neither a partial file nor a temporary
        raise


def _polygon(mask: np.ndarray) -> list[list[int]]:
    """Outline of the largest part of ``mask`` as ``[[x, y], ...]`` integer pixels (ChestX-Det style)."""
    import contourpy  # a matplotlib dependency

    lines = contourpy.contour_generator(z=mask.astype(np.float64)).lines(0.5)
    if not lines:
        return []
    line = max(lines, key=len)
    pts = np.rint(line).astype(np.int64)
    keep = np.ones(len(pts), bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)
    return pts[keep].tolist()


def _dicom_bytes(img16: np.ndarray, *, monochrome1: bool, uid_seed: str) -> bytes:
    """A minimal DX DICOM file (explicit VR little endian, 16-bit allocated, 12 bits stored)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    sop_uid = generate_uid(entropy_srcs=[uid_seed, "sop"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["dadam.synthetic"])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.Modality = "DX"
    ds.PatientID = uid_seed[:16]
    ds.Rows, ds.Columns = int(img16.shape[0]), int(img16.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(img16, dtype="<u2").tobytes()
    bio = io.BytesIO()
    ds.save_as(bio, enforce_file_format=True)
    return bio.getvalue()


def _have_pydicom() -> bool:
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return False
    return True


def _encode(img: np.ndarray, job: _Job, uid_seed: str) -> bytes:
    if job.fmt == "dicom":
        v = np.rint(img.astype(np.float32) / 255.0 * 4095.0).astype(np.uint16)
        return _dicom_bytes(4095 - v if job.monochrome1 else v, monochrome1=job.monochrome1, uid_seed=uid_seed)
    bio = io.BytesIO()
    if job.fmt == "jpg":
        Image.fromarray(img).save(bio, format="JPEG", quality=95)
    else:
        Image.fromarray(img).save(bio, format="PNG", compress_level=1)
    return bio.getvalue()


def _draw_job(args: tuple[str, int, int, str, _Job]) -> _Result:
    """Worker: draw one image, write it, return its boxes (in the written image's pixels)."""
    root, size, seed, layout, job = args
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(job.index), _LAYOUT_CODE[layout]]))
    polys: list[list[list[int]]] = []
    if job.labels is None:
        img, boxes = render_limb(job.part, abnormal=job.abnormal, size=size, rng=rng)
    else:
        img, boxes, masks = _render_chest(job.labels, size=size, rng=rng)
        if job.polygons:
            polys = [_polygon(m) for m in masks]
    if job.native is not None:
        nh, nw = job.native
        sx, sy = nw / img.shape[1], nh / img.shape[0]
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
        boxes = [
            (
                n,
                int(np.floor(x0 * sx)),
                int(np.floor(y0 * sy)),
                min(nw, int(np.ceil(x1 * sx))),
                min(nh, int(np.ceil(y1 * sy))),
            )
            for n, x0, y0, x1, y1 in boxes
        ]
    _atomic_write(pathlib.Path(root) / job.rel, _encode(img, job, f"{seed}-{layout}-{job.index}"))
    return _Result(boxes=boxes, height=int(img.shape[0]), width=int(img.shape[1]), polygons=polys)


def _run_jobs(
    root: pathlib.Path, jobs: Sequence[_Job], *, size: int, seed: int, layout: str, workers: int, progress: bool
) -> list[_Result]:
    from tqdm.auto import tqdm

    args = [(str(root), size, seed, layout, job) for job in jobs]
    bar = tqdm(total=len(args), desc=f"phantom {layout}", unit="img", disable=not progress)
    out: list[_Result] = []
    if workers <= 1 or len(args) < 8:
        for a in args:
            out.append(_draw_job(a))
            bar.update(1)
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            for res in pool.imap(_draw_job, args, chunksize=4):
                out.append(res)
                bar.update(1)
    bar.close()
    return out


def _csv_text(rows: Sequence[Sequence], header: str | None) -> str:
    """CSV text with ``\\n`` line ends; ``None`` cells are empty; the header line is written verbatim."""
    import csv

    bio = io.StringIO()
    if header is not None:
        bio.write(header + "\n")
    writer = csv.writer(bio, lineterminator="\n")
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return bio.getvalue()


def _fmt(x: float) -> str:
    return repr(float(x))


# --- nih ------------------------------------------------------------------------------------------------------


def _write_nih(root: pathlib.Path, n: int, size: int, seed: int, rng, run) -> None:
    labels = sample_labels(n, seed=seed)
    jobs, meta = [], []
    pid, fu = 0, 0
    for i in range(n):
        if i == 0 or rng.random() < 0.6:
            pid, fu = pid + int(rng.integers(1, 4)), 0
        else:
            fu += 1
        name = f"{pid:08d}_{fu:03d}.png"
        jobs.append(_Job(index=i, rel=f"images/{name}", fmt="png", labels=labels[i]))
        meta.append((name, pid, fu))
    results = run(jobs)
    entry, bbox, patients = [], [], {}
    for (name, pid, fu), y, res in zip(meta, labels, results, strict=True):
        found = sorted(_NIH_LABELS[c] for c in CXR_LT_CLASSES if c in _NIH_LABELS and y[_IDX[c]] > 0.5)
        ow, oh = (int(v) for v in rng.choice([[2048, 2500], [2500, 2048], [2992, 2991], [3056, 2544]]))
        sp = _fmt(rng.choice([0.143, 0.168, 0.139, 0.171]))
        entry.append(
            [
                name,
                "|".join(found) or "No Finding",
                fu,
                pid,
                int(rng.integers(18, 90)),
                "M" if rng.random() < 0.56 else "F",
                "PA" if rng.random() < 0.6 else "AP",
                ow,
                oh,
                sp,
                sp,
            ]
        )
        patients.setdefault(pid, []).append(name)
        nih_boxes = [b for b in res.boxes if b[0] in _NIH_BOX]
        if nih_boxes and rng.random() < 0.6:  # NIH boxed only a subset of its images
            for cls, x0, y0, x1, y1 in nih_boxes:
                bbox.append([name, _NIH_BOX[cls], _fmt(x0), _fmt(y0), _fmt(x1 - x0), _fmt(y1 - y0)])
    _atomic_write(root / "Data_Entry_2017_v2020.csv", _csv_text(entry, NIH_DATA_ENTRY_HEADER))
    _atomic_write(root / "BBox_List_2017.csv", _csv_text(bbox, NIH_BBOX_HEADER))
    pids = sorted(patients)
    test = set(p for p in pids if rng.random() < 0.2)
    _atomic_write(root / "train_val_list.txt", "".join(f"{m}\n" for p in pids if p not in test for m in patients[p]))
    _atomic_write(root / "test_list.txt", "".join(f"{m}\n" for p in pids if p in test for m in patients[p]))


# --- cxr-lt (MIMIC-CXR-JPG tree) --------------------------------------------------------------------------------


def _write_cxr_lt(root: pathlib.Path, n: int, size: int, seed: int, rng, run) -> None:
    labels = sample_labels(n, seed=seed)
    subjects = rng.choice(np.arange(10_000_000, 20_000_000, 37), size=max(1, n), replace=False)
    studies = rng.choice(np.arange(50_000_000, 60_000_000, 13), size=max(1, n), replace=False)
    jobs, meta = [], []
    si, st = -1, -1
    study_first = 0
    for i in range(n):
        new_subject = i == 0 or rng.random() < 0.45
        new_study = new_subject or rng.random() < 0.7
        if new_subject:
            si += 1
        if new_study:
            st += 1
            study_first = i
        else:
            labels[i] = labels[study_first]  # CXR-LT labels come from the study's report
        sub, stu = int(subjects[si]), int(studies[st])
        dicom = "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5))
        rel = f"files/p{str(sub)[:2]}/p{sub}/s{stu}/{dicom}.jpg"
        view = "PA" if rng.random() < 0.55 else "AP"
        jobs.append(_Job(index=i, rel=rel, fmt="jpg", labels=labels[i]))
        meta.append((dicom, sub, stu, view, rel))
    results = run(jobs)
    subj = sorted({m[1] for m in meta})
    dev = {s for s in subj if rng.random() < 0.2}
    if len(subj) > 1 and not dev:
        dev = {subj[-1]}
    if len(dev) == len(subj) and len(subj) > 1:
        dev.discard(subj[0])
    header = ",".join(["dicom_id", "subject_id", "study_id", "ViewPosition", "path", *CXR_LT_CLASSES])
    train_rows, dev_rows, md_rows, chex = [], [], [], {}
    for (dicom, sub, stu, view, rel), y, res in zip(meta, labels, results, strict=True):
        row = [dicom, sub, stu, view, rel, *(int(v) for v in y)]
        (dev_rows if sub in dev else train_rows).append(row)
        date = 21000101 + int(rng.integers(0, 99)) * 10000 + int(rng.integers(0, 12)) * 100 + int(rng.integers(0, 28))
        md_rows.append(
            [
                dicom,
                sub,
                stu,
                "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)",
                view,
                res.height,
                res.width,
                date,
                f"{int(rng.integers(0, 24)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}.{int(rng.integers(0, 1000)):03d}",
                "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)",
                "postero-anterior" if view == "PA" else "antero-posterior",
                "Erect" if view == "PA" else "Recumbent",
            ]
        )
        if (sub, stu) not in chex:
            cells = []
            for c in CHEXPERT_LABELS:
                pos = y[_IDX[c]] > 0.5
                r = rng.random()
                if pos:
                    cells.append(-1.0 if r < 0.12 and c != NO_FINDING else 1.0)
                else:
                    cells.append(0.0 if r < 0.1 and c != NO_FINDING else None)
            chex[(sub, stu)] = [sub, stu, *cells]
    _atomic_write(root / "train.csv", _csv_text(train_rows, header))
    _atomic_write(root / "development.csv", _csv_text(dev_rows, header))
    md_header = (
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
        "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
        "PatientOrientationCodeSequence_CodeMeaning"
    )
    _atomic_write(root / "mimic-cxr-2.0.0-metadata.csv", _csv_text(md_rows, md_header))
    chex_header = ",".join(["subject_id", "study_id", *CHEXPERT_LABELS])
    _atomic_write(root / "mimic-cxr-2.0.0-chexpert.csv", _csv_text(list(chex.values()), chex_header))


# --- chestx-det ---------------------------------------------------------------------------------------------------


def _write_chestx_det(root: pathlib.Path, n: int, size: int, seed: int, rng, run) -> None:
    labels = sample_labels(n, seed=seed)
    jobs = [_Job(index=i, rel=f"train/{36200 + i}.png", fmt="png", labels=labels[i], polygons=True) for i in range(n)]
    results = run(jobs)
    entries = []
    for job, res in zip(jobs, results, strict=True):
        syms, boxes, polys = [], [], []
        for (cls, x0, y0, x1, y1), poly in zip(res.boxes, res.polygons, strict=True):
            if cls in _CHESTX_DET:
                syms.append(_CHESTX_DET[cls])
                boxes.append([x0, y0, x1, y1])
                polys.append([[min(max(x, x0), x1 - 1), min(max(y, y0), y1 - 1)] for x, y in poly])
        entries.append({"file_name": pathlib.Path(job.rel).name, "syms": syms, "boxes": boxes, "polygons": polys})
    _atomic_write(root / "ChestX_Det_train.json", json.dumps(entries))


# --- vindr --------------------------------------------------------------------------------------------------------


def _write_vindr(root: pathlib.Path, n: int, size: int, seed: int, rng, run) -> None:
    labels = sample_labels(n, seed=seed)
    fmt = "dicom" if _have_pydicom() else "png"
    jobs = []
    for i in range(n):
        image_id = "".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=4))
        native = (int(round(size * rng.uniform(1.8, 2.4))), int(round(size * rng.uniform(1.8, 2.4))))
        ext = "dicom" if fmt == "dicom" else "png"
        jobs.append(
            _Job(
                index=i,
                rel=f"train/{image_id}.{ext}",
                fmt=fmt,
                labels=labels[i],
                native=native,
                monochrome1=bool(rng.random() < 0.25),
            )
        )
    results = run(jobs)
    rows = []
    for job, res in zip(jobs, results, strict=True):
        image_id = pathlib.Path(job.rel).stem
        raters = [f"R{int(r)}" for r in rng.choice(np.arange(1, 18), size=3, replace=False)]
        mapped = [(_VINDR[c], x0, y0, x1, y1) for c, x0, y0, x1, y1 in res.boxes if c in _VINDR]
        for rad in raters:
            mine = []
            for cls, x0, y0, x1, y1 in mapped:
                if rng.random() < 0.15:  # this rater missed it
                    continue
                bw, bh = x1 - x0, y1 - y0
                j = rng.normal(0, 0.03, size=4) * np.array([bw, bh, bw, bh])
                a0, b0 = np.clip(x0 + j[0], 0, res.width - 1), np.clip(y0 + j[1], 0, res.height - 1)
                a1, b1 = np.clip(x1 + j[2], a0 + 1, res.width), np.clip(y1 + j[3], b0 + 1, res.height)
                mine.append(
                    [image_id, cls, VINDR_CLASSES.index(cls), rad, *(round(float(v), 1) for v in (a0, b0, a1, b1))]
                )
            rows.extend(mine or [[image_id, "No finding", 14, rad, None, None, None, None]])
    header = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"
    _atomic_write(root / "train.csv", _csv_text(rows, header))


# --- mura ---------------------------------------------------------------------------------------------------------


def _write_mura(root: pathlib.Path, n: int, size: int, seed: int, rng, run) -> None:
    studies = []  # (split, part, patient, study_no, positive, n_images)
    count, patient = 0, 0
    while count < n:
        part = MURA_PARTS[int(rng.integers(len(MURA_PARTS)))]
        split = "valid" if rng.random() < 0.12 else "train"
        patient += 1
        for k in range(1 if rng.random() < 0.8 else 2):
            m = min(int(rng.integers(1, 5)), n - count)
            if m <= 0:
                break
            studies.append((split, part, patient, k + 1, bool(rng.random() < 0.42), m))
            count += m
    if n >= 2 and len({s[0] for s in studies}) == 1:  # keep both splits present: move images to a new patient
        split, part, pat, k, positive, m = studies[-1]
        if len(studies) > 1:  # the whole last study
            studies.pop()
            moved = m
        else:  # one study holds every image: leave it all but one
            studies[-1] = (split, part, pat, k, positive, m - 1)
            moved = 1
        studies.append(("valid" if split == "train" else "train", part, patient + 1, 1, positive, moved))
    # number patients per split like MURA (valid patients continue after train's)
    number = {}
    for split, first in (("train", 1), ("valid", 11185)):
        pats = sorted({s[2] for s in studies if s[0] == split})
        number.update({(split != "train", p): first + k for k, p in enumerate(pats)})
    jobs, paths, labelled = [], {"train": [], "valid": []}, {"train": [], "valid": []}
    i = 0
    for split, part, pat, k, positive, m in sorted(studies, key=lambda s: (s[0] != "train", s[1], s[2], s[3])):
        folder = f"MURA-v1.1/{split}/XR_{part}/patient{number[(split != 'train', pat)]:05d}/study{k}_{'positive' if positive else 'negative'}/"
        labelled[split].append([folder, int(positive)])
        for j in range(m):
            rel = f"{folder}image{j + 1}.png"
            jobs.append(_Job(index=i, rel=rel, fmt="png", part=part, abnormal=positive))
            paths[split].append([rel])
            i += 1
    run(jobs)
    for split in ("train", "valid"):
        _atomic_write(root / "MURA-v1.1" / f"{split}_image_paths.csv", _csv_text(paths[split], None))
        _atomic_write(root / "MURA-v1.1" / f"{split}_labeled_studies.csv", _csv_text(labelled[split], None))


_WRITERS = {
    "nih": _write_nih,
    "cxr-lt": _write_cxr_lt,
    "chestx-det": _write_chestx_det,
    "vindr": _write_vindr,
    "mura": _write_mura,
}


def generate(
    layout: str,
    out: str | os.PathLike,
    *,
    n: int,
    size: int = 512,
    seed: int = 0,
    progress: bool = True,
    workers: int = 0,
) -> pathlib.Path:
    """Write a phantom dataset of ``n`` images in a real dataset's on-disk layout.

    Layouts: ``nih`` (``images/*.png``, ``Data_Entry_2017_v2020.csv``, ``BBox_List_2017.csv``), ``cxr-lt``
    (MIMIC-CXR-JPG ``files/`` tree, ``train.csv``/``development.csv``, metadata and CheXpert CSVs), ``chestx-det``
    (``train/*.png``, ``ChestX_Det_train.json``), ``vindr`` (``train/<image_id>.dicom`` or ``.png`` without pydicom,
    ``train.csv`` with 3 raters) and ``mura`` (``MURA-v1.1/...``). Headers follow the real files byte for byte.

    Args:
        layout: one of :data:`LAYOUTS`.
        out: dataset root to write into (created; existing files of the same names are replaced).
        n: number of images (>= 1).
        size: image side in pixels (>= 64; VinDr images are resized to ``size * U(1.8, 2.4)`` per side).
        seed: integer >= 0; the same seed writes the same bytes, whatever ``workers``.
        progress: show a tqdm bar.
        workers: processes; 0 = ``min(2, cpu_count)``.

    Returns:
        The dataset root (``out``) as a :class:`pathlib.Path`.

    Example:
        >>> import tempfile
        >>> root = generate("mura", tempfile.mkdtemp(), n=3, size=96, progress=False, workers=1)
        >>> (root / "MURA-v1.1" / "train_image_paths.csv").exists()
        True
    """
    if layout not in _WRITERS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise ValueError(f"size must be an integer >= 64, got {size!r}")
    if not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0 = auto), got {workers!r}")
    _check_seed(seed)
    workers = int(workers) or min(2, os.cpu_count() or 1)
    root = pathlib.Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xDA7A, _LAYOUT_CODE[layout]]))

    def run(jobs: Sequence[_Job]) -> list[_Result]:
        return _run_jobs(root, jobs, size=int(size), seed=int(seed), layout=layout, workers=workers, progress=progress)

    _WRITERS[layout](root, int(n), int(size), int(seed), rng, run)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m dadam.synthetic --layout nih --n 100 --size 512 --seed 0 --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m dadam.synthetic",
        description="Write phantom chest/limb radiographs with boxes in a real dataset's on-disk layout.",
    )
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="dataset layout to write")
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--workers", type=int, default=0, help="processes (0 = min(2, cpu count))")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        root = generate(
            args.layout,
            args.out,
            n=args.n,
            size=args.size,
            seed=args.seed,
            progress=not args.no_progress,
            workers=args.workers,
        )
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {args.n} {args.layout} phantom images to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
