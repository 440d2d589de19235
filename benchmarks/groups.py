"""The benchmark groups, each a function that returns its rows, and :func:`run_benchmarks`, which runs them all.

- :func:`augment_group`: DADAM's forward out of place and in place, DADAM with params given, the clone roofline, the
  naive loop, the forced paste paths, ``torch.compile``, kornia and DALI, for each ``(batch, channels, dtype)`` of
  the config;
- :func:`offline_group`: the offline reference, per image and ``export()`` end to end;
- :func:`train_group`: an FPSM training step with and without DADAM;
- :func:`pipeline_group`: JPEG files to device batches, torch ``DataLoader`` against DALI;
- :func:`~benchmarks.sampler.sampler_group`: the sampler alone over 100k label rows, per companion rule;
- :func:`~benchmarks.realism.realism_group`: the forward with ``feather`` and ``match`` against the hard paste.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Protocol

import torch

from benchmarks import peers
from benchmarks.config import DADAM, BenchConfig
from benchmarks.inputs import (
    NF,
    NUM_CLASSES,
    AugmentSetup,
    augment_setup,
    benchmark_labels,
    image_batch,
    smooth_images,
    write_jpegs,
)
from benchmarks.realism import realism_group
from benchmarks.results import Result, add_ratios, check_targets
from benchmarks.sampler import sampler_group
from benchmarks.timing import (
    epoch_seconds,
    host_sync_check,
    images_per_s,
    page_faults,
    time_call,
    time_interleaved,
)
from dadam.sampling import MODE_PASTE

__all__ = ["Progress", "augment_group", "offline_group", "pipeline_group", "run_benchmarks", "train_group"]

OFFLINE_EXTRAPOLATE = 100_000  # images the offline rows are extrapolated to


class Progress(Protocol):
    """What a group reports its progress to (a ``tqdm`` bar fits)."""

    def set_description(self, desc: str) -> object: ...

    def update(self, n: int = 1) -> object: ...


def _silent() -> Progress:
    from tqdm.auto import tqdm

    return tqdm(disable=True)


def augment_group(cfg: BenchConfig, progress: Progress | None = None) -> list[Result]:
    """DADAM, its peers and the roofline for each ``(batch, channels, dtype)`` of ``cfg.configs``."""
    progress = progress or _silent()
    setup = augment_setup(cfg.size, device=cfg.device, seed=cfg.seed)
    results: list[Result] = []
    for batch, channels, dtype in cfg.configs:
        case = _AugmentCase(cfg, setup, batch, channels, dtype)
        progress.set_description(f"DADAM, clone, naive loop, DALI {case.tag}")
        times = case.time_interleaved()
        results += case.dadam_rows(times)
        progress.update(3)
        for name, call in case.variants().items():
            progress.set_description(f"{name} {case.tag}")
            results.append(case.timed_row(name, call))
        for kind, name in (("cutmix", "kornia RandomCutMixV2"), ("mixup", "kornia RandomMixUpV2")):
            progress.set_description(f"{name} {case.tag}")
            results.append(case.kornia_row(kind, name))
            progress.update()
        results.append(case.dali_row(times))
        progress.update()
    return results


class _AugmentCase:
    """The rows of :func:`augment_group` for one ``(batch, channels, dtype)``: one input batch, one set of params.

    DADAM (out of place and in place), DADAM with params given, the clone, the copy into a reused buffer, the naive
    loop and DALI are timed in interleaved rounds (:meth:`time_interleaved`), so their ratios see the same machine
    load. The in-place row writes into its own copy of the batch, so every other row reads the same images.
    """

    def __init__(self, cfg: BenchConfig, setup: AugmentSetup, batch: int, channels: int, dtype: str) -> None:
        self.cfg, self.aug, self.batch = cfg, setup.aug, batch
        self.device = device = torch.device(cfg.device)
        self.bank_info = {"bank_patches": len(setup.bank), "bank_max_size": list(setup.bank.max_size)}
        self.patches = [setup.bank.patch(i) for i in range(len(setup.bank))]
        self.common = dict(batch=batch, shape=[channels, cfg.size, cfg.size], dtype=dtype)
        self.tag = f"B={batch} {channels}x{cfg.size}x{cfg.size} {dtype}"
        self.timing = dict(
            device=device, warmup=cfg.warmup, repeats=cfg.repeats, inner=cfg.inner, budget_s=cfg.budget_s
        )
        self.images = image_batch(batch, channels, dtype, cfg.size, device=device, seed=cfg.seed)
        self.inplace_images = self.images.clone()  # written by the in-place row, call after call
        self.labels = benchmark_labels(batch, self.aug.tail_mask, seed=cfg.seed, pool=setup.pool).to(device)
        self.params = self.aug.sample(self.labels)
        self.dali_name = "DALI fn.multi_paste" + (" (CPU pipeline)" if device.type == "cpu" else "")
        self.dali, self.dali_result = self._dali()

    def row(self, name: str, times: list[float], **extra) -> Result:
        return Result(name, "augment", images_per_s(self.batch, times), times_s=times, extra=extra, **self.common)

    def _dali(self) -> tuple[peers.DaliMultiPaste | None, Result | None]:
        """The DALI runner (the torch rows' thread count; its pastes checked against DADAM's), or the row of why not."""
        reason = "--skip dali" if "dali" in self.cfg.skip else peers.unavailable("nvidia.dali")
        if reason:
            return None, Result.skipped(self.dali_name, "augment", reason, **self.common)
        try:
            threads = torch.get_num_threads()
            dali = peers.DaliMultiPaste(self.images, self.params, self.patches, device=self.device, threads=threads)
            pasted = (self.params.mode == MODE_PASTE).cpu()
            self.dali_equal = torch.equal(dali.output()[pasted], self.aug.apply(self.images, self.params).cpu()[pasted])
            return dali, None
        except Exception as e:
            return None, Result.failed(self.dali_name, "augment", e, **self.common)

    def time_interleaved(self) -> dict[str, list[float]]:
        """Seconds per call of DADAM, the replay, the roofline calls, the naive loop and DALI, in the same rounds."""
        aug, images, labels, params = self.aug, self.images, self.labels, self.params
        work = self.inplace_images
        fns = {
            "dadam": lambda: aug(images, labels),
            "dadam in place": lambda: aug(work, labels, inplace=True),
            "replay": lambda: aug(images, labels, params=params),
            **peers.roofline_calls(images),
        }
        if "naive" not in self.cfg.skip:
            fns["naive"] = lambda: peers.naive_paste_loop(images, labels, params, self.patches)
        if self.dali is not None:
            fns["dali"] = self.dali
        times = time_interleaved(fns, **self.timing)
        self.faults = {name: page_faults(fns[name], device=self.device) for name in ("dadam", "replay", "clone")}
        if self.dali is not None:
            self.faults["dali"] = page_faults(self.dali, device=self.device)
        return times

    def dadam_rows(self, times: dict[str, list[float]]) -> list[Result]:
        """DADAM, DADAM with params given, the clone roofline and the naive loop (its output checked)."""
        aug, images, labels, params = self.aug, self.images, self.labels, self.params
        sample_times = time_call(lambda: aug.sample(labels), **self.timing)
        normal = labels[:, NF] > 0.5
        act = params.active.sum(1).float()
        extra = {
            "p": DADAM.p,
            "max_patches": DADAM.max_patches,
            "mean_active_patches": float(act.mean()),
            "mean_active_patches_normal": float(act[normal].mean()) if bool(normal.any()) else 0.0,
            "changed_fraction": float(params.changed.float().mean()),
            "normal_fraction": float(normal.float().mean()),
            "sample_only_images_per_s": images_per_s(self.batch, sample_times),
            **self.bank_info,
            "page_faults_per_call": self.faults["dadam"],
            "backend": aug.backend,
        }
        if self.device.type == "cuda":
            extra["no_host_sync"] = host_sync_check(lambda: aug(images, labels))
        dadam = self.row("DADAM", times["dadam"], **extra)
        work = self.inplace_images
        in_place = self.row(
            "DADAM in place",
            times["dadam in place"],
            backend=aug.backend,
            in_place=True,
            note="aug(images, labels, inplace=True): writes only the patch pixels into the caller's images",
            speed_vs_out_of_place=images_per_s(self.batch, times["dadam in place"]) / dadam.images_per_s,
        )
        if self.device.type == "cuda":
            in_place.extra["no_host_sync"] = host_sync_check(lambda: aug(work, labels, inplace=True))
        note = "aug(images, labels, params=params): paste, blend, labels; the naive loop's work"
        replay_faults = self.faults["replay"]
        clone = self.row(
            "clone (memory roofline)",
            times["clone"],
            page_faults_per_call=self.faults["clone"],
            reused_copy_images_per_s=images_per_s(self.batch, times["reused copy"]),
        )
        clone.group = "roofline"
        rows = [
            dadam,
            in_place,
            self.row("DADAM replay (params given)", times["replay"], note=note, page_faults_per_call=replay_faults),
            clone,
        ]
        if "naive" not in times:
            rows.append(Result.skipped("naive per-sample loop", "augment", "--skip naive", **self.common))
        else:
            ref_images, ref_labels = aug(images, labels, params=params)
            out_images, out_labels = peers.naive_paste_loop(images, labels, params, self.patches)
            equal = bool(torch.equal(out_images, ref_images)) and bool(torch.equal(out_labels, ref_labels))
            naive = self.row("naive per-sample loop", times["naive"], equal_to_dadam=equal)
            naive.extra["note"] = "params given (sampling not timed)"
            naive.status = "ok" if equal else "error: output differs from DADAM on the same params"
            rows.append(naive)
        return rows

    def variants(self) -> dict[str, Callable[[], object]]:
        """DADAM with each forced paste path of ``cfg.paths`` and, with ``cfg.compile``, ``torch.compile``'d."""
        aug, images, labels = self.aug, self.images, self.labels
        calls = {}
        for path in self.cfg.paths:

            def forward(path=path):
                p = aug.sample(labels)
                return aug.apply(images, p, path=path), p.labels

            calls[f"DADAM (paste path={path})"] = forward
        if self.cfg.compile:
            compiled = torch.compile(aug)
            calls["DADAM torch.compile"] = lambda: compiled(images, labels)
        return calls

    def timed_row(self, name: str, call: Callable[[], object]) -> Result:
        """The row of one of :meth:`variants`, or its error."""
        note = {} if "compile" in name else {"note": "sample + apply(path=...) without the module's input checks"}
        try:
            return self.row(name, time_call(call, **self.timing), **note)
        except Exception as e:
            return Result.failed(name, "augment", e, **self.common)

    def kornia_row(self, kind: str, name: str) -> Result:
        """kornia RandomCutMixV2 (``kind="cutmix"``) or RandomMixUpV2 on the same batch (float images only)."""
        if "kornia" in self.cfg.skip:
            reason = "--skip kornia"
        elif self.common["dtype"] == "uint8":
            reason = "kornia mixes float images only"
        else:
            reason = peers.unavailable("kornia")
        if reason:
            return Result.skipped(name, "augment", reason, **self.common)
        slow = dict(self.timing, warmup=1, inner=1)
        try:
            return self.row(name, time_call(peers.kornia_mix(kind, self.images, self.labels), **slow))
        except Exception as e:
            return Result.failed(name, "augment", e, **self.common)

    def dali_row(self, times: dict[str, list[float]]) -> Result:
        """DALI ``fn.multi_paste`` (:class:`~benchmarks.peers.DaliMultiPaste`), or why it did not run."""
        if self.dali is None:
            return self.dali_result
        note = f"pastes only (no blend), params given, {self.dali.threads} threads, synchronous"
        extra = dict(equal_to_dadam_on_pastes=self.dali_equal, note=note, page_faults_per_call=self.faults["dali"])
        return self.row(self.dali_name, times["dali"], **extra)


