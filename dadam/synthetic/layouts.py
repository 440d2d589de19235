"""Phantom datasets in the on-disk layouts of NIH ChestX-ray14, CXR-LT (MIMIC-CXR-JPG), ChestX-Det, VinDr-CXR, MURA.

Each writer plans its images (names, labels, studies), has them drawn and written by :func:`run_jobs`, then writes
the dataset's tables from the boxes the drawing returned, with the real files' headers, spellings and quirks.
:func:`generate` is the entry point.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from dadam.files import atomic_write
from dadam.labels import CHESTX_DET_TO_CXR_LT, CHEXPERT_TO_CXR_LT, CXR_LT_CLASSES, NO_FINDING, class_index
from dadam.synthetic.drawing import check_size
from dadam.synthetic.jobs import ImageJob, JobResult, have_pydicom, run_jobs
from dadam.synthetic.label_sampling import check_min_rate, check_seed, sample_labels
from dadam.synthetic.limbs import MURA_PARTS

__all__ = [
    "CHEXPERT_LABELS",
    "LAYOUTS",
    "NIH_BBOX_HEADER",
    "NIH_BOX_PIXELS",
    "NIH_DATA_ENTRY_HEADER",
    "VINDR_CLASSES",
    "generate",
    "layout_code",
]

LAYOUTS: tuple[str, ...] = ("nih", "cxr-lt", "chestx-det", "vindr", "mura")

#: Draws and writes a writer's images, returns what each one drew (in job order).
DrawImages = Callable[[Sequence[ImageJob]], list[JobResult]]

# CXR-LT class -> NIH ChestX-ray14 label (Data_Entry spelling) and NIH box-list spelling
_NIH_LABELS = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Pleural Effusion": "Effusion",
    "Emphysema": "Emphysema",
    "Fibrosis": "Fibrosis",
    "Hernia": "Hernia",
    "Infiltration": "Infiltration",
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pleural Thickening": "Pleural_Thickening",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}
_NIH_BOX = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Pleural Effusion": "Effusion",
    "Infiltration": "Infiltrate",
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}
NIH_DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
NIH_BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
#: Side of the released NIH PNGs, the pixels ``BBox_List_2017.csv`` counts in (phantom boxes are scaled to it).
NIH_BOX_PIXELS = 1024
# CXR-LT class -> the ChestX-Det name the phantom writes: the inverse of the reader's mapping (each CXR-LT class by its
# own ChestX-Det name, not "Diffuse Nodule"), plus aortic calcification written as ChestX-Det's `Calcification` (which
# the reader then excludes, as it does for the real file).
_CHESTX_DET = {cxr: det for det, cxr in CHESTX_DET_TO_CXR_LT.items() if cxr is not None and det != "Diffuse Nodule"} | {
    "Calcification of the Aorta": "Calcification"
}
VINDR_CLASSES: tuple[str, ...] = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other lesion",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
)
_VINDR = {
    "Tortuous Aorta": "Aortic enlargement",
    "Atelectasis": "Atelectasis",
    "Calcification of the Aorta": "Calcification",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Infiltration": "Infiltration",
    "Lung Opacity": "Lung Opacity",
    "Nodule": "Nodule/Mass",
    "Mass": "Nodule/Mass",
    "Lung Lesion": "Other lesion",
    "Fracture": "Other lesion",
    "Pleural Effusion": "Pleural effusion",
    "Pleural Thickening": "Pleural thickening",
    "Pneumothorax": "Pneumothorax",
    "Fibrosis": "Pulmonary fibrosis",
}
CHEXPERT_LABELS: tuple[str, ...] = tuple(CHEXPERT_TO_CXR_LT)  # the 14 CheXpert columns, in file order


def _mura_table(split: str, kind: str) -> str:
    return f"MURA-v1.1/{split}_{kind}.csv"


# The tables each layout writes beside its images, relative to the dataset root, in the order they are written.
_TABLES: dict[str, tuple[str, ...]] = {
    "nih": ("Data_Entry_2017_v2020.csv", "BBox_List_2017.csv", "train_val_list.txt", "test_list.txt"),
    "cxr-lt": ("train.csv", "development.csv", "mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-chexpert.csv"),
    "chestx-det": ("ChestX_Det_train.json",),
    "vindr": ("train.csv",),
    "mura": tuple(
        _mura_table(split, kind) for split in ("train", "valid") for kind in ("image_paths", "labeled_studies")
    ),
}


def _table_paths(root: pathlib.Path, layout: str) -> list[pathlib.Path]:
    return [root / name for name in _TABLES[layout]]


def layout_code(layout: str) -> int:
    """The number that seeds ``layout``'s images (its position in :data:`LAYOUTS`, from 1)."""
    return LAYOUTS.index(layout) + 1


