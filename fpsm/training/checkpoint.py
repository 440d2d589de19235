"""Where a run stands and how it is saved: :class:`RunState`, random states, checkpoints, weights.

A checkpoint (``checkpoint.pt``) holds the model, optimiser and scheduler states, the run's position (``step``,
``epoch``, ``batch_in_epoch``), one random state per rank (``rng``: torch, CUDA, NumPy, Python and the run's
generator, which DADAM and the base augmentation draw from), the best evaluation so far (``best``), the config as plain
values and the class names. It is written atomically (:func:`dadam.files.atomic_write`): a kill during a save leaves
the previous checkpoint intact. ``model.pt`` is a bare state dict of the final weights; ``model_best.pt``
(:func:`save_best_weights`) holds the weights of the best evaluation with its metric, epoch, step and config.

Checkpoints and weights hold tensors and plain containers only (dicts, lists, strings, numbers): the random states
are stored as tensors and lists, not as NumPy arrays or Python objects. So :func:`read_checkpoint` loads every file
with ``torch.load(..., weights_only=True)``, which builds nothing but those: a file that needs more (a crafted
pickle that would run code) is refused with a ``ValueError`` naming it, and so is a file that is not a checkpoint.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import zipfile
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
    "CHECKPOINT_KEYS",
    "RunState",
    "check_checkpoint",
    "choose_best",
    "load_checkpoint_weights",
    "load_weights",
    "model_weights",
    "read_checkpoint",
    "restore_checkpoint",
    "rng_state",
    "save_best_weights",
    "save_checkpoint",
    "save_weights",
    "seed_everything",
    "set_rng_state",
    "weight_digest",
]


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "step", "epoch", "batch_in_epoch", "rng", "config", "class_names")
"""The entries of a training checkpoint (``checkpoint.pt``)."""


@dataclass
class RunState:
    """Where a run stands: the global ``step``, the ``epoch``, the batches of it already done, and how it ended.

    ``step``, ``epoch`` and ``batch_in_epoch`` are what a checkpoint records and a resume restores; ``stopped`` is
    set when ``stop_after`` ends the run; ``metrics`` is the mean row of the last evaluation; ``bad_images`` holds
    ``(step, epoch, phase, SkippedImage)`` for each image left out since the last checkpoint (they are logged with
    it); ``best`` is the best evaluation so far (``{"metric", "value", "epoch", "step"}``, or None), which a
    checkpoint records too.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    stopped: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    bad_images: list[tuple[int, int, str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None

    def next_epoch(self) -> None:
        """Move to the first batch of the next epoch."""
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0


def choose_best(
    best: dict[str, Any] | None, metrics: dict[str, float], *, metric: str, epoch: int, step: int, tag: str
) -> dict[str, Any] | None:
    """The new best evaluation when ``metrics[metric]`` beats ``best`` (strictly higher; a NaN or missing value never
    does), else None.

    Returns:
        ``{"metric", "value", "epoch", "step", "tag"}`` or None.

    Example:
        >>> choose_best(None, {"AP": 0.4}, metric="AP", epoch=0, step=10, tag="epoch000")["value"]
        0.4
        >>> choose_best({"value": 0.4}, {"AP": 0.4}, metric="AP", epoch=1, step=20, tag="epoch001") is None
        True
    """
    value = float(metrics.get(metric, math.nan))
    if not math.isfinite(value) or (best is not None and not value > best["value"]):
        return None
    return {"metric": metric, "value": value, "epoch": epoch, "step": step, "tag": tag}


# ------------------------------------------------------------------------------------------------ random states


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """This process's random states as tensors and plain values (``weights_only`` loads them).

    Returns:
        ``torch`` (uint8 tensor), ``cuda`` (list of uint8 tensors, None without CUDA), ``numpy`` (the legacy
        ``MT19937`` state: ``key`` as an int64 tensor, ``pos``, ``has_gauss``, ``gauss``), ``python`` (``version``,
        ``state`` as a list of ints, ``gauss_next``) and ``dadam`` (``generator``'s state, or None).
    """
    np_state = np.random.get_state(legacy=False)  # {"bit_generator", "state": {"key", "pos"}, "has_gauss", "gauss"}
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),  # (624,) uint32 values
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {"version": int(version), "state": list(internal), "gauss_next": gauss_next},
        "dadam": generator.get_state() if generator is not None else None,
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None) -> None:
    """Restore the random states of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npy["bit_generator"],
            "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        }
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
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
            "best": state.best,
            "config": config.to_dict(),
            "class_names": list(class_names),
        }
        atomic_write(path, lambda f: torch.save(checkpoint, f))
    barrier()


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The object stored in a checkpoint or weights file (on the CPU), loaded with ``weights_only=True``.

    Nothing but tensors and plain containers is built, so loading a file never runs code from it.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: naming the file, when it is empty, not a ``torch.save`` file (text, truncated, damaged), or holds
            Python objects beyond tensors and plain containers (refused: building them could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): not a checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, EOFError, RuntimeError (bad zip), KeyError (text read as a pickle)
        raise ValueError(_unreadable(path, err)) from None


def _unreadable(path: Path, err: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, for a person (torch's own message suggests loading the file
    without ``weights_only``, which is what must not happen)."""
    if isinstance(err, pickle.UnpicklingError) and zipfile.is_zipfile(path):  # a torch.save archive with objects
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            names = []
        listed = f" ({', '.join(names[:3])})" if names else ""
        return (
            f"{path} was not loaded: it holds Python objects{listed} besides tensors and plain containers, and "
            "building them could run code from the file. Checkpoints of fpsm.train hold none; use one written by "
            "fpsm.train (or its model.pt)"
        )
    if isinstance(err, pickle.UnpicklingError):
        return (
            f"{path} is not a readable checkpoint: not a torch.save archive, and read as a plain pickle it needs "
            "objects beyond tensors and plain containers (a damaged file, or one crafted to run code), so it was "
            "not loaded"
        )
    text = str(err).strip()
    detail = text.splitlines()[0] if text else "no message"
    return (
        f"{path} is not a readable checkpoint: {type(err).__name__}: {detail} (truncated, damaged or not written by "
        "torch.save)"
    )


