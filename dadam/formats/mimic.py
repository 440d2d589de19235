"""MIMIC-CXR-JPG's CheXpert labels (one row per study, or per image with the metadata) and the CXR-LT 2023 tables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

from dadam.formats.common import (
    check_file,
    positive_counts,
    read_csv_checked,
    text_codec,
    to_float,
)
from dadam.formats.report import ReadReport, attach_report
from dadam.labels import CXR_LT_CLASSES, NO_FINDING, resolve_mapping

__all__ = ["read_cxr_lt", "read_mimic"]

_MIMIC_META_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
_CXR_LT_ID_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition", "path")
# Classes that may be positive beside "No Finding": a device is not a finding (the CheXpert labeller's rule).
_NOT_FINDINGS = (NO_FINDING, "Support Devices")


def read_mimic(
    chexpert_csv: str | os.PathLike,
    metadata_csv: str | os.PathLike | None = None,
    *,
    uncertain: Literal["zero", "one", "nan"] = "zero",
    blank: Literal["zero", "nan"] = "zero",
    mapping: Mapping[str, str | None] | None = None,
    encoding: str = "utf-8",
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
        encoding: The text encoding of both files (UTF-8, with or without a byte-order mark, by default).

    Returns:
        The label table with ``subject_id``, ``study_id`` (int) and, with metadata, ``view``; ``source="mimic"``.
        Skip reasons: ``bad_value`` (a label that is not 1, 0, -1 or blank; or a non-integer id), ``duplicate``
        (repeated ``subject_id, study_id``).

    Raises:
        FileNotFoundError: if a file is missing.
        ValueError: if a header lacks an expected column or repeats one, a file is not valid ``encoding`` text, or
            ``uncertain``/``blank`` is not one of the policies.

    Example:
        >>> labels = read_mimic("mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-metadata.csv", uncertain="nan")
        ... # doctest: +SKIP
    """
    policies = {"zero": 0.0, "one": 1.0, "nan": np.nan}
    if uncertain not in policies:
        raise ValueError(f"uncertain must be 'zero', 'one' or 'nan', got {uncertain!r}")
    if blank not in ("zero", "nan"):
        raise ValueError(f"blank must be 'zero' or 'nan', got {blank!r}")
    text_codec(encoding)  # an unknown encoding fails before the file is read
    p = check_file(chexpert_csv, "MIMIC-CXR CheXpert label CSV")
    table = resolve_mapping(mapping, source="chexpert")
    raw = read_csv_checked(p, ("subject_id", "study_id", *table), "MIMIC-CXR CheXpert label", encoding=encoding)
    report = ReadReport(path=str(p), source="mimic", rows_read=len(raw))

    subject = pd.to_numeric(raw["subject_id"], errors="coerce")
    study = pd.to_numeric(raw["study_id"], errors="coerce")
    bad = (subject.isna() | study.isna()).to_numpy()
    label_cols = [c for c in raw.columns if c not in ("subject_id", "study_id")]
    values = np.full((len(raw), len(CXR_LT_CLASSES)), np.nan)
    for col in label_cols:
        num, nonnum = to_float(raw[col])
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
    report.skip("bad_value", int(bad.sum()))
    keys = pd.DataFrame({"subject_id": subject, "study_id": study})
    dup = np.zeros(len(raw), dtype=bool)
    dup[~bad] = keys.loc[~bad].duplicated(keep="first").to_numpy()
    report.skip("duplicate", int(dup.sum()))
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
        m = check_file(metadata_csv, "MIMIC-CXR metadata CSV")
        meta = read_csv_checked(
            m, _MIMIC_META_COLUMNS, "MIMIC-CXR metadata", encoding=encoding, usecols=_MIMIC_META_COLUMNS
        )
        meta = pd.DataFrame(
            {
                "image_id": meta["dicom_id"].str.strip(),
                "subject_id": pd.to_numeric(meta["subject_id"], errors="coerce"),
                "study_id": pd.to_numeric(meta["study_id"], errors="coerce"),
                "view": meta["ViewPosition"].str.strip(),
            }
        )
        bad_meta = meta["subject_id"].isna() | meta["study_id"].isna()
        report.note("metadata_rows_bad_id", int(bad_meta.sum()))
        meta = meta.loc[~bad_meta].astype({"subject_id": "int64", "study_id": "int64"})
        merged = meta.merge(labels, on=["subject_id", "study_id"], how="left", indicator=True)
        no_labels = (merged["_merge"] == "left_only").to_numpy()
        report.note("images_without_labels", int(no_labels.sum()))
        merged = merged.loc[~no_labels].drop(columns="_merge").reset_index(drop=True)
        report.note(
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
    report.class_counts = positive_counts(df)
    return attach_report(df, report)


def read_cxr_lt(path: str | os.PathLike, *, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CXR-LT 2023 ``train.csv`` / ``development.csv`` (with labels) into a label table.

    The file has ``dicom_id, subject_id, study_id, ViewPosition, path`` and then the 26 classes as 0/1 columns (the
    order of :data:`~dadam.labels.CXR_LT_CLASSES`; columns are matched by name). The 2024 edition (40 classes,
    ``Normal`` for ``No Finding``) is a different format and is rejected by the header check.

    Args:
        path: The CSV.
        encoding: The file's text encoding (UTF-8, with or without a byte-order mark, by default).

    Returns:
        The label table: ``image_id`` (= ``dicom_id``), ``path`` (as in the file, relative to the MIMIC-CXR-JPG root),
        the 26 classes (0.0/1.0), ``source="cxr_lt"``, ``subject_id``, ``study_id`` (int), ``view``. Skip reasons:
        ``bad_value`` (a class value other than 0/1, or a non-integer id), ``duplicate`` (repeated ``dicom_id``).
        Kept rows with an odd label set are counted in ``notes``: ``all_zero_rows`` (no class at all, not even
        ``No Finding``) and ``no_finding_with_disease_rows`` (``No Finding`` beside a finding; ``Support Devices`` is
        not a finding).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the header lacks one of the expected columns or repeats one (a class column twice would
            leave one copy unread), or the file is not valid ``encoding`` text.

    Example:
        >>> labels = read_cxr_lt("train.csv")  # doctest: +SKIP
        >>> len(labels)  # doctest: +SKIP
        264849
    """
    text_codec(encoding)  # an unknown encoding fails before the file is read
    p = check_file(path, "CXR-LT label CSV")
    raw = read_csv_checked(
        p,
        (*_CXR_LT_ID_COLUMNS, *CXR_LT_CLASSES),
        "CXR-LT 2023 train/development",
        encoding=encoding,
        dtype={c: str for c in ("dicom_id", "ViewPosition", "path")},
    )
    report = ReadReport(path=str(p), source="cxr_lt", rows_read=len(raw))
    values = np.stack([pd.to_numeric(raw[c], errors="coerce").to_numpy(np.float64) for c in CXR_LT_CLASSES], axis=1)
    subject = pd.to_numeric(raw["subject_id"], errors="coerce")
    study = pd.to_numeric(raw["study_id"], errors="coerce")
    bad = ~np.isin(values, (0.0, 1.0)).all(axis=1) | subject.isna().to_numpy() | study.isna().to_numpy()
    report.skip("bad_value", int(bad.sum()))
    ids = raw["dicom_id"].str.strip()
    dup = np.zeros(len(raw), dtype=bool)
    dup[~bad] = ids[~bad].duplicated(keep="first").to_numpy()
    report.skip("duplicate", int(dup.sum()))
    keep = ~bad & ~dup
    kept = values[keep]  # (K, 26) of 0.0/1.0
    report.note("all_zero_rows", int((kept == 0.0).all(axis=1).sum()))
    findings = [j for j, c in enumerate(CXR_LT_CLASSES) if c not in _NOT_FINDINGS]
    no_finding = kept[:, CXR_LT_CLASSES.index(NO_FINDING)] == 1.0
    report.note("no_finding_with_disease_rows", int((no_finding & (kept[:, findings] == 1.0).any(axis=1)).sum()))
    df = pd.DataFrame({"image_id": ids[keep].to_numpy(), "path": raw["path"].str.strip()[keep].to_numpy()})
    df = pd.concat([df, pd.DataFrame(kept, columns=list(CXR_LT_CLASSES))], axis=1)
    df["source"] = "cxr_lt"
    df["subject_id"] = subject[keep].astype("int64").to_numpy()
    df["study_id"] = study[keep].astype("int64").to_numpy()
    df["view"] = raw["ViewPosition"].str.strip()[keep].to_numpy()
    report.class_counts = positive_counts(df)
    return attach_report(df, report)
