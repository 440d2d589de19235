"""Bad inputs, as a new user hands them over: each is refused with an error that names the file, argument or value.

``CASES`` is one table: a case makes its bad input under a fresh folder, calls the public function or command line
that receives it, and names the error type and a pattern its message must match. Beside the table: a crafted
pickle checkpoint on every load path (its code never runs), a ``kill -9`` in the middle of a checkpoint save (the
previous checkpoint still loads and the run resumes), a resume with changed settings (refused, nothing written),
``--bad-images skip`` end to end, ``--overwrite`` and file permissions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dadam import DiseasedAreaAugment, LabelStats
from dadam.bank import PatchBank
from dadam.config import DadamConfig
from dadam.data import InputNormalizer, LabelDataset, decode_image, make_loader
from dadam.files import tensor_digest
from dadam.io import image_size, read_image
from dadam.labels import CXR_LT_CLASSES
from fpsm.ensemble import main as ensemble_main
from fpsm.evaluate import EvalConfig, load_model, predict
from fpsm.evaluate import main as evaluate_main
from fpsm.loss import pyramid_loss
from fpsm.model import create_fpsm
from fpsm.train import TrainConfig, fit
from fpsm.train import main as train_main
from fpsm.training import check_checkpoint, load_checkpoint_weights, read_checkpoint, restore_checkpoint
from tests.helpers import make_bank, make_label_table, train_config

ROOT = Path(__file__).resolve().parents[1]
SIDE = 32  # image side and training canvas of the tiny runs


# ------------------------------------------------------------------------------------------------ tiny inputs


def _write_images(folder: Path, n: int, *, seed: int = 0) -> list[str]:
    """``n`` random gray PNGs of SIDE px in ``folder/images``; their paths relative to ``folder``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)).save(folder / "images" / f"im{i:02d}.png")
        names.append(f"images/im{i:02d}.png")
    return names


def _label_table(paths: list[str], *, seed: int = 0) -> pd.DataFrame:
    y = (np.random.default_rng(seed).random((len(paths), len(CXR_LT_CLASSES))) < 0.3).astype(float)
    df = pd.DataFrame(y, columns=list(CXR_LT_CLASSES))
    df.insert(0, "path", paths)
    df.insert(0, "image_id", [Path(p).name for p in paths])
    return df


