"""The data of a training run: a dataset's splits as label tables, and the loaders over them.

:func:`load_split` reads one split of CXR-LT, MURA or a label-table CSV; :func:`read_splits` the training and
validation tables of a :class:`~fpsm.training.config.TrainConfig` (``val_split="patient"``: a seeded 8:2 split of the
training patients, :func:`patient_split`); :func:`dataset_codes` the binary encoding's input per image;
:func:`load_train_data` builds the loaders (an extend-mode epoch: :class:`dadam.extend.ExtendSampler`);
:func:`start_epoch` positions the training sampler (a resumed run starts mid-epoch at the batch its checkpoint
recorded).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dadam.data import LabelDataset, make_loader
from dadam.labels import CXR_LT_CLASSES
from fpsm.training.config import DATASETS, MURA_CLASSES, SPLITS, TrainConfig

__all__ = [
    "PATIENT_COLUMNS",
    "Splits",
    "TrainData",
    "dataset_codes",
    "load_split",
    "load_train_data",
    "make_eval_loader",
    "make_train_loader",
    "patient_split",
    "read_splits",
    "start_epoch",
]

PATIENT_COLUMNS = ("subject_id", "patient_id", "Patient ID", "patient")
"""The columns a label table names its patients in, looked up in this order (MIMIC / CXR-LT, the NIH reader, NIH's
own CSV, MURA)."""


def load_split(
    dataset: str,
    root: str | os.PathLike,
    split: str,
    *,
    csv_path: str | os.PathLike | None = None,
) -> tuple[pd.DataFrame, tuple[str, ...], Path]:
    """Read one split of a dataset as a label table.

    Args:
        dataset: ``"cxr-lt"``, ``"mura"`` or ``"labels-csv"``.
        root: dataset root (image paths in the table are relative to the returned root).
        split: ``"train"``/``"development"`` (CXR-LT), ``"train"``/``"valid"`` (MURA); ignored for labels-csv.
        csv_path: label file to read instead of the split's default file.

    Returns:
        ``(table, class_names, image_root)``; the table has ``image_id``, ``path`` and one column per class
        (MURA: also ``study``, ``body_part``).

    Example:
        >>> table, classes, image_root = load_split("mura", "/data/mura", "valid")  # doctest: +SKIP
    """
    from dadam import formats

    if dataset == "labels-csv" and not root and csv_path is not None:
        root = Path(csv_path).parent  # relative image paths start next to the CSV
    root = Path(root) if root else Path(".")
    if dataset == "cxr-lt":
        path = Path(csv_path) if csv_path else root / f"{split}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"CXR-LT label file {path} not found (dataset='cxr-lt', split={split!r})")
        return formats.read_cxr_lt(path), CXR_LT_CLASSES, root
    if dataset == "mura":
        base = root if (root / f"{split}_image_paths.csv").is_file() else root / "MURA-v1.1"
        images_csv = base / f"{split}_image_paths.csv"
        studies_csv = base / f"{split}_labeled_studies.csv"
        for p in (images_csv, studies_csv):
            if not p.is_file():
                raise FileNotFoundError(f"MURA file {p} not found (root={root}, split={split!r})")
        table = formats.read_mura(images_csv, studies_csv)
        table = table.assign(Abnormal=table["label"].astype(np.float32))
        # MURA paths start with "MURA-v1.1/": they are relative to the folder above it.
        return table, MURA_CLASSES, base.parent
    if dataset == "labels-csv":
        if csv_path is None:
            raise ValueError(f"dataset='labels-csv' needs a csv_path for split {split!r}")
        if not Path(csv_path).is_file():
            raise FileNotFoundError(f"label-table CSV {csv_path} not found (dataset='labels-csv', split={split!r})")
        return pd.read_csv(csv_path), CXR_LT_CLASSES, root
    raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")


def patient_split(
    table: pd.DataFrame, *, fraction: float = 0.2, seed: int = 0, where: str = "training table"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a label table by patient: ``round(fraction * patients)`` patients (at least 1) go to validation, seeded.

    Every image of a patient lands on the same side, so no patient is trained on and evaluated on.

    Args:
        table: a label table with a patient column (:data:`PATIENT_COLUMNS`).
        fraction: share of the patients held out, in ``(0, 1)``.
        seed: seed of the draw (the same seed gives the same split).
        where: the table's name, for errors.

    Returns:
        ``(train, val)``: the rows of each side, in the table's order, with the table's index.

    Raises:
        ValueError: no patient column, or fewer than two patients.

    Example:
        >>> t = pd.DataFrame({"subject_id": [1, 1, 2, 3, 4, 5]})
        >>> train, val = patient_split(t, fraction=0.2, seed=0)
        >>> len(set(train["subject_id"]) & set(val["subject_id"]))
        0
    """
    column = next((c for c in PATIENT_COLUMNS if c in table.columns), None)
    if column is None:
        raise ValueError(
            f"{where} has no patient column (looked for {list(PATIENT_COLUMNS)}; it has {list(table.columns)}): "
            "val_split='patient' cannot split it; add one, or use val_split='official' (--val-split official) with a "
            "validation file, or 'none'"
        )
    patients = pd.unique(table[column].astype(str))
    if len(patients) < 2:
        raise ValueError(f"{where} has {len(patients)} patient(s) in {column!r}: val_split='patient' needs at least 2")
    held = min(len(patients) - 1, max(1, round(fraction * len(patients))))
    order = np.random.default_rng(seed).permutation(len(patients))
    val_patients = set(patients[order[:held]])
    is_val = table[column].astype(str).isin(val_patients).to_numpy()
    return table.loc[~is_val], table.loc[is_val]


