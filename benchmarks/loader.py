"""Can the input pipeline feed the model? Loader + DADAM images/s against the model's consumption, on one machine.

Three rows, measured in one run on the present device:

- ``JPEG -> loader``: one epoch of the torch ``DataLoader`` (:mod:`dadam.data`, the default worker count) over
  grayscale JPEGs, the uint8 batches moved to the device;
- ``JPEG -> loader + DADAM extend + base aug + normalise``: the whole input side of a training step (the epoch in the
  paper's composition, :class:`dadam.extend.ExtendSampler`; DADAM on the extra samples, the light base augmentation
  and the backbone's normalisation on the device), no model;
- ``FPSM step (consumption)``: training steps of the model on a batch already on the device (TResNet-L at 448, B=64,
  bf16, channels_last, fused AdamW on CUDA; resnet10t on the CPU), timed as blocks of back-to-back steps.

``input_over_model`` (in the second row) is the input side's rate over the model's: below 1 the GPU waits for the
loader (raise ``--num-workers``, use DALI, or store the images smaller). Full-size MIMIC-CXR JPEGs decode much
slower than the default source images here; ``--source-size`` and ``--root/--csv`` (a real label table) bring the
measurement closer to a given dataset.

Usage::

    python -m benchmarks.loader                       # CPU: small and quick
    python -m benchmarks.loader --device cuda --json benchmarks/loader_h100.json
    python -m benchmarks.loader --root /data/mimic-cxr-jpg --csv /data/mimic-cxr-jpg/train.csv --images 2048

:func:`loader_group` returns the rows as :class:`benchmarks.results.Result` for ``python -m benchmarks.throughput``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from benchmarks.config import add_device_argument, device_from_args
from benchmarks.results import Result
from benchmarks.timing import sync

__all__ = ["LoaderBench", "loader_group", "main", "run_loader_bench"]


@dataclass
class LoaderBench:
    """What :func:`run_loader_bench` measures.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        images: JPEGs written (or rows read from ``csv``).
        source_size: side of the written JPEGs (the decode cost grows with it).
        canvas: training canvas ``S``.
        batch: images per batch (loader and model).
        workers: loader workers (None: :func:`dadam.data.default_num_workers`).
        backbone: the model whose consumption is measured (None: tresnet_l on CUDA, resnet10t on the CPU).
        steps: timed model steps (in blocks without a sync between steps).
        root / csv: a real dataset instead of written JPEGs (a label table with ``image_id``, ``path`` and the 26
            classes; paths relative to ``root``).
        seed: seed of the inputs, DADAM and the augmentation.
    """

    device: str = "cpu"
    images: int = 64
    source_size: int = 512
    canvas: int = 224
    batch: int = 16
    workers: int | None = None
    backbone: str | None = None
    steps: int = 6
    root: str | None = None
    csv: str | None = None
    seed: int = 0


def _epoch(loader, step, device: torch.device) -> tuple[float, int]:
    """Seconds and images of one pass: each batch to the device, then ``step(batch)``; one sync at the end."""
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        step(batch)
        n += batch[0].shape[0]
    sync(device)
    return time.perf_counter() - t0, n


def _table(cfg: LoaderBench, folder: pathlib.Path) -> tuple[pd.DataFrame, pathlib.Path]:
    """The label table and image root: the given dataset, or phantom-like JPEGs written into ``folder``."""
    if cfg.csv:
        table = pd.read_csv(cfg.csv).head(cfg.images)
        return table, pathlib.Path(cfg.root or pathlib.Path(cfg.csv).parent)
    from benchmarks.inputs import write_jpegs

    return write_jpegs(folder, cfg.images, cfg.source_size, seed=cfg.seed), folder


def run_loader_bench(cfg: LoaderBench) -> list[Result]:
    """Measure the three rows (see the module docstring); each row that fails is reported as ``error: ...``."""
    from dadam import DadamConfig, DiseasedAreaAugment, LabelStats
    from dadam.data import InputNormalizer, LabelDataset, default_num_workers, make_loader
    from dadam.extend import ExtendSampler, extend_pools
    from fpsm.training.base_aug import BaseAugment

    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    workers = default_num_workers() if cfg.workers is None else cfg.workers
    backbone = cfg.backbone or ("tresnet_l" if cuda else "resnet10t")
    S, B = cfg.canvas, cfg.batch
    common = dict(batch=B, shape=[1, S, S], dtype="uint8")
    names = (
        f"JPEG -> loader ({workers} workers)",
        "JPEG -> loader + DADAM extend + base aug + normalise",
        f"FPSM step {backbone} {S} px (consumption)",
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dadam_loader_") as tmp:
        table, root = _table(cfg, pathlib.Path(tmp))
        ds = LabelDataset(table, root, canvas=S)
        # 1. the loader alone
        try:
            loader = make_loader(ds, batch_size=B, train=True, seed=cfg.seed, num_workers=workers)
            move = lambda b: b[0].to(device, non_blocking=True)  # noqa: E731
            _epoch(loader, move, device)  # warm-up: workers start, page cache
            t, n = _epoch(loader, move, device)
            results.append(Result(names[0], "pipeline", n / t, times_s=[t], extra={"images": n}, **common))
        except Exception as e:
            results.append(Result.failed(names[0], "pipeline", e, **common))
        # 2. the input side of a training step: extend-mode epoch, DADAM on the extras, base aug, normalisation
        try:
            from benchmarks.inputs import synthetic_bank, synthetic_label_pool

            stats = LabelStats.from_labels(synthetic_label_pool(8192, seed=cfg.seed))  # CXR-LT-like frequencies
            config = DadamConfig(mode="extend")
            generator = torch.Generator(device=device).manual_seed(cfg.seed)
            aug = DiseasedAreaAugment(
                synthetic_bank(S, seed=cfg.seed), stats, generator=generator, **config.replace(p=1.0).augment_options()
            ).to(device)
            paste, blend = extend_pools(ds.labels, aug.tables)
            n_paste, n_blend = config.extra_counts(len(ds))
            n_paste, n_blend = n_paste * (len(paste) > 0), n_blend * (len(blend) > 0)  # a small table may lack a kind
            sampler = ExtendSampler(len(ds), paste, blend, n_paste=n_paste, n_blend=n_blend, seed=cfg.seed)
            loader = make_loader(ds, batch_size=B, train=True, seed=cfg.seed, num_workers=workers, sampler=sampler)
            base = BaseAugment()
            normalize = InputNormalizer(mean=(0.0,), std=(1.0,), channels_last=cuda)

            def full(batch):
                images = batch[0].to(device, non_blocking=True)
                labels = batch[1].to(device, non_blocking=True)
                mask = batch.extra.to(device, non_blocking=True)
                images, labels = aug(images, labels, mask=mask)
                return normalize(base(images, generator=generator))

            _epoch(loader, full, device)
            t, n = _epoch(loader, full, device)
            extra = {"images": n, "originals": len(ds), "extra_paste": n_paste, "extra_blend": n_blend}
            results.append(Result(names[1], "pipeline", n / t, times_s=[t], extra=extra, **common))
        except Exception as e:
            results.append(Result.failed(names[1], "pipeline", e, **common))
    # 3. the model's consumption on a resident batch
    try:
        results.append(_model_row(names[2], backbone, S, B, cfg.steps, device, common))
    except Exception as e:
        results.append(Result.failed(names[2], "train", e, **common))
    model_rate, input_rate = results[2].images_per_s, results[1].images_per_s
    if model_rate and input_rate:
        results[1].extra["input_over_model"] = input_rate / model_rate
    return results


def _model_row(name: str, backbone: str, S: int, B: int, steps: int, device: torch.device, common: dict) -> Result:
    """Training steps of the FPSM on one resident normalised batch: warm-up, then ``steps`` back to back."""
    from fpsm import create_fpsm, pyramid_loss

    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    model = create_fpsm(backbone).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda or None)
    x = torch.rand(B, 3, S, S, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(B, 26, device=device) < 0.1).float()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = pyramid_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up: cuDNN autotune, allocator
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    t = (time.perf_counter() - t0) / steps
    extra = {"backbone": backbone, "amp": "bf16" if cuda else "fp32", "channels_last": cuda}
    return Result(name, "train", B / t, times_s=[t], extra=extra, **common)


def loader_group(cfg, progress=None) -> list[Result]:
    """The rows for ``python -m benchmarks.throughput`` from its :class:`benchmarks.config.BenchConfig` (the input
    pipeline's images, batch and canvas; the FPSM step's backbone on CUDA); skipped with ``--skip pipeline``."""
    if "pipeline" in cfg.skip:
        return []
    cuda = cfg.device == "cuda"
    bench = LoaderBench(
        device=cfg.device,
        images=cfg.pipeline_images,
        canvas=cfg.pipeline_size,
        batch=cfg.pipeline_batch,
        backbone=cfg.train_backbone if not cuda else None,
        seed=cfg.seed,
    )
    if progress is not None:
        progress.set_description("loader vs model")
    rows = run_loader_bench(bench)
    if progress is not None:
        progress.update()
    return rows


def _format(rows: Sequence[Result]) -> str:
    lines = [f"{'benchmark':<58} {'img/s':>10}  notes"]
    for r in rows:
        rate = f"{r.images_per_s:,.1f}" if r.images_per_s else "-"
        note = r.status if r.status != "ok" else ""
        if "input_over_model" in r.extra:
            ratio = r.extra["input_over_model"]
            note = f"{ratio:.2f}x the model's consumption" + (" (the GPU waits for the input)" if ratio < 1 else "")
        lines.append(f"{r.name:<58} {rate:>10}  {note}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: print the rows, optionally write them as JSON."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.loader",
        description="Loader + DADAM images/s against the model's consumption, on the present device.",
    )
    add_device_argument(p)
    p.add_argument("--images", type=int, default=None, help="images per epoch (default: 512 on CUDA, 64 on CPU)")
    p.add_argument("--source-size", type=int, default=None, help="side of the written JPEGs (default 1024; CPU 512)")
    p.add_argument("--canvas", type=int, default=None, help="training canvas (default: 448 on CUDA, 224 on CPU)")
    p.add_argument("--batch", type=int, default=None, help="images per batch (default: 64 on CUDA, 16 on CPU)")
    p.add_argument("--num-workers", type=int, default=None, help="loader workers (default: the CPUs per rank)")
    p.add_argument("--backbone", default=None, help="model of the consumption row (default: tresnet_l on CUDA)")
    p.add_argument("--root", default=None, help="image root of --csv")
    p.add_argument("--csv", default=None, help="a label table to read images from instead of written JPEGs")
    p.add_argument("--json", type=pathlib.Path, default=None, help="write the rows here")
    args = p.parse_args(argv)
    device = device_from_args(p, args)
    cuda = device == "cuda"
    cfg = LoaderBench(
        device=device,
        images=args.images or (512 if cuda else 64),
        source_size=args.source_size or (1024 if cuda else 512),
        canvas=args.canvas or (448 if cuda else 224),
        batch=args.batch or (64 if cuda else 16),
        workers=args.num_workers,
        backbone=args.backbone,
        root=args.root,
        csv=args.csv,
    )
    for name in ("images", "source_size", "canvas", "batch"):
        if getattr(cfg, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"device: {name}  date: {time.strftime('%Y-%m-%d')}  torch {torch.__version__}")
    rows = run_loader_bench(cfg)
    print(_format(rows))
    if args.json is not None:
        from dadam.files import atomic_write

        doc = {"device": name, "date": time.strftime("%Y-%m-%d"), "rows": [r.to_json() for r in rows]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.json, json.dumps(doc, indent=2, default=str) + "\n")
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
