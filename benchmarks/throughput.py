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
- the memory roofline: ``images.clone()`` of the same batch, and each row's fraction of it; a row above 100 % is
  flagged with the reason (``above_roofline`` in the JSON);
- an FPSM training step with and without DADAM (TResNet-L at 448, B=64, bf16, channels_last on a GPU; resnet10t on
  the CPU): the overhead in %;
- the input pipeline from JPEG files: torch ``DataLoader`` (:mod:`dadam.data`) against DALI (:mod:`dadam.dali`).

A peer that cannot run here (not installed, not importable, wrong dtype) is reported as ``skipped: reason``; a peer
that fails is reported as ``error: ...``. The exit status is 1 only when the naive loop's output differs from DADAM's.

Usage::

    python -m benchmarks.throughput                      # --quick on the CPU (< 60 s on 2 cores)
    python -m benchmarks.throughput --device cuda --json benchmarks/throughput_h100.json
    python -m benchmarks.throughput --device cuda --compile --batch 64 256

Output: a table on stdout (ratios against the naive loop, kornia CutMix, the offline reference and the roofline, and
PASS/MISS against the targets), ``--json PATH`` (device, date, versions, ``results`` entries and ``targets``) and a
bar chart ``--png PATH`` (default: next to the JSON, else ``benchmarks/throughput.png``).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
if not __package__:  # run as a file (python benchmarks/throughput.py): import this folder as the package by location
    _spec = importlib.util.spec_from_file_location(
        "benchmarks", HERE / "__init__.py", submodule_search_locations=[str(HERE)]
    )
    sys.modules["benchmarks"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["benchmarks"])

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import torch  # noqa: E402

from benchmarks.config import SKIPPABLE, add_device_argument, device_from_args, make_config  # noqa: E402
from benchmarks.groups import run_benchmarks  # noqa: E402
from benchmarks.report import format_table, json_report, write_png  # noqa: E402
from dadam.files import atomic_write  # noqa: E402

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description="Images/s of online DADAM against kornia, DALI, a naive loop, the offline reference, the memory "
        "roofline, an FPSM training step and the JPEG input pipeline, on the present device.",
    )
    add_device_argument(p)
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
    p.add_argument("--skip", nargs="+", default=[], choices=SKIPPABLE, help="benchmark groups to leave out")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads, and DALI's (default: torch's; 1 gives steadier numbers on a shared machine)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 if the naive loop's output differs from DADAM's)."""
    parser = _parser()
    args = parser.parse_args(argv)
    device = device_from_args(parser, args)
    if args.size is not None and args.size < 16:
        parser.error(f"--size must be >= 16, got {args.size}")
    if args.batch and min(args.batch) < 1:
        parser.error(f"--batch sizes must be >= 1, got {args.batch}")
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
    doc = json_report(cfg, results, targets, quick=quick)
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
    backends = sorted({r.extra["backend"] for r in results if "backend" in r.extra})
    doc["dadam_backend"] = backends[0] if len(backends) == 1 else backends
    print(f"DADAM paste backend: {', '.join(backends) or 'not measured'}")
    print(format_table(results, targets))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.json, json.dumps(doc, indent=2, default=str) + "\n")
        print(f"json: {args.json}")
    png = args.png or (args.json.with_suffix(".png") if args.json is not None else HERE / "throughput.png")
    try:
        write_png(results, png, title=f"{doc['device']} - {doc['date']}")
        print(f"png: {png}")
    except Exception as e:  # the chart is a convenience; the table and JSON are the result
        print(f"png not written: {type(e).__name__}: {e}", file=sys.stderr)
        traceback.print_exc()
    naive_equal = [t for t in targets if t["name"].startswith("naive loop output")]
    return 1 if any(t["pass"] is False for t in naive_equal) else 0


if __name__ == "__main__":
    sys.exit(main())
