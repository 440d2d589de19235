"""dadam.anatomy and placement="lung": the lung-box estimate against the phantom generator's lung fields and against
lung boxes annotated by hand on the real NIH images (tests/data/nih_lung_boxes.csv), its batching and its device
behaviour; the placement of a basal patch computed by hand; the module with placement="lung" (estimated or given
lung boxes, replay, the offline reference); the option and the label table's lung-box columns.

The mapping rule itself is checked against a slow per-patch reference in tests/test_sampling.py (both rules) and
tests/test_sampling_kernel.py (the kernel).
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.lung_box import ANNOTATIONS, phantom_chests, real_chests
from dadam import DiseasedAreaAugment, LabelStats, PatchBank
from dadam.anatomy import LUNG_BOX_COLUMNS, lung_box
from dadam.config import DadamConfig, add_dadam_arguments, dadam_config_from_args
from dadam.formats import lung_boxes_tensor, read_label_table
from dadam.offline import augment_image, placements
from tests.helpers import NF, fake_cuda, make_bank, make_label_table

CANVAS = 64


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, 4)``, ``(N, 4)`` xyxy -> ``(N,)`` intersection over union, one pair at a time."""
    out = []
    for (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) in zip(a.tolist(), b.tolist(), strict=True):
        inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
        union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
        out.append(inter / union)
    return torch.tensor(out)


# ------------------------------------------------------------------------------------------------- the estimate


def test_lung_box_finds_the_phantoms_lung_fields():
    images, truth = phantom_chests(range(100, 124))
    found = lung_box(images)
    iou = _iou(found, truth)
    assert iou.min() >= 0.8 and iou.median() >= 0.85, iou
    assert (found[:, :2] < found[:, 2:]).all() and ((found >= 0) & (found <= 1)).all()
    # the test can fail: boxes shifted by a tenth of the image lose the bar
    assert _iou((found + 0.1).clamp(max=1), truth).median() < 0.85


def test_lung_box_against_the_hand_annotated_nih_images(shared_data):
    images, truth, table = real_chests(shared_data, 448)  # (32, 1, 448, 448): the training canvas
    assert len(table) == 32 and set(table.confidence) == {"high", "low"} and ANNOTATIONS.name == "nih_lung_boxes.csv"
    assert truth[0].tolist() == pytest.approx([67 / 1024, 153 / 1024, 853 / 1024, 765 / 1024])  # the CSV's first row
    iou = _iou(lung_box(images), truth)
    assert iou.median() >= 0.8, iou  # measured: 0.85 (python -m benchmarks.lung_box)
    assert iou.min() >= 0.25, iou
    high = torch.tensor((table.confidence == "high").to_numpy())
    assert iou[high].min() >= 0.5, iou[high]


def test_lung_box_is_per_image_and_keeps_the_input():
    images, _ = phantom_chests(range(5))
    copy, version = images.clone(), images._version
    batch = lung_box(images)
    assert images._version == version and torch.equal(images, copy)
    assert batch.dtype == torch.float32 and batch.shape == (5, 4)
    for b in range(5):  # batched == one image at a time
        assert torch.equal(lung_box(images[b : b + 1])[0], batch[b]), b
    assert torch.equal(lung_box(images.expand(-1, 3, -1, -1)), batch)  # 3 equal channels: the same image
    assert lung_box(images[:0]).shape == (0, 4)
    flat = lung_box(torch.zeros(2, 1, 40, 56))  # nothing to find: still a box in [0, 1]
    assert (flat[:, :2] < flat[:, 2:]).all() and ((flat >= 0) & (flat <= 1)).all()
    with pytest.raises(ValueError, match=r"images must be a \(B, C, H, W\) tensor, got \(256, 256\)"):
        lung_box(images[0, 0])


def test_lung_box_on_cuda_never_syncs():
    pytest.importorskip("triton")  # fake CUDA tensors come with the kernels' test setup
    for dtype, channels in ((torch.uint8, 1), (torch.float32, 3)):
        with fake_cuda() as log:
            images = torch.zeros(256, channels, 448, 448, dtype=dtype, device="cuda")
            with log.recording():
                boxes = lung_box(images)
        assert not log.syncs, log.syncs
        assert boxes.shape == (256, 4) and boxes.device.type == "cuda"
        counts = collections.Counter(log.launches)
        assert counts["aten.sort.default"] == 1 and len(log.launches) <= 170, counts.most_common()


