"""Readers for the chest X-ray datasets' own files, returning box tables and label tables as pandas DataFrames.

Every reader returns one DataFrame and attaches a :class:`ReadReport` as ``df.attrs["report"]`` (also logged at INFO
level on the ``dadam.formats`` logger). Nothing is dropped silently: a bad row is skipped and counted under a reason
in ``report.skipped``; a label name without a mapping is counted in ``report.unknown_labels``; a name the mapping
deliberately excludes (maps to None) is counted in ``report.excluded_labels``. A file whose header is not the expected
one raises ``ValueError`` naming the file and the expected columns; a missing file raises ``FileNotFoundError``.

Box table (:func:`read_nih_boxes`, :func:`read_vindr`, :func:`read_chestx_det`), one row per box:

=============== ==========================================================================================
``image_id``    file name as in the dataset (``00001369_000.png``, ``<id>.dicom``, ``36204.png``)
``label``       canonical CXR-LT class (one of :data:`dadam.labels.CXR_LT_CLASSES`)
``source_label`` the name the dataset uses (``Infiltrate``, ``Nodule/Mass``, ...)
``x0 y0 x1 y1`` float pixels, xyxy, top-left origin, half-open (``img[y0:y1, x0:x1]`` is the box)
``width height`` size in pixels of the image the coordinates refer to; NaN where unknown
``source``      ``"nih"``, ``"vindr"`` or ``"chestx_det"``
``rater``       radiologist id(s) (VinDr: ``"R8"``; fused boxes: ``"R8,R9"``), else ``""``
=============== ==========================================================================================

The image of a box is ``image_root / image_id``. :func:`read_chestx_det` adds ``polygon`` (list of ``[x, y]`` or None).

Label table (:func:`read_nih_labels`, :func:`read_mimic`, :func:`read_cxr_lt`), one row per image (or study):
``image_id``, ``path`` (relative to the dataset root), one float column per CXR-LT class named exactly as
:data:`~dadam.labels.CXR_LT_CLASSES` (1.0 positive, 0.0 negative, NaN = the source does not say), ``source``, plus
source-specific columns listed in each reader. :func:`read_mura` returns its own table (MURA is not a chest dataset).

Box checks, in this order (first failing reason wins): ``unknown_label``, ``excluded_label``, ``missing_image``
(``image_root`` given but no file), ``non_numeric_coordinate``, ``nan_coordinate``, ``negative_area`` (x1 < x0 or
y1 < y0), ``zero_area``, ``outside_image`` (where the size is known: more than ``BORDER_TOLERANCE`` = 1 px outside,
or nothing left inside), ``duplicate`` (same image, source label, rater and coordinates as an earlier row).
Boxes that overshoot the border by at most 1 px are clipped to it and counted in ``notes["clipped_to_image"]``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pathlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou
from tqdm.auto import tqdm

from dadam.io import image_size as _file_image_size
from dadam.labels import CXR_LT_CLASSES, NO_FINDING, map_labels, resolve_mapping

__all__ = [
    "BORDER_TOLERANCE",
    "BOX_COLUMNS",
    "LABEL_FORMATS",
    "ReadReport",
    "labels_tensor",
    "read_chestx_det",
    "read_cxr_lt",
    "read_label_table",
    "read_mimic",
    "read_mura",
    "read_nih_boxes",
    "read_nih_labels",
    "read_vindr",
]

logger = logging.getLogger(__name__)

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

_NIH_BOX_HEADERS = (
    ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"],  # as NIH ships it: "...,Bbox [x,y,w,h],,,"
    ["Image Index", "Finding Label", "x", "y", "w", "h"],
)
_NIH_LABEL_COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
)
_VINDR_COLUMNS = ("image_id", "class_name", "rad_id", "x_min", "y_min", "x_max", "y_max")
_MIMIC_META_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
_CXR_LT_ID_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition", "path")
_MURA_IMAGE_RE = re.compile(
    r"^(?P<root>.*?)(?P<split>train|valid)/XR_(?P<body_part>[A-Z]+)/(?P<patient>patient\d+)/"
    r"(?P<study>study\d+_(?P<folder_label>positive|negative))/(?P<image>[^/]+)$"
)
_MURA_STUDY_RE = re.compile(r"^(?P<root>.*?)(train|valid)/XR_[A-Z]+/patient\d+/study\d+_(positive|negative)/$")


@dataclass
class ReadReport:
    """What a reader read, kept and skipped.

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
        """A few human-readable lines: rows read/kept, skip reasons, unknown/excluded labels, class counts."""

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

    def _skip(self, reason: str, n: int = 1) -> None:
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + int(n)

    def _note(self, key: str, n: int) -> None:
        if n:
            self.notes[key] = self.notes.get(key, 0) + int(n)


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------


def _check_file(path: str | os.PathLike, what: str) -> pathlib.Path:
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def _check_dir(path: str | os.PathLike, what: str) -> pathlib.Path:
    p = pathlib.Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def _finish(df: pd.DataFrame, report: ReadReport) -> pd.DataFrame:
    df = df.reset_index(drop=True)
    report.rows_kept = len(df)
    df.attrs["report"] = report
    logger.info("%s", report.summary())
    return df


_MISSING_TEXT = ("", "nan", "na", "n/a", "null", "none")  # spellings of a missing value, not junk


