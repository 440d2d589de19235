"""The audit's figures: class frequencies before / after DADAM (the paper's Fig. 3) and the label correlation
matrices side by side (its Fig. 4), drawn with matplotlib's object API (Agg, no pyplot state), written atomically."""

from __future__ import annotations

import math
import os
import pathlib

import numpy as np

from dadam.audit.label_audit import AuditResult
from dadam.files import atomic_write

__all__ = ["plot_correlation", "plot_label_distribution"]


def _save_figure(fig, path: str | os.PathLike, dpi: int) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def plot_label_distribution(
    result: AuditResult, path: str | os.PathLike, *, log: bool = True, dpi: int = 110
) -> pathlib.Path:
    """Bar chart of the class frequencies before and after DADAM (the paper's Fig. 3), classes by falling frequency.

    Tail classes are marked in red on the x axis with their raise factor above the bars.

    Args:
        result: the :class:`AuditResult`.
        path: the PNG to write (atomically).
        log: logarithmic frequency axis.
        dpi: resolution (the figure is 15 x 6 inches).

    Returns:
        the path written.
    """
    from matplotlib.figure import Figure

    order = np.argsort(-result.freq_before, kind="stable")
    names = [result.class_names[i] for i in order]
    x = np.arange(len(order))
    fig = Figure(figsize=(15, 6), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(x - 0.2, result.freq_before[order], 0.4, label="before DADAM", color="#8c8c8c")
    ax.bar(x + 0.2, result.freq_after[order], 0.4, label="after DADAM", color="#d62728")
    if log:
        ax.set_yscale("log")
    rf = result.raise_factor[order]
    for xi, i, f in zip(x, order, rf, strict=True):
        if result.class_names[i] in result.tail and math.isfinite(f):
            ax.annotate(
                f"x{f:.1f}",
                (xi, max(result.freq_after[i], result.freq_before[i])),
                ha="center",
                va="bottom",
                fontsize=8,
                color="#d62728",
            )
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=9)
    for lab, name in zip(ax.get_xticklabels(), names, strict=True):
        if name in result.tail:
            lab.set_color("#d62728")
            lab.set_fontweight("bold")
    ax.set_ylabel("fraction of images with the class")
    c = result.counts
    ax.set_title(
        f"Label distribution before / after DADAM ({c.get('rows', 0)} rows x {c.get('repeats', 1)}, "
        f"p={result.options.get('p')}; tail classes in red)"
    )
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save_figure(fig, path, dpi)


def plot_correlation(result: AuditResult, path: str | os.PathLike, *, dpi: int = 110) -> pathlib.Path:
    """Two heatmaps side by side: label correlation before and after DADAM (the paper's Fig. 4).

    The diagonal (always 1) is greyed out and the colour scale spans the largest off-diagonal ``|r|`` of both, so
    the structure is visible. The title gives :attr:`AuditResult.corr_kept`.

    Args:
        result: the :class:`AuditResult`.
        path: the PNG to write (atomically).
        dpi: resolution (the figure is 18 x 8.5 inches).

    Returns:
        the path written.
    """
    from matplotlib.figure import Figure

    n = len(result.class_names)
    eye = np.eye(n, dtype=bool)
    vmax = max(
        float(np.abs(result.corr_before[~eye]).max(initial=0)), float(np.abs(result.corr_after[~eye]).max(initial=0))
    )
    vmax = vmax if vmax > 0 else 1.0
    fig = Figure(figsize=(18, 8.5), layout="constrained")
    axes = fig.subplots(1, 2)
    im = None
    for ax, mat, title in zip(
        axes, (result.corr_before, result.corr_after), ("before DADAM", "after DADAM"), strict=True
    ):
        shown = np.where(eye, np.nan, mat)
        im = ax.imshow(shown, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_facecolor("#cccccc")
        ax.set_xticks(range(n), result.class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), result.class_names, fontsize=7)
        ax.set_title(title)
    fig.colorbar(im, ax=axes, shrink=0.7, label="Pearson r")
    fig.suptitle(
        f"Label correlation before / after DADAM: r(off-diagonal) = {result.corr_kept:.3f}, "
        f"largest change {result.corr_max_change:.3f}"
    )
    return _save_figure(fig, path, dpi)
