"""Offline DADAM (dadam.offline, dadam.export, python -m dadam.export): parity with the online op, resumable export,
manifest, and the earlier import paths."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dadam import DiseasedAreaAugment, LabelStats
from dadam.config import DadamConfig
from dadam.data import decode_image
from dadam.export import export, load_params
from dadam.export import main as export_main
from dadam.labels import CXR_LT_CLASSES
from dadam.offline import Placement, augment_image, match_map, placements
from dadam.sampling import DadamParams
from tests.helpers import NF, make_images, make_label_table

CANVAS = 64
TAILS = ("Fibrosis", "Hernia", "Pneumoperitoneum")
ONE = DadamConfig(p=1.0)


@pytest.fixture(scope="module")
def train_labels():
    return make_label_table(4000, seed=0)


def _mixed_labels(train_labels: torch.Tensor, n: int) -> torch.Tensor:
    """n rows: alternately normal and with a tail class (so both paste and blend happen)."""
    normal = train_labels[train_labels[:, NF] == 1]
    tail_idx = [CXR_LT_CLASSES.index(t) for t in TAILS]
    tail = train_labels[(train_labels[:, tail_idx] == 1).any(1)]
    rows = [normal[i // 2] if i % 2 == 0 else tail[i // 2] for i in range(n)]
    return torch.stack(rows)


def _hwc(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor -> (H, W) or (H, W, C) numpy."""
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16])
def test_offline_equals_online(bank, train_labels, channels, dtype):
    labels = _mixed_labels(train_labels, 24)
    images = make_images(24, channels, CANVAS, dtype, seed=1)
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(train_labels), p=1.0, jitter=0.1, generator=0)
    out, _, params = aug(images, labels, return_params=True)
    assert {1, 2} <= set(params.mode.tolist()), "test batch should contain pastes and blends"
    for b in range(24):
        before = _hwc(images[b]).copy()
        ref = augment_image(_hwc(images[b]), placements(bank, params, b))
        np.testing.assert_array_equal(_hwc(images[b]), before)  # input untouched
        np.testing.assert_array_equal(ref, _hwc(out[b]))  # bit-identical, every dtype
        # random patches on random images: a sample with a placed patch has changed pixels, one without has none
        assert bool((ref != before).any()) == bool(params.active[b].any()), b


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16])
@pytest.mark.parametrize("match", ["mean", "meanstd"])
def test_offline_equals_online_with_feather_and_match(bank, train_labels, channels, dtype, match):
    labels = _mixed_labels(train_labels, 16)
    images = make_images(16, channels, CANVAS, dtype, seed=2)
    options = dict(p=1.0, jitter=0.1, feather=3, match=match, generator=1)
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(train_labels), **options)
    out, _, params = aug(images, labels, return_params=True)
    unmeasured = dataclasses.replace(params, gain=None, offset=None)  # as aug.sample() gives: measured here
    for b in range(16):
        recorded = augment_image(_hwc(images[b]), placements(bank, params, b, feather=3))
        measured = augment_image(_hwc(images[b]), placements(bank, unmeasured, b, feather=3, match=match))
        np.testing.assert_array_equal(recorded, _hwc(out[b]))
        np.testing.assert_array_equal(measured, _hwc(out[b]))
    plain = augment_image(_hwc(images[0]), placements(bank, unmeasured, 0))
    assert not np.array_equal(plain, _hwc(out[0])), "the options changed nothing: the test would prove nothing"


