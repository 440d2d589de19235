"""The label audit: DADAM's draws over a whole label table, class frequencies and label correlation before vs after.

The sampler needs labels alone, so :func:`audit_labels` runs DADAM's draws over a label table (100k+ rows in seconds
on a CPU) and compares the class frequencies and the label correlation matrix of the table before and after (the
paper's Fig. 3 and 4). DADAM should raise the tail classes, lower "No Finding" (normal images become diseased ones)
and keep the correlation structure. The figures (:meth:`AuditResult.figures`):

- the raise factor ``freq_after / freq_before`` of each class, and of the rarest covered tail class;
- the largest ``|corr_after - corr_before|`` over pairs of covered classes and over all pairs;
- the *corr-of-corr* (:attr:`AuditResult.corr_kept`): the Pearson r between the off-diagonal entries of the two
  correlation matrices;
- the *labels per image* of pasted images against real ones (:attr:`AuditResult.labels_per_image_tv`): a pasted
  image carries only classes the bank covers, so what is compared is the number of **covered** classes per image.
  Pasted: the number of placed classes (its labels) of each pasted image. Real: the number of covered positive
  classes of each image of the audited table that shows the pasted image's tail class, mixed over the tail classes
  in the proportions they were pasted. The figure is the total variation distance ``0.5 * sum |P(n) - Q(n)|``.
  ``labels_per_image_tv_capped`` compares with the real counts capped at ``max_patches`` (what a paste can carry at
  most), to tell the cap apart from the rule.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from dadam.bank import PatchBank
from dadam.config import DadamConfig
from dadam.export import draw_params, make_augment
from dadam.files import atomic_write
from dadam.formats import labels_tensor
from dadam.labels import NO_FINDING
from dadam.sampling import MODE_BLEND, MODE_NONE, MODE_PASTE, DadamParams
from dadam.stats import LabelStats, class_frequencies, label_correlation

__all__ = ["AuditResult", "audit_labels", "labels_per_image"]


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
        covered: the classes the bank covers ("No Finding" excluded).
        labels_per_image_pasted: ``(C + 1,)`` fraction of pasted images with n labels, n = 0..C.
        labels_per_image_real: ``(C + 1,)`` fraction of real images (with the pasted tail classes, in their pasted
            proportions) with n covered classes.
        labels_per_image_real_capped: the same with n capped at ``max_patches``.
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
    covered: tuple[str, ...] = ()
    labels_per_image_pasted: np.ndarray = field(default_factory=lambda: np.zeros(0))
    labels_per_image_real: np.ndarray = field(default_factory=lambda: np.zeros(0))
    labels_per_image_real_capped: np.ndarray = field(default_factory=lambda: np.zeros(0))

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

    @property
    def corr_max_change_covered(self) -> float:
        """Largest absolute change of the correlation of two different classes the bank covers (NaN: fewer than 2)."""
        idx = [self.class_names.index(c) for c in self.covered]
        if len(idx) < 2:
            return float("nan")
        change = np.abs(self.corr_after - self.corr_before)[np.ix_(idx, idx)]
        return float(change[~np.eye(len(idx), dtype=bool)].max())

    @property
    def labels_per_image_tv(self) -> float:
        """Total variation between the labels per pasted image and the covered classes per real image with the same
        tail class (see the module docstring; NaN without pastes)."""
        return _total_variation(self.labels_per_image_pasted, self.labels_per_image_real)

    @property
    def labels_per_image_tv_capped(self) -> float:
        """:attr:`labels_per_image_tv` against the real counts capped at ``max_patches``."""
        return _total_variation(self.labels_per_image_pasted, self.labels_per_image_real_capped)

    @property
    def rarest_tail(self) -> tuple[str, float]:
        """The covered tail class rarest before DADAM and its raise factor."""
        idx = min((self.class_names.index(c) for c in self.tail), key=lambda i: (self.freq_before[i], i))
        return self.class_names[idx], float(self.raise_factor[idx])

    def figures(self) -> dict[str, object]:
        """The audit's figures by name (see the module docstring), plain values for JSON."""
        name, factor = self.rarest_tail
        return {
            "companions": self.config.companions,
            "rarest_tail": name,
            "rarest_tail_raise": factor,
            "corr_max_change_covered": self.corr_max_change_covered,
            "corr_max_change": self.corr_max_change,
            "corr_kept": self.corr_kept,
            "labels_per_image_tv": self.labels_per_image_tv,
            "labels_per_image_tv_capped": self.labels_per_image_tv_capped,
            "dropped_per_paste": self.counts.get("dropped", 0) / max(1, self.counts.get("paste", 0)),
        }

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
                f"largest change {self.corr_max_change:.4f} ({self.corr_max_change_covered:.4f} between covered "
                "classes)",
                f"labels per pasted image vs real images with the tail class (covered classes): total variation "
                f"{self.labels_per_image_tv:.4f} ({self.labels_per_image_tv_capped:.4f} against real counts capped "
                f"at max_patches={self.config.max_patches}); {c.get('dropped', 0)} template classes dropped",
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
            "figures": self.figures(),
            "covered": list(self.covered),
            "labels_per_image": {
                "pasted": self.labels_per_image_pasted.tolist(),
                "real": self.labels_per_image_real.tolist(),
                "real_capped": self.labels_per_image_real_capped.tolist(),
            },
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
    covered = bank.covered.cpu().clone()
    covered[class_names.index(NO_FINDING)] = False
    per_image = labels_per_image(y, params, covered)
    counts["dropped"] = int(params.dropped.sum())
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
        covered=tuple(n for n, c in zip(class_names, covered.tolist(), strict=True) if c),
        **per_image,
    )


