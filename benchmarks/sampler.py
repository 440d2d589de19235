"""The sampler alone: DADAM's params for a whole label table (labels only, no pixels), one row per companion rule.

This is what an audit or an offline export runs over a training table, and the per-batch cost of the sampler inside
:class:`dadam.DiseasedAreaAugment`. Target (the co-occurrence issue): 100k label rows in at most 3 s on 2 CPU cores;
on CUDA, no host sync after the first call.
"""

from __future__ import annotations

import torch

from benchmarks.config import BenchConfig
from benchmarks.inputs import NUM_CLASSES, synthetic_bank, synthetic_label_pool
from benchmarks.results import Result
from benchmarks.timing import host_sync_check, time_call
from dadam import DiseasedAreaAugment, LabelStats
from dadam.config import COMPANION_RULES, DadamConfig

__all__ = ["SAMPLER", "sampler_group"]

# The options of the sampler rows: the audit setup (p=0.5, max_patches=3, other options at their defaults).
SAMPLER = DadamConfig(p=0.5, max_patches=3)


def sampler_group(cfg: BenchConfig, progress=None) -> list[Result]:
    """``aug.sample(labels)`` over ``cfg.sampler_rows`` label rows, for each companion rule.

    The labels are a CXR-LT-like synthetic table (:func:`~benchmarks.inputs.synthetic_label_pool`) that is also the
    statistics' table; the bank is the benchmark's synthetic bank (every disease class). ``images_per_s`` counts label
    rows per second; ``seconds_per_100k_rows`` is the figure the target reads.
    """
    device = torch.device(cfg.device)
    n = cfg.sampler_rows
    common = dict(batch=n, shape=[NUM_CLASSES], dtype="float32")  # a label row
    if progress is not None:
        progress.set_description(f"sampler, {n} label rows")
    if "sampler" in cfg.skip:
        if progress is not None:
            progress.update()
        return [
            Result.skipped(f"DADAM sampler ({rule})", "sampler", "--skip sampler", **common) for rule in COMPANION_RULES
        ]
    labels = synthetic_label_pool(n, seed=cfg.seed)
    stats = LabelStats.from_labels(labels)
    bank = synthetic_bank(cfg.size, seed=cfg.seed)
    labels = labels.to(device)
    results = []
    for rule in COMPANION_RULES:
        name = f"DADAM sampler ({rule})"
        try:
            config = SAMPLER.replace(companions=rule)
            aug = DiseasedAreaAugment.from_config(bank, stats, config, generator=cfg.seed).to(device)
            times = time_call(lambda aug=aug: aug.sample(labels), device=device, warmup=1, repeats=cfg.repeats)
            median = sorted(times)[len(times) // 2]
            extra = {
                "label_rows": n,
                "companions": rule,
                "p": config.p,
                "max_patches": config.max_patches,
                "seconds": median,
                "seconds_per_100k_rows": median * 100_000 / n,
            }
            if device.type == "cuda":
                extra["no_host_sync"] = host_sync_check(lambda aug=aug: aug.sample(labels))
            results.append(Result(name, "sampler", n / median, times_s=times, extra=extra, **common))
        except Exception as e:
            results.append(Result.failed(name, "sampler", e, **common))
    if progress is not None:
        progress.update()
    return results
