"""fpsm.train / fpsm.evaluate on CPU with a tiny backbone: resume == uninterrupted (extend-mode DADAM and the kornia
base augmentation on), the best checkpoint, dataset codes, the patient split, fine-tuning, logs, CLI, errors."""

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
from tests.helpers import train_config, write_nih_training_set

CANVAS = 64
EXTEND = DadamConfig(mode="extend", extra_paste=4, extra_blend=4)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, shared_data):
    """The 32 real NIH images at 96 px, random multi-hot labels (NaN sprinkled in; rows 0-7 "No Finding" only, the
    normal images an extend-mode epoch pastes onto), a patch bank from NIH boxes."""
    d = tmp_path_factory.mktemp("tiny")
    write_nih_training_set(d, shared_data, side=96, canvas=CANVAS, seed=0, val_rows=10, unknown_fraction=0.05)
    _make_normals(d / "train.csv", 8)
    return d


def _make_normals(path, n):
    table = pd.read_csv(path)
    table.loc[: n - 1, list(CXR_LT_CLASSES)] = 0.0
    table.loc[: n - 1, "No Finding"] = 1.0
    table.to_csv(path, index=False)


def _cfg(d, out, **kw):
    """8 steps of extend-mode epochs (32 originals + 4 pasted + 4 blended: 5 steps per epoch), a checkpoint every 2
    steps, dropout (it draws from the global RNG: resume must restore it exactly); ``kw``: other fields."""
    fields = dict(canvas=CANVAS, batch_size=8, epochs=2, max_steps=8, ckpt_every=2, warmup_steps=2, drop_rate=0.5)
    return train_config(d, out, **{**fields, "dadam": EXTEND, "bank": str(d / "bank.safetensors"), **kw})


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return fit(_cfg(tiny_data, out, tensorboard=True)), out


