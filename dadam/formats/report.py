"""``ReadReport``: what a dataset reader read, kept, skipped and noticed, attached to the table it returns."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["ReadReport", "attach_report"]

logger = logging.getLogger("dadam.formats")


@dataclass
class ReadReport:
    """What a reader read, kept and skipped.

    Two kinds of counts, both shown by :meth:`summary`: ``skipped`` counts the rows of the main file left out of the
    table, by reason (:meth:`skip`); ``notes`` counts everything else worth knowing, kept rows included (:meth:`note`):
    boxes clipped to the image, rows with an odd label set, bad lines of a second file, negatives that are not boxes.

    Attributes:
        path: The file read (the main one, for readers of two files).
        source: ``"nih"``, ``"vindr"``, ``"chestx_det"``, ``"mimic"``, ``"cxr_lt"`` or ``"mura"``.
        rows_read: Data rows (box readers: boxes) in the file.
        rows_kept: Rows in the returned table.
        skipped: Reason -> number of rows skipped for it.
        unknown_labels: Source label name -> count, for names with no mapping (those rows are skipped).
        excluded_labels: Source label name -> count, for names the mapping sends to None (skipped on purpose).
        class_counts: Class -> count in the returned table: boxes per class for box readers, positive (1.0) labels per
            class for label readers, ``abnormal``/``normal`` images for MURA.
        notes: Other counts worth knowing (``no_finding_rows``, ``clipped_to_image``, ``entries_without_boxes``, ...).

    Example:
        >>> report = ReadReport(path="train.csv", source="cxr_lt", rows_read=3)
        >>> report.skip("duplicate")
        >>> report.note("all_zero_rows", 1)
        >>> report.skipped, report.notes
        ({'duplicate': 1}, {'all_zero_rows': 1})
    """

    path: str
    source: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    unknown_labels: dict[str, int] = field(default_factory=dict)
    excluded_labels: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """A few human-readable lines: rows read/kept, skip reasons, unknown/excluded labels, class counts, notes."""

        def fmt(d: Mapping[str, int]) -> str:
            return ", ".join(f"{k}: {v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"

        lines = [
            f"{self.source} {self.path}: read {self.rows_read} rows, kept {self.rows_kept}, "
            f"skipped {sum(self.skipped.values())}",
            f"  skipped: {fmt(self.skipped)}",
            f"  unknown labels: {fmt(self.unknown_labels)}",
            f"  excluded labels: {fmt(self.excluded_labels)}",
            f"  class counts: {fmt(self.class_counts)}",
        ]
        if self.notes:
            lines.append(f"  notes: {fmt(self.notes)}")
        return "\n".join(lines)

    def skip(self, reason: str, n: int = 1) -> None:
        """Count ``n`` rows left out of the table for ``reason`` (nothing is recorded for ``n == 0``)."""
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + int(n)

    def note(self, key: str, n: int = 1) -> None:
        """Count ``n`` occurrences of ``key`` in ``notes`` (nothing is recorded for ``n == 0``)."""
        if n:
            self.notes[key] = self.notes.get(key, 0) + int(n)


def attach_report(df: pd.DataFrame, report: ReadReport) -> pd.DataFrame:
    """Renumber ``df``, set ``report.rows_kept``, attach the report as ``df.attrs["report"]`` and log its summary at
    INFO level on the ``dadam.formats`` logger; return the table."""
    df = df.reset_index(drop=True)
    report.rows_kept = len(df)
    df.attrs["report"] = report
    logger.info("%s", report.summary())
    return df