def labels_per_image(labels: torch.Tensor, params: DadamParams, covered: torch.Tensor) -> dict[str, np.ndarray]:
    """The labels-per-image distributions of :class:`AuditResult` (see the module docstring).

    Args:
        labels: ``(N, C)`` the labels before (the real images); params: the params drawn for ``labels`` repeated
            ``len(params) // N`` times; covered: ``(C,)`` bool, the covered classes ("No Finding" excluded).

    Returns:
        ``labels_per_image_pasted``, ``labels_per_image_real`` and ``labels_per_image_real_capped``, ``(C + 1,)``
        fractions each (all zero without pastes).
    """
    c = labels.shape[1]
    pasted = params.mode == MODE_PASTE  # (M,)
    n_pasted = params.active[pasted].sum(1)  # (P,) labels of each pasted image
    tail = params.classes[pasted, 0]  # (P,) its tail class
    real = labels.nan_to_num(0.0) > 0.5  # (N, C)
    n_real = real[:, covered].sum(1)  # (N,) covered classes of each real image
    weight = torch.bincount(tail, minlength=c).double()  # (C,) pastes per tail class
    mixture = torch.zeros(c + 1, dtype=torch.float64)
    for t in weight.nonzero().flatten().tolist():  # a few tail classes: the mixture of their real distributions
        shows_t = real[:, t]
        if bool(shows_t.any()):  # a tail class absent from the audited table (other statistics) has no reference
            mixture += weight[t] * torch.bincount(n_real[shows_t], minlength=c + 1).double() / shows_t.sum()
    total = max(1, int(pasted.sum()))
    capped = torch.zeros_like(mixture)
    k = params.max_patches
    capped[: k + 1] = mixture[: k + 1]
    capped[k] += mixture[k + 1 :].sum()
    return {
        "labels_per_image_pasted": (torch.bincount(n_pasted, minlength=c + 1).double() / total).numpy(),
        "labels_per_image_real": (mixture / total).numpy(),
        "labels_per_image_real_capped": (capped / total).numpy(),
    }


def _total_variation(p: np.ndarray, q: np.ndarray) -> float:
    if p.size == 0 or not p.sum() > 0:
        return float("nan")
    return float(0.5 * np.abs(p - q).sum())
