"""Statistics of the accuracy experiment: class groups, per-class AP over bootstrap resamples, paired bootstrap CIs.

A bootstrap resample of the ``N`` evaluation images is a vector of counts (how often each image was drawn). The AP
of a resample is the AP of the data with every image repeated as often as it was drawn. :func:`average_precision`
computes it for every resample at once from one sort per class (the order of the scores does not depend on the
resample); recomputing :func:`fpsm.metrics.multilabel_report` for each of 1000 resamples, 26 classes and 12 runs
would take far longer, so this one function is written here and tested against that slow path.

The AP is the step-wise area of torchmetrics and scikit-learn: ``sum_k (R_k - R_{k-1}) P_k`` over the distinct
scores in decreasing order (tied scores form one threshold). A class without a positive has no AP (NaN) and is left
out of every mean.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from dadam.labels import CXR_LT_CLASSES

__all__ = [
    "CONTRASTS",
    "SIZE_GROUPS",
    "average_precision",
    "bootstrap_counts",
    "class_groups",
    "group_means",
    "paired_bootstrap",
]

#: Lesion-size groups of the a - d comparison: small focal lesions against large ones.
SIZE_GROUPS: dict[str, tuple[str, ...]] = {"small": ("Nodule",), "large": ("Pleural Effusion", "Cardiomegaly")}
#: The contrasts of the experiment and the metrics each is reported on.
CONTRASTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("b", "a", ("map", "tail_map", "dadam_tail_map")),
    ("c", "a", ("map", "tail_map", "dadam_tail_map")),
    ("a", "d", ("map", "tail_map", "small_ap", "large_ap")),
)


def bootstrap_counts(n: int, n_boot: int, *, seed: int) -> np.ndarray:
    """How often each of ``n`` images is drawn in each of ``n_boot`` resamples (``n`` draws with replacement).

    Returns:
        ``(n_boot, n)`` int64 counts; each row sums to ``n``.

    Example:
        >>> bootstrap_counts(5, 3, seed=0).sum(1).tolist()
        [5, 5, 5]
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))  # (B, n) image indices
    flat = draws + np.arange(n_boot)[:, None] * n  # one bin per (resample, image)
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n)


