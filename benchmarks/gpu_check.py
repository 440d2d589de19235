"""The measurements of ``bash benchmarks/gpu_check.sh``, one subcommand per step, each writing ``$OUT/<step>.json``.

- ``env``: torch, Triton, timm, CUDA, the GPU, and what Triton's launcher build needs (a C compiler, ``Python.h``);
- ``dadam``: DADAM at B=256, 3x448x448 float32 and 1x448x448 uint8, out of place and in place, against the clone of
  the same batch (CUDA events around back-to-back calls), and with ``feather=8, match="meanstd"`` against the hard
  paste; the backend; host syncs of the first call of a fresh
  module and of a later one (``torch.cuda.set_sync_debug_mode``) and launches and syncs per forward from
  ``torch.profiler`` (kernels run on the GPU, ``cudaLaunchKernel`` / ``cuLaunchKernel*`` calls, ``*Synchronize``);
- ``fpsm``: a TResNet-L FPSM training step (B=64, 448, bf16 autocast, channels_last) with and without DADAM, timed
  as pipelined blocks of steps (CUDA events around each block, no sync per step);
- ``bigbatch``: a 1024x3x1024x1024 uint8 batch (more than 2**31 elements: the kernels' int64 image offsets): the
  Triton kernels out of place and in place equal each other on every pixel, and the CPU loop on sampled images;
- ``summary``: the issue's targets with PASS / MISS from the JSON files, written to ``$OUT/summary.txt``.

Without CUDA each GPU step writes ``{"skipped": "no CUDA"}`` at once (the dry run of ``gpu_check.sh``);
``--cpu-smoke`` runs a step's code on the CPU at tiny sizes instead (it checks the script and measures nothing).

Usage: ``python -m benchmarks.gpu_check STEP [--out DIR] [--cpu-smoke]`` (``DIR`` default: ``$OUT`` or ``gpu_out``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import shutil
import statistics
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["SMOKE", "TARGETS", "Sizes", "main"]

# The targets (fractions of the clone of the same batch, measured in the same run).
TARGETS = {
    "f32_fraction_of_clone": 0.8,
    "u8_fraction_of_clone": 0.5,
    "in_place_vs_out_of_place": 5.0,
    "fpsm_overhead_pct": 0.5,
    "launches_per_forward": 6,
    "options_overhead_pct": 10.0,
}
CASES = (("float32", 3), ("uint8", 1))


@dataclass(frozen=True)
class Sizes:
    """What the steps run on: the GPU sizes of the issue, or tiny ones on the CPU (``--cpu-smoke``)."""

    device: str = "cuda"
    size: int = 448
    batch: int = 256
    fpsm_backbone: str = "tresnet_l"
    fpsm_batch: int = 64
    big: tuple[int, int, int] = (1024, 3, 1024)  # batch, channels, side: more than 2**31 elements


SMOKE = Sizes(device="cpu", size=64, batch=8, fpsm_backbone="resnet10t", fpsm_batch=2, big=(4, 3, 96))


def _cuda() -> bool:
    return torch.cuda.is_available()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _events_time(fn: Callable[[], object], *, calls: int, rounds: int, warmup: int = 3, device: str = "cuda") -> float:
    """Median seconds per call over ``rounds`` runs of ``calls`` back-to-back calls between two CUDA events
    (``time.perf_counter`` on the CPU): :func:`benchmarks.timing.time_call`."""
    from benchmarks.timing import time_call

    return statistics.median(time_call(fn, device=device, warmup=warmup, repeats=rounds, inner=calls))


def _host_time(fn: Callable[[], object], *, calls: int = 20, device: str = "cuda") -> float:
    """Seconds per call that the host spends issuing ``calls`` back-to-back calls, without waiting for the device
    (20 calls of a few launches stay far below the launch queue's depth). Against the events time of the same call
    it says which side bounds the rate: a host time close to it means the GPU waits for Python."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    seconds = (time.perf_counter() - t0) / calls
    _sync(device)
    return seconds


def _sync_warnings(fn: Callable[[], object]) -> int | None:
    """Host syncs torch reports while ``fn`` runs (``set_sync_debug_mode("warn")``); None on the CPU."""
    if not _cuda():
        fn()
        return None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def _profile(fn: Callable[[], object]) -> dict:
    """Kernels, launch calls and sync calls of one ``fn()`` in ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    cuda = _cuda()
    _sync("cuda" if cuda else "cpu")
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        fn()
        _sync("cuda" if cuda else "cpu")
    events = prof.events()
    names = [e.name for e in events]
    on_device = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    kernels = [e.name for e in on_device]
    kernel_us: dict[str, float] = {}
    for e in on_device:  # device time by kernel (the long C++ names of torch's kernels cut to their start)
        kernel_us[e.name[:48]] = kernel_us.get(e.name[:48], 0.0) + e.time_range.elapsed_us()
    launches = [n for n in names if n.startswith(("cudaLaunchKernel", "cuLaunchKernel"))]
    # host waits inside fn (the profiler's own cudaDeviceSynchronize after it is left out)
    syncs = [n for n in names if n in ("cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy", "cudaMemcpy2D")]
    return {
        "device_kernels": len(kernels),
        "launch_calls": len(launches),
        "sync_calls": len(syncs),
        "kernel_names": sorted(set(kernels))[:40],
        "device_us": round(sum(kernel_us.values()), 1),
        "kernel_us": {k: round(v, 1) for k, v in sorted(kernel_us.items(), key=lambda kv: -kv[1])},
    }


def step_env() -> dict:
    out = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda}
    for mod in ("triton", "timm", "torchvision", "numpy", "pandas", "kornia", "nvidia.dali"):
        try:
            out[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception as e:  # a missing optional module is a fact to report
            out[mod] = f"missing ({type(e).__name__})"
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
    include = sysconfig.get_paths()["include"]
    out["c_compiler"] = cc
    out["python_h"] = os.path.exists(os.path.join(include, "Python.h"))
    out["cuda_available"] = _cuda()
    if _cuda():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["capability"] = list(torch.cuda.get_device_capability(0))
        out["memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
    return out


def step_dadam(z: Sizes) -> dict:
    from benchmarks.config import DADAM
    from benchmarks.inputs import augment_setup, benchmark_labels, image_batch
    from dadam import DiseasedAreaAugment

    setup = augment_setup(z.size, device=z.device, seed=0)
    aug, B, S, dev = setup.aug, z.batch, z.size, z.device
    name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu (smoke run)"
    res: dict = {"device": name, "batch": B, "size": S, "cases": {}}
    options = DADAM.replace(feather=8, match="meanstd")  # the realism options, against the hard paste of aug
    realistic = DiseasedAreaAugment.from_config(setup.bank, setup.stats, options, generator=0).to(dev)
    for dtype, channels in CASES:
        images = image_batch(B, channels, dtype, S, device=dev, seed=0)
        labels = benchmark_labels(B, aug.tail_mask, pool=setup.pool).to(dev)
        fresh = DiseasedAreaAugment.from_config(setup.bank, setup.stats, DADAM, generator=0).to(dev)
        case: dict = {"first_call_syncs": _sync_warnings(lambda f=fresh, i=images, y=labels: f(i, y))}
        work = images.clone()
        calls = {
            "clone": lambda i=images: i.clone(),
            "out_of_place": lambda i=images, y=labels: aug(i, y),
            "in_place": lambda w=work, y=labels: aug(w, y, inplace=True),
            "feather_match": lambda i=images, y=labels, r=realistic: r(i, y),
        }
        for name, fn in calls.items():
            seconds = _events_time(fn, calls=20 if dev == "cuda" else 2, rounds=7 if dev == "cuda" else 2, device=dev)
            case[name] = {"img_s": B / seconds, "us_per_call": seconds * 1e6}
        for name in ("out_of_place", "in_place", "feather_match"):
            case[name]["host_us_per_call"] = _host_time(calls[name], device=dev) * 1e6
        case["steady_syncs"] = _sync_warnings(lambda i=images, y=labels: aug(i, y))
        case["profile_out_of_place"] = _profile(lambda i=images, y=labels: aug(i, y))
        case["profile_in_place"] = _profile(lambda w=work, y=labels: aug(w, y, inplace=True))
        clone = case["clone"]["img_s"]
        case["fraction_of_clone"] = case["out_of_place"]["img_s"] / clone
        case["in_place_vs_out_of_place"] = case["in_place"]["img_s"] / case["out_of_place"]["img_s"]
        hard_us = case["out_of_place"]["us_per_call"]
        case["options_overhead_pct"] = 100 * (case["feather_match"]["us_per_call"] - hard_us) / hard_us
        case["profile_feather_match"] = _profile(lambda i=images, y=labels, r=realistic: r(i, y))
        res["cases"][f"{dtype}_{channels}ch"] = case
        print(dtype, channels, json.dumps({k: v for k, v in case.items() if not k.startswith("profile")}), flush=True)
        del images, work
        if dev == "cuda":
            torch.cuda.empty_cache()
    res["backend"] = aug.backend
    return res


def step_fpsm(z: Sizes, rounds: int = 5, block: int = 8) -> dict:
    from benchmarks.inputs import augment_setup, benchmark_labels, image_batch
    from fpsm import create_fpsm, pyramid_loss

    try:
        from dadam.data import to_model_input
    except ImportError as e:  # pandas or PIL missing: normalise here as the library does
        print(f"dadam.data does not import ({e}); normalising inline")

        def to_model_input(images, *, channels_last=False):
            x = images.float().div(255).expand(-1, 3, -1, -1)
            mean = torch.tensor([0.485, 0.456, 0.406], device=images.device).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225], device=images.device).view(1, 3, 1, 1)
            x = (x - mean) / std
            return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    B, S, dev = z.fpsm_batch, z.size, z.device
    if dev != "cuda":
        rounds, block = 2, 1
    setup = augment_setup(S, device=dev, seed=0)
    aug = setup.aug
    labels = benchmark_labels(B, aug.tail_mask, pool=setup.pool).to(dev)
    images = image_batch(B, 1, "uint8", S, device=dev, seed=1)
    model = create_fpsm(z.fpsm_backbone, num_classes=labels.shape[1]).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(with_aug: bool) -> None:
        x, y = aug(images, labels) if with_aug else (images, labels)
        x = to_model_input(x, channels_last=True)
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = pyramid_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(3):
        step(False)
        step(True)
    _sync(dev)
    warm = time.perf_counter() - t0
    blocks: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):  # alternate the order, so drift hits both alike
        for with_aug in (False, True) if r % 2 == 0 else (True, False):
            seconds = _events_time(lambda w=with_aug: step(w), calls=block, rounds=1, warmup=0, device=dev)
            blocks[with_aug].append(seconds)
    without, with_ = statistics.median(blocks[False]), statistics.median(blocks[True])
    return {
        "backbone": z.fpsm_backbone,
        "batch": B,
        "size": S,
        "warmup_s": warm,
        "ms_per_step": {"without": without * 1e3, "with": with_ * 1e3},
        "overhead_pct": 100 * (with_ - without) / without,
        "overhead_pct_fastest": 100 * (min(blocks[True]) - min(blocks[False])) / min(blocks[False]),
        "spread_pct_without": 100 * (max(blocks[False]) - min(blocks[False])) / without,
        "blocks": {"steps": block, "rounds": rounds},
        "max_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if dev == "cuda" else None,
    }


def step_bigbatch(z: Sizes) -> dict:
    from benchmarks.inputs import benchmark_labels, synthetic_bank, synthetic_label_pool
    from dadam import DiseasedAreaAugment, LabelStats
    from dadam.ops import paste_patches

    batch, channels, size = z.big
    bank = synthetic_bank(size, seed=3)
    pool = synthetic_label_pool(8192, seed=3)
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(pool), p=1.0, max_patches=4, generator=0)
    labels = benchmark_labels(batch, aug.tail_mask, pool=pool)
    params = aug.sample(labels)  # on the CPU: the reference rows below use the same params
    gpu, gparams = aug.to(z.device), params.to(z.device)
    gen = torch.Generator(device=z.device).manual_seed(1)
    images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, device=z.device, generator=gen)
    rows = sorted({0, min(700, batch - 1), batch - 1})  # image 700 starts past element 2**31
    res: dict = {"shape": [batch, channels, size, size], "numel": images.numel(), "rows_checked": rows}
    t0 = time.perf_counter()
    path = "auto" if z.device == "cuda" else "triton"  # the smoke run: the kernels under Triton's interpreter
    out = gpu.apply(images, gparams, path=path)
    in_place = gpu.apply(images.clone(), gparams, inplace=True, path=path)
    res["out_of_place_equals_in_place"] = bool(torch.equal(out, in_place))
    del in_place
    cpu_bank = bank
    sub = params[rows]
    ref = paste_patches(
        images[rows].cpu(),
        cpu_bank.pixels,
        cpu_bank.offsets,
        cpu_bank.sizes,
        sub.boxes,
        sub.patch_ids,
        sub.active,
        sub.alpha,
        max_size=cpu_bank.max_size,
        path="loop",
    )
    res["rows_equal_cpu_loop"] = bool(torch.equal(out[rows].cpu(), ref))
    res["changed_elements"] = int((out != images).sum())
    res["patches"] = int(params.active.sum())
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["pass"] = res["out_of_place_equals_in_place"] and res["rows_equal_cpu_loop"] and res["changed_elements"] > 0
    return res


def _load(out: pathlib.Path, name: str) -> dict | None:
    try:
        return json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def _verdict(value, target, op: str) -> str:
    if value is None:
        return "n/a "
    return "PASS" if (value >= target if op == ">=" else value <= target) else "MISS"


def step_summary(out: pathlib.Path) -> str:
    lines = [f"gpu_check summary ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})"]
    env = _load(out, "env") or {}
    lines.append(f"device: {env.get('gpu', 'no CUDA')}; torch {env.get('torch')}; triton {env.get('triton')}")
    dadam = _load(out, "dadam") or {}
    if "skipped" in dadam or not dadam:
        lines.append(f"DADAM rows: {dadam.get('skipped', 'missing (see dadam.log)')}")
    else:
        lines.append(f"DADAM backend: {dadam.get('backend')}")
        lines.append(f"{'case':14}{'clone':>10}{'out of place':>14}{'in place':>12}{'of clone':>10}{'in/out':>8}")
        for key, c in dadam["cases"].items():
            lines.append(
                f"{key:14}{c['clone']['img_s'] / 1e3:>9.0f}k{c['out_of_place']['img_s'] / 1e3:>13.0f}k"
                f"{c['in_place']['img_s'] / 1e3:>11.0f}k{c['fraction_of_clone']:>10.2f}{c['in_place_vs_out_of_place']:>8.1f}"
            )
        lines.append("per call (us): events time / host time issuing it / device time of its kernels (profiler)")
        for key, c in dadam["cases"].items():
            for mode in ("out_of_place", "in_place"):
                host = c[mode].get("host_us_per_call")
                device = c[f"profile_{mode}"].get("device_us")
                if host is not None and device is not None:
                    lines.append(f"  {key:12} {mode:13}{c[mode]['us_per_call']:>8.0f}{host:>8.0f}{device:>8.0f}")
        checks = []
        for key, c in dadam["cases"].items():
            target = TARGETS["f32_fraction_of_clone" if key.startswith("float32") else "u8_fraction_of_clone"]
            checks.append((f"{key} out of place >= {target} of the clone", c["fraction_of_clone"], target, ">="))
            checks.append(
                (
                    f"{key} in place >= 5x out of place",
                    c["in_place_vs_out_of_place"],
                    TARGETS["in_place_vs_out_of_place"],
                    ">=",
                )
            )
            checks.append((f"{key} host syncs, first call", c["first_call_syncs"], 0, "<="))
            checks.append((f"{key} host syncs, later call", c["steady_syncs"], 0, "<="))
            for mode in ("out_of_place", "in_place"):
                kernels = c[f"profile_{mode}"]["device_kernels"]
                checks.append((f"{key} {mode} kernels per forward", kernels, TARGETS["launches_per_forward"], "<="))
            if "options_overhead_pct" in c:
                name = f"{key} feather=8, match=meanstd: % over the hard paste"
                checks.append((name, c["options_overhead_pct"], TARGETS["options_overhead_pct"], "<="))
        checks.append(("backend is triton", 1 if dadam.get("backend") == "triton" else 0, 1, ">="))
        lines += [
            f"  {_verdict(v, t, op)}  {name}: {v if not isinstance(v, float) else round(v, 3)}"
            for name, v, t, op in checks
        ]
    fpsm = _load(out, "fpsm") or {}
    if "overhead_pct" in fpsm:
        value, ms = fpsm["overhead_pct"], fpsm["ms_per_step"]
        verdict = _verdict(value, TARGETS["fpsm_overhead_pct"], "<=")
        lines.append(
            f"  {verdict}  {fpsm['backbone']} FPSM step (B={fpsm['batch']}, {fpsm['size']}, bf16) + DADAM <= 0.5 % "
            f"added: {value:+.2f} % ({ms['without']:.1f} -> {ms['with']:.1f} ms per step, pipelined blocks)"
        )
    else:
        lines.append(f"FPSM step: {fpsm.get('skipped', 'missing (see fpsm.log)')}")
    big = _load(out, "bigbatch") or {}
    if "pass" in big:
        lines.append(
            f"  {'PASS' if big['pass'] else 'MISS'}  {'x'.join(map(str, big['shape']))} uint8 ({big['numel']} elements): "
            f"out of place == in place: {big['out_of_place_equals_in_place']}, images {big['rows_checked']} == CPU "
            f"loop: {big['rows_equal_cpu_loop']}, {big['changed_elements']} elements changed"
        )
    else:
        lines.append(f"big batch: {big.get('skipped', 'missing (see bigbatch.log)')}")
    steps = out / "steps.txt"
    if steps.exists():
        lines.append(steps.read_text().strip())
    return "\n".join(lines)


STEPS = {"dadam": step_dadam, "fpsm": step_fpsm, "bigbatch": step_bigbatch}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("env", *STEPS, "summary"))
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(os.environ.get("OUT", "gpu_out")))
    parser.add_argument("--cpu-smoke", action="store_true", help="run the step's code on the CPU at tiny sizes")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "summary":
        text = step_summary(args.out)
        (args.out / "summary.txt").write_text(text + "\n")
        print(text)
        return 0
    if args.step == "env":
        result = step_env()
    elif args.cpu_smoke:
        result = STEPS[args.step](SMOKE)
    elif not _cuda():
        result = {"skipped": "no CUDA"}
    else:
        result = STEPS[args.step](Sizes())
    (args.out / f"{args.step}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(result, default=str)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
