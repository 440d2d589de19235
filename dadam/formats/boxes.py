"""The box table every box reader returns: its columns, its image-size argument and its row checks.

Box checks, in this order (first failing reason wins): ``unknown_label``, ``excluded_label``, ``missing_image``
(``image_root`` given but no file), ``non_numeric_coordinate``, ``nan_coordinate``, ``negative_area`` (x1 < x0 or
y1 < y0), ``zero_area``, ``outside_image`` (where the size is known: more than ``BORDER_TOLERANCE`` = 1 px outside,
or nothing left inside), ``duplicate`` (same image, source label, rater and coordinates as an earlier row).
Boxes that overshoot the border by at most 1 px are clipped to it and counted in ``notes["clipped_to_image"]``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from dadam.formats.report import ReadReport, attach_report

__all__ = ["BORDER_TOLERANCE", "BOX_COLUMNS", "box_class_counts", "check_hw", "empty_boxes", "validate_boxes"]

BOX_COLUMNS: tuple[str, ...] = (
    "image_id",
    "label",
    "source_label",
    "x0",
    "y0",
    "x1",
    "y1",
    "width",
    "height",
    "source",
    "rater",
)
# Boxes may overshoot the image by this many pixels (annotation tools round outwards); they are clipped to the image.
BORDER_TOLERANCE = 1.0

_REASONS = (
    "unknown_label",
    "excluded_label",
    "missing_image",
    "non_numeric_coordinate",
    "nan_coordinate",
    "negative_area",
    "zero_area",
    "outside_image",
)


def validate_boxes(df: pd.DataFrame, report: ReadReport, *, check_raw: list[str]) -> pd.DataFrame:
    """Apply the box checks (module docstring) and clip the kept boxes to their image.

    Args:
        df: The box columns plus ``_status`` (``"ok"``/``"unknown"``/``"excluded"``, see
            :func:`dadam.formats.common.label_status`), ``_bad_number`` (a coordinate is not a number) and
            ``_missing_image`` (bool), one row per box; ``width``/``height`` NaN where the size is unknown.
        report: Receives one skip per rejected row and ``notes["clipped_to_image"]``.
        check_raw: The columns that make two rows duplicates.

    Returns:
        The kept rows, clipped: the box columns first, then any extra columns not starting with ``_``.
    """
    x0, y0, x1, y1 = (df[c].to_numpy(dtype=np.float64) for c in ("x0", "y0", "x1", "y1"))  # each (N,)
    w_img, h_img = df["width"].to_numpy(dtype=np.float64), df["height"].to_numpy(dtype=np.float64)
    bw, bh = x1 - x0, y1 - y0
    status = df["_status"].to_numpy()
    nan = np.isnan(x0) | np.isnan(y0) | np.isnan(x1) | np.isnan(y1)
    sized = np.isfinite(w_img) & np.isfinite(h_img)
    tol = BORDER_TOLERANCE
    with np.errstate(invalid="ignore"):
        outside = sized & (
            (x0 < -tol)
            | (y0 < -tol)
            | (x1 > w_img + tol)
            | (y1 > h_img + tol)
            | (x0 >= w_img)
            | (y0 >= h_img)
            | (x1 <= 0)
            | (y1 <= 0)
        )
        conditions = [
            status == "unknown",
            status == "excluded",
            df["_missing_image"].to_numpy(dtype=bool),
            df["_bad_number"].to_numpy(dtype=bool),
            nan,
            (bw < 0) | (bh < 0),
            (bw == 0) | (bh == 0),
            outside,
        ]
    reason = np.select(conditions, list(_REASONS), default="")
    ok = reason == ""
    dup = np.zeros(len(df), dtype=bool)
    dup[ok] = df.loc[ok].duplicated(subset=check_raw, keep="first").to_numpy()
    reason = np.where(dup, "duplicate", reason)
    for name, n in Counter(reason[reason != ""].tolist()).items():
        report.skip(name, n)
    kept = df.loc[reason == ""].copy()
    if len(kept):
        ws, hs = kept["width"].to_numpy(np.float64), kept["height"].to_numpy(np.float64)
        before = kept[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)  # (K, 4) xyxy
        after = before.copy()
        known = np.isfinite(ws) & np.isfinite(hs)
        after[known] = np.clip(before[known], 0.0, np.stack([ws[known], hs[known], ws[known], hs[known]], axis=1))
        report.note("clipped_to_image", int((after != before).any(axis=1).sum()))
        kept[["x0", "y0", "x1", "y1"]] = after
    return kept[list(BOX_COLUMNS) + [c for c in kept.columns if c not in BOX_COLUMNS and not c.startswith("_")]]


def box_class_counts(labels: pd.Series) -> dict[str, int]:
    """Class -> number of boxes, from the ``label`` column of a box table."""
    return {str(k): int(v) for k, v in labels.value_counts().items()}


def check_hw(image_size: tuple[int, int]) -> tuple[int, int]:
    """``image_size`` as ``(H, W)`` ints; ``ValueError`` unless it is a pair of positive ints."""
    ok = isinstance(image_size, (tuple, list)) and len(image_size) == 2
    if not (ok and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in image_size)):
        raise ValueError(f"image_size must be a (H, W) pair of positive ints, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def empty_boxes(report: ReadReport, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """A box table with no rows (float coordinate and size columns), the report attached."""
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in (*BOX_COLUMNS, *extra)})
    for c in ("x0", "y0", "x1", "y1", "width", "height"):
        df[c] = df[c].astype(np.float64)
    return attach_report(df, report)
