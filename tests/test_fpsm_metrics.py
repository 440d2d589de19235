"""fpsm.metrics: the per-class report against scikit-learn, exclusions, Markdown and CSV output."""

import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

from dadam.labels import CXR_LT_CLASSES
from fpsm.metrics import multilabel_report, report_to_markdown, save_report


def _data(n=240, c=6, seed=0, nan_frac=0.2):
    g = np.random.default_rng(seed)
    targets = (g.random((n, c)) < np.linspace(0.1, 0.6, c)).astype(np.float64)
    probs = np.clip(0.35 * targets + 0.65 * g.random((n, c)), 0, 1)
    probs = np.round(probs, 2)  # ties, and values exactly at the 0.5 threshold
    targets[g.random((n, c)) < nan_frac] = np.nan
    return probs, targets


def _sklearn_row(p, y, threshold):
    known = ~np.isnan(y)
    p, y = p[known], y[known].astype(int)
    pred = (p > threshold).astype(int)
    return {
        "n": int(known.sum()),
        "n_pos": int(y.sum()),
        "AP": average_precision_score(y, p),
        "AUC": roc_auc_score(y, p),
        "F1": f1_score(y, pred, zero_division=0),
        "precision": precision_score(y, pred, zero_division=0),
        "recall": recall_score(y, pred, zero_division=0),
    }


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_report_equals_sklearn(threshold):
    probs, targets = _data()
    assert (probs == 0.5).any()
    names = [f"c{i}" for i in range(probs.shape[1])]
    df = multilabel_report(torch.from_numpy(probs), torch.from_numpy(targets), names, threshold=threshold)
    assert list(df.index) == [*names, "mean"]
    assert list(df.columns) == ["n", "n_pos", "n_neg", "AP", "AUC", "F1", "precision", "recall"]
    for c, name in enumerate(names):
        want = _sklearn_row(probs[:, c], targets[:, c], threshold)
        for key, value in want.items():
            assert df.loc[name, key] == pytest.approx(value, abs=1e-6), (name, key)
        assert df.loc[name, "n_neg"] == want["n"] - want["n_pos"]
    for metric in ["AP", "AUC", "F1", "precision", "recall"]:
        assert df.loc["mean", metric] == pytest.approx(df.loc[names, metric].mean(), abs=1e-12)
    assert df.loc["mean", "n_pos"] == df.loc[names, "n_pos"].sum()
    assert df.attrs["excluded"] == {"no_positives": [], "no_negatives": []}
    assert df.attrs["threshold"] == threshold


def test_classes_without_positives_or_negatives_are_excluded_from_means():
    probs, targets = _data(n=120, c=4, seed=1, nan_frac=0.1)
    targets[:, 1] = np.where(np.isnan(targets[:, 1]), np.nan, 0.0)  # no positives
    targets[:, 3] = np.where(np.isnan(targets[:, 3]), np.nan, 1.0)  # no negatives
    names = ["a", "none_pos", "c", "all_pos"]
    df = multilabel_report(probs, targets, names)
    assert df.attrs["excluded"] == {"no_positives": ["none_pos"], "no_negatives": ["all_pos"]}
    assert df.loc["none_pos", ["AP", "AUC", "F1", "precision", "recall"]].isna().all()
    assert df.loc["none_pos", "n_pos"] == 0 and df.loc["all_pos", "n_neg"] == 0
    assert math.isnan(df.loc["all_pos", "AUC"])
    known = ~np.isnan(targets[:, 3])
    assert df.loc["all_pos", "AP"] == pytest.approx(1.0)
    assert df.loc["all_pos", "recall"] == pytest.approx(recall_score(targets[known, 3], probs[known, 3] > 0.5))
    assert df.loc["mean", "AUC"] == pytest.approx(df.loc[["a", "c"], "AUC"].mean())
    assert df.loc["mean", "AP"] == pytest.approx(df.loc[["a", "c", "all_pos"], "AP"].mean())
    md = report_to_markdown(df)
    assert "Left out of all means (no positives): none_pos." in md
    assert "Left out of the AUC mean (no negatives): all_pos." in md


def test_full_cxr_lt_class_list_and_single_class():
    g = np.random.default_rng(2)
    probs = g.random((50, 26))
    targets = (g.random((50, 26)) < 0.5).astype(float)
    df = multilabel_report(probs, targets, CXR_LT_CLASSES)
    assert list(df.index[:-1]) == list(CXR_LT_CLASSES) and len(df) == 27
    single = multilabel_report(probs[:, :1], targets[:, :1], ["only"])
    assert single.loc["only", "AUC"] == pytest.approx(roc_auc_score(targets[:, 0], probs[:, 0]), abs=1e-6)
    assert single.loc["only", "AP"] == pytest.approx(df.loc[CXR_LT_CLASSES[0], "AP"])


def test_markdown_and_csv_output(tmp_path):
    probs, targets = _data(n=60, c=3, seed=3)
    df = multilabel_report(probs, targets, ["x", "y", "z"])
    md = report_to_markdown(df, digits=3)
    lines = md.splitlines()
    assert lines[0] == "| class | n | n_pos | n_neg | AP | AUC | F1 | precision | recall |"
    assert lines[3].startswith(f"| y | {df.loc['y', 'n']} | {df.loc['y', 'n_pos']} |")
    assert f"{df.loc['y', 'AUC']:.3f}" in lines[3]
    assert lines[5].startswith("| **mean** |")
    assert "threshold 0.5" in md
    save_report(df, tmp_path / "out" / "report.csv")
    save_report(df, tmp_path / "out" / "report.md")
    back = pd.read_csv(tmp_path / "out" / "report.csv", index_col="class")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert (tmp_path / "out" / "report.md").read_text() == report_to_markdown(df)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.csv", "report.md"]  # no temp leftovers
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "out" / "report.csv").stat().st_mode & 0o777 == 0o666 & ~umask  # as open(path, "w") makes it
    with pytest.raises(ValueError, match="must end in .csv or .md"):
        save_report(df, tmp_path / "report.txt")


def test_report_errors():
    p, y = np.full((4, 2), 0.5), np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    with pytest.raises(ValueError, match=r"probs must be probabilities in \[0, 1\].*pass sigmoid\(logits\)"):
        multilabel_report(p * 3, y, ["a", "b"])
    with pytest.raises(ValueError, match=r"same shape, got \(4, 2\) and \(4, 1\)"):
        multilabel_report(p, y[:, :1], ["a", "b"])
    with pytest.raises(ValueError, match="class_names has 1 names but probs has 2 columns"):
        multilabel_report(p, y, ["a"])
    bad = y.copy()
    bad[2, 1] = 2.0
    with pytest.raises(ValueError, match="targets must be 0, 1 or NaN, got 2.0 at row 2, class 'b'"):
        multilabel_report(p, bad, ["a", "b"])
    with pytest.raises(ValueError, match="probs contains NaN"):
        multilabel_report(np.full((4, 2), np.nan), y, ["a", "b"])
    with pytest.raises(ValueError, match="unique and not 'mean'"):
        multilabel_report(p, y, ["a", "a"])
