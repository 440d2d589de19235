"""What a run writes for people to read: logs, TensorBoard, per-class reports and predictions.

A :class:`RunLog` owns rank 0's files of a run directory: ``config.json``, ``train_log.csv`` (one row per logged
step), ``eval_log.csv`` (one row per evaluation), ``eval/<tag>_report.csv|md`` and ``eval/<tag>_pred.csv``,
``tb/`` (TensorBoard), ``final.json``, ``bad_images.csv`` (one row per image left out as unreadable) and
``config_changes.csv`` (one row per setting a resume changed). Every file but the appended CSV logs is written
atomically.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from dadam.files import atomic_write
from fpsm.metrics import multilabel_report, save_report
from fpsm.training.config import TrainConfig

__all__ = [
    "RUN_LOG_DIRS",
    "RUN_LOG_FILES",
    "CsvLog",
    "RunLog",
    "Throughput",
    "mean_row",
    "write_predictions",
    "write_report",
]

TRAIN_LOG_FIELDS = ("step", "epoch", "loss", "lr", "img_per_s")
BAD_IMAGE_FIELDS = ("step", "epoch", "phase", "rank", "row", "image_id", "path", "reason")
CHANGE_FIELDS = ("step", "field", "checkpoint", "now")
RUN_LOG_FILES = ("config.json", "train_log.csv", "eval_log.csv", "final.json", "bad_images.csv", "config_changes.csv")
"""The files a :class:`RunLog` writes in a run directory."""
RUN_LOG_DIRS = ("eval", "tb")
"""The folders a :class:`RunLog` writes in a run directory."""


def write_report(
    probs: torch.Tensor,
    targets: torch.Tensor,
    class_names: Sequence[str],
    out: str | os.PathLike,
    *,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """``fpsm.metrics.multilabel_report`` written as ``<out>.csv`` and ``<out>.md`` (atomically).

    Args:
        probs: ``(N, C)`` probabilities.
        targets: ``(N, C)`` 1 / 0 / NaN (unknown).
        class_names: ``C`` names.
        out: path without suffix; its folder is created.
        threshold: decision threshold of F1, precision and recall.

    Returns:
        the report DataFrame (per-class rows and the ``mean`` row).

    Example:
        >>> write_report(probs, targets, CXR_LT_CLASSES, "runs/x/eval/epoch000_report")  # doctest: +SKIP
    """
    report = multilabel_report(probs, targets, list(class_names), threshold=threshold)
    out = Path(out)
    save_report(report, out.with_name(out.name + ".csv"))
    save_report(report, out.with_name(out.name + ".md"))
    return report


def write_predictions(
    probs: torch.Tensor, image_ids: Sequence[str], class_names: Sequence[str], path: str | os.PathLike
) -> None:
    """CSV ``image_id`` + one probability column per class, written atomically (its folder is created).

    Args:
        probs: ``(N, C)`` probabilities on the CPU.
        image_ids: ``N`` ids, in row order.
        class_names: ``C`` column names.
        path: the CSV file.
    """
    df = pd.DataFrame(probs.numpy(), columns=list(class_names))
    df.insert(0, "image_id", list(image_ids))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, df.to_csv(index=False))


def mean_row(report: pd.DataFrame) -> dict[str, float]:
    """The report's ``mean`` row as ``{metric: value}``."""
    return {str(k): float(v) for k, v in report.loc["mean"].items()}


