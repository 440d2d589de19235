"""Label statistics DADAM draws classes from: class frequencies, label correlation and the tail classes.

All functions take a multi-hot label matrix ``(N, num_classes)`` with values 1.0 (positive), 0.0 (negative) and
NaN (unknown). Unknown entries are handled *pairwise-complete*: a class frequency is computed over the rows where that
class is known, and the correlation of two classes over the rows where both are known (as ``pandas.DataFrame.corr``).
A class without variance over those rows (always 0, or always 1) correlates 0 with every class, including itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from dadam.labels import CXR_LT_CLASSES, NO_FINDING

__all__ = ["LabelStats", "class_frequencies", "label_correlation", "tail_classes"]


def _as_label_tensor(labels: torch.Tensor | np.ndarray, name: str = "labels") -> torch.Tensor:
    x = torch.as_tensor(labels)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (N, num_classes) matrix, got shape {tuple(x.shape)}")
    return x.to(torch.float64)


def class_frequencies(labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Fraction of positive rows per class, over the rows where the class is known (not NaN).

    Args:
        labels: multi-hot matrix, 1.0 positive, 0.0 negative, NaN unknown.

    Returns:
        ``(num_classes,)`` float64 frequencies in ``[0, 1]``; 0 for a class that is never known.

    Shape:
        labels ``(N, C)`` -> ``(C,)``.

    Example:
        >>> class_frequencies(torch.tensor([[1.0, 0.0], [0.0, float("nan")]]))
        tensor([0.5000, 0.0000], dtype=torch.float64)
    """
    x = _as_label_tensor(labels)
    known = ~torch.isnan(x)
    pos = torch.where(known, x, torch.zeros_like(x)).sum(0)  # (C,)
    n = known.sum(0).to(torch.float64)  # (C,)
    return torch.where(n > 0, pos / n.clamp_min(1), torch.zeros_like(pos))


