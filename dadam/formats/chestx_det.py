"""ChestX-Det and ChestX-Det10: a JSON list of images, each with its findings' boxes (and outlines)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from dadam.formats.boxes import box_class_counts, check_hw, empty_boxes, validate_boxes
from dadam.formats.common import check_file, decoding_errors, label_status, to_float
from dadam.formats.report import ReadReport, attach_report
from dadam.labels import resolve_mapping

__all__ = ["read_chestx_det"]

_EXPECTED = '[{"file_name": ..., "syms": [...], "boxes": [[x1, y1, x2, y2], ...], "polygons": [...]}, ...]'


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
        The box table (:mod:`dadam.formats`), ``source="chestx_det"``, ``rater=""``, plus ``polygon`` (the outline as a
        list of ``[x, y]`` or None). Skip reason ``malformed_entry`` counts entries without ``file_name``/``syms``/
        ``boxes`` or with not as many syms as boxes, ``malformed_box`` boxes that are not 4 values.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the file is not UTF-8 JSON or not a list, or ``mapping`` has a value that is not a CXR-LT
            class.

    Example:
        >>> boxes = read_chestx_det("ChestX_Det_train.json")  # doctest: +SKIP
    """
    image_size = check_hw(image_size)
    p = check_file(path, "ChestX-Det JSON")
    table = resolve_mapping(mapping, source="chestx_det")
    try:
        with decoding_errors(p, "utf-8", keyword=False), open(p, encoding="utf-8-sig") as f:
            entries = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not a JSON file ({e}); expected a ChestX-Det list {_EXPECTED}") from e
    if not isinstance(entries, list):
        raise ValueError(f"{p}: top level is {type(entries).__name__}; expected a ChestX-Det list {_EXPECTED}")
    report = ReadReport(path=str(p), source="chestx_det")
    report.note("entries", len(entries))
    rows: list[tuple] = []
    empty = 0
    for entry in entries:
        if not (isinstance(entry, dict) and {"file_name", "syms", "boxes"} <= entry.keys()):
            report.skip("malformed_entry")
            continue
        syms, boxes = entry["syms"], entry["boxes"]
        if not (isinstance(syms, list) and isinstance(boxes, list) and len(syms) == len(boxes)):
            report.skip("malformed_entry")
            continue
        polygons = entry.get("polygons")
        if not (isinstance(polygons, list) and len(polygons) == len(boxes)):
            polygons = [None] * len(boxes)
        if not boxes:
            empty += 1
        for sym, box, poly in zip(syms, boxes, polygons, strict=True):
            report.rows_read += 1
            if not (isinstance(box, (list, tuple)) and len(box) == 4):
                report.skip("malformed_box")
                continue
            rows.append((str(entry["file_name"]).strip(), str(sym), *box, poly))
    report.note("entries_without_boxes", empty)
    if not rows:
        return empty_boxes(report, extra=("polygon",))
    raw = pd.DataFrame(rows, columns=["image_id", "source_label", "x0", "y0", "x1", "y1", "polygon"])
    canonical, stripped, status = label_status(raw["source_label"].tolist(), table, report, "chestx_det")
    nums = {c: to_float(raw[c].astype(object)) for c in ("x0", "y0", "x1", "y1")}
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
    kept = validate_boxes(df, report, check_raw=["image_id", "source_label", "x0", "y0", "x1", "y1"])
    report.class_counts = box_class_counts(kept["label"])
    return attach_report(kept, report)