class CsvLog:
    """An append-only CSV log with fixed columns; on resume, rows past the resumed step are dropped (they are redone).

    Args:
        path: the CSV file.
        fields: its columns (the first is ``step`` when ``keep_until`` is used).
        keep_until: None: start an empty log; a step: keep the rows up to it (resume).
    """

    def __init__(self, path: Path, fields: Sequence[str], *, keep_until: int | None) -> None:
        self.path, self.fields = Path(path), list(fields)
        self.rows = 0  # rows in the file
        if keep_until is not None and self.path.is_file():
            old = pd.read_csv(self.path, dtype={"path": str, "image_id": str})
            kept = old[old["step"] <= keep_until]
            atomic_write(self.path, kept.to_csv(index=False))
            self.rows = len(kept)
        elif keep_until is None or not self.path.is_file():
            atomic_write(self.path, ",".join(self.fields) + "\n")

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (missing columns empty)."""
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow({k: row.get(k, "") for k in self.fields})
        self.rows += 1


class Throughput:
    """Images per second between two :meth:`rate` calls."""

    def __init__(self) -> None:
        self.start, self.images = time.perf_counter(), 0

    def add(self, images: int) -> None:
        """Count ``images`` more."""
        self.images += images

    def rate(self) -> float:
        """Images per second since the last call (or since creation), then start counting again."""
        now = time.perf_counter()
        rate = self.images / max(now - self.start, 1e-9)
        self.start, self.images = now, 0
        return rate


class RunLog:
    """Rank 0's logs of a run; with ``enabled=False`` (other ranks) every method does nothing.

    Args:
        run_dir: the run directory (it must exist, with its ``eval/`` folder).
        enabled: whether this process writes (rank 0).
        resumed_at: the step a resumed run continues from (its logs are kept up to it); None for a new run.
        tensorboard: write TensorBoard scalars to ``run_dir/tb`` (skipped with a warning without tensorboard).
    """

    def __init__(self, run_dir: Path, *, enabled: bool, resumed_at: int | None, tensorboard: bool) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.eval_log = self.run_dir / "eval_log.csv"
        self.train_log: CsvLog | None = None
        self.bad_image_log: CsvLog | None = None
        self.writer = None
        if not enabled:
            return
        self.train_log = CsvLog(self.run_dir / "train_log.csv", TRAIN_LOG_FIELDS, keep_until=resumed_at)
        bad = self.run_dir / "bad_images.csv"  # written from the first bad image on
        if resumed_at is not None and bad.is_file():
            self.bad_image_log = CsvLog(bad, BAD_IMAGE_FIELDS, keep_until=resumed_at)
        if resumed_at is None:
            self.eval_log.unlink(missing_ok=True)
            bad.unlink(missing_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=resumed_at)
            except ImportError:
                warnings.warn(
                    "tensorboard is not installed: no TensorBoard logs (pip install tensorboard)", stacklevel=2
                )

    def write_config(self, cfg: TrainConfig, *, data_config: Mapping[str, Any] | None = None) -> None:
        """``config.json``: the run's config as plain values, and the model's input config (``data_config``: mean,
        std, input size of the backbone's timm config) beside them."""
        if self.enabled:
            values = cfg.to_dict()
            if data_config is not None:
                values["data_config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}
            atomic_write(self.run_dir / "config.json", json.dumps(values, indent=2))

    @property
    def bad_image_count(self) -> int:
        """Images left out as unreadable so far in this run (0 when not enabled)."""
        return self.bad_image_log.rows if self.bad_image_log is not None else 0

    def bad_images(self, per_rank: Sequence[Sequence[tuple[int, int, str, Any]]]) -> None:
        """Rows of ``bad_images.csv``: ``per_rank[r]`` holds ``(step, epoch, phase, SkippedImage)`` of rank ``r``."""
        if not self.enabled or not any(per_rank):
            return
        if self.bad_image_log is None:
            self.bad_image_log = CsvLog(self.run_dir / "bad_images.csv", BAD_IMAGE_FIELDS, keep_until=None)
        new = 0
        for rank, entries in enumerate(per_rank):
            for step, epoch, phase, skipped in entries:
                row = {"step": step, "epoch": epoch, "phase": phase, "rank": rank, "row": skipped.index}
                row.update(image_id=skipped.image_id, path=skipped.path, reason=" ".join(skipped.reason.split()))
                self.bad_image_log.write(row)
                new += 1
        if new:
            print(
                f"{new} image(s) left out as unreadable ({self.bad_image_count} in this run): {self.bad_image_log.path}"
            )

    def config_changes(self, *, step: int, changes: Mapping[str, tuple[Any, Any]]) -> None:
        """Print and append to ``config_changes.csv`` the settings a resume changed (``{name: (old, new)}``)."""
        if not self.enabled or not changes:
            return
        path = self.run_dir / "config_changes.csv"
        if not path.is_file():
            atomic_write(path, ",".join(CHANGE_FIELDS) + "\n")
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, CHANGE_FIELDS)
            for name, (old, now) in changes.items():
                print(f"resume at step {step}: {name} changed from {old!r} to {now!r} (allow_config_change)")
                writer.writerow({"step": step, "field": name, "checkpoint": json.dumps(old), "now": json.dumps(now)})

    def train_step(self, *, step: int, epoch: int, loss: float, lr: float, img_per_s: float) -> None:
        """One row of ``train_log.csv`` and the same scalars in TensorBoard."""
        if not self.enabled:
            return
        self.train_log.write(
            {"step": step, "epoch": epoch, "loss": f"{loss:.6f}", "lr": f"{lr:.6e}", "img_per_s": f"{img_per_s:.2f}"}
        )
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/img_per_s", img_per_s, step)

    def evaluation(
        self,
        tag: str,
        *,
        step: int,
        epoch: int,
        probs: torch.Tensor,
        targets: torch.Tensor,
        image_ids: Sequence[str],
        class_names: Sequence[str],
        threshold: float,
    ) -> dict[str, float]:
        """Write ``eval/<tag>_report.csv|md`` and ``eval/<tag>_pred.csv``, a row of ``eval_log.csv`` and TensorBoard.

        Returns:
            the report's mean row (``{}`` when not enabled).
        """
        if not self.enabled:
            return {}
        report = write_report(probs, targets, class_names, self.run_dir / "eval" / f"{tag}_report", threshold=threshold)
        write_predictions(probs, image_ids, class_names, self.run_dir / "eval" / f"{tag}_pred.csv")
        metrics = mean_row(report)
        new = not self.eval_log.exists()
        with open(self.eval_log, "a", newline="") as f:
            w = csv.DictWriter(f, ["tag", "step", "epoch", *metrics])
            if new:
                w.writeheader()
            w.writerow({"tag": tag, "step": step, "epoch": epoch, **metrics})
        if self.writer is not None:
            for k, v in metrics.items():
                if math.isfinite(v):
                    self.writer.add_scalar(f"eval/{k}", v, step)
        return metrics

    def write_final(
        self,
        *,
        step: int,
        epoch: int,
        metrics: dict[str, float],
        weight_digests: list[str],
        best: Mapping[str, Any] | None = None,
    ) -> None:
        """``final.json``: where the run ended, its last metrics, every rank's weight digest, the bad images and
        the best evaluation (``model_best.pt``'s metric, value, epoch and step; None without one)."""
        if self.enabled:
            final = {"step": step, "epoch": epoch, "metrics": metrics, "rank_weight_hashes": weight_digests}
            final["bad_images"] = self.bad_image_count
            final["best"] = dict(best) if best is not None else None
            atomic_write(self.run_dir / "final.json", json.dumps(final, indent=2))

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()
