import numpy as np
import pandas as pd
import pytest
import torch

from dadam.labels import CXR_LT_CLASSES, NO_FINDING
from dadam.stats import LabelStats, class_frequencies, label_correlation, tail_classes
from tests.helpers import make_label_table

NF = CXR_LT_CLASSES.index(NO_FINDING)


def test_label_correlation_equals_numpy_corrcoef():
    rng = np.random.default_rng(0)
    x = (rng.random((500, 26)) < rng.random(26) * 0.5 + 0.05).astype(np.float64)
    x[:, 3] = np.maximum(x[:, 3], x[:, 4])  # some real correlation
    got = label_correlation(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, np.corrcoef(x, rowvar=False), atol=1e-12)
    np.testing.assert_allclose(got, got.T)


def test_label_correlation_constant_class_is_zero():
    x = make_label_table(300).double()
    x[:, 5] = 0.0  # never positive
    x[:, 6] = 1.0  # always positive
    got = label_correlation(x)
    assert torch.all(got[5] == 0) and torch.all(got[:, 5] == 0)
    assert torch.all(got[6] == 0) and torch.all(got[:, 6] == 0)
    ok = [i for i in range(26) if float(x[:, i].std()) > 0]
    np.testing.assert_allclose(got[ok][:, ok].numpy(), np.corrcoef(x[:, ok].numpy(), rowvar=False), atol=1e-12)


def test_label_correlation_pairwise_complete_like_pandas():
    rng = np.random.default_rng(1)
    x = (rng.random((400, 26)) < 0.3).astype(np.float64)
    x[:, 1] = np.where(rng.random(400) < 0.8, x[:, 0], x[:, 1])
    x[rng.random((400, 26)) < 0.2] = np.nan  # unknown entries
    expect = pd.DataFrame(x).corr().fillna(0.0).to_numpy()
    got = label_correlation(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expect, atol=1e-10)
    assert got[0, 1] > 0.5


def test_class_frequencies_ignore_unknown():
    x = torch.tensor([[1.0, 0.0, float("nan")], [0.0, 0.0, 1.0], [1.0, float("nan"), float("nan")]])
    assert class_frequencies(x).tolist() == pytest.approx([2 / 3, 0.0, 1.0])


def test_tail_classes_quantile_covered_and_no_finding():
    freq = torch.linspace(0.01, 0.26, 26)
    freq[NF] = 0.0  # rarest of all, but never a tail class
    tail = tail_classes(freq, quantile=0.5)
    assert not tail[NF]
    # 25 candidates (all but No Finding = class 14), frequencies rising with the index: the median is the 13th
    # smallest, class 12, so the tail is classes 0..12
    assert tail.nonzero().flatten().tolist() == list(range(13))
    assert tail_classes(freq, quantile=0.25).nonzero().flatten().tolist() == list(range(7))  # 7th of 25: class 6
    covered = torch.zeros(26, dtype=torch.bool)
    covered[[0, 2, 20, NF]] = True
    t = tail_classes(freq, covered, quantile=0.0)
    assert t.nonzero().flatten().tolist() == [0]
    assert tail_classes(freq, covered, quantile=1.0).nonzero().flatten().tolist() == [0, 2, 20]
    assert not tail_classes(freq, torch.zeros(26, dtype=torch.bool)).any()


def test_tail_classes_bad_arguments():
    with pytest.raises(ValueError, match="quantile must be in"):
        tail_classes(torch.rand(26), quantile=1.5)
    with pytest.raises(ValueError, match=r"freq must have shape \(26,\)"):
        tail_classes(torch.rand(25))
    with pytest.raises(ValueError, match="covered must have shape"):
        tail_classes(torch.rand(26), torch.ones(3, dtype=torch.bool))


def test_label_stats_from_table_array_and_tensor():
    y = make_label_table(600, seed=2)
    y[::7, 3] = float("nan")
    table = pd.DataFrame(y.numpy(), columns=list(CXR_LT_CLASSES))
    table.insert(0, "image_id", [f"{i}.jpg" for i in range(len(table))])
    table["source"] = "mimic"
    table = table[["image_id", *reversed(CXR_LT_CLASSES), "source"]]  # column order must not matter
    s_table = LabelStats.from_labels(table)
    s_array = LabelStats.from_labels(y.numpy())
    s_tensor = LabelStats.from_labels(y)
    for s in (s_array, s_tensor):
        assert torch.equal(s.freq, s_table.freq) and torch.equal(s.corr, s_table.corr)
    assert s_table.num_samples == 600 and s_table.class_names == CXR_LT_CLASSES
    assert s_table.freq.shape == (26,) and s_table.corr.shape == (26, 26)
    assert s_table.freq.dtype == torch.float32
    torch.testing.assert_close(s_table.freq.double(), class_frequencies(y))


def test_label_stats_bad_input():
    table = pd.DataFrame(np.zeros((3, 25)), columns=list(CXR_LT_CLASSES[:-1]))
    with pytest.raises(ValueError, match="missing class columns.*Tortuous Aorta"):
        LabelStats.from_labels(table)
    with pytest.raises(ValueError, match=r"must have 26 columns, got shape \(3, 25\)"):
        LabelStats.from_labels(torch.zeros(3, 25))
    with pytest.raises(ValueError, match="freq must have shape"):
        LabelStats(freq=torch.zeros(3), corr=torch.zeros(26, 26))