def _csv_text(rows: Sequence[Sequence], header: str | None) -> str:
    """CSV text with ``\\n`` line ends; ``None`` cells are empty; the header line is written verbatim."""
    bio = io.StringIO()
    if header is not None:
        bio.write(header + "\n")
    writer = csv.writer(bio, lineterminator="\n")
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return bio.getvalue()


def _number(x: float) -> str:
    return repr(float(x))


def _positive(labels_row: np.ndarray, name: str) -> bool:
    return bool(labels_row[class_index(name)] > 0.5)


def _write_nih(root: pathlib.Path, n: int, size: int, seed: int, rng, draw: DrawImages, *, min_rate: float) -> None:
    labels = sample_labels(n, seed=seed, min_rate=min_rate)
    jobs, names = [], []
    patient, follow_up = 0, 0
    for i in range(n):
        if i == 0 or rng.random() < 0.6:
            patient, follow_up = patient + int(rng.integers(1, 4)), 0
        else:
            follow_up += 1
        name = f"{patient:08d}_{follow_up:03d}.png"
        jobs.append(ImageJob(index=i, rel=f"images/{name}", fmt="png", labels=labels[i]))
        names.append((name, patient, follow_up))
    results = draw(jobs)
    entry, bbox, patients = [], [], {}
    for (name, patient, follow_up), y, res in zip(names, labels, results, strict=True):
        found = sorted(_NIH_LABELS[c] for c in CXR_LT_CLASSES if c in _NIH_LABELS and _positive(y, c))
        original_w, original_h = (int(v) for v in rng.choice([[2048, 2500], [2500, 2048], [2992, 2991], [3056, 2544]]))
        spacing = _number(rng.choice([0.143, 0.168, 0.139, 0.171]))
        entry.append(
            [
                name,
                "|".join(found) or "No Finding",
                follow_up,
                patient,
                int(rng.integers(18, 90)),
                "M" if rng.random() < 0.56 else "F",
                "PA" if rng.random() < 0.6 else "AP",
                original_w,
                original_h,
                spacing,
                spacing,
            ]
        )
        patients.setdefault(patient, []).append(name)
        nih_boxes = [b for b in res.boxes if b[0] in _NIH_BOX]
        if nih_boxes and rng.random() < 0.6:  # NIH boxed only a subset of its images
            for cls, x0, y0, x1, y1 in nih_boxes:
                # in the 1024 px of the released images, as the real box list, whatever the phantom's size
                x, y, w, h = (_number(v * NIH_BOX_PIXELS / size) for v in (x0, y0, x1 - x0, y1 - y0))
                bbox.append([name, _NIH_BOX[cls], x, y, w, h])
    entry_csv, bbox_csv, train_list, test_list = _table_paths(root, "nih")
    atomic_write(entry_csv, _csv_text(entry, NIH_DATA_ENTRY_HEADER))
    atomic_write(bbox_csv, _csv_text(bbox, NIH_BBOX_HEADER))
    ids = sorted(patients)
    test = set(p for p in ids if rng.random() < 0.2)
    atomic_write(train_list, "".join(f"{m}\n" for p in ids if p not in test for m in patients[p]))
    atomic_write(test_list, "".join(f"{m}\n" for p in ids if p in test for m in patients[p]))