def _extrapolate(seconds_per_image: float, bytes_per_image: float) -> dict:
    return {
        "bytes_per_image": bytes_per_image,
        "extrapolated_images": OFFLINE_EXTRAPOLATE,
        "extrapolated_hours": seconds_per_image * OFFLINE_EXTRAPOLATE / 3600,
        "extrapolated_disk_gb": bytes_per_image * OFFLINE_EXTRAPOLATE / 1e9,
    }


def offline_group(cfg: BenchConfig, progress: Progress | None = None) -> list[Result]:
    """The offline reference (:mod:`dadam.offline`, :mod:`dadam.export`), one image at a time, PNGs written.

    Two rows: the per-image core (:func:`~benchmarks.peers.offline_per_image`, median over images; checked
    bit-identical to DADAM's uint8 output on the same params) and ``export()`` end to end on JPEG sources
    (:func:`~benchmarks.peers.offline_export`; wall time / images). Both are extrapolated to 100k images.
    """
    progress = progress or _silent()
    common = dict(batch=1, shape=[1, cfg.size, cfg.size], dtype="uint8")
    names = ("offline reference (per image, PNG write)", "offline export() end to end")
    progress.set_description("offline reference")
    reason = "--skip offline" if "offline" in cfg.skip else peers.unavailable("dadam.offline")
    reason = reason or peers.unavailable("dadam.export")
    results: list[Result] = []
    if reason:
        results.extend(Result.skipped(n, "offline", reason, **common) for n in names)
        progress.update()
        return results
    n = cfg.offline_images
    setup = augment_setup(cfg.size, seed=cfg.seed)
    bank, aug = setup.bank, setup.aug
    labels = benchmark_labels(n, aug.tail_mask, seed=cfg.seed, pool=setup.pool)
    images = smooth_images(n, cfg.size, seed=cfg.seed)
    online, _, params = aug(images, labels, return_params=True)
    try:
        with tempfile.TemporaryDirectory(prefix="dadam_offline_") as tmp:
            times, sizes, equal = peers.offline_per_image(images, online, params, bank, pathlib.Path(tmp))
        extra = dict(_extrapolate(statistics.median(times), sum(sizes) / n), equal_to_dadam=equal)
        results.append(Result(names[0], "offline", 1 / statistics.median(times), times_s=times, extra=extra, **common))
    except Exception as e:
        results.append(Result.failed(names[0], "offline", e, **common))
    try:
        wall, nbytes, written = peers.offline_export(n, cfg.size, bank, setup.stats, seed=cfg.seed)
        extra = dict(_extrapolate(wall / n, nbytes / n), images_written=written)
        results.append(Result(names[1], "offline", n / wall, times_s=[wall / n], extra=extra, **common))
    except Exception as e:
        results.append(Result.failed(names[1], "offline", e, **common))
    progress.update()
    return results