def test_label_stats_row_tables_match_the_label_rows():
    y = make_label_table(500, seed=4)
    y[::9, 5] = float("nan")  # unknown is not positive
    y[3] = 0.0  # a row without any class
    s = LabelStats.from_labels(y)
    assert s.has_rows and s.row_classes.dtype == torch.int32 and s.template_rows.dtype == torch.int32
    for r in range(len(y)):  # slow reference: each row's positive classes
        expect = sum(1 << c for c in range(26) if y[r, c] > 0.5)
        assert int(s.row_classes[r]) == expect, r
    for c in range(26):
        rows = [r for r in range(len(y)) if y[r, c] > 0.5]
        start, stop = int(s.template_start[c]), int(s.template_start[c + 1])
        assert s.template_rows[start:stop].tolist() == rows, c
        assert int(s.template_count[c]) == len(rows)
        for j in range(26):
            assert int(s.cooccurrence[c, j]) == sum(1 for r in rows if y[r, j] > 0.5), (c, j)
    assert int(s.template_start[-1]) == s.template_rows.numel()


def test_label_stats_32nd_class_bit_and_wider_class_lists():
    names = tuple(f"c{i}" for i in range(32))
    y = torch.zeros(3, 32)
    y[0, 31] = y[1, 0] = y[2, 31] = y[2, 30] = 1.0
    s = LabelStats.from_labels(y, class_names=names)
    assert [int(v) & 0xFFFFFFFF for v in s.row_classes] == [1 << 31, 1, (1 << 31) | (1 << 30)]
    wide = LabelStats.from_labels(torch.eye(33), class_names=tuple(f"c{i}" for i in range(33)))
    assert not wide.has_rows and wide.template_count is None  # rows are kept for up to 32 classes


def test_label_stats_of_a_large_table_stays_small():
    g = torch.Generator().manual_seed(0)
    from dadam.labels import CXR_LT_TRAIN_COUNTS, CXR_LT_TRAIN_IMAGES

    freq = torch.tensor([CXR_LT_TRAIN_COUNTS[c] / CXR_LT_TRAIN_IMAGES for c in CXR_LT_CLASSES])
    y = (torch.rand(265_000, 26, generator=g) < freq).float()
    s = LabelStats.from_labels(y)
    assert s.num_samples == 265_000 and s.template_rows.numel() == int((y > 0.5).sum())
    assert s.memory_bytes() <= 10 * 2**20, s.memory_bytes()


def test_label_stats_save_load_round_trip(tmp_path):
    y = make_label_table(700, seed=3)
    y[::5, 2] = float("nan")
    s = LabelStats.from_labels(y)
    path = s.save(tmp_path / "sub" / "stats.safetensors")
    assert path.exists() and not list(path.parent.glob(".*.tmp"))
    back = LabelStats.load(path)
    assert back.class_names == s.class_names and back.num_samples == s.num_samples == 700
    for name, t in s.tensors().items():
        got = getattr(back, name)
        assert got.dtype == t.dtype and torch.equal(got, t), name
    bare = LabelStats(s.freq, s.corr, s.class_names, 700)  # without label rows
    bare.save(tmp_path / "bare.safetensors")
    back = LabelStats.load(tmp_path / "bare.safetensors")
    assert not back.has_rows and torch.equal(back.corr, s.corr)


def test_label_stats_tampered_or_foreign_files_raise_naming_the_file(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    s = LabelStats.from_labels(make_label_table(300, seed=5))
    path = s.save(tmp_path / "stats.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01  # one bit of the last tensor's data
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{bad}: SHA-256 of the contents .* corrupt or tampered"):
        LabelStats.load(bad)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, str(edited), metadata={**meta, "num_samples": "301"})
    with pytest.raises(ValueError, match=f"{edited}: SHA-256"):
        LabelStats.load(edited)
    # a consistent checksum over an inconsistent layout (a row listed under a class it does not show)
    from dadam.stats import _digest

    rows = tensors["template_rows"].clone()
    rows[0] = int((s.row_classes & 1 == 0).nonzero()[0])
    forged = {**tensors, "template_rows": rows}
    meta2 = {k: v for k, v in meta.items() if k != "sha256"}
    save_file(forged, str(tmp_path / "forged.safetensors"), metadata={**meta2, "sha256": _digest(forged, meta2)})
    with pytest.raises(ValueError, match="forged.safetensors: inconsistent label-row tables: a template row does not"):
        LabelStats.load(tmp_path / "forged.safetensors")
    (tmp_path / "text.safetensors").write_text("not a file of tensors")
    with pytest.raises(ValueError, match="text.safetensors: not a readable label statistics file"):
        LabelStats.load(tmp_path / "text.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "dadam.PatchBank"})
    with pytest.raises(ValueError, match="other.safetensors: not a LabelStats file .*'dadam.PatchBank'"):
        LabelStats.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        LabelStats.load(tmp_path / "missing.safetensors")


def test_label_stats_empty_and_partial_tables():
    with pytest.raises(ValueError, match=r"the label table has no rows \(shape \(0, 26\)\)"):
        LabelStats.from_labels(torch.zeros(0, 26))
    with pytest.raises(ValueError, match="the label table has no rows"):
        LabelStats.from_labels(pd.DataFrame(columns=list(CXR_LT_CLASSES)))
    s = LabelStats.from_labels(make_label_table(50))
    with pytest.raises(ValueError, match=r"the label-row tables go together: \['row_classes'\] given"):
        LabelStats(s.freq, s.corr, num_samples=50, row_classes=s.row_classes)
    with pytest.raises(ValueError, match=r"row_classes must be torch.int32 of shape \(49,\)"):
        LabelStats(
            s.freq, s.corr, num_samples=49, **{k: v for k, v in s.tensors().items() if k not in ("freq", "corr")}
        )
    moved = s.to("cpu")
    assert moved.has_rows and torch.equal(moved.template_rows, s.template_rows)