@pytest.mark.slow
def test_full_run_outputs(uninterrupted, tiny_data):
    res, out = uninterrupted
    assert res.step == 8 and not res.stopped and res.epoch == 1
    log = pd.read_csv(out / "train_log.csv")
    assert log["step"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert log["epoch"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]  # (32 + 4 + 4) / 8 = 5 steps per extend-mode epoch
    # warm-up 2 steps from 1% of lr, then cosine over the remaining 6 steps down to 0
    lr = 1e-3
    expected = [lr * (0.01 + 0.99 * 1 / 2), lr] + [lr * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(1, 7)]
    np.testing.assert_allclose(log["lr"].to_numpy(), expected, rtol=1e-5, atol=1e-12)
    ev = pd.read_csv(out / "eval_log.csv")
    assert ev["tag"].tolist() == ["epoch000", "step0000008"]  # end of epoch 0, then the final step
    rep = pd.read_csv(out / "eval" / "epoch000_report.csv", index_col=0)
    assert list(rep.index) == [*CXR_LT_CLASSES, "mean"] and {"AP", "AUC", "F1"} <= set(rep.columns)
    assert (out / "eval" / "epoch000_report.md").read_text().startswith("| class |")
    pred = pd.read_csv(out / "eval" / "step0000008_pred.csv")
    assert list(pred.columns) == ["image_id", *CXR_LT_CLASSES] and len(pred) == 10
    assert pred[list(CXR_LT_CLASSES)].to_numpy().min() >= 0 and pred[list(CXR_LT_CLASSES)].to_numpy().max() <= 1
    assert list((out / "tb").glob("events.out.tfevents.*"))
    final = json.loads((out / "final.json").read_text())
    assert final["step"] == 8 and len(final["rank_weight_hashes"]) == 1
    w = load_checkpoint_weights(out / "model.pt")
    for k, v in res.model.state_dict().items():
        assert torch.equal(w[k], v), k
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 8 and ckpt["config"]["backbone"] == "resnet10t"
    # config.json and the checkpoint hold the DADAM options as plain values; both read back to the run's config
    cfg = _cfg(tiny_data, out, tensorboard=True)
    stored = json.loads((out / "config.json").read_text())
    assert stored["dadam"] == EXTEND.to_dict() and stored["stages"] == [2, 3, 4] and stored["aug"] == "light"
    assert TrainConfig.from_dict(stored) == cfg and TrainConfig.from_dict(ckpt["config"]) == cfg
    # config.json records the backbone's timm data config: resnet10t's weights want the ImageNet statistics
    assert stored["data_config"]["mean"] == [0.485, 0.456, 0.406] and stored["data_config"]["std"] == [
        0.229,
        0.224,
        0.225,
    ]


@pytest.mark.slow
def test_best_checkpoint_is_the_best_validation_map(uninterrupted, tiny_data, tmp_path):
    """model_best.pt holds the weights of the evaluation with the highest mean AP, with its epoch and step; model.pt
    stays the last weights; predicting with model_best.pt reproduces the recorded AP."""
    res, out = uninterrupted
    ev = pd.read_csv(out / "eval_log.csv")
    top = ev.loc[ev["AP"].idxmax()]
    best = torch.load(out / "model_best.pt", weights_only=True)
    assert best["best"]["metric"] == "AP" and best["best"]["value"] == pytest.approx(float(top["AP"]), abs=1e-12)
    assert (best["best"]["epoch"], best["best"]["step"], best["best"]["tag"]) == (top["epoch"], top["step"], top["tag"])
    assert json.loads((out / "final.json").read_text())["best"] == best["best"] == res.best
    assert TrainConfig.from_dict(best["config"]) == _cfg(tiny_data, out, tensorboard=True)
    from fpsm.evaluate import EvalConfig, predict

    # a run folder stands for its model_best.pt
    ev_best = predict(
        EvalConfig(
            str(out),
            dataset="labels-csv",
            csv=str(tiny_data / "val.csv"),
            out=str(tmp_path),
            num_workers=0,
            device="cpu",
            progress=False,
        )
    )
    assert ev_best.report.loc["mean", "AP"] == pytest.approx(float(top["AP"]), abs=1e-6)
    if top["step"] != 8:  # the last weights are not the best ones here
        last = load_checkpoint_weights(out / "model.pt")
        assert any(not torch.equal(last[k], best["model"][k]) for k in last)


def test_choose_best():
    from fpsm.training import choose_best

    kw = dict(metric="AP", tag="t")
    first = choose_best(None, {"AP": 0.3}, epoch=0, step=5, **kw)
    assert first == {"metric": "AP", "value": 0.3, "epoch": 0, "step": 5, "tag": "t"}
    assert choose_best(first, {"AP": 0.3}, epoch=1, step=10, **kw) is None  # a tie keeps the earlier weights
    assert choose_best(first, {"AP": 0.2}, epoch=1, step=10, **kw) is None
    assert choose_best(first, {"AP": 0.31}, epoch=1, step=10, **kw)["step"] == 10
    assert choose_best(None, {"AP": float("nan")}, epoch=0, step=5, **kw) is None  # no class with a positive
    assert choose_best(None, {}, epoch=0, step=5, **kw) is None


@pytest.mark.slow
@pytest.mark.parametrize(("stop_after", "epoch"), [(3, 0), (7, 1)])  # 5 steps per epoch
def test_resume_gives_same_weights(uninterrupted, tiny_data, tmp_path, stop_after, epoch):
    """Kill after `stop_after` steps (checkpoints every 2 and at epoch ends), resume: same weights and losses as never
    stopping, with extend-mode DADAM (the sampler resumes mid-epoch) and the kornia base augmentation on."""
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
    assert resumed.step == 8 and not resumed.stopped
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log_res = pd.read_csv(tmp_path / "train_log.csv")
    assert log_res["step"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]  # redone steps replace the lost ones
    np.testing.assert_array_equal(log_res["loss"].to_numpy(), log_full["loss"].to_numpy())
    assert resumed.best == full.best  # the best evaluation travels in the checkpoint


@pytest.mark.slow
def test_finetune_from_weights_and_errors(uninterrupted, tiny_data, tmp_path):
    _, full_out = uninterrupted
    # fine-tune stage from the best weights: weights only, new optimiser/schedule; with lr ~ 0 they stay the init
    ft = fit(
        _cfg(
            tiny_data,
            tmp_path / "ft",
            init_from=str(full_out / "model_best.pt"),
            lr=1e-12,
            max_steps=1,
            weight_decay=0.0,
            warmup_steps=0,
        )
    )
    init = load_checkpoint_weights(full_out / "model_best.pt")
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
            {"use_binary_enc": True, "dataset_code": "constant", "dataset_id": 2},
            ValueError,
            r"dataset_id must be in \[0, num_datasets=2\) .* got 2",
        ),
        ({"dadam": DadamConfig(p=2.0)}, ValueError, r"p must be in \[0, 1\], got 2.0"),
        ({"dadam": DadamConfig(tail_quantile=-0.1)}, ValueError, r"tail_quantile must be in \[0, 1\], got -0.1"),
        ({"dadam": True}, TypeError, r"dadam must be a DadamConfig or None, got True"),
        ({"val_split": True}, ValueError, r"val_split must be one of \['patient', 'official', 'none'\], got True"),
        ({"val_split": "patient"}, ValueError, r"val_csv=.* is a validation file, but val_split='patient'"),
        ({"val_fraction": 1.0}, ValueError, r"val_fraction must be a finite number in \(0, 1\), got 1.0"),
        ({"aug": "heavy"}, ValueError, r"aug must be one of \['none', 'light'\], got 'heavy'"),
        ({"combine": "max"}, ValueError, r"combine must be one of \['mean_prob', 'sum_logit'\], got 'max'"),
        ({"dataset_code": "view"}, ValueError, r"dataset_code must be one of \['source', 'augmented', 'constant'\]"),
        (
            {"use_binary_enc": True, "dataset_code": "augmented", "num_datasets": 1},
            ValueError,
            r"dataset_code='augmented' needs num_datasets >= 2",
        ),
        ({"sources": "nih"}, TypeError, r"sources must be a sequence of source names"),
        ({"loader": "dali"}, ValueError, r"dadam.mode='extend' needs loader='torch'"),
        ({"dali_threads": 0}, ValueError, r"dali_threads must be >= 1 or None, got 0"),
        ({"dadam": DadamConfig(extra_paste=-5)}, ValueError, r"extra_paste must be a count >= 0, got -5"),
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
    assert cfg.dadam == DadamConfig(p=0.25, max_patches=2, companions="correlation", mode="replace")
    assert cfg.stages == (3, 4)
    assert TrainConfig.from_dict({"dadam": False, "dadam_p": 0.5}).dadam is None
    assert TrainConfig.from_dict(TrainConfig(dadam=DadamConfig(tail=("Pneumothorax",))).to_dict()).dadam.tail == (
        "Pneumothorax",
    )
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['colour'\]"):
        TrainConfig.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match=r"unknown DADAM options \['q'\]"):
        TrainConfig.from_dict({"dadam": {"q": 1}})


