"""The per-batch work of training and evaluation: one optimiser step, one pass over a loader, predictions.

Each training step: batch to the device -> DADAM (uint8, on the device; in extend mode only the batch's extra samples
change) -> base augmentation (:mod:`fpsm.training.base_aug`, float in [0, 1]) -> the backbone's normalisation
(:class:`dadam.data.InputNormalizer` of ``FPSM.data_config``) -> forward under autocast -> :func:`fpsm.pyramid_loss`
-> backward -> optimiser and scheduler step. Nothing in a step reads a value back to the host; :func:`check_loss`
does, on the steps that log.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from dadam.data import InputNormalizer
from fpsm.distributed import gather_objects
from fpsm.loss import pyramid_loss
from fpsm.training.config import TrainConfig

__all__ = [
    "StepOptions",
    "amp_dtype",
    "autocast",
    "check_loss",
    "check_mean_loss",
    "evaluate",
    "train_one_epoch",
    "train_step",
]


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting: ``"bf16"``, or ``"auto"`` on CUDA -> bfloat16; else None (fp32)."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or a context that does nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_loss(loss: torch.Tensor, step: int) -> float:
    """``float(loss)`` (a host sync), raising ``FloatingPointError`` when it is not finite."""
    value = float(loss)
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value} at step {step}; lower lr or check the labels")
    return value


@dataclass(frozen=True)
class StepOptions:
    """How :func:`train_step` treats each batch.

    Attributes:
        device: where the batch goes.
        aug: a :class:`dadam.DiseasedAreaAugment` (or any ``aug(images, labels) -> (images, labels)``) or None.
        loss: ``pyramid_loss`` kind.
        amp_dtype: autocast dtype (None: full precision).
        channels_last: feed channels-last input.
        use_dataset_ids: pass ``dataset_ids`` to the model (FPSM built with ``use_binary_enc``).
        grad_clip: clip the global grad norm to this value (None: no clipping).
        normalize: the model input step (None: ImageNet statistics, ``channels_last`` as above).
        base_aug: the base augmentation (:class:`fpsm.training.base_aug.BaseAugment`) or None.
        generator: the run's generator on ``device``, which ``base_aug`` draws from (DADAM holds it too).
        extend: DADAM changes only the batch's extra samples (``batch.extra``, an extend-mode epoch).
        code_augmented: the dataset code of a sample is 1 when DADAM changed it, else 0
            (``dataset_code="augmented"``).
    """

    device: torch.device
    aug: nn.Module | None = None
    loss: str = "soft_margin"
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    use_dataset_ids: bool = False
    grad_clip: float | None = None
    normalize: InputNormalizer | None = None
    base_aug: nn.Module | None = None
    generator: torch.Generator | None = None
    extend: bool = False
    code_augmented: bool = False

    @classmethod
    def from_config(
        cls,
        cfg: TrainConfig,
        *,
        device: torch.device,
        aug: nn.Module | None,
        normalize: InputNormalizer | None = None,
        base_aug: nn.Module | None = None,
        generator: torch.Generator | None = None,
    ) -> StepOptions:
        """The options of a training config on ``device``, with ``aug`` (DADAM or None), the model's input step and
        the base augmentation drawing from the run's ``generator``."""
        amp = amp_dtype(cfg.amp, device)
        extend = aug is not None and cfg.dadam is not None and cfg.dadam.mode == "extend"
        code_augmented = cfg.use_binary_enc and cfg.dataset_code == "augmented"
        return cls(
            device,
            aug,
            cfg.loss,
            amp,
            cfg.channels_last,
            cfg.use_binary_enc,
            cfg.grad_clip,
            normalize,
            base_aug,
            generator,
            extend,
            code_augmented,
        )

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """Base augmentation (when set) and normalisation of a device batch: ``(B, 1, S, S)`` -> the model's input."""
        x = images if self.base_aug is None else self.base_aug(images, generator=self.generator)  # float in [0, 1]
        normalize = self.normalize or _imagenet(self.channels_last)
        return normalize(x)


def _imagenet(channels_last: bool) -> InputNormalizer:
    """The ImageNet normaliser, one per layout (for callers that give no ``normalize``)."""
    key = "channels_last" if channels_last else "contiguous"
    if key not in _IMAGENET:
        _IMAGENET[key] = InputNormalizer(channels_last=channels_last)
    return _IMAGENET[key]


_IMAGENET: dict[str, InputNormalizer] = {}


