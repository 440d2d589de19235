"""Phantom labels over the 26 CXR-LT classes: a latent Gaussian copula with a few "syndrome" factors.

Each class has a standard-normal latent made of shared factors (heart failure, infection, ICU, chronic disease, air
leak/trauma, neoplasm, and a general one) plus its own noise; a class is positive when its latent passes a threshold
calibrated so that every class keeps its rate in the real CXR-LT 2023 train set. Classes that load on the same factor
co-occur. ``No Finding`` is 1 exactly when no other class is.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import ndtri

from dadam.labels import (
    CXR_LT_CLASSES,
    CXR_LT_TRAIN_COUNTS,
    CXR_LT_TRAIN_IMAGES,
    NO_FINDING,
    NUM_CLASSES,
    class_index,
)

__all__ = ["FACTORS", "FACTOR_LOADINGS", "check_seed", "class_thresholds", "loading_matrix", "sample_labels"]

_NO_FINDING_INDEX = class_index(NO_FINDING)

FACTORS: tuple[str, ...] = ("general", "cardiac", "infection", "icu", "chronic", "airleak", "neoplasm")
#: class -> {factor: loading}; the rest of each class's variance is its own noise.
FACTOR_LOADINGS: dict[str, dict[str, float]] = {
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


def loading_matrix() -> np.ndarray:
    """``(26, F)`` factor loadings in class order; the No Finding row is zero (it is derived, not sampled)."""
    loadings = np.zeros((NUM_CLASSES, len(FACTORS)), np.float64)
    for name, row in FACTOR_LOADINGS.items():
        for factor, value in row.items():
            loadings[class_index(name), FACTORS.index(factor)] = value
    return loadings


def _latents(n: int, rng: np.random.Generator, loadings: np.ndarray) -> np.ndarray:
    """``(n, 26)`` standard-normal latents with correlation ``L L^T`` off the diagonal."""
    factors = rng.standard_normal((n, loadings.shape[1]))
    noise = rng.standard_normal((n, NUM_CLASSES))
    own = np.sqrt(np.clip(1.0 - (loadings**2).sum(1), 0.05, 1.0))
    return factors @ loadings.T + noise * own


@functools.lru_cache(maxsize=1)
def class_thresholds() -> np.ndarray:
    """Latent thresholds ``(26,)`` so that, after rejecting all-negative rows, each class has its CXR-LT rate.

    A row is "No Finding" with the real rate; otherwise latents are drawn until one class is positive, so the
    conditional rate of class c must be ``count_c / (images - no_finding)``. Calibrated by a fixed-seed Monte Carlo
    fixed point on ``P(any positive)``.
    """
    loadings = loading_matrix()
    rate = np.array([CXR_LT_TRAIN_COUNTS[c] / CXR_LT_TRAIN_IMAGES for c in CXR_LT_CLASSES])
    target = rate / (1.0 - rate[_NO_FINDING_INDEX])  # rate among rows with a finding
    target[_NO_FINDING_INDEX] = 1e-9
    latents = _latents(200_000, np.random.default_rng(12345), loadings)
    p_any = 0.9
    for _ in range(30):
        thresholds = ndtri(1.0 - np.clip(target * p_any, 1e-9, 0.999))
        hits = latents > thresholds
        any_hit = hits.any(1)
        conditional_rate = hits[any_hit].mean(0)
        # adjust each threshold so the conditional rate matches the target
        p_any = float(any_hit.mean())
        ratio = np.where(target > 1e-8, target / np.maximum(conditional_rate, 1e-9), 1.0)
        unconditional = np.clip(hits.mean(0) * ratio, 1e-9, 0.999)
        thresholds = ndtri(1.0 - unconditional)
        target = unconditional / p_any
    thresholds[_NO_FINDING_INDEX] = np.inf
    return thresholds


def check_seed(seed: int) -> None:
    """Raise a ValueError unless ``seed`` is an integer >= 0 (a float or a string is not silently truncated)."""
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
    check_seed(seed)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1ABE1]))
    thresholds = class_thresholds()
    loadings = loading_matrix()
    p_no_finding = CXR_LT_TRAIN_COUNTS[NO_FINDING] / CXR_LT_TRAIN_IMAGES
    healthy = rng.random(n) < p_no_finding
    out = np.zeros((n, NUM_CLASSES), np.float32)
    todo = np.flatnonzero(~healthy)
    while todo.size:  # rejection: redraw the rows where no class passed its threshold
        hits = _latents(todo.size, rng, loadings) > thresholds
        ok = hits.any(1)
        out[todo[ok]] = hits[ok]
        todo = todo[~ok]
    out[:, _NO_FINDING_INDEX] = (out.sum(1) == 0).astype(np.float32)
    return out