def _to_float(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Numbers of a column of strings/numbers, and a mask of non-empty values that are not numbers."""
    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(num)
    if bad.any():  # only the cells that did not parse: missing-value spellings or junk
        text = values[bad].astype("string").str.strip().str.lower().fillna("")
        bad[bad] = ~text.isin(_MISSING_TEXT).to_numpy()
    return num, bad


def _validate_boxes(df: pd.DataFrame, report: ReadReport, *, check_raw: list[str]) -> pd.DataFrame:
    """Apply the box checks (module docstring) to a frame with the box columns plus ``_status`` (label state),
    ``_bad_number`` and ``_missing_image``; count skips in ``report``; return the kept rows, clipped, box columns."""
    x0, y0, x1, y1 = (df[c].to_numpy(dtype=np.float64) for c in ("x0", "y0", "x1", "y1"))
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
    names = [
        "unknown_label",
        "excluded_label",
        "missing_image",
        "non_numeric_coordinate",
        "nan_coordinate",
        "negative_area",
        "zero_area",
        "outside_image",
    ]
    reason = np.select(conditions, names, default="")
    ok = reason == ""
    dup = np.zeros(len(df), dtype=bool)
    dup[ok] = df.loc[ok].duplicated(subset=check_raw, keep="first").to_numpy()
    reason = np.where(dup, "duplicate", reason)
    for name, n in Counter(reason[reason != ""].tolist()).items():
        report._skip(name, n)
    kept = df.loc[reason == ""].copy()
    if len(kept):
        ws, hs = kept["width"].to_numpy(np.float64), kept["height"].to_numpy(np.float64)
        before = kept[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
        after = before.copy()
        known = np.isfinite(ws) & np.isfinite(hs)
        after[known] = np.clip(before[known], 0.0, np.stack([ws[known], hs[known], ws[known], hs[known]], axis=1))
        report._note("clipped_to_image", int((after != before).any(axis=1).sum()))
        kept[["x0", "y0", "x1", "y1"]] = after
    return kept[list(BOX_COLUMNS) + [c for c in kept.columns if c not in BOX_COLUMNS and not c.startswith("_")]]


def _label_status(source_labels: list[str], table: Mapping[str, str | None], report: ReadReport, source: str):
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


def _class_counts(labels: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in labels.value_counts().items()}


def _positive_counts(df: pd.DataFrame) -> dict[str, int]:
    return {c: int((df[c] == 1.0).sum()) for c in CXR_LT_CLASSES if (df[c] == 1.0).any()}


def _read_header(p: pathlib.Path) -> list[str]:
    with open(p, newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def _require_columns(p: pathlib.Path, columns: list[str], expected: tuple[str, ...] | list[str], what: str) -> None:
    missing = [c for c in expected if c not in columns]
    if missing:
        raise ValueError(
            f"{p}: not a {what} file: header {columns!r} lacks columns {missing}; expected columns {list(expected)}"
        )


def _check_hw(image_size: tuple[int, int]) -> tuple[int, int]:
    ok = isinstance(image_size, (tuple, list)) and len(image_size) == 2
    if not (ok and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in image_size)):
        raise ValueError(f"image_size must be a (H, W) pair of positive ints, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def _empty_boxes(report: ReadReport, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in (*BOX_COLUMNS, *extra)})
    for c in ("x0", "y0", "x1", "y1", "width", "height"):
        df[c] = df[c].astype(np.float64)
    return _finish(df, report)


# ---------------------------------------------------------------------------------------------------------------------
# NIH ChestX-ray14
# ---------------------------------------------------------------------------------------------------------------------


def read_nih_boxes(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    image_size: tuple[int, int] = (1024, 1024),
    mapping: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """Read NIH ChestX-ray14's ``BBox_List_2017.csv`` into a box table.

    The file is read as NIH ships it: the header ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` has 9 fields for 6
    data fields (a clean ``Image Index,Finding Label,x,y,w,h`` header is accepted too). Boxes are float ``x, y, w, h``
    in the 1024 x 1024 pixels of the released PNGs and become ``x0=x, y0=y, x1=x+w, y1=y+h``. ``Infiltrate`` (the box
    list's spelling) maps to ``Infiltration``.

    Args:
        path: ``BBox_List_2017.csv``.
        image_root: The folder holding the PNGs (``.../images``). When given, each image's size is read from its file
            (header only); when it differs from ``image_size`` (a resized copy), the boxes are scaled to it. A box whose
            image is missing is skipped (``missing_image``).
        image_size: ``(H, W)`` the coordinates refer to; the ``width``/``height`` of every box when ``image_root`` is
            None.
        mapping: NIH label -> CXR-LT name or None (excluded); None = :data:`dadam.labels.NIH_TO_CXR_LT`.

    Returns:
        The box table (module docstring), ``source="nih"``, ``rater=""``; ``df.attrs["report"]`` is a
        :class:`ReadReport`. Rows with fewer or more than 6 data fields are skipped as ``malformed_row``.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the header is not the box list's, or ``mapping`` has a value that is not a CXR-LT class.

    Example:
        >>> boxes = read_nih_boxes("BBox_List_2017.csv", image_root="images")  # doctest: +SKIP
        >>> boxes.attrs["report"].class_counts["Nodule"]  # doctest: +SKIP
        79
    """
    image_size = _check_hw(image_size)
    p = _check_file(path, "NIH box list (BBox_List_2017.csv)")
    table = resolve_mapping(mapping, source="nih")
    report = ReadReport(path=str(p), source="nih")
    rows: list[list[str]] = []
    with open(p, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        while header and header[-1] == "":
            header.pop()
        if header not in _NIH_BOX_HEADERS:
            raise ValueError(
                f"{p}: header {','.join(header)!r} is not NIH's BBox_List_2017.csv header; expected "
                "'Image Index,Finding Label,Bbox [x,y,w,h],,,' (columns: image index, finding label, x, y, w, h)"
            )
        for row in reader:
            while row and row[-1].strip() == "":
                row.pop()
            if not row:
                continue  # blank line
            report.rows_read += 1
            if len(row) != 6:
                report._skip("malformed_row")
                continue
            rows.append([c.strip() for c in row])
    if not rows:
        return _empty_boxes(report)
    raw = pd.DataFrame(rows, columns=["image_id", "source_label", "x", "y", "w", "h"])
    canonical, stripped, status = _label_status(raw["source_label"].tolist(), table, report, "nih")
    nums = {c: _to_float(raw[c]) for c in ("x", "y", "w", "h")}
    x, y, w, h = (nums[c][0] for c in ("x", "y", "w", "h"))
    bad_number = np.logical_or.reduce([nums[c][1] for c in ("x", "y", "w", "h")])
    height = np.full(len(raw), float(image_size[0]))
    width = np.full(len(raw), float(image_size[1]))
    missing = np.zeros(len(raw), dtype=bool)
    if image_root is not None:
        root = _check_dir(image_root, "NIH image folder (image_root)")
        sizes: dict[str, tuple[int, int] | None] = {}
        for image_id in tqdm(raw["image_id"].unique(), desc="NIH image sizes", disable=raw["image_id"].nunique() < 500):
            f = root / image_id
            sizes[image_id] = _file_image_size(f) if f.is_file() else None
        hw = [sizes[i] for i in raw["image_id"]]
        missing = np.array([s is None for s in hw])
        height = np.array([np.nan if s is None else s[0] for s in hw], dtype=np.float64)
        width = np.array([np.nan if s is None else s[1] for s in hw], dtype=np.float64)
        sy, sx = height / image_size[0], width / image_size[1]
        rescaled = ~missing & ((sy != 1.0) | (sx != 1.0))
        report._note("rescaled_to_file_size", int(rescaled.sum()))
        x, w = np.where(rescaled, x * sx, x), np.where(rescaled, w * sx, w)
        y, h = np.where(rescaled, y * sy, y), np.where(rescaled, h * sy, h)
    df = pd.DataFrame(
        {
            "image_id": raw["image_id"],
            "label": canonical,
            "source_label": stripped,
            "x0": x,
            "y0": y,
            "x1": x + w,
            "y1": y + h,
            "width": width,
            "height": height,
            "source": "nih",
            "rater": "",
            "_status": status,
            "_bad_number": bad_number,
            "_missing_image": missing,
        }
    )
    kept = _validate_boxes(df, report, check_raw=["image_id", "source_label", "x0", "y0", "x1", "y1"])
    report.class_counts = _class_counts(kept["label"])
    return _finish(kept, report)


def read_nih_labels(
    path: str | os.PathLike,
    *,
    mapping: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """Read NIH ChestX-ray14's ``Data_Entry_2017.csv`` / ``Data_Entry_2017_v2020.csv`` into a label table.

    ``Finding Labels`` is ``|``-separated. A CXR-LT class that NIH annotates (a value of the mapping) is 1.0 when the
    image lists it and 0.0 when not; a class NIH does not annotate (e.g. ``Support Devices``, ``Fracture``) is NaN =
    unknown, also on ``No Finding`` images: "No Finding" in NIH means none of *its* 14 findings, not of CXR-LT's 26.
    ``No Finding`` is 1.0 only where NIH says ``No Finding``. A label name with no mapping is counted in
    ``report.unknown_labels`` and ignored; the image is kept (its other labels are still valid).

    Args:
        path: The Data_Entry CSV.
        mapping: NIH label -> CXR-LT name or None (excluded); None = :data:`dadam.labels.NIH_TO_CXR_LT`.

    Returns:
        The label table: ``image_id`` (file name), ``path`` (``images/<image_id>``), the 26 class columns, ``source``
        ("nih"), and ``patient_id`` (int), ``follow_up`` (int), ``age`` (float), ``sex``, ``view`` ("PA"/"AP").
        Skip reasons: ``missing_label`` (empty ``Finding Labels``), ``duplicate`` (repeated ``Image Index``).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the header lacks a Data_Entry column, or ``mapping`` has a value that is not a CXR-LT class.

    Example:
        >>> labels = read_nih_labels("Data_Entry_2017_v2020.csv")  # doctest: +SKIP
        >>> labels["Pleural Effusion"].sum()  # doctest: +SKIP
        13317.0
    """
    p = _check_file(path, "NIH label table (Data_Entry_2017.csv)")
    table = resolve_mapping(mapping, source="nih")
    header = [h.strip() for h in _read_header(p)]
    _require_columns(p, header, _NIH_LABEL_COLUMNS, "NIH Data_Entry_2017")
    raw = pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    raw.columns = [c.strip() for c in raw.columns]
    report = ReadReport(path=str(p), source="nih", rows_read=len(raw))
    findings = raw["Finding Labels"].str.strip()
    empty = (findings == "").to_numpy()
    report._skip("missing_label", int(empty.sum()))
    raw, findings = raw.loc[~empty], findings.loc[~empty]
    dup = raw["Image Index"].str.strip().duplicated(keep="first").to_numpy()
    report._skip("duplicate", int(dup.sum()))
    raw, findings = raw.loc[~dup].reset_index(drop=True), findings.loc[~dup].reset_index(drop=True)

    annotated = sorted({v for v in table.values() if v is not None}, key=CXR_LT_CLASSES.index)
    values = np.full((len(raw), len(CXR_LT_CLASSES)), np.nan)
    values[:, [CXR_LT_CLASSES.index(c) for c in annotated]] = 0.0
    exploded = findings.str.split("|").explode()
    names = [n for n in exploded.tolist()]
    canonical, _, _ = _label_status(names, table, report, "nih")
    rows = exploded.index.to_numpy()
    for r, c in zip(rows, canonical, strict=True):
        if c is not None:
            values[r, CXR_LT_CLASSES.index(c)] = 1.0

    image_id = raw["Image Index"].str.strip()
    df = pd.DataFrame({"image_id": image_id, "path": "images/" + image_id})
    df = pd.concat([df, pd.DataFrame(values, columns=list(CXR_LT_CLASSES))], axis=1)
    df["source"] = "nih"
    df["patient_id"] = pd.to_numeric(raw["Patient ID"], errors="coerce").astype("Int64")
    df["follow_up"] = pd.to_numeric(raw["Follow-up #"], errors="coerce").astype("Int64")
    df["age"] = pd.to_numeric(raw["Patient Age"], errors="coerce")
    df["sex"] = raw["Patient Gender"].str.strip()
    df["view"] = raw["View Position"].str.strip()
    report.class_counts = _positive_counts(df)
    return _finish(df, report)


# ---------------------------------------------------------------------------------------------------------------------
# VinDr-CXR
# ---------------------------------------------------------------------------------------------------------------------

_VINDR_SUFFIXES = (".dicom", ".dcm", ".png", ".jpg", ".jpeg")


def _components(adj: np.ndarray) -> np.ndarray:
    """Connected-component id of every node of a symmetric boolean adjacency matrix ``(n, n)``."""
    n = adj.shape[0]
    comp = np.full(n, -1)
    c = 0
    for start in range(n):
        if comp[start] >= 0:
            continue
        stack = [start]
        comp[start] = c
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(adj[i] & (comp < 0)):
                comp[j] = c
                stack.append(j)
        c += 1
    return comp


def _fuse_boxes(df: pd.DataFrame, *, mode: str, iou: float, report: ReadReport) -> pd.DataFrame:
    """Fuse boxes of the same canonical class on the same image (``union`` or ``majority``, see read_vindr)."""
    df = df.sort_values(["image_id", "label"], kind="stable").reset_index(drop=True)
    boxes = torch.as_tensor(df[["x0", "y0", "x1", "y1"]].to_numpy(np.float64))  # (N, 4) xyxy
    raters = df["rater"].astype(str).to_numpy()
    source_labels = df["source_label"].astype(str).to_numpy()
    key = (df["image_id"].astype(str) + "\0" + df["label"].astype(str)).to_numpy()
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(df)]
    keep_rows: list[int] = []  # a row of df that carries image_id, label, size, source of each output box
    fused: list[list[float]] = []
    who_out: list[str] = []
    labels_out: list[str] = []
    dropped = 0
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if e - s == 1:  # one box: nothing to fuse
            if mode == "majority":
                dropped += 1
                continue
            keep_rows.append(s)
            fused.append(boxes[s].tolist())
            who_out.append(raters[s])
            labels_out.append(source_labels[s])
            continue
        b = boxes[s:e]  # (n, 4)
        ious = box_iou(b, b).numpy()  # (n, n)
        comp = _components(ious > 0.0 if mode == "union" else ious >= iou)
        for c in range(int(comp.max()) + 1):
            members = np.flatnonzero(comp == c)
            who = sorted(set(raters[s + members].tolist()))
            if mode == "majority" and len(who) < 2:
                dropped += 1
                continue
            m = b[members]
            if mode == "union":
                fused.append([m[:, 0].min().item(), m[:, 1].min().item(), m[:, 2].max().item(), m[:, 3].max().item()])
            else:
                fused.append(m.mean(dim=0).tolist())
            keep_rows.append(s)
            who_out.append(",".join(who))
            labels_out.append("|".join(sorted(set(source_labels[s + members].tolist()))))
    out = df.iloc[keep_rows][list(BOX_COLUMNS)].reset_index(drop=True)
    out[["x0", "y0", "x1", "y1"]] = np.asarray(fused, dtype=np.float64).reshape(-1, 4)
    out["rater"] = who_out
    out["source_label"] = labels_out
    report._note("boxes_before_fusion", len(df))
    report._note("clusters_without_majority", dropped)
    return out


def read_vindr(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    raters: Literal["all", "union", "majority"] = "all",
    iou: float = 0.4,
    mapping: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """Read VinDr-CXR's ``train.csv`` (Kaggle) or ``annotations_train.csv``/``annotations_test.csv`` (PhysioNet).

    Each row is one radiologist's box (``rad_id``, 3 radiologists per training image) in the image's native pixels.
    ``No finding`` rows (empty coordinates) are the negatives, not boxes: they are left out of the table and counted in
    ``report.notes["no_finding_rows"]`` (and ``no_finding_images``), not as skips.

    Args:
        path: The annotation CSV (columns ``image_id,class_name,rad_id,x_min,y_min,x_max,y_max``; ``class_id`` is
            optional).
        image_root: The folder with the images. When given, ``image_id`` becomes the file found there
            (``<id>.dicom``, ``.dcm``, ``.png``, ``.jpg`` in that order of preference) and ``width``/``height`` come from
            it (DICOM Rows/Columns without the pixels); a box whose image is missing is skipped (``missing_image``).
            Without it, ``image_id`` is ``<id>.dicom`` and the sizes are NaN (boxes are then not checked against the
            image). The coordinates are in native DICOM pixels: resized PNG copies do not match them.
        raters: ``"all"`` keeps every rater's box (``rater`` = ``rad_id``). ``"union"`` merges boxes of the same
            canonical class on the same image that overlap (IoU > 0, transitively) into their enclosing box.
            ``"majority"`` clusters boxes of the same class on the same image linked by IoU >= ``iou``
            (transitively), averages each cluster's coordinates and keeps a cluster only when at least 2 distinct
            raters drew it (dropped clusters: ``notes["clusters_without_majority"]``). Fused boxes list their raters
            (``"R8,R9"``) and source labels (``"ILD|Pulmonary fibrosis"``).
        iou: The IoU threshold of ``"majority"``, in (0, 1].
        mapping: VinDr class name -> CXR-LT name or None (excluded); None = :data:`dadam.labels.VINDR_TO_CXR_LT`.

    Returns:
        The box table (module docstring), ``source="vindr"``; ``df.attrs["report"]`` is a :class:`ReadReport`
        (``class_counts`` counts the returned boxes, after fusion).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the header lacks a VinDr column, ``raters``/``iou`` is invalid, or ``mapping`` has a value that
            is not a CXR-LT class.

    Example:
        >>> boxes = read_vindr("train.csv", image_root="train", raters="majority")  # doctest: +SKIP
    """
    if raters not in ("all", "union", "majority"):
        raise ValueError(f"raters must be 'all', 'union' or 'majority', got {raters!r}")
    if not (isinstance(iou, (int, float)) and 0.0 < iou <= 1.0):
        raise ValueError(f"iou must be in (0, 1], got {iou!r}")
    p = _check_file(path, "VinDr-CXR annotation CSV")
    table = resolve_mapping(mapping, source="vindr")
    header = [h.strip() for h in _read_header(p)]
    _require_columns(p, header, _VINDR_COLUMNS, "VinDr-CXR annotation")
    raw = pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    raw.columns = [c.strip() for c in raw.columns]
    report = ReadReport(path=str(p), source="vindr", rows_read=len(raw))
    if raw.empty:
        return _empty_boxes(report)
    ids = raw["image_id"].str.strip()
    canonical, stripped, status = _label_status(raw["class_name"].tolist(), table, report, "vindr")
    negative = np.array([c == NO_FINDING for c in canonical])
    report._note("no_finding_rows", int(negative.sum()))
    report._note("no_finding_images", int(ids[negative].nunique()))

    file_name = ids + ".dicom"
    height = np.full(len(raw), np.nan)
    width = np.full(len(raw), np.nan)
    missing = np.zeros(len(raw), dtype=bool)
    if image_root is not None:
        root = _check_dir(image_root, "VinDr-CXR image folder (image_root)")
        present = set(os.listdir(root))
        files: dict[str, tuple[str, tuple[int, int]] | None] = {}
        wanted = ids[~negative].unique()
        for i in tqdm(wanted, desc="VinDr image sizes", disable=len(wanted) < 500):
            name = next((i + s for s in _VINDR_SUFFIXES if i + s in present), None)
            files[i] = None if name is None else (name, _file_image_size(root / name))
        found = [files.get(i) for i in ids]
        missing = np.array([f is None for f in found]) & ~negative
        file_name = pd.Series(
            [i + ".dicom" if f is None else f[0] for i, f in zip(ids, found, strict=True)], index=raw.index
        )
        height = np.array([np.nan if f is None else f[1][0] for f in found], dtype=np.float64)
        width = np.array([np.nan if f is None else f[1][1] for f in found], dtype=np.float64)
    nums = {c: _to_float(raw[c]) for c in ("x_min", "y_min", "x_max", "y_max")}
    df = pd.DataFrame(
        {
            "image_id": file_name,
            "label": canonical,
            "source_label": stripped,
            "x0": nums["x_min"][0],
            "y0": nums["y_min"][0],
            "x1": nums["x_max"][0],
            "y1": nums["y_max"][0],
            "width": width,
            "height": height,
            "source": "vindr",
            "rater": raw["rad_id"].str.strip(),
            "_status": status,
            "_bad_number": np.logical_or.reduce([v[1] for v in nums.values()]),
            "_missing_image": missing,
        }
    )
    df = df.loc[~negative]
    kept = _validate_boxes(df, report, check_raw=["image_id", "source_label", "rater", "x0", "y0", "x1", "y1"])
    if raters != "all" and len(kept):
        kept = _fuse_boxes(kept, mode=raters, iou=float(iou), report=report)
    report.class_counts = _class_counts(kept["label"])
    return _finish(kept, report)


# ---------------------------------------------------------------------------------------------------------------------
# ChestX-Det
# ---------------------------------------------------------------------------------------------------------------------


def read_chestx_det(
    path: str | os.PathLike,
    *,
    image_size: tuple[int, int] = (1024, 1024),
    mapping: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """Read a ChestX-Det or ChestX-Det10 JSON file into a box table.

    The file is a list of ``{"file_name": "36204.png", "syms": [...], "boxes": [[x1, y1, x2, y2], ...],
    "polygons": [...]}`` (ChestX-Det10 has no ``polygons``). ChestX-Det images are NIH ChestX-ray14 images at their
    released size, 1024 x 1024, so that is the default ``width``/``height``. Entries with no boxes are images without
    any of the 13 findings: they are counted in ``report.notes["entries_without_boxes"]``.

    Args:
        path: The JSON file (``ChestX_Det_train.json``, ``ChestX_Det_test.json``, ChestX-Det10's ``train.json``...).
        image_size: ``(H, W)`` the coordinates refer to.
        mapping: ChestX-Det name -> CXR-LT name or None (excluded); None = :data:`dadam.labels.CHESTX_DET_TO_CXR_LT`.

    Returns:
        The box table (module docstring), ``source="chestx_det"``, ``rater=""``, plus ``polygon`` (the outline as a
        list of ``[x, y]`` or None). Skip reason ``malformed_entry`` counts entries without ``file_name``/``syms``/
        ``boxes`` or with not as many syms as boxes, ``malformed_box`` boxes that are not 4 values.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the file is not JSON or not a list, or ``mapping`` has a value that is not a CXR-LT class.

    Example:
        >>> boxes = read_chestx_det("ChestX_Det_train.json")  # doctest: +SKIP
    """
    image_size = _check_hw(image_size)
    p = _check_file(path, "ChestX-Det JSON")
    table = resolve_mapping(mapping, source="chestx_det")
    expected = '[{"file_name": ..., "syms": [...], "boxes": [[x1, y1, x2, y2], ...], "polygons": [...]}, ...]'
    try:
        with open(p, encoding="utf-8") as f:
            entries = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not a JSON file ({e}); expected a ChestX-Det list {expected}") from e
    if not isinstance(entries, list):
        raise ValueError(f"{p}: top level is {type(entries).__name__}; expected a ChestX-Det list {expected}")
    report = ReadReport(path=str(p), source="chestx_det")
    report._note("entries", len(entries))
    rows: list[tuple] = []
    empty = 0
    for entry in entries:
        if not (isinstance(entry, dict) and {"file_name", "syms", "boxes"} <= entry.keys()):
            report._skip("malformed_entry")
            continue
        syms, boxes = entry["syms"], entry["boxes"]
        if not (isinstance(syms, list) and isinstance(boxes, list) and len(syms) == len(boxes)):
            report._skip("malformed_entry")
            continue
        polygons = entry.get("polygons")
        if not (isinstance(polygons, list) and len(polygons) == len(boxes)):
            polygons = [None] * len(boxes)
        if not boxes:
            empty += 1
        for sym, box, poly in zip(syms, boxes, polygons, strict=True):
            report.rows_read += 1
            if not (isinstance(box, (list, tuple)) and len(box) == 4):
                report._skip("malformed_box")
                continue
            rows.append((str(entry["file_name"]).strip(), str(sym), *box, poly))
    report._note("entries_without_boxes", empty)
    if not rows:
        return _empty_boxes(report, extra=("polygon",))
    raw = pd.DataFrame(rows, columns=["image_id", "source_label", "x0", "y0", "x1", "y1", "polygon"])
    canonical, stripped, status = _label_status(raw["source_label"].tolist(), table, report, "chestx_det")
    nums = {c: _to_float(raw[c].astype(object)) for c in ("x0", "y0", "x1", "y1")}
    df = pd.DataFrame(
        {
            "image_id": raw["image_id"],
            "label": canonical,
            "source_label": stripped,
            **{c: nums[c][0] for c in ("x0", "y0", "x1", "y1")},
            "width": float(image_size[1]),
            "height": float(image_size[0]),
            "source": "chestx_det",
            "rater": "",
            "polygon": raw["polygon"],
            "_status": status,
            "_bad_number": np.logical_or.reduce([v[1] for v in nums.values()]),
            "_missing_image": False,
        }
    )
    kept = _validate_boxes(df, report, check_raw=["image_id", "source_label", "x0", "y0", "x1", "y1"])
    report.class_counts = _class_counts(kept["label"])
    return _finish(kept, report)


# ---------------------------------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG and CXR-LT
# ---------------------------------------------------------------------------------------------------------------------


def read_mimic(
    chexpert_csv: str | os.PathLike,
    metadata_csv: str | os.PathLike | None = None,
    *,
    uncertain: Literal["zero", "one", "nan"] = "zero",
    blank: Literal["zero", "nan"] = "zero",
    mapping: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """Read MIMIC-CXR-JPG's CheXpert labels (``mimic-cxr-2.0.0-chexpert.csv`` or ``-negbio.csv``) into a label table.

    Each of the 14 CheXpert columns holds 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank (not mentioned
    in the report). ``uncertain`` decides -1.0: ``"zero"`` (U-Zeros, the default), ``"one"`` (U-Ones) or ``"nan"``
    (U-Ignore: unknown, to be masked in the loss). ``blank`` decides not-mentioned: ``"zero"`` (the default: a finding
    the report does not mention is taken as absent, as the CheXpert paper does) or ``"nan"``. The 12 CXR-LT classes that
    CheXpert does not label are NaN.

    Args:
        chexpert_csv: The CheXpert label CSV (``subject_id,study_id`` + 14 labels), one row per study.
        metadata_csv: ``mimic-cxr-2.0.0-metadata.csv``. When given, the table has one row per image (join on
            ``subject_id, study_id``), ``image_id`` = ``dicom_id``, ``path`` =
            ``files/p{first 2 digits of subject}/p{subject_id}/s{study_id}/{dicom_id}.jpg`` and ``view`` =
            ``ViewPosition``; images whose study has no labels are counted in ``notes["images_without_labels"]``.
            Without it, one row per study: ``image_id`` = ``s{study_id}``, ``path`` = the study folder.
        uncertain: Policy for -1.0, see above.
        blank: Policy for blank cells, see above.
        mapping: CheXpert column -> CXR-LT name or None (excluded); None = :data:`dadam.labels.CHEXPERT_TO_CXR_LT`.
            Columns the mapping does not know are counted in ``report.unknown_labels`` (number of non-blank cells) and
            ignored.

    Returns:
        The label table with ``subject_id``, ``study_id`` (int) and, with metadata, ``view``; ``source="mimic"``.
        Skip reasons: ``bad_value`` (a label that is not 1, 0, -1 or blank; or a non-integer id), ``duplicate``
        (repeated ``subject_id, study_id``).

    Raises:
        FileNotFoundError: if a file is missing.
        ValueError: if a header lacks an expected column, or ``uncertain``/``blank`` is not one of the policies.

    Example:
        >>> labels = read_mimic("mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-metadata.csv", uncertain="nan")
        ... # doctest: +SKIP
    """
    policies = {"zero": 0.0, "one": 1.0, "nan": np.nan}
    if uncertain not in policies:
        raise ValueError(f"uncertain must be 'zero', 'one' or 'nan', got {uncertain!r}")
    if blank not in ("zero", "nan"):
        raise ValueError(f"blank must be 'zero' or 'nan', got {blank!r}")
    p = _check_file(chexpert_csv, "MIMIC-CXR CheXpert label CSV")
    table = resolve_mapping(mapping, source="chexpert")
    header = [h.strip() for h in _read_header(p)]
    _require_columns(p, header, ("subject_id", "study_id", *table), "MIMIC-CXR CheXpert label")
    raw = pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    raw.columns = [c.strip() for c in raw.columns]
    report = ReadReport(path=str(p), source="mimic", rows_read=len(raw))

    subject = pd.to_numeric(raw["subject_id"], errors="coerce")
    study = pd.to_numeric(raw["study_id"], errors="coerce")
    bad = (subject.isna() | study.isna()).to_numpy()
    label_cols = [c for c in raw.columns if c not in ("subject_id", "study_id")]
    values = np.full((len(raw), len(CXR_LT_CLASSES)), np.nan)
    for col in label_cols:
        num, nonnum = _to_float(raw[col])
        if col not in table:
            report.unknown_labels[col] = int((~np.isnan(num) | nonnum).sum())
            continue
        if table[col] is None:
            report.excluded_labels[col] = int((~np.isnan(num) | nonnum).sum())
            continue
        blank_cell = np.isnan(num) & ~nonnum
        bad = bad | nonnum | ~(np.isnan(num) | np.isin(num, (1.0, 0.0, -1.0)))
        v = np.where(num == -1.0, policies[uncertain], num)
        v = np.where(blank_cell, 0.0 if blank == "zero" else np.nan, v)
        j = CXR_LT_CLASSES.index(table[col])
        values[:, j] = np.fmax(values[:, j], v)  # several columns onto one class: positive wins
    report._skip("bad_value", int(bad.sum()))
    keys = pd.DataFrame({"subject_id": subject, "study_id": study})
    dup = np.zeros(len(raw), dtype=bool)
    dup[~bad] = keys.loc[~bad].duplicated(keep="first").to_numpy()
    report._skip("duplicate", int(dup.sum()))
    keep = ~bad & ~dup
    labels = pd.concat(
        [
            keys.loc[keep].astype("int64").reset_index(drop=True),
            pd.DataFrame(values[keep], columns=list(CXR_LT_CLASSES)),
        ],
        axis=1,
    )
    if metadata_csv is None:
        sid = labels["subject_id"].astype(str)
        folder = "files/p" + sid.str[:2] + "/p" + sid + "/s" + labels["study_id"].astype(str)
        df = pd.concat(
            [pd.DataFrame({"image_id": "s" + labels["study_id"].astype(str), "path": folder}), labels], axis=1
        )
    else:
        m = _check_file(metadata_csv, "MIMIC-CXR metadata CSV")
        mheader = [h.strip() for h in _read_header(m)]
        _require_columns(m, mheader, _MIMIC_META_COLUMNS, "MIMIC-CXR metadata")
        meta = pd.read_csv(m, dtype=str, keep_default_na=False, usecols=list(_MIMIC_META_COLUMNS))
        meta = pd.DataFrame(
            {
                "image_id": meta["dicom_id"].str.strip(),
                "subject_id": pd.to_numeric(meta["subject_id"], errors="coerce"),
                "study_id": pd.to_numeric(meta["study_id"], errors="coerce"),
                "view": meta["ViewPosition"].str.strip(),
            }
        )
        bad_meta = meta["subject_id"].isna() | meta["study_id"].isna()
        report._note("metadata_rows_bad_id", int(bad_meta.sum()))
        meta = meta.loc[~bad_meta].astype({"subject_id": "int64", "study_id": "int64"})
        merged = meta.merge(labels, on=["subject_id", "study_id"], how="left", indicator=True)
        no_labels = (merged["_merge"] == "left_only").to_numpy()
        report._note("images_without_labels", int(no_labels.sum()))
        merged = merged.loc[~no_labels].drop(columns="_merge").reset_index(drop=True)
        report._note(
            "studies_without_images",
            int(
                (
                    ~labels.set_index(["subject_id", "study_id"]).index.isin(
                        meta.set_index(["subject_id", "study_id"]).index
                    )
                ).sum()
            ),
        )
        sid = merged["subject_id"].astype(str)
        merged.insert(
            1,
            "path",
            "files/p"
            + sid.str[:2]
            + "/p"
            + sid
            + "/s"
            + merged["study_id"].astype(str)
            + "/"
            + merged["image_id"]
            + ".jpg",
        )
        df = merged
    df["source"] = "mimic"
    front = ["image_id", "path", *CXR_LT_CLASSES, "source"]
    df = df[front + [c for c in df.columns if c not in front]]
    report.class_counts = _positive_counts(df)
    return _finish(df, report)


def read_cxr_lt(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CXR-LT 2023 ``train.csv`` / ``development.csv`` (with labels) into a label table.

    The file has ``dicom_id, subject_id, study_id, ViewPosition, path`` and then the 26 classes as 0/1 columns (the
    order of :data:`~dadam.labels.CXR_LT_CLASSES`; columns are matched by name). The 2024 edition (40 classes,
    ``Normal`` for ``No Finding``) is a different format and is rejected by the header check.

    Args:
        path: The CSV.

    Returns:
        The label table: ``image_id`` (= ``dicom_id``), ``path`` (as in the file, relative to the MIMIC-CXR-JPG root),
        the 26 classes (0.0/1.0), ``source="cxr_lt"``, ``subject_id``, ``study_id`` (int), ``view``. Skip reasons:
        ``bad_value`` (a class value other than 0/1, or a non-integer id), ``duplicate`` (repeated ``dicom_id``).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the header lacks one of the expected columns.

    Example:
        >>> labels = read_cxr_lt("train.csv")  # doctest: +SKIP
        >>> len(labels)  # doctest: +SKIP
        264849
    """
    p = _check_file(path, "CXR-LT label CSV")
    header = [h.strip() for h in _read_header(p)]
    _require_columns(p, header, (*_CXR_LT_ID_COLUMNS, *CXR_LT_CLASSES), "CXR-LT 2023 train/development")
    raw = pd.read_csv(
        p, dtype={c: str for c in ("dicom_id", "ViewPosition", "path")}, keep_default_na=False, encoding="utf-8-sig"
    )
    raw.columns = [c.strip() for c in raw.columns]
    report = ReadReport(path=str(p), source="cxr_lt", rows_read=len(raw))
    values = np.stack([pd.to_numeric(raw[c], errors="coerce").to_numpy(np.float64) for c in CXR_LT_CLASSES], axis=1)
    subject = pd.to_numeric(raw["subject_id"], errors="coerce")
    study = pd.to_numeric(raw["study_id"], errors="coerce")
    bad = ~np.isin(values, (0.0, 1.0)).all(axis=1) | subject.isna().to_numpy() | study.isna().to_numpy()
    report._skip("bad_value", int(bad.sum()))
    ids = raw["dicom_id"].str.strip()
    dup = np.zeros(len(raw), dtype=bool)
    dup[~bad] = ids[~bad].duplicated(keep="first").to_numpy()
    report._skip("duplicate", int(dup.sum()))
    keep = ~bad & ~dup
    df = pd.DataFrame({"image_id": ids[keep].to_numpy(), "path": raw["path"].str.strip()[keep].to_numpy()})
    df = pd.concat([df, pd.DataFrame(values[keep], columns=list(CXR_LT_CLASSES))], axis=1)
    df["source"] = "cxr_lt"
    df["subject_id"] = subject[keep].astype("int64").to_numpy()
    df["study_id"] = study[keep].astype("int64").to_numpy()
    df["view"] = raw["ViewPosition"].str.strip()[keep].to_numpy()
    report.class_counts = _positive_counts(df)
    return _finish(df, report)


# ---------------------------------------------------------------------------------------------------------------------
# MURA
# ---------------------------------------------------------------------------------------------------------------------


def _read_headerless_csv(p: pathlib.Path, ncols: int, example: str, pattern: re.Pattern) -> list[list[str]]:
    with open(p, newline="", encoding="utf-8-sig") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if rows and not (len(rows[0]) == ncols and pattern.match(rows[0][0])):
        raise ValueError(
            f"{p}: first line {','.join(rows[0])!r} is not a MURA row; expected a header-less CSV with {ncols} "
            f"column(s), lines like {example!r}"
        )
    return rows


def read_mura(image_paths_csv: str | os.PathLike, labeled_studies_csv: str | os.PathLike) -> pd.DataFrame:
    """Read MURA v1.1's header-less ``*_image_paths.csv`` and ``*_labeled_studies.csv`` into an image table.

    Args:
        image_paths_csv: One image path per line (``MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/
            image1.png``).
        labeled_studies_csv: ``<study folder>/,<0 or 1>`` per line (1 = abnormal).

    Returns:
        One row per image: ``image_id`` (= ``path``, the only unique name: MURA's files are called ``image1.png``...),
        ``path`` (as in the file), ``split`` ("train"/"valid"), ``body_part`` ("ELBOW", "FINGER", "FOREARM", "HAND",
        "HUMERUS", "SHOULDER", "WRIST"), ``patient`` ("patient00001"), ``study`` ("study1_positive"), ``label`` (int
        0/1, from the labeled-studies file), ``source="mura"``. ``class_counts`` = ``{"abnormal": n, "normal": n}``.
        Skip reasons: ``bad_path`` (not a MURA image path), ``missing_study`` (the study is not in the labeled-studies
        file), ``duplicate``. Notes: ``study_rows_bad`` (labeled-studies lines that are not ``folder/,0|1``),
        ``label_disagrees_with_folder`` (label vs. the ``_positive``/``_negative`` folder name), ``images_<BODY_PART>``.

    Raises:
        FileNotFoundError: if a file is missing.
        ValueError: if a file's first line is not a MURA row (e.g. a header line or the files swapped).

    Example:
        >>> mura = read_mura("MURA-v1.1/train_image_paths.csv", "MURA-v1.1/train_labeled_studies.csv")  # doctest: +SKIP
    """
    p = _check_file(image_paths_csv, "MURA image paths CSV")
    s = _check_file(labeled_studies_csv, "MURA labeled studies CSV")
    images = _read_headerless_csv(
        p, 1, "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png", _MURA_IMAGE_RE
    )
    studies_rows = _read_headerless_csv(
        s, 2, "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/,1", _MURA_STUDY_RE
    )
    report = ReadReport(path=str(p), source="mura", rows_read=len(images))
    studies: dict[str, int] = {}
    for row in studies_rows:
        if len(row) != 2 or not _MURA_STUDY_RE.match(row[0]) or row[1] not in ("0", "1"):
            report._note("study_rows_bad", 1)
            continue
        studies.setdefault(row[0], int(row[1]))
    out: list[dict] = []
    seen: set[str] = set()
    for row in images:
        m = _MURA_IMAGE_RE.match(row[0]) if len(row) == 1 else None
        if m is None:
            report._skip("bad_path")
            continue
        path = row[0]
        study_key = path[: path.rfind("/") + 1]
        if study_key not in studies:
            report._skip("missing_study")
            continue
        if path in seen:
            report._skip("duplicate")
            continue
        seen.add(path)
        label = studies[study_key]
        report._note("label_disagrees_with_folder", int(label != (m["folder_label"] == "positive")))
        report._note(f"images_{m['body_part']}", 1)
        out.append(
            {
                "image_id": path,
                "path": path,
                "split": m["split"],
                "body_part": m["body_part"],
                "patient": m["patient"],
                "study": m["study"],
                "label": label,
                "source": "mura",
            }
        )
    columns = ["image_id", "path", "split", "body_part", "patient", "study", "label", "source"]
    df = pd.DataFrame(out, columns=columns).astype({"label": "int64"})
    report.class_counts = {
        k: v for k, v in (("abnormal", int((df["label"] == 1).sum())), ("normal", int((df["label"] == 0).sum()))) if v
    }
    return _finish(df, report)


# ---------------------------------------------------------------------------------------------------------------------
# Label tables in the library's own schema
# ---------------------------------------------------------------------------------------------------------------------

LABEL_FORMATS = ("table", "nih", "cxr-lt")


def read_label_table(path: str | pathlib.Path, *, fmt: str = "table") -> pd.DataFrame:
    """Read a label table: ``"table"`` (CSV in the label-table contract: ``image_id, path``, the 26 classes),
    ``"nih"`` (NIH ``Data_Entry_2017*.csv``) or ``"cxr-lt"`` (CXR-LT 2023 ``train.csv``).

    Raises:
        ValueError: an unknown ``fmt`` or a table without the needed columns (naming them and the file).
    """
    if fmt == "nih":
        return read_nih_labels(path)
    if fmt == "cxr-lt":
        return read_cxr_lt(path)
    if fmt != "table":
        raise ValueError(f"label format must be one of {LABEL_FORMATS}, got {fmt!r}")
    table = pd.read_csv(path, dtype={"image_id": str, "path": str})
    missing = [c for c in ("image_id", "path", *CXR_LT_CLASSES) if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: label table lacks columns {missing}; it has {list(table.columns)}")
    return table


def labels_tensor(table: pd.DataFrame, *, class_names: Sequence[str] = CXR_LT_CLASSES) -> torch.Tensor:
    """The ``(N, C)`` float32 label matrix of a label table (NaN = unknown), naming missing columns."""
    missing = [c for c in class_names if c not in table.columns]
    if missing:
        raise ValueError(f"label table is missing class columns {missing}; it has {list(table.columns)}")
    raw = table[list(class_names)]
    values = raw.apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & raw.notna()  # a cell that is not a number: an error, not a silent "unknown"
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise ValueError(
            f"label table row {row} (index {table.index[row]!r}), column {class_names[col]!r}: "
            f"{raw.iat[row, col]!r} is not a number ({int(bad.to_numpy().sum())} such cells); use 1, 0 or empty"
        )
    return torch.from_numpy(values.to_numpy(dtype=np.float32, na_value=np.nan).copy())
