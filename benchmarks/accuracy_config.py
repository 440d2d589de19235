"""What one accuracy experiment runs: :class:`DataOptions`, :class:`AccuracyConfig` and the presets of
:func:`accuracy_preset` (``quick``, ``pilot``, ``cpu``, ``gpu``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from dadam.config import DadamConfig

__all__ = ["ARM_NAMES", "PRESETS", "AccuracyConfig", "DataOptions", "accuracy_preset"]

#: The arms, in the order they are reported (see :mod:`benchmarks.accuracy_arms`).
ARM_NAMES = ("a", "b", "c", "d")
PRESETS = ("quick", "pilot", "cpu", "gpu")
# Bump when the data a DataOptions stands for changes (generator, decoding, bank): the cache keys change with it.
_DATA_FORMAT = 1


@dataclass(frozen=True)
class DataOptions:
    """The phantom data of one experiment; its :meth:`digest` keys the on-disk cache.

    Attributes:
        canvas: side of the square images and of the patch bank, in pixels.
        n_train: phantom CXR-LT training images (the CXR-LT 2023 long tail).
        n_val: validation images (lesions drawn, each finding in at least ``eval_min_rate`` of them).
        n_test: test images (as the validation set, other patients).
        n_nih: phantom NIH ChestX-ray14 images whose boxes feed the patch bank.
        n_chestx_det: phantom ChestX-Det images whose boxes feed the patch bank.
        eval_min_rate: each finding's least rate in the validation and test sets (enough positives for a stable AP).
        bank_min_rate: each finding's least rate among the bank's donor images (so the bank covers the rare classes).
        seed: the data seed; every set is drawn from its own seed derived from it (different phantom patients).
    """

    canvas: int
    n_train: int
    n_val: int
    n_test: int
    n_nih: int
    n_chestx_det: int
    eval_min_rate: float
    bank_min_rate: float
    seed: int = 0

    def validate(self) -> DataOptions:
        """Raise ``ValueError`` naming the first option out of range; returns ``self``."""
        for name in ("canvas", "n_train", "n_val", "n_test", "n_nih", "n_chestx_det"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (64 if name == "canvas" else 1):
                raise ValueError(f"{name} must be an int >= {64 if name == 'canvas' else 1}, got {v!r}")
        for name in ("eval_min_rate", "bank_min_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 0.25:
                raise ValueError(f"{name} must be in [0, 0.25], got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """16 hex digits of the options (and the data format): the name of the cache folder."""
        text = json.dumps({"format": _DATA_FORMAT, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AccuracyConfig:
    """One experiment: data, model, schedule, arms, seeds and statistics.

    Every arm trains ``base_steps`` steps without DADAM (arms a, b and c share that base model per seed; arm d, a
    different model, trains its own), then ``finetune_steps`` steps from it with its own augmentation, a fresh
    optimiser and the same batches. So every arm sees the same steps, data, seeds and budget.

    Attributes:
        preset: the preset it came from (``quick``, ``pilot``, ``cpu``, ``gpu``).
        data: the :class:`DataOptions`.
        backbone: timm model name (no pretrained weights: from scratch).
        batch_size: training batch.
        base_steps / finetune_steps: steps of the two phases.
        base_lr / finetune_lr: AdamW peak learning rates (linear warm-up over ``warmup_frac`` of a phase, then cosine).
        weight_decay: AdamW weight decay.
        warmup_frac: warm-up fraction of each phase.
        seeds: training seeds (model initialisation, batch order, DADAM draws).
        arms: arm names (a subset of :data:`ARM_NAMES`).
        eval_split: ``"test"`` (the experiment) or ``"val"`` (pilots: choices are made on the validation set).
        eval_batch: batch of the evaluation forward passes.
        n_boot: paired bootstrap resamples of the evaluation images.
        dadam: the DADAM options of arms b and c (each arm sets ``companions`` and, for c, the realism options).
        channels_last: ``torch.channels_last`` model and inputs.
        bf16: bfloat16 autocast (CUDA presets).
    """

    preset: str
    data: DataOptions
    backbone: str
    batch_size: int
    base_steps: int
    finetune_steps: int
    base_lr: float
    finetune_lr: float
    weight_decay: float = 1e-4
    warmup_frac: float = 0.05
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = ARM_NAMES
    eval_split: str = "test"
    eval_batch: int = 64
    n_boot: int = 1000
    dadam: DadamConfig = field(
        default_factory=lambda: DadamConfig(p=0.5, max_patches=3, mode="replace")
    )  # every fine-tune batch, online with probability p
    channels_last: bool = True
    bf16: bool = False

    def validate(self) -> AccuracyConfig:
        """Raise ``ValueError`` naming the first option out of range; returns ``self``."""
        self.data.validate()
        self.dadam.validate()
        for name in ("batch_size", "base_steps", "eval_batch", "n_boot"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if isinstance(self.finetune_steps, bool) or not isinstance(self.finetune_steps, int) or self.finetune_steps < 0:
            raise ValueError(f"finetune_steps must be an int >= 0, got {self.finetune_steps!r}")
        for name in ("base_lr", "finetune_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be distinct ints >= 0, at least one, got {self.seeds!r}")
        unknown = [a for a in self.arms if a not in ARM_NAMES]
        if not self.arms or unknown or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms must be distinct names among {ARM_NAMES}, got {self.arms!r}")
        if self.eval_split not in ("test", "val"):
            raise ValueError(f"eval_split must be 'test' or 'val', got {self.eval_split!r}")
        return self

    def replace(self, **changes: Any) -> AccuracyConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the JSON document."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["data"] = self.data.to_dict()
        d["dadam"] = self.dadam.to_dict()
        d["seeds"], d["arms"] = list(self.seeds), list(self.arms)
        return d

    @property
    def total_train_steps(self) -> int:
        """Training steps of the whole experiment: per seed one or two bases, then one fine-tune per arm."""
        bases = len({"d" if a == "d" else "abc" for a in self.arms})
        return len(self.seeds) * (bases * self.base_steps + len(self.arms) * self.finetune_steps)


def accuracy_preset(name: str) -> AccuracyConfig:
    """The configuration of a preset.

    - ``quick``: the test suite's run (64-pixel canvas, a few images and steps; < 60 s on 2 CPU cores). It checks
      the plumbing, not DADAM.
    - ``pilot``: the CPU data and schedule for arm a alone, one seed, evaluated on the validation set (is the tail AP
      below the head AP; what does a step cost).
    - ``cpu``: the experiment on 2 CPU cores in under 45 minutes (resnet10t at 192 px, from scratch).
    - ``gpu``: the paper's model (TResNet-L at 448 px) on one GPU, bf16.

    Example:
        >>> accuracy_preset("quick").data.canvas
        64
    """
    cpu_data = DataOptions(
        canvas=192,
        n_train=3000,
        n_val=500,
        n_test=1500,
        n_nih=400,
        n_chestx_det=400,
        eval_min_rate=0.03,
        bank_min_rate=0.06,
    )
    cpu = AccuracyConfig(
        preset="cpu",
        data=cpu_data,
        backbone="resnet10t",
        batch_size=32,
        base_steps=160,
        finetune_steps=60,
        base_lr=2e-3,
        finetune_lr=5e-4,
    )
    if name == "cpu":
        return cpu.validate()
    if name == "quick":  # the plumbing only: tiny data, a few steps
        data = dataclasses.replace(
            cpu_data, canvas=64, n_train=96, n_val=32, n_test=64, n_nih=24, n_chestx_det=24, eval_min_rate=0.1,
            bank_min_rate=0.2,
        )  # fmt: skip
        return cpu.replace(
            preset=name,
            data=data,
            batch_size=16,
            base_steps=3,
            finetune_steps=2,
            base_lr=1e-3,
            finetune_lr=3e-4,
            eval_batch=64,
            n_boot=200,
        ).validate()
    if name == "pilot":
        return cpu.replace(preset=name, arms=("a",), seeds=(0,), eval_split="val").validate()
    if name == "gpu":  # the paper's model at the paper's size, on more data
        data = dataclasses.replace(
            cpu_data, canvas=448, n_train=20000, n_val=2000, n_test=5000, n_nih=1000, n_chestx_det=1000
        )
        return cpu.replace(
            preset=name,
            data=data,
            backbone="tresnet_l",
            batch_size=64,
            base_steps=1500,
            finetune_steps=300,
            base_lr=1e-3,
            finetune_lr=2e-4,
            eval_batch=128,
            bf16=True,
        ).validate()
    raise ValueError(f"preset must be one of {PRESETS}, got {name!r}")
