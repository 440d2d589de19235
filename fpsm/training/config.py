"""``TrainConfig``: every option of a training run in one dataclass, checked by :meth:`TrainConfig.validate`.

The DADAM options travel as one :class:`dadam.config.DadamConfig` (``dadam=None``: DADAM off). ``to_dict`` /
``from_dict`` turn a config into plain values and back, for ``config.json`` and checkpoints. Each field's
``metadata["group"]`` says which part of ``python -m fpsm.train --help`` lists its flag.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dadam.config import DadamConfig
from dadam.data import BAD_IMAGES, default_num_workers
from fpsm.model import COMBINE_RULES

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DATASET_CODES",
    "GROUPS",
    "LEGACY_VALUES",
    "MURA_CLASSES",
    "RESUME_FREE_FIELDS",
    "SPLITS",
    "TrainConfig",
    "VAL_SPLITS",
]

DATASETS = ("cxr-lt", "mura", "labels-csv")
VAL_SPLITS = ("patient", "official", "none")
"""``val_split``: hold out a share of the training patients, evaluate on the dataset's validation file, or neither."""
DATASET_CODES = ("source", "augmented", "constant")
"""``dataset_code``, the meaning of the binary encoding's input: the source dataset, DADAM-changed or not, or one
constant id per run (``dataset_id``; runs written before the option existed)."""
AUGMENTATIONS = ("none", "light")
"""``aug``: the base augmentation on the device (see :mod:`fpsm.training.base_aug`)."""
LEGACY_VALUES = {"aug": "none", "dataset_code": "constant", "val_split": "official"}
"""What a config dict written before these fields existed stands for (the behaviour of that release)."""
MURA_CLASSES = ("Abnormal",)
SPLITS = {"cxr-lt": ("train", "development"), "mura": ("train", "valid"), "labels-csv": ("train", "val")}
"""Per dataset: the names of its training and its validation split."""
GROUPS = ("data", "model", "optimisation", "DADAM", "run")
"""The groups of the fields (``metadata["group"]``), in the order ``--help`` lists them."""


RESUME_FREE_FIELDS = (
    "out_dir",
    "resume",
    "overwrite",
    "allow_config_change",
    "num_workers",
    "dali_threads",
    "bad_images",
    "device",
    "ckpt_every",
    "stop_after",
    "log_every",
    "progress",
    "tensorboard",
)
"""The fields a resumed run may change freely: where and how it runs and reports, not what it trains."""

# Ranges of the numeric fields. Ints: (low, high or None), both included. Floats: (low, high, low included, high
# included).
_INT_RANGES: dict[str, tuple[int, int | None]] = {
    "canvas": (1, None),
    "num_workers": (0, None),
    "dali_threads": (1, None),
    "batch_size": (1, None),
    "eval_batch_size": (1, None),
    "num_datasets": (1, None),
    "dataset_id": (0, None),
    "warmup_steps": (0, None),
    "epochs": (1, None),
    "max_steps": (1, None),
    "seed": (0, 2**32 - 1),
    "ckpt_every": (1, None),
    "stop_after": (1, None),
    "log_every": (1, None),
}
_FLOAT_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "drop_rate": (0.0, 1.0, True, False),
    "lr": (0.0, math.inf, False, False),
    "weight_decay": (0.0, math.inf, True, False),
    "momentum": (0.0, 1.0, True, False),
    "warmup_factor": (0.0, 1.0, False, True),
    "min_lr": (0.0, math.inf, True, False),
    "grad_clip": (0.0, math.inf, False, False),
    "threshold": (0.0, 1.0, True, True),
    "val_fraction": (0.0, 1.0, False, False),
}
_OPTIONAL = ("eval_batch_size", "max_steps", "stop_after", "grad_clip", "dali_threads")  # None: not set


def _field(group: str, default: Any, text: str, **cli: Any) -> Any:
    """A config field with its command-line group (data, model, optimisation, DADAM or run), its one-line help and
    extra argparse settings (``choices``)."""
    return field(default=default, metadata={"group": group, "help": text, **cli})


