"""VinDr-CXR: one box per radiologist and row, optionally fused across radiologists (union or majority)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd
import torch
from scipy.sparse.csgraph import connected_components
from torchvision.ops import box_iou
from tqdm.auto import tqdm

from dadam.formats.boxes import BOX_COLUMNS, box_class_counts, empty_boxes, validate_boxes
from dadam.formats.common import (
    check_dir,
    check_file,
    label_status,
    read_csv_checked,
    text_codec,
    to_float,
)
from dadam.formats.report import ReadReport, attach_report
from dadam.io import image_size as file_image_size
from dadam.labels import NO_FINDING, resolve_mapping

__all__ = ["box_clusters", "fuse_boxes", "read_vindr"]

_VINDR_COLUMNS = ("image_id", "class_name", "rad_id", "x_min", "y_min", "x_max", "y_max")
_VINDR_SUFFIXES = (".dicom", ".dcm", ".png", ".jpg", ".jpeg")


def box_clusters(boxes: torch.Tensor, *, mode: Literal["union", "majority"], iou: float = 0.4) -> np.ndarray:
    """Single-linkage clusters of boxes: two boxes are linked when they overlap (``"union"``: IoU > 0) or when their
    IoU is at least ``iou`` (``"majority"``); clusters are the connected components of that graph.

    Args:
        boxes: ``(n, 4)`` xyxy boxes.
        mode: ``"union"`` or ``"majority"``.
        iou: The link threshold of ``"majority"``.

    Returns:
        ``(n,)`` int cluster ids, numbered in the order of each cluster's first box (box 0 is in cluster 0).

    Shape:
        boxes: (n, 4) -> (n,)

    Example:
        >>> box_clusters(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 15, 15]]), mode="union").tolist()
        [0, 1, 0]
    """
    ious = box_iou(boxes, boxes).numpy()  # (n, n)
    linked = ious > 0.0 if mode == "union" else ious >= iou  # (n, n) symmetric
    _, ids = connected_components(linked, directed=False)
    return ids


def fuse_boxes(df: pd.DataFrame, *, mode: Literal["union", "majority"], iou: float, report: ReadReport) -> pd.DataFrame:
    """Fuse boxes of the same canonical class on the same image (``union`` or ``majority``, see :func:`read_vindr`).

    Args:
        df: A box table.
        mode: ``"union"``: each cluster becomes its enclosing box. ``"majority"``: each cluster drawn by at least 2
            distinct raters becomes the mean of its boxes; the others are dropped.
        iou: The link threshold of ``"majority"`` (:func:`box_clusters`).
        report: Receives ``notes["boxes_before_fusion"]`` and ``notes["clusters_without_majority"]``.

    Returns:
        The fused box table, sorted by image and class; ``rater`` and ``source_label`` list the cluster's raters
        (``"R8,R9"``) and source labels (``"ILD|Pulmonary fibrosis"``).
    """
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
        comp = box_clusters(b, mode=mode, iou=iou)  # (n,)
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
    report.note("boxes_before_fusion", len(df))
    report.note("clusters_without_majority", dropped)
    return out


def read_vindr(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    raters: Literal["all", "union", "majority"] = "all",
    iou: float = 0.4,
    mapping: Mapping[str, str | None] | None = None,
    encoding: str = "utf-8",
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
        encoding: The file's text encoding (UTF-8, with or without a byte-order mark, by default).

    Returns:
        The box table (:mod:`dadam.formats`), ``source="vindr"``; ``df.attrs["report"]`` is a
        :class:`~dadam.formats.ReadReport` (``class_counts`` counts the returned boxes, after fusion).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the header lacks a VinDr column or repeats one, ``raters``/``iou`` is invalid, the file is not
            valid ``encoding`` text, or ``mapping`` has a value that is not a CXR-LT class.

    Example:
        >>> boxes = read_vindr("train.csv", image_root="train", raters="majority")  # doctest: +SKIP
    """
    if raters not in ("all", "union", "majority"):
        raise ValueError(f"raters must be 'all', 'union' or 'majority', got {raters!r}")
    if not (isinstance(iou, (int, float)) and 0.0 < iou <= 1.0):
        raise ValueError(f"iou must be in (0, 1], got {iou!r}")
    text_codec(encoding)  # an unknown encoding fails before the file is read
    p = check_file(path, "VinDr-CXR annotation CSV")
    table = resolve_mapping(mapping, source="vindr")
    raw = read_csv_checked(p, _VINDR_COLUMNS, "VinDr-CXR annotation", encoding=encoding)
    report = ReadReport(path=str(p), source="vindr", rows_read=len(raw))
    if raw.empty:
        return empty_boxes(report)
    ids = raw["image_id"].str.strip()
    canonical, stripped, status = label_status(raw["class_name"].tolist(), table, report, "vindr")
    negative = np.array([c == NO_FINDING for c in canonical])
    report.note("no_finding_rows", int(negative.sum()))
    report.note("no_finding_images", int(ids[negative].nunique()))

    file_name = ids + ".dicom"
    height = np.full(len(raw), np.nan)
    width = np.full(len(raw), np.nan)
    missing = np.zeros(len(raw), dtype=bool)
    if image_root is not None:
        root = check_dir(image_root, "VinDr-CXR image folder (image_root)")
        present = set(os.listdir(root))
        files: dict[str, tuple[str, tuple[int, int]] | None] = {}
        wanted = ids[~negative].unique()
        for i in tqdm(wanted, desc="VinDr image sizes", disable=len(wanted) < 500):
            name = next((i + s for s in _VINDR_SUFFIXES if i + s in present), None)
            files[i] = None if name is None else (name, file_image_size(root / name))
        found = [files.get(i) for i in ids]
        missing = np.array([f is None for f in found]) & ~negative
        file_name = pd.Series(
            [i + ".dicom" if f is None else f[0] for i, f in zip(ids, found, strict=True)], index=raw.index
        )
        height = np.array([np.nan if f is None else f[1][0] for f in found], dtype=np.float64)
        width = np.array([np.nan if f is None else f[1][1] for f in found], dtype=np.float64)
    nums = {c: to_float(raw[c]) for c in ("x_min", "y_min", "x_max", "y_max")}
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
    kept = validate_boxes(df, report, check_raw=["image_id", "source_label", "rater", "x0", "y0", "x1", "y1"])
    if raters != "all" and len(kept):
        kept = fuse_boxes(kept, mode=raters, iou=float(iou), report=report)
    report.class_counts = box_class_counts(kept["label"])
    return attach_report(kept, report)