def test_configs_written_before_read_as_their_release_did():
    """val_split was a bool; base augmentation, dataset codes and DADAM's mode did not exist."""
    old = {k: v for k, v in TrainConfig(dadam=DadamConfig()).to_dict().items()}
    for name in ("aug", "dataset_code", "val_fraction", "combine", "use_concatenate", "sources", "dali_threads"):
        old.pop(name)
    old["val_split"] = True
    old["dadam"] = {k: v for k, v in old["dadam"].items() if k not in ("mode", "extra_paste", "extra_blend")}
    cfg = TrainConfig.from_dict(old)
    assert (cfg.val_split, cfg.aug, cfg.dataset_code, cfg.dadam.mode) == ("official", "none", "constant", "replace")
    assert TrainConfig.from_dict({**old, "val_split": False}).val_split == "none"
    # config.json's data_config entry is derived, not a setting
    assert TrainConfig.from_dict({**TrainConfig().to_dict(), "data_config": {"mean": [0, 0, 0]}}) == TrainConfig()


def test_patient_split_is_by_patient_and_seeded():
    from fpsm.training import patient_split

    table = pd.DataFrame({"subject_id": np.repeat(np.arange(50), 3), "image_id": [f"i{k}" for k in range(150)]})
    train, val = patient_split(table, fraction=0.2, seed=3)
    assert set(train["subject_id"]).isdisjoint(val["subject_id"]) and len(train) + len(val) == 150
    assert val["subject_id"].nunique() == 10 and len(val) == 30  # 8:2 by patient
    again, _ = patient_split(table, fraction=0.2, seed=3)
    other, _ = patient_split(table, fraction=0.2, seed=4)
    assert train.index.equals(again.index) and not train.index.equals(other.index)
    nih = pd.DataFrame({"Patient ID": [1, 1, 2, 3]})
    assert set(patient_split(nih, seed=0)[1]["Patient ID"]) <= {1, 2, 3}
    with pytest.raises(ValueError, match=r"training table has no patient column .*\(--val-split official\)"):
        patient_split(pd.DataFrame({"image_id": ["a", "b"]}))
    with pytest.raises(ValueError, match=r"has 1 patient\(s\) in 'subject_id'"):
        patient_split(pd.DataFrame({"subject_id": [7, 7]}))


