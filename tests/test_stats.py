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
