"""What the accuracy experiment writes: the JSON document, Markdown tables and the PNG of the arms with their CIs."""

from __future__ import annotations

import datetime
import importlib.metadata
import io
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from benchmarks.accuracy_arms import ARMS, RunRecord, arm_dadam_config
from benchmarks.accuracy_config import AccuracyConfig
from benchmarks.accuracy_stats import average_precision, group_means
from benchmarks.report import device_name, versions
from dadam.files import atomic_write
from dadam.labels import CXR_LT_CLASSES

__all__ = ["METRICS", "json_document", "markdown_tables", "run_metrics", "write_png"]

#: The per-run metrics, in table order: JSON key -> column title.
METRICS: dict[str, str] = {
    "map": "mAP",
    "tail_map": "tail mAP",
    "head_map": "head mAP",
    "dadam_tail_map": "DADAM-tail mAP",
    "small_ap": "small (Nodule) AP",
    "large_ap": "large (Effusion, Cardiomegaly) AP",
}


def _package_version() -> str | None:
    try:
        return importlib.metadata.version("dadam-fpsm")
    except importlib.metadata.PackageNotFoundError:
        return None


def _finite(v: float) -> float | None:
    """JSON has no NaN: an undefined value is null."""
    return None if v is None or not math.isfinite(v) else float(v)


def run_metrics(probs: np.ndarray, targets: np.ndarray, groups: Mapping[str, Sequence[int]]) -> dict:
    """One run's metrics on the evaluation set: :data:`METRICS` and ``per_class`` (class name -> AP or None)."""
    ap = average_precision(probs, targets)  # (1, C)
    means = group_means(ap, groups)
    names = {"all": "map", "tail": "tail_map", "head": "head_map", "dadam_tail": "dadam_tail_map"}
    names.update(small="small_ap", large="large_ap")
    out = {names[g]: _finite(float(v[0])) for g, v in means.items() if g in names}
    out["per_class"] = {c: _finite(float(a)) for c, a in zip(CXR_LT_CLASSES, ap[0], strict=True)}
    return out


def _summary(runs: Sequence[dict], arms: Sequence[str]) -> dict:
    out = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        out[arm] = {}
        for metric in METRICS:
            values = np.array([r[metric] for r in mine if r[metric] is not None], np.float64)
            out[arm][metric] = {
                "mean": _finite(float(values.mean())) if values.size else None,
                "std": _finite(float(values.std(ddof=1))) if values.size > 1 else None,
                "seeds": int(values.size),
            }
    return out