def _write_cxr_lt(root: pathlib.Path, n: int, size: int, seed: int, rng, draw: DrawImages, *, min_rate: float) -> None:
    """The MIMIC-CXR-JPG ``files/`` tree with CXR-LT's train/development CSVs and MIMIC's metadata and CheXpert CSVs."""
    labels = sample_labels(n, seed=seed, min_rate=min_rate)
    subject_ids = rng.choice(np.arange(10_000_000, 20_000_000, 37), size=max(1, n), replace=False)
    study_ids = rng.choice(np.arange(50_000_000, 60_000_000, 13), size=max(1, n), replace=False)
    jobs, images = [], []
    subject_no, study_no = -1, -1
    study_first = 0
    for i in range(n):
        new_subject = i == 0 or rng.random() < 0.45
        new_study = new_subject or rng.random() < 0.7
        if new_subject:
            subject_no += 1
        if new_study:
            study_no += 1
            study_first = i
        else:
            labels[i] = labels[study_first]  # CXR-LT labels come from the study's report
        subject, study = int(subject_ids[subject_no]), int(study_ids[study_no])
        dicom = "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5))
        rel = f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.jpg"
        view = "PA" if rng.random() < 0.55 else "AP"
        jobs.append(ImageJob(index=i, rel=rel, fmt="jpg", labels=labels[i]))
        images.append((dicom, subject, study, view, rel))
    results = draw(jobs)
    subjects = sorted({m[1] for m in images})
    development = {s for s in subjects if rng.random() < 0.2}
    if len(subjects) > 1 and not development:
        development = {subjects[-1]}
    if len(development) == len(subjects) and len(subjects) > 1:
        development.discard(subjects[0])
    header = ",".join(["dicom_id", "subject_id", "study_id", "ViewPosition", "path", *CXR_LT_CLASSES])
    train_rows, dev_rows, metadata_rows, chexpert = [], [], [], {}
    for (dicom, subject, study, view, rel), y, res in zip(images, labels, results, strict=True):
        row = [dicom, subject, study, view, rel, *(int(v) for v in y)]
        (dev_rows if subject in development else train_rows).append(row)
        date = 21000101 + int(rng.integers(0, 99)) * 10000 + int(rng.integers(0, 12)) * 100 + int(rng.integers(0, 28))
        hh, mm, ss, ms = (int(rng.integers(0, k)) for k in (24, 60, 60, 1000))
        metadata_rows.append(
            [
                dicom,
                subject,
                study,
                "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)",
                view,
                res.height,
                res.width,
                date,
                f"{hh:02d}{mm:02d}{ss:02d}.{ms:03d}",
                "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)",
                "postero-anterior" if view == "PA" else "antero-posterior",
                "Erect" if view == "PA" else "Recumbent",
            ]
        )
        if (subject, study) not in chexpert:
            cells = []
            for c in CHEXPERT_LABELS:
                r = rng.random()
                if _positive(y, c):
                    cells.append(-1.0 if r < 0.12 and c != NO_FINDING else 1.0)  # some positives are uncertain
                else:
                    cells.append(0.0 if r < 0.1 and c != NO_FINDING else None)  # most negatives are blank
            chexpert[(subject, study)] = [subject, study, *cells]
    train_csv, development_csv, metadata_csv, chexpert_csv = _table_paths(root, "cxr-lt")
    atomic_write(train_csv, _csv_text(train_rows, header))
    atomic_write(development_csv, _csv_text(dev_rows, header))
    metadata_header = (
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
        "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
        "PatientOrientationCodeSequence_CodeMeaning"
    )
    atomic_write(metadata_csv, _csv_text(metadata_rows, metadata_header))
    chexpert_header = ",".join(["subject_id", "study_id", *CHEXPERT_LABELS])
    atomic_write(chexpert_csv, _csv_text(list(chexpert.values()), chexpert_header))


def _write_chestx_det(
    root: pathlib.Path, n: int, size: int, seed: int, rng, draw: DrawImages, *, min_rate: float
) -> None:
    labels = sample_labels(n, seed=seed, min_rate=min_rate)
    jobs = [
        ImageJob(index=i, rel=f"train/{36200 + i}.png", fmt="png", labels=labels[i], polygons=True) for i in range(n)
    ]
    results = draw(jobs)
    entries = []
    for job, res in zip(jobs, results, strict=True):
        syms, boxes, polygons = [], [], []
        for (cls, x0, y0, x1, y1), outline in zip(res.boxes, res.polygons, strict=True):
            if cls in _CHESTX_DET:
                syms.append(_CHESTX_DET[cls])
                boxes.append([x0, y0, x1, y1])
                polygons.append([[min(max(x, x0), x1 - 1), min(max(y, y0), y1 - 1)] for x, y in outline])
        entries.append({"file_name": pathlib.Path(job.rel).name, "syms": syms, "boxes": boxes, "polygons": polygons})
    (entries_json,) = _table_paths(root, "chestx-det")
    atomic_write(entries_json, json.dumps(entries))