def test_match_map_values_and_placement_options(bank):
    img = np.tile(np.array([[90, 110]], np.uint8), (4, 2))  # (4, 4): mean 100, std 10
    patch = np.array([[0, 20], [0, 20]], np.uint8)  # mean 10, std 10
    assert match_map(img, Placement(patch, 1, 1, 1.0, match="meanstd")) == (1.0, 90.0)
    assert match_map(img, Placement(patch, 1, 1, 1.0, match="mean")) == (1.0, 90.0)
    flat = np.full((4, 4), 0.5, np.float32)  # 128 on the 0..255 scale, std 0: the gain is clamped at 1/4
    assert match_map(flat, Placement(patch, 0, 0, 1.0, match="meanstd")) == (0.25, 125.5)
    assert match_map(img, Placement(patch, -5, 0, 1.0, match="meanstd")) == (1.0, 0.0)  # wholly outside
    out = augment_image(img, [Placement(patch, 1, 1, 1.0, gain=2.0, offset=5.0, feather=1)])
    assert out[1:3, 1:3].tolist() == [[58, 68], [58, 68]]  # 0.5 * (2 q + 5) + 0.5 * x: 57.5, 67.5 to even
    with pytest.raises(ValueError, match=r"feather must be an int >= 0, got -2"):
        placements(bank, DadamParams.cat([_params_of(bank)]), 0, feather=-2)
    with pytest.raises(ValueError, match=r"match must be one of \('none', 'mean', 'meanstd'\), got 'x'"):
        placements(bank, _params_of(bank), 0, match="x")


def _params_of(bank):
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(make_label_table(500)), p=1.0, generator=0)
    return aug.sample(make_label_table(500)[:2])


def test_export_with_feather_and_match_equals_online(tmp_path, bank, train_labels):
    labels = _mixed_labels(train_labels, 8)
    table = _write_dataset(tmp_path / "src", labels, CANVAS)
    out = tmp_path / "out"
    config = DadamConfig(p=1.0, jitter=0.05, feather=4, match="meanstd")
    stats = LabelStats.from_labels(train_labels)
    export(table, tmp_path / "src", bank, stats, out, n=8, config=config, seed=0, progress=False)
    params = load_params(out / "params.safetensors")
    assert params.gain is None  # drawn without pixels: measured at paste time, online as offline
    src = torch.stack([decode_image(tmp_path / "src" / p) for p in table["path"]])
    online, _ = DiseasedAreaAugment.from_config(bank, stats, config)(src, labels, params=params)
    df = _read_csv(out / "labels.csv")
    for i in range(8):
        np.testing.assert_array_equal(np.asarray(Image.open(out / df["path"][i])), online[i, 0].numpy())
    assert json.loads((out / "manifest.json").read_text())["config"]["match"] == "meanstd"


def test_augment_image_values():
    img = np.zeros((6, 6), np.uint8)
    img[:, :] = 0
    # half-to-even: 0.5 * 1 = 0.5 -> 0, 0.5 * 3 = 1.5 -> 2, 0.5 * 5 = 2.5 -> 2
    patch = np.array([[1, 3, 5]], np.uint8)
    out = augment_image(img, [Placement(patch, 0, 0, 0.5)])
    assert out[0, :3].tolist() == [0, 2, 2]
    # blend 0.6 of 200 on 100 = 160; paste gives the patch whatever the background; clipping at the border
    img[:] = 100
    out = augment_image(img, [Placement(np.full((2, 2), 200, np.uint8), -1, 5, 0.6)])
    assert out[5, 0] == 160 and out[5, 1] == 100 and out[4, 0] == 100
    out = augment_image(img, [Placement(np.full((3, 3), 7, np.uint8), 4, 4, 1.0)])
    assert out[4:, 4:].tolist() == [[7, 7], [7, 7]] and out[3, 3] == 100
    rgb = np.full((4, 4, 3), 0.5, np.float32)
    out = augment_image(rgb, [Placement(np.full((1, 1), 255, np.uint8), 1, 1, 0.5)])
    np.testing.assert_allclose(out[1, 1], [0.75] * 3)
    with pytest.raises(ValueError, match="image dtype must be uint8, float16 or float32, got int32"):
        augment_image(np.zeros((4, 4), np.int32), [])
    with pytest.raises(ValueError, match=r"patch 0 must be a \(h, w\) uint8 array"):
        augment_image(img, [Placement(np.zeros((2, 2), np.float32), 0, 0, 1.0)])