def label_correlation(labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Pearson correlation of the label columns, pairwise-complete over NaN, 0 for classes without variance.

    Equals ``numpy.corrcoef(labels, rowvar=False)`` when there is no NaN and every class varies, and
    ``pandas.DataFrame(labels).corr()`` with NaN where pandas gives NaN replaced by 0.

    Args:
        labels: multi-hot matrix, 1.0 positive, 0.0 negative, NaN unknown.

    Returns:
        ``(C, C)`` float64 symmetric matrix in ``[-1, 1]``; entry ``(i, j)`` is 0 when class i or j has no
        variance over the rows where both are known (fewer than 2 such rows included).

    Shape:
        labels ``(N, C)`` -> ``(C, C)``.

    Example:
        >>> label_correlation(torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]))[0, 1]
        tensor(0.5000, dtype=torch.float64)
    """
    x = _as_label_tensor(labels)
    known = (~torch.isnan(x)).to(torch.float64)  # (N, C)
    v = torch.nan_to_num(x, nan=0.0)  # (N, C), 0 where unknown
    # Sums over the rows where both i and j are known: n[i, j], sum_x[i, j] = sum x_i, sum_xx[i, j] = sum x_i^2.
    n = known.T @ known  # (C, C)
    sum_x = v.T @ known  # (C, C): sums of class i over rows where j is known too
    sum_xx = (v * v).T @ known
    sum_xy = v.T @ v
    nn_ = n.clamp_min(1)
    cov = sum_xy - sum_x * sum_x.T / nn_
    var_i = sum_xx - sum_x * sum_x / nn_
    var_j = var_i.T
    denom = torch.sqrt(var_i.clamp_min(0) * var_j.clamp_min(0))
    # Relative tolerance: a variance that is rounding noise counts as no variance.
    eps = 1e-12 * n.clamp_min(1)
    ok = (n >= 2) & (var_i > eps) & (var_j > eps)
    corr = torch.where(ok, cov / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(cov))
    return corr.clamp(-1.0, 1.0)


def tail_classes(
    freq: torch.Tensor,
    covered: torch.Tensor | None = None,
    *,
    quantile: float = 0.5,
    class_names: Sequence[str] = CXR_LT_CLASSES,
) -> torch.Tensor:
    """The tail classes: classes whose frequency is at or below a quantile of the class frequencies.

    The threshold is ``torch.quantile(freq[candidates], quantile)`` (linear interpolation) over the candidate
    classes: every class except "No Finding" (which is never a tail class) and, when given, only the classes
    ``covered`` (those the patch bank has patches of). The tail set is the candidates with ``freq <= threshold``.

    Args:
        freq: ``(C,)`` class frequencies (see :func:`class_frequencies`).
        covered: optional ``(C,)`` bool mask of the classes the bank covers.
        quantile: in ``[0, 1]``; 0.5 makes the rarer half of the candidates the tail.
        class_names: the names of the C classes (to find "No Finding").

    Returns:
        ``(C,)`` bool mask of the tail classes (use ``mask.nonzero()`` for indices outside a hot path).

    Shape:
        freq ``(C,)``, covered ``(C,)`` -> ``(C,)`` bool.

    Example:
        >>> f = torch.full((26,), 0.1); f[7] = 0.001
        >>> covered = torch.zeros(26, dtype=torch.bool); covered[[2, 7]] = True
        >>> tail_classes(f, covered, quantile=0.0).nonzero().flatten().tolist()
        [7]
    """
    freq = torch.as_tensor(freq, dtype=torch.float64)
    if freq.ndim != 1 or freq.numel() != len(class_names):
        raise ValueError(f"freq must have shape ({len(class_names)},), got {tuple(freq.shape)}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    cand = torch.ones_like(freq, dtype=torch.bool)
    if NO_FINDING in class_names:
        cand[list(class_names).index(NO_FINDING)] = False
    if covered is not None:
        covered = torch.as_tensor(covered, dtype=torch.bool, device=freq.device)
        if covered.shape != freq.shape:
            raise ValueError(f"covered must have shape {tuple(freq.shape)}, got {tuple(covered.shape)}")
        cand &= covered
    if not bool(cand.any()):
        return cand
    threshold = torch.quantile(freq[cand], quantile)
    return cand & (freq <= threshold)


@dataclass
class LabelStats:
    """Statistics of a training label table that :class:`dadam.DiseasedAreaAugment` draws classes from.

    Attributes:
        freq: ``(C,)`` float32 class frequencies (:func:`class_frequencies`).
        corr: ``(C, C)`` float32 Pearson correlation of the label columns (:func:`label_correlation`).
        class_names: the C class names, in column order.
        num_samples: number of label rows the statistics come from.
    """

    freq: torch.Tensor
    corr: torch.Tensor
    class_names: tuple[str, ...] = field(default=CXR_LT_CLASSES)
    num_samples: int = 0

    def __post_init__(self) -> None:
        c = len(self.class_names)
        if tuple(self.freq.shape) != (c,):
            raise ValueError(f"freq must have shape ({c},), got {tuple(self.freq.shape)}")
        if tuple(self.corr.shape) != (c, c):
            raise ValueError(f"corr must have shape ({c}, {c}), got {tuple(self.corr.shape)}")

    @classmethod
    def from_labels(
        cls,
        labels,
        *,
        class_names: Sequence[str] = CXR_LT_CLASSES,
    ) -> LabelStats:
        """Statistics of a label table.

        Args:
            labels: a pandas label table with one float column per class (named as ``class_names``; other
                columns are ignored), or a numpy array / tensor ``(N, C)`` in ``class_names`` order.
                1.0 positive, 0.0 negative, NaN unknown.
            class_names: class names in column order (default: the 26 CXR-LT classes).

        Returns:
            the :class:`LabelStats`.

        Example:
            >>> stats = LabelStats.from_labels(torch.eye(26))
            >>> stats.num_samples, tuple(stats.corr.shape)
            (26, (26, 26))
        """
        class_names = tuple(class_names)
        if hasattr(labels, "columns"):  # pandas DataFrame
            missing = [c for c in class_names if c not in labels.columns]
            if missing:
                raise ValueError(f"label table is missing class columns {missing}; it has {list(labels.columns)}")
            arr = labels[list(class_names)].to_numpy(dtype=np.float64, na_value=np.nan)
            x = torch.from_numpy(np.array(arr, dtype=np.float64, copy=True))
        else:
            x = _as_label_tensor(labels)
            if x.shape[1] != len(class_names):
                raise ValueError(f"labels must have {len(class_names)} columns, got shape {tuple(x.shape)}")
        return cls(
            freq=class_frequencies(x).to(torch.float32),
            corr=label_correlation(x).to(torch.float32),
            class_names=class_names,
            num_samples=int(x.shape[0]),
        )

    def to(self, device: torch.device | str) -> LabelStats:
        """A copy with the tensors on ``device``."""
        return LabelStats(self.freq.to(device), self.corr.to(device), self.class_names, self.num_samples)
