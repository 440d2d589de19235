"""Audit DADAM: label distribution and label correlation before vs after (the paper's Fig. 3 and 4), and image grids.

The sampler needs labels alone, so :func:`audit_labels` runs DADAM's draws over a whole label table (100k+ rows in
seconds on a CPU) and compares the class frequencies and the label correlation matrix of the table before and after.
DADAM should raise the tail classes, lower "No Finding" (normal images become diseased ones) and keep the
correlation structure (companions are drawn from the correlation itself): :attr:`AuditResult.corr_kept` is the
Pearson correlation between the off-diagonal entries of the two matrices.

:func:`plot_label_distribution` and :func:`plot_correlation` draw the two figures (matplotlib, Agg, no pyplot state);
:func:`save_grid` draws a grid of augmented images with the placed boxes (red: pasted, cyan: blended).
Every file is written atomically.

Command line (``python -m dadam.audit --help``)::

    python -m dadam.audit --labels phantom --phantom-rows 200000 --phantom-bank --out audit/ --prefix phantom_
    python -m dadam.audit --labels Data_Entry_2017_v2020.csv --labels-format nih --stats-labels phantom \\
        --boxes BBox_List_2017.csv --box-images nih/images --canvas 448 --out audit/ --prefix nih_ \\
        --grid --images nih --grid-ids 00000129_000.png 00000427_000.png --p 1
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from dadam.bank import PatchBank
from dadam.config import DadamConfig, add_dadam_arguments, dadam_config_from_args
from dadam.export import draw_params, make_augment
from dadam.files import atomic_write
from dadam.formats import labels_tensor, read_label_table
from dadam.labels import CXR_LT_CLASSES, NO_FINDING
from dadam.sampling import MODE_BLEND, MODE_NONE, MODE_PASTE, DadamParams
from dadam.stats import LabelStats, class_frequencies, label_correlation

__all__ = [
    "BLEND_COLOR",
    "PASTE_COLOR",
    "AuditResult",
    "audit_labels",
    "main",
    "phantom_bank",
    "plot_correlation",
    "plot_label_distribution",
    "save_grid",
]

PASTE_COLOR = (255, 40, 40)
BLEND_COLOR = (0, 200, 255)


@dataclass
class AuditResult:
    """Label statistics before and after DADAM over a label table.

    Attributes:
        class_names: the C class names.
        freq_before, freq_after: ``(C,)`` class frequencies (over known entries) before / after.
        corr_before, corr_after: ``(C, C)`` label correlation (:func:`dadam.stats.label_correlation`).
        positives_before, positives_after: ``(C,)`` positive counts (after: over ``rows * repeats`` samples).
        patches: ``(C,)`` number of patches placed per class.
        tail: the tail classes the sampler drew from.
        counts: ``rows``, ``repeats``, ``samples``, ``unchanged``, ``paste``, ``blend``, ``patches``.
        options: the DADAM options (``tail``: the tail classes drawn from), seed and chunk of the run.
        seconds: wall time of the draws and statistics.
        config: the DADAM options of the run.
    """

    class_names: tuple[str, ...]
    freq_before: np.ndarray
    freq_after: np.ndarray
    corr_before: np.ndarray
    corr_after: np.ndarray
    positives_before: np.ndarray
    positives_after: np.ndarray
    patches: np.ndarray
    tail: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    config: DadamConfig = field(default_factory=DadamConfig)

    @property
    def raise_factor(self) -> np.ndarray:
        """``(C,)`` ``freq_after / freq_before`` (NaN where a class never occurs before)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(
                self.freq_before > 0, self.freq_after / np.where(self.freq_before > 0, self.freq_before, 1), np.nan
            )

    @property
    def corr_kept(self) -> float:
        """Pearson correlation between the off-diagonal (upper-triangle) entries of ``corr_before`` and ``corr_after``."""
        iu = np.triu_indices(len(self.class_names), k=1)
        a, b = self.corr_before[iu], self.corr_after[iu]
        if a.std() == 0 or b.std() == 0:
            return float("nan")
        return float(np.corrcoef(a, b)[0, 1])

    @property
    def corr_max_change(self) -> float:
        """Largest absolute change of an off-diagonal correlation entry."""
        off = ~np.eye(len(self.class_names), dtype=bool)
        return float(np.abs(self.corr_after - self.corr_before)[off].max())

    def summary(self) -> pd.DataFrame:
        """One row per class: frequencies, raise factor, positives, patches placed, tail flag."""
        return pd.DataFrame(
            {
                "freq_before": self.freq_before,
                "freq_after": self.freq_after,
                "raise_factor": self.raise_factor,
                "positives_before": self.positives_before.astype(np.int64),
                "positives_after": self.positives_after.astype(np.int64),
                "patches": self.patches.astype(np.int64),
                "tail": [c in self.tail for c in self.class_names],
            },
            index=pd.Index(self.class_names, name="class"),
        )

    def headline(self) -> str:
        """A few lines: counts, tail raise factors, No Finding change, correlation kept."""
        rf = self.raise_factor
        idx = {c: i for i, c in enumerate(self.class_names)}
        tails = ", ".join(f"{c} x{rf[idx[c]]:.2f}" for c in self.tail)
        nf = idx.get(NO_FINDING)
        nf_txt = (
            f"No Finding {self.freq_before[nf]:.4f} -> {self.freq_after[nf]:.4f}" if nf is not None else "no No Finding"
        )
        c = self.counts
        return "\n".join(
            [
                f"{c.get('rows', 0)} rows x {c.get('repeats', 1)} repeats: {c.get('paste', 0)} pasted, "
                f"{c.get('blend', 0)} blended, {c.get('unchanged', 0)} unchanged, {c.get('patches', 0)} patches "
                f"({self.seconds:.2f} s)",
                f"tail raise factors: {tails}",
                nf_txt,
                f"correlation kept (Pearson r of off-diagonal entries): {self.corr_kept:.4f}; "
                f"largest change {self.corr_max_change:.4f}",
            ]
        )

    def to_markdown(self) -> str:
        """The headline and the per-class table as markdown."""
        df = self.summary()
        lines = [
            "```",
            self.headline(),
            "```",
            "",
            "| class | freq before | freq after | x | patches | tail |",
            "|---|---:|---:|---:|---:|:-:|",
        ]
        for name, r in df.iterrows():
            lines.append(
                f"| {name} | {r.freq_before:.5f} | {r.freq_after:.5f} | {r.raise_factor:.2f} | {r.patches} | "
                f"{'yes' if r['tail'] else ''} |"
            )
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | os.PathLike, *, prefix: str = "") -> dict[str, pathlib.Path]:
        """Write ``{prefix}summary.csv``, ``{prefix}summary.md`` and ``{prefix}audit.json`` (matrices included).

        Returns:
            the paths by kind (``csv``, ``md``, ``json``).
        """
        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            k: out / f"{prefix}{name}"
            for k, name in (("csv", "summary.csv"), ("md", "summary.md"), ("json", "audit.json"))
        }
        atomic_write(paths["csv"], self.summary().to_csv())
        atomic_write(paths["md"], self.to_markdown())
        doc = {
            "class_names": list(self.class_names),
            "tail": list(self.tail),
            "counts": self.counts,
            "options": self.options,
            "config": self.config.to_dict(),
            "seconds": self.seconds,
            "corr_kept": self.corr_kept,
            "freq_before": self.freq_before.tolist(),
            "freq_after": self.freq_after.tolist(),
            "corr_before": self.corr_before.tolist(),
            "corr_after": self.corr_after.tolist(),
        }
        atomic_write(paths["json"], json.dumps(doc, indent=1) + "\n")
        return paths