def train_group(cfg: BenchConfig, progress: Progress | None = None) -> list[Result]:
    """FPSM training step with and without DADAM on the same uint8 batch, interleaved; overhead in %."""
    progress = progress or _silent()
    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    S, B = cfg.train_size, cfg.train_batch
    common = dict(batch=B, shape=[1, S, S], dtype="uint8")
    names = (f"FPSM step {cfg.train_backbone} (no DADAM)", f"FPSM step {cfg.train_backbone} + DADAM")
    progress.set_description("FPSM step")
    reason = "--skip train" if "train" in cfg.skip else peers.unavailable("fpsm") or peers.unavailable("dadam.data")
    if reason:
        progress.update()
        return [Result.skipped(n, "train", reason, **common) for n in names]
    from dadam.data import to_model_input
    from fpsm import create_fpsm, pyramid_loss

    try:
        setup = augment_setup(S, device=device, seed=cfg.seed)
        aug = setup.aug
        labels = benchmark_labels(B, aug.tail_mask, seed=cfg.seed, pool=setup.pool).to(device)
        images = image_batch(B, 1, "uint8", S, device=device, seed=cfg.seed)
        model = create_fpsm(cfg.train_backbone, num_classes=NUM_CLASSES).to(device)
        data_config = model.data_config  # the backbone's own normalisation (TResNet: mean 0, std 1)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

        def step(with_aug: bool):
            x, y = aug(images, labels) if with_aug else (images, labels)
            x = to_model_input(x, mean=data_config["mean"], std=data_config["std"], channels_last=cuda)
            with amp:
                loss = pyramid_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(2 if cuda else 1):  # warm-up (cudnn autotune, allocator)
            step(False)
            step(True)
        t_without, t_with = [], []
        one = dict(device=device, warmup=0, repeats=1, inner=1)
        for _ in range(cfg.train_repeats):  # interleaved, so drift hits both alike
            t_without += time_call(lambda: step(False), **one)
            t_with += time_call(lambda: step(True), **one)
            if len(t_with) >= 2 and sum(t_without) + sum(t_with) > 4 * cfg.budget_s:
                break
        aug_times = time_call(lambda: aug(images, labels), device=device, warmup=1, repeats=5, inner=cfg.inner)
        m_without, m_with = statistics.median(t_without), statistics.median(t_with)
        meta = {"backbone": cfg.train_backbone, "amp": "bf16" if cuda else "fp32", "channels_last": cuda}
        extra = dict(
            meta,
            overhead_pct=100.0 * (m_with - m_without) / m_without,
            overhead_pct_min=100.0 * (min(t_with) - min(t_without)) / min(t_without),  # robust to load bursts
            overhead_pct_isolated=100.0 * statistics.median(aug_times) / m_without,
        )
        results = [
            Result(names[0], "train", B / m_without, times_s=t_without, extra=dict(meta), **common),
            Result(names[1], "train", B / m_with, times_s=t_with, extra=extra, **common),
        ]
    except Exception as e:
        results = [Result.failed(n, "train", e, **common) for n in names]
    progress.update()
    return results


