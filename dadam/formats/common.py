"""What every reader shares: file checks, CSV headers, cell parsing and the label mapping step."""

from __future__ import annotations

import csv
import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dadam.formats.report import ReadReport
from dadam.labels import CXR_LT_CLASSES, map_labels

__all__ = [
    "MISSING_TEXT",
    "check_dir",
    "check_file",
    "label_status",
    "positive_counts",
    "read_header",
    "require_columns",
    "to_float",
]

MISSING_TEXT = ("", "nan", "na", "n/a", "null", "none")  # spellings of a missing value, not junk


def check_file(path: str | os.PathLike, what: str) -> pathlib.Path:
    """``path`` as a Path; ``FileNotFoundError`` naming ``what`` and the path when it is not a file."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def check_dir(path: str | os.PathLike, what: str) -> pathlib.Path:
    """``path`` as a Path; ``FileNotFoundError`` naming ``what`` and the path when it is not a folder."""
    p = pathlib.Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def read_header(p: pathlib.Path) -> list[str]:
    """The first CSV line of ``p``, each field stripped (``[]`` for an empty file)."""
    with open(p, newline="", encoding="utf-8-sig") as f:
        return [h.strip() for h in next(csv.reader(f), [])]


def require_columns(p: pathlib.Path, columns: list[str], expected: Sequence[str], what: str) -> None:
    """``ValueError`` naming the file, the header and the missing columns when ``columns`` lacks one of ``expected``."""
    missing = [c for c in expected if c not in columns]
    if missing:
        raise ValueError(
            f"{p}: not a {what} file: header {columns!r} lacks columns {missing}; expected columns {list(expected)}"
        )


def to_float(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Numbers of a column of strings/numbers, and a mask of non-empty values that are not numbers.

    Shape:
        values: (N,); returns two (N,) arrays: float64 (NaN where empty or not a number) and bool.
    """
    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(num)
    if bad.any():  # only the cells that did not parse: missing-value spellings or junk
        text = values[bad].astype("string").str.strip().str.lower().fillna("")
        bad[bad] = ~text.isin(MISSING_TEXT).to_numpy()
    return num, bad


def label_status(
    source_labels: list[str], table: Mapping[str, str | None], report: ReadReport, source: str
) -> tuple[list[str | None], list[str], np.ndarray]:
    """Map source label names to CXR-LT classes, counting unknown and excluded names in ``report``.

    Returns:
        The canonical class of each name (None when unknown or excluded), the stripped names, and a status array
        (``"ok"``, ``"unknown"`` or ``"excluded"``), one entry per name.
    """
    canonical, mreport = map_labels(source_labels, table, source=source)
    for k, v in mreport.unknown.items():
        report.unknown_labels[k] = report.unknown_labels.get(k, 0) + v
    for k, v in mreport.excluded.items():
        report.excluded_labels[k] = report.excluded_labels.get(k, 0) + v
    stripped = [str(s).strip() for s in source_labels]
    status = np.array(
        [
            "unknown" if s not in table else ("excluded" if c is None else "ok")
            for s, c in zip(stripped, canonical, strict=True)
        ],
        dtype=object,
    )
    return canonical, stripped, status


def positive_counts(df: pd.DataFrame) -> dict[str, int]:
    """Class -> number of 1.0 cells, for the CXR-LT class columns of a label table that have any."""
    return {c: int((df[c] == 1.0).sum()) for c in CXR_LT_CLASSES if (df[c] == 1.0).any()}