def _write_dataset(
    root: pathlib.Path, labels: torch.Tensor, size: int, *, nan_class: str | None = None
) -> pd.DataFrame:
    """PNG images and a label table (paths relative to root); one class column NaN when asked."""
    (root / "img").mkdir(parents=True)
    g = torch.Generator().manual_seed(3)
    rows = []
    for i in range(labels.shape[0]):
        arr = torch.randint(0, 256, (size, size), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(arr).save(root / "img" / f"src{i:03d}.png")
        rows.append({"image_id": f"src{i:03d}.png", "path": f"img/src{i:03d}.png", "source": "test"})
    df = pd.DataFrame(rows)
    values = pd.DataFrame(labels.numpy().astype(np.float64), columns=list(CXR_LT_CLASSES))
    if nan_class is not None:
        values[nan_class] = np.nan
    return pd.concat([df, values], axis=1)


def _read_csv(path: pathlib.Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image_id": str, "path": str, "patches": str})


def test_export_matches_online_and_labels(tmp_path, bank, train_labels):
    labels = _mixed_labels(train_labels, 10)
    table = _write_dataset(tmp_path / "src", labels, CANVAS, nan_class="Support Devices")
    out = tmp_path / "out"
    report = export(
        table,
        tmp_path / "src",
        bank,
        LabelStats.from_labels(train_labels),
        out,
        n=14,
        config=DadamConfig(p=1.0, jitter=0.05),
        seed=0,
        progress=False,
    )
    assert report.complete and report.written == 14 and report.total == 14 and report.skipped == 0
    params = load_params(out / "params.safetensors")
    assert len(params) == 14 and report.modes["paste"] > 0 and report.modes["blend"] > 0
    rows = torch.arange(14) % 10  # output i comes from source row i % len(table)
    src = torch.stack([decode_image(tmp_path / "src" / table["path"][int(r)]) for r in rows])
    y_src = torch.tensor(table[list(CXR_LT_CLASSES)].to_numpy(np.float32))[rows]
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(train_labels), p=1.0)
    online, online_labels = aug(src, y_src, params=params)
    df = _read_csv(out / "labels.csv")
    assert list(df.columns[:2]) == ["image_id", "path"] and len(df) == 14
    for i in range(14):
        written = np.asarray(Image.open(out / df["path"][i]))
        np.testing.assert_array_equal(written, online[i, 0].numpy())
    csv_labels = torch.tensor(df[list(CXR_LT_CLASSES)].to_numpy(np.float32))
    torch.testing.assert_close(csv_labels, params.labels, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(csv_labels, online_labels, equal_nan=True, rtol=0, atol=0)
    modes = {0: "none", 1: "paste", 2: "blend"}
    assert df["mode"].tolist() == [modes[m] for m in params.mode.tolist()]
    assert df["source_image_id"].tolist() == [table["image_id"][int(r)] for r in rows]
    for i in range(14):
        patches = json.loads(df["patches"][i])
        act = params.active[i]
        assert [p["box"] for p in patches] == params.boxes[i][act].tolist()
        assert [p["class"] for p in patches] == [CXR_LT_CLASSES[c] for c in params.classes[i][act].tolist()]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["done"] == 14 and manifest["options"]["seed"] == 0


def _tree(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_resumable_after_kill(tmp_path, bank, train_labels):
    labels = _mixed_labels(train_labels, 8)
    table = _write_dataset(tmp_path / "src", labels, CANVAS)
    kw = dict(config=DadamConfig(p=1.0), n=12, seed=5, progress=False)
    full = export(table, tmp_path / "src", bank, None, tmp_path / "a", **kw)
    assert full.complete
    part = export(table, tmp_path / "src", bank, None, tmp_path / "b", stop_after=5, **kw)
    assert not part.complete and part.written == 5
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["done"] == 5 and not manifest["complete"]
    # what a kill leaves behind: a torn CSV row, a stale temporary image, and one image lost
    with open(tmp_path / "b" / "labels.csv", "a") as f:
        f.write("0000005_src005,images/0000005_src0")
    (tmp_path / "b" / "images" / ".0000005_src005.png.abc.tmp").write_bytes(b"\x89PNG partial")
    lost = sorted((tmp_path / "b" / "images").glob("0000002_*.png"))
    assert len(lost) == 1
    lost[0].unlink()
    rest = export(table, tmp_path / "src", bank, None, tmp_path / "b", **kw)
    assert rest.complete and rest.skipped == 4 and rest.written == 8
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs between the interrupted and the uninterrupted export"


def test_export_manifest_mismatch_and_bad_dirs(tmp_path, bank, train_labels):
    labels = _mixed_labels(train_labels, 4)
    table = _write_dataset(tmp_path / "src", labels, CANVAS)
    export(table, tmp_path / "src", bank, None, tmp_path / "out", n=4, seed=0, config=ONE, progress=False)
    with pytest.raises(ValueError, match=r"seed: manifest 0, this call 1"):
        export(table, tmp_path / "src", bank, None, tmp_path / "out", n=4, seed=1, config=ONE, progress=False)
    with pytest.raises(ValueError, match=r"alpha: manifest 0.6, this call 0.5.*p: manifest 1.0, this call 0.9"):
        export(
            table,
            tmp_path / "src",
            bank,
            None,
            tmp_path / "out",
            n=4,
            seed=0,
            config=DadamConfig(p=0.9, alpha=0.5),
            progress=False,
        )
    other = table.copy()
    other.loc[0, "Mass"] = 1.0
    with pytest.raises(ValueError, match="labels_sha256"):
        export(other, tmp_path / "src", bank, None, tmp_path / "out", n=4, seed=0, config=ONE, progress=False)
    junk = tmp_path / "junk"
    (junk / "images").mkdir(parents=True)
    (junk / "images" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no manifest.json"):
        export(table, tmp_path / "src", bank, None, junk, n=4, progress=False)
    missing = table.copy()
    missing.loc[2, "path"] = "img/nope.png"
    with pytest.raises(FileNotFoundError, match=r"row 2 \(image_id 'src002.png'\): image file .*nope.png not found"):
        export(missing, tmp_path / "src", bank, None, tmp_path / "m", n=4, progress=False)
    with pytest.raises(ValueError, match="label table is missing class columns"):
        export(table.drop(columns=["Mass"]), tmp_path / "src", bank, None, tmp_path / "c", progress=False)
    with pytest.raises(TypeError, match="config must be a DadamConfig or None, got dict"):
        export(table, tmp_path / "src", bank, None, tmp_path / "d", config={"p": 1.0}, progress=False)
    with pytest.raises(ValueError, match=r"max_patches must be an int >= 1, got 0"):
        export(table, tmp_path / "src", bank, None, tmp_path / "e", config=DadamConfig(max_patches=0), progress=False)


def test_export_manifest_records_the_config_and_reads_version_1(tmp_path, bank, train_labels):
    table = _write_dataset(tmp_path / "src", _mixed_labels(train_labels, 6), CANVAS)
    config = DadamConfig(p=1.0, max_patches=2, tail=("Fibrosis", "Hernia"), soft_label=True)
    kw = dict(config=config, n=6, seed=1, progress=False)
    export(table, tmp_path / "src", bank, None, tmp_path / "a", **kw)
    export(table, tmp_path / "src", bank, None, tmp_path / "b", stop_after=2, **kw)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["version"] == 2 and manifest["config"] == config.to_dict()
    assert DadamConfig.from_dict(manifest["config"]) == config
    assert not set(manifest["options"]) & {"p", "alpha", "max_patches", "tail"}
    # the manifest layout of version 1: the DADAM options among the other options
    v1 = {**manifest, "version": 1, "options": {**manifest["options"], **manifest.pop("config")}}
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(v1))
    with pytest.raises(ValueError, match=r"max_patches: manifest 2, this call 3"):
        export(table, tmp_path / "src", bank, None, tmp_path / "b", **{**kw, "config": config.replace(max_patches=3)})
    report = export(table, tmp_path / "src", bank, None, tmp_path / "b", **kw)
    assert report.complete and report.skipped == 2 and report.written == 4
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")  # the manifest is written back as version 2
    (tmp_path / "b" / "manifest.json").write_text(json.dumps({**v1, "version": 7}))
    with pytest.raises(ValueError, match=r"version 7, expected 'dadam.export' version 1 or 2"):
        export(table, tmp_path / "src", bank, None, tmp_path / "b", **kw)


def test_export_changed_only(tmp_path, bank, train_labels):
    labels = _mixed_labels(train_labels, 10)
    table = _write_dataset(tmp_path / "src", labels, CANVAS)
    report = export(
        table,
        tmp_path / "src",
        bank,
        None,
        tmp_path / "out",
        config=DadamConfig(p=0.5),
        seed=2,
        changed_only=True,
        progress=False,
    )
    params = load_params(tmp_path / "out" / "params.safetensors")
    changed = [i for i in range(10) if params.changed[i]]
    assert report.total == len(changed) == report.modes["paste"] + report.modes["blend"]
    df = _read_csv(tmp_path / "out" / "labels.csv")
    assert [int(s.split("_")[0]) for s in df["image_id"]] == changed
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == len(changed)


def test_export_cli_resizes_like_online_pipeline(tmp_path, bank, train_labels, capsys):
    with pytest.raises(SystemExit) as e:
        export_main(["--help"])
    shown = capsys.readouterr().out
    assert e.value.code == 0
    for flag in ("--p ", "--alpha", "--max-patches", "--tail ", "--tail-quantile", "--soft-label", "--candidates"):
        assert flag in shown, flag
    labels = _mixed_labels(train_labels, 6)
    table = _write_dataset(tmp_path / "src", labels, 96)  # not the canvas: resized on the way in
    table.to_csv(tmp_path / "labels.csv", index=False)
    bank.save(tmp_path / "bank.safetensors")
    args = [
        "--labels",
        str(tmp_path / "labels.csv"),
        "--images",
        str(tmp_path / "src"),
        "--bank",
        str(tmp_path / "bank.safetensors"),
        "--out",
        str(tmp_path / "out"),
        "--p",
        "1",
        "--no-progress",
    ]
    assert export_main([*args, "--seed", "3", "--stop-after", "2"]) == 1
    assert export_main([*args, "--seed", "3"]) == 0
    assert export_main([*args, "--seed", "4"]) == 2
    assert "seed: manifest 3, this call 4" in capsys.readouterr().err
    assert export_main([*args, "--seed", "3", "--max-patches", "2"]) == 2
    assert "max_patches: manifest 3, this call 2" in capsys.readouterr().err
    assert export_main([*args, "--seed", "3", "--p", "2"]) == 2
    assert "p must be in [0, 1], got 2.0" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"] == DadamConfig(p=1.0).to_dict()
    params = load_params(tmp_path / "out" / "params.safetensors")
    src = torch.stack([decode_image(tmp_path / "src" / p, canvas=CANVAS) for p in table["path"]])
    y = torch.tensor(table[list(CXR_LT_CLASSES)].to_numpy(np.float32))
    online, _ = DiseasedAreaAugment(bank, LabelStats.from_labels(train_labels))(src, y, params=params)
    df = _read_csv(tmp_path / "out" / "labels.csv")
    for i in range(6):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / df["path"][i])), online[i, 0].numpy())
    assert not math.isnan(df["Fibrosis"][0])


