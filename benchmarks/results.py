"""Rows of a benchmark run: :class:`Result`, the ratios between rows, the roofline check and the targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

__all__ = ["CPU_TARGETS", "CUDA_TARGETS", "Result", "above_roofline_reason", "add_ratios", "check_targets"]

# Targets (see the issues). Values are checked where the entry exists on the device the run is on. The img/s figures
# are those of an H200 (a clone of 3x448x448 float32 at ~872k img/s); the fractions of the clone of the same batch,
# measured in the same run, are the targets on any GPU.
CUDA_TARGETS = {
    "dadam_f32_b256_roofline": 0.8,
    "dadam_f32_b256_img_s": 700_000.0,
    "dadam_u8_b256_roofline": 0.5,
    "dadam_u8_b256_img_s": 4_000_000.0,
    "dadam_in_place_vs_out_of_place": 5.0,
    "dadam_vs_kornia_cutmix": 500.0,
    "fpsm_overhead_pct": 0.5,
    "dadam_vs_offline": 1000.0,
    "realism_options_overhead_pct": 10.0,
}
CPU_TARGETS = {"dadam_vs_naive_loop": 1.0, "sampler_100k_rows_s": 3.0}

ROOFLINE = "clone (memory roofline)"
NAIVE = "naive per-sample loop"


@dataclass
class Result:
    """One row of the table / one entry of the JSON ``results`` list.

    Attributes:
        name: what was measured (e.g. ``"DADAM"``, ``"kornia RandomCutMixV2"``).
        group: ``"augment"``, ``"roofline"``, ``"offline"``, ``"train"`` or ``"pipeline"``.
        images_per_s: the median throughput, None when skipped or failed.
        batch: batch size; shape: ``[C, H, W]`` of one image; dtype: image dtype name.
        status: ``"ok"``, ``"skipped: reason"`` or ``"error: reason"``.
        times_s: seconds per call of each timed run.
        extra: ratios, checks and notes (flattened into the JSON entry).
    """

    name: str
    group: str
    images_per_s: float | None = None
    batch: int | None = None
    shape: list[int] | None = None
    dtype: str | None = None
    status: str = "ok"
    times_s: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @classmethod
    def skipped(
        cls, name: str, group: str, reason: str, *, batch: int | None, shape: list[int] | None, dtype: str | None
    ) -> Result:
        """A row that cannot run here (``status="skipped: reason"``)."""
        return cls(name, group, batch=batch, shape=shape, dtype=dtype, status=f"skipped: {reason}")

    @classmethod
    def failed(
        cls, name: str, group: str, err: BaseException, *, batch: int | None, shape: list[int] | None, dtype: str | None
    ) -> Result:
        """A row whose run raised ``err`` (``status="error: Type: message"``, one line, at most 300 characters)."""
        msg = f"{type(err).__name__}: {err}".strip().replace("\n", " ")
        return cls(name, group, batch=batch, shape=shape, dtype=dtype, status=f"error: {msg[:300]}")

    def to_json(self) -> dict:
        """The JSON entry: the attributes, ``median_s``, ``runs`` and the ``extra`` items."""
        out = {
            "name": self.name,
            "group": self.group,
            "images_per_s": self.images_per_s,
            "batch": self.batch,
            "shape": self.shape,
            "dtype": self.dtype,
            "status": self.status,
            "median_s": statistics.median(self.times_s) if self.times_s else None,
            "runs": len(self.times_s),
        }
        out.update(self.extra)
        return out

    @property
    def key(self) -> tuple:
        """``(batch, shape, dtype)``: rows with the same key ran on the same input."""
        return (self.batch, tuple(self.shape or ()), self.dtype)


def above_roofline_reason(row: Result, clone: Result) -> str:
    """Why ``row`` ran faster than the clone of the same batch, from what the run measured.

    An out-of-place op reads and writes every byte at least once, so it cannot beat a copy of the batch into memory
    that is already mapped. The clone allocates a fresh output per call; the reasons, in the order checked:

    1. the row's output memory is reused between calls (far fewer page faults per call than the clone): the clone
       pays for fresh pages on top of the copy;
    2. the ratio is within the clone's run-to-run spread (noise);
    3. otherwise the row does less work than the clone: part of the output is missing or computed outside the timed
       call.
    """
    fraction = row.images_per_s / clone.images_per_s
    reused = clone.extra.get("reused_copy_images_per_s")
    bound = f"; {row.images_per_s / reused:.0%} of a copy into a reused buffer" if reused else ""
    faults, clone_faults = row.extra.get("page_faults_per_call"), clone.extra.get("page_faults_per_call")
    if faults is not None and clone_faults and 2 * faults < clone_faults:
        return (
            f"its output memory is reused between calls ({faults} page faults per call, the clone {clone_faults}): "
            f"the clone also pays for fresh pages{bound}"
        )
    spread = max(clone.times_s) / min(clone.times_s) - 1 if clone.times_s else 0.0
    if fraction <= 1 + spread:
        return f"within the clone's run-to-run spread ({spread:.0%}){bound}"
    return (
        f"faster than reading and writing every byte once, beyond the clone's run-to-run spread ({spread:.0%}): work "
        f"is missing from the timed call (an output not written, or computed ahead or after), or the machine slowed "
        f"every clone run{bound}"
    )


def add_ratios(results: list[Result]) -> None:
    """Add ratios against the naive loop, kornia CutMix, the offline reference and the roofline to each entry.

    An augment row above 100 % of the roofline gets ``extra["above_roofline"]``: :func:`above_roofline_reason`; an
    in-place row (``extra["in_place"]``) is not bound by the clone (it copies nothing) and gets that reason instead.
    """
    ok = {(r.name, r.key): r for r in results if r.images_per_s and r.status == "ok"}
    offline = next((r.images_per_s for r in results if r.name.startswith("offline reference") and r.images_per_s), None)
    for r in results:
        if r.group != "augment" or not r.images_per_s:
            continue
        naive, cutmix, clone = (ok.get((name, r.key)) for name in (NAIVE, "kornia RandomCutMixV2", ROOFLINE))
        r.extra["speed_vs_naive_loop"] = r.images_per_s / naive.images_per_s if naive else None
        r.extra["speed_vs_kornia_cutmix"] = r.images_per_s / cutmix.images_per_s if cutmix else None
        r.extra["fraction_of_roofline"] = r.images_per_s / clone.images_per_s if clone else None
        r.extra["speed_vs_offline"] = r.images_per_s / offline if offline else None
        if clone and r.images_per_s > clone.images_per_s:
            r.extra["above_roofline"] = (
                "in place: it writes only the patch pixels and copies nothing, so the clone does not bound it"
                if r.extra.get("in_place")
                else above_roofline_reason(r, clone)
            )


def check_targets(results: list[Result], device: torch.device | str) -> list[dict]:
    """The issue's targets that apply on this device, each ``{name, value, target, op, pass}``.

    Each check is also listed under ``extra["targets"]`` of the row it is read from. On every device: the naive
    loop's output equals DADAM's (``equal_to_dadam`` of the naive rows).
    """
    out: list[dict] = []

    def add(name, value, target, op, entry: Result | None = None):
        ok = None if value is None else (value >= target if op == ">=" else value <= target)
        out.append({"name": name, "value": value, "target": target, "op": op, "pass": ok})
        if entry is not None:
            entry.extra.setdefault("targets", []).append({"name": name, "target": f"{op} {target:g}", "pass": ok})

    def check(name, value):
        out.append({"name": name, "value": value, "target": True, "op": "==", "pass": value})

    dadam = [r for r in results if r.name == "DADAM" and r.images_per_s]
    in_place = [r for r in results if r.name == "DADAM in place" and r.images_per_s]
    sampler = [r for r in results if r.group == "sampler" and r.images_per_s]
    if torch.device(device).type == "cuda":
        f32 = next((r for r in dadam if r.batch == 256 and r.dtype == "float32" and r.shape[0] == 3), None)
        u8 = next((r for r in dadam if r.batch == 256 and r.dtype == "uint8" and r.shape[0] == 1), None)
        if f32:
            add("DADAM B=256 float32 fraction of clone roofline", f32.extra.get("fraction_of_roofline"),
                CUDA_TARGETS["dadam_f32_b256_roofline"], ">=", f32)  # fmt: skip
            add("DADAM B=256 3x448 float32 img/s (H200)", f32.images_per_s, CUDA_TARGETS["dadam_f32_b256_img_s"], ">=")
            add("DADAM vs kornia RandomCutMixV2", f32.extra.get("speed_vs_kornia_cutmix"),
                CUDA_TARGETS["dadam_vs_kornia_cutmix"], ">=", f32)  # fmt: skip
        if u8:
            add("DADAM B=256 uint8 fraction of clone roofline", u8.extra.get("fraction_of_roofline"),
                CUDA_TARGETS["dadam_u8_b256_roofline"], ">=", u8)  # fmt: skip
            add("DADAM B=256 1x448 uint8 img/s (H200)", u8.images_per_s, CUDA_TARGETS["dadam_u8_b256_img_s"], ">=")
            add(
                "DADAM vs offline reference",
                u8.extra.get("speed_vs_offline"),
                CUDA_TARGETS["dadam_vs_offline"],
                ">=",
                u8,
            )
        step = next((r for r in results if r.group == "train" and "overhead_pct" in r.extra), None)
        if step:
            overhead = step.extra["overhead_pct"]
            add("FPSM step overhead of DADAM (%)", overhead, CUDA_TARGETS["fpsm_overhead_pct"], "<=", step)
        for r in in_place:
            if r.batch == 256:
                name = f"DADAM in place vs out of place B=256 {r.shape[0]}ch {r.dtype}"
                target = CUDA_TARGETS["dadam_in_place_vs_out_of_place"]
                add(name, r.extra.get("speed_vs_out_of_place"), target, ">=", r)
        hosts = [r.extra["no_host_sync"] for r in dadam + in_place if "no_host_sync" in r.extra]
        if hosts:
            check("DADAM without host sync", all(h is True for h in hosts))
        for r in sampler:
            if "no_host_sync" in r.extra:
                check(f"{r.name} without host sync", r.extra["no_host_sync"] is True)
        for r in results:  # the realism options against the hard paste of the same run
            if r.group == "realism" and r.batch == 256 and r.images_per_s and "overhead_vs_hard_paste_pct" in r.extra:
                if r.name == "DADAM (hard paste)":
                    continue
                name = f"{r.name} cost over the hard paste B=256 {r.shape[0]}ch {r.dtype} (%)"
                value = r.extra.get("overhead_vs_hard_paste_pct")
                add(name, value, CUDA_TARGETS["realism_options_overhead_pct"], "<=", r)
    else:
        for r in dadam:
            name = f"DADAM vs naive loop B={r.batch} {r.shape[0]}ch {r.dtype}"
            add(name, r.extra.get("speed_vs_naive_loop"), CPU_TARGETS["dadam_vs_naive_loop"], ">=", r)
        for r in sampler:
            name = f"{r.name}: seconds per 100k label rows"
            add(name, r.extra.get("seconds_per_100k_rows"), CPU_TARGETS["sampler_100k_rows_s"], "<=", r)
    equal = [r.extra["equal_to_dadam"] for r in results if r.name == NAIVE and "equal_to_dadam" in r.extra]
    if equal:
        check("naive loop output == DADAM output", all(equal))
    return out
