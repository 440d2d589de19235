"""What the realism options cost: DADAM's forward with ``feather`` and ``match`` against the paper's hard paste.

Target (the realism issue): on a GPU, the options add at most 10 % to the hard paste's forward (``B=256``). Rows, for
each ``(batch, channels, dtype)`` of the config, timed in interleaved rounds so that load drift hits all alike:

- ``DADAM (hard paste)``: the defaults (``feather=0, match="none"``);
- ``DADAM feather=8``: the ramp, computed inside the paste kernel (no launch added);
- ``DADAM match=meanstd``: the statistics and the map (two launches on CUDA: the zeroed sums and the match kernel);
- ``DADAM feather=8, match=meanstd``: both (the setting of the realism targets).

Every module draws with the same seed, so call ``i`` of each places the same patches. ``overhead_vs_hard_paste_pct``
is the added time per call in percent of the hard paste's (medians of the same run); on CUDA ``kernels_per_call``
counts the device kernels of one forward (``torch.profiler``).
"""

from __future__ import annotations

import statistics

import torch

from benchmarks.config import DADAM, BenchConfig
from benchmarks.inputs import augment_setup, benchmark_labels, image_batch
from benchmarks.results import Result
from benchmarks.sampler import device_kernels
from benchmarks.timing import images_per_s, time_interleaved
from dadam import DiseasedAreaAugment

__all__ = ["HARD", "OPTIONS", "realism_group"]

HARD = "DADAM (hard paste)"
#: row name -> the options it adds to the benchmark's DADAM config
OPTIONS = {
    HARD: {},
    "DADAM feather=8": {"feather": 8},
    "DADAM match=meanstd": {"match": "meanstd"},
    "DADAM feather=8, match=meanstd": {"feather": 8, "match": "meanstd"},
}


def realism_group(cfg: BenchConfig, progress=None) -> list[Result]:
    """The rows of :data:`OPTIONS` for each ``(batch, channels, dtype)`` of ``cfg.configs`` (see the module doc)."""
    device = torch.device(cfg.device)
    setup = augment_setup(cfg.size, device=device, seed=cfg.seed)
    timing = dict(device=device, warmup=cfg.warmup, repeats=cfg.repeats, inner=cfg.inner, budget_s=cfg.budget_s)
    results: list[Result] = []
    for batch, channels, dtype in cfg.configs:
        common = dict(batch=batch, shape=[channels, cfg.size, cfg.size], dtype=dtype)
        if progress is not None:
            progress.set_description(f"realism options B={batch} {channels}x{cfg.size} {dtype}")
        try:
            images = image_batch(batch, channels, dtype, cfg.size, device=device, seed=cfg.seed)
            labels = benchmark_labels(batch, setup.aug.tail_mask, seed=cfg.seed, pool=setup.pool).to(device)
            modules = {
                name: DiseasedAreaAugment.from_config(
                    setup.bank, setup.stats, DADAM.replace(**options), generator=cfg.seed
                ).to(device)
                for name, options in OPTIONS.items()
            }
            calls = {name: (lambda aug=aug, x=images, y=labels: aug(x, y)) for name, aug in modules.items()}
            times = time_interleaved(calls, **timing)
            hard = statistics.median(times[HARD])
            for name, aug in modules.items():
                extra = {
                    **OPTIONS[name],
                    "overhead_vs_hard_paste_pct": 100.0 * (statistics.median(times[name]) - hard) / hard,
                    "backend": aug.backend,
                }
                if device.type == "cuda":
                    extra["kernels_per_call"] = device_kernels(calls[name])
                results.append(
                    Result(
                        name, "realism", images_per_s(batch, times[name]), times_s=times[name], extra=extra, **common
                    )  # fmt: skip
                )
        except Exception as e:
            results += [Result.failed(name, "realism", e, **common) for name in OPTIONS]
        if progress is not None:
            progress.update()
    return results
