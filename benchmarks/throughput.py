"""Throughput of online DADAM against its peers, the memory roofline, a training step and the input pipeline.

One run on the present device measures images/s as the median of repeated timed runs after warm-up (CUDA events
on a GPU, ``time.perf_counter`` on the CPU):

- ``DADAM``: the full :class:`dadam.DiseasedAreaAugment` forward (sampling, paste, blend, labels) with
  ``max_patches=4, p=1`` on a synthetic bank (lesions of 5-30 % of the canvas side, every disease class) and a label
  batch of ~40 % normal and ~30 % tail-class images, at ``3xSxS float32`` and ``1xSxS uint8``;
- its peers on the same batch: kornia ``RandomCutMixV2`` / ``RandomMixUpV2`` (with multi-hot label mixing), DALI
  ``fn.multi_paste`` (when installed; pastes only), a naive per-sample Python loop doing the same paste/blend with
  the same params (its output must equal DADAM's), and the offline reference (:mod:`dadam.offline`, one image at a
  time including the PNG write; extrapolated to 100k images);
- the memory roofline: ``images.clone()`` of the same batch, and DADAM's fraction of it;
- an FPSM training step with and without DADAM (TResNet-L at 448, B=64, bf16, channels_last on a GPU; resnet10t on
  the CPU): the overhead in %;
- the input pipeline from JPEG files: torch ``DataLoader`` (:mod:`dadam.data`) against DALI (:mod:`dadam.dali`).

A peer that cannot run here (not installed, not importable, wrong dtype) is reported as ``skipped: reason``; a peer
that fails is reported as ``error: ...``. The exit status is 1 only when the naive loop's output differs from DADAM's.

Usage::

    python benchmarks/throughput.py                      # --quick on the CPU (< 60 s on 2 cores)
    python benchmarks/throughput.py --device cuda --json benchmarks/throughput_h100.json
    python benchmarks/throughput.py --device cuda --compile --batch 64 256

Output: a table on stdout (ratios against the naive loop, kornia CutMix, the offline reference and the roofline, and
PASS/MISS against the targets), ``--json PATH`` (device, date, versions, ``results`` entries and ``targets``) and a
bar chart ``--png PATH`` (default: next to the JSON, else ``benchmarks/throughput.png``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the repo's packages come first
    sys.path.insert(0, str(ROOT))

from dadam import DiseasedAreaAugment, LabelStats, PatchBank  # noqa: E402
from dadam.labels import CXR_LT_CLASSES, CXR_LT_TRAIN_COUNTS, CXR_LT_TRAIN_IMAGES, NO_FINDING  # noqa: E402
from dadam.sampling import MODE_BLEND, MODE_PASTE, DadamParams  # noqa: E402

__all__ = [
    "BenchConfig",
    "Result",
    "benchmark_labels",
    "main",
    "make_config",
    "naive_paste_loop",
    "run_benchmarks",
    "synthetic_bank",
    "synthetic_label_pool",
    "time_call",
    "time_interleaved",
]

NUM_CLASSES = len(CXR_LT_CLASSES)
NF = CXR_LT_CLASSES.index(NO_FINDING)
MAX_PATCHES = 4
OFFLINE_EXTRAPOLATE = 100_000

# Targets (see the issue). Values are checked where the entry exists on the device the run is on.
CUDA_TARGETS = {
    "dadam_f32_b256_img_s": 500_000.0,
    "dadam_f32_b256_roofline": 0.55,
    "dadam_u8_b256_img_s": 2_000_000.0,
    "dadam_vs_kornia_cutmix": 500.0,
    "fpsm_overhead_pct": 0.5,
    "dadam_vs_offline": 1000.0,
}
CPU_TARGETS = {"dadam_vs_naive_loop": 1.0}


# ---------------------------------------------------------------------------------------------------------- config
@dataclass
class BenchConfig:
    """What one run measures (see :func:`make_config` for the presets).

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        size: canvas side ``S`` of the augmentation benchmarks.
        configs: ``(batch, channels, dtype)`` triples of the augmentation benchmarks.
        warmup: untimed calls before the timed ones.
        repeats: timed runs (the median is reported).
        inner: calls per timed run (CUDA: many short calls between two events).
        budget_s: a timed benchmark stops repeating after this many seconds (at least 2 runs).
        offline_images: images the offline reference processes (one at a time, PNG written).
        train_backbone / train_size / train_batch / train_repeats: the FPSM step.
        pipeline_images / pipeline_batch / pipeline_size: the JPEG input-pipeline test.
        compile: also time a ``torch.compile``'d DADAM.
        paths: also time DADAM with these forced paste paths of :func:`dadam.ops.paste_patches`.
        skip: benchmark groups not to run (``kornia``, ``dali``, ``naive``, ``offline``, ``train``, ``pipeline``).
        seed: seed of every synthetic input.
        progress: show a progress bar on stderr.
    """

    device: str = "cpu"
    size: int = 448
    configs: list[tuple[int, int, str]] = field(default_factory=list)
    warmup: int = 1
    repeats: int = 5
    inner: int = 1
    budget_s: float = 3.0
    offline_images: int = 8
    train_backbone: str = "resnet10t"
    train_size: int = 224
    train_batch: int = 8
    train_repeats: int = 3
    pipeline_images: int = 32
    pipeline_batch: int = 16
    pipeline_size: int = 448
    compile: bool = False
    paths: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    seed: int = 0
    progress: bool = True


def make_config(
    *,
    device: str,
    quick: bool,
    tiny: bool = False,
    size: int | None = None,
    batches: Sequence[int] | None = None,
    compile: bool = False,
    skip: Sequence[str] = (),
    progress: bool = True,
) -> BenchConfig:
    """The preset for a device: full (GPU), ``quick`` (the CPU default, < 60 s on 2 cores) or ``tiny`` (tests).

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        quick: fewer repeats and configs.
        tiny: the smallest run (the test suite): 128-pixel canvas, B=8, a 64-pixel FPSM step.
        size: canvas side (default 448; 128 with ``tiny``).
        batches: batch sizes of the augmentation benchmarks (default per preset).
        compile: also time ``torch.compile(aug)``.
        skip: groups not to run.
        progress: progress bar on stderr.

    Returns:
        the :class:`BenchConfig`.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    cuda = device == "cuda"
    if tiny:
        cfg = BenchConfig(
            device=device,
            size=size or 128,
            warmup=1,
            repeats=3,
            budget_s=0.5,
            offline_images=3,
            train_size=64,
            train_batch=2,
            train_repeats=2,
            pipeline_images=8,
            pipeline_batch=4,
            pipeline_size=size or 128,
        )
        default_batches = [8]
    elif cuda:
        cfg = BenchConfig(
            device=device,
            size=size or 448,
            warmup=3,
            repeats=7 if quick else 15,
            inner=20,
            budget_s=10.0,
            offline_images=20 if quick else 100,
            train_backbone="tresnet_l",
            train_size=448,
            train_batch=64,
            train_repeats=10 if quick else 30,
            pipeline_images=256 if quick else 1024,
            pipeline_batch=64,
            pipeline_size=size or 448,
        )
        default_batches = [64, 256]
    else:
        cfg = BenchConfig(
            device=device,
            size=size or 448,
            warmup=1,
            repeats=5 if quick else 11,
            budget_s=2.0 if quick else 10.0,
            offline_images=8 if quick else 32,
            train_size=160 if quick else 224,
            train_batch=8,
            train_repeats=5 if quick else 9,
            pipeline_images=32 if quick else 128,
            pipeline_batch=16,
            pipeline_size=size or 448,
        )
        default_batches = [32] if quick else [64, 256]
    for b in batches or []:
        if b < 1:
            raise ValueError(f"batch sizes must be >= 1, got {b}")
    chosen = list(batches) if batches else default_batches
    configs = []
    for b in chosen:
        # 3xSxS float32 at B=256 is 0.6 GB per batch: left out on the CPU (the issue: "skip 256 fp32 on CPU").
        if cuda or tiny or b < 256:
            configs.append((b, 3, "float32"))
        configs.append((b if (cuda or tiny or not quick) else max(b, 64), 1, "uint8"))
    cfg.configs = sorted(set(configs), key=lambda c: (c[2] != "float32", c[0]))
    cfg.compile = bool(compile)
    # the forced paste paths: both GPU paths on CUDA, the vectorised one on the CPU outside quick runs
    cfg.paths = ("vectorised", "triton") if cuda and not tiny else () if (quick or tiny) else ("vectorised",)
    cfg.skip = tuple(skip)
    cfg.progress = progress
    return cfg


