"""Train an FPSM on CXR-LT, MURA or any label CSV, optionally with online DADAM; one GPU, many GPUs or CPU.

Library use: ``fit(TrainConfig(...))``. Command line: ``python -m fpsm.train --help``; many GPUs or machines:
``torchrun --nproc_per_node=8 -m fpsm.train ...`` (DDP, ranks from the environment).

A run directory holds ``checkpoint.pt`` (latest, written atomically every ``ckpt_every`` steps and at every epoch
end), ``model.pt`` (final weights), ``config.json``, ``train_log.csv``, ``eval_log.csv``, ``eval/`` (per-epoch
report CSV + markdown and predictions) and ``tb/`` (TensorBoard). ``resume=True`` continues the run from its
checkpoint with the same model, optimiser, schedule, random states and data order; ``init_from`` starts a new run
from another run's weights only (the paper's DADAM fine-tuning stage).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from dadam.config import DadamConfig, add_dadam_arguments, dadam_config_from_args
from dadam.data import LabelDataset, make_loader, to_model_input
from dadam.labels import CXR_LT_CLASSES
from fpsm.distributed import DistInfo, barrier, cleanup_distributed, gather_objects, init_distributed

__all__ = [
    "DATASETS",
    "FitResult",
    "TrainConfig",
    "build_model",
    "evaluate",
    "fit",
    "load_checkpoint_weights",
    "load_split",
    "main",
    "train_one_epoch",
    "write_report",
]

DATASETS = ("cxr-lt", "mura", "labels-csv")
MURA_CLASSES = ("Abnormal",)
_SPLITS = {"cxr-lt": ("train", "development"), "mura": ("train", "valid"), "labels-csv": ("train", "val")}


@dataclass
class TrainConfig:
    """Everything a training run needs; ``fit(cfg)`` runs it. Field names match the CLI flags (``-`` for ``_``).

    Data:
        dataset: ``"cxr-lt"`` (``root`` holds the MIMIC-CXR-JPG ``files/`` tree; label CSVs ``train.csv`` /
            ``development.csv`` in ``root`` unless ``train_csv``/``val_csv`` say otherwise), ``"mura"`` (``root``
            holds ``MURA-v1.1/`` or is it; one "Abnormal" logit) or ``"labels-csv"`` (label-table CSVs
            ``train_csv``/``val_csv`` with ``image_id``, ``path`` and the 26 class columns).
        val_split: evaluate on the validation split each epoch (``False``: no evaluation).
        canvas: square input side in pixels (the patch bank's canvas when DADAM is on).
        loader: ``"torch"`` (DataLoader workers) or ``"dali"`` (DALI; needs the ``dali`` extra).
    Model: ``backbone`` (timm name), ``stages``, ``pretrained``, ``checkpoint_path`` (backbone weights file),
        ``drop_rate``, ``use_binary_enc`` / ``num_datasets`` / ``dataset_id``, ``init_from`` (weights of a
        previous run, for fine-tuning).
    Optimisation: ``optimizer`` (``"adamw"`` | ``"sgd"``), ``lr``, ``weight_decay``, ``momentum``,
        ``warmup_steps`` (linear from ``warmup_factor * lr``), then cosine to ``min_lr``; ``epochs`` or
        ``max_steps`` (whichever ends first), ``loss`` (``"soft_margin"`` | ``"asl"``), ``grad_clip``.
    Speed: ``amp`` (``"auto"``: bf16 autocast on CUDA, off on CPU; ``"bf16"``; ``"off"``), ``channels_last``,
        ``compile``.
    DADAM: ``dadam`` (a :class:`dadam.DadamConfig`; None: DADAM off), ``bank`` (a saved :class:`dadam.PatchBank`).
    Run: ``out_dir``, ``seed``, ``device``, ``ckpt_every`` (steps), ``resume``, ``stop_after`` (stop once this
        many global steps are done, as if killed: nothing extra is saved), ``log_every``, ``progress``,
        ``tensorboard``.
    """

    dataset: str = "cxr-lt"
    root: str = ""
    train_csv: str | None = None
    val_csv: str | None = None
    val_split: bool = True
    out_dir: str = "runs/fpsm"
    canvas: int = 448
    loader: str = "torch"
    num_workers: int = 4
    batch_size: int = 32
    eval_batch_size: int | None = None
    # model
    backbone: str = "tresnet_l"
    stages: tuple[int, ...] = (2, 3, 4)
    pretrained: bool = False
    checkpoint_path: str | None = None
    drop_rate: float = 0.0
    use_binary_enc: bool = False
    num_datasets: int = 2
    dataset_id: int = 0
    init_from: str | None = None
    # optimisation
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 0
    warmup_factor: float = 0.01
    min_lr: float = 0.0
    epochs: int = 10
    max_steps: int | None = None
    loss: str = "soft_margin"
    grad_clip: float | None = None
    # speed
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False
    # DADAM
    dadam: DadamConfig | None = None
    bank: str | None = None
    # run
    seed: int = 0
    device: str = "auto"
    ckpt_every: int = 500
    resume: bool = False
    stop_after: int | None = None
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True
    threshold: float = 0.5

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field with an invalid value."""
        choices = {
            "dataset": DATASETS,
            "loader": ("torch", "dali"),
            "optimizer": ("adamw", "sgd"),
            "loss": ("soft_margin", "asl"),
            "amp": ("auto", "bf16", "off"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name in ("canvas", "batch_size", "epochs", "ckpt_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "stop_after", "eval_batch_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {v}")
        if self.use_binary_enc and not 0 <= self.dataset_id < self.num_datasets:
            raise ValueError(
                f"dataset_id must be in [0, num_datasets={self.num_datasets}) when use_binary_enc=True, "
                f"got {self.dataset_id}"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.dataset == "labels-csv" and not self.train_csv:
            raise ValueError("dataset='labels-csv' needs train_csv (a label-table CSV)")
        if self.dataset in ("cxr-lt", "mura") and not self.root:
            raise ValueError(f"dataset={self.dataset!r} needs root (the dataset folder)")
        if self.dadam is not None:
            if not isinstance(self.dadam, DadamConfig):
                raise TypeError(
                    f"dadam must be a DadamConfig or None, got {self.dadam!r}; e.g. dadam=DadamConfig(p=0.5)"
                )
            self.dadam.validate()
            if not self.bank:
                raise ValueError("dadam needs bank (a PatchBank saved with PatchBank.save)")
            if self.dataset == "mura":
                raise ValueError("dadam needs the 26 CXR-LT classes; dataset='mura' has one 'Abnormal' label")
        if self.resume and self.init_from:
            raise ValueError("give resume (continue this run) or init_from (new run from weights), not both")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``config.json`` and checkpoints: ``stages`` as a list, ``dadam`` as
        :meth:`dadam.DadamConfig.to_dict` (or None)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["stages"] = list(self.stages)
        values["dadam"] = None if self.dadam is None else self.dadam.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """The config of :meth:`to_dict`'s output (a run's ``config.json`` or a checkpoint's ``"config"``).

        Also reads the flat layout of the DADAM options (``dadam: bool`` beside ``dadam_p``, ``dadam_alpha``, ...).
        Unknown keys raise ``ValueError`` naming them.
        """
        values = dict(values)
        flat = {k.removeprefix("dadam_"): values.pop(k) for k in list(values) if k.startswith("dadam_")}
        dadam = values.get("dadam")
        if isinstance(dadam, bool):
            values["dadam"] = DadamConfig.from_dict(flat) if dadam else None
        elif flat:
            raise ValueError(f"dadam_* keys {sorted(flat)} need dadam=True/False beside them, got dadam={dadam!r}")
        elif isinstance(dadam, Mapping):
            values["dadam"] = DadamConfig.from_dict(dadam)
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        if "stages" in values:
            values["stages"] = tuple(values["stages"])
        return cls(**values)


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained (unwrapped) model and where the run stands."""

    model: nn.Module
    run_dir: Path
    step: int
    epoch: int
    stopped: bool
    metrics: dict[str, float] = field(default_factory=dict)
    weight_hashes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------- data


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


def _make_loader(cfg: TrainConfig, table: pd.DataFrame, classes, image_root: Path, *, train: bool, device):
    bs = cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size)
    if cfg.loader == "dali" and train:
        from dadam.dali import DaliLoader

        return DaliLoader(
            table,
            image_root,
            canvas=cfg.canvas,
            batch_size=bs,
            classes=classes,
            dataset_id=cfg.dataset_id,
            device="cuda" if device.type == "cuda" else "cpu",
            train=True,
            seed=cfg.seed,
            num_threads=max(1, cfg.num_workers),
        )
    ds = LabelDataset(table, image_root, canvas=cfg.canvas, classes=classes, dataset_id=cfg.dataset_id)
    return make_loader(ds, batch_size=bs, train=train, seed=cfg.seed, num_workers=cfg.num_workers)


# ---------------------------------------------------------------------------------------------------------- model


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """``fpsm.create_fpsm`` from the config's model fields."""
    from fpsm import create_fpsm

    return create_fpsm(
        cfg.backbone,
        stages=tuple(cfg.stages),
        num_classes=num_classes,
        use_binary_enc=cfg.use_binary_enc,
        num_datasets=cfg.num_datasets,
        pretrained=cfg.pretrained,
        checkpoint_path=cfg.checkpoint_path,
        drop_rate=cfg.drop_rate,
        in_chans=3,
    )


def load_checkpoint_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Model weights from a training checkpoint (``{"model": ...}``) or a bare state dict (``model.pt``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict or a checkpoint with a 'model' entry, got {type(state)}")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warm = min(cfg.warmup_steps, max(total_steps - 1, 0))
    cosine = CosineAnnealingLR(optimizer, T_max=max(total_steps - warm, 1), eta_min=cfg.min_lr)
    if warm == 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=cfg.warmup_factor, end_factor=1.0, total_iters=warm)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warm])


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ----------------------------------------------------------------------------------------------------- train/eval


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    device: torch.device,
    step: int,
    aug: nn.Module | None = None,
    loss: str = "soft_margin",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    use_dataset_ids: bool = False,
    grad_clip: float | None = None,
    on_step: Callable[[int, torch.Tensor, int], bool] | None = None,
    progress: bool = True,
    desc: str = "train",
    log_every: int = 10,
) -> tuple[int, float]:
    """One pass over ``loader`` (or until ``on_step`` asks to stop).

    Each batch: to device -> DADAM (uint8, on the device) -> :func:`dadam.data.to_model_input` -> forward under
    autocast -> ``fpsm.pyramid_loss`` -> backward -> optimiser and scheduler step.

    Args:
        model: the (possibly DDP-wrapped / compiled) FPSM, in train mode.
        loader: yields ``(images uint8 (B, 1, S, S), labels (B, C), dataset_ids (B,))``.
        optimizer: the optimiser.
        scheduler: per-step LR scheduler.
        device: where the batch goes.
        step: global step count before this epoch.
        aug: a :class:`dadam.DiseasedAreaAugment` or None.
        loss: ``pyramid_loss`` kind.
        amp_dtype: autocast dtype (None: full precision).
        channels_last: feed channels-last input.
        use_dataset_ids: pass ``dataset_ids`` to the model (FPSM built with ``use_binary_enc``).
        grad_clip: clip the global grad norm to this value.
        on_step: ``on_step(step, loss, batch_size) -> stop`` after every optimiser step; ``loss`` is a 0-dim
            tensor on the device (``float(loss)`` waits for the GPU: do it only when logging).
        progress: show a tqdm bar with loss and img/s.
        desc: bar label.
        log_every: read the loss back to the host (bar, non-finite check) only every this many steps, so the
            CPU can queue the next steps while the GPU works.

    Returns:
        ``(step, mean loss)`` after the epoch.
    """
    from fpsm import pyramid_loss

    model.train()
    total, count = torch.zeros((), device=device), 0
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    t0, seen = time.perf_counter(), 0
    for images, labels, dataset_ids in bar:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True).float()
        dataset_ids = dataset_ids.to(device, non_blocking=True)
        if aug is not None:
            images, labels = aug(images, labels)
        x = to_model_input(images, channels_last=channels_last)
        with _autocast(device, amp_dtype):
            out = model(x, dataset_ids if use_dataset_ids else None)
            value = pyramid_loss(out, labels, loss=loss)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        value = value.detach()
        total, count, seen = total + value, count + 1, seen + images.shape[0]
        if step % log_every == 0:  # the only host sync of the step, every log_every steps
            v = float(value)
            if not math.isfinite(v):
                raise FloatingPointError(f"loss is {v} at step {step}; lower lr or check the labels")
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{v:.4f}", img_s=f"{rate:.1f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if on_step is not None and on_step(step, value, images.shape[0]):
            break
    bar.close()
    mean = float(total) / max(count, 1)
    if not math.isfinite(mean):
        raise FloatingPointError(f"mean loss of the epoch is {mean} (step {step}); lower lr or check the labels")
    return step, mean


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    use_dataset_ids: bool = False,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predict every image of an evaluation loader; with DDP, gather all ranks' shards on every rank.

    The loader must use :class:`dadam.data.ShardSampler` (``make_loader(..., train=False)``): rank ``r`` holds
    rows ``r, r + W, r + 2W, ...``, which are put back in dataset order.

    Returns:
        ``(probs, targets)``: float32 ``(N, C)`` on the CPU, in dataset order.
    """
    was_training = model.training
    model.eval()
    probs, targets = [], []
    for images, labels, dataset_ids in tqdm(loader, desc="eval", disable=not progress, leave=False):
        x = to_model_input(images.to(device, non_blocking=True), channels_last=channels_last)
        with _autocast(device, amp_dtype):
            out = model(x, dataset_ids.to(device) if use_dataset_ids else None)
        probs.append(out.probs.float().cpu())
        targets.append(labels.float().cpu())
    model.train(was_training)
    c = loader.dataset.labels.shape[1] if hasattr(loader, "dataset") else (probs[0].shape[1] if probs else 0)
    local_p = torch.cat(probs) if probs else torch.zeros(0, c)
    local_t = torch.cat(targets) if targets else torch.zeros(0, c)
    parts = gather_objects((local_p, local_t))
    if len(parts) == 1:
        return local_p, local_t
    n = sum(p.shape[0] for p, _ in parts)
    world = len(parts)
    all_p, all_t = torch.empty(n, c), torch.empty(n, c)
    for r, (p, t) in enumerate(parts):
        all_p[r::world], all_t[r::world] = p, t
    return all_p, all_t


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(
    probs: torch.Tensor,
    targets: torch.Tensor,
    class_names: Sequence[str],
    out: str | os.PathLike,
    *,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """``fpsm.metrics.multilabel_report`` written as ``<out>.csv`` and ``<out>.md`` (atomically).

    Returns:
        the report DataFrame (per-class rows and the ``mean`` row).
    """
    from fpsm.metrics import multilabel_report, save_report

    report = multilabel_report(probs, targets, list(class_names), threshold=threshold)
    out = Path(out)
    save_report(report, out.with_name(out.name + ".csv"))
    save_report(report, out.with_name(out.name + ".md"))
    return report


def _mean_row(report: pd.DataFrame) -> dict[str, float]:
    """The report's ``mean`` row as ``{metric: value}``."""
    row = report.loc["mean"]
    return {str(k): float(v) for k, v in row.items()}


def write_predictions(probs: torch.Tensor, image_ids: Sequence[str], class_names: Sequence[str], path) -> None:
    """CSV ``image_id`` + one probability column per class, written atomically."""
    df = pd.DataFrame(probs.numpy(), columns=list(class_names))
    df.insert(0, "image_id", list(image_ids))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------- checkpoints


def _rng_state(gen: torch.Generator | None) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "dadam": gen.get_state() if gen is not None else None,
    }


def _set_rng_state(state: dict, gen: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if gen is not None and state.get("dadam") is not None:
        gen.set_state(state["dadam"])


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _CsvLog:
    """Append-only CSV log; on resume, rows past the resumed step are dropped (they are redone)."""

    def __init__(self, path: Path, fields: Sequence[str], *, keep_until: int | None) -> None:
        self.path, self.fields = path, list(fields)
        if keep_until is not None and path.is_file():
            old = pd.read_csv(path)
            _atomic_write_text(path, old[old["step"] <= keep_until].to_csv(index=False))
        elif keep_until is None or not path.is_file():
            _atomic_write_text(path, ",".join(self.fields) + "\n")

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow({k: row.get(k, "") for k in self.fields})


def _sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, as DDP does before each forward."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def _weight_hash(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (names and bytes)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted([*model.named_parameters(), *model.named_buffers()], key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------------------ fit


def fit(cfg: TrainConfig) -> FitResult:
    """Train (and evaluate each epoch) as the config says; see the module docstring for the run directory.

    Works as a single process or under ``torchrun`` (one process per GPU; gloo on CPU). Rank 0 logs and writes
    checkpoints; all ranks return the same weights.

    Returns:
        :class:`FitResult` (model, run dir, global step, epoch, whether ``stop_after`` stopped it, last metrics).

    Example:
        >>> res = fit(TrainConfig(dataset="cxr-lt", root="phantom/cxr-lt", backbone="resnet10t", canvas=64,
        ...                       batch_size=8, epochs=1, num_workers=0, out_dir="runs/tiny"))  # doctest: +SKIP
    """
    cfg.validate()
    info = init_distributed(cfg.device)
    try:
        return _fit(cfg, info)
    finally:
        cleanup_distributed()


def _fit(cfg: TrainConfig, info: DistInfo) -> FitResult:
    device = info.device
    run_dir = Path(cfg.out_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    if info.is_main:
        (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    barrier()
    _seed_everything(cfg.seed)  # same on every rank: identical initial weights (DDP also broadcasts them)

    # ---- data
    train_split, val_split = _SPLITS[cfg.dataset]
    table, classes, image_root = load_split(cfg.dataset, cfg.root, train_split, csv_path=cfg.train_csv)
    train_loader = _make_loader(cfg, table, classes, image_root, train=True, device=device)
    val_loader, val_table = None, None
    if cfg.val_split and (cfg.dataset != "labels-csv" or cfg.val_csv):
        val_table, _, val_root = load_split(cfg.dataset, cfg.root, val_split, csv_path=cfg.val_csv)
        val_loader = _make_loader(cfg, val_table, classes, val_root, train=False, device=device)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training split has {len(table)} images, fewer than batch_size={cfg.batch_size} x "
            f"{info.world_size} rank(s): no full batch; lower batch_size"
        )
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    # ---- model, optimiser, schedule
    core = build_model(cfg, len(classes)).to(device)
    if cfg.channels_last:
        core = core.to(memory_format=torch.channels_last)
    if cfg.init_from:
        weights, own = load_checkpoint_weights(cfg.init_from), core.state_dict()
        missing = [k for k in own if k not in weights]
        unexpected = [k for k in weights if k not in own]
        shape = [
            f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
            for k, v in own.items()
            if k in weights and weights[k].shape != v.shape
        ]
        if missing or unexpected or shape:
            raise ValueError(
                f"init_from={cfg.init_from}: weights do not fit the model ({cfg.backbone}, stages {cfg.stages}, "
                f"{len(classes)} classes): missing {missing[:5]}, unexpected {unexpected[:5]}, shape {shape[:5]}"
            )
        core.load_state_dict(weights)
    optimizer = _optimizer(cfg, core)
    scheduler = _scheduler(cfg, optimizer, total_steps)
    # From here on each rank draws its own random numbers (dropout masks differ between ranks, as in one big batch).
    _seed_everything(cfg.seed + info.rank)

    # ---- DADAM on the device, one generator per rank
    aug, gen = None, None
    if cfg.dadam is not None:
        from dadam import DiseasedAreaAugment, PatchBank
        from dadam.stats import LabelStats

        bank = PatchBank.load(cfg.bank).to(device)
        if bank.canvas != cfg.canvas:
            raise ValueError(f"bank {cfg.bank} has canvas {bank.canvas} but canvas={cfg.canvas}; rebuild the bank")
        stats = LabelStats.from_labels(table).to(device)
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + info.rank)
        aug = DiseasedAreaAugment.from_config(bank, stats, cfg.dadam, generator=gen).to(device)

    # ---- resume
    step, epoch, start_in_epoch = 0, 0, 0
    if cfg.resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if len(state["rng"]) != info.world_size:
            raise ValueError(
                f"{ckpt_path} was written by {len(state['rng'])} rank(s), this run has {info.world_size}; resume "
                "with the same number of processes (or start a new run with init_from)"
            )
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, start_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        _set_rng_state(state["rng"][info.rank], gen)
        if info.is_main:
            print(f"resumed {ckpt_path} at step {step} (epoch {epoch}, batch {start_in_epoch})")
    elif cfg.resume and info.is_main:
        print(f"resume: no checkpoint at {ckpt_path}; starting a new run")

    model: nn.Module = core
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    amp_dtype = _amp_dtype(cfg, device)

    # ---- logs (rank 0)
    main = info.is_main
    resumed = step > 0
    if main:
        _atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2))
    train_log = (
        _CsvLog(
            run_dir / "train_log.csv",
            ["step", "epoch", "loss", "lr", "img_per_s"],
            keep_until=step if resumed else None,
        )
        if main
        else None
    )
    eval_log_path = run_dir / "eval_log.csv"
    if main and not resumed and eval_log_path.exists():
        eval_log_path.unlink()
    writer = None
    if main and cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"), purge_step=step if resumed else None)
        except ImportError:
            warnings.warn("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)", stacklevel=2)

    def save_checkpoint(at_step: int, at_epoch: int, batch_in_epoch: int) -> None:
        rng = gather_objects(_rng_state(gen))
        if main:
            _save_atomic(
                {
                    "model": core.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": at_step,
                    "epoch": at_epoch,
                    "batch_in_epoch": batch_in_epoch,
                    "rng": rng,
                    "config": cfg.to_dict(),
                    "class_names": list(classes),
                },
                ckpt_path,
            )
        barrier()

    metrics: dict[str, float] = {}
    stopped = False
    tick = {"t": time.perf_counter(), "n": 0}
    epoch_start_step = step - start_in_epoch

    def on_step(s: int, loss: torch.Tensor, batch: int) -> bool:
        nonlocal stopped
        tick["n"] += batch * info.world_size
        if main and (s % cfg.log_every == 0 or s == total_steps):
            loss_value = float(loss)  # host sync only on log steps
            dt = max(time.perf_counter() - tick["t"], 1e-9)
            row = {
                "step": s,
                "epoch": epoch,
                "loss": f"{loss_value:.6f}",
                "lr": f"{optimizer.param_groups[0]['lr']:.6e}",
                "img_per_s": f"{tick['n'] / dt:.2f}",
            }
            train_log.write(row)
            if writer is not None:
                writer.add_scalar("train/loss", loss_value, s)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], s)
                writer.add_scalar("train/img_per_s", tick["n"] / dt, s)
            tick["t"], tick["n"] = time.perf_counter(), 0
        if s % cfg.ckpt_every == 0 and s < total_steps and s - epoch_start_step < steps_per_epoch:
            save_checkpoint(s, epoch, s - epoch_start_step)  # an epoch's last batch: saved after its eval
        if cfg.stop_after is not None and s >= cfg.stop_after:
            stopped = True
            return True
        return s >= total_steps

    def run_eval(tag: str) -> None:
        nonlocal metrics
        if val_loader is None:
            return
        _sync_buffers(core)  # every rank predicts its shard with rank 0's BatchNorm statistics
        probs, targets = evaluate(
            model,
            val_loader,
            device=device,
            amp_dtype=amp_dtype,
            channels_last=cfg.channels_last,
            use_dataset_ids=cfg.use_binary_enc,
            progress=cfg.progress and main,
        )
        if main:
            report = write_report(probs, targets, classes, run_dir / "eval" / f"{tag}_report", threshold=cfg.threshold)
            write_predictions(probs, val_table["image_id"].astype(str), classes, run_dir / "eval" / f"{tag}_pred.csv")
            metrics = _mean_row(report)
            new = not eval_log_path.exists()
            with open(eval_log_path, "a", newline="") as f:
                w = csv.DictWriter(f, ["tag", "step", "epoch", *metrics])
                if new:
                    w.writeheader()
                w.writerow({"tag": tag, "step": step, "epoch": epoch, **metrics})
            if writer is not None:
                for k, v in metrics.items():
                    if math.isfinite(v):
                        writer.add_scalar(f"eval/{k}", v, step)
        metrics = gather_objects(metrics)[0]

    # ---- loop
    bar_desc = "ft" if cfg.init_from else "train"
    while step < total_steps and not stopped:
        if start_in_epoch >= steps_per_epoch:  # checkpoint taken at the very end of an epoch
            epoch, start_in_epoch = epoch + 1, 0
            continue
        epoch_start_step = step - start_in_epoch
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch, start=start_in_epoch * cfg.batch_size)
        elif start_in_epoch:
            warnings.warn("the DALI loader resumes at the start of the epoch, not mid-epoch", stacklevel=2)
        step, _ = train_one_epoch(
            model,
            train_loader,
            optimizer,
            scheduler,
            device=device,
            step=step,
            aug=aug,
            loss=cfg.loss,
            amp_dtype=amp_dtype,
            channels_last=cfg.channels_last,
            use_dataset_ids=cfg.use_binary_enc,
            grad_clip=cfg.grad_clip,
            on_step=on_step,
            progress=cfg.progress and main,
            desc=f"{bar_desc} epoch {epoch}",
            log_every=cfg.log_every,
        )
        if stopped:
            break
        finished_epoch = step - epoch_start_step >= steps_per_epoch
        if finished_epoch:
            run_eval(f"epoch{epoch:03d}")
            epoch, start_in_epoch = epoch + 1, 0
            if step < total_steps:
                save_checkpoint(step, epoch, 0)
        elif step < total_steps:  # pragma: no cover - train_one_epoch only returns early at the end or on stop
            start_in_epoch = step - epoch_start_step

    hashes: list[str] = []
    if not stopped:
        if step - epoch_start_step < steps_per_epoch or not metrics:  # ended mid-epoch (max_steps): final eval
            run_eval(f"step{step:07d}")
        _sync_buffers(core)
        save_checkpoint(step, epoch, 0)
        if main:
            _save_atomic(core.state_dict(), run_dir / "model.pt")
        hashes = gather_objects(_weight_hash(core))
        if main:
            final = {"step": step, "epoch": epoch, "metrics": metrics, "rank_weight_hashes": hashes}
            _atomic_write_text(run_dir / "final.json", json.dumps(final, indent=2))
    if writer is not None:
        writer.close()
    barrier()
    return FitResult(
        model=core, run_dir=run_dir, step=step, epoch=epoch, stopped=stopped, metrics=metrics, weight_hashes=hashes
    )


