"""``TrainConfig``: every option of a training run in one dataclass, checked by :meth:`TrainConfig.validate`.

The DADAM options travel as one :class:`dadam.config.DadamConfig` (``dadam=None``: DADAM off). ``to_dict`` /
``from_dict`` turn a config into plain values and back, for ``config.json`` and checkpoints. Each field's
``metadata["group"]`` says which part of ``python -m fpsm.train --help`` lists its flag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dadam.config import DadamConfig

__all__ = ["DATASETS", "GROUPS", "MURA_CLASSES", "SPLITS", "TrainConfig"]

DATASETS = ("cxr-lt", "mura", "labels-csv")
MURA_CLASSES = ("Abnormal",)
SPLITS = {"cxr-lt": ("train", "development"), "mura": ("train", "valid"), "labels-csv": ("train", "val")}
"""Per dataset: the names of its training and its validation split."""
GROUPS = ("data", "model", "optimisation", "DADAM", "run")
"""The groups of the fields (``metadata["group"]``), in the order ``--help`` lists them."""


def _field(group: str, default: Any) -> Any:
    """A config field with the name of its command-line group (data, model, optimisation, DADAM or run)."""
    return field(default=default, metadata={"group": group})


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
    DADAM: ``dadam`` (a :class:`dadam.config.DadamConfig`; None: DADAM off), ``bank`` (a saved
        :class:`dadam.PatchBank` at the training canvas).
    Run: ``out_dir``, ``seed``, ``device``, ``ckpt_every`` (steps), ``resume``, ``stop_after`` (stop once this
        many global steps are done, as if killed: nothing extra is saved), ``log_every``, ``progress``,
        ``tensorboard``, ``threshold`` (of the reports' F1/precision/recall); speed: ``amp`` (``"auto"``: bf16
        autocast on CUDA, off on CPU; ``"bf16"``; ``"off"``), ``channels_last``, ``compile``.

    Example:
        >>> cfg = TrainConfig(dataset="cxr-lt", root="/data/cxr-lt", dadam=DadamConfig(p=0.5), bank="bank.safetensors")
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    dataset: str = _field("data", "cxr-lt")
    root: str = _field("data", "")
    train_csv: str | None = _field("data", None)
    val_csv: str | None = _field("data", None)
    val_split: bool = _field("data", True)
    out_dir: str = _field("run", "runs/fpsm")
    canvas: int = _field("data", 448)
    loader: str = _field("data", "torch")
    num_workers: int = _field("data", 4)
    batch_size: int = _field("data", 32)
    eval_batch_size: int | None = _field("data", None)
    # model
    backbone: str = _field("model", "tresnet_l")
    stages: tuple[int, ...] = _field("model", (2, 3, 4))
    pretrained: bool = _field("model", False)
    checkpoint_path: str | None = _field("model", None)
    drop_rate: float = _field("model", 0.0)
    use_binary_enc: bool = _field("model", False)
    num_datasets: int = _field("model", 2)
    dataset_id: int = _field("model", 0)
    init_from: str | None = _field("model", None)
    # optimisation
    optimizer: str = _field("optimisation", "adamw")
    lr: float = _field("optimisation", 1e-4)
    weight_decay: float = _field("optimisation", 1e-4)
    momentum: float = _field("optimisation", 0.9)
    warmup_steps: int = _field("optimisation", 0)
    warmup_factor: float = _field("optimisation", 0.01)
    min_lr: float = _field("optimisation", 0.0)
    epochs: int = _field("optimisation", 10)
    max_steps: int | None = _field("optimisation", None)
    loss: str = _field("optimisation", "soft_margin")
    grad_clip: float | None = _field("optimisation", None)
    # speed
    amp: str = _field("run", "auto")
    channels_last: bool = _field("run", True)
    compile: bool = _field("run", False)
    # DADAM
    dadam: DadamConfig | None = _field("DADAM", None)
    bank: str | None = _field("DADAM", None)
    # run
    seed: int = _field("run", 0)
    device: str = _field("run", "auto")
    ckpt_every: int = _field("run", 500)
    resume: bool = _field("run", False)
    stop_after: int | None = _field("run", None)
    log_every: int = _field("run", 10)
    progress: bool = _field("run", True)
    tensorboard: bool = _field("run", True)
    threshold: float = _field("run", 0.5)

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` (``TypeError`` for a ``dadam`` that is no DadamConfig) naming the first bad field.

        Returns:
            ``self``, for chaining.
        """
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
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``config.json`` and checkpoints: ``stages`` as a list, ``dadam`` as
        :meth:`dadam.config.DadamConfig.to_dict` (or None)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["stages"] = list(self.stages)
        values["dadam"] = None if self.dadam is None else self.dadam.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """The config of :meth:`to_dict`'s output (a run's ``config.json`` or a checkpoint's ``"config"``).

        Also reads the flat layout of the DADAM options (``dadam: bool`` beside ``dadam_p``, ``dadam_alpha``, ...).

        Raises:
            ValueError: naming unknown keys.
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