def audit_labels(
    labels: pd.DataFrame | torch.Tensor | np.ndarray,
    bank: PatchBank,
    stats: LabelStats | None = None,
    *,
    config: DadamConfig | None = None,
    seed: int = 0,
    repeats: int = 1,
    chunk: int = 65536,
    progress: bool = False,
) -> AuditResult:
    """Run DADAM's sampler over a label table (no pixels) and compare the label statistics before and after.

    "After" is the table as one epoch of training sees it: every row replaced by its DADAM output (unchanged rows
    included); with ``repeats > 1``, ``repeats`` epochs of independent draws stacked.

    Args:
        labels: a label table (DataFrame with the class columns) or an ``(N, C)`` matrix; 1 / 0 / NaN (unknown).
        bank: the patch bank (only its index is used: classes and boxes).
        stats: the statistics the sampler draws from; None: computed from ``labels``.
        config: the DADAM options (default ``DadamConfig()``).
        seed: seed of the draws.
        repeats: epochs of draws (``>= 1``).
        chunk: rows per sampler call.
        progress: tqdm bar.

    Returns:
        an :class:`AuditResult`.

    Example:
        >>> result = audit_labels(table, bank, config=DadamConfig(p=0.5), seed=0)  # doctest: +SKIP
        >>> print(result.headline())  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    class_names = tuple(bank.class_names)
    if isinstance(labels, pd.DataFrame):
        y = labels_tensor(labels, class_names=class_names)
    else:
        y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).float().cpu()
        if y.ndim != 2 or y.shape[1] != len(class_names):
            raise ValueError(f"labels must be (N, {len(class_names)}), got shape {tuple(y.shape)}")
    stats = LabelStats.from_labels(y, class_names=class_names) if stats is None else stats
    config = DadamConfig() if config is None else config
    aug = make_augment(bank, stats, config, seed=seed)
    params = draw_params(y.repeat(repeats, 1), aug, chunk=chunk, progress=progress)
    after = params.labels
    patches = torch.bincount(params.classes[params.active].reshape(-1), minlength=len(class_names))
    counts = {
        "rows": int(y.shape[0]),
        "repeats": int(repeats),
        "samples": len(params),
        "unchanged": int((params.mode == MODE_NONE).sum()),
        "paste": int((params.mode == MODE_PASTE).sum()),
        "blend": int((params.mode == MODE_BLEND).sum()),
        "patches": int(params.active.sum()),
    }
    y64, a64 = y.double(), after.double()
    return AuditResult(
        class_names=class_names,
        freq_before=class_frequencies(y64).numpy(),
        freq_after=class_frequencies(a64).numpy(),
        corr_before=label_correlation(y64).numpy(),
        corr_after=label_correlation(a64).numpy(),
        positives_before=torch.nan_to_num(y64, nan=0.0).gt(0.5).sum(0).numpy(),
        positives_after=torch.nan_to_num(a64, nan=0.0).gt(0.5).sum(0).numpy(),
        patches=patches.numpy(),
        tail=tuple(aug.tail_names),
        counts=counts,
        options={**config.to_dict(), "seed": seed, "chunk": chunk, "tail": list(aug.tail_names)},
        config=config,
        seconds=time.perf_counter() - t0,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------------------


def _save_figure(fig, path: str | os.PathLike, dpi: int) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write(path, buf.getvalue())
    return path


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


def save_grid(
    images: torch.Tensor,
    params: DadamParams,
    path: str | os.PathLike,
    *,
    labels: torch.Tensor | None = None,
    class_names: Sequence[str] = CXR_LT_CLASSES,
    ncols: int = 4,
    width: int = 2,
    padding: int = 4,
    captions: bool = True,
) -> pathlib.Path:
    """A PNG grid of (augmented) images with each placed patch's box drawn and named.

    Boxes come from ``params`` (active slots): red (:data:`PASTE_COLOR`) for pasted patches, cyan
    (:data:`BLEND_COLOR`) for blended ones, labelled with the class name; the rectangle is drawn on the box's own
    outermost pixels. With ``captions`` each tile gets a caption strip at its bottom (mode and the positive labels).
    Tile ``b`` sits at row ``b // ncols``, column ``b % ncols``, its top-left at
    ``(padding + row * (H + padding), padding + col * (W + padding))`` (``torchvision.utils.make_grid``).

    Args:
        images: ``(B, C, H, W)``, C in {1, 3}; uint8, or float in [0, 1].
        params: the :class:`~dadam.sampling.DadamParams` of these images.
        path: the PNG to write (atomically).
        labels: ``(B, num_classes)`` labels for the captions (default ``params.labels``).
        class_names: names of the classes.
        ncols: tiles per row.
        width: box line width in pixels.
        padding: white pixels between tiles.
        captions: draw the caption strips.

    Returns:
        the path written.

    Shape:
        images ``(B, C, H, W)`` -> a PNG of ``rows * (H + padding) + padding`` by ``ncols * (W + padding) + padding``.

    Example:
        >>> out, y2, params = aug(images, labels, return_params=True)  # doctest: +SKIP
        >>> save_grid(out, params, "grid.png", ncols=4)  # doctest: +SKIP
    """
    from PIL import Image, ImageDraw
    from torchvision.utils import draw_bounding_boxes, make_grid

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
    if len(params) != images.shape[0]:
        raise ValueError(f"params are for {len(params)} images, got {images.shape[0]} images")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    images = images.detach().cpu()
    params = params.to("cpu")
    if images.dtype != torch.uint8:
        from dadam.ops import round_to_uint8

        images = round_to_uint8(images.float() * 255)
    labels = params.labels if labels is None else labels.detach().cpu()
    names = list(class_names)
    tiles = []
    for b in range(images.shape[0]):
        tile = images[b].expand(3, -1, -1).contiguous()
        act = params.active[b]
        if bool(act.any()):
            boxes = params.boxes[b][act].clone()
            boxes[:, 2:] -= 1  # PIL rectangles include their end pixel: draw on the box's own last row / column
            colors = [PASTE_COLOR if float(a) >= 1 else BLEND_COLOR for a in params.alpha[b][act]]
            box_names = [names[int(c)] for c in params.classes[b][act]]
            tile = draw_bounding_boxes(tile, boxes, labels=box_names, colors=colors, width=width)
        if captions:
            mode = {MODE_NONE: "unchanged", MODE_PASTE: "paste", MODE_BLEND: "blend"}[int(params.mode[b])]
            pos = [names[i] for i, v in enumerate(labels[b].tolist()) if v > 0.5]
            pil = Image.fromarray(tile.permute(1, 2, 0).numpy())
            draw = ImageDraw.Draw(pil)
            text = f"{mode}: {', '.join(pos) or '-'}"
            h = pil.height
            draw.rectangle([0, h - 14, pil.width, h], fill=(0, 0, 0))
            draw.text((3, h - 13), text, fill=(255, 255, 255))
            tile = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
        tiles.append(tile)
    grid = make_grid(torch.stack(tiles), nrow=ncols, padding=padding, pad_value=255)  # (3, H', W') uint8
    buf = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy()).save(buf, format="PNG")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Phantom bank and command line
# ---------------------------------------------------------------------------------------------------------------------


def phantom_bank(*, canvas: int = 448, per_class: int = 2, seed: int = 0, progress: bool = False) -> PatchBank:
    """A bank of phantom lesions (:func:`dadam.synthetic.render_chest`) covering every class but "No Finding".

    Each patch is cut from a phantom chest drawn at ``canvas x canvas`` with that one class, at its drawn box.

    Args:
        canvas: side of the canvas.
        per_class: phantom images (each giving one or more patches) per class.
        seed: seed of the phantoms.
        progress: tqdm bar.

    Returns:
        the :class:`~dadam.bank.PatchBank`.
    """
    from tqdm.auto import tqdm

    from dadam.synthetic import render_chest

    patches, boxes, classes, donors = [], [], [], []
    jobs = [(c, k) for c in CXR_LT_CLASSES if c != NO_FINDING for k in range(per_class)]
    for j, (c, k) in enumerate(tqdm(jobs, disable=not progress, desc="phantom bank")):
        y = np.zeros(len(CXR_LT_CLASSES), np.float32)
        y[CXR_LT_CLASSES.index(c)] = 1
        img, found = render_chest(y, size=canvas, rng=np.random.default_rng([seed, j]))
        for name, x0, y0, x1, y1 in found:
            patches.append(torch.from_numpy(np.ascontiguousarray(img[y0:y1, x0:x1])))
            boxes.append([x0, y0, x1, y1])
            classes.append(name)
            donors.append(f"phantom_{c}_{k}")
    return PatchBank.from_patches(
        patches, boxes, classes, canvas=canvas, donors=donors, sources=["phantom"] * len(classes)
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m dadam.audit",
        description="Audit DADAM over a label table: class frequencies and label correlation before / after "
        "(summary.csv/.md, audit.json, dist.png, corr.png), and optionally a grid of augmented images (grid.png).",
    )
    src = ap.add_argument_group("labels")
    src.add_argument("--labels", required=True, help="label table CSV, or 'phantom' for dadam.synthetic labels")
    src.add_argument("--labels-format", default="table", choices=("table", "nih", "cxr-lt"))
    src.add_argument("--phantom-rows", type=int, default=200_000, help="rows of phantom labels")
    src.add_argument("--phantom-seed", type=int, default=0)
    src.add_argument(
        "--stats-labels", default=None, help="label table the statistics come from, or 'phantom' (default: --labels)"
    )
    bk = ap.add_argument_group("patch bank (one of)")
    bk.add_argument("--bank", default=None, help="patch bank file (PatchBank.save)")
    bk.add_argument("--boxes", default=None, help="NIH BBox_List_2017.csv to build a bank from")
    bk.add_argument("--box-images", default=None, help="images of --boxes")
    bk.add_argument("--phantom-bank", action="store_true", help="a bank of phantom lesions of every class")
    bk.add_argument("--canvas", type=int, default=448, help="canvas of a bank built here")
    opt = ap.add_argument_group("DADAM options")
    add_dadam_arguments(opt)
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--repeats", type=int, default=1)
    out = ap.add_argument_group("output")
    out.add_argument("--out", required=True, help="output folder")
    out.add_argument("--prefix", default="", help="file name prefix")
    out.add_argument("--grid", action="store_true", help="also write {prefix}grid.png of augmented images")
    out.add_argument("--images", default=None, help="root the label table's paths are relative to (for --grid)")
    out.add_argument("--grid-ids", nargs="*", default=None, help="image_ids to show (default: the first --grid-n)")
    out.add_argument("--grid-n", type=int, default=16)
    out.add_argument("--ncols", type=int, default=4)
    return ap


def _load_labels(spec: str, fmt: str, rows: int, seed: int) -> pd.DataFrame:
    if spec == "phantom":
        from dadam.synthetic import sample_labels

        y = sample_labels(rows, seed=seed)
        return pd.DataFrame(y.astype(np.float64), columns=list(CXR_LT_CLASSES))
    return read_label_table(spec, fmt=fmt)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the audit CLI; returns the exit status (0 done, 2 error)."""
    args = _parser().parse_args(argv)
    try:
        table = _load_labels(args.labels, args.labels_format, args.phantom_rows, args.phantom_seed)
        stats = None
        if args.stats_labels:
            st = _load_labels(args.stats_labels, args.labels_format, args.phantom_rows, args.phantom_seed)
            stats = LabelStats.from_labels(st)
        chosen = sum([args.bank is not None, args.boxes is not None, args.phantom_bank])
        if chosen != 1:
            raise ValueError("give exactly one of --bank, --boxes (with --box-images) or --phantom-bank")
        if args.bank:
            bank = PatchBank.load(args.bank)
        elif args.boxes:
            if not args.box_images:
                raise ValueError("--boxes needs --box-images (the folder of the box images)")
            from dadam.formats import read_nih_boxes

            boxes = read_nih_boxes(args.boxes, image_root=args.box_images)
            print(boxes.attrs["report"].summary())
            bank = PatchBank.from_boxes(boxes, args.box_images, canvas=args.canvas)
            print(bank.report.summary())
        else:
            bank = phantom_bank(canvas=args.canvas, progress=True)
        print(bank)
        config = dadam_config_from_args(args)
        result = audit_labels(table, bank, stats, config=config, seed=args.seed, repeats=args.repeats, progress=True)
        out = pathlib.Path(args.out)
        written = list(result.save(out, prefix=args.prefix).values())
        written.append(plot_label_distribution(result, out / f"{args.prefix}dist.png"))
        written.append(plot_correlation(result, out / f"{args.prefix}corr.png"))
        print(result.headline())
        if args.grid:
            written.append(_grid(args, table, bank, stats, config, out / f"{args.prefix}grid.png"))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in written:
        print(f"wrote {w}")
    return 0