def test_export_killed_before_the_first_manifest_resumes(tmp_path, bank, train_labels, monkeypatch):
    import dadam.export as export_module

    table = _write_dataset(tmp_path / "src", _mixed_labels(train_labels, 4), CANVAS)
    real = export_module.atomic_write

    def killed_at_manifest(path, data):
        if pathlib.Path(path).name == "manifest.json":
            raise KeyboardInterrupt  # the kill
        real(path, data)

    monkeypatch.setattr(export_module, "atomic_write", killed_at_manifest)
    with pytest.raises(KeyboardInterrupt):
        export(table, tmp_path / "src", bank, None, tmp_path / "out", n=4, config=ONE, progress=False)
    monkeypatch.setattr(export_module, "atomic_write", real)
    report = export(table, tmp_path / "src", bank, None, tmp_path / "out", n=4, config=ONE, progress=False)
    assert report.complete and report.written == 4


def test_export_resumes_when_every_image_is_on_disk(tmp_path, bank, train_labels):
    table = _write_dataset(tmp_path / "src", _mixed_labels(train_labels, 2), CANVAS)
    kw = dict(config=DadamConfig(p=0.0), n=3000, stop_after=0, progress=False)
    first = export(table, tmp_path / "src", bank, None, tmp_path / "out", **kw)
    assert first.written == 0 and not first.complete
    for i in range(3000):  # as if a killed run had written every image
        (tmp_path / "out" / "images" / f"{i:07d}_src{i % 2:03d}.png").touch()
    report = export(table, tmp_path / "src", bank, None, tmp_path / "out", **kw)
    assert report.skipped == 3000 and report.written == 0 and report.complete
    df = _read_csv(tmp_path / "out" / "labels.csv")
    assert len(df) == 3000 and df["image_id"].iloc[-1] == "0002999_src001"