def _short_png(path: Path, *, cut_stream: bool = True) -> Path:
    """A PNG whose chunks are all well formed (CRCs right) but whose image data is short: a compressed stream cut in
    half (``cut_stream``), or a whole stream of half the rows. torchvision's libpng decoder ends the process on
    either with a segmentation fault; PIL raises on the first and decodes the second with its missing rows black."""
    rows = np.random.default_rng(0).integers(1, 256, (SIDE, SIDE), dtype=np.uint8)  # no 0: black marks a lost row
    if cut_stream:
        data = zlib.compress(b"".join(b"\x00" + r.tobytes() for r in rows))
        data = data[: len(data) // 2]
    else:
        data = zlib.compress(b"".join(b"\x00" + r.tobytes() for r in rows[: SIDE // 2]))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 0, 0, 0, 0)  # SIDE x SIDE, 8-bit gray
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def _encoded(fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (SIDE, SIDE), dtype=np.uint8)).save(buf, fmt, **save)
    return buf.getvalue()


def _multi_frame(path: Path) -> Path:
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 200)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


class _Payload:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _evil_checkpoint(path: Path, marker: Path, *, zipped: bool = True) -> Path:
    """A checkpoint-looking file whose unpickling would run code (torch.save's zip format, or a bare pickle)."""
    if zipped:
        torch.save({"model": {"w": torch.zeros(1)}, "step": 1, "config": _Payload(marker)}, path)
    else:  # a plain pickle (torch.load reads the legacy format too); no tensor, whose pickle names torch's storage
        path.write_bytes(pickle.dumps({"config": _Payload(marker), "step": 1}, protocol=2))
    return path


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    """Two steps of one epoch, a checkpoint after each (``kw``: other fields)."""
    fields = dict(canvas=SIDE, batch_size=4, epochs=1, max_steps=2, ckpt_every=1)
    return train_config(data, out, **{**fields, **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """16 random PNGs, train.csv (all) and val.csv (the first 6)."""
    folder = tmp_path_factory.mktemp("data")
    table = _label_table(_write_images(folder, 16))
    table.to_csv(folder / "train.csv", index=False)
    table.iloc[:6].to_csv(folder / "val.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory) -> Path:
    """A finished two-step run (checkpoint.pt, model.pt, config.json, logs): copy it before changing it."""
    out = tmp_path_factory.mktemp("run") / "run"
    fit(_cfg(data, out))
    return out


@dataclasses.dataclass
class Ctx:
    """What a case gets: a fresh folder, the tiny data set, a finished run (read-only) and monkeypatch."""

    tmp: Path
    data: Path
    run: Path
    monkeypatch: pytest.MonkeyPatch

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def run_copy(self, name: str = "run") -> Path:
        return Path(shutil.copytree(self.run, self.tmp / name))


class CommandFailed(Exception):
    """A command line ended with a non-zero status; the message is its exit code and standard error."""


def _command(main: Callable, *argv) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    if code:
        raise CommandFailed(f"exit {code}: {err.getvalue()}")


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"dataset": "labels-csv", "train_csv": "t.csv", **kw}).validate()


def _two_sources(c: Ctx) -> Path:
    """The training table with a ``source`` column naming two datasets."""
    table = pd.read_csv(c.data / "train.csv")
    table["source"] = ["a", "b"] * (len(table) // 2) + ["a"] * (len(table) % 2)
    return c.file("two_sources.csv", table.to_csv(index=False))


# ------------------------------------------------------------------------------------------------ checkpoints


def _truncated_checkpoint(c: Ctx) -> Path:
    data = (c.run / "checkpoint.pt").read_bytes()
    return c.file("truncated.pt", data[: len(data) // 2])


def _checkpoint_without(c: Ctx, key: str) -> dict:
    ckpt = read_checkpoint(c.run / "checkpoint.pt")
    del ckpt[key]
    return ckpt


def _restore(c: Ctx, checkpoint: dict, *, source: str, world_size: int = 1) -> None:
    from fpsm.train import build_model
    from fpsm.training import build_optimizer, build_scheduler

    cfg = _cfg(c.data, c.tmp / "x")
    model = build_model(cfg, len(CXR_LT_CLASSES))
    opt = build_optimizer(cfg, model)
    restore_checkpoint(
        checkpoint,
        model=model,
        optimizer=opt,
        scheduler=build_scheduler(cfg, opt, 2),
        generator=None,
        world_size=world_size,
        source=source,
    )


def _model_pt_without_config(c: Ctx) -> Path:
    folder = c.tmp / "lone"
    folder.mkdir()
    shutil.copy(c.run / "model.pt", folder / "model.pt")
    return folder / "model.pt"


def _model_pt_with_config(c: Ctx, config: str) -> Path:
    path = _model_pt_without_config(c)
    (path.parent / "config.json").write_text(config)
    return path


def _resume(c: Ctx, **kw) -> None:
    run = c.run_copy()
    fit(_cfg(c.data, run, resume=True, **kw))


def _resume_from(c: Ctx, content: Path | bytes) -> None:
    run = c.run_copy()
    target = run / "checkpoint.pt"
    target.write_bytes(content.read_bytes() if isinstance(content, Path) else content)
    fit(_cfg(c.data, run, resume=True))


# ------------------------------------------------------------------------------------------------ patch banks


def _signed_bank(c: Ctx, edit: Callable[[dict, dict], None]) -> Path:
    """A bank file changed by ``edit(tensors, metadata)`` and signed again, as a careful tamperer would."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    good = c.tmp / "good.safetensors"
    make_bank({"Mass": 2, "Nodule": 1}, canvas=32, max_size=8).save(good)
    with safe_open(str(good), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors, meta)
    meta["sha256"] = tensor_digest(tensors, extra="".join(f"{k}={meta[k]};" for k in sorted(meta) if k != "sha256"))
    path = c.tmp / "tampered.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


def _set(mapping: dict, key: str, value) -> None:
    mapping[key] = value


def _meta(key: str, value: str) -> Callable[[dict, dict], None]:
    """The edit of :func:`_signed_bank` that sets the metadata entry ``key`` to ``value``."""
    return lambda tensors, meta: _set(meta, key, value)


def _tensor(name: str, dtype: torch.dtype) -> Callable[[dict, dict], None]:
    """The edit of :func:`_signed_bank` that stores tensor ``name`` as ``dtype``."""
    return lambda tensors, meta: _set(tensors, name, tensors[name].to(dtype))


def _tampered_bank(name: str, edit: Callable[[dict, dict], None], message: str) -> tuple:
    """The CASES row ``bank-<name>``: loading a bank file changed by ``edit`` and signed again (:func:`_signed_bank`)
    raises a ValueError that names the file, then says ``message`` (a regular expression)."""
    return (
        f"bank-{name}",
        lambda c: PatchBank.load(_signed_bank(c, edit)),
        ValueError,
        rf"tampered\.safetensors: {message}",
    )


def _nan_norm_box(tensors: dict, meta: dict) -> None:
    tensors["norm_boxes"][0, 0] = float("nan")


def _boxes(image_ids: list[str]) -> pd.DataFrame:
    n = len(image_ids)
    return pd.DataFrame(
        {"image_id": image_ids, "label": ["Mass"] * n, "x0": [2.0] * n, "y0": [2.0] * n, "x1": [9.0] * n}
        | {"y1": [9.0] * n, "width": [SIDE] * n, "height": [SIDE] * n, "source": ["nih"] * n}
    )


# ------------------------------------------------------------------------------------------------ model


def _offline(c: Ctx) -> None:
    from huggingface_hub import constants

    c.monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    c.monkeypatch.setattr(constants, "HF_HUB_CACHE", str(c.tmp / "hf"))  # nothing cached
    c.monkeypatch.setenv("TORCH_HOME", str(c.tmp / "torch"))


def _unreachable_hub(c: Ctx) -> None:
    from huggingface_hub import constants

    _offline(c)
    c.monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    c.monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        c.monkeypatch.delenv(name, raising=False)
    c.monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens


def _pretrained(c: Ctx, setup: Callable[[Ctx], None]) -> None:
    setup(c)
    create_fpsm("resnet10t", pretrained=True)


# ------------------------------------------------------------------------------------------------ images


def _dataset(c: Ctx, bad: Path | str, **kw) -> LabelDataset:
    paths = [str(c.data / "images" / "im00.png"), str(bad)]
    return LabelDataset(_label_table(paths), c.tmp, canvas=SIDE, **kw)


def _dali_loader(c: Ctx, **kw):
    dali = pytest.importorskip("dadam.dali", exc_type=ImportError)
    table = _label_table(["images/im00.png"])
    return dali.DaliLoader(table, c.data, canvas=SIDE, batch_size=1, device="cpu", **kw)


def _bomb(c: Ctx) -> Path:
    c.monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # SIDE x SIDE > 2 x 100: PIL refuses to decode
    return c.file("bomb.png", _encoded("PNG"))


# ------------------------------------------------------------------------------------------------ the table

TRAIN_FLAGS = "--dataset labels-csv --backbone resnet10t --canvas 32 --device cpu --num-workers 0 --no-progress"

CASES = [
    # ---- checkpoint files, on every function that reads one
    ("ckpt-empty", lambda c: read_checkpoint(c.file("empty.pt", b"")), ValueError, r"empty\.pt is empty \(0 bytes\)"),
    (
        "ckpt-text",
        lambda c: read_checkpoint(c.file("notes.pt", "step: 12\nlr: 0.1\n")),
        ValueError,
        r"notes\.pt is not a readable checkpoint",
    ),
    ("ckpt-truncated", lambda c: read_checkpoint(_truncated_checkpoint(c)), ValueError, r"truncated\.pt is not a"),
    (
        "ckpt-random-bytes",
        lambda c: read_checkpoint(c.file("noise.pt", np.random.default_rng(0).bytes(600))),
        ValueError,
        r"noise\.pt is not a",
    ),
    ("ckpt-missing", lambda c: read_checkpoint(c.tmp / "gone.pt"), FileNotFoundError, r"gone\.pt not found"),
    (
        "ckpt-pickle-code",
        lambda c: read_checkpoint(_evil_checkpoint(c.tmp / "evil.pt", c.tmp / "marker")),
        ValueError,
        r"evil\.pt was not loaded: it holds Python objects \(builtins\.exec\)",
    ),
    (
        "ckpt-plain-pickle-code",
        lambda c: read_checkpoint(_evil_checkpoint(c.tmp / "evil.pkl", c.tmp / "marker", zipped=False)),
        ValueError,
        r"evil\.pkl is not a readable checkpoint: not a torch\.save archive.*was not loaded",
    ),
    (
        "ckpt-numpy-object",
        lambda c: read_checkpoint(_torch_save(c.tmp / "np.pt", {"rng": np.zeros(3)})),
        ValueError,
        r"np\.pt was not loaded: it holds Python objects \(numpy\.",
    ),
    (
        "ckpt-weights-from-text",
        lambda c: load_checkpoint_weights(c.file("w.pt", "not weights")),
        ValueError,
        r"w\.pt is not a readable checkpoint",
    ),
    (
        "ckpt-bare-state-dict",
        lambda c: check_checkpoint(read_checkpoint(c.run / "model.pt"), source=c.run / "model.pt"),
        ValueError,
        r"model\.pt is a bare state dict of model weights .*init_from",
    ),
    (
        "ckpt-without-rng",
        lambda c: _restore(c, _checkpoint_without(c, "rng"), source="old.pt"),
        ValueError,
        r"old\.pt is not a training checkpoint: it lacks \['rng'\]",
    ),
    (
        "ckpt-negative-step",
        lambda c: check_checkpoint({**read_checkpoint(c.run / "checkpoint.pt"), "step": -1}, source="neg.pt"),
        ValueError,
        r"neg\.pt: step must be an int >= 0, got -1",
    ),
    (
        "ckpt-other-world-size",
        lambda c: _restore(c, read_checkpoint(c.run / "checkpoint.pt"), source="one.pt", world_size=2),
        ValueError,
        r"one\.pt was written by 1 rank\(s\), this run has 2",
    ),
    (
        "load-model-text",
        lambda c: load_model(c.file("model.pt", "hello")),
        ValueError,
        r"model\.pt is not a readable checkpoint",
    ),
    (
        "load-model-no-config",
        lambda c: load_model(_model_pt_without_config(c)),
        ValueError,
        r"lone/model\.pt holds no config and there is no config\.json",
    ),
    (
        "load-model-broken-config",
        lambda c: load_model(_model_pt_with_config(c, '{"backbone": ')),
        ValueError,
        r"lone/config\.json: not a JSON config",
    ),
    (
        "load-model-unknown-config",
        lambda c: load_model(_model_pt_with_config(c, '{"colour": "red"}')),
        ValueError,
        r"lone/config\.json: not a training config .*colour",
    ),
    (
        "load-model-other-backbone",
        lambda c: load_model(_model_pt_with_config(c, '{"backbone": "resnet18"}')),
        ValueError,
        r"lone/model\.pt: weights do not fit the model \(resnet18",
    ),
    (
        "init-from-text",
        lambda c: fit(_cfg(c.data, c.tmp / "ft", init_from=str(c.file("init.pt", "weights")))),
        ValueError,
        r"init\.pt is not a readable checkpoint",
    ),
    (
        "resume-from-text",
        lambda c: _resume_from(c, b"checkpoint"),
        ValueError,
        r"run/checkpoint\.pt is not a readable checkpoint",
    ),
    (
        "resume-from-model-pt",
        lambda c: _resume_from(c, c.run / "model.pt"),
        ValueError,
        r"run/checkpoint\.pt is a bare state dict of model weights \(like model\.pt\)",
    ),
    # ---- settings of a resumed run
    ("resume-changed-lr", lambda c: _resume(c, lr=2e-3), ValueError, r"resume refused: .*lr: 0\.001 -> 0\.002"),
    ("resume-changed-max-steps", lambda c: _resume(c, max_steps=5), ValueError, r"max_steps: 2 -> 5"),
    ("resume-changed-batch", lambda c: _resume(c, batch_size=8), ValueError, r"batch_size: 4 -> 8"),
    (
        "resume-changed-backbone",
        lambda c: _resume(c, backbone="resnet18"),
        ValueError,
        r"backbone: 'resnet10t' -> 'resnet18'.*--allow-config-change",
    ),
    (
        "resume-changed-schedule",
        lambda c: _resume(c, warmup_steps=1, min_lr=1e-5),
        ValueError,
        r"warmup_steps: 0 -> 1; min_lr: 0\.0 -> 1e-05",
    ),
    # ---- run folders
    (
        "run-folder-taken",
        lambda c: fit(_cfg(c.data, c.run_copy())),
        FileExistsError,
        r"run already holds a run \(checkpoint\.pt, model\.pt, model_best\.pt, config\.json.*--overwrite",
    ),
    (
        "run-folder-taken-cli",
        lambda c: _command(
            train_main, *TRAIN_FLAGS.split(), "--train-csv", c.data / "train.csv", "--out-dir", c.run_copy()
        ),
        CommandFailed,
        r"exit 2: .*run already holds a run .*--resume.*--overwrite",
    ),
    # ---- training settings: every numeric field, its range and finiteness
    (
        "cfg-grad-clip-negative",
        lambda c: _config(grad_clip=-1),
        ValueError,
        r"grad_clip must be a finite number in \(0, inf\) or None, got -1",
    ),
    ("cfg-grad-clip-zero", lambda c: _config(grad_clip=0.0), ValueError, r"grad_clip .* got 0\.0"),
    ("cfg-grad-clip-inf", lambda c: _config(grad_clip=float("inf")), ValueError, r"grad_clip .* got inf"),
    (
        "cfg-lr-inf",
        lambda c: _config(lr=float("inf")),
        ValueError,
        r"lr must be a finite number in \(0, inf\), got inf",
    ),
    ("cfg-lr-nan", lambda c: _config(lr=float("nan")), ValueError, r"lr must be .* got nan"),
    ("cfg-lr-zero", lambda c: _config(lr=0.0), ValueError, r"lr must be .* got 0\.0"),
    ("cfg-lr-text", lambda c: _config(lr="0.1"), TypeError, r"lr must be a number, got '0\.1'"),
    (
        "cfg-weight-decay",
        lambda c: _config(weight_decay=-0.1),
        ValueError,
        r"weight_decay must be .*\[0, inf\), got -0\.1",
    ),
    (
        "cfg-momentum",
        lambda c: _config(momentum=1.0),
        ValueError,
        r"momentum must be a finite number in \[0, 1\), got 1\.0",
    ),
    (
        "cfg-warmup-factor",
        lambda c: _config(warmup_factor=0.0),
        ValueError,
        r"warmup_factor must be .*\(0, 1\], got 0\.0",
    ),
    ("cfg-min-lr", lambda c: _config(min_lr=-1e-6), ValueError, r"min_lr must be .* got -1e-06"),
    ("cfg-min-lr-above-lr", lambda c: _config(min_lr=1.0), ValueError, r"min_lr must be <= lr, got min_lr=1\.0"),
    ("cfg-drop-rate", lambda c: _config(drop_rate=1.0), ValueError, r"drop_rate must be .*\[0, 1\), got 1\.0"),
    ("cfg-threshold", lambda c: _config(threshold=1.5), ValueError, r"threshold must be .*\[0, 1\], got 1\.5"),
    ("cfg-canvas", lambda c: _config(canvas=0), ValueError, r"canvas must be >= 1, got 0"),
    ("cfg-num-workers", lambda c: _config(num_workers=-1), ValueError, r"num_workers must be >= 0, got -1"),
    ("cfg-batch-bool", lambda c: _config(batch_size=True), TypeError, r"batch_size must be an int, got True"),
    ("cfg-batch-float", lambda c: _config(batch_size=8.0), TypeError, r"batch_size must be an int, got 8\.0"),
    ("cfg-epochs", lambda c: _config(epochs=0), ValueError, r"epochs must be >= 1, got 0"),
    ("cfg-max-steps", lambda c: _config(max_steps=0), ValueError, r"max_steps must be >= 1 or None, got 0"),
    (
        "cfg-eval-batch",
        lambda c: _config(eval_batch_size=0),
        ValueError,
        r"eval_batch_size must be >= 1 or None, got 0",
    ),
    ("cfg-warmup-steps", lambda c: _config(warmup_steps=-1), ValueError, r"warmup_steps must be >= 0, got -1"),
    ("cfg-seed-negative", lambda c: _config(seed=-1), ValueError, r"seed must be in \[0, 4294967295\], got -1"),
    ("cfg-seed-huge", lambda c: _config(seed=2**64), ValueError, r"seed must be in .* got 18446744073709551616"),
    ("cfg-ckpt-every", lambda c: _config(ckpt_every=0), ValueError, r"ckpt_every must be >= 1, got 0"),
    ("cfg-log-every", lambda c: _config(log_every=0), ValueError, r"log_every must be >= 1, got 0"),
    ("cfg-stop-after", lambda c: _config(stop_after=0), ValueError, r"stop_after must be >= 1 or None, got 0"),
    ("cfg-num-datasets", lambda c: _config(num_datasets=0), ValueError, r"num_datasets must be >= 1, got 0"),
    ("cfg-stages-int", lambda c: _config(stages=3), TypeError, r"stages must be a non-empty sequence .* got 3"),
    (
        "cfg-stages-range",
        lambda c: _config(stages=(2, 5)),
        ValueError,
        r"stages must be stage numbers in 1\.\.4 .* got \(2, 5\)",
    ),
    (
        "cfg-bad-images",
        lambda c: _config(bad_images="ignore"),
        ValueError,
        r"bad_images must be one of \['error', 'skip'\], got 'ignore'",
    ),
    (
        "cfg-dali-skip",
        lambda c: _config(loader="dali", bad_images="skip"),
        ValueError,
        r"bad_images='skip' needs loader='torch'",
    ),
    (
        "cfg-resume-overwrite",
        lambda c: _config(resume=True, overwrite=True),
        ValueError,
        r"resume .* or overwrite .*not both",
    ),
    # ---- the options of the paper's recipe: validation split, base augmentation, heads, dataset codes, DADAM epoch
    (
        "cfg-val-split-bool",
        lambda c: _config(val_split=True),
        ValueError,
        r"val_split must be one of \['patient', 'official', 'none'\], got True",
    ),
    (
        "cfg-val-split-patient-with-file",
        lambda c: _config(val_csv="v.csv"),
        ValueError,
        r"val_csv='v\.csv' is a validation file, but val_split='patient' .*--val-split official",
    ),
    ("cfg-val-fraction", lambda c: _config(val_fraction=0.0), ValueError, r"val_fraction must be .*\(0, 1\), got 0\.0"),
    ("cfg-aug", lambda c: _config(aug="strong"), ValueError, r"aug must be one of \['none', 'light'\], got 'strong'"),
    ("cfg-combine", lambda c: _config(combine="max"), ValueError, r"combine must be one of .*got 'max'"),
    ("cfg-dataset-code", lambda c: _config(dataset_code="view"), ValueError, r"dataset_code must be one of .*'view'"),
    (
        "cfg-sources-text",
        lambda c: _config(sources="nih"),
        TypeError,
        r"sources must be a sequence of source names, e\.g\. \('cxr_lt', 'nih'\), got 'nih'",
    ),
    ("cfg-dali-threads", lambda c: _config(dali_threads=0), ValueError, r"dali_threads must be >= 1 or None, got 0"),
    (
        "cfg-extend-dali",
        lambda c: _config(loader="dali", dadam=DadamConfig(), bank="b.safetensors"),
        ValueError,
        r"dadam\.mode='extend' needs loader='torch'.*--dadam-mode replace",
    ),
    (
        "cfg-extra-paste-negative",
        lambda c: _config(dadam=DadamConfig(extra_paste=-3), bank="b.safetensors"),
        ValueError,
        r"extra_paste must be a count >= 0, got -3",
    ),
    (
        "cfg-extra-blend-nan",
        lambda c: _config(dadam=DadamConfig(extra_blend=float("nan")), bank="b.safetensors"),
        ValueError,
        r"extra_blend must be a fraction of the training set in \[0, 10\], got nan",
    ),
    (
        "cfg-extra-paste-text",
        lambda c: _config(dadam=DadamConfig(extra_paste="50k"), bank="b.safetensors"),
        ValueError,
        r"extra_paste must be a count \(int >= 0\) or a fraction of the training set \(float\), got '50k'",
    ),
    (
        "cfg-mode",
        lambda c: _config(dadam=DadamConfig(mode="add"), bank="b.safetensors"),
        ValueError,
        r"mode must be one of \('replace', 'extend'\), got 'add'",
    ),
    (
        "patient-split-without-patients",
        lambda c: fit(_cfg(c.data, c.tmp / "p", val_split="patient", val_csv=None)),
        ValueError,
        r"train split has no patient column \(looked for \['subject_id', 'patient_id', 'Patient ID', 'patient'\]",
    ),
    (
        "source-codes-several-sources",
        lambda c: fit(_cfg(c.data, c.tmp / "s", train_csv=str(_two_sources(c)), use_binary_enc=True)),
        ValueError,
        r"training table holds several sources \['a', 'b'\]: .*\(--sources a b\)",
    ),
    (
        "model-combine",
        lambda c: create_fpsm("resnet10t", combine="vote"),
        ValueError,
        r"combine must be one of \('mean_prob', 'sum_logit'\), got 'vote'",
    ),
    (
        "normalizer-std-zero",
        lambda c: InputNormalizer(mean=(0.0,), std=(0.0,)),
        ValueError,
        r"std values must be > 0, got \(0\.0,\)",
    ),
    # ---- the same through the command line: refused at once, status 2
    (
        "cli-grad-clip",
        lambda c: _command(train_main, *TRAIN_FLAGS.split(), "--train-csv", "t.csv", "--grad-clip", "-1"),
        CommandFailed,
        r"exit 2: .*grad_clip must be a finite number in \(0, inf\) or None, got -1\.0",
    ),
    (
        "cli-dadam-p-in-extend-mode",
        lambda c: _command(train_main, *TRAIN_FLAGS.split(), "--train-csv", "t.csv", "--dadam", "--dadam-p", "0.9"),
        CommandFailed,
        r"exit 2: .*--dadam-p applies to --dadam-mode replace",
    ),
    (
        "cli-extra-blend-text",
        lambda c: _command(train_main, *TRAIN_FLAGS.split(), "--train-csv", "t.csv", "--dadam-extra-blend", "many"),
        CommandFailed,
        r"exit 2: .*expected a count \(e\.g\. 50000\) or a fraction .*got 'many'",
    ),
    (
        "cli-val-split-choice",
        lambda c: _command(train_main, *TRAIN_FLAGS.split(), "--train-csv", "t.csv", "--val-split", "dev"),
        CommandFailed,
        r"exit 2: .*--val-split: invalid choice: 'dev'",
    ),
    (
        "cli-lr-inf",
        lambda c: _command(train_main, *TRAIN_FLAGS.split(), "--train-csv", "t.csv", "--lr", "inf"),
        CommandFailed,
        r"exit 2: .*lr must be a finite number in \(0, inf\), got inf",
    ),
    (
        "cli-eval-checkpoint-text",
        lambda c: _command(
            evaluate_main,
            "--checkpoint",
            c.file("ck.pt", "text"),
            "--dataset",
            "labels-csv",
            "--csv",
            c.data / "val.csv",
            "--device",
            "cpu",
        ),
        CommandFailed,
        r"exit 2: .*ck\.pt is not a readable checkpoint",
    ),
    (
        "cli-eval-bad-images",
        lambda c: _command(evaluate_main, "--checkpoint", "x.pt", "--bad-images", "drop"),
        CommandFailed,
        r"exit 2: .*bad_images must be one of \['error', 'skip'\], got 'drop'",
    ),
    (
        "cli-eval-batch-size",
        lambda c: _command(evaluate_main, "--checkpoint", "x.pt", "--batch-size", "0"),
        CommandFailed,
        r"exit 2: .*batch_size must be an int >= 1, got 0",
    ),
    (
        "cli-ensemble-out-exists",
        lambda c: _command(ensemble_main, c.file("a.csv", "image_id,Mass\nx,0.5\n"), "--out", c.file("b.csv", "mine")),
        CommandFailed,
        r"exit 2: .*--out .*b\.csv exists: pass --overwrite",
    ),
    (
        "cli-ensemble-out-is-input",
        lambda c: _command(ensemble_main, c.file("a.csv", "image_id,Mass\nx,0.5\n"), "--out", c.tmp / "a.csv"),
        CommandFailed,
        r"exit 2: .*--out .*a\.csv is one of the input files: pass --overwrite",
    ),
    # ---- image files
    (
        "image-short-png",
        lambda c: decode_image(_short_png(c.tmp / "short.png")),
        ValueError,
        r"cannot read image file .*short\.png: OSError: image file is truncated",
    ),
    ("image-cut-png", lambda c: decode_image(c.file("cut.png", _encoded("PNG")[:150])), ValueError, r"cut\.png"),
    ("image-cut-jpeg", lambda c: decode_image(c.file("cut.jpg", _encoded("JPEG")[:400])), ValueError, r"cut\.jpg"),
    (
        "image-text",
        lambda c: decode_image(c.file("note.png", "not an image")),
        ValueError,
        r"cannot read image file .*note\.png",
    ),
    ("image-empty", lambda c: decode_image(c.file("zero.jpg", b"")), ValueError, r"zero\.jpg"),
    ("image-missing", lambda c: decode_image(c.tmp / "nowhere.png"), FileNotFoundError, r"nowhere\.png"),
    (
        "image-gif-frames",
        lambda c: decode_image(_multi_frame(c.tmp / "anim.gif")),
        ValueError,
        r"anim\.gif: GIF file with 2 frames",
    ),
    (
        "image-tiff-pages",
        lambda c: read_image(_multi_frame(c.tmp / "pages.tif")),
        ValueError,
        r"pages\.tif: TIFF file with 2 frames",
    ),
    ("image-bomb", lambda c: decode_image(_bomb(c)), ValueError, r"bomb\.png: .*MAX_IMAGE_PIXELS"),
    ("image-size-bomb", lambda c: image_size(_bomb(c)), ValueError, r"bomb\.png: .*MAX_IMAGE_PIXELS"),
    (
        "dataset-short-png",
        lambda c: _dataset(c, _short_png(c.tmp / "short.png"))[1],
        ValueError,
        r"row 1 \(image_id 'short\.png'\): cannot decode .*short\.png.*bad_images='skip'",
    ),
    (
        "dataset-missing",
        lambda c: _dataset(c, c.tmp / "absent.png")[1],
        FileNotFoundError,
        r"row 1 \(image_id 'absent\.png'\): image file .*absent\.png not found",
    ),
    (
        "dataset-bad-images-value",
        lambda c: _dataset(c, c.tmp / "absent.png", bad_images="ignore"),
        ValueError,
        r"bad_images must be one of \['error', 'skip'\], got 'ignore'",
    ),
    (
        "dataset-loader-worker",
        lambda c: list(
            make_loader(_dataset(c, _short_png(c.tmp / "short.png")), batch_size=2, train=False, num_workers=1)
        ),
        ValueError,
        r"short\.png",
    ),
    (
        "dali-skip",
        lambda c: _dali_loader(c, bad_images="skip"),
        ValueError,
        r"bad_images='skip': the DALI loader supports 'error' only",
    ),
    # ---- patch banks
    (
        "bank-no-patch",
        lambda c: PatchBank.from_boxes(_boxes(["a.png", "b.png"]), c.tmp, canvas=SIDE, progress=False),
        ValueError,
        r"kept no patch from 2 box rows .*skipped donor .*a\.png",
    ),
    (
        "bank-empty-table",
        lambda c: PatchBank.from_boxes(_boxes([]), c.tmp, canvas=SIDE, progress=False),
        ValueError,
        r"kept no patch from 0 box rows",
    ),
    _tampered_bank(
        "canvas-text", _meta("canvas", "abc"), "patch bank metadata 'canvas' must be a positive integer, got 'abc'"
    ),
    _tampered_bank("canvas-zero", _meta("canvas", "0"), ".*'canvas' .* got '0'"),
    _tampered_bank(
        "class-names-json",
        _meta("class_names", '["Mass", '),
        "patch bank metadata 'class_names' is missing or not JSON",
    ),
    _tampered_bank(
        "class-names-type",
        _meta("class_names", '{"a": 1}'),
        "patch bank metadata 'class_names' must be a JSON list of strings",
    ),
    _tampered_bank(
        "donors-count", _meta("donors", '["d0"]'), "inconsistent patch bank: donors and sources need 3 entries"
    ),
    _tampered_bank(
        "float-classes", _tensor("classes", torch.float32), r".*classes is torch\.float32, expected torch\.int64"
    ),
    _tampered_bank("float-sizes", _tensor("sizes", torch.float64), r".*sizes is torch\.float64, expected torch\.int64"),
    _tampered_bank(
        "nan-norm-boxes", _nan_norm_box, r"inconsistent patch bank layout: norm_boxes that are NaN or outside \[0, 1\]"
    ),
    (
        "bank-unsigned-edit",
        lambda c: PatchBank.load(c.file("edited.safetensors", _unsigned_edit(c))),
        ValueError,
        r"edited\.safetensors: SHA-256 of the contents is",
    ),
    (
        "bank-not-a-bank",
        lambda c: PatchBank.load(c.file("bank.safetensors", "hello")),
        ValueError,
        r"bank\.safetensors: not a readable patch bank file",
    ),
    # ---- the model and its loss
    (
        "loss-target-two",
        lambda c: pyramid_loss([torch.zeros(2, 3)], torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])),
        ValueError,
        r"targets must be in \[0, 1\] or NaN \(unknown\), got 2\.0 at row 0, column 2",
    ),
    (
        "loss-target-minus-one",
        lambda c: pyramid_loss([torch.zeros(1, 2)], torch.tensor([[-1.0, 1.0]]), loss="asl"),
        ValueError,
        r"got -1\.0 at row 0, column 0",
    ),
    (
        "model-stages-int",
        lambda c: create_fpsm("resnet10t", stages=3),
        TypeError,
        r"stages must be a sequence .*stages=\(4,\).* got 3",
    ),
    (
        "model-stages-text",
        lambda c: create_fpsm("resnet10t", stages="34"),
        TypeError,
        r"stages must be a sequence .* got '34'",
    ),
    (
        "model-pretrained-offline",
        lambda c: _pretrained(c, _offline),
        FileNotFoundError,
        r"resnet10t weights .*HF_HUB_OFFLINE is set.*checkpoint_path=.*pretrained_cfg_overlay=",
    ),
    (
        "model-pretrained-unreachable",
        lambda c: _pretrained(c, _unreachable_hub),
        FileNotFoundError,
        r"127\.0\.0\.1:9 cannot be reached.*checkpoint_path=.*pretrained_cfg_overlay=",
    ),
    # ---- DADAM options and inputs
    (
        "dadam-float-images-0-255",
        lambda c: _dadam_call(images=_dadam_images() * 255),
        ValueError,
        r"images \(torch\.float32\) must be in \[0, 1\], got values in \[.*254",
    ),
    (
        "dadam-float-images-normalised",
        lambda c: _dadam_call(images=_dadam_images() - 0.5),
        ValueError,
        r"must be in \[0, 1\], got values in \[-0\.4",
    ),
    (
        "dadam-label-2",
        lambda c: _dadam_call(labels=_dadam_labels(0, 2.0)),
        ValueError,
        r"labels must be 0, 1 or NaN \(unknown\).*e\.g\. 2",
    ),
    (
        "dadam-label-uncertain",
        lambda c: _dadam_call(labels=_dadam_labels(3, -1.0)),
        ValueError,
        r"labels must be 0, 1 or NaN.*e\.g\. -1",
    ),
    (
        "dadam-mask-shape",
        lambda c: _dadam_call(mask=torch.ones(3, dtype=torch.bool)),
        ValueError,
        r"mask must be a \(4,\) torch\.bool tensor.*shape \(3,\)",
    ),
    ("dadam-mask-dtype", lambda c: _dadam_call(mask=torch.ones(4)), ValueError, r"mask must be .*dtype torch\.float32"),
    (
        "dadam-image-size",
        lambda c: _dadam_call(images=_dadam_images()[..., :16]),
        ValueError,
        r"images are 32x16 but the patch bank's canvas is 32x32",
    ),
    (
        "dadam-image-dtype",
        lambda c: _dadam_call(images=_dadam_images().double()),
        ValueError,
        r"images dtype must be one of .*got torch\.float64",
    ),
    ("dadam-gamma-inf", lambda c: _dadam_module(gamma=float("inf")), ValueError, r"gamma must be at most 6 .*got inf"),
    ("dadam-beta-huge", lambda c: _dadam_module(beta=1e6), ValueError, r"beta must be at most 6 .*got 1000000"),
    (
        "dadam-gamma-negative",
        lambda c: _dadam_module(gamma=-1.0),
        ValueError,
        r"gamma and beta must be >= 0, got gamma=-1",
    ),
    (
        "dadam-seed-too-large",
        lambda c: _dadam_module(generator=2**70),
        ValueError,
        r"generator seed must fit in 64 bits, got 1180591620717411303424",
    ),
    (
        "dadam-tail-float",
        lambda c: _dadam_module(tail=[1.5]),
        ValueError,
        r"tail classes must be class names or int indices, got 1\.5",
    ),
    ("dadam-tail-unknown", lambda c: _dadam_module(tail=["Flu"]), ValueError, r"tail class 'Flu' is not one of"),
    ("dadam-p", lambda c: _dadam_module(p=1.5), ValueError, r"p must be in \[0, 1\], got 1\.5"),
    ("dadam-alpha", lambda c: _dadam_module(alpha=0.0), ValueError, r"alpha must be in \(0, 1\], got 0"),
    (
        "dadam-jitter-nan",
        lambda c: _dadam_module(jitter=float("nan")),
        ValueError,
        r"jitter must be in \[0, 1\], got nan",
    ),
    (
        "dadam-companions",
        lambda c: _dadam_module(companions="rho"),
        ValueError,
        r"companions must be one of .*got 'rho'",
    ),
    (
        "dadam-stats-without-rows",
        lambda c: _dadam_module(stats=_dadam_stats_without_rows()),
        ValueError,
        r"companions='cooccurrence' draws real label rows, but these LabelStats hold none",
    ),
    (
        "dadam-stats-empty-table",
        lambda c: LabelStats.from_labels(torch.zeros(0, 26)),
        ValueError,
        r"the label table has no rows \(shape \(0, 26\)\)",
    ),
]


def _dadam_module(*, stats: LabelStats | None = None, generator=0, **options) -> DiseasedAreaAugment:
    """A DADAM module on a small bank (32 px canvas) and the statistics of 400 random label rows."""
    table = make_label_table(400)
    return DiseasedAreaAugment(
        make_bank(canvas=32, max_size=8), stats or LabelStats.from_labels(table), generator=generator, **options
    )


def _dadam_images() -> torch.Tensor:
    return torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))  # (4, 1, 32, 32) in [0, 1)


def _dadam_labels(row: int, value: float) -> torch.Tensor:
    labels = make_label_table(4, seed=1)
    labels[row, 0] = value
    return labels


def _dadam_call(*, images: torch.Tensor | None = None, labels: torch.Tensor | None = None, mask=None):
    images = _dadam_images() if images is None else images
    labels = make_label_table(4, seed=1) if labels is None else labels
    return _dadam_module()(images, labels, mask=mask)


def _dadam_stats_without_rows() -> LabelStats:
    full = LabelStats.from_labels(make_label_table(400))
    return LabelStats(full.freq, full.corr, num_samples=full.num_samples)


def _torch_save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _unsigned_edit(c: Ctx) -> bytes:
    path = c.tmp / "b.safetensors"
    make_bank({"Mass": 2}, canvas=32, max_size=8).save(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one pixel of the last patch
    return bytes(data)


def test_the_table_has_at_least_60_cases():
    assert len(CASES) >= 60
    assert len({name for name, *_ in CASES}) == len(CASES)


@pytest.mark.parametrize(("make", "error", "message"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input(make, error, message, tmp_path, data, finished_run, monkeypatch):
    ctx = Ctx(tmp_path, data, finished_run, monkeypatch)
    with pytest.raises(error) as exc:
        make(ctx)
    assert exc.type is error, f"{exc.type.__name__} is a subclass of {error.__name__}, not the error itself"
    assert re.search(message, str(exc.value), flags=re.DOTALL), str(exc.value)


# ------------------------------------------------------------------------------------------------ beside the table


LOAD_PATHS = ("train-init-from", "train-resume", "evaluate-checkpoint", "evaluate-load-model", "read-checkpoint")


@pytest.mark.parametrize("zipped", [True, False], ids=["torch-save-zip", "bare-pickle"])
@pytest.mark.parametrize("path", LOAD_PATHS)
def test_a_crafted_checkpoint_never_runs_its_code(path, zipped, data, tmp_path):
    """A pickle that would create a marker file when unpickled: every load path refuses it, and no marker appears."""
    marker = tmp_path / "marker"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker, zipped=zipped)
    with pytest.raises(pickle.UnpicklingError):  # weights_only finds the object it will not build
        torch.load(evil, weights_only=True)
    expected = (
        r"evil\.pt was not loaded: it holds Python objects \(builtins\.exec\)"
        if zipped
        else r"evil\.pt is not a readable checkpoint: not a torch\.save archive"
    )
    if path == "train-init-from":
        flags = [*TRAIN_FLAGS.split(), "--train-csv", data / "train.csv", "--val-split", "none", "--batch-size", "4"]
        flags += ["--out-dir", tmp_path / "ft", "--init-from", evil]
        with pytest.raises(CommandFailed, match=expected):
            _command(train_main, *flags)
    elif path == "train-resume":
        run = tmp_path / "run"
        run.mkdir()
        shutil.copy(evil, run / "checkpoint.pt")
        flags = [*TRAIN_FLAGS.split(), "--train-csv", data / "train.csv", "--out-dir", run, "--resume"]
        with pytest.raises(CommandFailed, match=r"run/checkpoint\.pt (was not loaded|is not a readable checkpoint)"):
            _command(train_main, *flags)
    elif path == "evaluate-checkpoint":
        flags = ["--checkpoint", evil, "--dataset", "labels-csv", "--csv", data / "val.csv", "--device", "cpu"]
        with pytest.raises(CommandFailed, match=expected):
            _command(evaluate_main, *flags, "--out", tmp_path / "ev", "--num-workers", "0", "--no-progress")
    elif path == "evaluate-load-model":
        with pytest.raises(ValueError, match=expected):
            load_model(evil)
    else:
        with pytest.raises(ValueError, match=expected):
            read_checkpoint(evil)
    assert not marker.exists()
    # the same object unpickled without weights_only does run: the marker is a working detector
    if path == "read-checkpoint":
        if zipped:
            torch.load(evil, weights_only=False)
        else:
            pickle.loads(evil.read_bytes())
        assert marker.exists()


_KILLED_SAVE = """
import io, json, sys, time
import torch
from fpsm.train import TrainConfig, fit

flag = sys.argv[2]
real_save, saves = torch.save, []


def slow_save(obj, f, *args, **kwargs):
    saves.append(1)
    if len(saves) == 2:  # the second checkpoint: half of it is written, then the process waits to be killed
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        open(flag, "w").close()
        time.sleep(120)
    return real_save(obj, f, *args, **kwargs)


torch.save = slow_save
fit(TrainConfig.from_dict(json.loads(sys.argv[1])))
"""


@pytest.mark.slow
def test_kill_during_a_checkpoint_save_keeps_the_previous_one(data, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(data, out, max_steps=4)
    flag = tmp_path / "writing"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", _KILLED_SAVE, json.dumps(cfg.to_dict()), str(flag)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists(), proc.communicate(timeout=10)[0].decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # in the middle of writing the checkpoint of step 2
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    leftovers = list(out.glob(".checkpoint.pt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the half-written save
    previous = check_checkpoint(read_checkpoint(out / "checkpoint.pt"), source=out / "checkpoint.pt")
    assert previous["step"] == 1  # the checkpoint before the kill, whole
    res = fit(dataclasses.replace(cfg, resume=True))
    assert res.step == 4 and not list(out.glob(".*.tmp"))
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 4


@pytest.mark.slow
def test_resume_with_changed_settings_is_refused_and_writes_nothing(finished_run, data, tmp_path, capsys):
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=r"resume refused: settings differ from those .*checkpoint\.pt") as exc:
        fit(_cfg(data, run, resume=True, lr=5e-4, loss="asl"))
    assert "lr: 0.001 -> 0.0005" in str(exc.value) and "loss: 'soft_margin' -> 'asl'" in str(exc.value)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # settings that do not change what is trained may differ
    res = fit(_cfg(data, run, resume=True, log_every=5, num_workers=1, progress=False))
    assert res.step == 2 and not (run / "config_changes.csv").exists()
    # allow_config_change goes on and records the change
    fit(_cfg(data, run, resume=True, max_steps=3, allow_config_change=True))
    changes = pd.read_csv(run / "config_changes.csv", dtype=str)
    assert changes.to_dict("records") == [{"step": "2", "field": "max_steps", "checkpoint": "2", "now": "3"}]
    assert "max_steps changed from 2 to 3" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["max_steps"] == 3


def test_overwrite_replaces_the_whole_run(finished_run, data, tmp_path):
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    (run / "eval" / "epoch042_report.md").write_text("a stale report")
    (run / "notes.txt").write_text("mine")
    fit(_cfg(data, run, overwrite=True, max_steps=1))
    assert not (run / "eval" / "epoch042_report.md").exists()  # the old run's files are gone ...
    assert (run / "notes.txt").read_text() == "mine"  # ... files that are not a run's are left alone
    assert json.loads((run / "final.json").read_text())["step"] == 1


@pytest.mark.slow
def test_skip_bad_images_end_to_end(data, tmp_path):
    """Two workers decode a set with a short PNG, a cut JPEG and a missing file: the run goes on and counts them."""
    folder = Path(shutil.copytree(data, tmp_path / "data"))
    _short_png(folder / "images" / "im03.png")
    (folder / "images" / "im05.png").write_bytes(_encoded("JPEG")[:300])
    (folder / "images" / "im01.png").unlink()
    out = tmp_path / "run"
    cfg = _cfg(folder, out, num_workers=2, max_steps=4, bad_images="skip")
    res = fit(cfg)
    assert res.step == 4 and res.bad_images >= 3
    log = pd.read_csv(out / "bad_images.csv")
    assert set(log["image_id"]) == {"im01.png", "im03.png", "im05.png"}
    assert set(log["phase"]) == {"train", "eval"}  # the three are in train.csv and val.csv (its first 6 rows)
    assert log["reason"].str.contains("FileNotFoundError").any()
    assert json.loads((out / "final.json").read_text())["bad_images"] == len(log) == res.bad_images
    pred = pd.read_csv(out / "eval" / "epoch000_pred.csv")  # 16 images, batch 4: the run ends with its epoch
    assert pred["image_id"].tolist() == ["im00.png", "im02.png", "im04.png"]
    # fpsm.evaluate leaves them out too and lists them
    ev = predict(
        EvalConfig(
            str(out / "model.pt"),
            dataset="labels-csv",
            csv=str(folder / "val.csv"),
            out=str(tmp_path / "ev"),
            device="cpu",
            num_workers=2,
            progress=False,
            bad_images="skip",
        )
    )
    assert ev.predictions["image_id"].tolist() == ["im00.png", "im02.png", "im04.png"]
    skipped = pd.read_csv(tmp_path / "ev" / "skipped_images.csv")
    assert skipped["image_id"].tolist() == ["im01.png", "im03.png", "im05.png"] and skipped["row"].tolist() == [1, 3, 5]
    # without skip, the first bad file ends the run with its name
    with pytest.raises(ValueError, match=r"im0[135]\.png"):
        fit(dataclasses.replace(cfg, out_dir=str(tmp_path / "run2"), bad_images="error", num_workers=0))


def test_a_png_with_short_image_data_never_ends_the_process(data, tmp_path):
    """A PNG with a whole but short compressed stream: PIL fills the rows it lacks with black, as it does for every
    PIL-based loader; torchvision's decoder would end the process. In a DataLoader worker too."""
    path = _short_png(tmp_path / "short.png", cut_stream=False)
    img = decode_image(path)
    assert img.shape == (1, SIDE, SIDE) and img.dtype == torch.uint8
    assert bool((img[0, : SIDE // 2] > 0).all()) and bool((img[0, SIDE // 2 :] == 0).all())
    ds = LabelDataset(_label_table([str(path)] * 4), tmp_path, canvas=SIDE)
    batches = list(make_loader(ds, batch_size=2, train=False, num_workers=2))
    assert [b[0].shape[0] for b in batches] == [2, 2]


def test_written_files_follow_the_umask(finished_run, tmp_path):
    """Reports, logs, checkpoints and banks get 0666 less the umask (0644 under the usual 022), not 0600."""
    mask = os.umask(0)
    os.umask(mask)
    expected = 0o666 & ~mask
    for name in ("checkpoint.pt", "model.pt", "config.json", "final.json", "eval/step0000002_report.md"):
        assert (finished_run / name).stat().st_mode & 0o777 == expected, name
    make_bank().save(tmp_path / "bank.safetensors")
    assert (tmp_path / "bank.safetensors").stat().st_mode & 0o777 == expected
