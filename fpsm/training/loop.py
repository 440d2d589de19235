"""``fit``: a training run from a :class:`~fpsm.training.config.TrainConfig`, as one loop read top to bottom.

Set-up (run folder, data, DADAM, model, optimiser, schedule, resume, logs), then a plain loop over epochs and
batches that trains, logs, checkpoints and evaluates, over a small :class:`~fpsm.training.checkpoint.RunState`; then
the final evaluation, checkpoint and ``model.pt``. Every evaluation that beats the best validation mAP so far writes
``model_best.pt`` (its epoch and step inside); ``model.pt`` is always the last weights. Single process or ``torchrun`` (one process per GPU; gloo on CPU):
rank 0 logs and writes, every rank ends with the same weights.

A run protects its folder: a folder that holds a run is refused unless ``resume`` (continue it: the checkpoint's
settings must match, see :meth:`TrainConfig.resume_changes`) or ``overwrite`` (delete that run's files first). The
temporaries of a killed save and the ``pymp-*`` folders of killed DataLoader workers are removed at the start.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from dadam.data import InputNormalizer, remove_stale_worker_dirs
from dadam.files import remove_stale_temporaries
from fpsm.distributed import (
    DistInfo,
    barrier,
    broadcast_buffers,
    cleanup_distributed,
    gather_objects,
    init_distributed,
)
from fpsm.training.base_aug import BASE_AUGMENTATIONS, BaseAugment
from fpsm.training.build import (
    build_augment,
    build_generator,
    build_model,
    build_optimizer,
    build_scheduler,
    total_steps,
)
from fpsm.training.checkpoint import (
    RunState,
    check_checkpoint,
    choose_best,
    load_checkpoint_weights,
    load_weights,
    read_checkpoint,
    restore_checkpoint,
    save_best_weights,
    save_checkpoint,
    save_weights,
    seed_everything,
    weight_digest,
)
from fpsm.training.config import TrainConfig
from fpsm.training.data import TrainData, load_train_data, read_splits, start_epoch
from fpsm.training.runlog import RUN_LOG_DIRS, RUN_LOG_FILES, RunLog, Throughput
from fpsm.training.steps import StepOptions, check_loss, check_mean_loss, evaluate, train_step

__all__ = [
    "BEST_METRIC",
    "CHECKPOINT_FILE",
    "MODEL_BEST_FILE",
    "MODEL_FILE",
    "FitResult",
    "best_weights_file",
    "build_augment",
    "build_generator",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "fit",
    "run_files",
    "total_steps",
]

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
MODEL_BEST_FILE = "model_best.pt"
BEST_METRIC = "AP"
"""The column of the report's mean row that chooses ``model_best.pt``: the validation mAP (higher is better)."""


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
    bad_images: int = 0
    best: dict | None = None


def best_weights_file(run_dir: str | os.PathLike) -> Path:
    """The weights a later stage should start from or predict with: the run's ``model_best.pt`` when it has one
    (chosen by validation mAP), else its last ``model.pt``."""
    run_dir = Path(run_dir)
    best = run_dir / MODEL_BEST_FILE
    return best if best.is_file() else run_dir / MODEL_FILE


@dataclass
class _Parts:
    """What a run trains with: ``model`` runs the batches (DDP / compiled), ``core`` is what is saved."""

    model: nn.Module
    core: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator | None
    options: StepOptions


def run_files(run_dir: str | os.PathLike) -> list[str]:
    """The files and non-empty folders of a run that ``run_dir`` holds (``[]``: no run there)."""
    run_dir = Path(run_dir)
    found = [
        name for name in (CHECKPOINT_FILE, MODEL_FILE, MODEL_BEST_FILE, *RUN_LOG_FILES) if (run_dir / name).is_file()
    ]
    return found + [
        f"{name}/" for name in RUN_LOG_DIRS if (run_dir / name).is_dir() and any((run_dir / name).iterdir())
    ]


# ------------------------------------------------------------------------------------------------------ fit