def json_document(
    cfg: AccuracyConfig,
    *,
    device: str,
    data_info: dict,
    groups: Mapping[str, Sequence[int]],
    records: Sequence[RunRecord],
    runs: Sequence[dict],
    ci: Sequence[dict],
    timing: dict,
) -> dict:
    """The JSON document of an experiment: device, date, versions, config, arms, data, classes, runs, summary, CIs."""
    arms = {}
    for name in cfg.arms:
        arm = ARMS[name]
        dadam_config, realism = arm_dadam_config(arm, cfg.dadam, cfg.data.canvas)
        arms[name] = {
            "label": arm.label,
            "short": arm.short,
            "stages": list(arm.stages),
            "dadam": None if dadam_config is None else dadam_config.to_dict(),
            **({"realism": realism} if realism else {}),
        }
    seconds = {(r.arm, r.seed): (r.train_s, r.eval_s) for r in records}
    return {
        "benchmark": "accuracy",
        "preset": cfg.preset,
        "device": device_name(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {**versions(), "dadam-fpsm": _package_version()},
        "config": cfg.to_dict(),
        "eval_split": cfg.eval_split,
        "arms": arms,
        "data": data_info,
        "classes": {g: [CXR_LT_CLASSES[i] for i in idx] for g, idx in groups.items() if g != "all"},
        "runs": [
            {
                **r,
                "train_s": round(seconds[(r["arm"], r["seed"])][0], 1),
                "eval_s": round(seconds[(r["arm"], r["seed"])][1], 1),
            }
            for r in runs
        ],
        "summary": _summary(runs, cfg.arms),
        "ci": [{k: (_finite(v) if isinstance(v, float) else v) for k, v in c.items()} for c in ci],
        "timing": timing,
    }


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown_tables(doc: Mapping) -> str:
    """Two Markdown tables: each arm's metrics (mean ± std over seeds) and the contrasts with their CIs."""
    arms = list(doc["summary"])
    metrics = list(METRICS)
    lines = ["| arm | " + " | ".join(METRICS[m] for m in metrics) + " |", "| --- |" + " --- |" * len(metrics)]
    for arm in arms:
        cells = []
        for m in metrics:
            s = doc["summary"][arm][m]
            cells.append(f"{_fmt(s['mean'])} ± {_fmt(s['std'])}" if s["std"] is not None else _fmt(s["mean"]))
        label = doc["arms"][arm]["label"]
        if doc["arms"][arm].get("realism", {}).get("applied") is False:
            label += " (realism off: hard paste)"
        lines.append(f"| {arm}: {label} | " + " | ".join(cells) + " |")
    if doc["ci"]:
        level = int(round(100 * doc["ci"][0]["level"]))
        lines += ["", f"| contrast | metric | difference | {level}% CI | P(> 0) | per seed |", "|" + " --- |" * 6]
        for c in doc["ci"]:
            per_seed = ", ".join(f"{v:+.3f}" for v in c["per_seed"].values() if v is not None)
            lines.append(
                f"| {c['contrast']} | {METRICS.get(c['metric'], c['metric'])} | {c['estimate']:+.3f} | "
                f"[{_fmt(c['low'])}, {_fmt(c['high'])}] | {_fmt(c['p_above_zero'], 2)} | {per_seed} |"
            )
    return "\n".join(lines)


def write_png(doc: Mapping, path: str | os.PathLike) -> None:
    """Left: each arm's mAP, head mAP, tail mAP and DADAM-tail mAP (seed means as bars, seeds as dots). Right: the
    contrasts with their bootstrap CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(doc["summary"])
    shown = ("map", "head_map", "tail_map", "dadam_tail_map")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1, 1.2]})
    width = 0.8 / len(shown)
    for k, metric in enumerate(shown):
        xs = np.arange(len(arms)) + (k - (len(shown) - 1) / 2) * width
        means = [doc["summary"][a][metric]["mean"] or 0.0 for a in arms]
        left.bar(xs, means, width, label=METRICS[metric], color=f"C{k}", alpha=0.75)
        for x, arm in zip(xs, arms, strict=True):
            seeds = [r[metric] for r in doc["runs"] if r["arm"] == arm and r[metric] is not None]
            left.scatter([x] * len(seeds), seeds, color="black", s=10, zorder=3)
    left.set_xticks(np.arange(len(arms)), [f"{a}: {doc['arms'][a]['short']}" for a in arms], fontsize=8)
    left.set_ylabel(f"AP on the {doc['eval_split']} set")
    left.legend(fontsize=8, loc="upper left", ncol=2)
    left.set_ylim(0, 1.3 * left.get_ylim()[1])  # room for the legend above the bars
    left.set_title(f"arms ({len(doc['config']['seeds'])} seeds; dots: seeds)", fontsize=10)
    ci = doc["ci"]
    if not ci:
        right.text(0.5, 0.5, "no contrast: the run has one arm", ha="center", va="center")
        right.set_axis_off()
    ys = np.arange(len(ci))[::-1]
    for y, c in zip(ys, ci, strict=True):
        low, high = c["low"], c["high"]
        color = "tab:green" if low is not None and low > 0 else "tab:red" if high is not None and high < 0 else "gray"
        if low is not None and high is not None:
            right.plot([low, high], [y, y], color=color, lw=2)
        right.plot([c["estimate"]], [y], "o", color=color)
    right.axvline(0.0, color="black", lw=0.8)
    right.set_yticks(ys, [f"{c['contrast']}  {METRICS.get(c['metric'], c['metric'])}" for c in ci], fontsize=8)
    level = int(round(100 * ci[0]["level"])) if ci else 95
    right.set_xlabel(f"difference in AP, paired bootstrap {level}% CI")
    right.set_title(
        f"{doc['preset']}: {doc['config']['backbone']} at {doc['config']['data']['canvas']} px "
        f"({doc['eval_split']} images resampled, seeds averaged)",
        fontsize=9,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