# ------------------------------------------------------------------------------------------------------------ CLI


def _add_config_args(parser: argparse.ArgumentParser, cls=TrainConfig, *, exclude: Sequence[str] = ()) -> None:
    hints = {f.name: f for f in dataclasses.fields(cls) if f.name not in exclude}
    for name, f in hints.items():
        flag = "--" + name.replace("_", "-")
        default = f.default
        if default is dataclasses.MISSING:
            parser.add_argument(flag, type=str, required=True)
            continue
        typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if typ == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif "tuple" in typ:
            parser.add_argument(flag, type=int, nargs="+", default=list(default), metavar="N")
        elif typ.startswith("int"):
            parser.add_argument(flag, type=int, default=default)
        elif typ.startswith("float"):
            parser.add_argument(flag, type=float, default=default)
        else:
            parser.add_argument(flag, type=str, default=default)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fpsm.train``: parse flags into a :class:`TrainConfig` and :func:`fit` it."""
    parser = argparse.ArgumentParser(
        prog="python -m fpsm.train",
        description="Train an FPSM (optionally with DADAM). Many GPUs: torchrun --nproc_per_node=N -m fpsm.train ...",
    )
    _add_config_args(parser, exclude=("dadam",))
    parser.add_argument("--dadam", action="store_true", help="augment the training batches with DADAM (needs --bank)")
    add_dadam_arguments(parser, prefix="dadam-")
    args = parser.parse_args(argv)
    try:
        dadam = dadam_config_from_args(args, prefix="dadam-")
    except ValueError as err:
        parser.error(f"DADAM option {err}")
    if not args.dadam and dadam != DadamConfig():
        flags = ", ".join(f"--dadam-{k.replace('_', '-')}" for k in DadamConfig().changed(dadam))
        parser.error(f"{flags} given without --dadam: add --dadam to train with DADAM")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "dadam"}
    values["stages"] = tuple(values["stages"])
    cfg = TrainConfig(**values, dadam=dadam if args.dadam else None)
    res = fit(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        state = "stopped" if res.stopped else "done"
        print(f"{state}: step {res.step}, run dir {res.run_dir}, metrics {json.dumps(res.metrics)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
