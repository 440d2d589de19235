"""NIH ChestX-ray14: the box list ``BBox_List_2017.csv`` and the label table ``Data_Entry_2017*.csv``."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dadam.formats.boxes import box_class_counts, check_hw, empty_boxes, validate_boxes
from dadam.formats.common import (
    check_dir,
    check_file,
    decoding_errors,
    label_status,
    positive_counts,
    read_csv_checked,
    text_codec,
    to_float,
)
from dadam.formats.report import ReadReport, attach_report
from dadam.io import image_size as file_image_size
from dadam.labels import CXR_LT_CLASSES, resolve_mapping

__all__ = ["read_nih_boxes", "read_nih_labels"]

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


def _read_box_rows(p: os.PathLike, codec: str, report: ReadReport) -> list[list[str]]:
    """The 6-field data rows of a box list (stripped), after checking its header; counts ``malformed_row``."""
    rows: list[list[str]] = []
    with open(p, newline="", encoding=codec) as f:
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
                report.skip("malformed_row")
                continue
            rows.append([c.strip() for c in row])
    return rows


def read_nih_boxes(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    image_size: tuple[int, int] = (1024, 1024),
    mapping: Mapping[str, str | None] | None = None,
    encoding: str = "utf-8",
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
        encoding: The file's text encoding (UTF-8, with or without a byte-order mark, by default).

    Returns:
        The box table (:mod:`dadam.formats`), ``source="nih"``, ``rater=""``; ``df.attrs["report"]`` is a
        :class:`~dadam.formats.ReadReport`. Rows with fewer or more than 6 data fields are skipped as
        ``malformed_row``.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the header is not the box list's, the file is not valid ``encoding`` text, or ``mapping`` has
            a value that is not a CXR-LT class.

    Example:
        >>> boxes = read_nih_boxes("BBox_List_2017.csv", image_root="images")  # doctest: +SKIP
        >>> boxes.attrs["report"].class_counts["Nodule"]  # doctest: +SKIP
        79
    """
    image_size = check_hw(image_size)
    codec = text_codec(encoding)
    p = check_file(path, "NIH box list (BBox_List_2017.csv)")
    table = resolve_mapping(mapping, source="nih")
    report = ReadReport(path=str(p), source="nih")
    with decoding_errors(p, encoding):
        rows = _read_box_rows(p, codec, report)
    if not rows:
        return empty_boxes(report)
    raw = pd.DataFrame(rows, columns=["image_id", "source_label", "x", "y", "w", "h"])
    canonical, stripped, status = label_status(raw["source_label"].tolist(), table, report, "nih")
    nums = {c: to_float(raw[c]) for c in ("x", "y", "w", "h")}
    x, y, w, h = (nums[c][0] for c in ("x", "y", "w", "h"))  # each (N,)
    bad_number = np.logical_or.reduce([nums[c][1] for c in ("x", "y", "w", "h")])
    height = np.full(len(raw), float(image_size[0]))
    width = np.full(len(raw), float(image_size[1]))
    missing = np.zeros(len(raw), dtype=bool)
    if image_root is not None:
        root = check_dir(image_root, "NIH image folder (image_root)")
        sizes: dict[str, tuple[int, int] | None] = {}
        for image_id in tqdm(raw["image_id"].unique(), desc="NIH image sizes", disable=raw["image_id"].nunique() < 500):
            f = root / image_id
            sizes[image_id] = file_image_size(f) if f.is_file() else None
        hw = [sizes[i] for i in raw["image_id"]]
        missing = np.array([s is None for s in hw])
        height = np.array([np.nan if s is None else s[0] for s in hw], dtype=np.float64)
        width = np.array([np.nan if s is None else s[1] for s in hw], dtype=np.float64)
        sy, sx = height / image_size[0], width / image_size[1]
        rescaled = ~missing & ((sy != 1.0) | (sx != 1.0))
        report.note("rescaled_to_file_size", int(rescaled.sum()))
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
    kept = validate_boxes(df, report, check_raw=["image_id", "source_label", "x0", "y0", "x1", "y1"])
    report.class_counts = box_class_counts(kept["label"])
    return attach_report(kept, report)


def read_nih_labels(
    path: str | os.PathLike,
    *,
    mapping: Mapping[str, str | None] | None = None,
    encoding: str = "utf-8",
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
        encoding: The file's text encoding (UTF-8, with or without a byte-order mark, by default).

    Returns:
        The label table: ``image_id`` (file name), ``path`` (``images/<image_id>``), the 26 class columns, ``source``
        ("nih"), and ``patient_id`` (int), ``follow_up`` (int), ``age`` (float), ``sex``, ``view`` ("PA"/"AP").
        Skip reasons: ``missing_label`` (empty ``Finding Labels``), ``duplicate`` (repeated ``Image Index``).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the header lacks a Data_Entry column or repeats one, the file is not valid ``encoding`` text,
            or ``mapping`` has a value that is not a CXR-LT class.

    Example:
        >>> labels = read_nih_labels("Data_Entry_2017_v2020.csv")  # doctest: +SKIP
        >>> labels["Pleural Effusion"].sum()  # doctest: +SKIP
        13317.0
    """
    text_codec(encoding)  # an unknown encoding fails before the file is read
    p = check_file(path, "NIH label table (Data_Entry_2017.csv)")
    table = resolve_mapping(mapping, source="nih")
    raw = read_csv_checked(p, _NIH_LABEL_COLUMNS, "NIH Data_Entry_2017", encoding=encoding)
    report = ReadReport(path=str(p), source="nih", rows_read=len(raw))
    findings = raw["Finding Labels"].str.strip()
    empty = (findings == "").to_numpy()
    report.skip("missing_label", int(empty.sum()))
    raw, findings = raw.loc[~empty], findings.loc[~empty]
    dup = raw["Image Index"].str.strip().duplicated(keep="first").to_numpy()
    report.skip("duplicate", int(dup.sum()))
    raw, findings = raw.loc[~dup].reset_index(drop=True), findings.loc[~dup].reset_index(drop=True)

    annotated = sorted({v for v in table.values() if v is not None}, key=CXR_LT_CLASSES.index)
    values = np.full((len(raw), len(CXR_LT_CLASSES)), np.nan)  # (N, 26)
    values[:, [CXR_LT_CLASSES.index(c) for c in annotated]] = 0.0
    exploded = findings.str.split("|").explode()
    canonical, _, _ = label_status(exploded.tolist(), table, report, "nih")
    for r, c in zip(exploded.index.to_numpy(), canonical, strict=True):
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
    report.class_counts = positive_counts(df)
    return attach_report(df, report)
