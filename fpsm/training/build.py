"""The pieces a run is built from: the model, optimiser, schedule, the run's generator and DADAM.

:func:`fpsm.training.fit` calls them in this order; they are public for scripts that assemble a loop of their own.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn as nn

from fpsm.model import create_fpsm
from fpsm.training.base_aug import BASE_AUGMENTATIONS
from fpsm.training.config import TrainConfig

__all__ = ["build_augment", "build_generator", "build_model", "build_optimizer", "build_scheduler", "total_steps"]


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """``fpsm.create_fpsm`` from the config's model fields."""
    return create_fpsm(
        cfg.backbone,
        stages=tuple(cfg.stages),
        num_classes=num_classes,
        use_binary_enc=cfg.use_binary_enc,
        num_datasets=cfg.num_datasets,
        use_concatenate=cfg.use_concatenate,
        pretrained=cfg.pretrained,
        checkpoint_path=cfg.checkpoint_path,
        drop_rate=cfg.drop_rate,
        in_chans=3,
        combine=cfg.combine,
    )


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (fused when the parameters are on CUDA) or SGD (Nesterov); no weight decay on biases and normalisation
    weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    fused = all(p.is_cuda for group in groups for p in group["params"]) and bool(decay or no_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)


def build_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, total: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: linear warm-up from ``warmup_factor * lr`` over ``warmup_steps``, then cosine to ``min_lr``."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warm = min(cfg.warmup_steps, max(total - 1, 0))
    cosine = CosineAnnealingLR(optimizer, T_max=max(total - warm, 1), eta_min=cfg.min_lr)
    if warm == 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=cfg.warmup_factor, end_factor=1.0, total_iters=warm)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warm])


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The run's length in optimiser steps: ``epochs`` epochs, or ``max_steps`` when that ends first."""
    total = steps_per_epoch * cfg.epochs
    return total if cfg.max_steps is None else min(total, cfg.max_steps)


def build_generator(cfg: TrainConfig, *, device: torch.device, rank: int = 0) -> torch.Generator | None:
    """The run's generator on the device, seeded per rank, which DADAM and the base augmentation draw from (and
    every checkpoint saves); None when the run has neither."""
    if cfg.dadam is None and BASE_AUGMENTATIONS[cfg.aug] is None:
        return None
    return torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)


def build_augment(
    cfg: TrainConfig,
    table: pd.DataFrame,
    *,
    device: torch.device,
    rank: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[nn.Module | None, torch.Generator | None]:
    """DADAM on the device from ``cfg.dadam`` and ``cfg.bank`` (statistics from the training table), and the run's
    generator (``generator``, else :func:`build_generator`); ``(None, generator)`` when ``cfg.dadam`` is None.

    In extend mode the module has ``p=1``: every extra sample it is given (``mask``) changes, and no original.
    """
    generator = generator if generator is not None else build_generator(cfg, device=device, rank=rank)
    if cfg.dadam is None:
        return None, generator
    from dadam import DiseasedAreaAugment, PatchBank
    from dadam.stats import LabelStats

    bank = PatchBank.load(cfg.bank).to(device)
    if bank.canvas != cfg.canvas:
        raise ValueError(f"bank {cfg.bank} has canvas {bank.canvas} but canvas={cfg.canvas}; rebuild the bank")
    stats = LabelStats.from_labels(table).to(device)
    options = (cfg.dadam.replace(p=1.0) if cfg.dadam.mode == "extend" else cfg.dadam).augment_options()
    return DiseasedAreaAugment(bank, stats, generator=generator, **options).to(device), generator
