"""What a run writes: the table on stdout, the JSON document and the PNG bar chart."""

from __future__ import annotations

import contextlib
import datetime
import importlib
import os
import pathlib
import platform

import torch

from benchmarks.config import DADAM, BenchConfig
from benchmarks.results import Result
from dadam.files import atomic_write

__all__ = ["device_name", "format_table", "json_report", "versions", "write_png"]

GROUP_COLORS = {
    "augment": "tab:blue",
    "roofline": "tab:gray",
    "offline": "tab:red",
    "train": "tab:green",
    "pipeline": "tab:orange",
    "sampler": "tab:cyan",
}


def device_name(device: torch.device | str) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo plus the core and torch thread counts."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def versions() -> dict:
    """Versions of python, torch, CUDA and the peers (None where not importable)."""
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for module, name in (
        ("torchvision", "torchvision"),
        ("timm", "timm"),
        ("kornia", "kornia"),
        ("numpy", "numpy"),
        ("nvidia.dali", "nvidia-dali"),
    ):
        try:
            out[name] = importlib.import_module(module).__version__
        except Exception:
            out[name] = None
    out["cuda"] = torch.version.cuda
    return out


def _fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def _fmt_ratio(v: float | None, *, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3g}x"


def _note(r: Result) -> str:
    """The notes column of one row."""
    x = r.extra
    note = r.status if r.status != "ok" else ""
    if "overhead_pct" in x:
        note = (
            f"overhead {x['overhead_pct']:+.2f}% of the median step (of the fastest: "
            f"{x['overhead_pct_min']:+.2f}%; DADAM alone: {x['overhead_pct_isolated']:.2f}%)"
        )
    if "extrapolated_hours" in x:
        note = f"100k images: {x['extrapolated_hours']:.2f} h, {x['extrapolated_disk_gb']:.1f} GB"
    if "label_rows" in x:
        note = f"{x['label_rows']} label rows in {x['seconds']:.2f} s (labels only, no pixels)"
    if "mean_active_patches" in x:
        note = f"{x['mean_active_patches']:.2f} patches/img ({x['mean_active_patches_normal']:.2f} normal)"
    if "speed_vs_out_of_place" in x:
        note = f"{x['speed_vs_out_of_place']:.2f}x out of place"
    if "backend" in x:
        note = f"backend {x['backend']}; {note}" if note else f"backend {x['backend']}"
    if "equal_to_dadam" in x:
        same = "output == DADAM" if x["equal_to_dadam"] else "OUTPUT DIFFERS from DADAM"
        note = f"{same}; {note}" if "extrapolated_hours" in x else same
    if "equal_to_dadam_on_pastes" in x:
        note = "pastes only; == DADAM on pasted images" if x["equal_to_dadam_on_pastes"] else "DIFFERS"
    if x.get("reused_copy_images_per_s"):
        note = f"copy into a reused buffer: {_fmt_rate(x['reused_copy_images_per_s'])} img/s"
        if x.get("page_faults_per_call") is not None:
            note += f"; {x['page_faults_per_call']} page faults per call"
    if "above_roofline" in x:
        note = f"ABOVE THE ROOFLINE: {x['above_roofline']}" + (f"; {note}" if note else "")
    return note


def format_table(results: list[Result], targets: list[dict]) -> str:
    """The stdout table: one row per result, ratios, targets with PASS/MISS, then the target summary.

    A row above 100 % of the roofline is marked ``!`` in the roofline column, with the reason in its notes.
    """
    head = ("benchmark", "B", "image", "img/s", "x naive", "x CutMix", "x offline", "roofline", "target")
    rows = []
    for r in results:
        shape = f"{'x'.join(str(d) for d in r.shape)} {r.dtype}" if r.shape else "-"
        tg = "; ".join(
            f"{t['target']} {'PASS' if t['pass'] else 'MISS' if t['pass'] is False else '?'}"
            for t in r.extra.get("targets", [])
        )
        roofline = _fmt_ratio(r.extra.get("fraction_of_roofline"), pct=True)
        if "above_roofline" in r.extra:
            roofline += " !"
        rows.append(
            (
                r.name,
                str(r.batch or "-"),
                shape,
                _fmt_rate(r.images_per_s),
                _fmt_ratio(r.extra.get("speed_vs_naive_loop")),
                _fmt_ratio(r.extra.get("speed_vs_kornia_cutmix")),
                _fmt_ratio(r.extra.get("speed_vs_offline")),
                roofline,
                tg,
                _note(r),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + "  notes"]
    lines.append("  ".join("-" * w for w in widths) + "  -----")
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
    lines.append("")
    lines.append("targets:")
    for t in targets:
        verdict = "PASS" if t["pass"] else "MISS" if t["pass"] is False else "n/a"
        value = t["value"]
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"  {verdict:4}  {t['name']}: {shown} (target {t['op']} {t['target']})")
    return "\n".join(lines)


def write_png(results: list[Result], path: str | os.PathLike, *, title: str) -> None:
    """A horizontal bar chart of images/s (log x-axis), one bar per measured result, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r.images_per_s]
    labels = []
    for r in rows:
        shape = f" {'x'.join(str(d) for d in r.shape[:2])} {r.dtype}" if r.shape else ""
        labels.append(f"{r.name} B={r.batch}{shape}")
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.5))
    y = list(range(len(rows)))[::-1]
    bar_colors = ["navy" if r.name.startswith("DADAM") else GROUP_COLORS.get(r.group, "tab:purple") for r in rows]
    ax.barh(y, [r.images_per_s for r in rows], color=bar_colors)
    for yi, r in zip(y, rows, strict=True):
        ax.text(r.images_per_s, yi, f" {_fmt_rate(r.images_per_s)}", va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("images / s (log)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    plt.close(fig)


def json_report(cfg: BenchConfig, results: list[Result], targets: list[dict], *, quick: bool) -> dict:
    """The JSON document of a run: device, date, versions, config, results and targets."""
    device = torch.device(cfg.device)
    return {
        "device": device_name(device),
        "device_type": device.type,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "config": {
            "size": cfg.size,
            "configs": [list(c) for c in cfg.configs],
            "quick": quick,
            "repeats": cfg.repeats,
            "warmup": cfg.warmup,
            "inner": cfg.inner,
            "max_patches": DADAM.max_patches,
            "p": DADAM.p,
            "label_mix": {"normal": 0.4, "tail": 0.3, "other": 0.3},
            "train": {"backbone": cfg.train_backbone, "size": cfg.train_size, "batch": cfg.train_batch},
            "pipeline": {"images": cfg.pipeline_images, "batch": cfg.pipeline_batch, "size": cfg.pipeline_size},
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "results": [r.to_json() for r in results],
        "targets": targets,
    }
