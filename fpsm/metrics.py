"""Per-class multi-label report (AP, AUC, F1, precision, recall), as the paper's Table 4.

Built on ``torchmetrics.functional.classification`` (``multilabel_*`` with ``average=None``); NaN targets are
unknown and ignored per class.
"""

from __future__ import annotations

import math
import os
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import (
    multilabel_auroc,
    multilabel_average_precision,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
)

from dadam.files import atomic_write

__all__ = ["METRICS", "multilabel_report", "report_to_markdown", "save_report"]

METRICS = ("AP", "AUC", "F1", "precision", "recall")
_IGNORE = -1  # torchmetrics ignore_index for unknown (NaN) targets


def _as_2d(name: str, value: object) -> torch.Tensor:
    t = torch.as_tensor(
        np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    )
    if t.ndim != 2:
        raise ValueError(f"{name} must be (N, C), got shape {tuple(t.shape)}")
    return t


def multilabel_report(
    probs: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    class_names: Sequence[str],
    *,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """Per-class AP, AUC, F1, precision and recall, plus a ``mean`` row.

    A sample counts as predicted positive when ``prob > threshold`` (torchmetrics' rule). NaN targets are unknown:
    they are left out of that class's metrics (``n`` counts the known ones). A class with no known positive has
    every metric undefined (NaN) and is left out of every mean; a class with no known negative has AUC undefined
    and is left out of the AUC mean. The ``mean`` row is the unweighted mean over the classes where each metric is
    defined; its ``n``, ``n_pos``, ``n_neg`` are totals. The excluded classes are listed in
    ``df.attrs["excluded"] = {"no_positives": [...], "no_negatives": [...]}`` and in the Markdown footer
    (:func:`report_to_markdown`).

    Args:
        probs: ``(N, C)`` probabilities in [0, 1] (not logits).
        targets: ``(N, C)`` 1.0 / 0.0, NaN = unknown.
        class_names: ``C`` names, the row labels.
        threshold: decision threshold for F1, precision and recall.

    Returns:
        DataFrame indexed by class name (index name ``class``) plus the final row ``mean``; columns ``n``,
        ``n_pos``, ``n_neg``, ``AP``, ``AUC``, ``F1``, ``precision``, ``recall``. ``df.attrs`` holds ``excluded`` and
        ``threshold``.

    Example:
        >>> df = multilabel_report(torch.tensor([[0.9, 0.2], [0.1, 0.7]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        ...                        ["a", "b"])
        >>> df.loc["mean", "AUC"]
        np.float64(1.0)
    """
    p = _as_2d("probs", probs)
    y = _as_2d("targets", targets)
    if p.shape != y.shape:
        raise ValueError(f"probs and targets must have the same shape, got {tuple(p.shape)} and {tuple(y.shape)}")
    names = [str(c) for c in class_names]
    if len(names) != p.shape[1]:
        raise ValueError(f"class_names has {len(names)} names but probs has {p.shape[1]} columns")
    if len(set(names)) != len(names) or "mean" in names:
        raise ValueError(f"class_names must be unique and not 'mean', got {names}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if p.shape[0] == 0:
        raise ValueError("probs has no rows (N = 0)")
    if torch.isnan(p).any():
        raise ValueError("probs contains NaN")
    if p.numel() and (p.min() < 0 or p.max() > 1):
        raise ValueError(
            f"probs must be probabilities in [0, 1], got values in [{p.min():.4g}, {p.max():.4g}] (pass sigmoid(logits))"
        )
    known = ~torch.isnan(y)
    bad = known & (y != 0) & (y != 1)
    if bad.any():
        row, col = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"targets must be 0, 1 or NaN, got {float(y[row, col])} at row {row}, class {names[col]!r}")

    n_pos = ((y == 1) & known).sum(0)  # (C,)
    n_neg = ((y == 0) & known).sum(0)  # (C,)
    target = torch.where(known, y, float(_IGNORE)).long()  # (N, C) with -1 = ignore
    num_labels = len(names)
    if num_labels == 1:  # torchmetrics' multilabel functions need >= 2 labels: score the column twice
        p, target = p.repeat(1, 2), target.repeat(1, 2)
    common = dict(num_labels=max(num_labels, 2), average=None, ignore_index=_IGNORE)
    with warnings.catch_warnings():  # classes without positives/negatives: reported by us via attrs["excluded"]
        warnings.simplefilter("ignore", UserWarning)
        values = {
            "AP": multilabel_average_precision(p, target, **common),
            "AUC": multilabel_auroc(p, target, **common),
            "F1": multilabel_f1_score(p, target, threshold=threshold, **common),
            "precision": multilabel_precision(p, target, threshold=threshold, **common),
            "recall": multilabel_recall(p, target, threshold=threshold, **common),
        }
    df = pd.DataFrame(
        {k: v[:num_labels].double().numpy() for k, v in values.items()}, index=pd.Index(names, name="class")
    )
    no_pos = (n_pos == 0).numpy()
    no_neg = (n_neg == 0).numpy()
    df.loc[no_pos, list(METRICS)] = np.nan
    df.loc[no_neg, "AUC"] = np.nan
    df.insert(0, "n_neg", n_neg.numpy())
    df.insert(0, "n_pos", n_pos.numpy())
    df.insert(0, "n", (n_pos + n_neg).numpy())
    mean = {c: float(df[c].sum()) for c in ("n", "n_pos", "n_neg")}
    mean.update({m: float(df[m].mean()) if df[m].notna().any() else math.nan for m in METRICS})  # skips NaN
    df.loc["mean"] = pd.Series(mean)
    df[["n", "n_pos", "n_neg"]] = df[["n", "n_pos", "n_neg"]].astype("int64")
    df.attrs["excluded"] = {
        "no_positives": [n for n, e in zip(names, no_pos, strict=True) if e],
        "no_negatives": [n for n, e in zip(names, no_neg, strict=True) if e],
    }
    df.attrs["threshold"] = float(threshold)
    return df


def report_to_markdown(df: pd.DataFrame, *, digits: int = 4) -> str:
    """A Markdown table of a :func:`multilabel_report`, with a footer naming the classes left out of the means.

    Args:
        df: the report.
        digits: decimals of the metric columns.

    Returns:
        Markdown text ending in a newline.

    Example:
        >>> df = multilabel_report(torch.tensor([[0.9], [0.1]]), torch.tensor([[1.0], [0.0]]), ["a"])
        >>> print(report_to_markdown(df).splitlines()[0])
        | class | n | n_pos | n_neg | AP | AUC | F1 | precision | recall |
    """
    cols = [c for c in ("n", "n_pos", "n_neg", *METRICS) if c in df.columns]
    lines = ["| class | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for name, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if c in METRICS:
                cells.append("–" if pd.isna(v) else f"{v:.{digits}f}")
            else:
                cells.append(str(int(v)))
        label = f"**{name}**" if name == "mean" else str(name)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    excluded = df.attrs.get("excluded", {})
    no_pos, no_neg = excluded.get("no_positives", []), excluded.get("no_negatives", [])
    footer = [""]
    if "threshold" in df.attrs:
        footer.append(f"F1, precision and recall at threshold {df.attrs['threshold']:g} (predicted positive if p > t).")
    footer.append(
        "Means are unweighted over the classes where a metric is defined. "
        + (f"Left out of all means (no positives): {', '.join(no_pos)}. " if no_pos else "")
        + (f"Left out of the AUC mean (no negatives): {', '.join(no_neg)}." if no_neg else "")
    )
    return "\n".join(lines + footer).rstrip() + "\n"


def save_report(df: pd.DataFrame, path: str | os.PathLike, *, digits: int = 4) -> None:
    """Write a report atomically: ``.csv`` -> CSV (full precision), ``.md`` -> :func:`report_to_markdown`.

    Args:
        df: the report from :func:`multilabel_report`.
        path: destination ending in ``.csv`` or ``.md``; its folder is created.
        digits: decimals in Markdown.
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        text = df.to_csv()
    elif suffix == ".md":
        text = report_to_markdown(df, digits=digits)
    else:
        raise ValueError(f"path must end in .csv or .md, got {os.fspath(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
