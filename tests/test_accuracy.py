"""The accuracy experiment (benchmarks/accuracy.py): its statistics against slow references, its building blocks,
and the quick run end to end with its JSON contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmarks.accuracy import main
from benchmarks.accuracy_arms import ARMS, arm_dadam_config, realism_options, realism_supported
from benchmarks.accuracy_config import ARM_NAMES, accuracy_preset
from benchmarks.accuracy_data import load_phantom_data
from benchmarks.accuracy_stats import (
    average_precision,
    bootstrap_counts,
    class_groups,
    paired_bootstrap,
)
from benchmarks.accuracy_train import batch_indices
from dadam import DadamConfig
from dadam.labels import CXR_LT_CLASSES
from fpsm.metrics import multilabel_report


def _report_ap(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-class AP of the library's report (torchmetrics) on explicit data: the slow reference."""
    names = [f"class{k}" for k in range(scores.shape[1])]
    return multilabel_report(scores, targets, names)["AP"].to_numpy()[: len(names)]


def _ties_and_rare_positives(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((n, c)), 1)  # many tied scores
    targets = (rng.random((n, c)) < np.linspace(0.04, 0.5, c)).astype(np.float64)
    targets[0, 0] = 1.0  # class 0 has few positives: some resamples hold none
    return scores, targets


