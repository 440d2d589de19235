"""The accuracy experiment's training loop and prediction: a plain loop over in-memory uint8 tensors.

The loop is written here rather than taken from :mod:`fpsm.training` so that the experiment depends only on the
library's public pieces (:func:`fpsm.create_fpsm`, :func:`fpsm.pyramid_loss`, :class:`dadam.DiseasedAreaAugment`,
:func:`dadam.data.to_model_input`) and reads top to bottom: sample a batch, augment, normalise, forward, loss, step.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import fpsm
from dadam.data import to_model_input

__all__ = ["Phase", "batch_indices", "predict", "train_phase"]


@dataclass(frozen=True)
class Phase:
    """One training phase: ``steps`` AdamW steps with a linear warm-up then a cosine decay to zero.

    Attributes:
        steps: optimiser steps.
        batch_size: images per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_frac: warm-up fraction of ``steps``.
        seed: seeds the batch order (the same seed gives the same batches, whatever the arm).
    """

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_frac: float
    seed: int


def batch_indices(n: int, steps: int, batch_size: int, *, seed: int) -> torch.Tensor:
    """The images of every step: consecutive random permutations of ``range(n)``, cut into batches.

    Returns:
        ``(steps, batch_size)`` long indices; each epoch (``n`` consecutive entries) holds every image once.

    Example:
        >>> idx = batch_indices(10, 3, 4, seed=0)
        >>> idx.shape, sorted(idx.flatten()[:10].tolist()) == list(range(10))
        (torch.Size([3, 4]), True)
    """
    g = torch.Generator().manual_seed(seed)
    epochs = math.ceil(steps * batch_size / n)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(epochs)])  # (epochs * n,)
    return order[: steps * batch_size].view(steps, batch_size)


def _schedule(phase: Phase) -> Callable[[int], float]:
    warmup = max(1, round(phase.warmup_frac * phase.steps))

    def factor(step: int) -> float:  # multiplier of the peak rate at optimiser step `step`
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, phase.steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return factor


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def train_phase(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    phase: Phase,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    aug: nn.Module | None = None,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    bf16: bool = False,
    on_step: Callable[[], None] | None = None,
) -> float:
    """Train ``model`` in place for one phase; returns the seconds it took.

    Args:
        model: an FPSM (its ``stage_logits`` feed :func:`fpsm.pyramid_loss`).
        images: ``(N, 1, S, S)`` uint8 training images, on ``device`` or on the CPU (each batch then moves).
        labels: ``(N, 26)`` float 0/1.
        phase: steps, batch, learning rate and batch-order seed.
        mean / std: the backbone's normalisation (timm's data config).
        aug: DADAM (or None), applied to each uint8 batch on ``device`` before normalising.
        device: where the model lives.
        channels_last: channels_last inputs.
        bf16: bfloat16 autocast.
        on_step: called after every step (it gets nothing: reading the loss would wait for the device).
    """
    device = torch.device(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=phase.lr, weight_decay=phase.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(phase))
    order = batch_indices(len(labels), phase.steps, phase.batch_size, seed=phase.seed).to(images.device)  # (steps, B)
    t0 = time.perf_counter()
    for idx in order:
        x = images[idx].to(device, non_blocking=True)  # (B, 1, S, S) uint8
        y = labels[idx].to(device, non_blocking=True)  # (B, 26)
        if aug is not None:
            x, y = aug(x, y)
        with _autocast(device, bf16):
            out = model(to_model_input(x, mean=mean, std=std, channels_last=channels_last))
            loss = fpsm.pyramid_loss(out, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if on_step is not None:
            on_step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


@torch.inference_mode()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    bf16: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The model's probabilities (``out.probs``: the mean of the heads' sigmoids) for every image.

    Args:
        images: ``(N, 1, S, S)`` uint8.
        on_batch: called with the number of images after every batch.

    Returns:
        ``(N, 26)`` float32 on the CPU.
    """
    device = torch.device(device)
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)  # (b, 1, S, S) uint8
        with _autocast(device, bf16):
            probs = model(to_model_input(x, mean=mean, std=std, channels_last=channels_last)).probs  # (b, 26)
        out.append(probs.float().cpu())
        if on_batch is not None:
            on_batch(len(x))
    model.train()
    return torch.cat(out)