def _write_vindr(root: pathlib.Path, n: int, size: int, seed: int, rng, draw: DrawImages, *, min_rate: float) -> None:
    """``train/<image_id>.dicom`` at a native size of about twice ``size``, and ``train.csv`` with three raters."""
    labels = sample_labels(n, seed=seed, min_rate=min_rate)
    fmt = "dicom" if have_pydicom() else "png"
    jobs = []
    for i in range(n):
        image_id = "".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=4))
        native = (int(round(size * rng.uniform(1.8, 2.4))), int(round(size * rng.uniform(1.8, 2.4))))
        ext = "dicom" if fmt == "dicom" else "png"
        jobs.append(
            ImageJob(
                index=i,
                rel=f"train/{image_id}.{ext}",
                fmt=fmt,
                labels=labels[i],
                native=native,
                monochrome1=bool(rng.random() < 0.25),
            )
        )
    results = draw(jobs)
    rows = []
    for job, res in zip(jobs, results, strict=True):
        image_id = pathlib.Path(job.rel).stem
        raters = [f"R{int(r)}" for r in rng.choice(np.arange(1, 18), size=3, replace=False)]
        mapped = [(_VINDR[c], x0, y0, x1, y1) for c, x0, y0, x1, y1 in res.boxes if c in _VINDR]
        for rater in raters:
            mine = []
            for cls, x0, y0, x1, y1 in mapped:
                if rng.random() < 0.15:  # this rater missed it
                    continue
                bw, bh = x1 - x0, y1 - y0
                jitter = rng.normal(0, 0.03, size=4) * np.array([bw, bh, bw, bh])
                a0, b0 = np.clip(x0 + jitter[0], 0, res.width - 1), np.clip(y0 + jitter[1], 0, res.height - 1)
                a1, b1 = np.clip(x1 + jitter[2], a0 + 1, res.width), np.clip(y1 + jitter[3], b0 + 1, res.height)
                mine.append(
                    [image_id, cls, VINDR_CLASSES.index(cls), rater, *(round(float(v), 1) for v in (a0, b0, a1, b1))]
                )
            rows.extend(mine or [[image_id, "No finding", 14, rater, None, None, None, None]])
    header = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"
    (train_csv,) = _table_paths(root, "vindr")
    atomic_write(train_csv, _csv_text(rows, header))


def _mura_studies(n: int, rng) -> list[tuple[str, str, int, int, bool, int]]:
    """``(split, part, patient, study_no, positive, n_images)`` of every study, ``n`` images in all, both splits."""
    studies = []
    count, patient = 0, 0
    while count < n:
        part = MURA_PARTS[int(rng.integers(len(MURA_PARTS)))]
        split = "valid" if rng.random() < 0.12 else "train"
        patient += 1
        for k in range(1 if rng.random() < 0.8 else 2):
            m = min(int(rng.integers(1, 5)), n - count)
            if m <= 0:
                break
            studies.append((split, part, patient, k + 1, bool(rng.random() < 0.42), m))
            count += m
    if n >= 2 and len({s[0] for s in studies}) == 1:  # keep both splits present: move images to a new patient
        split, part, last_patient, k, positive, m = studies[-1]
        if len(studies) > 1:  # the whole last study
            studies.pop()
            moved = m
        else:  # one study holds every image: leave it all but one
            studies[-1] = (split, part, last_patient, k, positive, m - 1)
            moved = 1
        studies.append(("valid" if split == "train" else "train", part, patient + 1, 1, positive, moved))
    return studies


def _write_mura(root: pathlib.Path, n: int, size: int, seed: int, rng, draw: DrawImages, *, min_rate: float) -> None:
    studies = _mura_studies(n, rng)
    # number patients per split like MURA (valid patients continue after train's)
    number = {}
    for split, first in (("train", 1), ("valid", 11185)):
        patients = sorted({s[2] for s in studies if s[0] == split})
        number.update({(split != "train", p): first + k for k, p in enumerate(patients)})
    jobs, paths, labelled = [], {"train": [], "valid": []}, {"train": [], "valid": []}
    i = 0
    for split, part, patient, k, positive, m in sorted(studies, key=lambda s: (s[0] != "train", s[1], s[2], s[3])):
        patient_no = number[(split != "train", patient)]
        outcome = "positive" if positive else "negative"
        folder = f"MURA-v1.1/{split}/XR_{part}/patient{patient_no:05d}/study{k}_{outcome}/"
        labelled[split].append([folder, int(positive)])
        for j in range(m):
            rel = f"{folder}image{j + 1}.png"
            jobs.append(ImageJob(index=i, rel=rel, fmt="png", part=part, abnormal=positive))
            paths[split].append([rel])
            i += 1
    draw(jobs)
    for split in ("train", "valid"):
        atomic_write(root / _mura_table(split, "image_paths"), _csv_text(paths[split], None))
        atomic_write(root / _mura_table(split, "labeled_studies"), _csv_text(labelled[split], None))