# ------------------------------------------------------------------------------------------------- the placement


def _lung_bank() -> PatchBank:
    """One Fibrosis patch 10 x 10 at [40, 50, 50, 60] on a 100 canvas, its donor's lungs [0.1, 0.1, 0.9, 0.6]."""
    patch = torch.arange(100, dtype=torch.uint8).view(10, 10) + 100
    return PatchBank.from_patches(
        [patch], [[40, 50, 50, 60]], ["Fibrosis"], canvas=100, lung_boxes=[[0.1, 0.1, 0.9, 0.6]]
    )


def test_a_basal_patch_lands_at_the_recipients_base():
    # by hand: centre (0.45, 0.55) is at (0.4375, 0.9) of the donor's lung box; in the recipient's lung box
    # [0.2, 0.3, 0.8, 0.9] that is (0.2 + 0.4375 * 0.6, 0.3 + 0.9 * 0.6) = (0.4625, 0.84): corner (46.25 - 5, 84 - 5);
    # in [0, 0, 1, 1] it is (0.4375, 0.9): corner (43.75 - 5, 90 - 5); an unknown lung box keeps the aligned box
    table = make_label_table(300)
    aug = DiseasedAreaAugment(
        _lung_bank(), LabelStats.from_labels(table), p=1.0, max_patches=1, tail=["Fibrosis"], placement="lung"
    )
    labels = torch.zeros(3, 26)
    labels[:, NF] = 1.0
    lungs = torch.tensor([[0.2, 0.3, 0.8, 0.9], [float("nan")] * 4, [0.0, 0.0, 1.0, 1.0]])
    params = aug.sample(labels, lung_boxes=lungs)
    assert params.boxes[:, 0].tolist() == [[41, 79, 51, 89], [40, 50, 50, 60], [39, 85, 49, 95]]
    aligned = DiseasedAreaAugment(_lung_bank(), LabelStats.from_labels(table), p=1.0, max_patches=1, tail=["Fibrosis"])
    assert aligned.sample(labels, lung_boxes=lungs).boxes[:, 0].tolist() == [[40, 50, 50, 60]] * 3
    with pytest.raises(ValueError, match="placement='lung' needs the recipients' lung boxes"):
        aug.sample(labels)


def test_lung_placement_in_the_module_replays_and_matches_the_offline_reference():
    table = make_label_table(2000, seed=1, normal_fraction=0.7)
    g = torch.Generator().manual_seed(0)
    bank = make_bank(canvas=CANVAS, seed=3)
    lo = torch.rand(len(bank), 2, generator=g) * 0.3
    bank = bank.with_lung_boxes(torch.cat([lo, lo + 0.4 + torch.rand(len(bank), 2, generator=g) * 0.3], 1))
    stats = LabelStats.from_labels(table)
    aug = DiseasedAreaAugment(bank, stats, p=1.0, max_patches=3, jitter=0.05, placement="lung", generator=7)
    images, _ = phantom_chests(range(16), size=CANVAS)  # chests: lung boxes worth estimating
    labels = table[:16]
    out, new_labels, params = aug(images, labels, return_params=True)
    estimated = lung_box(images)
    # the same draws with the estimate given: the same output
    again = DiseasedAreaAugment(bank, stats, p=1.0, max_patches=3, jitter=0.05, placement="lung", generator=7)
    out2, _, params2 = again(images, labels, return_params=True, lung_boxes=estimated)
    assert torch.equal(out2, out) and torch.equal(params2.boxes, params.boxes)
    # a replay is exact, on this module and on an aligned one (the params hold the final boxes)
    aligned = DiseasedAreaAugment(bank, stats, p=1.0, max_patches=3, jitter=0.05)
    for module in (aug, aligned):
        replayed, replayed_labels = module(images, labels, params=params)
        assert torch.equal(replayed, out) and torch.equal(replayed_labels, new_labels)
    # the offline reference pastes the recorded boxes one patch at a time: the same pixels
    for b in range(16):
        ref = augment_image(images[b, 0].numpy(), placements(bank, params, b))
        assert np.array_equal(ref, out[b, 0].numpy()), b
    moved = (params.boxes != aligned.sample(labels).boxes).any(-1) & params.active  # other draws, mostly moved
    assert params.active.any(1).sum() >= 8 and moved.any()


