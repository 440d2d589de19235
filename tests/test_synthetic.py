"""Tests for the phantom generator dadam.synthetic: labels, drawn lesions/boxes, on-disk layouts, determinism, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr

from dadam import PatchBank
from dadam import synthetic as sy
from dadam.formats import read_nih_boxes
from dadam.labels import CXR_LT_CLASSES, CXR_LT_TRAIN_COUNTS, CXR_LT_TRAIN_IMAGES, NO_FINDING
from dadam.synthetic import drawing as dr
from dadam.synthetic.anatomy import sample_anatomy
from dadam.synthetic.body import ChestLayers

NF = CXR_LT_CLASSES.index(NO_FINDING)
NIH_NAMES = {
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
    "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax", "No Finding",
}  # fmt: skip
NIH_BOX_NAMES = {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"}
CHESTX_DET_NAMES = {
    "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "Diffuse Nodule", "Effusion", "Emphysema",
    "Fibrosis", "Fracture", "Mass", "Nodule", "Pleural Thickening", "Pneumothorax",
}  # fmt: skip


def one_hot(*names: str) -> np.ndarray:
    y = np.zeros(len(CXR_LT_CLASSES), np.float32)
    for name in names:
        y[CXR_LT_CLASSES.index(name)] = 1
    return y


# ------------------------------------------------------------------------------------------------------ labels


@pytest.fixture(scope="module")
def labels5k() -> np.ndarray:
    return sy.sample_labels(5000, seed=0)


def test_sample_labels_shape_and_no_finding(labels5k):
    y = labels5k
    assert y.shape == (5000, 26) and y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, 1.0}
    others = np.delete(y, NF, axis=1).sum(1)
    assert np.array_equal(y[:, NF] == 1, others == 0)


def test_sample_labels_follow_the_long_tail(labels5k):
    counts = labels5k.sum(0)
    real = np.array([CXR_LT_TRAIN_COUNTS[c] for c in CXR_LT_CLASSES])
    rho = spearmanr(counts, real).statistic
    assert rho >= 0.9, rho
    # head classes within 3 points of their real rate, No Finding included
    rate, real_rate = counts / len(labels5k), real / CXR_LT_TRAIN_IMAGES
    head = real_rate > 0.1
    assert np.abs(rate[head] - real_rate[head]).max() < 0.03, (rate[head], real_rate[head])
    # the rarest real classes stay rare
    assert rate[CXR_LT_CLASSES.index("Pneumoperitoneum")] < 0.01


def test_sample_labels_co_occurrence(labels5k):
    y = labels5k
    c = np.corrcoef(y.T)

    def corr(a: str, b: str) -> float:
        return c[CXR_LT_CLASSES.index(a), CXR_LT_CLASSES.index(b)]

    for a, b in [
        ("Pleural Effusion", "Atelectasis"),
        ("Pleural Effusion", "Cardiomegaly"),
        ("Edema", "Cardiomegaly"),
        ("Edema", "Pleural Effusion"),
        ("Pneumonia", "Consolidation"),
        ("Pneumonia", "Lung Opacity"),
        ("Pneumothorax", "Subcutaneous Emphysema"),
        ("Mass", "Nodule"),
    ]:
        assert corr(a, b) > 0.05, (a, b, corr(a, b))
    # unrelated syndromes are not positively tied
    assert corr("Mass", "Edema") < 0.05


def test_sample_labels_seeded():
    assert np.array_equal(sy.sample_labels(300, seed=4), sy.sample_labels(300, seed=4))
    assert not np.array_equal(sy.sample_labels(300, seed=4), sy.sample_labels(300, seed=5))
    with pytest.raises(ValueError, match="n must be"):
        sy.sample_labels(-1, seed=0)
    for bad in (-1, 1.5, "3"):  # not silently truncated, and the message names the argument
        with pytest.raises(ValueError, match=re.escape(f"seed must be an integer >= 0, got {bad!r}")):
            sy.sample_labels(3, seed=bad)


def test_sample_labels_default_rows_are_unchanged():
    # the default rows: the README's audit figures and other tests rely on them
    digest = hashlib.sha256(sy.sample_labels(20000, seed=0).tobytes()).hexdigest()
    assert digest == "512cf584b23d6f1574c3685a0f5fd52066e8602a008a98cec25323c0da0eb7d0"
    assert np.array_equal(sy.sample_labels(500, seed=3, min_rate=0.0), sy.sample_labels(500, seed=3))


def test_min_rate_raises_the_rare_findings_only():
    real = np.array([CXR_LT_TRAIN_COUNTS[c] / CXR_LT_TRAIN_IMAGES for c in CXR_LT_CLASSES])
    y = sy.sample_labels(40000, seed=1, min_rate=0.05)
    rate = y.mean(0)
    raised = (real < 0.05) & (np.arange(len(real)) != NF)
    assert raised.sum() == 15  # the findings rarer than 5 % in CXR-LT
    assert np.all(np.abs(rate[raised] - 0.05) < 0.006), rate[raised]  # calibrated to the floor
    kept = ~raised & (np.arange(len(real)) != NF)
    assert np.all(np.abs(rate[kept] / real[kept] - 1) < 0.12), rate[kept] / real[kept]
    assert abs(rate[NF] - real[NF]) < 0.01  # No Finding keeps its rate and its meaning
    others = np.delete(y, NF, axis=1).sum(1)
    assert np.array_equal(y[:, NF] == 1, others == 0)
    assert not np.array_equal(y[:500], sy.sample_labels(500, seed=1))


@pytest.mark.parametrize("bad", [-0.01, 0.3, float("nan"), "0.1", True, None])
def test_min_rate_is_checked(bad, tmp_path):
    with pytest.raises(ValueError, match="min_rate must be ") as err:
        sy.sample_labels(3, seed=0, min_rate=bad)
    assert repr(bad) in str(err.value)
    with pytest.raises(ValueError, match="min_rate must be"):
        sy.generate("nih", tmp_path, n=2, size=64, min_rate=bad)
    assert not any(tmp_path.iterdir())


def test_min_rate_needs_a_chest_layout(tmp_path):
    with pytest.raises(ValueError, match="the mura layout needs min_rate=0, got 0.1"):
        sy.generate("mura", tmp_path, n=2, size=64, min_rate=0.1)


# ------------------------------------------------------------------------------------------------------ drawing


@pytest.mark.parametrize("size", [160, 131])  # an odd side upsamples the body through PIL, not the 2x path
def test_every_class_draws_a_box_inside_the_image(size):
    for name in CXR_LT_CLASSES:
        img, boxes = sy.render_chest(one_hot(name), size=size, rng=np.random.default_rng(1))
        assert img.shape == (size, size) and img.dtype == np.uint8
        if name == NO_FINDING:
            assert boxes == []
            continue
        assert boxes and {b[0] for b in boxes} == {name}, (name, boxes)
        for _, x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size, (name, boxes)


@pytest.mark.parametrize(
    "name",
    [
        "Nodule",
        "Mass",
        "Pleural Effusion",
        "Support Devices",
        "Pneumothorax",
        "Cardiomegaly",
        "Fracture",
        "Consolidation",
    ],
)
def test_boxes_lie_on_the_drawn_lesion(name):
    size = 256
    for seed in (0, 1, 2):
        normal, _ = sy.render_chest(one_hot(NO_FINDING), size=size, rng=np.random.default_rng(seed))
        img, boxes = sy.render_chest(one_hot(name), size=size, rng=np.random.default_rng(seed))
        diff = np.abs(img.astype(np.float64) - normal)
        inside = np.zeros((size, size), bool)
        for _, x0, y0, x1, y1 in boxes:
            inside[y0:y1, x0:x1] = True
        # the same anatomy and grain, so everything the lesion changed lies inside its boxes
        assert diff[~inside].mean() < 0.5, (name, seed, diff[~inside].mean())
        assert diff[inside].mean() > 3.0, (name, seed, diff[inside].mean())

        # the lesion's change is in the box and not in the same box shifted away (per box, the box most filled)
        fill = [diff[b[2] : b[4], b[1] : b[3]].mean() for b in boxes]
        _, x0, y0, x1, y1 = boxes[int(np.argmax(fill))]
        w = x1 - x0
        sx = x0 + w + 4 if x0 + 2 * w + 4 <= size else x0 - w - 4
        sx = min(max(sx, 0), size - w)
        in_box, shifted = diff[y0:y1, x0:x1], diff[y0:y1, sx : sx + w]
        assert in_box.mean() > 3.0 and in_box.mean() > 4 * shifted.mean(), (name, seed, in_box.mean(), shifted.mean())
        # and in the image itself the box does not look like its shifted copy
        raw_in, raw_sh = img[y0:y1, x0:x1].astype(np.float64), img[y0:y1, sx : sx + w].astype(np.float64)
        assert np.abs(raw_in - raw_sh).mean() > 3.0


def test_nodule_size_and_cardiomegaly_heart():
    size = 512
    widths = []
    for seed in range(6):
        _, boxes = sy.render_chest(one_hot("Nodule"), size=size, rng=np.random.default_rng(seed))
        widths.append(boxes[0][3] - boxes[0][1])
    assert 0.008 * size <= min(widths) and max(widths) <= 0.035 * size, widths
    _, big = sy.render_chest(one_hot("Cardiomegaly"), size=size, rng=np.random.default_rng(0))
    _, mass = sy.render_chest(one_hot("Mass"), size=size, rng=np.random.default_rng(0))
    assert big[0][3] - big[0][1] > 0.35 * size  # a wide heart
    assert mass[0][3] - mass[0][1] > 2 * max(widths)


def test_render_is_deterministic_and_checks_input():
    y = sy.sample_labels(1, seed=3)[0]
    a = sy.render_chest(y, size=128, rng=np.random.default_rng(9))
    b = sy.render_chest(y, size=128, rng=np.random.default_rng(9))
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    with pytest.raises(ValueError, match="labels_row must have shape"):
        sy.render_chest(np.zeros(5), size=128, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="size must be"):
        sy.render_chest(y, size=16, rng=np.random.default_rng(0))


def test_draw_primitives_match_references():
    rng = np.random.default_rng(0)
    for shape, out in [((64, 48), (128, 96)), ((33, 40), (66, 80)), ((50, 50), (77, 91))]:
        a = rng.random(shape, dtype=np.float32)
        ref = np.asarray(Image.fromarray(a, mode="F").resize((out[1], out[0]), Image.BILINEAR))
        up = dr.upsample(a, *out)
        assert up.shape == out and up.dtype == np.float32
        np.testing.assert_allclose(up, ref, atol=1e-5)
    x = np.linspace(-1.0, 2.0, 301).astype(np.float32)
    x0 = x.copy()
    for e0, e1 in [(0.2, 0.7), (0.7, 0.2)]:
        t = np.clip((x.astype(np.float64) - e0) / (e1 - e0), 0, 1)
        np.testing.assert_allclose(dr.smoothstep(x, e0, e1), t * t * (3 - 2 * t), atol=1e-6)
    assert np.array_equal(x, x0)  # the input is not modified
    # disk() draws only in its window: the same values as the formula over the whole image
    for h, w, cx, cy, rx, ry, soft, angle in [
        (60, 80, 30.2, 20.7, 9.0, 4.5, 1.0, 0.0),
        (50, 40, -3.0, 45.0, 12.0, 6.0, 3.0, 0.7),
    ]:
        x_ = np.arange(w, dtype=np.float32)[None, :] + 0.5 - cx
        y_ = np.arange(h, dtype=np.float32)[:, None] + 0.5 - cy
        c, s = np.cos(angle), np.sin(angle)
        x_, y_ = (c * x_ + s * y_, -s * x_ + c * y_) if angle else (x_, y_)
        ref = np.clip((1.0 - np.sqrt((x_ / rx) ** 2 + (y_ / ry) ** 2)) / (soft / min(rx, ry)) + 0.5, 0.0, 1.0)
        np.testing.assert_allclose(dr.disk(h, w, cx, cy, rx, ry, soft=soft, angle=angle), ref, atol=1e-6)


def _regions(seed: int, size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A lesion-free render and full-resolution masks of its anatomy (rebuilt from the same rng streams)."""
    img, _ = sy.render_chest(one_hot(NO_FINDING), size=size, rng=np.random.default_rng(seed))
    anatomy_rng, _, _ = np.random.default_rng(seed).spawn(3)
    layers = ChestLayers(sample_anatomy(size, anatomy_rng), anatomy_rng)
    up, half = layers.upsample, layers.half
    abd = up(half.abdomen) > 0.99
    rows = np.flatnonzero(abd.any(1))
    top, bottom = np.zeros_like(abd), np.zeros_like(abd)
    top[rows[0] + size // 40 : rows[0] + size // 12] = True
    bottom[-size // 12 :] = True
    centre = np.zeros_like(abd)
    centre[:, int(size * 0.3) : int(size * 0.7)] = True
    masks = {
        "lung": (up(half.lung_field) > 0.99) & (up(half.heart) < 0.01),
        "heart": (up(half.heart) > 0.99) & (up(half.abdomen) < 0.01),
        "abd_top": abd & top & centre,
        "abd_bottom": abd & bottom & centre,
        "outside": up(half.body) < 0.01,
    }
    return img, masks


def test_chest_anatomy_reads_as_a_pa_film():
    size = 256
    for seed in range(4):
        img, m = _regions(seed, size)
        mean = {k: float(img[v].mean()) for k, v in m.items() if v.any()}
        assert {"lung", "heart", "abd_top", "abd_bottom", "outside"} <= set(mean), (seed, sorted(mean))
        # air outside the body darkest, lungs dark, heart and upper abdomen bright
        assert mean["outside"] < mean["lung"] - 10 < mean["heart"] - 40, (seed, mean)
        assert mean["abd_top"] > mean["lung"] + 40, (seed, mean)
        # the abdomen fades toward the bottom of the film instead of being a flat slab
        assert mean["abd_bottom"] < mean["abd_top"] - 15, (seed, mean)
        # the lungs are not crushed to black: ribs and vessels give them texture
        assert 15 < mean["lung"] and img[m["lung"]].std() > 6, (seed, mean, img[m["lung"]].std())


def test_anatomy_varies_between_images():
    imgs = [sy.render_chest(one_hot(NO_FINDING), size=128, rng=np.random.default_rng(s))[0] for s in range(6)]
    diffs = [np.abs(a.astype(np.float64) - b).mean() for i, a in enumerate(imgs) for b in imgs[i + 1 :]]
    assert min(diffs) > 4.0, diffs  # pose, shape and tone differ; not the same picture with new grain


@pytest.mark.parametrize("part", sy.MURA_PARTS)
def test_render_limb(part):
    img, boxes = sy.render_limb(part, abnormal=False, size=160, rng=np.random.default_rng(0))
    assert img.dtype == np.uint8 and img.shape[0] == 160 and 110 <= img.shape[1] <= 160 and boxes == []
    assert img.std() > 10  # bones and soft tissue, not a flat field
    img, boxes = sy.render_limb(part, abnormal=True, size=160, rng=np.random.default_rng(0))
    assert len(boxes) == 1 and boxes[0][0] in {"Fracture", "Hardware"}
    _, x0, y0, x1, y1 = boxes[0]
    assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]
    with pytest.raises(ValueError, match="part must be"):
        sy.render_limb("KNEE", abnormal=False, size=160, rng=np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------------ layouts


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, pathlib.Path]:
    base = tmp_path_factory.mktemp("phantoms")
    return {
        layout: sy.generate(layout, base / layout, n=24, size=128, seed=0, progress=False, workers=1)
        for layout in sy.LAYOUTS
    }


def first_line(path: pathlib.Path) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.readline().rstrip("\n")


def test_nih_layout(written, shared_data):
    root = written["nih"]
    real = shared_data / "nih14"
    assert first_line(root / "Data_Entry_2017_v2020.csv") == first_line(real / "Data_Entry_2017_v2020.csv")
    assert first_line(root / "BBox_List_2017.csv") == first_line(real / "BBox_List_2017.csv")
    ours, theirs = pd.read_csv(root / "Data_Entry_2017_v2020.csv"), pd.read_csv(real / "Data_Entry_2017_v2020.csv")
    assert list(ours.columns) == list(theirs.columns)
    lines = (root / "Data_Entry_2017_v2020.csv").read_text().splitlines()[1:]
    assert len(lines) == 24 and all(len(line.split(",")) == 11 for line in lines)
    names = [line.split(",")[0] for line in lines]
    assert all(re.fullmatch(r"\d{8}_\d{3}\.png", n) for n in names)
    labels = {lab for line in lines for lab in line.split(",")[1].split("|")}
    assert labels <= NIH_NAMES
    for n in names:
        with Image.open(root / "images" / n) as im:
            assert im.size == (128, 128) and im.mode == "L"
    box_lines = (root / "BBox_List_2017.csv").read_text().splitlines()[1:]
    assert box_lines, "some images get boxes"
    for line in box_lines:
        f = line.split(",")
        assert len(f) == 6 and f[0] in names and f[1] in NIH_BOX_NAMES
        x, y, w, h = map(float, f[2:])  # NIH's 1024 px, as the real file: 8 per pixel of a 128 px phantom
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 1024 and y + h <= 1024
        assert all(v % 8 == 0 for v in (x, y, w, h)), line
    boxed = pd.read_csv(root / "BBox_List_2017.csv", header=None, skiprows=1)
    assert boxed.shape[1] == 6


def test_nih_boxes_read_back_onto_their_drawn_lesions(tmp_path):
    # The box list counts in NIH's 1024 px whatever the phantom's size, so the reader (image sizes from the files)
    # and the bank (no size given) put every patch on the lesion the generator drew.
    size, seed, n = 200, 0, 24
    root = sy.generate("nih", tmp_path / "nih", n=n, size=size, seed=seed, progress=False, workers=1)
    raw = pd.read_csv(root / "BBox_List_2017.csv", header=None, skiprows=1).to_numpy()
    xywh = raw[:, 2:6].astype(np.float64)
    in_image = xywh * size / 1024
    np.testing.assert_allclose(in_image, np.rint(in_image), atol=1e-9)  # whole pixels of the 200 px image
    assert (xywh[:, 0] + xywh[:, 2]).max() > size  # not the phantom's own pixels

    boxes = read_nih_boxes(root / "BBox_List_2017.csv", image_root=root / "images")
    assert len(boxes) == len(raw) > 0 and boxes.attrs["report"].skipped == {}
    bank = PatchBank.from_boxes(boxes, root / "images", canvas=size, progress=False)
    assert len(bank) == len(raw)

    names = pd.read_csv(root / "Data_Entry_2017_v2020.csv")["Image Index"].tolist()  # image i is row i
    labels = sy.sample_labels(n, seed=seed)  # the labels the layout draws from

    def image_rng(i: int) -> np.random.Generator:  # the documented per-image seed
        return np.random.default_rng(np.random.SeedSequence([seed, i, sy.LAYOUTS.index("nih") + 1]))

    for k in range(len(bank)):
        donor, cls = bank.donors[k], CXR_LT_CLASSES[int(bank.classes[k])]
        x0, y0, x1, y1 = (int(v) for v in bank.boxes[k])
        i = names.index(donor)
        with Image.open(root / "images" / donor) as im:
            written = np.asarray(im, dtype=np.float64)
        lesion_free, _ = sy.render_chest(one_hot(NO_FINDING), size=size, rng=image_rng(i))
        _, drawn = sy.render_chest(labels[i], size=size, rng=image_rng(i))
        # the patch is one of the boxes drawn for that class, to the pixel (rounding outwards adds at most one)
        near = [b for b in drawn if b[0] == cls and np.abs(np.subtract(b[1:], (x0, y0, x1, y1))).max() <= 1]
        assert near, (donor, cls, (x0, y0, x1, y1), drawn)
        # and many of its pixels differ clearly from the same chest drawn without lesions
        diff = np.abs(written - lesion_free)[y0:y1, x0:x1]
        assert (diff > 8).mean() > 0.05, (donor, cls, (diff > 8).mean())
        np.testing.assert_array_equal(bank.patch(k).numpy(), written[y0:y1, x0:x1])


def test_cxr_lt_layout(written):
    root = written["cxr-lt"]
    cols = ["dicom_id", "subject_id", "study_id", "ViewPosition", "path", *CXR_LT_CLASSES]
    train, dev = pd.read_csv(root / "train.csv"), pd.read_csv(root / "development.csv")
    assert list(train.columns) == cols and list(dev.columns) == cols
    both = pd.concat([train, dev])
    assert len(both) == 24 and len(dev) > 0 and len(train) > len(dev)
    assert not set(train.subject_id) & set(dev.subject_id)
    for _, r in both.iterrows():
        sub = str(r.subject_id)
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}", r.dicom_id) and len(sub) == 8
        assert r.path == f"files/p{sub[:2]}/p{sub}/s{r.study_id}/{r.dicom_id}.jpg"
        with Image.open(root / r.path) as im:
            assert im.format == "JPEG" and im.size == (128, 128)
    y = both[list(CXR_LT_CLASSES)].to_numpy()
    assert set(np.unique(y)) <= {0, 1}
    assert np.array_equal(y[:, NF] == 1, np.delete(y, NF, 1).sum(1) == 0)
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv")
    assert first_line(root / "mimic-cxr-2.0.0-metadata.csv") == (
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
        "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
        "PatientOrientationCodeSequence_CodeMeaning"
    )
    assert set(meta.dicom_id) == set(both.dicom_id) and (meta.Rows == 128).all()
    chex = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv")
    assert list(chex.columns) == ["subject_id", "study_id", *sy.CHEXPERT_LABELS]
    vals = chex[list(sy.CHEXPERT_LABELS)].to_numpy().ravel()
    assert set(vals[~np.isnan(vals)]) <= {1.0, 0.0, -1.0}
    assert np.isnan(vals).any() and (vals == -1.0).any() and (vals == 1.0).any()
    assert set(zip(chex.subject_id, chex.study_id, strict=True)) == set(
        zip(both.subject_id, both.study_id, strict=True)
    )


