"""NVIDIA DALI input pipeline: nvJPEG ("mixed") decoding on a GPU, CPU decoding without one, sharded per rank.

DALI is optional (``pip install dadam-fpsm[dali]``); it is imported here only. The loader yields the same
``(images, labels, dataset_ids)`` batches as :func:`dadam.data.make_loader`, already on the device.
Labels travel through the reader as the row index of the label table (``fn.readers.file(files=...,
labels=row)``) and are looked up on the device, so sharding and shuffling never separate an image from
its labels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dadam.data import default_num_workers, per_row_dataset_ids
from dadam.labels import CXR_LT_CLASSES

try:
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "dadam.dali needs NVIDIA DALI: pip install 'dadam-fpsm[dali]' (or nvidia-dali-cuda120 for CUDA 12)"
    ) from _err

__all__ = ["DaliLoader", "image_pipeline"]

_DALI_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".jp2", ".webp", ".pnm")


@pipeline_def(enable_conditionals=False)
def image_pipeline(
    files: list[str],
    rows: list[int],
    canvas: int,
    decoder_device: str = "cpu",
    shard_id: int = 0,
    num_shards: int = 1,
    shuffle: bool = False,
    pad_last_batch: bool = False,
    normalize: bool = False,
):
    """DALI graph: read files -> decode to gray -> resize to ``canvas`` -> CHW (uint8, or float in [0, 1]).

    Pipeline arguments (``batch_size``, ``num_threads``, ``device_id``, ``seed``) go with the call, as for any
    ``@pipeline_def``; ``device_id=None`` builds a CPU-only pipeline.

    Args:
        files: absolute image paths.
        rows: one int per file returned alongside the image (the label-table row).
        canvas: output side ``S``.
        decoder_device: ``"mixed"`` (nvJPEG / nvImageCodec on the GPU) or ``"cpu"``.
        shard_id: this rank's shard.
        num_shards: number of shards (ranks).
        shuffle: global reshuffle after every epoch (same permutation on every shard, seeded by ``seed``).
        pad_last_batch: repeat the last sample to fill the last batch of a shard.
        normalize: output float32 in ``[0, 1]`` instead of uint8.

    Returns:
        ``(images, rows)``: images ``(1, S, S)`` per sample, rows ``(1,)`` int32.

    Example:
        >>> pipe = image_pipeline(files, rows, 448, batch_size=32, num_threads=4, device_id=None)  # doctest: +SKIP
        >>> pipe.build()
    """
    encoded, row = fn.readers.file(
        files=files,
        labels=rows,
        shard_id=shard_id,
        num_shards=num_shards,
        shuffle_after_epoch=shuffle,
        pad_last_batch=pad_last_batch,
        name="Reader",
    )
    images = fn.decoders.image(encoded, device=decoder_device, output_type=types.GRAY)  # HWC, C=1
    images = fn.resize(images, size=[canvas, canvas], antialias=True, dtype=types.UINT8)
    if normalize:
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mean=[0.0], std=[255.0])
    else:
        images = fn.transpose(images, perm=[2, 0, 1])  # (1, S, S)
    if decoder_device == "mixed":
        row = row.gpu()
    return images, row


class DaliLoader:
    """Iterate a label table with DALI: ``for images, labels, dataset_ids in loader`` (one epoch per loop).

    Args:
        table: label table (``image_id``, ``path``, class columns); JPEG/PNG only (DICOM: use dadam.data).
        root: root of relative paths.
        canvas: output side ``S``.
        batch_size: samples per batch per rank.
        classes: class columns, in output order.
        dataset_id: id returned with each sample: one int for every row, or one per row (looked up on the device
            with the labels).
        device: ``"cuda"`` (nvJPEG mixed decoding on this process's GPU), ``"cpu"`` or ``"auto"``.
        device_id: CUDA device index (default: ``torch.cuda.current_device()``).
        shard_id: this rank (default: torch.distributed rank, else 0).
        num_shards: ranks (default: torch.distributed world size, else 1).
        train: reshuffle every epoch and drop the last partial batch; else in order, keep it.
        seed: seed of the shuffle (same on every rank so the shards stay disjoint).
        num_threads: DALI CPU threads (default: :func:`dadam.data.default_num_workers`, the CPUs of this process
            shared among the ranks of the machine).
        normalize: yield float in ``[0, 1]`` instead of uint8.
        bad_images: ``"error"`` only: DALI decodes inside its pipeline, where a bad file stops the epoch with DALI's
            error; ``"skip"`` raises ``ValueError`` (use :func:`dadam.data.make_loader`, which can leave files out).

    Yields:
        ``images (B, 1, S, S)`` uint8 (or float), ``labels (B, C)`` float32, ``dataset_ids (B,)`` int64, on the
        device.

    Example:
        >>> loader = DaliLoader(table, root, canvas=448, batch_size=32, device="cuda")  # doctest: +SKIP
        >>> for images, labels, dataset_ids in loader:
        ...     images, labels = aug(images, labels)
    """

    def __init__(
        self,
        table: pd.DataFrame,
        root: str | os.PathLike,
        *,
        canvas: int,
        batch_size: int,
        classes: Sequence[str] = CXR_LT_CLASSES,
        dataset_id: int | Sequence[int] = 0,
        device: str = "auto",
        device_id: int | None = None,
        shard_id: int | None = None,
        num_shards: int | None = None,
        train: bool = True,
        seed: int = 0,
        num_threads: int | None = None,
        normalize: bool = False,
        bad_images: str = "error",
    ) -> None:
        if bad_images != "error":
            raise ValueError(
                f"bad_images={bad_images!r}: the DALI loader supports 'error' only (it decodes inside its pipeline "
                "and cannot leave a file out); use dadam.data.make_loader (loader='torch') to skip bad images"
            )
        if device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', got {device!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch.cuda.is_available() is False; use device='cpu'")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        num_threads = default_num_workers() if num_threads is None else num_threads
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be an int >= 1, got {num_threads!r}")
        missing = [c for c in ("image_id", "path", *classes) if c not in table.columns]
        if missing:
            raise ValueError(f"label table lacks columns {missing}; it has {list(table.columns)}")
        if len(table) == 0:
            raise ValueError("label table is empty")
        root = Path(root)
        files = [p if os.path.isabs(p) else str(root / p) for p in table["path"].astype(str)]
        for i, f in enumerate(files):
            if not f.lower().endswith(_DALI_SUFFIXES):
                raise ValueError(
                    f"row {i} (image_id {table['image_id'].iloc[i]!r}): {f} is not a format DALI decodes "
                    f"({', '.join(_DALI_SUFFIXES)}); use dadam.data.make_loader for DICOM"
                )
        if shard_id is None or num_shards is None:
            import torch.distributed as dist

            initialised = dist.is_available() and dist.is_initialized()
            shard_id = (dist.get_rank() if initialised else 0) if shard_id is None else shard_id
            num_shards = (dist.get_world_size() if initialised else 1) if num_shards is None else num_shards
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id must be in [0, num_shards={num_shards}), got {shard_id}")

        self.device = (
            torch.device("cuda", torch.cuda.current_device() if device_id is None else device_id)
            if (device == "cuda")
            else torch.device("cpu")
        )
        labels = table[list(classes)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32, na_value=np.nan)
        self.labels = torch.tensor(labels, device=self.device)  # (N, C)
        self.dataset_ids = per_row_dataset_ids(dataset_id, len(table)).to(self.device)  # (N,) int64
        self.batch_size = batch_size
        self.pipe = image_pipeline(
            files,
            list(range(len(files))),
            canvas,
            decoder_device="mixed" if device == "cuda" else "cpu",
            shard_id=shard_id,
            num_shards=num_shards,
            shuffle=train,
            pad_last_batch=not train,
            normalize=normalize,
            batch_size=batch_size,
            num_threads=num_threads,
            device_id=self.device.index if device == "cuda" else None,
            seed=seed,
            prefetch_queue_depth=2,
        )
        self.pipe.build()
        self._iter = DALIGenericIterator(
            [self.pipe],
            ["images", "rows"],
            reader_name="Reader",
            auto_reset=True,
            last_batch_policy=LastBatchPolicy.DROP if train else LastBatchPolicy.PARTIAL,
        )

    def __len__(self) -> int:
        return len(self._iter)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for out in self._iter:
            images = out[0]["images"]  # (B, 1, S, S)
            rows = out[0]["rows"].view(-1).to(device=self.device, dtype=torch.long)  # (B,)
            labels = self.labels.index_select(0, rows)  # (B, C)
            ids = self.dataset_ids.index_select(0, rows)  # (B,)
            yield images.to(self.device), labels, ids
