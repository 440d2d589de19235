"""The data of a training run: a dataset's splits as label tables, and the loaders over them.

:func:`load_split` reads one split of CXR-LT, MURA or a label-table CSV; :func:`load_train_data` builds the training
and validation loaders of a :class:`~fpsm.training.config.TrainConfig`; :func:`start_epoch` positions the training
sampler (a resumed run starts mid-epoch at the batch its checkpoint recorded).
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

__all__ = ["TrainData", "load_split", "load_train_data", "make_eval_loader", "make_train_loader", "start_epoch"]


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


def make_train_loader(
    cfg: TrainConfig, table: pd.DataFrame, classes: tuple[str, ...], image_root: Path, *, device: torch.device
) -> Any:
    """The training loader: shuffled, resumable, sharded over the ranks (DALI when ``cfg.loader == "dali"``).

    Returns:
        an iterable of ``(images uint8 (B, 1, S, S), labels float (B, C), dataset_ids long (B,))`` with ``len``.
    """
    if cfg.loader == "dali":
        from dadam.dali import DaliLoader

        return DaliLoader(
            table,
            image_root,
            canvas=cfg.canvas,
            batch_size=cfg.batch_size,
            classes=classes,
            dataset_id=cfg.dataset_id,
            device="cuda" if device.type == "cuda" else "cpu",
            train=True,
            seed=cfg.seed,
            num_threads=max(1, cfg.num_workers),
            bad_images=cfg.bad_images,
        )
    ds = LabelDataset(
        table, image_root, canvas=cfg.canvas, classes=classes, dataset_id=cfg.dataset_id, bad_images=cfg.bad_images
    )
    return make_loader(ds, batch_size=cfg.batch_size, train=True, seed=cfg.seed, num_workers=cfg.num_workers)


def make_eval_loader(
    cfg: TrainConfig, table: pd.DataFrame, classes: tuple[str, ...], image_root: Path
) -> torch.utils.data.DataLoader:
    """An evaluation loader: every image once, in order, sharded over the ranks (``eval_batch_size`` or ``batch_size``)."""
    ds = LabelDataset(
        table, image_root, canvas=cfg.canvas, classes=classes, dataset_id=cfg.dataset_id, bad_images=cfg.bad_images
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


def load_train_data(cfg: TrainConfig, *, device: torch.device, world_size: int = 1) -> TrainData:
    """Read the training (and, when ``cfg.val_split``, the validation) split and build their loaders.

    Raises:
        ValueError: the training split holds no full batch per rank.
    """
    train_split, val_split = SPLITS[cfg.dataset]
    table, classes, image_root = load_split(cfg.dataset, cfg.root, train_split, csv_path=cfg.train_csv)
    train_loader = make_train_loader(cfg, table, classes, image_root, device=device)
    data = TrainData(table=table, classes=classes, train_loader=train_loader, steps_per_epoch=len(train_loader))
    if cfg.val_split and (cfg.dataset != "labels-csv" or cfg.val_csv):
        data.val_table, _, val_root = load_split(cfg.dataset, cfg.root, val_split, csv_path=cfg.val_csv)
        data.val_loader = make_eval_loader(cfg, data.val_table, classes, val_root)
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