def test_chestx_det_layout(written, shared_data):
    root = written["chestx-det"]
    entries = json.loads((root / "ChestX_Det_train.json").read_text())
    real = json.loads((shared_data / "chestx_det" / "ChestX_Det_train_sample.json").read_text())
    assert isinstance(entries, list) and len(entries) == 24
    assert all(list(e) == list(real[0]) for e in entries)
    assert any(not e["boxes"] for e in entries) and any(e["boxes"] for e in entries)
    for e in entries:
        assert re.fullmatch(r"\d+\.png", e["file_name"]) and (root / "train" / e["file_name"]).exists()
        assert len(e["syms"]) == len(e["boxes"]) == len(e["polygons"]) and set(e["syms"]) <= CHESTX_DET_NAMES
        for (x1, y1, x2, y2), poly in zip(e["boxes"], e["polygons"], strict=True):
            assert all(isinstance(v, int) for v in (x1, y1, x2, y2)) and 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
            p = np.array(poly)
            assert p.ndim == 2 and p.shape[1] == 2
            assert p[:, 0].min() >= x1 and p[:, 0].max() < x2 and p[:, 1].min() >= y1 and p[:, 1].max() < y2


def test_vindr_layout(written):
    pydicom = pytest.importorskip("pydicom")
    root = written["vindr"]
    df = pd.read_csv(root / "train.csv")
    assert list(df.columns) == ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
    assert df.image_id.nunique() == 24 and df.image_id.str.fullmatch(r"[0-9a-f]{32}").all()
    assert (df.groupby("image_id").rad_id.nunique() == 3).all() and df.rad_id.str.fullmatch(r"R\d{1,2}").all()
    names = (*sy.VINDR_CLASSES, "No finding")
    assert all(names[cid] == cn for cn, cid in zip(df.class_name, df.class_id, strict=True))
    nf = df[df.class_id == 14]
    assert len(nf) and nf[["x_min", "y_min", "x_max", "y_max"]].isna().all().all()
    boxes = df[df.class_id != 14]
    assert len(boxes) and boxes[["x_min", "y_min", "x_max", "y_max"]].notna().all().all()
    photometric = set()
    for image_id, rows in df.groupby("image_id"):
        ds = pydicom.dcmread(root / "train" / f"{image_id}.dicom")
        h, w = ds.pixel_array.shape
        assert (ds.Rows, ds.Columns) == (h, w) and 1.8 * 128 - 1 <= h <= 2.4 * 128 + 1 and ds.BitsAllocated == 16
        photometric.add(ds.PhotometricInterpretation)
        b = rows[rows.class_id != 14]
        assert ((b.x_min >= 0) & (b.x_max <= w) & (b.y_min >= 0) & (b.y_max <= h) & (b.x_min < b.x_max)).all()
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}


