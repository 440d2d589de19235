"""Phantom labels over the 26 CXR-LT classes: a latent Gaussian copula with a few "syndrome" factors.

Each class has a standard-normal latent made of shared factors (heart failure, infection, ICU, chronic disease, air
leak/trauma, neoplasm, and a general one) plus its own noise; a class is positive when its latent passes a threshold
calibrated so that every class keeps its rate in the real CXR-LT 2023 train set. Classes that load on the same factor
co-occur. ``No Finding`` is 1 exactly when no other class is.

``min_rate`` raises every finding whose CXR-LT rate is lower to that rate (``No Finding`` keeps its rate): an
evaluation set with enough positives of the rare classes for a stable per-class AP, or a donor set for a patch bank
that covers the rare classes. The default, 0, draws the CXR-LT rates.
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

__all__ = [
    "FACTORS",
    "FACTOR_LOADINGS",
    "MAX_MIN_RATE",
    "check_min_rate",
    "check_seed",
    "class_rates",
    "class_thresholds",
    "loading_matrix",
    "sample_labels",
]

_NO_FINDING_INDEX = class_index(NO_FINDING)
#: Largest ``min_rate``: above it the findings' rates among the rows with a finding no longer fit the copula well.
MAX_MIN_RATE = 0.25

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


def check_min_rate(min_rate: float) -> float:
    """``min_rate`` as a float; a ValueError unless it is a number in ``[0, MAX_MIN_RATE]``."""
    if isinstance(min_rate, bool) or not isinstance(min_rate, (int, float, np.floating, np.integer)):
        raise ValueError(f"min_rate must be a number in [0, {MAX_MIN_RATE}], got {min_rate!r}")
    if not 0.0 <= float(min_rate) <= MAX_MIN_RATE:  # NaN fails too
        raise ValueError(
            f"min_rate must be in [0, {MAX_MIN_RATE}] (a fraction of the images, e.g. 0.03), got {min_rate!r}"
        )
    return float(min_rate)


def class_rates(min_rate: float = 0.0) -> np.ndarray:
    """``(26,)`` target rate of each class among all rows: its CXR-LT 2023 train rate, each finding raised to at least
    ``min_rate`` (``No Finding`` keeps its CXR-LT rate).

    Example:
        >>> rates = class_rates(0.03)
        >>> bool(rates.min() >= 0.03), round(float(rates[class_index("Cardiomegaly")]), 3)
        (True, 0.29)
    """
    min_rate = check_min_rate(min_rate)
    rate = np.array([CXR_LT_TRAIN_COUNTS[c] / CXR_LT_TRAIN_IMAGES for c in CXR_LT_CLASSES])
    if min_rate > 0:
        finding = np.arange(NUM_CLASSES) != _NO_FINDING_INDEX
        rate = np.where(finding, np.maximum(rate, min_rate), rate)
    return rate


@functools.lru_cache(maxsize=8)
def class_thresholds(min_rate: float = 0.0) -> np.ndarray:
    """Latent thresholds ``(26,)`` so that, after rejecting all-negative rows, each class has its target rate.

    The targets are :func:`class_rates` (the CXR-LT rates, each finding raised to ``min_rate``). A row is
    "No Finding" with the CXR-LT rate; otherwise latents are drawn until one class is positive, so the conditional
    rate of class c must be ``rate_c / (1 - rate_no_finding)``. Calibrated by a fixed-seed Monte Carlo fixed point on
    ``P(any positive)``.
    """
    loadings = loading_matrix()
    rate = class_rates(min_rate)
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


def sample_labels(n: int, *, seed: int, min_rate: float = 0.0) -> np.ndarray:
    """Draw ``n`` rows of CXR-LT labels with the real long tail and a plausible co-occurrence structure.

    Args:
        n: number of rows (>= 0).
        seed: integer seed >= 0; the same seed gives the same rows.
        min_rate: each finding is positive in at least about this fraction of the rows (its CXR-LT rate when that is
            higher; ``No Finding`` keeps its rate), in ``[0, MAX_MIN_RATE]``. 0 (default): the CXR-LT rates. The same
            seed with another ``min_rate`` draws other rows.

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
    min_rate = check_min_rate(min_rate)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1ABE1]))
    thresholds = class_thresholds(min_rate)
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