def _refuse_existing(paths: Sequence[pathlib.Path]) -> None:
    """Raise FileExistsError naming the first of ``paths`` that exists."""
    for path in paths:
        if os.path.lexists(path):
            raise FileExistsError(
                f"{path} exists: the phantom dataset would overwrite it; pass overwrite=True (command line: "
                "--overwrite) to replace an earlier phantom dataset, or choose an empty output folder"
            )


_WRITERS = {
    "nih": _write_nih,
    "cxr-lt": _write_cxr_lt,
    "chestx-det": _write_chestx_det,
    "vindr": _write_vindr,
    "mura": _write_mura,
}


def generate(
    layout: str,
    out: str | os.PathLike,
    *,
    n: int,
    size: int = 512,
    seed: int = 0,
    progress: bool = True,
    workers: int = 0,
    overwrite: bool = False,
    min_rate: float = 0.0,
) -> pathlib.Path:
    """Write a phantom dataset of ``n`` images in a real dataset's on-disk layout.

    Layouts: ``nih`` (``images/*.png``, ``Data_Entry_2017_v2020.csv``, ``BBox_List_2017.csv`` with boxes in the
    1024 x 1024 pixels of the released NIH images, as the real file, whatever ``size``), ``cxr-lt``
    (MIMIC-CXR-JPG ``files/`` tree, ``train.csv``/``development.csv``, metadata and CheXpert CSVs), ``chestx-det``
    (``train/*.png``, ``ChestX_Det_train.json``), ``vindr`` (``train/<image_id>.dicom`` or ``.png`` without pydicom,
    ``train.csv`` with 3 raters) and ``mura`` (``MURA-v1.1/...``). Headers follow the real files byte for byte.

    Args:
        layout: one of :data:`LAYOUTS`.
        out: dataset root to write into (created when missing). Files of other names in it are left alone.
        n: number of images (>= 1).
        size: image side in pixels, 64 to :data:`~dadam.synthetic.drawing.MAX_SIZE` (4096; one image takes up to about
            120 bytes per pixel while it is drawn). VinDr images are then resized to ``size * U(1.8, 2.4)`` per side.
        seed: integer >= 0; the same seed writes the same bytes, whatever ``workers``.
        progress: show a tqdm bar.
        workers: processes; 0 = ``min(2, cpu_count)``.
        overwrite: replace files of the dataset that already exist in ``out`` (an earlier phantom dataset). When
            False, nothing is drawn or written if one exists.
        min_rate: chest layouts: each finding is drawn in at least about this fraction of the images (its CXR-LT rate
            when higher; see :func:`~dadam.synthetic.label_sampling.sample_labels`), in ``[0, 0.25]``; 0 (default)
            keeps the CXR-LT long tail. MURA has no such classes: it needs 0.

    Returns:
        The dataset root (``out``) as a :class:`pathlib.Path`.

    Raises:
        ValueError: a bad ``layout``, ``n``, ``size``, ``seed``, ``workers`` or ``min_rate``.
        FileExistsError: a file the dataset would write exists in ``out`` and ``overwrite`` is False (the error
            names the first one).

    Example:
        >>> import tempfile
        >>> root = generate("mura", tempfile.mkdtemp(), n=3, size=96, progress=False, workers=1)
        >>> (root / "MURA-v1.1" / "train_image_paths.csv").exists()
        True
    """
    if layout not in _WRITERS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    size = check_size(size)
    if not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0 = auto), got {workers!r}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {overwrite!r}")
    check_seed(seed)
    min_rate = check_min_rate(min_rate)
    if layout == "mura" and min_rate != 0:
        raise ValueError(f"min_rate applies to the chest layouts; the mura layout needs min_rate=0, got {min_rate}")
    workers = int(workers) or min(2, os.cpu_count() or 1)
    root = pathlib.Path(out)
    root.mkdir(parents=True, exist_ok=True)
    code = layout_code(layout)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xDA7A, code]))

    def draw(jobs: Sequence[ImageJob]) -> list[JobResult]:
        # every writer plans its images, then draws them before it writes anything: the last moment to refuse
        if not overwrite:
            _refuse_existing([root / job.rel for job in jobs] + _table_paths(root, layout))
        return run_jobs(
            root, jobs, size=size, seed=int(seed), layout=layout, layout_code=code, workers=workers, progress=progress
        )

    _WRITERS[layout](root, int(n), size, int(seed), rng, draw, min_rate=min_rate)
    return root
