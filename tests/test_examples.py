"""The two examples end to end on phantom data in the real layouts (--phantom --tiny)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dadam.labels import CXR_LT_CLASSES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script, *args):
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent)}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_mimic_cxr_lt_example(tmp_path):
    out = tmp_path / "run"
    _run("mimic_cxr_lt.py", "--phantom", tmp_path / "phantom", "--tiny", "--quiet", "--out", out)
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert list(summary.index) == ["seed0/base", "seed0/dadam", "seed1/base", "seed1/dadam", "ensemble"]
    assert summary["AP"].between(0, 1).all()
    # the fine-tune stage started from the base weights and ran with DADAM on
    for seed in (0, 1):
        cfg = pd.read_json(out / f"seed{seed}" / "dadam" / "config.json", typ="series")
        assert cfg["dadam"] and cfg["init_from"].endswith(f"seed{seed}/base/model.pt")
    # the ensemble is the mean of the two fine-tuned models' development predictions
    a = pd.read_csv(out / "seed0" / "dadam" / "development" / "predictions.csv")
    b = pd.read_csv(out / "seed1" / "dadam" / "development" / "predictions.csv")
    ens = pd.read_csv(out / "ensemble" / "predictions.csv")
    dev = pd.read_csv(tmp_path / "phantom" / "cxr-lt" / "development.csv")
    assert ens["image_id"].tolist() == dev["dicom_id"].tolist()
    cols = list(CXR_LT_CLASSES)
    np.testing.assert_allclose(ens[cols].to_numpy(), (a[cols].to_numpy() + b[cols].to_numpy()) / 2, atol=1e-6)
    rep = pd.read_csv(out / "ensemble" / "report.csv", index_col=0)
    assert list(rep.index) == [*cols, "mean"] and rep.loc["mean", "n"] == len(dev) * 26


@pytest.mark.slow
def test_mura_example(tmp_path):
    out = tmp_path / "run"
    _run("mura.py", "--phantom", tmp_path / "phantom", "--tiny", "--quiet", "--out", out)
    images = pd.read_csv(out / "valid" / "predictions.csv")
    assert list(images.columns) == ["image_id", "Abnormal"] and images["Abnormal"].between(0, 1).all()
    studies = pd.read_csv(out / "valid" / "study_predictions.csv")
    # study probability = mean of its images' probabilities (image_id is the MURA path)
    folder = images["image_id"].str.rsplit("/", n=1).str[0]
    ref = images.groupby(folder)["Abnormal"].mean()
    key = "MURA-v1.1/valid/XR_" + studies["body_part"] + "/" + studies["patient"] + "/" + studies["study"]
    np.testing.assert_allclose(studies["prob"].to_numpy(), ref.loc[key].to_numpy(), atol=1e-6)
    assert studies["images"].sum() == len(images)
    kappa = pd.read_csv(out / "valid" / "kappa.csv", index_col=0)
    assert kappa.loc["ALL", "studies"] == len(studies)
    assert set(kappa.index) - {"ALL"} == set(studies["body_part"])
    assert kappa["kappa"].dropna().between(-1, 1).all()


def test_mura_kappa_table_explains_its_nan():
    """A body part with one class of studies has no AUC; called all alike too, its kappa is 0 / 0: the note says so."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("examples_mura", EXAMPLES / "mura.py")
    mura = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mura)
    studies = pd.DataFrame(
        {
            "body_part": ["HAND"] * 3 + ["WRIST"] * 4,
            "prob": [0.1, 0.2, 0.3, 0.9, 0.2, 0.8, 0.1],
            "label": [0, 0, 0, 1, 0, 1, 0],
        }
    )
    table = mura.kappa_table(studies)
    assert np.isnan(table.loc["HAND", "kappa"]) and np.isnan(table.loc["HAND", "AUC"])
    assert table.loc["HAND", "note"] == (
        "AUC undefined: every study is normal; "
        "kappa undefined: the model also calls every study the same (chance agreement 1)"
    )
    assert table.loc["WRIST", "kappa"] == 1.0 and table.loc["WRIST", "note"] == ""