# ------------------------------------------------------------------------------------------------------- results
@dataclass
class Result:
    """One row of the table / one entry of the JSON ``results`` list.

    Attributes:
        name: what was measured (e.g. ``"DADAM"``, ``"kornia RandomCutMixV2"``).
        group: ``"augment"``, ``"roofline"``, ``"offline"``, ``"train"`` or ``"pipeline"``.
        images_per_s: the median throughput, None when skipped or failed.
        batch: batch size; shape: ``[C, H, W]`` of one image; dtype: image dtype name.
        status: ``"ok"``, ``"skipped: reason"`` or ``"error: reason"``.
        times_s: seconds per call of each timed run.
        extra: ratios, checks and notes (flattened into the JSON entry).
    """

    name: str
    group: str
    images_per_s: float | None = None
    batch: int | None = None
    shape: list[int] | None = None
    dtype: str | None = None
    status: str = "ok"
    times_s: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "name": self.name,
            "group": self.group,
            "images_per_s": self.images_per_s,
            "batch": self.batch,
            "shape": self.shape,
            "dtype": self.dtype,
            "status": self.status,
            "median_s": statistics.median(self.times_s) if self.times_s else None,
            "runs": len(self.times_s),
        }
        out.update(self.extra)
        return out

    @property
    def key(self) -> tuple:
        return (self.batch, tuple(self.shape or ()), self.dtype)


def _skipped(name: str, group: str, reason: str, **kw) -> Result:
    return Result(name, group, status=f"skipped: {reason}", **kw)


def _error(name: str, group: str, err: BaseException, **kw) -> Result:
    msg = f"{type(err).__name__}: {err}".strip().replace("\n", " ")
    return Result(name, group, status=f"error: {msg[:300]}", **kw)


# ------------------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object],
    *,
    device: torch.device | str,
    warmup: int = 1,
    repeats: int = 5,
    inner: int = 1,
    budget_s: float = float("inf"),
) -> list[float]:
    """Seconds per call of ``fn`` for each timed run, after ``warmup`` untimed calls.

    On CUDA a run is ``inner`` back-to-back calls between two CUDA events (the launch queue stays full); on the CPU
    one call timed with ``time.perf_counter``. Repeating stops once the timed runs took ``budget_s`` (at least 2 runs).

    Args:
        fn: the call to time (its result is discarded).
        device: where ``fn`` runs.
        warmup: untimed calls first.
        repeats: most timed runs.
        inner: calls per timed run.
        budget_s: stop repeating after this much measured time.

    Returns:
        seconds per call, one value per timed run.

    Example:
        >>> times = time_call(lambda: torch.zeros(10).sum(), device="cpu", repeats=3)
        >>> len(times), all(t > 0 for t in times)
        (3, True)
    """
    device = torch.device(device)
    if repeats < 1 or inner < 1 or warmup < 0:
        raise ValueError(f"repeats and inner must be >= 1 and warmup >= 0, got {repeats}, {inner}, {warmup}")
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    spent = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) / 1000.0 / inner
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            t = (time.perf_counter() - t0) / inner
        times.append(max(t, 1e-12))
        spent += t * inner
        if spent >= budget_s and len(times) >= 2:
            break
    return times


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    device: torch.device | str,
    warmup: int = 1,
    repeats: int = 5,
    inner: int = 1,
    budget_s: float = float("inf"),
) -> dict[str, list[float]]:
    """Like :func:`time_call` for several calls, one timed run of each per round, so load drift hits all alike.

    Repeating stops once the rounds took ``len(fns) * budget_s`` (at least 2 rounds).

    Returns:
        name -> seconds per call of each timed run.

    Example:
        >>> t = time_interleaved({"a": lambda: None, "b": lambda: None}, device="cpu", repeats=3)
        >>> sorted(t), len(t["a"])
        (['a', 'b'], 3)
    """
    for fn in fns.values():
        time_call(fn, device=device, warmup=warmup, repeats=1, inner=inner)  # warm-up plus one run each
    out: dict[str, list[float]] = {name: [] for name in fns}
    spent = 0.0
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time_call(fn, device=device, warmup=0, repeats=1, inner=inner)[0]
            out[name].append(t)
            spent += t * inner
        if spent >= len(fns) * budget_s and len(out[next(iter(fns))]) >= 2:
            break
    return out


def _ips(batch: int, times: list[float]) -> float:
    return batch / statistics.median(times)


# ----------------------------------------------------------------------------------------------- synthetic inputs
def synthetic_bank(canvas: int, *, per_class: int = 6, seed: int = 0) -> PatchBank:
    """A bank of random uint8 patches for every disease class, sides 5-30 % of the canvas, anywhere on it.

    Args:
        canvas: canvas side ``S``.
        per_class: patches per class (25 disease classes; "No Finding" has none).
        seed: seed of the sizes, positions and pixels.

    Returns:
        the :class:`~dadam.PatchBank`.
    """
    g = torch.Generator().manual_seed(seed)
    lo, hi = max(1, round(0.05 * canvas)), max(1, round(0.30 * canvas))
    patches, boxes, classes = [], [], []
    for c in range(NUM_CLASSES):
        if c == NF:
            continue
        for _ in range(per_class):
            h, w = (int(v) for v in torch.randint(lo, hi + 1, (2,), generator=g))
            y0 = int(torch.randint(0, canvas - h + 1, (1,), generator=g))
            x0 = int(torch.randint(0, canvas - w + 1, (1,), generator=g))
            patches.append(torch.randint(0, 256, (h, w), generator=g, dtype=torch.uint8))
            boxes.append([x0, y0, x0 + w, y0 + h])
            classes.append(c)
    return PatchBank.from_patches(patches, boxes, classes, canvas=canvas)


