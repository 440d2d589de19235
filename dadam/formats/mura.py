"""MURA v1.1 (musculoskeletal radiographs): the header-less image-path and labeled-study lists."""

from __future__ import annotations

import csv
import os
import pathlib
import re

import pandas as pd

from dadam.formats.common import check_file, decoding_errors, text_codec
from dadam.formats.report import ReadReport, attach_report

__all__ = ["read_mura"]

_MURA_IMAGE_RE = re.compile(
    r"^(?P<root>.*?)(?P<split>train|valid)/XR_(?P<body_part>[A-Z]+)/(?P<patient>patient\d+)/"
    r"(?P<study>study\d+_(?P<folder_label>positive|negative))/(?P<image>[^/]+)$"
)
_MURA_STUDY_RE = re.compile(r"^(?P<root>.*?)(train|valid)/XR_[A-Z]+/patient\d+/study\d+_(positive|negative)/$")
_COLUMNS = ["image_id", "path", "split", "body_part", "patient", "study", "label", "source"]


def _read_headerless_csv(
    p: pathlib.Path, encoding: str, ncols: int, example: str, pattern: re.Pattern
) -> list[list[str]]:
    with decoding_errors(p, encoding), open(p, newline="", encoding=text_codec(encoding)) as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if rows and not (len(rows[0]) == ncols and pattern.match(rows[0][0])):
        raise ValueError(
            f"{p}: first line {','.join(rows[0])!r} is not a MURA row; expected a header-less CSV with {ncols} "
            f"column(s), lines like {example!r}"
        )
    return rows


def _study_labels(rows: list[list[str]], report: ReadReport) -> dict[str, int | None]:
    """Study folder -> label (0/1) of the labeled-studies lines, None for a study listed with both labels.

    Counts in ``report.notes``: ``study_rows_bad`` (lines that are not ``folder/,0|1``), ``study_rows_conflicting``
    (every line of a study listed with both labels: no line wins), ``study_rows_duplicate`` (repeats of a line).
    """
    valid: list[tuple[str, int]] = []
    for row in rows:
        if len(row) != 2 or not _MURA_STUDY_RE.match(row[0]) or row[1] not in ("0", "1"):
            report.note("study_rows_bad", 1)
            continue
        valid.append((row[0], int(row[1])))
    labels: dict[str, set[int]] = {}
    for study, label in valid:
        labels.setdefault(study, set()).add(label)
    conflicting = {study for study, seen in labels.items() if len(seen) > 1}
    n_conflicting = sum(study in conflicting for study, _ in valid)
    report.note("study_rows_conflicting", n_conflicting)
    report.note("study_rows_duplicate", len(valid) - n_conflicting - (len(labels) - len(conflicting)))
    return {study: None if study in conflicting else next(iter(seen)) for study, seen in labels.items()}


def read_mura(
    image_paths_csv: str | os.PathLike, labeled_studies_csv: str | os.PathLike, *, encoding: str = "utf-8"
) -> pd.DataFrame:
    """Read MURA v1.1's header-less ``*_image_paths.csv`` and ``*_labeled_studies.csv`` into an image table.

    Args:
        image_paths_csv: One image path per line (``MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/
            image1.png``).
        labeled_studies_csv: ``<study folder>/,<0 or 1>`` per line (1 = abnormal).
        encoding: The text encoding of both files (UTF-8, with or without a byte-order mark, by default).

    Returns:
        One row per image: ``image_id`` (= ``path``, the only unique name: MURA's files are called ``image1.png``...),
        ``path`` (as in the file), ``split`` ("train"/"valid"), ``body_part`` ("ELBOW", "FINGER", "FOREARM", "HAND",
        "HUMERUS", "SHOULDER", "WRIST"), ``patient`` ("patient00001"), ``study`` ("study1_positive"), ``label`` (int
        0/1, from the labeled-studies file), ``source="mura"``. ``class_counts`` = ``{"abnormal": n, "normal": n}``.
        Skip reasons: ``bad_path`` (not a MURA image path), ``missing_study`` (the study is not in the labeled-studies
        file), ``conflicting_label`` (the labeled-studies file lists the study as both 0 and 1), ``duplicate``.
        Notes: ``study_rows_bad`` (labeled-studies lines that are not ``folder/,0|1``), ``study_rows_conflicting``
        (labeled-studies lines of a study listed with both labels, all of them: no line wins),
        ``study_rows_duplicate`` (a labeled-studies line repeated), ``label_disagrees_with_folder`` (label vs. the
        ``_positive``/``_negative`` folder name), ``images_<BODY_PART>``.

    Raises:
        FileNotFoundError: if a file is missing.
        ValueError: if a file's first line is not a MURA row (e.g. a header line or the files swapped), or a file is
            not valid ``encoding`` text.

    Example:
        >>> mura = read_mura("MURA-v1.1/train_image_paths.csv", "MURA-v1.1/train_labeled_studies.csv")  # doctest: +SKIP
    """
    text_codec(encoding)  # a bad encoding argument fails before any file is read
    p = check_file(image_paths_csv, "MURA image paths CSV")
    s = check_file(labeled_studies_csv, "MURA labeled studies CSV")
    images = _read_headerless_csv(
        p, encoding, 1, "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png", _MURA_IMAGE_RE
    )
    studies_rows = _read_headerless_csv(
        s, encoding, 2, "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/,1", _MURA_STUDY_RE
    )
    report = ReadReport(path=str(p), source="mura", rows_read=len(images))
    studies = _study_labels(studies_rows, report)
    out: list[dict] = []
    seen: set[str] = set()
    for row in images:
        m = _MURA_IMAGE_RE.match(row[0]) if len(row) == 1 else None
        if m is None:
            report.skip("bad_path")
            continue
        path = row[0]
        study_key = path[: path.rfind("/") + 1]
        if study_key not in studies:
            report.skip("missing_study")
            continue
        if studies[study_key] is None:
            report.skip("conflicting_label")
            continue
        if path in seen:
            report.skip("duplicate")
            continue
        seen.add(path)
        label = studies[study_key]
        report.note("label_disagrees_with_folder", int(label != (m["folder_label"] == "positive")))
        report.note(f"images_{m['body_part']}", 1)
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
    df = pd.DataFrame(out, columns=_COLUMNS).astype({"label": "int64"})
    report.class_counts = {
        k: v for k, v in (("abnormal", int((df["label"] == 1).sum())), ("normal", int((df["label"] == 0).sum()))) if v
    }
    return attach_report(df, report)