def pipeline_group(cfg: BenchConfig, progress: Progress | None = None) -> list[Result]:
    """JPEG files -> decoded, resized uint8 batches on the device: torch DataLoader against DALI."""
    progress = progress or _silent()
    device = torch.device(cfg.device)
    S, B, N = cfg.pipeline_size, cfg.pipeline_batch, cfg.pipeline_images
    common = dict(batch=B, shape=[1, S, S], dtype="uint8")
    workers = max(1, min(8, os.cpu_count() or 1))
    names = (
        f"JPEG -> torch DataLoader ({workers} workers)",
        "JPEG -> DALI " + ("(nvJPEG)" if device.type == "cuda" else "(CPU)"),
    )
    progress.set_description("input pipeline")
    if "pipeline" in cfg.skip:
        progress.update()
        return [Result.skipped(n, "pipeline", "--skip pipeline", **common) for n in names]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="dadam_jpegs_") as tmp:
        root = pathlib.Path(tmp)
        try:
            table = write_jpegs(root, N, max(S, 512), seed=cfg.seed)
        except Exception as e:
            progress.update()
            return [Result.failed(n, "pipeline", e, **common) for n in names]

        def make_torch_loader():
            from dadam.data import LabelDataset, make_loader

            dataset = LabelDataset(table, root, canvas=S)
            return make_loader(dataset, batch_size=B, train=False, num_workers=workers, persistent_workers=True)

        def make_dali_loader():
            from dadam.dali import DaliLoader

            return DaliLoader(table, root, canvas=S, batch_size=B, device=device.type, train=False, num_threads=workers)

        for name, module, make in zip(
            names, ("dadam.data", "dadam.dali"), (make_torch_loader, make_dali_loader), strict=True
        ):
            reason = peers.unavailable(module)
            if reason:
                results.append(Result.skipped(name, "pipeline", reason, **common))
                continue
            try:
                loader = make()
                epoch_seconds(loader, device)  # warm-up: workers start, page cache
                t, n = epoch_seconds(loader, device)
                del loader
                extra = {"images": n}
                results.append(Result(name, "pipeline", n / t, times_s=[t / max(1, n // B)], extra=extra, **common))
            except Exception as e:
                results.append(Result.failed(name, "pipeline", e, **common))
    progress.update()
    return results


def _loader_group(cfg: BenchConfig, progress: Progress) -> list[Result]:
    """The input-pipeline rows of :mod:`benchmarks.loader`, imported here so that ``python -m benchmarks.loader``
    does not find its own module already imported by the package."""
    from benchmarks.loader import loader_group

    return loader_group(cfg, progress)


def run_benchmarks(cfg: BenchConfig, *, group_wall_s: dict | None = None) -> tuple[list[Result], list[dict]]:
    """Run every benchmark group of ``cfg``; return the rows (with ratios) and the target checks.

    Args:
        cfg: what to run (:func:`~benchmarks.config.make_config`).
        group_wall_s: if given, filled with the wall seconds of each benchmark group.

    Returns:
        ``(results, targets)``: the :class:`~benchmarks.results.Result` rows and the target checks
        (``{name, value, target, op, pass}``).
    """
    from tqdm.auto import tqdm

    results: list[Result] = []
    wall = group_wall_s if group_wall_s is not None else {}
    steps = len(cfg.configs) * 7 + 4
    with tqdm(total=steps, disable=not cfg.progress, file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
        for name, group in (
            ("augment", augment_group),
            ("offline", offline_group),
            ("train", train_group),
            ("pipeline", pipeline_group),
            ("sampler", sampler_group),
            ("loader", _loader_group),
            ("realism", realism_group),
        ):
            t0 = time.perf_counter()
            results += group(cfg, bar)
            wall[name] = time.perf_counter() - t0
    add_ratios(results)
    return results, check_targets(results, cfg.device)
