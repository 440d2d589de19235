"""Throughput benchmarks of DADAM against its peers, the memory roofline, an FPSM step and the input pipeline.

The command line is ``python -m benchmarks.throughput --help``. The package, one concept per module:

- :mod:`benchmarks.config`: :class:`BenchConfig` and the presets of :func:`make_config`;
- :mod:`benchmarks.timing`: seconds per call, interleaved rounds, images/s, page faults;
- :mod:`benchmarks.inputs`: the synthetic bank, label batches, image batches and JPEG files;
- :mod:`benchmarks.peers`: the clone roofline, the naive loop, kornia, DALI and the offline reference;
- :mod:`benchmarks.groups`: the benchmark groups and :func:`run_benchmarks`;
- :mod:`benchmarks.results`: :class:`Result` rows, their ratios, the roofline check and the targets;
- :mod:`benchmarks.report`: the table, the JSON document and the PNG chart;
- :mod:`benchmarks.throughput`: the command line.
"""

from benchmarks.config import BenchConfig, make_config
from benchmarks.groups import run_benchmarks
from benchmarks.inputs import benchmark_labels, synthetic_bank, synthetic_label_pool
from benchmarks.peers import naive_paste_loop
from benchmarks.results import Result
from benchmarks.timing import time_call, time_interleaved

__all__ = [
    "BenchConfig",
    "Result",
    "benchmark_labels",
    "make_config",
    "naive_paste_loop",
    "run_benchmarks",
    "synthetic_bank",
    "synthetic_label_pool",
    "time_call",
    "time_interleaved",
]