def train_step(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    options: StepOptions,
) -> torch.Tensor:
    """One optimiser and scheduler step on one batch.

    Args:
        model: the (possibly DDP-wrapped / compiled) FPSM, in train mode.
        batch: ``(images uint8 (B, 1, S, S), labels (B, C), dataset_ids (B,))``; a
            :class:`dadam.data.LabelBatch` also carries ``extra (B,)``, the samples DADAM must change in extend
            mode.
        optimizer: the optimiser.
        scheduler: per-step LR scheduler.
        options: device, DADAM, loss, precision and clipping.

    Returns:
        the loss, a detached 0-dim tensor on the device (``float(loss)`` waits for the device).

    Example:
        >>> loss = train_step(model, next(iter(loader)), opt, sched, StepOptions(torch.device("cpu")))  # doctest: +SKIP
    """
    device = options.device
    images, labels, dataset_ids = batch
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True).float()
    dataset_ids = dataset_ids.to(device, non_blocking=True)
    if options.aug is not None:
        mask = None
        if options.extend:  # only the extra samples change, each of them (the module has p=1)
            extra = getattr(batch, "extra", None)
            mask = (
                extra.to(device, non_blocking=True)
                if extra is not None
                else torch.zeros(images.shape[0], dtype=torch.bool, device=device)
            )
        images, labels, params = options.aug(images, labels, mask=mask, return_params=True)
        if options.code_augmented:
            dataset_ids = params.changed.long()  # (B,) 1: changed by DADAM, 0: original
    x = options.model_input(images)
    with autocast(device, options.amp_dtype):
        out = model(x, dataset_ids if options.use_dataset_ids else None)
        value = pyramid_loss(out, labels, loss=options.loss)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    if options.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
    optimizer.step()
    scheduler.step()
    return value.detach()


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
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
    """One pass over ``loader`` (or until ``on_step`` asks to stop), one :func:`train_step` per batch.

    Args:
        model, optimizer, scheduler: as for :func:`train_step`.
        device, aug, loss, amp_dtype, channels_last, use_dataset_ids, grad_clip: as in :class:`StepOptions`.
        loader: yields ``(images uint8 (B, 1, S, S), labels (B, C), dataset_ids (B,))``.
        step: global step count before this epoch.
        on_step: ``on_step(step, loss, batch_size) -> stop`` after every optimiser step; ``loss`` is a 0-dim
            tensor on the device (``float(loss)`` waits for the GPU: do it only when logging).
        progress: show a tqdm bar with the loss.
        desc: bar label.
        log_every: read the loss back to the host (bar, non-finite check) only every this many steps, so the
            CPU can queue the next steps while the GPU works.

    Returns:
        ``(step, mean loss)`` after the epoch.

    Example:
        >>> step, mean_loss = train_one_epoch(model, loader, opt, sched, device=torch.device("cpu"), step=0)  # doctest: +SKIP
    """
    model.train()
    total, count = torch.zeros((), device=device), 0
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    options = StepOptions(device, aug, loss, amp_dtype, channels_last, use_dataset_ids, grad_clip)
    for batch in bar:
        value = train_step(model, batch, optimizer, scheduler, options)
        step += 1
        total, count = total + value, count + 1
        if step % log_every == 0:
            bar.set_postfix(loss=f"{check_loss(value, step):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if on_step is not None and on_step(step, value, batch[0].shape[0]):
            break
    bar.close()
    return step, check_mean_loss(total, count, step)


def check_mean_loss(total: torch.Tensor, count: int, step: int) -> float:
    """The mean of ``count`` summed losses (a host sync), raising ``FloatingPointError`` when it is not finite."""
    mean = float(total) / max(count, 1)
    if not math.isfinite(mean):
        raise FloatingPointError(f"mean loss of the epoch is {mean} (step {step}); lower lr or check the labels")
    return mean


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    use_dataset_ids: bool = False,
    progress: bool = True,
    skipped: list | None = None,
    normalize: InputNormalizer | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predict every image of an evaluation loader; with DDP, gather all ranks' shards on every rank.

    The loader must use :class:`dadam.data.ShardSampler` (``make_loader(..., train=False)``): rank ``r`` holds
    rows ``r, r + W, r + 2W, ...``, which are put back in dataset order. An image the loader left out as unreadable
    (``bad_images="skip"``) keeps its row, with NaN probabilities and targets.

    Args:
        model: the model (put in eval mode for the pass, then back).
        loader: yields ``(images uint8 (B, 1, S, S), labels (B, C), dataset_ids (B,))``.
        device: where the images go.
        amp_dtype: autocast dtype (None: full precision).
        channels_last: feed channels-last input.
        use_dataset_ids: pass ``dataset_ids`` to the model.
        progress: show a tqdm bar.
        skipped: when a list, this rank's :class:`dadam.data.SkippedImage` records are appended to it.
        normalize: the model's input step (``InputNormalizer.from_data_config(model.data_config, ...)``; None:
            ImageNet statistics).

    Probabilities and targets stay on the device until the pass ends: one copy to the host, not one per batch.

    Returns:
        ``(probs, targets)``: float32 ``(N, C)`` on the CPU, in dataset order (NaN rows: images left out).

    Example:
        >>> probs, targets = evaluate(model, make_eval_loader(cfg, table, classes, root), device=device)  # doctest: +SKIP
    """
    was_training = model.training
    model.eval()
    normalize = normalize or _imagenet(channels_last)
    probs, targets = [], []
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
        images, labels, dataset_ids = batch
        x = normalize(images.to(device, non_blocking=True))
        with autocast(device, amp_dtype):
            out = model(x, dataset_ids.to(device, non_blocking=True) if use_dataset_ids else None)
        p, t = out.probs.float(), labels.to(device, non_blocking=True).float()  # (K, C) of the K images it holds
        kept = getattr(batch, "kept", None)  # (B,) bool on the CPU over the sampled positions (LabelBatch)
        if kept is not None and not bool(kept.all()):
            where = kept.to(device, non_blocking=True)
            p = torch.full((kept.shape[0], p.shape[1]), math.nan, device=device).index_put_((where,), p)  # (B, C)
            t = torch.full((kept.shape[0], t.shape[1]), math.nan, device=device).index_put_((where,), t)
        if skipped is not None:
            skipped.extend(getattr(batch, "skipped", ()))
        probs.append(p)
        targets.append(t)
    model.train(was_training)
    c = loader.dataset.labels.shape[1] if hasattr(loader, "dataset") else (probs[0].shape[1] if probs else 0)
    local_p = torch.cat(probs).cpu() if probs else torch.zeros(0, c)  # the pass's one copy to the host
    local_t = torch.cat(targets).cpu() if targets else torch.zeros(0, c)
    parts = gather_objects((local_p, local_t))
    if len(parts) == 1:
        return local_p, local_t
    n = sum(p.shape[0] for p, _ in parts)
    world = len(parts)
    all_p, all_t = torch.empty(n, c), torch.empty(n, c)
    for r, (p, t) in enumerate(parts):
        all_p[r::world], all_t[r::world] = p, t
    return all_p, all_t