@dataclass
class TrainConfig:
    """Everything a training run needs; ``fit(cfg)`` runs it. Field names match the CLI flags (``-`` for ``_``).

    Data:
        dataset: ``"cxr-lt"`` (``root`` holds the MIMIC-CXR-JPG ``files/`` tree; label CSVs ``train.csv`` /
            ``development.csv`` in ``root`` unless ``train_csv``/``val_csv`` say otherwise), ``"mura"`` (``root``
            holds ``MURA-v1.1/`` or is it; one "Abnormal" logit) or ``"labels-csv"`` (label-table CSVs
            ``train_csv``/``val_csv`` with ``image_id``, ``path`` and the 26 class columns).
        val_split: what each epoch is evaluated on: ``"patient"`` holds out ``val_fraction`` of the training
            set's patients (MIMIC ``subject_id``, NIH ``Patient ID`` / ``patient_id``, MURA ``patient``), seeded;
            ``"official"`` the dataset's validation file (``development.csv``, MURA ``valid``, ``val_csv``);
            ``"none"`` nothing. A config written when this was a bool reads ``True`` as ``"official"``.
        canvas: square input side in pixels (the patch bank's canvas when DADAM is on).
        loader: ``"torch"`` (DataLoader workers) or ``"dali"`` (DALI; needs the ``dali`` extra; ``dali_threads``).
        aug: base augmentation of the training batches on the device, after DADAM (``"light"``: small affine,
            brightness and contrast; ``"none"``). See :mod:`fpsm.training.base_aug`.
    Model: ``backbone`` (timm name), ``stages``, ``pretrained``, ``checkpoint_path`` (backbone weights file),
        ``drop_rate``, ``use_concatenate``, ``combine``, ``use_binary_enc`` / ``num_datasets`` / ``dataset_code``
        (``"source"``: one id per source dataset, in ``sources`` order; ``"augmented"``: 1 for the samples DADAM
        changed, 0 for originals and at test time; ``"constant"``: ``dataset_id`` for every image), ``init_from``
        (weights of a previous run, for fine-tuning).
    Optimisation: ``optimizer`` (``"adamw"`` | ``"sgd"``), ``lr``, ``weight_decay``, ``momentum``,
        ``warmup_steps`` (linear from ``warmup_factor * lr``), then cosine to ``min_lr``; ``epochs`` or
        ``max_steps`` (whichever ends first), ``loss`` (``"soft_margin"`` | ``"asl"``), ``grad_clip``.
    DADAM: ``dadam`` (a :class:`dadam.config.DadamConfig`; None: DADAM off), ``bank`` (a saved
        :class:`dadam.PatchBank` at the training canvas).
    Data, continued: ``bad_images`` (``"error"``: an unreadable image file stops the run, naming it; ``"skip"``:
        it is logged, counted in ``bad_images.csv`` and left out of its batch; see :mod:`dadam.data`).
    Run: ``out_dir`` (a folder that holds a run is refused unless ``resume`` or ``overwrite``: ``overwrite``
        deletes that run's files first), ``seed``, ``device``, ``ckpt_every`` (steps), ``resume`` (continue from
        ``checkpoint.pt``; settings other than :data:`RESUME_FREE_FIELDS` must equal the checkpoint's unless
        ``allow_config_change``, which records the changes in ``config_changes.csv``), ``stop_after`` (stop once
        this many global steps are done, as if killed: nothing extra is saved), ``log_every``, ``progress``,
        ``tensorboard``, ``threshold`` (of the reports' F1/precision/recall); speed: ``amp`` (``"auto"``: bf16
        autocast on CUDA, off on CPU; ``"bf16"``; ``"off"``), ``channels_last``, ``compile``.

    Example:
        >>> cfg = TrainConfig(dataset="cxr-lt", root="/data/cxr-lt", dadam=DadamConfig(p=0.5), bank="bank.safetensors")
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True

    A dict written before a field existed gets the value that stands for that release's behaviour
    (:data:`LEGACY_VALUES`), and a ``data_config`` entry (what ``config.json`` records beside the fields) is left out.
    """

    dataset: str = _field(
        "data", "cxr-lt", "cxr-lt (MIMIC-CXR-JPG + CXR-LT CSVs), mura, or labels-csv", choices=DATASETS
    )
    root: str = _field(
        "data", "", "dataset folder: image paths start here, CXR-LT's CSVs are read from it (default: none)"
    )
    train_csv: str | None = _field("data", None, "training label CSV (default: the dataset's own file)")
    val_csv: str | None = _field(
        "data", None, "validation label CSV for --val-split official (default: the dataset's own file)"
    )
    val_split: str = _field(
        "data",
        "patient",
        "evaluate on held-out training patients, the official validation file, or none",
        choices=VAL_SPLITS,
    )
    val_fraction: float = _field("data", 0.2, "share of the training patients held out by --val-split patient")
    out_dir: str = _field("run", "runs/fpsm", "run folder: checkpoints, weights, logs, reports")
    canvas: int = _field("data", 448, "square input side in pixels (the patch bank's canvas with DADAM)")
    loader: str = _field(
        "data", "torch", "input pipeline: torch DataLoader workers or NVIDIA DALI", choices=("torch", "dali")
    )
    num_workers: int = _field(
        "data", default_num_workers(), "decoding workers: this process's CPUs shared among the local ranks, at most 32"
    )
    dali_threads: int | None = _field(
        "data", None, "DALI CPU threads with --loader dali (default: the CPUs shared among the local ranks)"
    )
    batch_size: int = _field("data", 32, "images per step per rank")
    eval_batch_size: int | None = _field("data", None, "images per evaluation batch (default: --batch-size)")
    aug: str = _field(
        "data",
        "light",
        "base augmentation on the device after DADAM: light affine, brightness, contrast; or none",
        choices=AUGMENTATIONS,
    )
    bad_images: str = _field(
        "data",
        "error",
        "an image file that cannot be read: 'error' stops the run, 'skip' logs, counts and leaves it out",
        choices=BAD_IMAGES,
    )
    sources: tuple[str, ...] = _field(
        "data", (), "source names in code order for --dataset-code source (default: the table's one source)"
    )
    # model
    backbone: str = _field("model", "tresnet_l", "timm model name of the backbone (its data config sets mean/std)")
    stages: tuple[int, ...] = _field("model", (2, 3, 4), "pyramid stages with a head: 1..4 = stride 4, 8, 16, 32")
    pretrained: bool = _field("model", False, "load timm's pretrained backbone weights (cache or download)")
    checkpoint_path: str | None = _field("model", None, "local file of the backbone's timm weights (default: none)")
    drop_rate: float = _field("model", 0.0, "dropout before each head")
    use_concatenate: bool = _field("model", False, "one head on the concatenated stage features instead of one each")
    combine: str = _field(
        "model",
        "mean_prob",
        "prediction from the heads: mean of probabilities or sigmoid of summed logits",
        choices=COMBINE_RULES,
    )
    use_binary_enc: bool = _field("model", False, "append a one-hot dataset code to each head's input")
    num_datasets: int = _field("model", 2, "length of the dataset code")
    dataset_code: str = _field(
        "model",
        "source",
        "what the code says: source dataset, DADAM-changed (1) or not (0), or --dataset-id",
        choices=DATASET_CODES,
    )
    dataset_id: int = _field("model", 0, "the code of every image with --dataset-code constant")
    init_from: str | None = _field(
        "model", None, "start from these weights: model_best.pt, model.pt or a checkpoint (default: none)"
    )
    # optimisation
    optimizer: str = _field(
        "optimisation", "adamw", "adamw (fused on CUDA) or sgd (Nesterov)", choices=("adamw", "sgd")
    )
    lr: float = _field("optimisation", 1e-4, "peak learning rate")
    weight_decay: float = _field("optimisation", 1e-4, "weight decay (not on biases and norm weights)")
    momentum: float = _field("optimisation", 0.9, "SGD momentum")
    warmup_steps: int = _field("optimisation", 0, "linear warm-up steps before the cosine decay")
    warmup_factor: float = _field("optimisation", 0.01, "warm-up starts at this fraction of --lr")
    min_lr: float = _field("optimisation", 0.0, "learning rate at the end of the cosine decay")
    epochs: int = _field("optimisation", 10, "epochs (an extend-mode epoch includes its extra DADAM samples)")
    max_steps: int | None = _field(
        "optimisation", None, "stop after this many steps if earlier than --epochs (default: none)"
    )
    loss: str = _field(
        "optimisation",
        "soft_margin",
        "summed per-head loss: MultiLabelSoftMarginLoss or timm's ASL",
        choices=("soft_margin", "asl"),
    )
    grad_clip: float | None = _field(
        "optimisation", None, "clip the global gradient norm to this value (default: no clipping)"
    )
    # speed
    amp: str = _field("run", "auto", "autocast: bf16 on CUDA (auto), bf16, or off", choices=("auto", "bf16", "off"))
    channels_last: bool = _field("run", True, "channels-last model and input")
    compile: bool = _field("run", False, "torch.compile the model")
    # DADAM
    dadam: DadamConfig | None = _field("DADAM", None, "")
    bank: str | None = _field("DADAM", None, "patch bank file (PatchBank.save) at --canvas (default: none)")
    # run
    seed: int = _field("run", 0, "seed of the weights, data order, DADAM and base augmentation")
    device: str = _field("run", "auto", "auto (CUDA when available), cpu or cuda[:i]")
    ckpt_every: int = _field("run", 500, "write checkpoint.pt every this many steps (and at each epoch's end)")
    resume: bool = _field("run", False, "continue the run in --out-dir from its checkpoint.pt")
    overwrite: bool = _field("run", False, "replace the run already in --out-dir (its files are deleted first)")
    allow_config_change: bool = _field(
        "run", False, "let --resume go on with settings that differ from the checkpoint's (they are logged)"
    )
    stop_after: int | None = _field(
        "run", None, "stop after this many steps as if killed, to test resume (default: none)"
    )
    log_every: int = _field("run", 10, "log the loss every this many steps (the only host sync of a step)")
    progress: bool = _field("run", True, "progress bars")
    tensorboard: bool = _field("run", True, "TensorBoard logs in --out-dir/tb")
    threshold: float = _field("run", 0.5, "decision threshold of the reports' F1, precision and recall")

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` (``TypeError`` for a value of the wrong type) naming the first bad field.

        Every numeric field is checked for its type, its range and (floats) finiteness, so ``lr=inf`` or
        ``grad_clip=-1`` fail here, before any file is read.

        Returns:
            ``self``, for chaining.
        """
        for f in dataclasses.fields(self):
            allowed = f.metadata.get("choices")
            if allowed is not None and getattr(self, f.name) not in allowed:
                raise ValueError(f"{f.name} must be one of {list(allowed)}, got {getattr(self, f.name)!r}")
        self._check_numbers()
        self._check_stages()
        if isinstance(self.sources, str) or not all(isinstance(s, str) and s for s in self.sources):
            raise TypeError(f"sources must be a sequence of source names, e.g. ('cxr_lt', 'nih'), got {self.sources!r}")
        if self.use_binary_enc and self.dataset_code == "constant" and not 0 <= self.dataset_id < self.num_datasets:
            raise ValueError(
                f"dataset_id must be in [0, num_datasets={self.num_datasets}) when use_binary_enc=True, "
                f"got {self.dataset_id}"
            )
        if self.use_binary_enc and self.dataset_code == "augmented" and self.num_datasets < 2:
            raise ValueError(
                f"dataset_code='augmented' needs num_datasets >= 2 (codes 0 and 1), got {self.num_datasets}"
            )
        if self.use_binary_enc and self.dataset_code == "source" and len(self.sources) > self.num_datasets:
            raise ValueError(
                f"sources names {len(self.sources)} sources but num_datasets={self.num_datasets}; raise num_datasets"
            )
        if self.val_split == "patient" and self.val_csv:
            raise ValueError(
                f"val_csv={self.val_csv!r} is a validation file, but val_split='patient' holds out training patients: "
                "give val_split='official' (--val-split official) to evaluate on the file, or leave val_csv out"
            )
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr must be <= lr, got min_lr={self.min_lr} and lr={self.lr}")
        if self.loader == "dali" and self.bad_images == "skip":
            raise ValueError(
                "bad_images='skip' needs loader='torch': DALI decodes inside its pipeline and cannot leave a file out"
            )
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
            if self.dadam.mode == "extend" and self.loader == "dali":
                raise ValueError(
                    "dadam.mode='extend' needs loader='torch': its epochs add extra samples, which the DALI reader "
                    "cannot; use --loader torch, or --dadam-mode replace"
                )
        if self.resume and self.init_from:
            raise ValueError("give resume (continue this run) or init_from (new run from weights), not both")
        if self.resume and self.overwrite:
            raise ValueError("give resume (continue the run in out_dir) or overwrite (replace it), not both")
        return self

    def _check_numbers(self) -> None:
        """Type, range and finiteness of every numeric field (None where the field allows it)."""
        for name, (low, high) in _INT_RANGES.items():
            v = getattr(self, name)
            if v is None and name in _OPTIONAL:
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {v!r}")
            if v < low or (high is not None and v > high):
                bound = f">= {low}" if high is None else f"in [{low}, {high}]"
                none = " or None" if name in _OPTIONAL else ""
                raise ValueError(f"{name} must be {bound}{none}, got {v}")
        for name, (low, high, low_in, high_in) in _FLOAT_RANGES.items():
            v = getattr(self, name)
            if v is None and name in _OPTIONAL:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name} must be a number, got {v!r}")
            above = v >= low if low_in else v > low
            below = v <= high if high_in else v < high
            if not (math.isfinite(v) and above and below):  # NaN fails here too
                interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
                none = " or None" if name in _OPTIONAL else ""
                raise ValueError(f"{name} must be a finite number in {interval}{none}, got {v}")

    def _check_stages(self) -> None:
        """``stages``: a non-empty sequence of stage numbers (the model checks which are valid)."""
        if isinstance(self.stages, (int, str)) or not isinstance(self.stages, (tuple, list)) or not self.stages:
            raise TypeError(
                f"stages must be a non-empty sequence of stage numbers 1..4, e.g. (4,) or (2, 3, 4), got "
                f"{self.stages!r}"
            )
        if any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 4 for s in self.stages):
            raise ValueError(f"stages must be stage numbers in 1..4 (stride 4, 8, 16, 32), got {self.stages!r}")

    def resume_changes(self, saved: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """The fields where ``self`` differs from ``saved`` (a checkpoint's config), outside
        :data:`RESUME_FREE_FIELDS`: ``{name: (saved value, new value)}`` as plain values."""
        mine, theirs = self.to_dict(), saved.to_dict()
        return {k: (theirs[k], mine[k]) for k in mine if k not in RESUME_FREE_FIELDS and mine[k] != theirs[k]}

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``config.json`` and checkpoints: ``stages`` as a list, ``dadam`` as
        :meth:`dadam.config.DadamConfig.to_dict` (or None)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["stages"] = list(self.stages)
        values["sources"] = list(self.sources)
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
        values.pop("data_config", None)  # recorded in config.json beside the fields; derived from the backbone
        if isinstance(values.get("val_split"), bool):  # the field was a bool: evaluate on the official split or not
            values["val_split"] = "official" if values["val_split"] else "none"
        for name, legacy in LEGACY_VALUES.items():
            values.setdefault(name, legacy)
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
        for name in ("stages", "sources"):
            if name in values and isinstance(values[name], list):
                values[name] = tuple(values[name])
        return cls(**values)
