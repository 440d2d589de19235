"""Torch input pipeline: a label-table Dataset that decodes in workers, resumable samplers and the model input step.

Images travel as uint8 ``(1, S, S)`` from the workers to the device, where DADAM runs on them; only then
:func:`to_model_input` turns the batch into the normalised 3-channel float tensor the backbone expects.

A bad image file (missing, truncated, not an image, several frames) raises a ``ValueError`` naming its row and path;
with ``bad_images="skip"`` the dataset leaves it out instead: it logs it, and the batch it belonged to comes one
image short, with a :class:`SkippedImage` record in its ``skipped`` attribute (:class:`LabelBatch`).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from dadam.labels import CXR_LT_CLASSES
from dadam.model_input import IMAGENET_MEAN, IMAGENET_STD, InputNormalizer, to_model_input

__all__ = [
    "BAD_IMAGES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InputNormalizer",
    "MAX_DEFAULT_WORKERS",
    "LabelBatch",
    "LabelDataset",
    "ResumableSampler",
    "ShardSampler",
    "SkippedImage",
    "decode_image",
    "default_num_workers",
    "make_loader",
    "per_row_dataset_ids",
    "remove_stale_worker_dirs",
    "to_model_input",
]

logger = logging.getLogger(__name__)

BAD_IMAGES = ("error", "skip")
"""What a loader does with an image file it cannot read: raise (``"error"``) or leave it out and go on (``"skip"``)."""

_DICOM_SUFFIXES = (".dcm", ".dicom")
_JPEG_MAGIC = b"\xff\xd8\xff"


MAX_DEFAULT_WORKERS = 32
"""The most decoding workers (or DALI threads) chosen by default, however many CPUs there are."""


def default_num_workers() -> int:
    """Decoding workers (or DALI threads) by default: the CPUs this process may use, shared among the processes of
    this machine (``LOCAL_WORLD_SIZE``, set by torchrun), at least 1 and at most :data:`MAX_DEFAULT_WORKERS`.

    Decoding full-size chest X-ray JPEGs costs tens of milliseconds per image per core, so a GPU that trains at
    hundreds of images per second needs every core decoding.

    Example:
        >>> default_num_workers() >= 1
        True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_ranks = 1
    return max(1, min(MAX_DEFAULT_WORKERS, cpus // local_ranks))


def decode_image(path: str | os.PathLike, *, canvas: int | None = None) -> torch.Tensor:
    """Decode an image file to grayscale uint8 and resize it to a square canvas.

    JPEG goes through ``torchvision.io.decode_jpeg`` (libjpeg-turbo); every other format (PNG, TIFF, 16-bit files,
    ...) and DICOM through :func:`dadam.io.read_image` (PIL / pydicom). PNG is left to PIL on purpose: torchvision's
    libpng decoder ends the process with a segmentation fault on a PNG whose image data is short, where PIL raises
    an error. (A PNG whose compressed stream ends cleanly but early decodes with its missing rows black, as in every
    PIL-based loader; a stream cut short raises.) RGB(A) files are converted to luma; 16-bit files are scaled by
    their full range.

    Args:
        path: image file (``.jpg``, ``.png``, ``.dcm``, ...).
        canvas: output side ``S`` in pixels; ``None`` keeps the native size.

    Returns:
        uint8 tensor ``(1, S, S)`` (or ``(1, H, W)`` when ``canvas`` is ``None``).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: naming the file, when it cannot be decoded (truncated, not an image, several frames, ...).

    Example:
        >>> x = decode_image("00000129_000.png", canvas=448)  # doctest: +SKIP
        >>> x.shape, x.dtype
        (torch.Size([1, 448, 448]), torch.uint8)
    """
    from torchvision.transforms.v2.functional import resize

    from dadam.io import read_image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with open(path, "rb") as f:
        data = f.read(len(_JPEG_MAGIC))
        is_jpeg = data == _JPEG_MAGIC and path.suffix.lower() not in _DICOM_SUFFIXES
        if is_jpeg:
            data += f.read()
    img = _decode_jpeg(data) if is_jpeg else None
    if img is None:  # not a JPEG, or one libjpeg-turbo rejects (12-bit, ...): PIL decodes it or names the problem
        img = read_image(path, dtype=torch.uint8)
    if canvas is not None and tuple(img.shape[-2:]) != (canvas, canvas):
        img = resize(img, [canvas, canvas], antialias=True)
    return img.contiguous()


def _decode_jpeg(data: bytes) -> torch.Tensor | None:
    """JPEG bytes decoded to gray ``(1, H, W)`` uint8 by torchvision, or None when it cannot decode them."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # (n_bytes,)
    try:
        with warnings.catch_warnings():  # torchvision >= 0.29 flags its decoders as deprecated (torchcodec)
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_jpeg(encoded, mode=ImageReadMode.GRAY)  # (1, H, W) uint8
    except RuntimeError:
        return None
    return img if img.dtype == torch.uint8 and img.ndim == 3 else None


@dataclass(frozen=True)
class SkippedImage:
    """An image a :class:`LabelDataset` left out (``bad_images="skip"``): its table row, id, path and why."""

    index: int
    image_id: str
    path: str
    reason: str


class LabelBatch(tuple):
    """A batch ``(images, labels, dataset_ids)`` of :class:`LabelDataset`, and the images it left out.

    It unpacks as the 3-tuple. ``skipped`` holds a :class:`SkippedImage` per image left out (``bad_images="skip"``);
    ``kept`` is a ``(B,)`` bool tensor over the ``B`` sampled positions, True where the batch holds the image (its
    rows are the kept positions, in order), so per-image results can be put back in sampler order. ``extra`` is a
    ``(K,)`` bool tensor over the rows, True for the extra samples of an extend-mode epoch
    (:class:`dadam.extend.ExtendSampler`): the rows DADAM must change (``aug(images, labels, mask=batch.extra)``).

    Shape:
        images ``(K, 1, S, S)`` uint8, labels ``(K, C)`` float32, dataset_ids ``(K,)`` int64, extra ``(K,)`` bool
        with ``K = kept.sum()``.
    """

    skipped: tuple[SkippedImage, ...]
    kept: torch.Tensor
    extra: torch.Tensor

    def __new__(
        cls,
        images: torch.Tensor,
        labels: torch.Tensor,
        dataset_ids: torch.Tensor,
        skipped: Sequence[SkippedImage] = (),
        kept: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
    ) -> LabelBatch:
        batch = super().__new__(cls, (images, labels, dataset_ids))
        batch.skipped = tuple(skipped)
        batch.kept = torch.ones(images.shape[0], dtype=torch.bool) if kept is None else kept
        batch.extra = torch.zeros(images.shape[0], dtype=torch.bool) if extra is None else extra
        return batch

    def __reduce__(self):  # from the DataLoader workers to the main process
        return LabelBatch, (*self, self.skipped, self.kept, self.extra)

    def pin_memory(self) -> LabelBatch:
        """The batch in page-locked memory (called by the DataLoader's ``pin_memory``)."""
        return LabelBatch(*(t.pin_memory() for t in self), self.skipped, self.kept, self.extra.pin_memory())


class _ExtraSample(tuple):
    """A sample ``(image, labels, dataset_id)`` served as an extra sample of an extend-mode epoch."""


class LabelDataset(Dataset):
    """Images and multi-hot labels from a label table (``image_id``, ``path``, one float column per class).

    Decoding and resizing happen in ``__getitem__``, i.e. in DataLoader workers; augmentation does not
    (DADAM runs batched on the device). Batch it with :meth:`collate` (:func:`make_loader` does).

    Args:
        table: label table; ``path`` is relative to ``root`` or absolute. Missing class columns are an error;
            NaN labels (unknown) are kept and masked by the loss.
        root: dataset root that relative paths start from.
        canvas: square output side ``S`` in pixels.
        classes: class columns, in output order (default: the 26 CXR-LT classes).
        dataset_id: id returned with each sample (FPSM's dataset encoding): one int for every row, or one per row.
        bad_images: ``"error"``: a missing or undecodable file raises (``FileNotFoundError`` / ``ValueError``
            naming the row and the path); ``"skip"``: it is logged and returned as a :class:`SkippedImage`, which
            :meth:`collate` leaves out of the batch and lists in ``batch.skipped``.

    Returns (per item):
        ``(image, labels, dataset_id)``: uint8 ``(1, S, S)``, float32 ``(C,)``, int64 scalar; or a
        :class:`SkippedImage` (``bad_images="skip"``). An index ``n + i`` (``n = len(ds)``) serves row ``i`` as an
        extra sample of an extend-mode epoch (:class:`dadam.extend.ExtendSampler`): the same item, which
        :meth:`collate` marks in ``batch.extra``.

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
        dataset_id: int | Sequence[int] = 0,
        bad_images: str = "error",
    ) -> None:
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
        missing = [c for c in ("image_id", "path", *classes) if c not in table.columns]
        if missing:
            raise ValueError(f"label table lacks columns {missing}; it has {list(table.columns)}")
        if not isinstance(canvas, int) or canvas <= 0:
            raise ValueError(f"canvas must be a positive int, got {canvas!r}")
        if bad_images not in BAD_IMAGES:
            raise ValueError(f"bad_images must be one of {list(BAD_IMAGES)}, got {bad_images!r}")
        self.root = Path(root)
        self.canvas = canvas
        self.classes = tuple(classes)
        self.dataset_ids = per_row_dataset_ids(dataset_id, len(table))  # (N,) int64
        self.dataset_id = int(dataset_id) if isinstance(dataset_id, int) else None
        self.bad_images = bad_images
        self.image_ids = table["image_id"].astype(str).tolist()
        self.paths = [p if os.path.isabs(p) else str(self.root / p) for p in table["path"].astype(str)]
        labels = table[list(self.classes)].apply(pd.to_numeric, errors="coerce")
        self.labels = torch.tensor(labels.to_numpy(dtype=np.float32, na_value=np.nan))  # (N, C)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | SkippedImage:
        n = len(self.paths)
        if not 0 <= index < 2 * n:
            raise IndexError(f"index {index} out of range for {n} rows (n..2n-1: extra samples)")
        if index >= n:  # an extra sample of an extend-mode epoch: row index - n
            item = self[index - n]
            return item if isinstance(item, SkippedImage) else _ExtraSample(item)
        path, image_id = self.paths[index], self.image_ids[index]
        where = f"row {index} (image_id {image_id!r})"
        try:
            image = decode_image(path, canvas=self.canvas)
        except Exception as err:  # a bad file: named, then raised or skipped
            reason = f"{type(err).__name__}: {err}"
            if self.bad_images == "skip":
                logger.warning("skipped %s: %s", where, reason)
                return SkippedImage(index=index, image_id=image_id, path=path, reason=reason)
            fix = "; bad_images='skip' (--bad-images skip) leaves such files out and goes on"
            if isinstance(err, FileNotFoundError):
                raise FileNotFoundError(f"{where}: image file {path} not found{fix}") from None
            raise ValueError(f"{where}: cannot decode {path}: {reason}{fix}") from err
        return image, self.labels[index], self.dataset_ids[index]

    def collate(self, samples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | SkippedImage]) -> LabelBatch:
        """Stack samples into a :class:`LabelBatch`, leaving out the :class:`SkippedImage` entries.

        Shape:
            ``B`` samples -> images ``(K, 1, S, S)``, labels ``(K, C)``, dataset_ids ``(K,)``, ``kept (B,)``.
        """
        kept = [not isinstance(s, SkippedImage) for s in samples]
        good = [tuple(s) for s, k in zip(samples, kept, strict=True) if k]
        extra = [isinstance(s, _ExtraSample) for s, k in zip(samples, kept, strict=True) if k]
        skipped = [s for s, k in zip(samples, kept, strict=True) if not k]
        if good:
            images, labels, ids = default_collate(good)  # in shared memory inside a worker, as torch's default
        else:  # every image of the batch was bad
            images = torch.zeros(0, 1, self.canvas, self.canvas, dtype=torch.uint8)
            labels = torch.zeros(0, len(self.classes), dtype=torch.float32)
            ids = torch.zeros(0, dtype=torch.long)
        kept_t, extra_t = torch.tensor(kept, dtype=torch.bool), torch.tensor(extra, dtype=torch.bool)
        return LabelBatch(images, labels, ids, skipped, kept_t, extra_t)


def per_row_dataset_ids(dataset_id: int | Sequence[int], n: int) -> torch.Tensor:
    """``(n,)`` int64 dataset ids: one int for every row, or a sequence of one int >= 0 per row.

    Raises:
        ValueError: a negative id, or a sequence that is not one int per row.

    Example:
        >>> per_row_dataset_ids(1, 3).tolist(), per_row_dataset_ids([0, 2], 2).tolist()
        ([1, 1, 1], [0, 2])
    """
    if isinstance(dataset_id, (int, np.integer)) and not isinstance(dataset_id, bool):
        if dataset_id < 0:
            raise ValueError(f"dataset_id must be >= 0, got {dataset_id}")
        return torch.full((n,), int(dataset_id), dtype=torch.long)
    ids = torch.as_tensor(np.asarray(dataset_id))
    if ids.shape != (n,) or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(
            f"dataset_id must be an int or one int per row ({n}), got {type(dataset_id).__name__} of shape "
            f"{tuple(ids.shape)} and dtype {ids.dtype}"
        )
    if n and int(ids.min()) < 0:
        raise ValueError(f"dataset_id values must be >= 0, got {int(ids.min())}")
    return ids.long()


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
    num_workers: int | None = None,
    drop_last: bool | None = None,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
    sampler: Sampler[int] | None = None,
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
        num_workers: decoding worker processes (0 decodes in the main process; default:
            :func:`default_num_workers`).
        drop_last: drop the last partial batch (default: ``train``).
        pin_memory: page-locked host batches (default: True when CUDA is available).
        persistent_workers: keep workers across epochs (default: ``num_workers > 0``).
        prefetch_factor: batches prefetched per worker (default: torch's).
        sampler: the sampler to use instead (e.g. :class:`dadam.extend.ExtendSampler` for an extend-mode epoch).

    Returns:
        ``DataLoader`` yielding ``(images uint8 (B, 1, S, S), labels float (B, C), dataset_ids long (B,))``
        (a :class:`LabelBatch` for a :class:`LabelDataset`, batched by its ``collate``).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    num_workers = default_num_workers() if num_workers is None else num_workers
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    drop_last = train if drop_last is None else drop_last
    if sampler is None and train:
        sampler = ResumableSampler(len(dataset), shuffle=True, seed=seed)
    elif sampler is None:
        sampler = ShardSampler(len(dataset))
    pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
    persistent_workers = num_workers > 0 if persistent_workers is None else persistent_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=getattr(dataset, "collate", None),  # LabelDataset: LabelBatch, bad images left out
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        # Each new iterator draws its workers' base seed from this generator, not from the global RNG: otherwise a run
        # resumed mid-epoch (one extra iterator) would shift the global RNG stream (dropout) against the original run.
        generator=torch.Generator().manual_seed(seed),
    )


def remove_stale_worker_dirs(folder: str | os.PathLike | None = None) -> int:
    """Remove the ``pymp-*`` folders that killed DataLoader workers left in the temporary folder; returns how many.

    Python's multiprocessing gives a worker process a ``pymp-*`` folder for the socket through which it hands
    tensors to the main process, and removes it when the process exits; a process killed with SIGKILL leaves it
    behind. A folder is removed only when it belongs to this user and holds nothing but sockets none of which is
    bound any more (``/proc/net/unix`` lists the bound ones), so the folders of running processes are never touched.
    Without ``/proc/net/unix`` (not Linux) nothing is removed.

    Args:
        folder: where to look (default: :func:`tempfile.gettempdir`).

    Example:
        >>> remove_stale_worker_dirs()  # doctest: +SKIP
        0
    """
    table = Path("/proc/net/unix")
    if not table.is_file():
        return 0
    rows = [line.split() for line in table.read_text().splitlines()[1:]]
    bound = {os.path.realpath(r[7]) for r in rows if len(r) >= 8 and r[7].startswith("/")}
    removed = 0
    for d in Path(folder or tempfile.gettempdir()).glob("pymp-*"):
        try:
            if d.is_symlink() or not d.is_dir() or d.stat().st_uid != os.getuid():
                continue
            entries = list(d.iterdir())
            stale = bool(entries) and all(e.is_socket() and os.path.realpath(e) not in bound for e in entries)
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if stale:
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed
