"""Where a run stands and how it is saved: :class:`RunState`, random states, checkpoints, weights.

A checkpoint (``checkpoint.pt``) holds the model, optimiser and scheduler states, the run's position (``step``,
``epoch``, ``batch_in_epoch``), one random state per rank (``rng``: torch, CUDA, NumPy, Python and the DADAM
generator), the config as plain values and the class names. It is written atomically (:func:`dadam.files.atomic_write`):
a kill during a save leaves the previous checkpoint intact. ``model.pt`` is a bare state dict of the final weights.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from dadam.files import atomic_write, tensor_digest
from fpsm.distributed import barrier, gather_objects
from fpsm.training.config import TrainConfig

__all__ = [
    "RunState",
    "load_checkpoint_weights",
    "load_weights",
    "model_weights",
    "read_checkpoint",
    "restore_checkpoint",
    "rng_state",
    "save_checkpoint",
    "save_weights",
    "seed_everything",
    "set_rng_state",
    "weight_digest",
]


@dataclass
class RunState:
    """Where a run stands: the global ``step``, the ``epoch``, the batches of it already done, and how it ended.

    ``step``, ``epoch`` and ``batch_in_epoch`` are what a checkpoint records and a resume restores; ``stopped`` is
    set when ``stop_after`` ends the run; ``metrics`` is the mean row of the last evaluation.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    stopped: bool = False
    metrics: dict[str, float] = field(default_factory=dict)

    def next_epoch(self) -> None:
        """Move to the first batch of the next epoch."""
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0


# ------------------------------------------------------------------------------------------------ random states


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """This process's random states: torch, CUDA (None without CUDA), NumPy, Python and ``generator`` (DADAM's)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "dadam": generator.get_state() if generator is not None else None,
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None) -> None:
    """Restore the random states of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if generator is not None and state.get("dadam") is not None:
        generator.set_state(state["dadam"])


# -------------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: RunState,
    generator: torch.Generator | None,
    config: TrainConfig,
    class_names: tuple[str, ...],
    write: bool = True,
) -> None:
    """Save a training checkpoint atomically. Every rank calls it; the rank with ``write=True`` (rank 0) writes it.

    Args:
        path: the checkpoint file (its folder must exist).
        model: the unwrapped model (no DDP or compile wrapper).
        optimizer: its optimiser.
        scheduler: its learning-rate scheduler.
        state: the run's position.
        generator: the DADAM generator of this rank (or None).
        config: the run's config, stored with :meth:`TrainConfig.to_dict`.
        class_names: the model's classes, in output order.
        write: whether this process writes the file.
    """
    rng = gather_objects(rng_state(generator))  # one entry per rank
    if write:
        checkpoint = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": state.step,
            "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch,
            "rng": rng,
            "config": config.to_dict(),
            "class_names": list(class_names),
        }
        atomic_write(path, lambda f: torch.save(checkpoint, f))
    barrier()


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The object stored in a checkpoint or weights file (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    return torch.load(path, map_location="cpu", weights_only=False)


def restore_checkpoint(
    checkpoint: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator | None,
    rank: int = 0,
    world_size: int = 1,
    source: str | os.PathLike = "checkpoint",
) -> RunState:
    """Load a :func:`read_checkpoint` result into the model, optimiser, scheduler and random states.

    Args:
        checkpoint: what :func:`save_checkpoint` wrote.
        model: the unwrapped model.
        optimizer: its optimiser.
        scheduler: its scheduler.
        generator: this rank's DADAM generator (or None).
        rank: this process's rank; it takes the random states saved for that rank.
        world_size: the number of ranks, which must equal the number that saved the checkpoint.
        source: the file's name, for errors.

    Returns:
        the saved position (``step``, ``epoch``, ``batch_in_epoch``).
    """
    saved_ranks = len(checkpoint["rng"])
    if saved_ranks != world_size:
        raise ValueError(
            f"{source} was written by {saved_ranks} rank(s), this run has {world_size}; resume with the same number "
            "of processes (or start a new run with init_from)"
        )
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_state(checkpoint["rng"][rank], generator)
    return RunState(step=checkpoint["step"], epoch=checkpoint["epoch"], batch_in_epoch=checkpoint["batch_in_epoch"])


# ------------------------------------------------------------------------------------------------------ weights


def save_weights(path: str | os.PathLike, model: nn.Module) -> None:
    """Write the model's state dict to ``path`` atomically (``model.pt``)."""
    weights = model.state_dict()
    atomic_write(path, lambda f: torch.save(weights, f))


def load_checkpoint_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Model weights from a training checkpoint (``{"model": ...}``) or a bare state dict (``model.pt``).

    The ``module.`` (DDP) and ``_orig_mod.`` (``torch.compile``) prefixes are removed from the names.

    Example:
        >>> model.load_state_dict(load_checkpoint_weights("runs/base/model.pt"))  # doctest: +SKIP
    """
    return model_weights(read_checkpoint(path), source=path)


def model_weights(checkpoint: Any, *, source: str | os.PathLike = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights of a :func:`read_checkpoint` result, as :func:`load_checkpoint_weights` returns them."""
    state = checkpoint
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{source}: expected a state dict or a checkpoint with a 'model' entry, got {type(state)}")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], *, source: str, description: str) -> None:
    """Load ``weights`` into ``model`` after checking that every name and shape fits.

    Args:
        model: the model.
        weights: e.g. :func:`load_checkpoint_weights` of another run.
        source: where the weights come from, for the error (``"init_from=runs/base/model.pt"``).
        description: the model, for the error (``"resnet10t, stages (2, 3, 4), 26 classes"``).

    Raises:
        ValueError: listing the first missing, unexpected and mis-shaped names.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shape = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if missing or unexpected or shape:
        raise ValueError(
            f"{source}: weights do not fit the model ({description}): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape {shape[:5]}"
        )
    model.load_state_dict(weights)


def weight_digest(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer of ``model`` (names, dtypes, shapes and bytes)."""
    return tensor_digest({**dict(model.named_parameters()), **dict(model.named_buffers())})