def check_checkpoint(checkpoint: Any, *, source: str | os.PathLike = "checkpoint") -> dict[str, Any]:
    """``checkpoint`` if it is a training checkpoint of :func:`save_checkpoint`, else a ``ValueError`` naming
    ``source`` and what is missing (a bare state dict such as ``model.pt`` holds weights only: use it with
    ``init_from``)."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{source} holds a {type(checkpoint).__name__}, not a training checkpoint (a dict)")
    missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint]
    if missing and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(
            f"{source} is a bare state dict of model weights (like model.pt), not a training checkpoint: resume "
            "needs the run's checkpoint.pt; to start a new run from these weights use init_from (--init-from)"
        )
    if missing:
        raise ValueError(f"{source} is not a training checkpoint: it lacks {missing}")
    for key in ("step", "epoch", "batch_in_epoch"):
        value = checkpoint[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{source}: {key} must be an int >= 0, got {value!r}")
    for key, kind in (("model", dict), ("optimizer", dict), ("scheduler", dict), ("config", dict), ("rng", list)):
        if not isinstance(checkpoint[key], kind):
            raise ValueError(f"{source}: {key} must be a {kind.__name__}, got {type(checkpoint[key]).__name__}")
    keys = {"torch", "cuda", "numpy", "python", "dadam"}
    if not checkpoint["rng"] or not all(isinstance(r, dict) and keys <= set(r) for r in checkpoint["rng"]):
        raise ValueError(f"{source}: rng must hold one random state per rank with the entries {sorted(keys)}")
    return checkpoint


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
        the saved position (``step``, ``epoch``, ``batch_in_epoch``) and the best evaluation so far (``best``;
        None in checkpoints written before it was recorded).

    Raises:
        ValueError: naming ``source``, when ``checkpoint`` is not a training checkpoint (:func:`check_checkpoint`)
            or was written by another number of ranks.
    """
    check_checkpoint(checkpoint, source=source)
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
    best = checkpoint.get("best")
    return RunState(
        step=checkpoint["step"],
        epoch=checkpoint["epoch"],
        batch_in_epoch=checkpoint["batch_in_epoch"],
        best=dict(best) if isinstance(best, dict) else None,
    )


# ------------------------------------------------------------------------------------------------------ weights


def save_weights(path: str | os.PathLike, model: nn.Module) -> None:
    """Write the model's state dict to ``path`` atomically (``model.pt``)."""
    weights = model.state_dict()
    atomic_write(path, lambda f: torch.save(weights, f))


def save_best_weights(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    best: dict[str, Any],
    config: TrainConfig,
    class_names: tuple[str, ...],
) -> None:
    """Write ``model_best.pt`` atomically: ``{"model": state dict, "best": {"metric", "value", "epoch", "step"},
    "config", "class_names"}`` (plain values and tensors: it loads with ``weights_only=True``; ``init_from``,
    :func:`load_checkpoint_weights` and ``fpsm.evaluate`` read it)."""
    payload = {
        "model": model.state_dict(),
        "best": dict(best),
        "config": config.to_dict(),
        "class_names": list(class_names),
    }
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Model weights from a training checkpoint or ``model_best.pt`` (``{"model": ...}``) or a bare state dict
    (``model.pt``).

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