def fit(cfg: TrainConfig) -> FitResult:
    """Train (and evaluate each epoch) as the config says.

    The run directory ``cfg.out_dir`` holds ``checkpoint.pt`` (latest, written atomically every ``ckpt_every``
    steps and at every epoch end), ``model.pt`` (final weights), ``model_best.pt`` (the weights of the evaluation
    with the best validation mAP, with its epoch and step), ``config.json`` (with the model's ``data_config``), ``train_log.csv``,
    ``eval_log.csv``, ``eval/`` (per-epoch report CSV + Markdown and predictions), ``tb/`` (TensorBoard),
    ``final.json``, and when needed ``bad_images.csv`` (images left out, ``bad_images="skip"``) and
    ``config_changes.csv`` (settings changed on resume). ``resume=True`` continues the run from its checkpoint with
    the same model, optimiser, schedule, random states and data order; ``init_from`` starts a new run from another
    run's weights only.

    Returns:
        :class:`FitResult` (model, run dir, global step, epoch, whether ``stop_after`` stopped it, last metrics,
        images left out as bad, the best evaluation).

    Raises:
        FileExistsError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set.
        ValueError: the config is invalid; the checkpoint to resume is not one, or its settings differ from
            ``cfg``'s (naming the fields) without ``allow_config_change``.

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
    # ---- set-up: folders, data, DADAM, model, optimiser, schedule, resume, logs
    device = info.device
    run_dir = Path(cfg.out_dir)
    checkpoint, changes = _open_run_dir(cfg, run_dir, info)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels once
    seed_everything(cfg.seed)  # same on every rank: identical initial weights (DDP also broadcasts them)

    splits = read_splits(cfg)
    # DADAM and the data draw nothing from the global generators: the model's initial weights stay the seed's.
    aug, generator = build_augment(cfg, splits.table, device=device, rank=info.rank)
    data = load_train_data(cfg, device=device, world_size=info.world_size, splits=splits, dadam=aug)
    total = total_steps(cfg, data.steps_per_epoch)
    core = _build_core(cfg, data.classes, device)
    optimizer = build_optimizer(cfg, core)
    scheduler = build_scheduler(cfg, optimizer, total)
    # From here on each rank draws its own random numbers (dropout masks differ between ranks, as in one big batch).
    seed_everything(cfg.seed + info.rank)
    state = RunState()
    if checkpoint is not None:
        state = _resume(run_dir / CHECKPOINT_FILE, checkpoint, core, optimizer, scheduler, generator, info)
        del checkpoint  # its tensors are in the model and optimiser now
    model = _wrap(core, cfg, info)
    normalize = InputNormalizer.from_data_config(core.data_config, channels_last=cfg.channels_last)
    light = BASE_AUGMENTATIONS[cfg.aug]
    base_aug = BaseAugment(light) if light is not None else None
    options = StepOptions.from_config(
        cfg, device=device, aug=aug, normalize=normalize, base_aug=base_aug, generator=generator
    )
    parts = _Parts(model, core, optimizer, scheduler, generator, options)
    log = RunLog(run_dir, enabled=info.is_main, resumed_at=state.step or None, tensorboard=cfg.tensorboard)
    log.write_config(cfg, data_config=core.data_config)
    log.config_changes(step=state.step, changes=changes)

    # ---- the loop: epochs of steps; log, checkpoint, stop; evaluate and checkpoint at each epoch's end
    meter = Throughput()
    desc = "ft epoch" if cfg.init_from else "train epoch"
    while state.step < total and not state.stopped:
        if state.batch_in_epoch >= data.steps_per_epoch:  # a checkpoint taken at the very end of an epoch
            state.next_epoch()
            continue
        start_epoch(data.train_loader, state.epoch, start_batch=state.batch_in_epoch, batch_size=cfg.batch_size)
        model.train()
        loss_sum, batches = torch.zeros((), device=device), 0
        show = cfg.progress and info.is_main
        bar = tqdm(data.train_loader, desc=f"{desc} {state.epoch}", disable=not show, leave=False, dynamic_ncols=True)
        for batch in bar:
            loss = train_step(model, batch, optimizer, scheduler, options)
            state.step += 1
            state.batch_in_epoch += 1
            loss_sum, batches = loss_sum + loss, batches + 1
            meter.add(batch[0].shape[0] * info.world_size)
            state.bad_images += [(state.step, state.epoch, "train", s) for s in getattr(batch, "skipped", ())]
            if state.step % cfg.log_every == 0 or state.step == total:
                value = check_loss(loss, state.step)  # the only host sync of a step, on logging steps only
                lr = optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
                log.train_step(step=state.step, epoch=state.epoch, loss=value, lr=lr, img_per_s=meter.rate())
            mid_epoch = state.batch_in_epoch < data.steps_per_epoch  # an epoch's end is saved after its evaluation
            if state.step % cfg.ckpt_every == 0 and state.step < total and mid_epoch:
                _save(run_dir, cfg, parts, state, data, log, info)
            state.stopped = cfg.stop_after is not None and state.step >= cfg.stop_after
            if state.stopped or state.step >= total:
                break
        bar.close()
        check_mean_loss(loss_sum, batches, state.step)
        if state.stopped:
            break
        if state.batch_in_epoch >= data.steps_per_epoch:
            _evaluate(f"epoch{state.epoch:03d}", cfg, parts, data, state, log, info)
            state.next_epoch()
            if state.step < total:
                _save(run_dir, cfg, parts, state, data, log, info)

    # ---- the end (unless stop_after stopped the run as if killed): evaluation, checkpoint, model.pt, final.json
    digests: list[str] = []
    if not state.stopped:
        if state.batch_in_epoch > 0 or not state.metrics:  # ended mid-epoch (max_steps): evaluate the last weights
            _evaluate(f"step{state.step:07d}", cfg, parts, data, state, log, info)
        broadcast_buffers(core)
        _save(run_dir, cfg, parts, state, data, log, info)
        if info.is_main:
            save_weights(run_dir / MODEL_FILE, core)
        digests = gather_objects(weight_digest(core))
        log.write_final(
            step=state.step, epoch=state.epoch, metrics=state.metrics, weight_digests=digests, best=state.best
        )
    log.close()
    bad = gather_objects(log.bad_image_count)[0]  # rank 0's count, on every rank
    barrier()
    return FitResult(core, run_dir, state.step, state.epoch, state.stopped, state.metrics, digests, bad, state.best)


# ------------------------------------------------------------------------------------------ the steps of fit


def _open_run_dir(cfg: TrainConfig, run_dir: Path, info: DistInfo) -> tuple[dict | None, dict]:
    """Check the run folder (every rank, before anything is written), then prepare it (rank 0).

    Returns:
        the checkpoint to resume (None for a new run) and the settings changed since it (``{name: (old, new)}``).
    """
    path = run_dir / CHECKPOINT_FILE
    checkpoint, changes, found = None, {}, run_files(run_dir)
    if cfg.resume and path.is_file():
        checkpoint = check_checkpoint(read_checkpoint(path), source=path)
        changes = _config_changes(cfg, checkpoint["config"], path)
    elif found and not (cfg.overwrite or cfg.resume):
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(found)}): resume=True (--resume) continues it, "
            "overwrite=True (--overwrite) deletes its files and starts anew, or choose another out_dir (--out-dir)"
        )
    barrier()
    if info.is_main:
        if checkpoint is None and found:  # overwrite, or resume with nothing to resume from
            print(f"{run_dir}: deleting the files of the run there ({', '.join(found)}); starting a new run")
            for name in found:
                target = run_dir / name.rstrip("/")
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
        elif cfg.resume and checkpoint is None:
            print(f"resume: no checkpoint at {path}; starting a new run")
        (run_dir / "eval").mkdir(parents=True, exist_ok=True)
        for name in (CHECKPOINT_FILE, MODEL_FILE, MODEL_BEST_FILE):  # what a killed save left behind
            remove_stale_temporaries(run_dir, name)
    if info.local_rank == 0:
        remove_stale_worker_dirs()  # of DataLoader workers killed with an earlier run
    barrier()
    return checkpoint, changes


def _config_changes(cfg: TrainConfig, saved_values: dict, source: Path) -> dict:
    """The settings ``cfg`` changes against a checkpoint's config; refused unless ``cfg.allow_config_change``."""
    try:
        saved = TrainConfig.from_dict(saved_values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: the config stored in the checkpoint cannot be read: {err}") from None
    changes = cfg.resume_changes(saved)
    if changes and not cfg.allow_config_change:
        listed = "; ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in changes.items())
        raise ValueError(
            f"resume refused: settings differ from those {source} was trained with ({listed}). Resume with the "
            "checkpoint's settings, or pass allow_config_change=True (--allow-config-change) to go on with the new "
            "ones (they are recorded in config_changes.csv)"
        )
    return changes


def _build_core(cfg: TrainConfig, classes: tuple[str, ...], device: torch.device) -> nn.Module:
    """The model on the device (channels-last when asked), with ``init_from``'s weights when given."""
    core = build_model(cfg, len(classes)).to(device)
    if cfg.channels_last:
        core = core.to(memory_format=torch.channels_last)
    if cfg.init_from:
        load_weights(
            core,
            load_checkpoint_weights(cfg.init_from),
            source=f"init_from={cfg.init_from}",
            description=f"{cfg.backbone}, stages {cfg.stages}, {len(classes)} classes",
        )
    return core


def _resume(
    path: Path,
    checkpoint: dict,
    core: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator | None,
    info: DistInfo,
) -> RunState:
    """The run's state from its checkpoint (read and checked by :func:`_open_run_dir`)."""
    state = restore_checkpoint(
        checkpoint,
        model=core,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=generator,
        rank=info.rank,
        world_size=info.world_size,
        source=path,
    )
    if info.is_main:
        print(f"resumed {path} at step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch})")
    return state


def _wrap(core: nn.Module, cfg: TrainConfig, info: DistInfo) -> nn.Module:
    """DDP across ranks, then ``torch.compile`` when asked."""
    model = core
    if info.distributed:
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(core, device_ids=device_ids)
    return torch.compile(model) if cfg.compile else model


def _save(
    run_dir: Path, cfg: TrainConfig, parts: _Parts, state: RunState, data: TrainData, log: RunLog, info: DistInfo
) -> None:
    """``checkpoint.pt`` at the run's position (every rank takes part; rank 0 writes), and the bad images met since
    the last one into ``bad_images.csv``, so that the log and the checkpoint agree on a resume."""
    log.bad_images(gather_objects(state.bad_images))
    state.bad_images = []
    save_checkpoint(
        run_dir / CHECKPOINT_FILE,
        model=parts.core,
        optimizer=parts.optimizer,
        scheduler=parts.scheduler,
        state=state,
        generator=parts.generator,
        config=cfg,
        class_names=data.classes,
        write=info.is_main,
    )


def _evaluate(
    tag: str, cfg: TrainConfig, parts: _Parts, data: TrainData, state: RunState, log: RunLog, info: DistInfo
) -> None:
    """Predict the validation split, write its report and predictions, and keep its mean row in ``state``."""
    if data.val_loader is None:
        return
    broadcast_buffers(parts.core)  # every rank predicts its shard with rank 0's BatchNorm statistics
    skipped: list = []
    probs, targets = evaluate(
        parts.model,
        data.val_loader,
        device=info.device,
        amp_dtype=parts.options.amp_dtype,
        channels_last=parts.options.channels_last,
        use_dataset_ids=parts.options.use_dataset_ids,
        progress=cfg.progress and info.is_main,
        skipped=skipped,
        normalize=parts.options.normalize,
    )
    log.bad_images(gather_objects([(state.step, state.epoch, "eval", s) for s in skipped]))
    keep = ~torch.isnan(probs).any(dim=1)  # (N,): the rows of images left out as bad hold NaN
    metrics = log.evaluation(
        tag,
        step=state.step,
        epoch=state.epoch,
        probs=probs[keep],
        targets=targets[keep],
        image_ids=data.val_table["image_id"].astype(str)[keep.numpy()],
        class_names=data.classes,
        threshold=cfg.threshold,
    )
    state.metrics = gather_objects(metrics)[0]  # rank 0's, on every rank
    best = choose_best(state.best, state.metrics, metric=BEST_METRIC, epoch=state.epoch, step=state.step, tag=tag)
    if best is not None:  # the same on every rank: the metrics are rank 0's
        state.best = best
        if info.is_main:
            save_best_weights(
                Path(cfg.out_dir) / MODEL_BEST_FILE, parts.core, best=best, config=cfg, class_names=data.classes
            )
        barrier()