def test_dataset_codes():
    """source: one id per source dataset; augmented: 0 from the data (1 is set on the device for changed samples);
    constant: dataset_id; no encoding: 0."""
    from fpsm.training import dataset_codes

    table = pd.DataFrame({"source": ["cxr_lt", "nih", "nih", "cxr_lt"]})
    enc = dict(use_binary_enc=True)
    codes = dataset_codes(TrainConfig(**enc, sources=("cxr_lt", "nih")), table)
    assert codes.tolist() == [0, 1, 1, 0]
    assert dataset_codes(TrainConfig(**enc, dataset_code="augmented"), table) == 0
    assert dataset_codes(TrainConfig(**enc, dataset_code="constant", dataset_id=1), table) == 1
    assert dataset_codes(TrainConfig(), table) == 0  # no encoding
    assert dataset_codes(TrainConfig(**enc), table.iloc[[1, 2]]) == 0  # one source: code 0
    with pytest.raises(ValueError, match=r"several sources \['cxr_lt', 'nih'\]: .*\(--sources cxr_lt nih\)"):
        dataset_codes(TrainConfig(**enc), table)
    with pytest.raises(ValueError, match=r"source\(s\) \['nih'\] are not in sources=\['cxr_lt'\]"):
        dataset_codes(TrainConfig(**enc, sources=("cxr_lt",)), table)