def test_mura_layout(written, shared_data):
    root = written["mura"]
    paths = []
    for split in ("train", "valid"):
        img = pd.read_csv(root / "MURA-v1.1" / f"{split}_image_paths.csv", header=None)
        studies = pd.read_csv(root / "MURA-v1.1" / f"{split}_labeled_studies.csv", header=None)
        real_img = pd.read_csv(shared_data / "mura" / f"{split}_image_paths.csv", header=None)
        real_st = pd.read_csv(shared_data / "mura" / f"{split}_labeled_studies.csv", header=None)
        assert img.shape[1] == real_img.shape[1] == 1 and studies.shape[1] == real_st.shape[1] == 2
        pat = rf"MURA-v1\.1/{split}/XR_({'|'.join(sy.MURA_PARTS)})/patient\d{{5}}/study\d+_(positive|negative)/"
        assert real_img[0].str.fullmatch(pat + r"image\d+\.png").all()  # the pattern matches the real file
        assert img[0].str.fullmatch(pat + r"image\d+\.png").all()
        assert studies[0].str.fullmatch(pat).all()
        assert (studies[1] == studies[0].str.contains("_positive/").astype(int)).all()
        assert set(img[0].str.rsplit("/", n=1).str[0] + "/") == set(studies[0])
        paths += list(img[0])
    assert len(paths) == 24
    for p in paths:
        with Image.open(root / p) as im:
            assert im.mode == "L" and im.size[1] == 128