def average_precision(scores: np.ndarray, targets: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Per-class AP of every resample.

    Args:
        scores: ``(N, C)`` scores (probabilities).
        targets: ``(N, C)`` 0/1.
        counts: ``(B, N)`` non-negative weights (bootstrap counts); None: one resample that is the data itself.

    Returns:
        ``(B, C)`` float64 AP; NaN where a resample holds no positive of the class.

    Shape:
        scores, targets ``(N, C)``, counts ``(B, N)`` -> ``(B, C)``.

    Example:
        >>> average_precision(np.array([[0.9], [0.8], [0.1]]), np.array([[1], [0], [1]])).round(4).tolist()
        [[0.8333]]
    """
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets) > 0.5
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"scores and targets must both be (N, C), got {scores.shape} and {targets.shape}")
    n, c = scores.shape
    w = np.ones((1, n)) if counts is None else np.asarray(counts, np.float64)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"counts must be (B, {n}), got {w.shape}")
    out = np.empty((w.shape[0], c))
    for k in range(c):
        order = np.argsort(-scores[:, k], kind="stable")  # decreasing score
        s, y = scores[order, k], targets[order, k]
        last = np.append(s[1:] != s[:-1], True)  # (N,) the last image of each run of tied scores: one threshold each
        wk = w[:, order]  # (B, N)
        tp = np.cumsum(wk * y, axis=1)[:, last]  # (B, G) weighted true positives at each threshold
        predicted = np.cumsum(wk, axis=1)[:, last]  # (B, G) weighted images at or above each threshold
        positives = tp[:, -1:]  # (B, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(predicted > 0, tp / predicted, 0.0)
            recall = tp / positives
            ap = (np.diff(recall, axis=1, prepend=0.0) * precision).sum(1)
        out[:, k] = np.where(positives[:, 0] > 0, ap, np.nan)
    return out


def class_groups(
    train_labels: np.ndarray, *, dadam_tail: Sequence[str] = (), class_names: Sequence[str] = CXR_LT_CLASSES
) -> dict[str, list[int]]:
    """The class indices each metric averages.

    - ``all``: every class; ``tail``: the classes whose training frequency is below the median of the classes'
      training frequencies; ``head``: the others;
    - ``dadam_tail``: the tail classes DADAM pastes (its bank covers them);
    - ``small`` / ``large``: :data:`SIZE_GROUPS`.

    Example:
        >>> y = np.zeros((10, 4)); y[:8, 0] = 1; y[:5, 1] = 1; y[:2, 2] = 1
        >>> class_groups(y, class_names=["w", "x", "y", "z"])["tail"]
        [2, 3]
    """
    names = list(class_names)
    freq = np.asarray(train_labels, np.float64).mean(0)  # (C,)
    median = float(np.median(freq))
    tail = [i for i in range(len(names)) if freq[i] < median]
    groups = {
        "all": list(range(len(names))),
        "tail": tail,
        "head": [i for i in range(len(names)) if i not in tail],
        "dadam_tail": [names.index(t) for t in dadam_tail],
    }
    for group, members in SIZE_GROUPS.items():
        groups[group] = [names.index(m) for m in members if m in names]
    return groups


def group_means(ap: np.ndarray, groups: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """The mean AP of each group over its classes that have an AP (NaN when none has), per resample.

    Args:
        ap: ``(B, C)`` per-class AP.
        groups: group name -> class indices.

    Returns:
        group name -> ``(B,)``.
    """
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a group without any AP in a resample: NaN
        for name, idx in groups.items():
            out[name] = np.nanmean(ap[:, list(idx)], axis=1) if len(idx) else np.full(ap.shape[0], np.nan)
    return out


def _metric_names(groups: Mapping[str, Sequence[int]]) -> dict[str, str]:
    """Group name -> metric name (``all`` -> ``map``, ``tail`` -> ``tail_map``, ``small`` -> ``small_ap``)."""
    return {g: ("map" if g == "all" else f"{g}_ap" if g in SIZE_GROUPS else f"{g}_map") for g in groups}


def paired_bootstrap(
    probs: Mapping[tuple[str, int], np.ndarray],
    targets: np.ndarray,
    groups: Mapping[str, Sequence[int]],
    *,
    contrasts: Sequence[tuple[str, str, Sequence[str]]] = CONTRASTS,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[dict]:
    """Paired bootstrap CIs of the differences between arms, seeds averaged.

    Every resample of the evaluation images is shared by every run. In each resample each run's metric is computed,
    each arm's metric is the mean over its seeds, and the difference of two arms is taken; the CI is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of those differences. The estimate is the difference on
    the evaluation set itself.

    Args:
        probs: ``(arm, seed)`` -> ``(N, C)`` probabilities.
        targets: ``(N, C)`` 0/1.
        groups: :func:`class_groups`.
        contrasts: ``(arm, other arm, metric names)`` triples; a contrast naming an arm without runs is skipped.
        n_boot: resamples.
        seed: the resampling seed.
        level: coverage of the interval.

    Returns:
        one dict per contrast and metric: ``contrast`` (``"b-a"``), ``metric``, ``estimate``, ``low``, ``high``,
        ``level``, ``n_boot``, ``p_above_zero`` (the share of resamples with a positive difference), ``per_seed``
        (the difference on the evaluation set for each seed both arms ran).
    """
    metric_of = _metric_names(groups)
    counts = bootstrap_counts(len(targets), n_boot, seed=seed)  # (B, N), shared by every run
    boot: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    point: dict[tuple[str, int], dict[str, float]] = {}
    for key, p in probs.items():
        boot[key] = {metric_of[g]: v for g, v in group_means(average_precision(p, targets, counts), groups).items()}
        point[key] = {metric_of[g]: float(v[0]) for g, v in group_means(average_precision(p, targets), groups).items()}
    arms: dict[str, list[int]] = {}
    for arm, s in probs:
        arms.setdefault(arm, []).append(s)
    out = []
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    for first, second, metrics in contrasts:
        if first not in arms or second not in arms:
            continue
        for metric in metrics:
            diff = np.mean([boot[(first, s)][metric] for s in arms[first]], axis=0) - np.mean(
                [boot[(second, s)][metric] for s in arms[second]], axis=0
            )  # (B,)
            estimate = np.mean([point[(first, s)][metric] for s in arms[first]]) - np.mean(
                [point[(second, s)][metric] for s in arms[second]]
            )
            finite = diff[np.isfinite(diff)]
            low, high = np.percentile(finite, [lo_q, hi_q]) if finite.size else (np.nan, np.nan)
            shared = [s for s in arms[first] if s in arms[second]]
            out.append(
                {
                    "contrast": f"{first}-{second}",
                    "metric": metric,
                    "estimate": float(estimate),
                    "low": float(low),
                    "high": float(high),
                    "level": level,
                    "n_boot": int(finite.size),
                    "p_above_zero": float((finite > 0).mean()) if finite.size else float("nan"),
                    "per_seed": {str(s): point[(first, s)][metric] - point[(second, s)][metric] for s in shared},
                }
            )
    return out