class _CodeSpy(torch.nn.Module):
    """A stand-in model that records the dataset ids of each step."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(1, 26)
        self.seen = []

    def forward(self, x, dataset_ids=None):
        from fpsm.model import FPSMOutput

        self.seen.append(dataset_ids.clone())
        logits = self.head(x.mean((1, 2, 3))[:, None])
        return FPSMOutput(stage_logits=[logits], probs=logits.sigmoid(), logits=logits)


def test_augmented_code_is_one_exactly_for_dadam_changed_samples():
    """dataset_code='augmented' in training: the model sees 1 for the samples DADAM changed (the extend-mode extras),
    0 for the originals; the loader gives 0 (test time)."""
    from dadam import DiseasedAreaAugment, LabelStats
    from dadam.data import LabelBatch
    from fpsm.training import StepOptions, train_step
    from tests.helpers import make_bank, make_label_table

    labels = make_label_table(64, seed=1)
    config = DadamConfig().replace(p=1.0)
    aug = DiseasedAreaAugment(
        make_bank(canvas=32), LabelStats.from_labels(make_label_table(400)), generator=0, **config.augment_options()
    )
    from dadam.extend import extend_pools

    paste, blend = extend_pools(labels, aug.tables)  # rows a forced change always succeeds on
    rows = torch.arange(64)
    extra = torch.isin(rows, torch.cat([paste, blend])) & (rows % 2 == 0)
    normal = torch.isin(rows, paste)
    images = torch.randint(0, 256, (64, 1, 32, 32), dtype=torch.uint8)
    batch = LabelBatch(images, labels, torch.zeros(64, dtype=torch.long), extra=extra)
    spy = _CodeSpy()
    opt = torch.optim.SGD(spy.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    cfg = TrainConfig(use_binary_enc=True, dataset_code="augmented", dadam=config, bank="b", loss="soft_margin")
    options = StepOptions.from_config(cfg, device=torch.device("cpu"), aug=aug)
    assert options.extend and options.code_augmented
    train_step(spy, batch, opt, sched, options)
    ids = spy.seen[-1]
    assert ids.dtype == torch.long and torch.equal(ids, extra.long())  # 1 exactly where DADAM changed the sample
    assert int(normal[extra].sum()) > 0 and int((~normal)[extra].sum()) > 0  # pasted and blended extras


def test_too_few_images_for_a_batch(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"training split has 32 images, fewer than batch_size=64"):
        fit(_cfg(tiny_data, tmp_path, batch_size=64, dadam=None))


def test_cli_and_evaluate(uninterrupted, tiny_data, tmp_path):
    # main() maps flags onto TrainConfig (bools with --no-, tuples with nargs, --dadam-* onto a DadamConfig)
    flags = (
        "--dataset labels-csv --val-split none --backbone resnet10t --canvas 64 --batch-size 16 --max-steps 1 "
        "--num-workers 0 --device cpu --no-progress --no-tensorboard --stages 3 4 --no-channels-last --optimizer sgd "
        "--aug none --combine sum_logit --use-concatenate --use-binary-enc --dataset-code augmented "
        "--dadam --dadam-mode replace --dadam-p 0.9 --dadam-tail Pneumothorax Atelectasis --dadam-soft-label "
        "--dadam-candidates 4"
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
    assert (cfg["aug"], cfg["combine"], cfg["use_concatenate"], cfg["dataset_code"]) == (
        "none",
        "sum_logit",
        True,
        "augmented",
    )
    assert cfg["dadam"] == {
        **DadamConfig().to_dict(),
        "mode": "replace",
        "p": 0.9,
        "tail": ["Pneumothorax", "Atelectasis"],
        "soft_label": True,
        "candidates": 4,
    }
    assert cfg["val_split"] == "none" and not (tmp_path / "cli" / "eval_log.csv").exists()

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
        (["--dadam", "--dadam-p", "0.9"], "--dadam-p applies to --dadam-mode replace"),
        (["--dadam", "--dadam-extra-paste", "lots"], "expected a count .* or a fraction"),
        (["--val-split", "dev"], "invalid choice: 'dev'"),
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
    # every flag has a description and its default
    entries = re.split(r"\n  (?=--)", help_text.split("\ndata:\n", 1)[1])
    for entry in entries:
        flag = entry.split()[0]
        text = " ".join(entry.split())
        assert "(default:" in text, flag
        described = re.sub(r"^[^ ]+( [A-Z_]+| \{[^}]*\}| \[[^]]*\]| [A-Z_]+ \[[^]]*\])*", "", text)
        assert len(described.split("(default:")[0].strip()) > 5, flag
    for flag in (
        "--dadam-mode",
        "--dadam-extra-paste",
        "--dadam-extra-blend",
        "--use-concatenate",
        "--dataset-code",
        "--combine",
        "--val-split",
        "--aug",
        "--dali-threads",
    ):
        assert f"  {flag} " in help_text or f"  {flag}," in help_text, flag
