"""Torch input pipeline: a label-table Dataset that decodes in workers, resumable samplers and the model input step.

Images travel as uint8 ``(1, S, S)`` from the workers to the device, where DADAM runs on them; only then
:func:`to_model_input` turns the batch into the normalised 3-channel float tensor the backbone expects.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from dadam.labels import CXR_LT_CLASSES

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LabelDataset",
    "ResumableSampler",
    "ShardSampler",
    "decode_image",
    "make_loader",
    "to_model_input",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DICOM_SUFFIXES = (".dcm", ".dicom")


def decode_image(path: str | os.PathLike, *, canvas: int | None = None) -> torch.Tensor:
    """Decode an image file to grayscale uint8 and resize it to a square canvas.

    JPEG and PNG go through ``torchvision.io.decode_image`` (libjpeg-turbo / libpng); DICOM through
    :func:`dadam.io.read_image`. RGB(A) files are converted to luma.

    Args:
        path: image file (``.jpg``, ``.png``, ``.dcm``).
        canvas: output side ``S`` in pixels; ``None`` keeps the native size.

    Returns:
        uint8 tensor ``(1, S, S)`` (or ``(1, H, W)`` when ``canvas`` is ``None``).

    Example:
        >>> x = decode_image("00000129_000.png", canvas=448)  # doctest: +SKIP
        >>> x.shape, x.dtype
        (torch.Size([1, 448, 448]), torch.uint8)
    """
    from torchvision.io import ImageReadMode, read_file
    from torchvision.io import decode_image as tv_decode
    from torchvision.transforms.v2.functional import resize

    path = Path(path)
    if path.suffix.lower() in _DICOM_SUFFIXES:
        from dadam.io import read_image

        img = read_image(path, dtype=torch.uint8)
    else:
        try:
            with warnings.catch_warnings():  # torchvision >= 0.29 flags its decoders as deprecated (torchcodec)
                warnings.simplefilter("ignore", DeprecationWarning)
                img = tv_decode(read_file(str(path)), mode=ImageReadMode.GRAY)  # (1, H, W) uint8
        except RuntimeError:
            img = None
        if img is None or img.dtype != torch.uint8:
            # formats libjpeg/libpng reject (TIFF, ...) and 16-bit PNG (torchvision decodes it to uint16) go through
            # PIL via dadam.io, which scales 16 bit to 8 bit by the full range.
            from dadam.io import read_image

            img = read_image(path, dtype=torch.uint8)
    if img.dtype != torch.uint8:
        raise ValueError(f"{path}: decoded to {img.dtype}, expected uint8 (8-bit images)")
    if canvas is not None and tuple(img.shape[-2:]) != (canvas, canvas):
        img = resize(img, [canvas, canvas], antialias=True)
    return img.contiguous()


class LabelDataset(Dataset):
    """Images and multi-hot labels from a label table (``image_id``, ``path``, one float column per class).

    Decoding and resizing happen in ``__getitem__``, i.e. in DataLoader workers; augmentation does not
    (DADAM runs batched on the device).

    Args:
        table: label table; ``path`` is relative to ``root`` or absolute. Missing class columns are an error;
            NaN labels (unknown) are kept and masked by the loss.
        root: dataset root that relative paths start from.
        canvas: square output side ``S`` in pixels.
        classes: class columns, in output order (default: the 26 CXR-LT classes).
        dataset_id: id returned with each sample (FPSM's dataset encoding).

    Returns (per item):
        ``(image, labels, dataset_id)``: uint8 ``(1, S, S)``, float32 ``(C,)``, int64 scalar.

    Example:
        >>> ds = LabelDataset(table, "/data/cxr-lt", canvas=448)  # doctest: +SKIP
        >>> image, labels, dataset_id = ds[0]
    """

    def __init__(
        self,
        table: pd.DataFrame,
        root: str | os.PathLike,
        *,
        canvas: int,
        classes: Sequence[str] = CXR_LT_CLASSES,
        dataset_id: int = 0,
    ) -> None:
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
        missing = [c for c in ("image_id", "path", *classes) if c not in table.columns]
        if missing:
            raise ValueError(f"label table lacks columns {missing}; it has {list(table.columns)}")
        if not isinstance(canvas, int) or canvas <= 0:
            raise ValueError(f"canvas must be a positive int, got {canvas!r}")
        self.root = Path(root)
        self.canvas = canvas
        self.classes = tuple(classes)
        self.dataset_id = int(dataset_id)
        self.image_ids = table["image_id"].astype(str).tolist()
        self.paths = [p if os.path.isabs(p) else str(self.root / p) for p in table["path"].astype(str)]
        labels = table[list(self.classes)].apply(pd.to_numeric, errors="coerce")
        self.labels = torch.tensor(labels.to_numpy(dtype=np.float32, na_value=np.nan))  # (N, C)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        path = self.paths[index]
        if not os.path.exists(path):
            raise FileNotFoundError(f"row {index} (image_id {self.image_ids[index]!r}): image file {path} not found")
        try:
            image = decode_image(path, canvas=self.canvas)
        except Exception as err:  # name the row: a bare decoder error does not say which file
            raise RuntimeError(
                f"row {index} (image_id {self.image_ids[index]!r}): cannot decode {path}: {err}"
            ) from err
        return image, self.labels[index], torch.tensor(self.dataset_id, dtype=torch.long)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ResumableSampler(Sampler[int]):
    """Per-epoch seeded shuffle, sharded across ranks, that can start in the middle of an epoch.

    The order of epoch ``e`` depends only on ``(seed, e)``, as in ``DistributedSampler``; each rank takes
    every ``num_replicas``-th index of the padded permutation. ``set_epoch(e, start=k)`` skips the first
    ``k`` samples of this rank's share, so a run resumed after ``k // batch_size`` batches sees exactly the
    batches the uninterrupted run would have seen.

    Args:
        n: dataset length.
        shuffle: permute each epoch (else ``0..n-1``).
        seed: base seed of the permutation.
        num_replicas: number of ranks (default: world size, 1 without torch.distributed).
        rank: this rank (default: the process's rank).
        drop_last: drop the tail so that every rank gets the same count without padding.
    """

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        r, w = _dist_info()
        self.n = int(n)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas = w if num_replicas is None else int(num_replicas)
        self.rank = r if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas}), got {self.rank}")
        self.drop_last = drop_last
        self.num_samples = (
            self.n // self.num_replicas if drop_last else math.ceil(self.n / self.num_replicas)
        )  # per rank
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        """Select epoch ``epoch`` and skip the first ``start`` samples of this rank's share."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start must be in [0, {self.num_samples}], got {start}")
        self.epoch = int(epoch)
        self.start = int(start)

    def indices(self) -> list[int]:
        """This rank's full index list for the current epoch (without the ``start`` skip)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.num_samples * self.num_replicas
        if total > len(order):  # pad by wrapping around, as DistributedSampler does
            order = (order * math.ceil(total / max(len(order), 1)))[:total]
        return order[:total][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self.set_epoch(state["epoch"], start=state["start"])


class ShardSampler(Sampler[int]):
    """Every ``num_replicas``-th index from ``rank``, in order, without padding (for evaluation gathers)."""

    def __init__(self, n: int, *, num_replicas: int | None = None, rank: int | None = None) -> None:
        r, w = _dist_info()
        self.n = int(n)
        self.num_replicas = w if num_replicas is None else int(num_replicas)
        self.rank = r if rank is None else int(rank)

    def indices(self) -> list[int]:
        return list(range(self.rank, self.n, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool = True,
    seed: int = 0,
    num_workers: int = 4,
    drop_last: bool | None = None,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` that shards across ranks when torch.distributed is initialised.

    Training loaders use :class:`ResumableSampler` (seeded shuffle per epoch; call
    ``loader.sampler.set_epoch(epoch, start=k)``); evaluation loaders use :class:`ShardSampler` (in order,
    no padding, so gathered predictions cover each image exactly once).

    Args:
        dataset: map-style dataset, e.g. :class:`LabelDataset`.
        batch_size: samples per batch per rank.
        train: shuffle + resumable sampler (True) or in-order shard (False).
        seed: base seed of the shuffle.
        num_workers: decoding worker processes (0 decodes in the main process).
        drop_last: drop the last partial batch (default: ``train``).
        pin_memory: page-locked host batches (default: True when CUDA is available).
        persistent_workers: keep workers across epochs (default: ``num_workers > 0``).
        prefetch_factor: batches prefetched per worker (default: torch's).

    Returns:
        ``DataLoader`` yielding ``(images uint8 (B, 1, S, S), labels float (B, C), dataset_ids long (B,))``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    drop_last = train if drop_last is None else drop_last
    sampler: Sampler[int]
    if train:
        sampler = ResumableSampler(len(dataset), shuffle=True, seed=seed)
    else:
        sampler = ShardSampler(len(dataset))
    pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
    persistent_workers = num_workers > 0 if persistent_workers is None else persistent_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        # Each new iterator draws its workers' base seed from this generator, not from the global RNG: otherwise a run
        # resumed mid-epoch (one extra iterator) would shift the global RNG stream (dropout) against the original run.
        generator=torch.Generator().manual_seed(seed),
    )


def to_model_input(
    images: torch.Tensor,
    *,
    in_chans: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """Turn a device batch of grayscale images into the backbone's normalised input.

    Args:
        images: uint8 (0..255) or float (0..1) batch with 1 channel.
        in_chans: channels the model expects (the gray channel is repeated).
        mean: per-output-channel mean (length ``in_chans``; length 1 is broadcast).
        std: per-output-channel std.
        dtype: float dtype of the output.
        channels_last: return ``torch.channels_last`` memory format.

    Returns:
        ``(B, in_chans, H, W)`` float tensor ``(x - mean) / std``.

    Shape:
        images: ``(B, 1, H, W)`` -> ``(B, in_chans, H, W)``.

    Example:
        >>> x = to_model_input(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
        >>> x.shape
        torch.Size([2, 3, 8, 8])
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, H, W), got shape {tuple(images.shape)}")
    if len(mean) not in (1, in_chans) or len(std) not in (1, in_chans):
        raise ValueError(f"mean/std must have 1 or in_chans={in_chans} values, got {len(mean)} and {len(std)}")
    x = images.to(dtype)
    if images.dtype == torch.uint8:
        x = x / 255.0
    x = x.expand(-1, in_chans, -1, -1)
    m = torch.tensor(mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    x = (x - m) / s  # (B, in_chans, H, W), a new tensor
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
