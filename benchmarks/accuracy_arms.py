"""The arms of the accuracy experiment and how each is trained.

| arm | model | DADAM in the fine-tune |
| --- | --- | --- |
| a | FPSM, stages 4+3+2 | none |
| b | FPSM, stages 4+3+2 | ``companions="correlation"``, hard paste (the paper) |
| c | FPSM, stages 4+3+2 | ``companions="cooccurrence"`` with the realism options of :data:`REALISM` |
| d | FPSM, stage 4 only | none |

Protocol, per seed: a base model trains ``base_steps`` without DADAM; arms a, b and c fine-tune copies of that one
base for ``finetune_steps`` with the same batches (the paper's second stage), arm d trains and fine-tunes its own
stage-4 model on the same batches. So b - a and c - a differ only in the fine-tune's augmentation, and a - d only in
the heads. Each arm's predictions on the evaluation set are kept for the statistics.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import timm
import torch
from safetensors.torch import load_file, save

import fpsm
from benchmarks.accuracy_config import AccuracyConfig
from benchmarks.accuracy_data import PhantomData
from benchmarks.accuracy_train import Phase, predict, train_phase
from dadam import DadamConfig, DiseasedAreaAugment, LabelStats
from dadam.files import atomic_write

__all__ = [
    "ARMS",
    "REALISM",
    "Arm",
    "RunRecord",
    "arm_dadam_config",
    "probe_seconds",
    "realism_options",
    "realism_supported",
    "run_arms",
]

#: The realism options of arm c at a 448-pixel canvas (``feather`` scales with the canvas). The one place to change
#: them; they apply only where :class:`~dadam.DadamConfig` has these fields (:func:`realism_supported`).
REALISM: dict[str, object] = {"feather": 8, "match": "meanstd"}


@dataclass(frozen=True)
class Arm:
    """One arm: the FPSM stages and the DADAM companion rule of its fine-tune (None: no DADAM)."""

    name: str
    stages: tuple[int, ...]
    companions: str | None
    realism: bool
    label: str
    short: str


ARMS: dict[str, Arm] = {
    "a": Arm("a", (2, 3, 4), None, False, "FPSM 4+3+2", "4+3+2"),
    "b": Arm("b", (2, 3, 4), "correlation", False, "FPSM 4+3+2 + DADAM correlation, hard paste", "4+3+2\nDADAM corr."),
    "c": Arm(
        "c",
        (2, 3, 4),
        "cooccurrence",
        True,
        "FPSM 4+3+2 + DADAM co-occurrence, feather + match",
        "4+3+2\nDADAM co-occ.",
    ),
    "d": Arm("d", (4,), None, False, "FPSM stage 4", "stage 4"),
}


@dataclass
class RunRecord:
    """One trained arm and seed: its evaluation probabilities ``(N, 26)`` and its seconds (shared base included)."""

    arm: str
    seed: int
    probs: torch.Tensor
    train_s: float
    eval_s: float


def realism_supported() -> bool:
    """Whether :class:`~dadam.DadamConfig` has every option of :data:`REALISM`."""
    return set(REALISM) <= {f.name for f in dataclasses.fields(DadamConfig)}


def realism_options(canvas: int) -> dict[str, object]:
    """:data:`REALISM` at ``canvas``: ``feather`` is pixels, scaled from 448 (at least 1)."""
    return {**REALISM, "feather": max(1, round(int(REALISM["feather"]) * canvas / 448))}


def arm_dadam_config(arm: Arm, base: DadamConfig, canvas: int) -> tuple[DadamConfig | None, dict]:
    """The DADAM options of ``arm``'s fine-tune (None: no DADAM) and a record of the realism options.

    The record is ``{}`` for an arm without realism, else ``{"applied": bool, "options": {...}}`` plus ``"reason"``
    when they could not be applied (the arm then runs the hard paste, and the JSON says so).
    """
    if arm.companions is None:
        return None, {}
    config = base.replace(companions=arm.companions)
    if not arm.realism:
        return config.validate(), {}
    wanted = realism_options(canvas)
    if realism_supported():
        return config.replace(**wanted).validate(), {"applied": True, "options": wanted}
    missing = sorted(set(REALISM) - {f.name for f in dataclasses.fields(DadamConfig)})
    reason = f"DadamConfig has no {missing}: arm {arm.name} runs the hard paste"
    return config.validate(), {"applied": False, "options": wanted, "reason": reason}


def _data_config(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = timm.data.resolve_data_config(model=model)
    return tuple(cfg["mean"]), tuple(cfg["std"])


def _new_model(cfg: AccuracyConfig, stages: tuple[int, ...], seed: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(seed)  # the same backbone initialisation for every arm of a seed
    model = fpsm.create_fpsm(cfg.backbone, stages=stages, pretrained=False).to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def _phase(cfg: AccuracyConfig, seed: int, *, finetune: bool) -> Phase:
    return Phase(
        steps=cfg.finetune_steps if finetune else cfg.base_steps,
        batch_size=cfg.batch_size,
        lr=cfg.finetune_lr if finetune else cfg.base_lr,
        weight_decay=cfg.weight_decay,
        warmup_frac=cfg.warmup_frac,
        seed=seed * 1000 + (2 if finetune else 1),
    )


def run_arms(
    cfg: AccuracyConfig,
    data: PhantomData,
    *,
    device: torch.device | str = "cpu",
    runs_dir: pathlib.Path | None = None,
    on_step: Callable[[int], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> list[RunRecord]:
    """Train every arm of ``cfg`` for every seed and predict the evaluation split.

    Args:
        cfg: the experiment.
        data: the phantom data (its bank and training labels build each arm's DADAM).
        device: the training device (the images move there once).
        runs_dir: when given, each base model and each arm's predictions are stored there and found again by a later
            call (a run that stopped resumes where it was).
        on_step: called with a number of training steps done (1 after each step; a phase's steps at once when a stored
            result makes it unnecessary), e.g. a progress bar's ``update``.
        on_status: called with a short description of what starts (``"seed 0: base 4+3+2"``).

    Returns:
        one :class:`RunRecord` per seed and arm, seeds outer, arms in ``cfg.arms`` order.
    """
    run = _Run(cfg, data, torch.device(device), runs_dir, on_step or (lambda _: None), on_status or (lambda _: None))
    groups: dict[tuple[int, ...], list[Arm]] = {}  # arms that share a base model
    for name in cfg.arms:
        groups.setdefault(ARMS[name].stages, []).append(ARMS[name])
    records: dict[tuple[str, int], RunRecord] = {}
    for seed in cfg.seeds:
        for stages, arms in groups.items():
            stored = {a.name: _load_record(runs_dir, a.name, seed) for a in arms}
            todo = [a for a in arms if stored[a.name] is None]
            records.update({(name, seed): r for name, r in stored.items() if r is not None})
            run.advance((len(arms) - len(todo)) * cfg.finetune_steps + (0 if todo else cfg.base_steps))
            if not todo:
                continue
            base, base_s = run.base(stages, seed)
            for arm in todo:
                records[(arm.name, seed)] = run.finetune_and_predict(arm, base, base_s, seed)
    return [records[(a, s)] for s in cfg.seeds for a in cfg.arms]


class _Run:
    """What every phase of :func:`run_arms` shares: the device-resident data, the DADAM statistics, the callbacks."""

    def __init__(self, cfg, data, device, runs_dir, advance, say) -> None:
        self.cfg, self.device, self.runs_dir, self.advance, self.say = cfg, device, runs_dir, advance, say
        self.canvas = data.bank.canvas
        self.bank = data.bank.to(device)
        self.stats = LabelStats.from_labels(data.train.labels)
        self.train_images, self.train_labels = data.train.images.to(device), data.train.labels.to(device)
        self.eval_images = data.split("val" if cfg.eval_split == "val" else "test").images.to(device)
        self.common = dict(device=device, channels_last=cfg.channels_last, bf16=cfg.bf16)

    def _train(self, model, phase: Phase, aug=None) -> float:
        mean, std = _data_config(model)
        return train_phase(model, self.train_images, self.train_labels, phase, mean=mean, std=std, aug=aug,
                           on_step=lambda: self.advance(1), **self.common)  # fmt: skip

    def base(self, stages: tuple[int, ...], seed: int) -> tuple[torch.nn.Module, float]:
        """The base model of ``stages`` for ``seed`` (stored in ``runs_dir`` after training) and its seconds."""
        tag = "".join(str(s) for s in sorted(stages, reverse=True))
        model = _new_model(self.cfg, stages, seed, self.device)
        path = None if self.runs_dir is None else self.runs_dir / f"base_{tag}_s{seed}.safetensors"
        if path is not None and path.is_file():
            model.load_state_dict(load_file(path, device=str(self.device)))
            self.advance(self.cfg.base_steps)
            return model, json.loads(path.with_suffix(".json").read_text())["train_s"]
        self.say(f"seed {seed}: base {'+'.join(tag)}")
        seconds = self._train(model, _phase(self.cfg, seed, finetune=False))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path.with_suffix(".json"), json.dumps({"train_s": seconds}))
            atomic_write(path, save({k: v.contiguous() for k, v in model.state_dict().items()}))
        return model, seconds

    def finetune_and_predict(self, arm: Arm, base: torch.nn.Module, base_s: float, seed: int) -> RunRecord:
        """Fine-tune a copy of ``base`` with ``arm``'s augmentation, predict the evaluation images, store the record."""
        self.say(f"seed {seed}: arm {arm.name}")
        model = copy.deepcopy(base)
        dadam_config, _ = arm_dadam_config(arm, self.cfg.dadam, self.canvas)
        aug = None
        if dadam_config is not None:
            aug = DiseasedAreaAugment.from_config(self.bank, self.stats, dadam_config, generator=seed).to(self.device)
        phase = _phase(self.cfg, seed, finetune=True)
        train_s = base_s + (self._train(model, phase, aug) if phase.steps else 0.0)
        self.say(f"seed {seed}: arm {arm.name}, evaluating {len(self.eval_images)} images")
        mean, std = _data_config(model)
        t0 = time.perf_counter()
        probs = predict(model, self.eval_images, mean=mean, std=std, batch_size=self.cfg.eval_batch, **self.common)
        record = RunRecord(arm.name, seed, probs, train_s, time.perf_counter() - t0)
        _store_record(self.runs_dir, record)
        return record


def _record_file(runs_dir: pathlib.Path, arm: str, seed: int) -> pathlib.Path:
    return runs_dir / f"pred_{arm}_s{seed}.safetensors"


def _load_record(runs_dir: pathlib.Path | None, arm: str, seed: int) -> RunRecord | None:
    if runs_dir is None or not _record_file(runs_dir, arm, seed).is_file():
        return None
    path = _record_file(runs_dir, arm, seed)
    meta = json.loads(path.with_suffix(".json").read_text())
    return RunRecord(arm, seed, load_file(path)["probs"], meta["train_s"], meta["eval_s"])


def _store_record(runs_dir: pathlib.Path | None, record: RunRecord) -> None:
    if runs_dir is None:
        return
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = _record_file(runs_dir, record.arm, record.seed)
    atomic_write(path.with_suffix(".json"), json.dumps({"train_s": record.train_s, "eval_s": record.eval_s}))
    atomic_write(path, save({"probs": record.probs.contiguous()}))


def probe_seconds(
    cfg: AccuracyConfig, data: PhantomData, *, device: torch.device | str = "cpu", steps: int = 3
) -> dict[str, float]:
    """Seconds per training step (with DADAM, the dearer case) and per evaluated image, measured on a throwaway model.

    The first step warms up and is not counted. Returns ``{"step_s", "eval_image_s"}``.
    """
    device = torch.device(device)
    model = _new_model(cfg, ARMS["a"].stages, 0, device)
    mean, std = _data_config(model)
    dadam_config, _ = arm_dadam_config(ARMS["b"], cfg.dadam, data.bank.canvas)
    aug = DiseasedAreaAugment.from_config(data.bank.to(device), LabelStats.from_labels(data.train.labels),
                                          dadam_config, generator=0).to(device)  # fmt: skip
    stamps: list[float] = []

    def stamp() -> None:  # the step's end: wait for the device, so that the stamps time the work
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    phase = Phase(steps + 1, cfg.batch_size, cfg.base_lr, cfg.weight_decay, cfg.warmup_frac, seed=0)
    common = dict(device=device, channels_last=cfg.channels_last, bf16=cfg.bf16)
    train_phase(model, data.train.images, data.train.labels, phase, mean=mean, std=std, aug=aug,
                on_step=stamp, **common)  # fmt: skip
    images = data.split("val" if cfg.eval_split == "val" else "test").images[: cfg.eval_batch]
    predict(model, images[:2], mean=mean, std=std, **common)  # warm-up
    t0 = time.perf_counter()
    predict(model, images, mean=mean, std=std, batch_size=cfg.eval_batch, **common)
    return {"step_s": float(np.median(np.diff(stamps))), "eval_image_s": (time.perf_counter() - t0) / len(images)}