def test_module_lung_box_errors():
    table = make_label_table(300)
    aug = DiseasedAreaAugment(_lung_bank(), LabelStats.from_labels(table), tail=["Fibrosis"], placement="lung")
    images = torch.zeros(2, 1, 100, 100, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"lung_boxes must be a \(2, 4\) float tensor .* got shape \(2, 3\)"):
        aug(images, table[:2], lung_boxes=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"lung_boxes row 1 is \[0.5, 0.5, 0.4, 0.9\]"):
        aug(images, table[:2], lung_boxes=torch.tensor([[0.1, 0.1, 0.9, 0.9], [0.5, 0.5, 0.4, 0.9]]))
    assert "placement='lung'" in repr(aug)


# ------------------------------------------------------------------------------------------ option and columns


def test_placement_option_and_its_flag():
    assert DadamConfig().placement == "aligned"
    assert DadamConfig.from_dict({"p": 0.5}).placement == "aligned"  # a config written before the option
    with pytest.raises(ValueError, match=r"placement must be one of \('aligned', 'lung'\), got 'lungs'"):
        DadamConfig(placement="lungs").validate()
    parser = argparse.ArgumentParser()
    add_dadam_arguments(parser, prefix="dadam-")
    args = parser.parse_args(["--dadam-placement", "lung"])
    assert dadam_config_from_args(args, prefix="dadam-").placement == "lung"
    with pytest.raises(SystemExit):
        parser.parse_args(["--dadam-placement", "middle"])


def test_label_table_lung_box_columns(tmp_path):
    from dadam.labels import CXR_LT_CLASSES

    rows = pd.DataFrame({"image_id": ["a", "b", "c"], "path": ["a.png", "b.png", "c.png"]})
    for c in CXR_LT_CLASSES:
        rows[c] = 0.0
    rows["lung_x0"], rows["lung_y0"] = [0.1, None, 0.2], [0.15, None, 0.1]
    rows["lung_x1"], rows["lung_y1"] = [0.9, None, 0.8], [0.85, None, 0.95]
    rows.to_csv(tmp_path / "labels.csv", index=False)
    lungs = lung_boxes_tensor(read_label_table(tmp_path / "labels.csv"))
    assert lungs.dtype == torch.float32 and lungs.shape == (3, 4)
    assert torch.isnan(lungs[1]).all() and lungs[2].tolist() == pytest.approx([0.2, 0.1, 0.8, 0.95])
    with pytest.raises(ValueError, match=r"label table lacks the lung-box columns \['lung_y1'\]"):
        lung_boxes_tensor(rows.drop(columns="lung_y1"))
    for column, value, what in (
        ("lung_x1", 0.05, r"row 0 \(index 0\): lung box lung_x0=0.1, .*lung_x1=0.05"),
        ("lung_y0", -0.1, r"row 0 .*lung_y0=-0.1"),
        ("lung_x0", "left", r"row 0 .*lung_x0='left'"),
    ):
        bad = rows.astype({column: object})
        bad.loc[0, column] = value
        with pytest.raises(ValueError, match=what + r".* is not a box: .*\(1 such rows\)"):
            lung_boxes_tensor(bad)
    half = rows.copy()
    half.loc[1, "lung_x0"] = 0.3  # one cell of an unknown row
    with pytest.raises(ValueError, match=r"row 1 \(index 1\): lung box lung_x0=0.3, lung_y0=nan"):
        lung_boxes_tensor(half)
    assert LUNG_BOX_COLUMNS == ("lung_x0", "lung_y0", "lung_x1", "lung_y1")