def synthetic_label_pool(n: int, *, seed: int = 0) -> torch.Tensor:
    """``(n, 26)`` float32 CXR-LT-like labels: "No Finding" at its train frequency, else the real long tail.

    An abnormal row has each disease class ``c`` positive with probability ``freq_c / (1 - freq_NF)`` (capped at
    0.9), redrawn until it has one; this gives the classes positive correlation through the normal/abnormal split.
    """
    g = torch.Generator().manual_seed(seed)
    freq = torch.tensor([CXR_LT_TRAIN_COUNTS[c] / CXR_LT_TRAIN_IMAGES for c in CXR_LT_CLASSES])
    p_nf = float(freq[NF])
    q = (freq / (1 - p_nf)).clamp(max=0.9)
    q[NF] = 0
    normal = torch.rand(n, generator=g) < p_nf
    y = torch.zeros(n, NUM_CLASSES)
    todo = torch.arange(n)[~normal]
    while todo.numel():
        hits = (torch.rand(todo.numel(), NUM_CLASSES, generator=g) < q).float()
        ok = hits.sum(1) > 0
        y[todo[ok]] = hits[ok]
        todo = todo[~ok]
    y[:, NF] = (y.sum(1) == 0).float()
    return y


def benchmark_labels(
    batch: int,
    tail_mask: torch.Tensor,
    *,
    normal: float = 0.4,
    tail: float = 0.3,
    seed: int = 0,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """A label batch with a fixed mix: ``normal`` normal images, ``tail`` with a tail class, the rest other.

    Rows come from :func:`synthetic_label_pool` (or ``pool``), shuffled.

    Args:
        batch: ``B``.
        tail_mask: ``(26,)`` bool, the augmentation's tail classes.
        normal: fraction of normal ("No Finding" only) rows.
        tail: fraction of rows with at least one tail class.
        seed: seed of the row choice.
        pool: label rows to draw from (default: 4096 synthetic rows).

    Returns:
        ``(B, 26)`` float32.
    """
    g = torch.Generator().manual_seed(seed + 1)
    pool = synthetic_label_pool(4096, seed=seed) if pool is None else pool
    is_normal = pool[:, NF] > 0.5
    has_tail = ((pool > 0.5) & tail_mask.cpu()[None]).any(1) & ~is_normal
    other = ~is_normal & ~has_tail
    n_normal = round(normal * batch)
    n_tail = round(tail * batch)
    counts = (n_normal, n_tail, batch - n_normal - n_tail)
    rows = []
    for mask, count in zip((is_normal, has_tail, other), counts, strict=True):
        idx = torch.arange(pool.shape[0])[mask]
        if idx.numel() == 0:  # e.g. a tiny pool: fall back to any abnormal row
            idx = torch.arange(pool.shape[0])[~is_normal]
        rows.append(idx[torch.randint(0, idx.numel(), (count,), generator=g)])
    order = torch.cat(rows)[torch.randperm(batch, generator=g)]
    return pool[order].clone()


def _images(batch: int, channels: int, dtype: str, size: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 2)
    if dtype == "uint8":
        x = torch.randint(0, 256, (batch, channels, size, size), generator=g, dtype=torch.uint8)
    else:
        x = torch.rand(batch, channels, size, size, generator=g).to(getattr(torch, dtype))
    return x.to(device)


# ----------------------------------------------------------------------------------------------------- naive loop
def naive_paste_loop(
    images: torch.Tensor, labels: torch.Tensor, params: DadamParams, patches: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """What a user would write: for every sample and slot, slice-assign (paste) or blend the patch, fix the labels.

    Uses the same params as DADAM (so the outputs can be compared) and DADAM's value convention: float images get
    ``patch / 255``; a blend is ``a * q + (1 - a) * x`` in float32 (rounded half-to-even for uint8).

    Args:
        images: ``(B, C, H, W)`` uint8 or float in [0, 1].
        labels: ``(B, 26)`` labels.
        params: the :class:`~dadam.sampling.DadamParams` of a DADAM call (hard labels).
        patches: the bank's patches, ``patches[i]`` a ``(h, w)`` uint8 tensor on the images' device.

    Returns:
        ``(images, labels)``, new tensors.
    """
    out = images.clone()
    new_labels = labels.clone()
    boxes, pids = params.boxes.tolist(), params.patch_ids.tolist()
    active, modes, classes = params.active.tolist(), params.mode.tolist(), params.classes.tolist()
    is_float = images.dtype.is_floating_point
    for b in range(images.shape[0]):
        if modes[b] == MODE_PASTE:
            new_labels[b] = 0
        for k in range(len(active[b])):
            if not active[b][k]:
                continue
            x0, y0, x1, y1 = boxes[b][k]
            patch = patches[pids[b][k]]
            if modes[b] == MODE_PASTE:
                out[b, :, y0:y1, x0:x1] = patch / 255 if is_float else patch
            elif modes[b] == MODE_BLEND:
                a = params.alpha[b, k]
                q = patch.float() / 255 if is_float else patch.float()
                mixed = a * q + (1 - a) * out[b, :, y0:y1, x0:x1].float()
                out[b, :, y0:y1, x0:x1] = mixed if is_float else mixed.round().clamp(0, 255)
            new_labels[b, classes[b][k]] = 1
    return out, new_labels


# ------------------------------------------------------------------------------------------------------- peers
def _kornia_mix(kind: str, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], object]:
    """A kornia CutMix/MixUp call with multi-hot label mixing (kornia mixes class ids; we pass the row index)."""
    import kornia.augmentation as K

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "cutmix":
            aug = K.RandomCutMixV2(data_keys=["input", "class"], use_correct_lambda=True, p=1.0)
        else:
            aug = K.RandomMixUpV2(data_keys=["input", "class"], p=1.0)
    aug = aug.to(images.device)
    index = torch.arange(images.shape[0], device=images.device)

    def run():
        out, mix = aug(images, index)
        if kind == "cutmix":  # (num_mix=1, B, 3): (own, paired, lambda = 1 - cut area) -> weight of the own labels
            perm, lam = mix[0, :, 1].long(), mix[0, :, 2, None]
            y = lam * labels + (1 - lam) * labels[perm]
        else:  # (B, 3): image = x * (1 - lambda) + x[perm] * lambda
            perm, lam = mix[:, 1].long(), mix[:, 2, None]
            y = (1 - lam) * labels + lam * labels[perm]
        return out, y

    return run


class _DaliMultiPaste:
    """DALI ``fn.multi_paste``: input 0 is the image (the background), inputs 1..K the slot patches (HWC).

    Pastes only (DALI has no blend here): a blend slot is pasted. Inactive slots get a 0x0 region.
    """

    def __init__(self, images, params: DadamParams, patches, *, device: torch.device, threads: int) -> None:
        import numpy as np
        from nvidia.dali import fn, pipeline_def, types

        B, C, H, W = images.shape
        K = params.active.shape[1]
        dali_type = {torch.uint8: types.UINT8, torch.float32: types.FLOAT}[images.dtype]
        gpu = device.type == "cuda"
        np_images = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (B, H, W, C)
        boxes, pids, active = params.boxes.cpu().tolist(), params.patch_ids.cpu().tolist(), params.active.cpu().tolist()
        np_patches = [p.cpu().numpy() for p in patches]
        empty = np.zeros((1, 1, C), np_images.dtype)
        self.feeds: dict[str, list] = {"img": [np_images[b] for b in range(B)]}
        for k in range(K):
            feed = []
            for b in range(B):
                if active[b][k]:
                    p = np_patches[pids[b][k]].astype(np_images.dtype)
                    if np_images.dtype != np.uint8:
                        p = p / np.float32(255)
                    feed.append(np.ascontiguousarray(np.repeat(p[:, :, None], C, axis=2)))
                else:
                    feed.append(empty)
            self.feeds[f"p{k}"] = feed
        if gpu:  # image and patch feeds live on the GPU (DALI reads torch's __cuda_array_interface__)
            for name in [n for n in self.feeds if n == "img" or n.startswith("p")]:
                self.feeds[name] = [torch.from_numpy(a).to(device) for a in self.feeds[name]]
        self.feeds["oa"] = [
            np.array([[0, 0]] + [[boxes[b][k][1], boxes[b][k][0]] for k in range(K)], np.int32) for b in range(B)
        ]
        self.feeds["sh"] = [
            np.array(
                [[H, W]]
                + [
                    [boxes[b][k][3] - boxes[b][k][1], boxes[b][k][2] - boxes[b][k][0]] if active[b][k] else [0, 0]
                    for k in range(K)
                ],
                np.int32,
            )
            for b in range(B)
        ]
        where = "gpu" if gpu else "cpu"

        @pipeline_def(
            batch_size=B,
            num_threads=threads,
            device_id=(device.index or 0) if gpu else None,
            exec_dynamic=True,
            prefetch_queue_depth=1,
        )
        def pipe():
            img = fn.external_source(name="img", layout="HWC", dtype=dali_type, device=where)
            pats = [fn.external_source(name=f"p{k}", layout="HWC", dtype=dali_type, device=where) for k in range(K)]
            oa = fn.external_source(name="oa", dtype=types.INT32)
            sh = fn.external_source(name="sh", dtype=types.INT32)
            return fn.multi_paste(img, *pats, out_anchors=oa, shapes=sh, output_size=[H, W], device=where)

        self.pipe = pipe()
        self.pipe.build()

    def __call__(self):
        for name, feed in self.feeds.items():
            self.pipe.feed_input(name, feed)
        (out,) = self.pipe.run()
        return out

    def output(self) -> torch.Tensor:
        """The pasted batch as ``(B, C, H, W)`` on the CPU."""
        import numpy as np

        out = self()
        if hasattr(out, "as_cpu"):
            out = out.as_cpu()
        return torch.from_numpy(np.stack([np.array(out[i]) for i in range(len(out))])).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------------- benchmarks
def _augment_group(cfg: BenchConfig, device: torch.device, bar, results: list[Result], checks: dict) -> None:
    """DADAM, its peers and the roofline for each ``(batch, channels, dtype)`` config."""
    bank = synthetic_bank(cfg.size, seed=cfg.seed).to(device)
    pool = synthetic_label_pool(8192, seed=cfg.seed)
    stats = LabelStats.from_labels(pool)
    aug = DiseasedAreaAugment(bank, stats, p=1.0, max_patches=MAX_PATCHES, generator=cfg.seed).to(device)
    patches = [bank.patch(i) for i in range(len(bank))]
    timing = dict(device=device, warmup=cfg.warmup, repeats=cfg.repeats, inner=cfg.inner, budget_s=cfg.budget_s)
    slow = dict(device=device, warmup=1, repeats=cfg.repeats, inner=1, budget_s=cfg.budget_s)
    for batch, channels, dtype in cfg.configs:
        common = dict(batch=batch, shape=[channels, cfg.size, cfg.size], dtype=dtype)
        tag = f"B={batch} {channels}x{cfg.size}x{cfg.size} {dtype}"
        images = _images(batch, channels, dtype, cfg.size, device, cfg.seed)
        labels = benchmark_labels(batch, aug.tail_mask, seed=cfg.seed, pool=pool).to(device)
        params = aug.sample(labels)

        bar.set_description(f"DADAM, clone, naive loop {tag}")
        equal = None
        fns = {
            "dadam": lambda images=images, labels=labels: aug(images, labels),
            "replay": lambda images=images, labels=labels, params=params: aug(images, labels, params=params),
            "clone": lambda images=images: images.clone(),
        }
        if "naive" not in cfg.skip:
            ref_images, ref_labels = aug(images, labels, params=params)
            out_images, out_labels = naive_paste_loop(images, labels, params, patches)
            equal = bool(torch.equal(out_images, ref_images)) and bool(torch.equal(out_labels, ref_labels))
            checks.setdefault("naive_loop_equal", []).append(equal)
            fns["naive"] = lambda images=images, labels=labels, params=params: naive_paste_loop(
                images, labels, params, patches
            )
        # interleaved: the ratios DADAM / naive and DADAM / clone see the same machine load
        times = time_interleaved(fns, **timing)
        sample_times = time_call(lambda labels=labels: aug.sample(labels), **timing)
        normal = labels[:, NF] > 0.5
        act = params.active.sum(1).float()
        extra = {
            "p": 1.0,
            "max_patches": MAX_PATCHES,
            "mean_active_patches": float(act.mean()),
            "mean_active_patches_normal": float(act[normal].mean()) if bool(normal.any()) else 0.0,
            "changed_fraction": float(params.changed.float().mean()),
            "normal_fraction": float(normal.float().mean()),
            "sample_only_images_per_s": _ips(batch, sample_times),
            "bank_patches": len(bank),
            "bank_max_size": list(bank.max_size),
        }
        if device.type == "cuda":
            extra["no_host_sync"] = _sync_debug_check(aug, images, labels)
        t = times["dadam"]
        results.append(Result("DADAM", "augment", _ips(batch, t), times_s=t, extra=extra, **common))
        t = times["replay"]
        extra = {"note": "aug(images, labels, params=params): paste, blend, labels; the naive loop's work"}
        results.append(
            Result("DADAM replay (params given)", "augment", _ips(batch, t), times_s=t, extra=extra, **common)
        )
        t = times["clone"]
        results.append(Result("clone (memory roofline)", "roofline", _ips(batch, t), times_s=t, **common))
        if equal is None:
            results.append(_skipped("naive per-sample loop", "augment", "--skip naive", **common))
        else:
            t = times["naive"]
            results.append(
                Result(
                    "naive per-sample loop",
                    "augment",
                    _ips(batch, t),
                    status="ok" if equal else "error: output differs from DADAM on the same params",
                    times_s=t,
                    extra={"equal_to_dadam": equal, "note": "params given (sampling not timed)"},
                    **common,
                )
            )
        bar.update(3)

        for path in cfg.paths:
            name = f"DADAM (paste path={path})"
            bar.set_description(f"{name} {tag}")
            try:

                def forward(images=images, labels=labels, path=path):
                    p = aug.sample(labels)
                    return aug.apply(images, p, path=path), p.labels

                t = time_call(forward, **timing)
                extra = {"note": "sample + apply(path=...) without the module's input checks"}
                results.append(Result(name, "augment", _ips(batch, t), times_s=t, extra=extra, **common))
            except Exception as e:
                results.append(_error(name, "augment", e, **common))

        if cfg.compile:
            bar.set_description(f"DADAM compiled {tag}")
            try:
                compiled = torch.compile(aug)
                t = time_call(lambda c=compiled, images=images, labels=labels: c(images, labels), **timing)
                results.append(Result("DADAM torch.compile", "augment", _ips(batch, t), times_s=t, **common))
            except Exception as e:
                results.append(_error("DADAM torch.compile", "augment", e, **common))

        for kind, name in (("cutmix", "kornia RandomCutMixV2"), ("mixup", "kornia RandomMixUpV2")):
            bar.set_description(f"{name} {tag}")
            if "kornia" in cfg.skip:
                results.append(_skipped(name, "augment", "--skip kornia", **common))
            elif dtype == "uint8":
                results.append(_skipped(name, "augment", "kornia mixes float images only", **common))
            elif importlib.util.find_spec("kornia") is None:  # e.g. a GPU image without it: a skip, not an error
                results.append(_skipped(name, "augment", "kornia not installed", **common))
            else:
                try:
                    fn = _kornia_mix(kind, images, labels)
                    times = time_call(fn, **slow)
                    results.append(Result(name, "augment", _ips(batch, times), times_s=times, **common))
                except Exception as e:
                    results.append(_error(name, "augment", e, **common))
            bar.update()

        name = "DALI fn.multi_paste" + (" (CPU pipeline)" if device.type == "cpu" else "")
        bar.set_description(f"DALI multi_paste {tag}")
        if "dali" in cfg.skip:
            results.append(_skipped(name, "augment", "--skip dali", **common))
        elif importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
            results.append(_skipped(name, "augment", "nvidia-dali not installed", **common))
        else:
            try:
                runner = _DaliMultiPaste(images, params, patches, device=device, threads=max(1, os.cpu_count() or 1))
                pasted = runner.output()
                ref = aug.apply(images, params).cpu()
                rows = (params.mode == MODE_PASTE).cpu()
                equal = bool(torch.equal(pasted[rows], ref[rows]))
                times = time_call(runner, **slow)
                extra = {"equal_to_dadam_on_pastes": equal, "note": "pastes only (no blend), params given"}
                results.append(Result(name, "augment", _ips(batch, times), times_s=times, extra=extra, **common))
            except Exception as e:
                results.append(_error(name, "augment", e, **common))
        bar.update()


def _sync_debug_check(aug, images, labels) -> bool | str:
    """Run DADAM once under ``torch.cuda.set_sync_debug_mode("error")``: True, or the error text of a host sync."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, y = aug(images, labels)
        ok: bool | str = True
    except RuntimeError as e:
        ok = f"host sync: {e}"[:300]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return ok


def _offline_group(cfg: BenchConfig, bar, results: list[Result]) -> None:
    """The offline reference (:mod:`dadam.offline`), one image at a time, PNG written to a temp dir.

    Two entries: the per-image core (``placements`` + ``augment_image`` + PNG encode + atomic write; median over
    images; checked bit-identical to DADAM's uint8 output on the same params) and ``export()`` end to end on JPEG
    sources (decode, resize, augment, PNG, CSV, manifest; wall time / images). Both are extrapolated to 100k images.
    """
    common = dict(batch=1, shape=[1, cfg.size, cfg.size], dtype="uint8")
    names = ("offline reference (per image, PNG write)", "offline export() end to end")
    bar.set_description("offline reference")
    if "offline" in cfg.skip:
        results.extend(_skipped(n, "offline", "--skip offline", **common) for n in names)
        bar.update()
        return
    try:
        offline = importlib.import_module("dadam.offline")
        placements, augment_image, export = offline.placements, offline.augment_image, offline.export
    except Exception as e:  # a peer that is not importable is a skip, not a crash
        reason = f"dadam.offline not importable ({type(e).__name__}: {e})"
        results.extend(_skipped(n, "offline", reason, **common) for n in names)
        bar.update()
        return
    import numpy as np
    from PIL import Image

    n = cfg.offline_images
    bank = synthetic_bank(cfg.size, seed=cfg.seed)
    pool = synthetic_label_pool(8192, seed=cfg.seed)
    stats = LabelStats.from_labels(pool)
    aug = DiseasedAreaAugment(bank, stats, p=1.0, max_patches=MAX_PATCHES, generator=cfg.seed)
    labels = benchmark_labels(n, aug.tail_mask, seed=cfg.seed, pool=pool)
    images = smooth_images(n, cfg.size, seed=cfg.seed)
    online, _, params = aug(images, labels, return_params=True)

    def extrapolate(per_image: float, bytes_per_image: float) -> dict:
        return {
            "bytes_per_image": bytes_per_image,
            "extrapolated_images": OFFLINE_EXTRAPOLATE,
            "extrapolated_hours": per_image * OFFLINE_EXTRAPOLATE / 3600,
            "extrapolated_disk_gb": bytes_per_image * OFFLINE_EXTRAPOLATE / 1e9,
        }

    try:
        with tempfile.TemporaryDirectory(prefix="dadam_offline_") as tmp:
            times, sizes, equal = [], [], True
            for i in range(n):
                t0 = time.perf_counter()
                out = augment_image(images[i, 0].numpy(), placements(bank, params, i))
                path = pathlib.Path(tmp) / f"{i:07d}.png"
                _atomic_write(path, lambda p, out=out: Image.fromarray(out).save(p, format="PNG", compress_level=6))
                times.append(time.perf_counter() - t0)
                sizes.append(path.stat().st_size)
                equal &= bool(np.array_equal(out, online[i, 0].numpy()))
        extra = extrapolate(statistics.median(times), sum(sizes) / n)
        extra["equal_to_dadam"] = equal
        results.append(Result(names[0], "offline", 1 / statistics.median(times), times_s=times, extra=extra, **common))
    except Exception as e:
        results.append(_error(names[0], "offline", e, **common))
    try:
        with tempfile.TemporaryDirectory(prefix="dadam_export_") as tmp:
            src = pathlib.Path(tmp) / "src"
            src.mkdir()
            table = _write_jpegs(src, n, cfg.size, cfg.seed)
            from dadam.config import DadamConfig

            options = dict(seed=cfg.seed, config=DadamConfig(p=1.0, max_patches=MAX_PATCHES), progress=False)
            export(table.iloc[:1], src, bank, stats, pathlib.Path(tmp) / "warmup", **options)  # imports, caches
            t0 = time.perf_counter()
            rep = export(table, src, bank, stats, pathlib.Path(tmp) / "out", **options)
            wall = time.perf_counter() - t0
            nbytes = sum(f.stat().st_size for f in (pathlib.Path(tmp) / "out").rglob("*") if f.is_file())
        extra = extrapolate(wall / n, nbytes / n)
        extra["images_written"] = rep.written
        results.append(Result(names[1], "offline", n / wall, times_s=[wall / n], extra=extra, **common))
    except Exception as e:
        results.append(_error(names[1], "offline", e, **common))
    bar.update()


def _train_group(cfg: BenchConfig, device: torch.device, bar, results: list[Result]) -> None:
    """FPSM training step with and without DADAM on the same uint8 batch; overhead in %."""
    cuda = device.type == "cuda"
    S, B = cfg.train_size, cfg.train_batch
    common = dict(batch=B, shape=[1, S, S], dtype="uint8")
    names = (f"FPSM step {cfg.train_backbone} (no DADAM)", f"FPSM step {cfg.train_backbone} + DADAM")
    bar.set_description("FPSM step")
    if "train" in cfg.skip:
        results.extend(_skipped(n, "train", "--skip train", **common) for n in names)
        bar.update()
        return
    try:
        from fpsm import create_fpsm, pyramid_loss
    except Exception as e:
        results.extend(_skipped(n, "train", f"fpsm not importable ({type(e).__name__}: {e})", **common) for n in names)
        bar.update()
        return
    try:
        try:
            from dadam.data import to_model_input
        except Exception:  # the data module is a peer: fall back to the same normalisation written out
            to_model_input = _to_model_input
        bank = synthetic_bank(S, seed=cfg.seed).to(device)
        pool = synthetic_label_pool(8192, seed=cfg.seed)
        aug = DiseasedAreaAugment(bank, LabelStats.from_labels(pool), p=1.0, max_patches=MAX_PATCHES, generator=0)
        aug = aug.to(device)
        labels = benchmark_labels(B, aug.tail_mask, seed=cfg.seed, pool=pool).to(device)
        images = _images(B, 1, "uint8", S, device, cfg.seed)
        model = create_fpsm(cfg.train_backbone, num_classes=NUM_CLASSES).to(device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

        def step(with_aug: bool):
            x, y = aug(images, labels) if with_aug else (images, labels)
            x = to_model_input(x, channels_last=cuda)
            with amp:
                loss = pyramid_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        one = dict(device=device, warmup=0, repeats=1, inner=1)
        for _ in range(2 if cuda else 1):  # warm-up (cudnn autotune, allocator)
            step(False)
            step(True)
        t_without, t_with = [], []
        for _ in range(cfg.train_repeats):  # interleaved, so drift hits both alike
            t_without += time_call(lambda: step(False), **one)
            t_with += time_call(lambda: step(True), **one)
            if len(t_with) >= 2 and sum(t_without) + sum(t_with) > 4 * cfg.budget_s:
                break
        aug_times = time_call(lambda: aug(images, labels), device=device, warmup=1, repeats=5, inner=cfg.inner)
        m_without, m_with = statistics.median(t_without), statistics.median(t_with)
        overhead = 100.0 * (m_with - m_without) / m_without
        isolated = 100.0 * statistics.median(aug_times) / m_without
        overhead_min = 100.0 * (min(t_with) - min(t_without)) / min(t_without)  # robust to load bursts
        meta = {"backbone": cfg.train_backbone, "amp": "bf16" if cuda else "fp32", "channels_last": cuda}
        results.append(Result(names[0], "train", B / m_without, times_s=t_without, extra=dict(meta), **common))
        extra = dict(meta, overhead_pct=overhead, overhead_pct_min=overhead_min, overhead_pct_isolated=isolated)
        results.append(Result(names[1], "train", B / m_with, times_s=t_with, extra=extra, **common))
    except Exception as e:
        results.extend(_error(n, "train", e, **common) for n in names)
    bar.update()


def _to_model_input(images: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406], device=images.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=images.device).view(1, 3, 1, 1)
    x = (images.float() / 255).expand(-1, 3, -1, -1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def smooth_images(n: int, size: int, *, seed: int = 0) -> torch.Tensor:
    """``(n, 1, size, size)`` uint8 X-ray-like test images: smooth random shading plus mild noise.

    They compress like radiographs (a PNG of 448 x 448 is ~100-150 kB), unlike uniform noise, so the offline
    reference's disk estimate is realistic.
    """
    g = torch.Generator().manual_seed(seed + 3)
    low = torch.rand(n, 1, 12, 12, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return (img * 200 + 20 + torch.rand(n, 1, size, size, generator=g) * 16).clamp(0, 255).to(torch.uint8)


def _write_jpegs(root: pathlib.Path, n: int, size: int, seed: int):
    """``n`` smooth random grayscale JPEGs (``size`` pixels, quality 90) and their label table."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    labels = synthetic_label_pool(n, seed=seed).numpy()
    images = smooth_images(n, size, seed=seed)
    rows = []
    for i in range(n):
        name = f"img_{i:05d}.jpg"
        Image.fromarray(np.ascontiguousarray(images[i, 0].numpy())).save(root / name, quality=90)
        rows.append({"image_id": name, "path": name, **dict(zip(CXR_LT_CLASSES, labels[i].tolist(), strict=True))})
    return pd.DataFrame(rows)


def _epoch_rate(loader, device: torch.device) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for images, _labels, _ids in loader:
        images = images.to(device, non_blocking=True)
        n += images.shape[0]
    _sync(device)
    return time.perf_counter() - t0, n


def _pipeline_group(cfg: BenchConfig, device: torch.device, bar, results: list[Result]) -> None:
    """JPEG files -> decoded, resized uint8 batches on the device: torch DataLoader against DALI."""
    S, B, N = cfg.pipeline_size, cfg.pipeline_batch, cfg.pipeline_images
    common = dict(batch=B, shape=[1, S, S], dtype="uint8")
    workers = max(1, min(8, os.cpu_count() or 1))
    names = (
        f"JPEG -> torch DataLoader ({workers} workers)",
        "JPEG -> DALI " + ("(nvJPEG)" if device.type == "cuda" else "(CPU)"),
    )
    bar.set_description("input pipeline")
    if "pipeline" in cfg.skip:
        results.extend(_skipped(n, "pipeline", "--skip pipeline", **common) for n in names)
        bar.update()
        return
    with tempfile.TemporaryDirectory(prefix="dadam_jpegs_") as tmp:
        root = pathlib.Path(tmp)
        try:
            table = _write_jpegs(root, N, max(S, 512), cfg.seed)
        except Exception as e:
            results.extend(_error(n, "pipeline", e, **common) for n in names)
            bar.update()
            return
        try:
            from dadam.data import LabelDataset, make_loader

            loader = make_loader(
                LabelDataset(table, root, canvas=S),
                batch_size=B,
                train=False,
                num_workers=workers,
                persistent_workers=True,
            )
            _epoch_rate(loader, device)  # warm-up: workers start, page cache
            t, n = _epoch_rate(loader, device)
            results.append(
                Result(names[0], "pipeline", n / t, times_s=[t / max(1, n // B)], extra={"images": n}, **common)
            )
            del loader
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            results.append(
                _skipped(names[0], "pipeline", f"dadam.data not importable ({reason})", **common)
                if isinstance(e, ImportError)
                else _error(names[0], "pipeline", e, **common)
            )
        try:
            from dadam.dali import DaliLoader
        except Exception as e:
            results.append(
                _skipped(names[1], "pipeline", f"dadam.dali not importable ({type(e).__name__}: {e})", **common)
            )
        else:
            try:
                dali_device = "cuda" if device.type == "cuda" else "cpu"
                loader = DaliLoader(
                    table, root, canvas=S, batch_size=B, device=dali_device, train=False, num_threads=workers
                )
                _epoch_rate(loader, device)
                t, n = _epoch_rate(loader, device)
                results.append(
                    Result(names[1], "pipeline", n / t, times_s=[t / max(1, n // B)], extra={"images": n}, **common)
                )
            except Exception as e:
                results.append(_error(names[1], "pipeline", e, **common))
    bar.update()


def _ratios(results: list[Result]) -> None:
    """Add ratios against the naive loop, kornia CutMix, the offline reference and the roofline to each entry."""
    ref = {}
    for r in results:
        if r.images_per_s and r.status == "ok":
            ref[(r.name, r.key)] = r.images_per_s
    offline = next((r.images_per_s for r in results if r.name.startswith("offline reference") and r.images_per_s), None)
    for r in results:
        if r.group != "augment" or not r.images_per_s:
            continue
        naive = ref.get(("naive per-sample loop", r.key))
        cutmix = ref.get(("kornia RandomCutMixV2", r.key))
        clone = ref.get(("clone (memory roofline)", r.key))
        r.extra["speed_vs_naive_loop"] = r.images_per_s / naive if naive else None
        r.extra["speed_vs_kornia_cutmix"] = r.images_per_s / cutmix if cutmix else None
        r.extra["fraction_of_roofline"] = r.images_per_s / clone if clone else None
        r.extra["speed_vs_offline"] = r.images_per_s / offline if offline else None


def _targets(results: list[Result], device: torch.device, checks: dict) -> list[dict]:
    """The issue's targets that apply on this device, each ``{name, value, target, op, pass}``."""
    out: list[dict] = []

    def add(name, value, target, op, entry: Result | None = None):
        ok = None if value is None else (value >= target if op == ">=" else value <= target)
        out.append({"name": name, "value": value, "target": target, "op": op, "pass": ok})
        if entry is not None:
            entry.extra.setdefault("targets", []).append({"name": name, "target": f"{op} {target:g}", "pass": ok})

    dadam = [r for r in results if r.name == "DADAM" and r.images_per_s]
    if device.type == "cuda":
        f32 = next((r for r in dadam if r.batch == 256 and r.dtype == "float32" and r.shape[0] == 3), None)
        u8 = next((r for r in dadam if r.batch == 256 and r.dtype == "uint8" and r.shape[0] == 1), None)
        if f32:
            add("DADAM B=256 3x448 float32 img/s", f32.images_per_s, CUDA_TARGETS["dadam_f32_b256_img_s"], ">=", f32)
            add(
                "DADAM B=256 float32 fraction of clone roofline",
                f32.extra.get("fraction_of_roofline"),
                CUDA_TARGETS["dadam_f32_b256_roofline"],
                ">=",
                f32,
            )
            add(
                "DADAM vs kornia RandomCutMixV2",
                f32.extra.get("speed_vs_kornia_cutmix"),
                CUDA_TARGETS["dadam_vs_kornia_cutmix"],
                ">=",
                f32,
            )
        if u8:
            add("DADAM B=256 1x448 uint8 img/s", u8.images_per_s, CUDA_TARGETS["dadam_u8_b256_img_s"], ">=", u8)
            add(
                "DADAM vs offline reference",
                u8.extra.get("speed_vs_offline"),
                CUDA_TARGETS["dadam_vs_offline"],
                ">=",
                u8,
            )
        step = next((r for r in results if r.group == "train" and "overhead_pct" in r.extra), None)
        if step:
            add(
                "FPSM step overhead of DADAM (%)",
                step.extra["overhead_pct"],
                CUDA_TARGETS["fpsm_overhead_pct"],
                "<=",
                step,
            )
        hosts = [r.extra.get("no_host_sync") for r in dadam if "no_host_sync" in r.extra]
        if hosts:
            out.append(
                {
                    "name": "DADAM without host sync",
                    "value": all(h is True for h in hosts),
                    "target": True,
                    "op": "==",
                    "pass": all(h is True for h in hosts),
                }
            )
    else:
        for r in dadam:
            add(
                f"DADAM vs naive loop B={r.batch} {r.shape[0]}ch {r.dtype}",
                r.extra.get("speed_vs_naive_loop"),
                CPU_TARGETS["dadam_vs_naive_loop"],
                ">=",
                r,
            )
    eq = checks.get("naive_loop_equal")
    if eq:
        out.append(
            {"name": "naive loop output == DADAM output", "value": all(eq), "target": True, "op": "==", "pass": all(eq)}
        )
    return out


def run_benchmarks(cfg: BenchConfig, *, group_wall_s: dict | None = None) -> tuple[list[Result], list[dict]]:
    """Run every benchmark of ``cfg``; return the results (with ratios) and the target checks.

    Args:
        cfg: what to run (:func:`make_config`).
        group_wall_s: if given, filled with the wall seconds of each benchmark group.

    Returns:
        ``(results, targets)``: the :class:`Result` list and the target checks (``{name, value, target, op, pass}``).
    """
    from tqdm.auto import tqdm

    device = torch.device(cfg.device)
    results: list[Result] = []
    checks: dict = {}
    wall = group_wall_s if group_wall_s is not None else {}
    steps = len(cfg.configs) * 6 + 3
    with tqdm(total=steps, disable=not cfg.progress, file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
        for group, run in (
            ("augment", lambda: _augment_group(cfg, device, bar, results, checks)),
            ("offline", lambda: _offline_group(cfg, bar, results)),
            ("train", lambda: _train_group(cfg, device, bar, results)),
            ("pipeline", lambda: _pipeline_group(cfg, device, bar, results)),
        ):
            t0 = time.perf_counter()
            run()
            wall[group] = time.perf_counter() - t0
    _ratios(results)
    return results, _targets(results, device, checks)


# ------------------------------------------------------------------------------------------------------- output
def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo plus the core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod, name in (
        ("torchvision", "torchvision"),
        ("timm", "timm"),
        ("kornia", "kornia"),
        ("numpy", "numpy"),
        ("nvidia.dali", "nvidia-dali"),
    ):
        try:
            out[name] = importlib.import_module(mod).__version__
        except Exception:
            out[name] = None
    out["cuda"] = torch.version.cuda
    return out


def _fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def _fmt_ratio(v: float | None, *, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3g}x"


def format_table(results: list[Result], targets: list[dict]) -> str:
    """The stdout table: one row per result, ratios, targets with PASS/MISS, then the target summary."""
    head = ("benchmark", "B", "image", "img/s", "x naive", "x CutMix", "x offline", "roofline", "target")
    rows = []
    for r in results:
        shape = f"{r.shape[0]}x{r.shape[1]}x{r.shape[2]} {r.dtype}" if r.shape else "-"
        tg = "; ".join(
            f"{t['target']} {'PASS' if t['pass'] else 'MISS' if t['pass'] is False else '?'}"
            for t in r.extra.get("targets", [])
        )
        note = r.status if r.status != "ok" else ""
        if "overhead_pct" in r.extra:
            note = (
                f"overhead {r.extra['overhead_pct']:+.2f}% of the median step (of the fastest: "
                f"{r.extra['overhead_pct_min']:+.2f}%; DADAM alone: {r.extra['overhead_pct_isolated']:.2f}%)"
            )
        if "extrapolated_hours" in r.extra:
            note = f"100k images: {r.extra['extrapolated_hours']:.2f} h, {r.extra['extrapolated_disk_gb']:.1f} GB"
        if r.name == "DADAM":
            note = (
                f"{r.extra['mean_active_patches']:.2f} patches/img ({r.extra['mean_active_patches_normal']:.2f} normal)"
            )
        if "equal_to_dadam" in r.extra:
            same = "output == DADAM" if r.extra["equal_to_dadam"] else "OUTPUT DIFFERS from DADAM"
            note = f"{same}; {note}" if "extrapolated_hours" in r.extra else same
        if "equal_to_dadam_on_pastes" in r.extra:
            note = "pastes only; == DADAM on pasted images" if r.extra["equal_to_dadam_on_pastes"] else "DIFFERS"
        rows.append(
            (
                r.name,
                str(r.batch or "-"),
                shape,
                _fmt_rate(r.images_per_s),
                _fmt_ratio(r.extra.get("speed_vs_naive_loop")),
                _fmt_ratio(r.extra.get("speed_vs_kornia_cutmix")),
                _fmt_ratio(r.extra.get("speed_vs_offline")),
                _fmt_ratio(r.extra.get("fraction_of_roofline"), pct=True),
                tg,
                note,
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + "  notes"]
    lines.append("  ".join("-" * w for w in widths) + "  -----")
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
    lines.append("")
    lines.append("targets:")
    for t in targets:
        verdict = "PASS" if t["pass"] else "MISS" if t["pass"] is False else "n/a"
        value = t["value"]
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"  {verdict:4}  {t['name']}: {shown} (target {t['op']} {t['target']})")
    return "\n".join(lines)


def _atomic_write(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        write(pathlib.Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_png(results: list[Result], path: pathlib.Path, *, title: str) -> None:
    """A horizontal bar chart of images/s (log x-axis), one bar per measured result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r.images_per_s]
    colors = {
        "augment": "tab:blue",
        "roofline": "tab:gray",
        "offline": "tab:red",
        "train": "tab:green",
        "pipeline": "tab:orange",
    }
    labels = []
    for r in rows:
        shape = f" {r.shape[0]}x{r.shape[1]} {r.dtype}" if r.shape else ""
        labels.append(f"{r.name} B={r.batch}{shape}")
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.5))
    y = list(range(len(rows)))[::-1]
    bar_colors = ["navy" if r.name.startswith("DADAM") else colors.get(r.group, "tab:purple") for r in rows]
    ax.barh(y, [r.images_per_s for r in rows], color=bar_colors)
    for yi, r in zip(y, rows, strict=True):
        ax.text(r.images_per_s, yi, f" {_fmt_rate(r.images_per_s)}", va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("images / s (log)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)


def report(cfg: BenchConfig, results: list[Result], targets: list[dict], *, quick: bool) -> dict:
    """The JSON document of a run."""
    device = torch.device(cfg.device)
    return {
        "device": device_name(device),
        "device_type": device.type,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "config": {
            "size": cfg.size,
            "configs": [list(c) for c in cfg.configs],
            "quick": quick,
            "repeats": cfg.repeats,
            "warmup": cfg.warmup,
            "inner": cfg.inner,
            "max_patches": MAX_PATCHES,
            "p": 1.0,
            "label_mix": {"normal": 0.4, "tail": 0.3, "other": 0.3},
            "train": {"backbone": cfg.train_backbone, "size": cfg.train_size, "batch": cfg.train_batch},
            "pipeline": {"images": cfg.pipeline_images, "batch": cfg.pipeline_batch, "size": cfg.pipeline_size},
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "results": [r.to_json() for r in results],
        "targets": targets,
    }


# ---------------------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="throughput.py",
        description="Images/s of online DADAM against kornia, DALI, a naive loop, the offline reference, the memory "
        "roofline, an FPSM training step and the JPEG input pipeline, on the present device.",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available, else cpu")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: 64 256 on CUDA, 32 CPU)")
    p.add_argument("--size", type=int, default=None, help="canvas side in pixels (default 448)")
    p.add_argument("--json", type=pathlib.Path, default=None, help="write the JSON report here")
    p.add_argument(
        "--png",
        type=pathlib.Path,
        default=None,
        help="bar chart (default: next to --json, else benchmarks/throughput.png)",
    )
    p.add_argument(
        "--quick",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fewer repeats and configs (default on the CPU: < 60 s on 2 cores)",
    )
    p.add_argument("--tiny", action="store_true", help="smallest run for the test suite (128-pixel canvas, B=8)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(DiseasedAreaAugment)")
    p.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=("kornia", "dali", "naive", "offline", "train", "pipeline"),
        help="benchmark groups to leave out",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 gives steadier numbers on a shared machine)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 if the naive loop's output differs from DADAM's)."""
    parser = _parser()
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if args.size is not None and args.size < 16:
        parser.error(f"--size must be >= 16, got {args.size}")
    if args.batch and min(args.batch) < 1:
        parser.error(f"--batch sizes must be >= 1, got {args.batch}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    quick = (device == "cpu") if args.quick is None else args.quick
    cfg = make_config(
        device=device,
        quick=quick,
        tiny=args.tiny,
        size=args.size,
        batches=args.batch,
        compile=args.compile,
        skip=args.skip,
        progress=not args.no_progress,
    )
    t0 = time.perf_counter()
    group_wall: dict = {}
    results, targets = run_benchmarks(cfg, group_wall_s=group_wall)
    doc = report(cfg, results, targets, quick=quick)
    doc["wall_s"] = time.perf_counter() - t0
    doc["group_wall_s"] = group_wall
    groups = ", ".join(f"{k} {v:.1f} s" for k, v in group_wall.items())
    load = doc["config"]["load_average"]
    if load:
        groups += f"; load average {load[0]:.1f}"
    print(
        f"device: {doc['device']}  date: {doc['date']}  torch {torch.__version__}  "
        f"({'tiny' if args.tiny else 'quick' if quick else 'full'}, {doc['wall_s']:.1f} s: {groups})"
    )
    print(format_table(results, targets))
    if args.json is not None:
        _atomic_write(args.json, lambda p: p.write_text(json.dumps(doc, indent=2, default=str) + "\n"))
        print(f"json: {args.json}")
    png = args.png or (
        args.json.with_suffix(".png") if args.json is not None else ROOT / "benchmarks" / "throughput.png"
    )
    try:
        write_png(results, png, title=f"{doc['device']} - {doc['date']}")
        print(f"png: {png}")
    except Exception as e:  # the chart is a convenience; the table and JSON are the result
        print(f"png not written: {type(e).__name__}: {e}", file=sys.stderr)
        traceback.print_exc()
    eq = [t for t in targets if t["name"].startswith("naive loop output")]
    return 1 if any(t["pass"] is False for t in eq) else 0


if __name__ == "__main__":
    sys.exit(main())
