"""What one benchmark run measures: :class:`BenchConfig` and the presets of :func:`make_config`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from dadam.config import DadamConfig

__all__ = ["DADAM", "SKIPPABLE", "BenchConfig", "add_device_argument", "device_from_args", "make_config"]

# The DADAM options every benchmark row uses: every eligible image augmented, up to 4 patches on a normal image.
DADAM = DadamConfig(p=1.0, max_patches=4)
# The benchmark groups that ``--skip`` leaves out.
SKIPPABLE = ("kornia", "dali", "naive", "offline", "train", "pipeline", "sampler")


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
        sampler_rows: label rows of the sampler benchmark (:mod:`benchmarks.sampler`).
        compile: also time a ``torch.compile``'d DADAM.
        paths: also time DADAM with these forced paste paths of :func:`dadam.ops.paste_patches`.
        skip: benchmark groups not to run (names from :data:`SKIPPABLE`).
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
    sampler_rows: int = 100_000
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

    Example:
        >>> make_config(device="cpu", quick=True).configs
        [(32, 3, 'float32'), (64, 1, 'uint8')]
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
            sampler_rows=20_000,
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
    unknown = sorted(set(skip) - set(SKIPPABLE))
    if unknown:
        raise ValueError(f"skip names groups from {SKIPPABLE}, got {unknown}")
    chosen = list(batches) if batches else default_batches
    configs = []
    for b in chosen:
        # 3xSxS float32 at B=256 is 0.6 GB per batch: left out on the CPU.
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


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--device`` flag of a benchmark command line, read by :func:`device_from_args`."""
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available, else cpu"
    )


def device_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The device of a benchmark command line (``--device``, default CUDA when there is one) and its CPU threads
    (``--threads``, when the command has the flag): set for this process, bad values reported through ``parser``."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            parser.error(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return device