def _grid(args, table: pd.DataFrame, bank: PatchBank, stats, config: DadamConfig, path: pathlib.Path) -> pathlib.Path:
    """Decode the chosen rows at the bank's canvas, run DADAM on them (seeded) and save the grid."""
    from dadam.augment import DiseasedAreaAugment
    from dadam.data import decode_image

    if args.images is None or "path" not in table.columns:
        raise ValueError("--grid needs --images and a label table with a 'path' column")
    if args.grid_ids:
        ids = table["image_id"].astype(str)
        unknown = [i for i in args.grid_ids if i not in set(ids)]
        if unknown:
            raise ValueError(f"--grid-ids {unknown} are not in the label table {args.labels}")
        rows = table.set_index(ids, drop=False).loc[args.grid_ids]
    else:
        rows = table.head(args.grid_n)
    root = pathlib.Path(args.images)
    images = torch.stack(
        [decode_image(root / p if not os.path.isabs(p) else p, canvas=bank.canvas) for p in rows["path"].astype(str)]
    )  # (B, 1, S, S) uint8
    labels = labels_tensor(rows, class_names=bank.class_names)
    stats = LabelStats.from_labels(table, class_names=bank.class_names) if stats is None else stats
    aug = DiseasedAreaAugment.from_config(bank, stats, config, generator=args.seed)
    out, new_labels, params = aug(images, labels, return_params=True)
    modes = params.mode.tolist()
    print(
        f"grid: {len(modes)} images, modes {[{0: 'none', 1: 'paste', 2: 'blend'}[m] for m in modes]}, "
        f"tail {list(aug.tail_names)}"
    )
    return save_grid(out, params, path, labels=new_labels, class_names=bank.class_names, ncols=args.ncols)


if __name__ == "__main__":
    sys.exit(main())
