"""The sampler alone: DADAM's params for a whole label table (labels only, no pixels).

This is what an audit or an offline export runs over a training table, and the per-batch cost of the sampler inside
:class:`dadam.DiseasedAreaAugment`. Target (the co-occurrence issue): 100k label rows in at most 3 s on 2 CPU cores;
on CUDA, no host sync after the first call. Rows:

- ``DADAM sampler (cooccurrence)`` and ``(correlation)``: each rule as torch ops (the CPU path and the reference);
- ``DADAM sampler (cooccurrence, Triton kernel)``: the co-occurrence rule's kernel (CUDA only; on the CPU the row says
  ``skipped: no CUDA``), the rule a CUDA :class:`~dadam.DiseasedAreaAugment` runs.

Each row also times one call at the training batch (``B=256``, where launches dominate) and, on CUDA, counts the
device kernels of that call with ``torch.profiler`` (the kernel's budget: 2, the ``torch.rand`` and the kernel).
"""

from __future__ import annotations

import torch

from benchmarks.config import BenchConfig
from benchmarks.inputs import NUM_CLASSES, synthetic_bank, synthetic_label_pool
from benchmarks.results import Result
from benchmarks.timing import host_sync_check, time_call
from dadam import LabelStats
from dadam.config import DadamConfig
from dadam.sampling import build_tables, sample_batch, sampler_backend

__all__ = ["ROWS", "SAMPLER", "TRAIN_BATCH", "device_kernels", "sampler_group"]

# The options of the sampler rows: the audit setup (p=0.5, max_patches=3, other options at their defaults).
SAMPLER = DadamConfig(p=0.5, max_patches=3)
TRAIN_BATCH = 256
# row name -> (companion rule, sample_batch backend)
ROWS = {
    "DADAM sampler (cooccurrence)": ("cooccurrence", "torch"),
    "DADAM sampler (correlation)": ("correlation", "torch"),
    "DADAM sampler (cooccurrence, Triton kernel)": ("cooccurrence", "triton"),
}


def device_kernels(fn) -> int:
    """Kernels one ``fn()`` runs on the GPU, counted with ``torch.profiler`` (CUDA only)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def sampler_group(cfg: BenchConfig, progress=None) -> list[Result]:
    """``sample_batch`` over ``cfg.sampler_rows`` label rows, for each row of :data:`ROWS`.

    The labels are a CXR-LT-like synthetic table (:func:`~benchmarks.inputs.synthetic_label_pool`) that is also the
    statistics' table; the bank is the benchmark's synthetic bank (every disease class). ``images_per_s`` counts label
    rows per second; ``seconds_per_100k_rows`` is the figure the target reads; ``seconds_per_call_b256`` is one call
    at the training batch, ``kernels_per_call_b256`` its device kernels (CUDA).
    """
    device = torch.device(cfg.device)
    n = cfg.sampler_rows
    common = dict(batch=n, shape=[NUM_CLASSES], dtype="float32")  # a label row
    if progress is not None:
        progress.set_description(f"sampler, {n} label rows")
    if "sampler" in cfg.skip:
        if progress is not None:
            progress.update()
        return [Result.skipped(name, "sampler", "--skip sampler", **common) for name in ROWS]
    labels = synthetic_label_pool(n, seed=cfg.seed)
    stats = LabelStats.from_labels(labels)
    bank = synthetic_bank(cfg.size, seed=cfg.seed)
    labels = labels.to(device)
    batch = labels[:TRAIN_BATCH]  # (256, C) one training batch
    results = []
    for name, (rule, backend) in ROWS.items():
        if backend == "triton" and device.type != "cuda":
            results.append(Result.skipped(name, "sampler", "no CUDA", **common))
            continue
        try:
            config = SAMPLER.replace(companions=rule)
            tables = build_tables(bank, stats, config)[0].to(device)
            generator = torch.Generator(device=device).manual_seed(cfg.seed)

            def call(y, tables=tables, config=config, generator=generator, backend=backend):
                return sample_batch(y, tables, config, generator=generator, backend=backend)

            times = time_call(lambda call=call: call(labels), device=device, warmup=1, repeats=cfg.repeats)
            per_call = time_call(lambda call=call: call(batch), device=device, warmup=1, repeats=cfg.repeats)
            median = sorted(times)[len(times) // 2]
            extra = {
                "label_rows": n,
                "companions": rule,
                "backend": backend if backend == "torch" else str(sampler_backend(device, rule)),
                "p": config.p,
                "max_patches": config.max_patches,
                "seconds": median,
                "seconds_per_100k_rows": median * 100_000 / n,
                "seconds_per_call_b256": sorted(per_call)[len(per_call) // 2],
            }
            if device.type == "cuda":
                extra["no_host_sync"] = host_sync_check(lambda call=call: call(labels))
                extra["kernels_per_call_b256"] = device_kernels(lambda call=call: call(batch))
            results.append(Result(name, "sampler", n / median, times_s=times, extra=extra, **common))
        except Exception as e:
            results.append(Result.failed(name, "sampler", e, **common))
    kernel = next((r for r in results if r.name.endswith("Triton kernel)") and r.images_per_s), None)
    torch_row = results[0]
    if kernel is not None and torch_row.images_per_s:
        kernel.extra["speed_vs_torch_ops"] = kernel.images_per_s / torch_row.images_per_s
        kernel.extra["speed_vs_torch_ops_b256"] = (
            torch_row.extra["seconds_per_call_b256"] / kernel.extra["seconds_per_call_b256"]
        )
    if progress is not None:
        progress.update()
    return results