def test_labels_tensor_rejects_non_numeric_cells():
    from dadam.offline import labels_tensor

    table = pd.DataFrame(np.zeros((3, 26)), columns=list(CXR_LT_CLASSES)).astype(object)
    table.loc[1, "Mass"] = np.nan  # unknown: fine
    assert math.isnan(float(labels_tensor(table)[1, CXR_LT_CLASSES.index("Mass")]))
    table.loc[2, "Hernia"] = "yes"
    with pytest.raises(ValueError, match=r"row 2 \(index 2\), column 'Hernia': 'yes' is not a number"):
        labels_tensor(table)


def test_export_names_still_import_from_dadam_offline():
    import dadam.export as export_module
    import dadam.formats as formats
    import dadam.offline as offline
    from dadam.offline import (  # noqa: F401  (each name must resolve)
        MANIFEST_VERSION,
        ExportReport,
        cat_params,
        draw_params,
        labels_tensor,
        load_params,
        make_augment,
    )
    from dadam.offline import export as export_fn

    for name in ("MANIFEST_VERSION", "ExportReport", "draw_params", "load_params", "make_augment"):
        assert getattr(offline, name) is getattr(export_module, name), name
    assert export_fn is export_module.export and labels_tensor is formats.labels_tensor
    assert cat_params == DadamParams.cat
    from dadam.export import read_label_table

    assert read_label_table is formats.read_label_table
    assert {"export", "cat_params", "augment_image"} <= set(dir(offline))
    with pytest.raises(AttributeError, match="module 'dadam.offline' has no attribute 'exportt'"):
        offline.exportt  # noqa: B018


