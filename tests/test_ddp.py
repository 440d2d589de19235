"""DDP: `torchrun`-style launch of fpsm.train with 2 CPU processes on gloo; identical weights on both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from dadam.labels import CXR_LT_CLASSES
from tests.helpers import write_nih_training_set


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path, shared_data):
    # ranks get 5 and 4 of the 9 validation images: 2 and 1 eval batches of 4
    write_nih_training_set(tmp_path, shared_data, side=64, canvas=64, seed=1, val_rows=9)
    df = pd.read_csv(tmp_path / "train.csv")
    out = tmp_path / "run"
    flags = (
        "--dataset labels-csv --backbone resnet10t --canvas 64 --batch-size 4 --epochs 1 --max-steps 3 --ckpt-every 2 "
        "--num-workers 0 --device cpu --no-progress --no-tensorboard --val-split official --dadam --dadam-mode replace "
        "--dadam-p 1.0 --log-every 1"
    ).split()
    files = ["--train-csv", tmp_path / "train.csv", "--val-csv", tmp_path / "val.csv", "--out-dir", out]
    files += ["--bank", tmp_path / "bank.safetensors"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fpsm.train"]
    cmd = [*launch, *flags, *map(str, files)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    final = json.loads((out / "final.json").read_text())
    hashes = final["rank_weight_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # both ranks end with identical parameters
    assert final["step"] == 3
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3 and len(ckpt["rng"]) == 2  # rank 0 wrote one RNG state per rank
    # per-rank generators (DADAM and the base augmentation) are seeded differently
    assert not torch.equal(ckpt["rng"][0]["dadam"], ckpt["rng"][1]["dadam"])
    # and so are the global RNGs (dropout): identical masks on every rank would waste the regularisation
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    log = pd.read_csv(out / "train_log.csv")
    assert log["step"].tolist() == [1, 2, 3]  # one writer (rank 0)
    pred = pd.read_csv(out / "eval" / "step0000003_pred.csv")  # 32 / (2 x 4) = 4 steps/epoch: ends mid-epoch
    assert pred["image_id"].tolist() == df["image_id"].iloc[:9].tolist()  # gathered once each, in order
    # the gathered probabilities are the final model's, image by image
    from dadam.data import LabelDataset, to_model_input
    from fpsm.evaluate import load_model

    model, _ = load_model(out / "model.pt")
    ds = LabelDataset(df.iloc[:9], tmp_path, canvas=64)
    with torch.no_grad():
        ref = model(to_model_input(torch.stack([ds[i][0] for i in range(9)]))).probs
    np.testing.assert_allclose(pred[list(CXR_LT_CLASSES)].to_numpy(), ref.numpy(), atol=1e-5)
