"""Does DADAM help the tail, and do FPSM's extra heads help small lesions? A controlled experiment on phantom data.

Four arms train on the same phantom CXR-LT images (the CXR-LT 2023 long tail), with the same steps, batches, seeds
and budget, and are scored on a test set of other phantom patients whose lesions are drawn, never pasted:

- a: FPSM stages 4+3+2, no DADAM;
- b: FPSM 4+3+2, DADAM with ``companions="correlation"`` and the hard paste (the paper);
- c: FPSM 4+3+2, DADAM with ``companions="cooccurrence"`` and the realism options (``feather``, ``match``) where
  ``DadamConfig`` has them (else the hard paste, marked in the JSON);
- d: FPSM stage 4 only, no DADAM.

Per seed a base model trains without DADAM; a, b and c fine-tune copies of that one base with the same batches (the
paper's second stage), d trains its own stage-4 model the same way (see :mod:`benchmarks.accuracy_arms`). The
patch bank comes from phantom NIH and ChestX-Det boxes of other patients.

Reported: mAP, tail mAP (classes below the median training frequency), the mAP of the tail classes DADAM pastes,
per-class AP, the AP of small (Nodule) and large (Pleural Effusion, Cardiomegaly) lesions, and paired bootstrap 95%
CIs (test images resampled, the same resample for both arms, seeds averaged) of b - a, c - a and a - d.

Usage::

    python -m benchmarks.accuracy                 # CPU: the cpu preset (< 45 min on 2 cores); CUDA: the gpu preset
    python -m benchmarks.accuracy --quick --json /tmp/acc.json      # the plumbing in < 60 s
    python -m benchmarks.accuracy --pilot         # arm a, one seed, validation set: tail vs head AP, step cost
    python -m benchmarks.accuracy --help

Output: the estimated run time before training, a progress bar, Markdown tables on stdout, ``--json PATH`` (default
``benchmarks/results/accuracy_{cpu,gpu}.json`` for the cpu and gpu presets) and a PNG next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys
import time
from collections.abc import Sequence

from benchmarks.accuracy_arms import probe_seconds, realism_supported, run_arms
from benchmarks.accuracy_config import ARM_NAMES, PRESETS, accuracy_preset
from benchmarks.accuracy_data import DEFAULT_CACHE, load_phantom_data
from benchmarks.accuracy_report import json_document, markdown_tables, run_metrics, write_png
from benchmarks.accuracy_stats import class_groups, paired_bootstrap
from benchmarks.config import add_device_argument, device_from_args
from dadam import DiseasedAreaAugment, LabelStats
from dadam.files import atomic_write
from dadam.labels import CXR_LT_CLASSES

__all__ = ["main"]

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy",
        description="Train FPSM with and without DADAM on phantom chest X-rays (arms a-d, several seeds) and report "
        "mAP, tail mAP, per-class AP, small- vs large-lesion AP and paired bootstrap CIs of b-a, c-a and a-d.",
    )
    add_device_argument(p)
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help="default: gpu on cuda, cpu on the CPU (quick: the test run; pilot: arm a, one seed, validation set)",
    )
    p.add_argument("--quick", action="store_true", help="the quick preset (< 60 s on 2 CPU cores; checks plumbing)")
    p.add_argument("--pilot", action="store_true", help="the pilot preset: arm a, one seed, scored on validation")
    p.add_argument("--arms", nargs="+", choices=ARM_NAMES, default=None, help="arms to run (default: the preset's)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds (default: the preset's)")
    p.add_argument("--base-steps", type=int, default=None, help="steps of the base phase (default: the preset's)")
    p.add_argument("--finetune-steps", type=int, default=None, help="steps of the fine-tune (default: the preset's)")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default: the preset's)")
    p.add_argument(
        "--data", type=pathlib.Path, default=DEFAULT_CACHE, help=f"data cache folder (default {DEFAULT_CACHE})"
    )
    p.add_argument("--json", type=pathlib.Path, default=None, help="JSON path (default: results/accuracy_PRESET.json "
                   "for the cpu and gpu presets, none otherwise)")  # fmt: skip
    p.add_argument("--png", type=pathlib.Path, default=None, help="PNG path (default: next to the JSON)")
    p.add_argument("--resume", action="store_true", help="reuse the base models and predictions a stopped run stored")
    p.add_argument("--budget-minutes", type=float, default=None, help="warn when the estimate exceeds it (cpu: 45)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--workers", type=int, default=0, help="phantom generator processes (default 0: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return p


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser, device: str):
    if sum(map(bool, (args.quick, args.pilot, args.preset))) > 1:
        parser.error("give at most one of --quick, --pilot and --preset")
    name = "quick" if args.quick else "pilot" if args.pilot else args.preset or ("gpu" if device == "cuda" else "cpu")
    cfg = accuracy_preset(name)
    changes = {}
    if args.arms:
        changes["arms"] = tuple(dict.fromkeys(args.arms))
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    for flag in ("base_steps", "finetune_steps", "n_boot"):
        if getattr(args, flag) is not None:
            changes[flag] = getattr(args, flag)
    if device == "cpu" and cfg.bf16:
        changes["bf16"] = False
    try:
        return cfg.replace(**changes).validate()
    except ValueError as err:
        parser.error(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    from tqdm.auto import tqdm

    parser = _parser()
    args = parser.parse_args(argv)
    device = device_from_args(parser, args)
    cfg = _config(args, parser, device)
    json_path = args.json or (RESULTS / f"accuracy_{cfg.preset}.json" if cfg.preset in ("cpu", "gpu") else None)
    budget = args.budget_minutes if args.budget_minutes is not None else 45.0 if cfg.preset == "cpu" else None
    progress = not args.no_progress
    t_start = time.perf_counter()

    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    workers = args.workers or os.cpu_count() or 1
    data = load_phantom_data(cfg.data, args.data, progress=progress, workers=workers)
    data_s = time.perf_counter() - t_start
    evaluation = data.split("val" if cfg.eval_split == "val" else "test")
    stats = LabelStats.from_labels(data.train.labels)
    dadam_tail = DiseasedAreaAugment.from_config(data.bank, stats, cfg.dadam).tail_names
    groups = class_groups(data.train.labels.numpy(), dadam_tail=dadam_tail)
    eval_pos = evaluation.labels.sum(0).long().tolist()
    print(
        f"data: {len(data.train)} train, {len(data.val)} val, {len(data.test)} test images at {cfg.data.canvas} px, "
        f"bank {len(data.bank)} patches ({'cached' if data.info.get('cached') else 'drawn'}, {data_s:.0f} s)"
    )
    print(
        f"tail classes (train frequency below the median; {cfg.eval_split} positives): "
        + ", ".join(f"{CXR_LT_CLASSES[i]} {eval_pos[i]}" for i in groups["tail"])
    )
    print(f"DADAM pastes the tail classes: {', '.join(dadam_tail)}")
    if "c" in cfg.arms and not realism_supported():
        print("arm c: DadamConfig has no feather/match options here; it runs the hard paste (marked in the JSON)")

    probe = probe_seconds(cfg, data, device=device)
    n_runs = len(cfg.arms) * len(cfg.seeds)
    estimate = cfg.total_train_steps * probe["step_s"] + n_runs * len(evaluation) * probe["eval_image_s"]
    elapsed = time.perf_counter() - t_start
    print(
        f"estimate: {cfg.total_train_steps} steps x {probe['step_s']:.2f} s + {n_runs} x {len(evaluation)} eval "
        f"images x {1000 * probe['eval_image_s']:.1f} ms = {estimate / 60:.1f} min (+ {elapsed / 60:.1f} min so far)"
    )
    if budget is not None and (estimate + elapsed) / 60 > budget:
        print(f"warning: the estimate exceeds the {budget:g}-minute budget (is the machine busy?)", file=sys.stderr)

    key = json.dumps({**cfg.to_dict(), "realism": realism_supported(), "device": device}, sort_keys=True)
    runs_dir = args.data / cfg.data.digest() / "runs" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if not args.resume:
        for stale in runs_dir.glob("*"):
            stale.unlink()
    bar = tqdm(total=cfg.total_train_steps, unit="step", disable=not progress, desc="training")
    t_train = time.perf_counter()
    records = run_arms(cfg, data, device=device, runs_dir=runs_dir, on_step=bar.update, on_status=bar.set_description)
    bar.close()
    train_s = time.perf_counter() - t_train

    t_stats = time.perf_counter()
    targets = evaluation.labels.numpy()
    runs = [{"arm": r.arm, "seed": r.seed, **run_metrics(r.probs.numpy(), targets, groups)} for r in records]
    probs = {(r.arm, r.seed): r.probs.numpy() for r in records}
    ci = paired_bootstrap(probs, targets, groups, n_boot=cfg.n_boot, seed=0)
    timing = {
        "data_s": round(data_s, 1),
        "probe": {k: round(v, 4) for k, v in probe.items()},
        "estimated_s": round(estimate + elapsed, 1),
        "train_and_eval_s": round(train_s, 1),
        "stats_s": round(time.perf_counter() - t_stats, 1),
        "total_s": round(time.perf_counter() - t_start, 1),
        "load_average": list(_load_average()),
    }
    info = {k: v for k, v in data.info.items() if k != "cached"}
    doc = json_document(cfg, device=device, data_info=info, groups=groups, records=records, runs=runs, ci=ci,
                        timing=timing)  # fmt: skip
    print(markdown_tables(doc))
    print(f"total {timing['total_s'] / 60:.1f} min (estimated {timing['estimated_s'] / 60:.1f})")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(json_path, json.dumps(doc, indent=1) + "\n")
        png = args.png or json_path.with_suffix(".png")
        write_png(doc, png)
        print(f"json: {json_path}\npng: {png}")
    elif args.png is not None:
        write_png(doc, args.png)
        print(f"png: {args.png}")
    return 0


def _load_average() -> tuple[float, ...]:
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        return ()


if __name__ == "__main__":
    sys.exit(main())
