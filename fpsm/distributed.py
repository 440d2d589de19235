"""torch.distributed set-up for ``torchrun`` launches: env-var init, device choice, object gathers.

A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) is the same code path with ``world_size == 1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "barrier",
    "broadcast_buffers",
    "cleanup_distributed",
    "gather_objects",
    "init_distributed",
    "resolve_device",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its machine, and its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, *, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``"cuda"`` gets the local rank.

    Raises:
        ValueError: ``device`` is not ``auto``/``cpu``/``cuda[:i]``, or CUDA was asked for and is absent.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but torch.cuda.is_available() is False; use device='cpu'")
        return torch.device(device) if ":" in device else torch.device("cuda", local_rank)
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:index]', got {device!r}")


def init_distributed(device: str = "auto", *, backend: str | None = None) -> DistInfo:
    """Initialise torch.distributed from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (as torchrun sets them).

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; each rank uses ``cuda:LOCAL_RANK``.
        backend: process-group backend (default: ``nccl`` on CUDA, ``gloo`` on CPU).

    Returns:
        :class:`DistInfo`; with ``WORLD_SIZE`` unset or 1 no process group is created.

    Example:
        >>> info = init_distributed("cpu")
        >>> info.rank, info.world_size
        (0, 1)
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank=local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if dev.type == "cuda" else "gloo"))
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    """Destroy the default process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """``dist.barrier()`` when distributed, else nothing."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """All-gather a picklable object: ``[obj_rank0, obj_rank1, ...]`` on every rank (``[obj]`` when single)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, as DDP does before each forward."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)
