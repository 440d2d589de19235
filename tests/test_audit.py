"""dadam.audit: label statistics before / after DADAM, figures, box grids and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dadam import DiseasedAreaAugment, LabelStats
from dadam.audit import (
    BLEND_COLOR,
    PASTE_COLOR,
    audit_labels,
    main,
    phantom_bank,
    plot_correlation,
    plot_label_distribution,
    save_grid,
)
from dadam.config import DadamConfig
from dadam.labels import CXR_LT_CLASSES, NO_FINDING
from dadam.stats import class_frequencies
from tests.helpers import NF, make_images, make_label_table

TAILS = ("Fibrosis", "Hernia", "Pneumoperitoneum")


@pytest.fixture(scope="module")
def labels():
    return make_label_table(6000, seed=1)


@pytest.fixture(scope="module")
def result(bank, labels):
    return audit_labels(labels, bank, config=DadamConfig(p=0.5), seed=0, repeats=2)


def test_audit_counts_and_identities(result, labels):
    c = result.counts
    assert c["rows"] == 6000 and c["repeats"] == 2 and c["samples"] == 12000
    assert c["paste"] + c["blend"] + c["unchanged"] == 12000 and c["paste"] > 0 and c["blend"] > 0
    assert int(result.patches.sum()) == c["patches"]
    # every paste turns a normal image into a diseased one; every placed patch adds one new positive of its class
    nf = CXR_LT_CLASSES.index(NO_FINDING)
    assert result.positives_after[nf] == 2 * result.positives_before[nf] - c["paste"]
    others = [i for i in range(26) if i != nf]
    np.testing.assert_array_equal(
        result.positives_after[others], 2 * result.positives_before[others] + result.patches[others]
    )
    np.testing.assert_allclose(result.freq_before, class_frequencies(labels.double()).numpy())
    np.testing.assert_allclose(result.freq_after, result.positives_after / 12000)


def test_audit_raises_tail_keeps_correlation(result):
    rf = result.raise_factor
    for t in TAILS:
        assert t in result.tail
        assert rf[CXR_LT_CLASSES.index(t)] > 1.2, (t, rf[CXR_LT_CLASSES.index(t)])
    assert result.freq_after[NF] < 0.8 * result.freq_before[NF]
    assert result.corr_kept > 0.6
    df = result.summary()
    assert df.shape == (26, 7) and df.loc["Fibrosis", "tail"] and not df.loc[NO_FINDING, "tail"]
    md = result.to_markdown()
    assert "| Fibrosis |" in md and "correlation kept" in md


def test_audit_seeded(bank, labels):
    a = audit_labels(labels[:2000], bank, config=DadamConfig(p=0.5), seed=3)
    b = audit_labels(labels[:2000], bank, config=DadamConfig(p=0.5), seed=3)
    c = audit_labels(labels[:2000], bank, config=DadamConfig(p=0.5), seed=4)
    np.testing.assert_array_equal(a.freq_after, b.freq_after)
    assert not np.array_equal(a.freq_after, c.freq_after)
    assert audit_labels(labels[:500], bank, config=DadamConfig(p=0.0)).counts["unchanged"] == 500
    assert a.config == DadamConfig(p=0.5) and audit_labels(labels[:10], bank).config == DadamConfig()
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        audit_labels(labels[:10], bank, repeats=0)
    with pytest.raises(ValueError, match=r"labels must be \(N, 26\), got shape \(10, 3\)"):
        audit_labels(labels[:10, :3], bank)


@pytest.mark.slow
def test_audit_phantom_labels_dataframe():
    from dadam.synthetic import sample_labels

    pb = phantom_bank(canvas=128, per_class=1)
    assert int(pb.covered.sum()) == 25
    table = pd.DataFrame(sample_labels(20000, seed=0), columns=list(CXR_LT_CLASSES))
    for companions, least in (("correlation", 2.0), ("cooccurrence", 1.5)):
        r = audit_labels(table, pb, config=DadamConfig(p=0.5, companions=companions), seed=0)
        rare = np.argsort(r.freq_before)[:5]  # the five rarest classes gain most
        # the correlation rule adds rare companions to every paste; the co-occurrence rule only as often as real
        # rows show them together with the tail class, so its raise is smaller beyond the rarest classes
        assert r.raise_factor[rare[0]] > 2 and (r.raise_factor[rare] > least).all(), r.summary().iloc[rare]
        assert r.freq_after[NF] < r.freq_before[NF] and r.corr_kept > 0.5


def test_plots(result, tmp_path):
    d = plot_label_distribution(result, tmp_path / "dist.png")
    c = plot_correlation(result, tmp_path / "corr.png")
    assert Image.open(d).size == (1650, 660) and d.stat().st_size > 30_000
    assert Image.open(c).size == (1980, 935) and c.stat().st_size > 60_000
    assert not list(tmp_path.glob(".*.tmp"))
    paths = result.save(tmp_path, prefix="x_")
    assert pd.read_csv(paths["csv"], index_col=0).shape == (26, 7)


def test_save_grid_draws_boxes(bank, labels, tmp_path):
    normal = labels[labels[:, NF] == 1][:3]
    tail = labels[(labels[:, [CXR_LT_CLASSES.index(t) for t in TAILS]] == 1).any(1)][:3]
    y = torch.cat([normal, tail, labels[labels[:, NF] == 1][3:4]])
    images = make_images(7, 1, 64, torch.uint8, seed=2)
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(labels), p=1.0, generator=1)
    out, _, params = aug(images, y, return_params=True)
    params.mode[6] = 0  # keep one image unchanged: its tile must show the image as is
    params.active[6] = False
    out[6] = images[6]
    pad, ncols = 4, 3
    path = save_grid(out, params, tmp_path / "grid.png", ncols=ncols, padding=pad, width=1, captions=False)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (3 * (64 + pad) + pad, 3 * (64 + pad) + pad, 3)
    n_boxes = 0
    for b in range(7):
        oy, ox = pad + (b // ncols) * (64 + pad), pad + (b % ncols) * (64 + pad)
        tile = grid[oy : oy + 64, ox : ox + 64]
        if not params.active[b].any():
            np.testing.assert_array_equal(tile, np.repeat(out[b, 0].numpy()[..., None], 3, -1))
        for k in np.flatnonzero(params.active[b].numpy()):
            x0, y0, x1, y1 = params.boxes[b, k].tolist()
            color = PASTE_COLOR if params.mode[b] == 1 else BLEND_COLOR
            mids = [(y0 + (y1 - y0) // 2, x0), (y0 + (y1 - y0) // 2, x1 - 1), (y1 - 1, x0 + (x1 - x0) // 2)]
            hits = sum(tuple(tile[r, c]) == color for r, c in mids)
            assert hits >= 2, (b, k, [tuple(tile[r, c]) for r, c in mids])  # a label may cover one midpoint
            n_boxes += 1
    assert n_boxes >= 6
    cap = save_grid(out, params, tmp_path / "cap.png", ncols=ncols, padding=pad, width=1)
    g2 = np.asarray(Image.open(cap))
    band = g2[pad + 64 - 14 : pad + 64, pad : pad + 64]
    assert (band.min(-1) > 128).any() and (band == 0).all(-1).mean() > 0.5  # light caption text on black
    with pytest.raises(ValueError, match="params are for 7 images, got 2 images"):
        save_grid(out[:2], params, tmp_path / "bad.png")


@pytest.mark.slow
def test_audit_100k_rows(bank):
    from dadam.synthetic import sample_labels

    r = audit_labels(sample_labels(100_000, seed=2), bank, config=DadamConfig(p=0.5), seed=0)
    assert r.counts["samples"] == 100_000 and r.counts["paste"] > 0 and r.counts["blend"] > 0


def test_cli(tmp_path, bank, labels, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    shown = capsys.readouterr().out
    assert e.value.code == 0 and "--grid" in shown
    for flag in ("--p ", "--alpha", "--max-patches", "--tail ", "--tail-quantile", "--soft-label", "--candidates"):
        assert flag in shown, flag
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    y = labels[:8].numpy()
    rows = []
    for i in range(8):
        Image.fromarray(make_images(1, 1, 80, torch.uint8, seed=i)[0, 0].numpy()).save(root / "img" / f"{i}.png")
        rows.append({"image_id": f"{i}.png", "path": f"img/{i}.png"})
    table = pd.concat([pd.DataFrame(rows), pd.DataFrame(y, columns=list(CXR_LT_CLASSES))], axis=1)
    table.to_csv(tmp_path / "labels.csv", index=False)
    pd.DataFrame(labels.numpy(), columns=list(CXR_LT_CLASSES)).assign(image_id="x", path="x").to_csv(
        tmp_path / "stats.csv", index=False
    )
    bank.save(tmp_path / "bank.safetensors")
    out = tmp_path / "out"
    rc = main(
        [
            "--labels",
            str(tmp_path / "labels.csv"),
            "--stats-labels",
            str(tmp_path / "stats.csv"),
            "--bank",
            str(tmp_path / "bank.safetensors"),
            "--out",
            str(out),
            "--prefix",
            "t_",
            "--p",
            "1",
            "--grid",
            "--images",
            str(root),
            "--ncols",
            "4",
        ]
    )
    assert rc == 0
    for name in ("summary.csv", "summary.md", "audit.json", "dist.png", "corr.png", "grid.png"):
        assert (out / f"t_{name}").stat().st_size > 100
    assert Image.open(out / "t_grid.png").size == (4 * 68 + 4, 2 * 68 + 4)
    doc = json.loads((out / "t_audit.json").read_text())
    assert doc["config"] == DadamConfig(p=1.0).to_dict() and doc["options"]["p"] == 1.0
    assert (
        main(
            [
                "--labels",
                str(tmp_path / "labels.csv"),
                "--bank",
                str(tmp_path / "bank.safetensors"),
                "--out",
                str(out),
                "--alpha",
                "0",
            ]
        )
        == 2
    )
    assert "alpha must be in (0, 1], got 0.0" in capsys.readouterr().err
    assert main(["--labels", str(tmp_path / "labels.csv"), "--out", str(out)]) == 2
    assert "exactly one of --bank" in capsys.readouterr().err


def test_python_m_dadam_audit(monkeypatch, capsys):
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["python -m dadam.audit", "--help"])
    monkeypatch.delitem(sys.modules, "dadam.audit.__main__", raising=False)
    with pytest.raises(SystemExit) as e:
        runpy.run_module("dadam.audit", run_name="__main__")
    assert e.value.code == 0 and "usage: python -m dadam.audit" in capsys.readouterr().out


def test_audit_is_library_code():
    """The audit imports no other module's private names, and only its cli imports a command line at load time."""
    import ast
    import pathlib

    import dadam.audit

    cli = {"argparse", "dadam.audit.cli", "dadam.export.main"}
    for path in pathlib.Path(dadam.audit.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
                assert not node.module.rsplit(".", 1)[-1].startswith("_"), (path.name, node.module)
                assert not [a.name for a in node.names if a.name.startswith("_")], (path.name, node.module)
        if path.name in ("cli.py", "__main__.py"):
            continue
        for node in tree.body:  # imports at load time (the package's lazy ``main`` is imported on use)
            if isinstance(node, ast.Import):
                assert not {a.name for a in node.names} & cli, path.name
            if isinstance(node, ast.ImportFrom):
                names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
                assert not names & cli, (path.name, node.module)


def test_audit_figures_against_slow_references(result, labels, bank):
    covered = [c for c in range(26) if int(bank.class_count[c]) > 0 and c != NF]
    assert result.covered == tuple(CXR_LT_CLASSES[c] for c in covered)
    change = max(
        abs(result.corr_after[i, j] - result.corr_before[i, j]) for i in covered for j in covered if i != j
    )  # fmt: skip
    assert result.corr_max_change_covered == pytest.approx(change, abs=0)
    assert result.corr_max_change >= result.corr_max_change_covered
    name, factor = result.rarest_tail
    assert name == min(result.tail, key=lambda t: result.freq_before[CXR_LT_CLASSES.index(t)])
    assert factor == result.raise_factor[CXR_LT_CLASSES.index(name)]
    figures = result.figures()
    assert figures["companions"] == "cooccurrence" and figures["corr_kept"] == result.corr_kept
    assert json.loads(json.dumps(figures)) == figures


def test_labels_per_image_against_a_slow_reference(bank, labels):
    from dadam.audit import labels_per_image

    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(labels), p=1.0, generator=3)
    params = aug.sample(labels[:3000])
    covered = bank.covered.clone()
    covered[NF] = False
    got = labels_per_image(labels[:3000], params, covered)
    # slow reference: loop over the pasted images, and over the real rows for each tail class
    pasted, per_tail = np.zeros(27), {}
    for b in range(len(params)):
        if params.mode[b] != 1:
            continue
        pasted[int(params.active[b].sum())] += 1
        t = int(params.classes[b, 0])
        if t not in per_tail:
            rows = [r for r in range(3000) if labels[r, t] > 0.5]
            per_tail[t] = np.bincount(
                [sum(1 for c in range(26) if covered[c] and labels[r, c] > 0.5) for r in rows], minlength=27
            ) / len(rows)
        per_tail.setdefault(("n", t), 0)
        per_tail[("n", t)] += 1
    n = pasted.sum()
    real = sum(per_tail[("n", t)] * per_tail[t] for t in per_tail if not isinstance(t, tuple)) / n
    np.testing.assert_allclose(got["labels_per_image_pasted"], pasted / n, atol=1e-12)
    np.testing.assert_allclose(got["labels_per_image_real"], real, atol=1e-12)
    capped = real.copy()
    capped[3] += capped[4:].sum()
    capped[4:] = 0
    np.testing.assert_allclose(got["labels_per_image_real_capped"], capped, atol=1e-12)
    r = audit_labels(labels[:3000], bank, LabelStats.from_labels(labels), config=DadamConfig(p=1.0), seed=3)
    assert r.labels_per_image_tv == pytest.approx(0.5 * np.abs(pasted / n - real).sum(), abs=1e-9)


