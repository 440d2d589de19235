"""The phantom data of the accuracy experiment, drawn once, decoded once into memory and cached on disk.

- Training set: the phantom CXR-LT layout (``dadam.synthetic.generate("cxr-lt")``, its ``train.csv`` and
  ``development.csv``), with the CXR-LT 2023 long tail.
- Validation and test sets: phantom CXR-LT images of other patients whose lesions are drawn (never pasted); each
  finding is drawn in at least ``eval_min_rate`` of them, so that the rare classes have enough positives for an AP.
- Patch bank: the boxes of phantom NIH ChestX-ray14 and ChestX-Det images (other patients again), read by
  :func:`dadam.formats.read_nih_boxes` / :func:`~dadam.formats.read_chestx_det` and cut by
  :meth:`dadam.PatchBank.from_boxes` at the experiment's canvas.

Every set has its own generator seed, so no phantom patient appears in two sets. The decoded uint8 images, the labels
and the bank are written to ``<cache>/<DataOptions.digest()>/``; a later run with the same options loads them in
seconds. The generated image files are removed once decoded.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save

from benchmarks.accuracy_config import DataOptions
from dadam import PatchBank
from dadam.data import decode_image
from dadam.files import atomic_write
from dadam.formats import read_chestx_det, read_cxr_lt, read_nih_boxes
from dadam.labels import CXR_LT_CLASSES
from dadam.synthetic import generate

__all__ = ["DEFAULT_CACHE", "PhantomData", "Split", "load_phantom_data"]

#: The default cache folder (it ignores itself in git).
DEFAULT_CACHE = pathlib.Path(__file__).resolve().parent / ".cache" / "accuracy"
# Each set's generator seed is data seed * 10 + this offset: distinct seeds, distinct phantom patients.
_SEED_OFFSETS = {"train": 1, "val": 2, "test": 3, "nih": 4, "chestx_det": 5}
_SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One image set in memory.

    Attributes:
        images: ``(N, 1, S, S)`` uint8.
        labels: ``(N, 26)`` float32 0/1 in :data:`dadam.labels.CXR_LT_CLASSES` order.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class PhantomData:
    """The experiment's data: three splits, the patch bank, and a summary (counts per class, where it came from)."""

    train: Split
    val: Split
    test: Split
    bank: PatchBank
    info: dict

    def split(self, name: str) -> Split:
        if name not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {name!r}")
        return getattr(self, name)


def _seed(options: DataOptions, name: str) -> int:
    return options.seed * 10 + _SEED_OFFSETS[name]


def _cxr_lt_split(root: pathlib.Path, canvas: int) -> Split:
    """Both label files of a phantom CXR-LT dataset, their images decoded at ``canvas``."""
    table = pd.concat([read_cxr_lt(root / "train.csv"), read_cxr_lt(root / "development.csv")], ignore_index=True)
    images = torch.stack([decode_image(root / p, canvas=canvas) for p in table["path"]])  # (N, 1, S, S) uint8
    labels = torch.tensor(table[list(CXR_LT_CLASSES)].to_numpy(np.float32))  # (N, 26)
    return Split(images=images, labels=labels)


def _bank(root: pathlib.Path, options: DataOptions, *, progress: bool, workers: int) -> PatchBank:
    """A patch bank from phantom NIH and ChestX-Det boxes, cut at the experiment's canvas."""
    canvas, common = options.canvas, dict(progress=progress, workers=workers, overwrite=True)
    nih, det = (
        generate(
            layout,
            root / layout,
            n=n,
            size=canvas,
            seed=_seed(options, layout.replace("-", "_")),
            min_rate=options.bank_min_rate,
            **common,
        )
        for layout, n in (("nih", options.n_nih), ("chestx-det", options.n_chestx_det))
    )
    boxes = pd.concat(
        [
            read_nih_boxes(nih / "BBox_List_2017.csv", image_root=nih / "images"),
            read_chestx_det(det / "ChestX_Det_train.json", image_size=(canvas, canvas)).drop(columns="polygon"),
        ],
        ignore_index=True,
    )
    roots = {"nih": nih / "images", "chestx_det": det / "train"}
    return PatchBank.from_boxes(boxes, roots, canvas=canvas, progress=progress, workers=workers)


def _generate(options: DataOptions, folder: pathlib.Path, *, progress: bool, workers: int) -> PhantomData:
    raw = folder / "phantom"
    common = dict(size=options.canvas, progress=progress, workers=workers, overwrite=True)
    splits = {}
    for name in _SPLITS:
        n = getattr(options, f"n_{name}")
        min_rate = 0.0 if name == "train" else options.eval_min_rate
        root = generate("cxr-lt", raw / name, n=n, seed=_seed(options, name), min_rate=min_rate, **common)
        splits[name] = _cxr_lt_split(root, options.canvas)
    bank = _bank(raw, options, progress=progress, workers=workers)
    shutil.rmtree(raw, ignore_errors=True)
    return PhantomData(**splits, bank=bank, info={})


def _summary(data: PhantomData, options: DataOptions, seconds: float) -> dict:
    def positives(split: Split) -> dict[str, int]:
        return dict(zip(CXR_LT_CLASSES, (int(v) for v in split.labels.sum(0)), strict=True))

    return {
        "options": options.to_dict(),
        "digest": options.digest(),
        "images": {name: len(data.split(name)) for name in _SPLITS},
        "positives": {name: positives(data.split(name)) for name in _SPLITS},
        "bank_patches": {k: v for k, v in data.bank.class_counts().items() if v},
        "seconds_to_build": round(seconds, 1),
    }


def load_phantom_data(
    options: DataOptions, cache: str | pathlib.Path = DEFAULT_CACHE, *, progress: bool = True, workers: int = 0
) -> PhantomData:
    """The experiment's data for ``options``: loaded from ``cache`` when there, else drawn, decoded and cached.

    Args:
        options: what to draw (:class:`~benchmarks.accuracy_config.DataOptions`).
        cache: cache root; the data lies in ``cache / options.digest()`` (``data.json`` marks it complete).
        progress: show the generator's progress bars.
        workers: generator processes (0: up to 2).

    Returns:
        the :class:`PhantomData`; ``info["cached"]`` says whether it was loaded from the cache.
    """
    options.validate()
    cache = pathlib.Path(cache)
    folder = cache / options.digest()
    marker = folder / "data.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("options") == options.to_dict():
            tensors = load_file(folder / "splits.safetensors")
            splits = {n: Split(tensors[f"{n}_images"], tensors[f"{n}_labels"]) for n in _SPLITS}
            bank = PatchBank.load(folder / "bank.safetensors")
            return PhantomData(**splits, bank=bank, info={**info, "cached": True})
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    if cache.resolve() == DEFAULT_CACHE:
        atomic_write(DEFAULT_CACHE.parent / ".gitignore", "*\n")  # the default cache never enters git
    data = _generate(options, folder, progress=progress, workers=workers)
    tensors = {}
    for name in _SPLITS:
        split = data.split(name)
        tensors[f"{name}_images"], tensors[f"{name}_labels"] = split.images.contiguous(), split.labels.contiguous()
    atomic_write(folder / "splits.safetensors", save(tensors))
    data.bank.save(folder / "bank.safetensors")
    data.info = _summary(data, options, time.perf_counter() - t0)
    atomic_write(marker, json.dumps(data.info, indent=1))
    data.info = {**data.info, "cached": False}
    return data