def dataset_codes(cfg: TrainConfig, table: pd.DataFrame, *, where: str = "label table") -> int | np.ndarray:
    """The binary encoding's input for each image of ``table`` as the data pipeline gives it.

    ``dataset_code="constant"``: ``dataset_id``; ``"augmented"``: 0 (a training step sets 1 on the samples DADAM
    changes, on the device); ``"source"``: the position of the row's ``source`` in ``cfg.sources``, or 0 for every
    image when ``sources`` is empty and the table has at most one source. 0 when the model has no encoding.

    Raises:
        ValueError: a source that ``cfg.sources`` does not list, or several sources and no ``sources``.
    """
    if not cfg.use_binary_enc or cfg.dataset_code == "augmented":
        return 0
    if cfg.dataset_code == "constant":
        return cfg.dataset_id
    names = table["source"].astype(str) if "source" in table.columns else pd.Series("", index=table.index)
    found = sorted(pd.unique(names))
    if not cfg.sources:
        if len(found) > 1:
            raise ValueError(
                f"{where} holds several sources {found}: give their code order as sources (--sources "
                f"{' '.join(found)}) for dataset_code='source'"
            )
        return 0
    unknown = sorted(set(found) - set(cfg.sources))
    if unknown:
        raise ValueError(f"{where}: source(s) {unknown} are not in sources={list(cfg.sources)}; add them")
    return names.map({name: i for i, name in enumerate(cfg.sources)}).to_numpy(dtype=np.int64)


@dataclass
class Splits:
    """The training and validation tables of a run (``val_table`` None: no evaluation)."""

    table: pd.DataFrame
    classes: tuple[str, ...]
    image_root: Path
    val_table: pd.DataFrame | None = None
    val_root: Path | None = None


def read_splits(cfg: TrainConfig) -> Splits:
    """Read the training table and the validation table ``cfg.val_split`` asks for.

    ``"patient"``: ``val_fraction`` of the training table's patients, held out (:func:`patient_split`, seeded with
    ``cfg.seed``); ``"official"``: the dataset's validation file (``val_csv`` for labels-csv; none given: no
    evaluation); ``"none"``: no evaluation. The tables keep a fresh ``0..n-1`` index.
    """
    train_split, val_split = SPLITS[cfg.dataset]
    table, classes, image_root = load_split(cfg.dataset, cfg.root, train_split, csv_path=cfg.train_csv)
    splits = Splits(table=table.reset_index(drop=True), classes=classes, image_root=image_root)
    if cfg.val_split == "patient":
        train, val = patient_split(table, fraction=cfg.val_fraction, seed=cfg.seed, where=f"{train_split} split")
        splits.table, splits.val_table = train.reset_index(drop=True), val.reset_index(drop=True)
        splits.val_root = image_root
    elif cfg.val_split == "official" and (cfg.dataset != "labels-csv" or cfg.val_csv):
        val, _, splits.val_root = load_split(cfg.dataset, cfg.root, val_split, csv_path=cfg.val_csv)
        splits.val_table = val.reset_index(drop=True)
    return splits


def make_train_loader(
    cfg: TrainConfig,
    table: pd.DataFrame,
    classes: tuple[str, ...],
    image_root: Path,
    *,
    device: torch.device,
    dadam: Any = None,
) -> Any:
    """The training loader: shuffled, resumable, sharded over the ranks (DALI when ``cfg.loader == "dali"``).

    Args:
        cfg: the run's config.
        table: the training table.
        classes: its class columns.
        image_root: where its image paths start.
        device: where the run trains.
        dadam: the run's DADAM module (:class:`dadam.DiseasedAreaAugment`), needed for an extend-mode epoch
            (``cfg.dadam.mode == "extend"``): its tables say which rows the extra samples come from.

    Returns:
        an iterable of ``(images uint8 (B, 1, S, S), labels float (B, C), dataset_ids long (B,))`` with ``len``;
        the torch loader's batches carry ``batch.extra`` (the extend-mode extra samples).
    """
    codes = dataset_codes(cfg, table, where="the training table")
    if cfg.loader == "dali":
        from dadam.dali import DaliLoader

        return DaliLoader(
            table,
            image_root,
            canvas=cfg.canvas,
            batch_size=cfg.batch_size,
            classes=classes,
            dataset_id=codes,
            device="cuda" if device.type == "cuda" else "cpu",
            train=True,
            seed=cfg.seed,
            num_threads=cfg.dali_threads,
            bad_images=cfg.bad_images,
        )
    ds = LabelDataset(
        table, image_root, canvas=cfg.canvas, classes=classes, dataset_id=codes, bad_images=cfg.bad_images
    )
    sampler = None
    if cfg.dadam is not None and cfg.dadam.mode == "extend":
        from dadam.extend import ExtendSampler, extend_pools

        if dadam is None:
            raise ValueError("an extend-mode epoch needs the run's DADAM module (dadam=...) to find its pools")
        n_paste, n_blend = cfg.dadam.extra_counts(len(table))
        paste_pool, blend_pool = extend_pools(ds.labels, dadam.tables)
        sampler = ExtendSampler(
            len(table), paste_pool, blend_pool, n_paste=n_paste, n_blend=n_blend, seed=cfg.seed, drop_last=False
        )
    return make_loader(
        ds, batch_size=cfg.batch_size, train=True, seed=cfg.seed, num_workers=cfg.num_workers, sampler=sampler
    )


def make_eval_loader(
    cfg: TrainConfig, table: pd.DataFrame, classes: tuple[str, ...], image_root: Path
) -> torch.utils.data.DataLoader:
    """An evaluation loader: every image once, in order, sharded over the ranks (``eval_batch_size`` or ``batch_size``);
    dataset codes as at test time (:func:`dataset_codes`)."""
    codes = dataset_codes(cfg, table, where="the validation table")
    ds = LabelDataset(
        table, image_root, canvas=cfg.canvas, classes=classes, dataset_id=codes, bad_images=cfg.bad_images
    )
    bs = cfg.eval_batch_size or cfg.batch_size
    return make_loader(ds, batch_size=bs, train=False, seed=cfg.seed, num_workers=cfg.num_workers)


@dataclass
class TrainData:
    """The tables and loaders of a run (``val_*`` are None without validation)."""

    table: pd.DataFrame
    classes: tuple[str, ...]
    train_loader: Any
    steps_per_epoch: int
    val_table: pd.DataFrame | None = None
    val_loader: torch.utils.data.DataLoader | None = None


def load_train_data(
    cfg: TrainConfig,
    *,
    device: torch.device,
    world_size: int = 1,
    splits: Splits | None = None,
    dadam: Any = None,
) -> TrainData:
    """Read the training (and, per ``cfg.val_split``, the validation) table and build their loaders.

    Args:
        cfg: the run's config.
        device: where the run trains.
        world_size: ranks (for the error message).
        splits: the tables of :func:`read_splits` (default: read here).
        dadam: the run's DADAM module, for an extend-mode epoch (see :func:`make_train_loader`).

    Raises:
        ValueError: the training split holds no full batch per rank.
    """
    splits = read_splits(cfg) if splits is None else splits
    table, classes = splits.table, splits.classes
    train_loader = make_train_loader(cfg, table, classes, splits.image_root, device=device, dadam=dadam)
    data = TrainData(table=table, classes=classes, train_loader=train_loader, steps_per_epoch=len(train_loader))
    if splits.val_table is not None:
        data.val_table = splits.val_table
        data.val_loader = make_eval_loader(cfg, splits.val_table, classes, splits.val_root)
    if data.steps_per_epoch == 0:
        raise ValueError(
            f"the training split has {len(table)} images, fewer than batch_size={cfg.batch_size} x "
            f"{world_size} rank(s): no full batch; lower batch_size"
        )
    return data


def start_epoch(loader: Any, epoch: int, *, start_batch: int, batch_size: int) -> None:
    """Select ``epoch`` of the training sampler and skip its first ``start_batch`` batches (DALI: from the start)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch, start=start_batch * batch_size)
    elif start_batch:
        warnings.warn("the DALI loader resumes at the start of the epoch, not mid-epoch", stacklevel=2)
