"""The audit's figures: class frequencies before / after DADAM (the paper's Fig. 3), the label correlation matrices
side by side (its Fig. 4) and the companion rules compared, drawn with matplotlib's object API (Agg, no pyplot state),
written atomically."""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping

import numpy as np

from dadam.audit.label_audit import AuditResult
from dadam.files import atomic_write

__all__ = ["plot_companion_comparison", "plot_correlation", "plot_label_distribution"]


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


def plot_companion_comparison(
    results: Mapping[str, AuditResult], path: str | os.PathLike, *, dpi: int = 100
) -> pathlib.Path:
    """The companion rules side by side on one label table (same bank, seed and options but ``companions``).

    Top row: the label correlation before DADAM and after it with each rule (one colour scale, diagonal greyed).
    Bottom row: every off-diagonal correlation after against before (pairs of covered classes marked), the labels
    per pasted image against real images with the same tail class (covered classes; see
    :mod:`dadam.audit.label_audit`), and the raise factor of each tail class.

    Args:
        results: :class:`AuditResult` by rule name (e.g. ``{"cooccurrence": a, "correlation": b}``), from one table.
        path: the PNG to write (atomically).
        dpi: resolution (the figure is 6 inches per column by 11).

    Returns:
        the path written.
    """
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("plot_companion_comparison needs at least one AuditResult")
    names, first = list(results), next(iter(results.values()))
    n = len(first.class_names)
    eye = np.eye(n, dtype=bool)
    mats = [("before DADAM", first.corr_before)] + [(f"after, {k}", r.corr_after) for k, r in results.items()]
    vmax = max(float(np.abs(m[~eye]).max(initial=0)) for _, m in mats) or 1.0
    cols = max(3, len(mats))
    fig = Figure(figsize=(6 * cols, 11), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.25, 1])
    axes = top.subplots(1, cols)
    im = None
    for ax, (title, mat) in zip(axes, mats, strict=False):
        im = ax.imshow(np.where(eye, np.nan, mat), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_facecolor("#cccccc")
        ax.set_xticks(range(n), first.class_names, rotation=90, fontsize=6)
        ax.set_yticks(range(n), first.class_names, fontsize=6)
        ax.set_title(title)
    top.colorbar(im, ax=axes, shrink=0.8, label="Pearson r")
    scatter, counts, raises = bottom.subplots(1, 3)
    colors = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")
    iu = np.triu_indices(n, k=1)
    cov = {first.class_names.index(c) for c in first.covered}
    both = np.array([i in cov and j in cov for i, j in zip(*iu, strict=True)])
    for (rule, r), color in zip(results.items(), colors, strict=False):
        a, b = r.corr_before[iu], r.corr_after[iu]
        scatter.scatter(a[~both], b[~both], s=8, color=color, alpha=0.35)
        scatter.scatter(
            a[both], b[both], s=30, color=color, marker="D", edgecolor="k", linewidth=0.5,
            label=f"{rule}: r={r.corr_kept:.3f}, max|dr| covered {r.corr_max_change_covered:.3f}",
        )  # fmt: skip
    lim = [min(-0.05, scatter.get_xlim()[0]), max(scatter.get_xlim()[1], scatter.get_ylim()[1])]
    scatter.plot(lim, lim, color="k", linewidth=0.8)
    scatter.set(xlabel="correlation before", ylabel="correlation after", title="off-diagonal pairs (diamonds: covered)")
    scatter.legend(fontsize=8)
    k_max = max(int(np.flatnonzero(r.labels_per_image_real > 1e-4).max(initial=1)) for r in results.values()) + 1
    x = np.arange(k_max)
    width = 0.8 / (len(results) + 1)
    counts.bar(x - 0.4 + width / 2, first.labels_per_image_real[:k_max], width, color="#8c8c8c", label="real")
    for i, ((rule, r), color) in enumerate(zip(results.items(), colors, strict=False)):
        label = f"{rule} (TV {r.labels_per_image_tv:.3f})"
        counts.bar(x - 0.4 + width * (i + 1.5), r.labels_per_image_pasted[:k_max], width, color=color, label=label)
    counts.set(xlabel="covered classes per image", ylabel="fraction", title="labels per pasted image vs real")
    counts.set_xticks(x)
    counts.legend(fontsize=8)
    tails = list(first.tail)
    xt = np.arange(len(tails))
    for i, ((rule, r), color) in enumerate(zip(results.items(), colors, strict=False)):
        rf = [r.raise_factor[r.class_names.index(t)] for t in tails]
        raises.bar(xt - 0.4 + 0.8 / len(results) * (i + 0.5), rf, 0.8 / len(results), color=color, label=rule)
    raises.axhline(1.0, color="k", linewidth=0.8)
    raises.set_xticks(xt, tails, rotation=30, ha="right", fontsize=8)
    raises.set(ylabel="freq after / before", title="tail classes")
    raises.legend(fontsize=8)
    c = first.counts
    fig.suptitle(
        f"Companion rules on {c.get('rows', 0)} rows: p={first.config.p}, max_patches={first.config.max_patches}, "
        f"{len(first.covered)} covered classes ({', '.join(names)})"
    )
    return _save_figure(fig, path, dpi)
