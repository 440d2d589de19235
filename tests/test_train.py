"""fpsm.train / fpsm.evaluate on CPU with a tiny backbone: resume == uninterrupted, fine-tuning, logs, CLI, errors."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from dadam.config import DadamConfig
from dadam.labels import CXR_LT_CLASSES
from fpsm.train import TrainConfig, fit, load_checkpoint_weights, main
from tests.helpers import write_nih_training_set

CANVAS = 64


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, shared_data):
    """The 32 real NIH images at 96 px, random multi-hot labels (NaN sprinkled in), a patch bank from NIH boxes."""
    d = tmp_path_factory.mktemp("tiny")
    write_nih_training_set(d, shared_data, side=96, canvas=CANVAS, seed=0, val_rows=10, unknown_fraction=0.05)
    return d


def _cfg(d, out, **kw):
    base = dict(
        dataset="labels-csv",
        root=str(d),
        train_csv=str(d / "train.csv"),
        val_csv=str(d / "val.csv"),
        out_dir=str(out),
        backbone="resnet10t",
        canvas=CANVAS,
        batch_size=8,
        epochs=2,
        max_steps=6,
        num_workers=0,
        ckpt_every=2,
        device="cpu",
        progress=False,
        log_every=1,
        lr=1e-3,
        warmup_steps=2,
        tensorboard=False,
        dadam=DadamConfig(p=1.0),
        bank=str(d / "bank.safetensors"),
        drop_rate=0.5,  # dropout draws from the global RNG: resume must restore it exactly
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return fit(_cfg(tiny_data, out, tensorboard=True)), out


def test_full_run_outputs(uninterrupted, tiny_data):
    res, out = uninterrupted
    assert res.step == 6 and not res.stopped and res.epoch == 1
    log = pd.read_csv(out / "train_log.csv")
    assert log["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert log["epoch"].tolist() == [0, 0, 0, 0, 1, 1]
    # warm-up 2 steps from 1% of lr, then cosine over the remaining 4 steps down to 0
    lr = 1e-3
    expected = [lr * (0.01 + 0.99 * 1 / 2), lr] + [lr * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3, 4)]
    np.testing.assert_allclose(log["lr"].to_numpy(), expected, rtol=1e-5, atol=1e-12)
    ev = pd.read_csv(out / "eval_log.csv")
    assert ev["tag"].tolist() == ["epoch000", "step0000006"]  # end of epoch 0, then the final step
    rep = pd.read_csv(out / "eval" / "epoch000_report.csv", index_col=0)
    assert list(rep.index) == [*CXR_LT_CLASSES, "mean"] and {"AP", "AUC", "F1"} <= set(rep.columns)
    assert (out / "eval" / "epoch000_report.md").read_text().startswith("| class |")
    pred = pd.read_csv(out / "eval" / "step0000006_pred.csv")
    assert list(pred.columns) == ["image_id", *CXR_LT_CLASSES] and len(pred) == 10
    assert pred[list(CXR_LT_CLASSES)].to_numpy().min() >= 0 and pred[list(CXR_LT_CLASSES)].to_numpy().max() <= 1
    assert list((out / "tb").glob("events.out.tfevents.*"))
    final = json.loads((out / "final.json").read_text())
    assert final["step"] == 6 and len(final["rank_weight_hashes"]) == 1
    w = load_checkpoint_weights(out / "model.pt")
    for k, v in res.model.state_dict().items():
        assert torch.equal(w[k], v), k
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["config"]["backbone"] == "resnet10t"
    # config.json and the checkpoint hold the DADAM options as plain values; both read back to the run's config
    cfg = _cfg(tiny_data, out, tensorboard=True)
    stored = json.loads((out / "config.json").read_text())
    assert stored["dadam"] == {**DadamConfig().to_dict(), "p": 1.0} and stored["stages"] == [2, 3, 4]
    assert TrainConfig.from_dict(stored) == cfg and TrainConfig.from_dict(ckpt["config"]) == cfg


@pytest.mark.parametrize(("stop_after", "epoch"), [(3, 0), (5, 1)])  # 32 images / batch 8: 4 steps per epoch
def test_resume_gives_same_weights(uninterrupted, tiny_data, tmp_path, stop_after, epoch):
    """Kill after `stop_after` steps (checkpoints every 2), resume: same weights and losses as never stopping."""
    full, full_out = uninterrupted
    log_full = pd.read_csv(full_out / "train_log.csv")
    stopped = fit(_cfg(tiny_data, tmp_path, stop_after=stop_after))
    # the "kill" came after exactly stop_after steps, which went as in the uninterrupted run (one log row per step)
    log_stopped = pd.read_csv(tmp_path / "train_log.csv")
    assert log_stopped["step"].tolist() == list(range(1, stop_after + 1))
    np.testing.assert_array_equal(log_stopped["loss"].to_numpy(), log_full["loss"].to_numpy()[:stop_after])
    assert stopped.stopped and (stopped.step, stopped.epoch) == (stop_after, epoch)
    assert log_stopped["epoch"].tolist() == log_full["epoch"].tolist()[:stop_after]
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "final.json").exists()
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 * (stop_after // 2)  # the last checkpoint before the "kill"
    # the stopped model holds the weights of step stop_after: one step past the checkpoint, short of the end
    name = "heads.0.weight"
    assert not torch.equal(stopped.model.state_dict()[name], ckpt["model"][name])
    assert not torch.equal(stopped.model.state_dict()[name], full.model.state_dict()[name])
    (tmp_path / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # a save killed half-way
    resumed = fit(_cfg(tiny_data, tmp_path, resume=True))
    assert not list(tmp_path.glob(".*.tmp"))  # the leftover is gone and the saves left none
    assert resumed.step == 6 and not resumed.stopped
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log_res = pd.read_csv(tmp_path / "train_log.csv")
    assert log_res["step"].tolist() == [1, 2, 3, 4, 5, 6]  # redone steps replace the lost ones
    np.testing.assert_array_equal(log_res["loss"].to_numpy(), log_full["loss"].to_numpy())


def test_finetune_from_weights_and_errors(uninterrupted, tiny_data, tmp_path):
    _, full_out = uninterrupted
    # fine-tune stage: weights only, new optimiser/schedule; with lr ~ 0 the weights stay the init weights
    ft = fit(
        _cfg(
            tiny_data,
            tmp_path / "ft",
            init_from=str(full_out / "checkpoint.pt"),
            lr=1e-12,
            max_steps=1,
            weight_decay=0.0,
            warmup_steps=0,
        )
    )
    init = load_checkpoint_weights(full_out / "model.pt")
    for k, v in ft.model.state_dict().items():
        if "running" in k or "num_batches" in k:
            continue
        torch.testing.assert_close(v, init[k], rtol=0, atol=1e-6, msg=k)
    with pytest.raises(ValueError, match=r"init_from=.*weights do not fit the model \(resnet18"):
        fit(_cfg(tiny_data, tmp_path / "bad", backbone="resnet18", init_from=str(full_out / "model.pt")))
    with pytest.raises(ValueError, match=r"bank .* has canvas 64 but canvas=96"):
        fit(_cfg(tiny_data, tmp_path / "bad2", canvas=96))


@pytest.mark.parametrize(
    ("kw", "error", "msg"),
    [
        ({"dataset": "chexpert"}, ValueError, "dataset must be one of"),
        ({"optimizer": "lamb"}, ValueError, "optimizer must be one of"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
        ({"bank": None}, ValueError, "dadam needs bank"),
        ({"resume": True, "init_from": "x.pt"}, ValueError, "not both"),
        ({"amp": "fp8"}, ValueError, "amp must be one of"),
        (
            {"use_binary_enc": True, "dataset_id": 2},
            ValueError,
            r"dataset_id must be in \[0, num_datasets=2\) .* got 2",
        ),
        ({"dadam": DadamConfig(p=2.0)}, ValueError, r"p must be in \[0, 1\], got 2.0"),
        ({"dadam": DadamConfig(tail_quantile=-0.1)}, ValueError, r"tail_quantile must be in \[0, 1\], got -0.1"),
        ({"dadam": True}, TypeError, r"dadam must be a DadamConfig or None, got True"),
    ],
)
def test_config_errors(tmp_path, kw, error, msg):
    """The config is checked before any file is read: no data needed."""
    with pytest.raises(error, match=msg):
        fit(_cfg(tmp_path / "missing", tmp_path / "out", **kw))
    assert not (tmp_path / "out").exists()


def test_config_from_dict_reads_the_flat_dadam_layout():
    flat = {"dataset": "mura", "root": "r", "dadam": True, "dadam_p": 0.25, "dadam_max_patches": 2, "stages": [3, 4]}
    cfg = TrainConfig.from_dict(flat)
    # the flat layout is that of release 0.1.0: options it did not have keep that release's behaviour
    assert cfg.dadam == DadamConfig(p=0.25, max_patches=2, companions="correlation") and cfg.stages == (3, 4)
    assert TrainConfig.from_dict({"dadam": False, "dadam_p": 0.5}).dadam is None
    assert TrainConfig.from_dict(TrainConfig(dadam=DadamConfig(tail=("Pneumothorax",))).to_dict()).dadam.tail == (
        "Pneumothorax",
    )
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['colour'\]"):
        TrainConfig.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match=r"unknown DADAM options \['q'\]"):
        TrainConfig.from_dict({"dadam": {"q": 1}})


def test_too_few_images_for_a_batch(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"training split has 32 images, fewer than batch_size=64"):
        fit(_cfg(tiny_data, tmp_path, batch_size=64))


def test_cli_and_evaluate(uninterrupted, tiny_data, tmp_path):
    # main() maps flags onto TrainConfig (bools with --no-, tuples with nargs, --dadam-* onto a DadamConfig)
    flags = (
        "--dataset labels-csv --no-val-split --backbone resnet10t --canvas 64 --batch-size 16 --max-steps 1 "
        "--num-workers 0 --device cpu --no-progress --no-tensorboard --stages 3 4 --no-channels-last --optimizer sgd "
        "--dadam --dadam-p 0.9 --dadam-tail Pneumothorax Atelectasis --dadam-soft-label --dadam-candidates 4"
    ).split()
    files = [
        "--train-csv",
        tiny_data / "train.csv",
        "--out-dir",
        tmp_path / "cli",
        "--bank",
        tiny_data / "bank.safetensors",
    ]
    assert main([*flags, *map(str, files)]) == 0
    cfg = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert cfg["stages"] == [3, 4] and cfg["channels_last"] is False and cfg["optimizer"] == "sgd"
    assert cfg["dadam"] == {
        **DadamConfig().to_dict(),
        "p": 0.9,
        "tail": ["Pneumothorax", "Atelectasis"],
        "soft_label": True,
        "candidates": 4,
    }
    assert cfg["val_split"] is False and not (tmp_path / "cli" / "eval_log.csv").exists()

    # fpsm.evaluate: predictions CSV == the model's own probabilities on the same images
    from dadam.data import LabelDataset, to_model_input
    from fpsm.evaluate import main as eval_main

    res, out = uninterrupted
    files = ["--checkpoint", out / "checkpoint.pt", "--csv", tiny_data / "val.csv", "--out", tmp_path / "ev"]
    flags = "--dataset labels-csv --num-workers 0 --device cpu --no-progress".split()
    assert eval_main([*map(str, files), *flags]) == 0
    pred = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    table = pd.read_csv(tiny_data / "val.csv")
    assert pred["image_id"].tolist() == table["image_id"].tolist()
    ds = LabelDataset(table, tiny_data, canvas=CANVAS)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    model = res.model.eval()
    with torch.no_grad():
        ref = model(to_model_input(x)).probs
    np.testing.assert_allclose(pred[list(CXR_LT_CLASSES)].to_numpy(), ref.numpy(), atol=1e-5)
    rep = pd.read_csv(tmp_path / "ev" / "report.csv", index_col=0)
    assert rep.loc["mean", "n"] == table[list(CXR_LT_CLASSES)].notna().to_numpy().sum()


@pytest.mark.parametrize(
    ("flags", "msg"),
    [
        (["--dadam-p", "0.9"], "--dadam-p given without --dadam: add --dadam"),
        (["--dadam-tail", "Pneumothorax", "--dadam-soft-label"], "--dadam-tail, --dadam-soft-label given without"),
        (["--dadam", "--dadam-alpha", "0"], r"DADAM option alpha must be in \(0, 1\], got 0.0"),
        (["--dadam"], "dadam needs bank"),
        (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
    ],
)
def test_cli_errors(flags, msg, capsys):
    """Bad flags end the command with usage status 2 and the reason, before any file is read."""
    with pytest.raises(SystemExit) as exc:
        main(["--dataset", "labels-csv", "--train-csv", "missing.csv", *flags])
    assert exc.value.code == 2
    assert re.search(msg, capsys.readouterr().err)


def test_cli_help_lists_flags_by_group():
    help_text = subprocess.run(
        [sys.executable, "-m", "fpsm.train", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--resume" in help_text and "--init-from" in help_text and "--dadam-alpha" in help_text
    assert "--dadam-tail" in help_text and "--dadam-soft-label" in help_text and "--batch-size" in help_text
    headings = [line[:-1] for line in help_text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings == ["options", "data", "model", "optimisation", "DADAM", "run"]
    assert "--batch-size BATCH_SIZE\n                        (default: 32)" in help_text