def tree_hash(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_any_workers(tmp_path, written):
    a = sy.generate("nih", tmp_path / "a", n=24, size=128, seed=0, progress=False, workers=2)
    b = sy.generate("nih", tmp_path / "b", n=24, size=128, seed=1, progress=False, workers=1)
    assert tree_hash(a) == tree_hash(written["nih"])  # workers=2 == workers=1
    ha, hb = tree_hash(a), tree_hash(b)
    assert ha != hb and sum(ha[k] != hb.get(k) for k in ha) > len(ha) // 2
    c = sy.generate("vindr", tmp_path / "c", n=4, size=96, seed=0, progress=False, workers=1)
    d = sy.generate("vindr", tmp_path / "d", n=4, size=96, seed=0, progress=False, workers=1)
    assert tree_hash(c) == tree_hash(d)
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic writes leave no temporaries


def test_generate_errors(tmp_path):
    with pytest.raises(ValueError, match="layout must be one of"):
        sy.generate("chexpert", tmp_path, n=2)
    with pytest.raises(ValueError, match="n must be"):
        sy.generate("nih", tmp_path, n=0)
    with pytest.raises(ValueError, match="size must be"):
        sy.generate("nih", tmp_path, n=2, size=8)
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got 1\.5"):
        sy.generate("nih", tmp_path, n=2, size=64, seed=1.5)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -2"):
        sy.generate("nih", tmp_path, n=2, size=64, seed=-2)


def test_cli(tmp_path):
    help_ = subprocess.run([sys.executable, "-m", "dadam.synthetic", "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "--layout" in help_.stdout and "mura" in help_.stdout
    out = tmp_path / "mura"
    run = subprocess.run(
        [sys.executable, "-m", "dadam.synthetic", "--layout", "mura", "--n", "5", "--size", "64", "--seed", "3",
         "--out", str(out), "--workers", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = pd.read_csv(out / "MURA-v1.1" / "train_image_paths.csv", header=None)
    assert len(rows) + len(pd.read_csv(out / "MURA-v1.1" / "valid_image_paths.csv", header=None)) == 5
    with pytest.raises(SystemExit):
        sy.main(["--layout", "x", "--n", "1", "--out", str(out)])
    with pytest.raises(SystemExit):
        sy.main(["--layout", "nih", "--n", "0", "--out", str(out)])


@pytest.mark.parametrize("n", [2, 3, 4])
def test_mura_small_n_keeps_both_splits(tmp_path, n):
    # With a few images the drawn studies can all fall into one split (often one study holding every image);
    # both CSV pairs must still have rows, or a reader of train_image_paths.csv gets an empty file.
    for seed in range(6):
        root = sy.generate("mura", tmp_path / f"{n}_{seed}", n=n, size=64, seed=seed, progress=False, workers=1)
        total = 0
        for split in ("train", "valid"):
            paths = (root / "MURA-v1.1" / f"{split}_image_paths.csv").read_text().splitlines()
            studies = (root / "MURA-v1.1" / f"{split}_labeled_studies.csv").read_text().splitlines()
            assert paths and studies, (n, seed, split)
            assert {p.rsplit("/", 1)[0] + "/" for p in paths} == {s.rsplit(",", 1)[0] for s in studies}
            assert all(p.startswith(f"MURA-v1.1/{split}/") for p in paths)
            total += len(paths)
        assert total == n, (n, seed, total)


def test_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    root = tmp_path / "mura"
    sy.generate("mura", root, n=3, size=64, seed=0, progress=False, workers=1)
    before = tree_hash(root)

    def boom(src, dst):
        raise OSError(f"disk full while replacing {dst}")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        sy.generate("mura", root, n=3, size=64, seed=1, progress=False, workers=1, overwrite=True)
    assert tree_hash(root) == before  # the old files are intact
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]  # and no temporary is left


def test_existing_files_are_not_overwritten_unless_asked(tmp_path):
    root = tmp_path / "nih"
    sy.generate("nih", root, n=4, size=64, seed=0, progress=False, workers=1)
    first = tree_hash(root)
    first_image = pd.read_csv(root / "Data_Entry_2017_v2020.csv")["Image Index"][0]
    # the first file the run would write is named, and nothing is drawn or written
    with pytest.raises(FileExistsError, match=re.escape(f"{root / 'images' / first_image} exists")) as err:
        sy.generate("nih", root, n=4, size=64, seed=0, progress=False, workers=1)
    assert "overwrite=True" in str(err.value) and "--overwrite" in str(err.value)
    assert tree_hash(root) == first
    # overwrite=True replaces every file the run writes: the same bytes as a fresh run with those arguments
    sy.generate("nih", root, n=4, size=64, seed=1, progress=False, workers=1, overwrite=True)
    fresh = tree_hash(sy.generate("nih", tmp_path / "fresh", n=4, size=64, seed=1, progress=False, workers=1))
    now = tree_hash(root)
    assert {k: now[k] for k in fresh} == fresh and fresh["Data_Entry_2017_v2020.csv"] != first[
        "Data_Entry_2017_v2020.csv"
    ]
    with pytest.raises(TypeError, match="overwrite must be a bool, got 'yes'"):
        sy.generate("nih", root, n=4, size=64, seed=1, progress=False, workers=1, overwrite="yes")


def test_a_users_table_is_protected_and_other_files_are_left_alone(tmp_path):
    (tmp_path / "train.csv").write_text("my,own\n")  # VinDr's table name; its images have random names
    (tmp_path / "notes.txt").write_text("keep\n")
    with pytest.raises(FileExistsError, match=re.escape(f"{tmp_path / 'train.csv'} exists")):
        sy.generate("vindr", tmp_path, n=2, size=64, seed=0, progress=False, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "train.csv"]  # no image was written
    assert (tmp_path / "train.csv").read_text() == "my,own\n"
    root = sy.generate("mura", tmp_path, n=2, size=64, seed=0, progress=False, workers=1)  # no name in common
    assert (root / "notes.txt").read_text() == "keep\n" and (root / "train.csv").read_text() == "my,own\n"


def test_cli_refuses_to_overwrite_without_the_flag(tmp_path, capsys):
    argv = ["--layout", "mura", "--n", "2", "--size", "64", "--out", str(tmp_path), "--workers", "1", "--no-progress"]
    assert sy.main(argv) == 0
    with pytest.raises(SystemExit) as exc:
        sy.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'MURA-v1.1'}" in err and "exists" in err and "--overwrite" in err
    assert sy.main([*argv, "--overwrite"]) == 0


def test_size_is_bounded_with_a_clear_error(tmp_path, capsys):
    assert dr.check_size(dr.MAX_SIZE) == dr.MAX_SIZE == 4096 and dr.check_size(64) == 64
    msg = re.escape("size=4097 is above the limit of 4096 pixels") + ".* GB per worker; choose size <= 4096"
    with pytest.raises(ValueError, match=msg):
        dr.check_size(4097)
    rng = np.random.default_rng(0)
    for call in (
        lambda: sy.generate("nih", tmp_path / "big", n=1, size=100_000),
        lambda: sy.render_chest(one_hot("Nodule"), size=100_000, rng=rng),
        lambda: sy.render_limb("HAND", abnormal=True, size=100_000, rng=rng),
    ):
        with pytest.raises(ValueError, match=re.escape("size=100000 is above the limit of 4096 pixels")):
            call()
    assert not (tmp_path / "big").exists()  # refused before anything is created
    with pytest.raises(SystemExit) as exc:
        sy.main(["--layout", "nih", "--n", "1", "--size", "100000", "--out", str(tmp_path / "big")])
    assert exc.value.code == 2 and "size=100000 is above the limit of 4096 pixels" in capsys.readouterr().err