def test_params_cat_joins_batches_in_order(bank, train_labels):
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(train_labels), p=1.0, generator=0)
    a, b = aug.sample(train_labels[:5]), aug.sample(train_labels[5:12])
    joined = DadamParams.cat([a, b])
    assert len(joined) == 12
    assert set(joined.tensors()) == {f.name for f in dataclasses.fields(DadamParams)} - {"gain", "offset"}
    for name, whole in joined.tensors().items():
        assert torch.equal(whole[:5], getattr(a, name)) and torch.equal(whole[5:], getattr(b, name)), name
    assert joined.gain is None and joined.offset is None  # no intensity map recorded in either part
    assert torch.equal(DadamParams.cat([a]).boxes, a.boxes)
    with pytest.raises(ValueError, match="DadamParams.cat needs at least one DadamParams"):
        DadamParams.cat([])


def test_python_m_dadam_export(monkeypatch, capsys):
    import runpy
    import sys
    import warnings

    monkeypatch.setattr(sys, "argv", ["python -m dadam.export", "--help"])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as e:
        warnings.simplefilter("ignore", RuntimeWarning)  # dadam.export is imported already: runpy says so
        runpy.run_module("dadam.export", run_name="__main__")
    assert e.value.code == 0 and "usage: python -m dadam.export" in capsys.readouterr().out