@pytest.mark.slow
def test_compare_companions_cli_and_plot(tmp_path, capsys):
    rc = main(
        [
            "--labels", "phantom", "--phantom-rows", "4000", "--phantom-bank", "--phantom-classes", "nih",
            "--canvas", "96", "--p", "0.5", "--compare-companions", "--out", str(tmp_path), "--prefix", "c_",
        ]
    )  # fmt: skip
    assert rc == 0
    shown = capsys.readouterr().out
    assert "corr_max_change_covered" in shown and "labels_per_image_tv" in shown
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c_companions.json", "c_companions.png"]
    doc = json.loads((tmp_path / "c_companions.json").read_text())
    assert set(doc["rules"]) == {"cooccurrence", "correlation"} and len(doc["covered"]) == 8
    assert "--compare-companions" in doc["command"] and doc["rows"] == 4000
    for rule, v in doc["rules"].items():
        assert v["figures"]["companions"] == rule and v["counts"]["rows"] == 4000
        assert sum(v["labels_per_image"]["pasted"]) == pytest.approx(1.0)
    assert doc["rules"]["correlation"]["counts"]["dropped"] == 0
    assert Image.open(tmp_path / "c_companions.png").size == (1800, 1100)
    assert main(["--labels", "phantom", "--phantom-bank", "--phantom-classes", "Flu", "--out", str(tmp_path)]) == 2
    assert "phantom bank classes ['Flu'] are not disease classes" in capsys.readouterr().err
