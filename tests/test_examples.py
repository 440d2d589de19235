"""The two examples end to end on phantom data in the real layouts (--phantom --tiny)."""

from __future__ import annotations

import json
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
    """The whole recipe: base without and with the binary encoding, the DADAM extend-mode fine-tune from the best
    checkpoint of the encoded base, the ensemble of the three best checkpoints on the development split."""
    out = tmp_path / "run"
    _run("mimic_cxr_lt.py", "--phantom", tmp_path / "phantom", "--tiny", "--quiet", "--out", out)
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert list(summary.index) == ["base_enc0", "base_enc1", "dadam", "ensemble"]
    assert summary["AP"].between(0, 1).all()
    configs = {
        name: json.loads((out / name / "config.json").read_text()) for name in ("base_enc0", "base_enc1", "dadam")
    }
    assert not configs["base_enc0"]["use_binary_enc"] and configs["base_enc0"]["dadam"] is None
    assert configs["base_enc1"]["use_binary_enc"] and configs["base_enc1"]["dataset_code"] == "augmented"
    ft = configs["dadam"]
    assert ft["init_from"].endswith("base_enc1/model_best.pt") and ft["dadam"]["mode"] == "extend"
    assert ft["epochs"] == 1 and ft["use_binary_enc"] and ft["dataset_code"] == "augmented"
    assert all(c["val_split"] == "patient" and c["aug"] == "light" for c in configs.values())
    # the fine-tune's epoch: its training patients plus the paper's 50k/210k pasted and blended extras
    members = json.loads((out / "summary.json").read_text())["members"]
    assert [Path(m).name for m in members.values()] == ["model_best.pt"] * 3
    # the ensemble is the mean of the three best checkpoints' development predictions
    cols = list(CXR_LT_CLASSES)
    preds = [
        pd.read_csv(out / name / "development" / "predictions.csv") for name in ("base_enc0", "base_enc1", "dadam")
    ]
    ens = pd.read_csv(out / "ensemble" / "predictions.csv")
    dev = pd.read_csv(tmp_path / "phantom" / "cxr-lt" / "development.csv")
    assert ens["image_id"].tolist() == dev["dicom_id"].tolist()
    np.testing.assert_allclose(ens[cols].to_numpy(), sum(p[cols].to_numpy() for p in preds) / 3, atol=1e-6)
    rep = pd.read_csv(out / "ensemble" / "report.csv", index_col=0)
    assert list(rep.index) == [*cols, "mean"] and rep.loc["mean", "n"] == len(dev) * 26


def test_mimic_cxr_lt_refuses_to_start_without_weights(tmp_path):
    """No --pretrained, --backbone-weights or --from-scratch: the recipe stops before any work, naming the three."""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent)}
    cmd = [sys.executable, str(EXAMPLES / "mimic_cxr_lt.py"), "--phantom", str(tmp_path / "ph"), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and not (tmp_path / "ph").exists()
    assert "--pretrained (timm's tresnet_l.miil_in1k_448 weights" in proc.stderr
    assert "--backbone-weights FILE, or --from-scratch" in proc.stderr


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