def test_average_precision_matches_the_report_on_every_resample():
    scores, targets = _ties_and_rare_positives(50, 4, seed=0)
    counts = bootstrap_counts(50, 30, seed=1)
    fast = average_precision(scores, targets, counts)  # (30, 4)
    assert fast.shape == (30, 4)
    assert np.isnan(fast[:, 0]).any()  # a resample without a positive of class 0 has no AP
    for b in range(30):
        idx = np.repeat(np.arange(50), counts[b])  # the resample as data
        if targets[idx, 0].sum() == 0:
            assert np.isnan(fast[b, 0]) and np.all(np.isfinite(fast[b, 1:]))
            continue
        np.testing.assert_allclose(fast[b], _report_ap(scores[idx], targets[idx]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(average_precision(scores, targets)[0], _report_ap(scores, targets), atol=1e-6)


def test_bootstrap_counts_are_the_resampled_indices():
    counts = bootstrap_counts(7, 5, seed=3)
    draws = np.random.default_rng(3).integers(0, 7, size=(5, 7))
    assert counts.shape == (5, 7) and counts.sum(1).tolist() == [7] * 5
    for b in range(5):
        assert counts[b].tolist() == np.bincount(draws[b], minlength=7).tolist()


def test_paired_bootstrap_matches_a_slow_reference():
    n, n_boot, level = 40, 25, 0.9
    rng = np.random.default_rng(5)
    targets = (rng.random((n, 5)) < [0.1, 0.2, 0.3, 0.4, 0.5]).astype(np.float64)
    targets[:2, 0] = 1.0
    probs = {(arm, s): rng.random((n, 5)) for arm in ("a", "b") for s in (0, 1)}
    groups = {"all": [0, 1, 2, 3, 4], "tail": [0, 1]}
    contrasts = [("b", "a", ("map", "tail_map"))]
    out = paired_bootstrap(probs, targets, groups, contrasts=contrasts, n_boot=n_boot, seed=7, level=level)

    def metrics(idx: np.ndarray, p: np.ndarray) -> dict[str, float]:
        ap = _report_ap(p[idx], targets[idx])  # NaN for a class without positives
        return {"map": np.nanmean(ap), "tail_map": np.nanmean(ap[[0, 1]])}

    draws = np.random.default_rng(7).integers(0, n, size=(n_boot, n))  # the same resamples, as index arrays
    diffs = {"map": [], "tail_map": []}
    for b in range(n_boot):
        m = {key: metrics(draws[b], p) for key, p in probs.items()}
        for metric in diffs:
            arm_b = (m[("b", 0)][metric] + m[("b", 1)][metric]) / 2
            arm_a = (m[("a", 0)][metric] + m[("a", 1)][metric]) / 2
            diffs[metric].append(arm_b - arm_a)
    full = {key: metrics(np.arange(n), p) for key, p in probs.items()}
    assert [c["metric"] for c in out] == ["map", "tail_map"]
    for c in out:
        d = np.array(diffs[c["metric"]])
        assert c["contrast"] == "b-a" and c["n_boot"] == n_boot and c["level"] == level
        assert c["low"] == pytest.approx(np.percentile(d, 5), abs=1e-6)
        assert c["high"] == pytest.approx(np.percentile(d, 95), abs=1e-6)
        assert c["p_above_zero"] == pytest.approx((d > 0).mean())
        per_seed = {str(s): full[("b", s)][c["metric"]] - full[("a", s)][c["metric"]] for s in (0, 1)}
        assert c["per_seed"] == pytest.approx(per_seed, abs=1e-6)
        assert c["estimate"] == pytest.approx(np.mean(list(per_seed.values())), abs=1e-6)


def test_paired_bootstrap_skips_contrasts_of_missing_arms():
    targets = np.eye(4)
    probs = {("a", 0): np.full((4, 4), 0.5)}
    assert paired_bootstrap(probs, targets, {"all": [0, 1, 2, 3]}, n_boot=5) == []


def test_class_groups():
    y = np.zeros((100, len(CXR_LT_CLASSES)))
    for k in range(len(CXR_LT_CLASSES)):
        y[: k + 1, k] = 1  # class k has frequency (k + 1) / 100
    groups = class_groups(y, dadam_tail=("Mass", "Nodule"))
    assert groups["tail"] == list(range(13)) and groups["head"] == list(range(13, 26))  # below the median (13.5)
    assert groups["dadam_tail"] == [CXR_LT_CLASSES.index("Mass"), CXR_LT_CLASSES.index("Nodule")]
    assert [CXR_LT_CLASSES[i] for i in groups["small"]] == ["Nodule"]
    assert [CXR_LT_CLASSES[i] for i in groups["large"]] == ["Pleural Effusion", "Cardiomegaly"]


def test_arms_and_their_dadam_options():
    base = DadamConfig(p=0.5)
    assert arm_dadam_config(ARMS["a"], base, 192) == (None, {})
    assert arm_dadam_config(ARMS["d"], base, 192) == (None, {})
    assert ARMS["d"].stages == (4,) and ARMS["a"].stages == ARMS["b"].stages == ARMS["c"].stages == (2, 3, 4)
    b, note_b = arm_dadam_config(ARMS["b"], base, 192)
    assert b == base.replace(companions="correlation") and note_b == {}
    c, note_c = arm_dadam_config(ARMS["c"], base, 192)
    assert c.companions == "cooccurrence" and c.p == 0.5
    assert note_c["applied"] is realism_supported()
    assert note_c["options"] == {"feather": 3, "match": "meanstd"}  # 8 px at 448 is 3 px at 192
    assert realism_options(448)["feather"] == 8
    if realism_supported():
        assert (c.feather, c.match) == (3, "meanstd")
    else:
        assert c == base.replace(companions="cooccurrence") and "runs the hard paste" in note_c["reason"]


def test_batch_indices_walk_through_epochs():
    idx = batch_indices(10, 7, 4, seed=3)  # 28 draws: two whole epochs and 8 of a third
    flat = idx.flatten().tolist()
    assert idx.shape == (7, 4)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert torch.equal(idx, batch_indices(10, 7, 4, seed=3))
    assert not torch.equal(idx, batch_indices(10, 7, 4, seed=4))


def test_presets():
    for name in ("quick", "pilot", "cpu", "gpu"):
        cfg = accuracy_preset(name)
        assert set(cfg.arms) <= set(ARM_NAMES)
    cpu = accuracy_preset("cpu")
    assert cpu.arms == ARM_NAMES and len(cpu.seeds) >= 3 and 192 <= cpu.data.canvas <= 256
    assert accuracy_preset("gpu").backbone == "tresnet_l" and accuracy_preset("gpu").data.canvas == 448
    assert cpu.total_train_steps == 3 * (2 * cpu.base_steps + 4 * cpu.finetune_steps)
    with pytest.raises(ValueError, match="preset must be one of"):
        accuracy_preset("huge")
    with pytest.raises(ValueError, match="arms must be distinct names"):
        cpu.replace(arms=("a", "e")).validate()


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--quick", "--pilot", "--preset", "--device", "--arms", "--seeds", "--data", "--json", "--resume"):
        assert flag in out
    for argv, message in (
        (["--arms", "e"], "invalid choice: 'e'"),
        (["--quick", "--seeds", "1", "1"], "seeds must be distinct ints >= 0"),
        (["--quick", "--pilot"], "give at most one of --quick, --pilot and --preset"),
        (["--quick", "--threads", "0"], "--threads must be >= 1, got 0"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values)


@pytest.mark.slow
def test_quick_run_writes_the_json_contract(tmp_path, capsys):
    out = tmp_path / "accuracy_quick.json"
    assert main(["--quick", "--data", str(tmp_path / "cache"), "--json", str(out), "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for key in ("device", "date", "versions", "config", "runs", "ci", "arms", "data", "classes", "timing"):
        assert key in doc
    cfg = accuracy_preset("quick")
    assert doc["config"]["backbone"] == cfg.backbone and doc["config"]["seeds"] == list(cfg.seeds)
    assert sorted((r["arm"], r["seed"]) for r in doc["runs"]) == sorted((a, s) for a in ARM_NAMES for s in cfg.seeds)
    tail = doc["classes"]["tail"]
    assert tail and set(tail) <= set(CXR_LT_CLASSES)
    for run in doc["runs"]:
        assert set(run["per_class"]) == set(CXR_LT_CLASSES)
        assert all(v is None or 0.0 <= v <= 1.0 for v in run["per_class"].values())
        assert run["map"] == pytest.approx(_mean(run["per_class"].values()), abs=1e-6)
        assert run["tail_map"] == pytest.approx(_mean(run["per_class"][c] for c in tail), abs=1e-6)
        assert run["small_ap"] == pytest.approx(run["per_class"]["Nodule"], abs=1e-6)
    wanted = {("b-a", "map"), ("b-a", "tail_map"), ("c-a", "map"), ("c-a", "tail_map"), ("a-d", "map")}
    wanted |= {("a-d", "small_ap"), ("a-d", "large_ap")}
    assert wanted <= {(c["contrast"], c["metric"]) for c in doc["ci"]}
    for c in doc["ci"]:
        assert c["low"] <= c["high"] and c["n_boot"] == cfg.n_boot and len(c["per_seed"]) == len(cfg.seeds)
        first, second = c["contrast"].split("-")
        means = {a: _mean(r[c["metric"]] for r in doc["runs"] if r["arm"] == a) for a in (first, second)}
        assert c["estimate"] == pytest.approx(means[first] - means[second], abs=1e-6)
    assert doc["arms"]["c"]["realism"]["applied"] is realism_supported()
    assert doc["arms"]["b"]["dadam"]["companions"] == "correlation" and doc["arms"]["a"]["dadam"] is None
    printed = capsys.readouterr().out
    assert "estimate:" in printed and "| contrast | metric |" in printed
    # the data is cached: a second load draws nothing and gives the same tensors
    again = load_phantom_data(cfg.data, tmp_path / "cache", progress=False)
    assert again.info["cached"] and len(again.test) == doc["data"]["images"]["test"]
    assert math.isclose(float(again.test.labels.sum()), sum(doc["data"]["positives"]["test"].values()))
    # --resume: a lost prediction is made again from the stored base, to the same values; the rest is reused
    (stored,) = (tmp_path / "cache").glob("*/runs/*/pred_b_s1.safetensors")
    kept = {p: p.stat().st_mtime_ns for p in stored.parent.glob("*.safetensors") if p != stored}
    stored.unlink()
    resumed = tmp_path / "resumed.json"
    argv = ["--quick", "--data", str(tmp_path / "cache"), "--json", str(resumed), "--no-progress", "--resume"]
    assert main(argv) == 0

    def scores(runs: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in runs]

    assert scores(json.loads(resumed.read_text())["runs"]) == scores(doc["runs"])
    assert stored.is_file() and kept == {p: p.stat().st_mtime_ns for p in kept}  # the others were not trained again
