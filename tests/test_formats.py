"""Tests for dadam.formats: the dataset readers, on the real sample files and on small hand-written bad files."""

import codecs
import csv
import inspect
import itertools
import json
import logging
import pathlib
import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import dadam.formats
from dadam.formats import (
    BOX_COLUMNS,
    LABEL_FORMATS,
    ReadReport,
    labels_tensor,
    read_chestx_det,
    read_cxr_lt,
    read_label_table,
    read_mimic,
    read_mura,
    read_nih_boxes,
    read_nih_labels,
    read_vindr,
)
from dadam.formats.vindr import box_clusters
from dadam.labels import (
    CHESTX_DET_TO_CXR_LT,
    CHEXPERT_TO_CXR_LT,
    CXR_LT_CLASSES,
    NIH_TO_CXR_LT,
)

NIH_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
BOXED_NIH = {
    "00001369_000", "00001933_000", "00002578_000", "00004296_000", "00008386_000", "00009745_000",
    "00013125_000", "00013911_000", "00015649_000", "00022084_000", "00022178_000", "00026911_000",
}  # fmt: skip
VINDR_HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"


def _report(df: pd.DataFrame) -> ReadReport:
    report = df.attrs["report"]
    assert isinstance(report, ReadReport)
    assert report.rows_kept == len(df)
    return report


def _write(path, text: str):
    path.write_text(text.strip("\n") + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# NIH boxes
# ---------------------------------------------------------------------------------------------------------------------


def test_nih_boxes_real_file(shared_data):
    path = shared_data / "nih14" / "BBox_List_2017.csv"
    df = read_nih_boxes(path, image_root=shared_data / "nih14" / "images")
    report = _report(df)
    assert list(df.columns) == list(BOX_COLUMNS)
    assert len(df) == 12 and {i.removesuffix(".png") for i in df["image_id"]} == BOXED_NIH
    assert report.class_counts == {
        "Atelectasis": 1, "Cardiomegaly": 3, "Infiltration": 1, "Mass": 1, "Nodule": 3, "Pneumonia": 3,
    }  # fmt: skip
    assert dict(Counter(df["label"])) == report.class_counts
    assert report.rows_read == 12 and report.skipped == {} and report.unknown_labels == {}
    assert df.loc[df["label"] == "Infiltration", "source_label"].tolist() == ["Infiltrate"]
    # Reference: the CSV's own floats, x,y,w,h -> xyxy.
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert len(rows) == 12
    for (image_id, label, x, y, w, h), (_, r) in zip(rows, df.iterrows(), strict=True):
        assert r["image_id"] == image_id and r["source_label"] == label
        assert (r["x0"], r["y0"]) == (float(x), float(y))
        assert (r["x1"], r["y1"]) == (float(x) + float(w), float(y) + float(h))
    assert (df["width"] == 1024).all() and (df["height"] == 1024).all()
    assert (df["source"] == "nih").all() and (df["rater"] == "").all()
    # Without image_root: same boxes, sizes from image_size.
    plain = read_nih_boxes(path)
    pd.testing.assert_frame_equal(plain, df)
    assert "12 rows, kept 12" in report.summary() and "Nodule: 3" in report.summary()


def test_nih_boxes_resized_and_missing_images(shared_data, tmp_path):
    src = shared_data / "nih14"
    (tmp_path / "images").mkdir()
    with Image.open(src / "images" / "00009745_000.png") as im:
        im.resize((512, 512)).save(tmp_path / "images" / "00009745_000.png")
    shutil.copy(src / "images" / "00013125_000.png", tmp_path / "images")
    full = read_nih_boxes(src / "BBox_List_2017.csv").set_index("image_id")
    df = read_nih_boxes(src / "BBox_List_2017.csv", image_root=tmp_path / "images").set_index("image_id")
    report = df.attrs["report"]
    assert sorted(df.index) == ["00009745_000.png", "00013125_000.png"]
    assert report.skipped == {"missing_image": 10} and report.notes["rescaled_to_file_size"] == 1
    half = df.loc["00009745_000.png"]
    assert (half["width"], half["height"]) == (512, 512)
    for c in ("x0", "y0", "x1", "y1"):
        assert half[c] == pytest.approx(full.loc["00009745_000.png", c] / 2)
        assert df.loc["00013125_000.png", c] == full.loc["00013125_000.png", c]


def test_nih_boxes_bad_rows_are_counted(tmp_path):
    path = _write(
        tmp_path / "boxes.csv",
        f"""
{NIH_HEADER}
a.png,Nodule,10,20,30,40
b.png,Mass,10,20,0,40
c.png,Mass,10,20,-5,40
d.png,Atelectasis,1100,20,30,40
e.png,Atelectasis,10,,30,40
f.png,Atelectasis,10,nan,30,40
g.png,Atelectasis,10,abc,30,40
h.png,Foo,10,20,30,40
i.png,Foo,10,20,30,40
a.png,Nodule,10,20,30,40
j.png,Effusion,1000,1000,24.5,24.5
k.png,Effusion,1000,1000,30,30
l.png,Nodule,10,20,30
m.png,Hernia,1,2,3,4
""",
    )
    df = read_nih_boxes(path, mapping={**NIH_TO_CXR_LT, "Hernia": None})
    report = _report(df)
    assert report.rows_read == 14
    assert report.skipped == {
        "zero_area": 1, "negative_area": 1, "outside_image": 2, "nan_coordinate": 2, "non_numeric_coordinate": 1,
        "unknown_label": 2, "duplicate": 1, "malformed_row": 1, "excluded_label": 1,
    }  # fmt: skip
    assert report.rows_read == report.rows_kept + sum(report.skipped.values())
    assert report.unknown_labels == {"Foo": 2} and report.excluded_labels == {"Hernia": 1}
    assert df["image_id"].tolist() == ["a.png", "j.png"]
    assert report.class_counts == {"Nodule": 1, "Pleural Effusion": 1}
    # A 0.5 px overshoot is clipped to the border and counted.
    j = df.set_index("image_id").loc["j.png"]
    assert (j["x1"], j["y1"]) == (1024.0, 1024.0) and report.notes["clipped_to_image"] == 1
    for reason in ("zero_area", "unknown labels: Foo: 2", "excluded labels: Hernia: 1"):
        assert reason in report.summary()


def test_nih_boxes_header_and_missing_file(tmp_path, caplog):
    bad = _write(tmp_path / "wrong.csv", "Image,Label,x,y,w,h\na.png,Nodule,1,2,3,4")
    with pytest.raises(ValueError, match=r"wrong.csv: header 'Image,Label,x,y,w,h' is not NIH's BBox_List_2017.csv"):
        read_nih_boxes(bad)
    with pytest.raises(ValueError, match=r"expected 'Image Index,Finding Label,Bbox \[x,y,w,h\],,,'"):
        read_nih_boxes(bad)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_nih_boxes(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"mapping\['Mass'\] = 'Tumour' is not a CXR-LT class"):
        read_nih_boxes(_write(tmp_path / "ok.csv", NIH_HEADER), mapping={"Mass": "Tumour"})
    with pytest.raises(ValueError, match=r"image_size must be a \(H, W\) pair of positive ints, got 1024"):
        read_nih_boxes(bad, image_size=1024)
    clean = _write(tmp_path / "clean.csv", "Image Index,Finding Label,x,y,w,h\na.png,Nodule,1,2,3,4")
    with caplog.at_level(logging.INFO, logger="dadam.formats"):
        df = read_nih_boxes(clean)
    assert len(df) == 1 and "read 1 rows, kept 1" in caplog.text
    empty = read_nih_boxes(tmp_path / "ok.csv")
    assert len(empty) == 0 and list(empty.columns) == list(BOX_COLUMNS)


# ---------------------------------------------------------------------------------------------------------------------
# NIH labels
# ---------------------------------------------------------------------------------------------------------------------


def test_nih_labels_real_file(shared_data):
    path = shared_data / "nih14" / "Data_Entry_2017_v2020.csv"
    df = read_nih_labels(path)
    report = _report(df)
    raw = pd.read_csv(path)
    assert len(df) == 32 == len(raw) and report.skipped == {} and report.unknown_labels == {}
    assert df["image_id"].tolist() == raw["Image Index"].tolist()
    assert df["path"].tolist() == ["images/" + i for i in raw["Image Index"]]
    assert (df["source"] == "nih").all()
    sets = [set(s.split("|")) for s in raw["Finding Labels"]]
    annotated = {v for v in NIH_TO_CXR_LT.values() if v is not None}
    for cls in CXR_LT_CLASSES:
        if cls in annotated:
            sources = {k for k, v in NIH_TO_CXR_LT.items() if v == cls}
            ref = [1.0 if s & sources else 0.0 for s in sets]
            assert df[cls].tolist() == ref, cls
        else:
            assert df[cls].isna().all(), cls  # NIH does not annotate it: unknown, also on No Finding images
    assert df["Pleural Effusion"].tolist() == [float("Effusion" in s) for s in sets]
    assert df["Pleural Thickening"].tolist() == [float("Pleural_Thickening" in s) for s in sets]
    assert df["No Finding"].sum() == 12
    counts = Counter(NIH_TO_CXR_LT[n] for s in sets for n in s)
    assert report.class_counts == dict(counts)
    assert df["patient_id"].tolist() == raw["Patient ID"].tolist()
    assert df["view"].tolist() == raw["View Position"].tolist()
    assert set(df["view"]) == {"PA", "AP"}


def test_nih_labels_bad_rows_and_header(tmp_path):
    head = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position"
    path = _write(
        tmp_path / "entry.csv",
        f"""
{head}
a.png,Effusion|Foo,0,1,50,M,PA
b.png,,0,2,50,M,PA
a.png,Mass,0,1,50,M,PA
c.png,No Finding,0,3,50,F,AP
""",
    )
    df = read_nih_labels(path)
    report = _report(df)
    assert report.skipped == {"missing_label": 1, "duplicate": 1}
    assert report.unknown_labels == {"Foo": 1}
    assert df["image_id"].tolist() == ["a.png", "c.png"]
    assert df.loc[0, "Pleural Effusion"] == 1.0 and df.loc[0, "Mass"] == 0.0 and df.loc[0, "No Finding"] == 0.0
    assert df.loc[1, "No Finding"] == 1.0 and np.isnan(df.loc[1, "Support Devices"])
    assert report.class_counts == {"Pleural Effusion": 1, "No Finding": 1}
    bad = _write(tmp_path / "bad.csv", "Image Index,Labels\na.png,Mass")
    with pytest.raises(
        ValueError, match=r"bad.csv: not a NIH Data_Entry_2017 file: .*lacks columns \['Finding Labels'"
    ):
        read_nih_labels(bad)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_nih_labels(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------------------------------
# ChestX-Det
# ---------------------------------------------------------------------------------------------------------------------


def test_chestx_det_real_sample(shared_data):
    path = shared_data / "chestx_det" / "ChestX_Det_train_sample.json"
    entries = json.loads(path.read_text())
    df = read_chestx_det(path)
    report = _report(df)
    assert report.notes["entries"] == 25 and report.notes["entries_without_boxes"] == 5
    assert sum(1 for e in entries if e["boxes"]) == 20
    ref = [(e["file_name"], s, b) for e in entries for s, b in zip(e["syms"], e["boxes"], strict=True)]
    assert report.rows_read == len(ref) == 65
    kept = [r for r in ref if CHESTX_DET_TO_CXR_LT[r[1]] is not None]
    assert report.excluded_labels == {"Calcification": 1} and report.skipped == {"excluded_label": 1}
    assert len(df) == len(kept)
    assert df["image_id"].tolist() == [r[0] for r in kept]
    assert df["source_label"].tolist() == [r[1] for r in kept]
    assert df[["x0", "y0", "x1", "y1"]].to_numpy().tolist() == [[float(v) for v in r[2]] for r in kept]
    assert df["label"].tolist() == [CHESTX_DET_TO_CXR_LT[r[1]] for r in kept]
    assert report.class_counts == dict(Counter(CHESTX_DET_TO_CXR_LT[r[1]] for r in kept))
    assert (df["width"] == 1024).all() and (df["source"] == "chestx_det").all()
    assert all(isinstance(p, list) and len(p) > 2 for p in df["polygon"])
    # Overriding the documented exclusion.
    df2 = read_chestx_det(path, mapping={**CHESTX_DET_TO_CXR_LT, "Calcification": "Calcification of the Aorta"})
    assert len(df2) == 65 and df2.attrs["report"].class_counts["Calcification of the Aorta"] == 1


def test_chestx_det_bad_entries(tmp_path):
    entries = [
        {"file_name": "1.png", "syms": ["Nodule", "Mass"], "boxes": [[1, 2, 30, 40], [5, 5, 5, 9]]},
        {"file_name": "2.png", "syms": ["Nodule"], "boxes": []},
        {"file_name": "3.png", "syms": ["Nodule"], "boxes": [[1, 2, 3]]},
        {"syms": [], "boxes": []},
        {"file_name": "4.png", "syms": ["Lump", "Fracture"], "boxes": [[1, 2, 3, 4], [1000, 1000, 1030, 1030]]},
        {"file_name": "5.png", "syms": ["Effusion"], "boxes": [[10, 10, 2000, 20]]},
    ]
    path = tmp_path / "cd.json"
    path.write_text(json.dumps(entries))
    df = read_chestx_det(path, image_size=(1024, 1024))
    report = _report(df)
    assert report.skipped == {
        "zero_area": 1, "malformed_entry": 2, "malformed_box": 1, "unknown_label": 1, "outside_image": 2,
    }  # fmt: skip
    assert report.unknown_labels == {"Lump": 1}
    assert df["image_id"].tolist() == ["1.png"] and df["polygon"].tolist() == [None]
    (tmp_path / "obj.json").write_text(json.dumps({"file_name": "1.png"}))
    with pytest.raises(ValueError, match=r"obj.json: top level is dict; expected a ChestX-Det list"):
        read_chestx_det(tmp_path / "obj.json")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(ValueError, match="bad.json: not a JSON file"):
        read_chestx_det(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------------------------------
# VinDr-CXR
# ---------------------------------------------------------------------------------------------------------------------


def _vindr_csv(tmp_path, rows: list[str]):
    return _write(tmp_path / "train.csv", "\n".join([VINDR_HEADER, *rows]))


def test_vindr_all_raters_no_finding_and_bad_rows(tmp_path):
    path = _vindr_csv(
        tmp_path,
        [
            "img1,Cardiomegaly,3,R8,100,200,300,260",
            "img1,Cardiomegaly,3,R9,102,198,305,262",
            "img1,Nodule/Mass,8,R10,10,10,40,40",
            "img2,No finding,14,R8,,,,",
            "img2,No finding,14,R9,,,,",
            "img2,No finding,14,R10,,,,",
            "img3,Other lesion,9,R8,1,1,5,5",
            "img3,Weird,99,R8,1,1,5,5",
            "img3,Atelectasis,1,R8,5,5,5,9",
            "img3,Atelectasis,1,R9,,5,5,9",
            "img1,Cardiomegaly,3,R8,100,200,300,260",
        ],
    )
    df = read_vindr(path)
    report = _report(df)
    assert list(df.columns) == list(BOX_COLUMNS)
    assert df["image_id"].tolist() == ["img1.dicom"] * 3
    assert df["rater"].tolist() == ["R8", "R9", "R10"]
    assert df["label"].tolist() == ["Cardiomegaly", "Cardiomegaly", "Lung Lesion"]
    assert df["width"].isna().all() and df["height"].isna().all()
    assert report.notes["no_finding_rows"] == 3 and report.notes["no_finding_images"] == 1
    assert report.skipped == {
        "excluded_label": 1,
        "unknown_label": 1,
        "zero_area": 1,
        "nan_coordinate": 1,
        "duplicate": 1,
    }
    assert report.rows_read == 11 == report.rows_kept + sum(report.skipped.values()) + report.notes["no_finding_rows"]
    assert report.class_counts == {"Cardiomegaly": 2, "Lung Lesion": 1}
    assert report.excluded_labels == {"Other lesion": 1} and report.unknown_labels == {"Weird": 1}


def test_vindr_union_and_majority(tmp_path):
    path = _vindr_csv(
        tmp_path,
        [
            # three raters agree on a heart box
            "a,Cardiomegaly,3,R1,100,100,200,200",
            "a,Cardiomegaly,3,R2,110,100,210,200",
            "a,Cardiomegaly,3,R3,100,110,200,210",
            # one rater alone: dropped by majority, kept by union
            "a,Nodule/Mass,8,R1,500,500,520,520",
            # two raters, little overlap (IoU 1/7 < 0.4): two clusters of one rater, both dropped by majority
            "a,Pleural effusion,10,R1,0,0,100,100",
            "a,Pleural effusion,10,R2,50,0,150,100",
            # ILD and Pulmonary fibrosis are both Fibrosis: fused across source names
            "b,ILD,5,R4,10,10,50,50",
            "b,Pulmonary fibrosis,13,R5,10,10,50,52",
        ],
    )
    allb = read_vindr(path)
    assert len(allb) == 8
    union = read_vindr(path, raters="union").sort_values(["image_id", "label"]).reset_index(drop=True)
    assert union[["image_id", "label", "x0", "y0", "x1", "y1", "rater"]].values.tolist() == [
        ["a.dicom", "Cardiomegaly", 100.0, 100.0, 210.0, 210.0, "R1,R2,R3"],
        ["a.dicom", "Lung Lesion", 500.0, 500.0, 520.0, 520.0, "R1"],
        ["a.dicom", "Pleural Effusion", 0.0, 0.0, 150.0, 100.0, "R1,R2"],
        ["b.dicom", "Fibrosis", 10.0, 10.0, 50.0, 52.0, "R4,R5"],
    ]
    assert union.loc[3, "source_label"] == "ILD|Pulmonary fibrosis"
    maj = read_vindr(path, raters="majority", iou=0.4).sort_values(["image_id", "label"]).reset_index(drop=True)
    assert maj[["image_id", "label", "rater"]].values.tolist() == [
        ["a.dicom", "Cardiomegaly", "R1,R2,R3"],
        ["b.dicom", "Fibrosis", "R4,R5"],
    ]
    assert maj.loc[0, ["x0", "y0", "x1", "y1"]].tolist() == pytest.approx([310 / 3, 310 / 3, 610 / 3, 610 / 3])
    report = _report(maj)
    assert report.notes["clusters_without_majority"] == 3 and report.notes["boxes_before_fusion"] == 8
    assert report.class_counts == {"Cardiomegaly": 1, "Fibrosis": 1}
    # A strict threshold splits the heart cluster (pairwise IoU ~0.82 and ~0.68); the fibrosis pair has IoU 0.95.
    assert read_vindr(path, raters="majority", iou=0.9)["label"].tolist() == ["Fibrosis"]
    with pytest.raises(ValueError, match="raters must be 'all', 'union' or 'majority', got 'any'"):
        read_vindr(path, raters="any")
    with pytest.raises(ValueError, match=r"iou must be in \(0, 1\], got 0"):
        read_vindr(path, raters="majority", iou=0)


def _majority_reference(boxes, iou_thr):
    """Slow single-linkage clustering with a plain-Python IoU; returns sorted (rounded) fused boxes."""
    ids = _clusters_reference([box for _, box in boxes], lambda v: v >= iou_thr)
    clusters = {}
    for cluster, member in zip(ids, boxes, strict=True):
        clusters.setdefault(cluster, []).append(member)
    out = []
    for members in clusters.values():
        if len({r for r, _ in members}) >= 2:
            out.append(tuple(round(float(np.mean([b[k] for _, b in members])), 6) for k in range(4)))
    return sorted(out)


def test_vindr_majority_matches_slow_reference(tmp_path):
    rng = np.random.default_rng(5)
    rows, boxes = [], []
    for _ in range(40):
        x, y = rng.uniform(0, 300, 2)
        w, h = rng.uniform(20, 80, 2)
        rater = f"R{rng.integers(1, 4)}"
        rows.append(f"img,Cardiomegaly,3,{rater},{x:.3f},{y:.3f},{x + w:.3f},{y + h:.3f}")
    df_all = read_vindr(_vindr_csv(tmp_path, rows))
    boxes = [(r["rater"], [r["x0"], r["y0"], r["x1"], r["y1"]]) for _, r in df_all.iterrows()]
    maj = read_vindr(tmp_path / "train.csv", raters="majority", iou=0.3)
    got = sorted(tuple(round(float(v), 6) for v in row) for row in maj[["x0", "y0", "x1", "y1"]].to_numpy())
    assert got == _majority_reference(boxes, 0.3)


def _clusters_reference(boxes, linked):
    """Slow single-linkage clustering: union-find over every pair, plain-Python IoU; cluster ids numbered in the order
    of each cluster's first box."""

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    parent = list(range(len(boxes)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in itertools.combinations(range(len(boxes)), 2):
        if linked(iou(boxes[i], boxes[j])):
            parent[find(i)] = find(j)
    ids: dict[int, int] = {}
    return [ids.setdefault(find(i), len(ids)) for i in range(len(boxes))]


@pytest.mark.parametrize("mode", ["union", "majority"])
def test_box_clusters_match_slow_reference(mode):
    rng = np.random.default_rng(11)
    sizes = set()
    for _ in range(300):
        n = int(rng.integers(1, 30))
        xy = rng.integers(0, 30, (n, 2)) * 5.0  # a coarse grid: touching, nested and identical boxes all occur
        boxes = np.concatenate([xy, xy + rng.integers(1, 12, (n, 2)) * 5.0], axis=1)
        thr = float(rng.choice([0.1, 0.3, 0.5, 1.0]))
        got = box_clusters(torch.as_tensor(boxes), mode=mode, iou=thr)
        ref = _clusters_reference(boxes.tolist(), (lambda v: v > 0.0) if mode == "union" else (lambda v, t=thr: v >= t))
        assert got.tolist() == ref, (boxes.tolist(), thr)
        sizes.add(max(Counter(ref).values()))
    assert max(sizes) > 3 and 1 in sizes  # the draws make both lone boxes and clusters of several


def test_vindr_union_matches_slow_reference(tmp_path):
    rng = np.random.default_rng(3)
    classes = {"Cardiomegaly": "Cardiomegaly", "Atelectasis": "Atelectasis", "ILD": "Fibrosis"}
    rows, boxes = [], {}
    for k in range(60):
        image, name = f"img{rng.integers(0, 3)}", str(rng.choice(list(classes)))
        x, y = rng.integers(0, 60, 2) * 5
        w, h = rng.integers(1, 10, 2) * 5
        rater = f"R{k}"
        rows.append(f"{image},{name},0,{rater},{x},{y},{x + w},{y + h}")
        boxes.setdefault((image + ".dicom", classes[name]), []).append(
            (rater, [float(v) for v in (x, y, x + w, y + h)])
        )
    union = read_vindr(_vindr_csv(tmp_path, rows), raters="union")
    ref = []
    for (image, label), members in boxes.items():
        ids = _clusters_reference([b for _, b in members], lambda v: v > 0.0)
        for c in range(max(ids) + 1):
            m = [members[i] for i in range(len(members)) if ids[i] == c]
            box = [min(b[0] for _, b in m), min(b[1] for _, b in m), max(b[2] for _, b in m), max(b[3] for _, b in m)]
            ref.append((image, label, *box, ",".join(sorted(r for r, _ in m))))
    got = [tuple(r) for r in union[["image_id", "label", "x0", "y0", "x1", "y1", "rater"]].itertuples(index=False)]
    assert sorted(got) == sorted(ref) and len(ref) < len(rows)


def test_vindr_image_root_names_sizes_and_outside(tmp_path, shared_data):
    root = tmp_path / "images"
    root.mkdir()
    shutil.copy(shared_data / "dicom" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", root / "d1.dicom")
    Image.fromarray(np.zeros((80, 100), np.uint8)).save(root / "p1.png")
    Image.fromarray(np.zeros((60, 50), np.uint8)).save(root / "j1.jpg")
    path = _vindr_csv(
        tmp_path,
        [
            "d1,Cardiomegaly,3,R1,100,100,900,900",
            "p1,Atelectasis,1,R1,10,10,90,70",
            "p1,Atelectasis,1,R2,10,10,150,70",
            "j1,Pneumothorax,12,R1,0,0,50,60",
            "gone,Pneumothorax,12,R1,0,0,50,60",
            "gone,No finding,14,R2,,,,",
        ],
    )
    df = read_vindr(path, image_root=root)
    report = _report(df)
    assert df[["image_id", "width", "height"]].values.tolist() == [
        ["d1.dicom", 1024.0, 1024.0],
        ["p1.png", 100.0, 80.0],
        ["j1.jpg", 50.0, 60.0],
    ]
    assert report.skipped == {"outside_image": 1, "missing_image": 1}
    assert report.notes["no_finding_rows"] == 1


def test_vindr_header(tmp_path):
    bad = _write(tmp_path / "labels.csv", "image_id,class_name,x_min,y_min\na,Nodule/Mass,1,2")
    with pytest.raises(ValueError, match=r"labels.csv: not a VinDr-CXR annotation file: .*lacks columns \['rad_id'"):
        read_vindr(bad)
    with pytest.raises(FileNotFoundError, match="train.csv"):
        read_vindr(tmp_path / "train.csv")
    ok = _vindr_csv(tmp_path, ["a,Cardiomegaly,3,R1,1,1,5,5"])
    with pytest.raises(FileNotFoundError, match=r"VinDr-CXR image folder \(image_root\) not found: .*no_dir"):
        read_vindr(ok, image_root=tmp_path / "no_dir")


# ---------------------------------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG and CXR-LT
# ---------------------------------------------------------------------------------------------------------------------

CHEXPERT = list(CHEXPERT_TO_CXR_LT)


def _chexpert_csv(tmp_path, rows: list[dict]):
    lines = [",".join(["subject_id", "study_id", *CHEXPERT])]
    for r in rows:
        lines.append(",".join([str(r["subject_id"]), str(r["study_id"]), *(r.get(c, "") for c in CHEXPERT)]))
    return _write(tmp_path / "mimic-cxr-2.0.0-chexpert.csv", "\n".join(lines))


@pytest.mark.parametrize(("uncertain", "blank"), [("zero", "zero"), ("one", "zero"), ("nan", "nan"), ("one", "nan")])
def test_mimic_policies_per_study(tmp_path, uncertain, blank):
    path = _chexpert_csv(
        tmp_path,
        [
            {"subject_id": 10000032, "study_id": 50414267, "Edema": "1.0", "Atelectasis": "-1.0", "Pneumonia": "0.0"},
            {"subject_id": 10000032, "study_id": 53189527, "No Finding": "1.0"},
            {"subject_id": 10000033, "study_id": 50000001, "Edema": "2.0"},
            {"subject_id": 10000032, "study_id": 50414267, "Edema": "0.0"},
        ],
    )
    df = read_mimic(path, uncertain=uncertain, blank=blank)
    report = _report(df)
    assert report.skipped == {"bad_value": 1, "duplicate": 1}
    assert df["image_id"].tolist() == ["s50414267", "s53189527"]
    assert df["path"].tolist() == ["files/p10/p10000032/s50414267", "files/p10/p10000032/s53189527"]
    u = {"zero": 0.0, "one": 1.0, "nan": np.nan}[uncertain]
    b = {"zero": 0.0, "nan": np.nan}[blank]
    np.testing.assert_equal(df.loc[0, "Edema"], 1.0)
    np.testing.assert_equal(df.loc[0, "Atelectasis"], u)
    np.testing.assert_equal(df.loc[0, "Pneumonia"], 0.0)
    np.testing.assert_equal(df.loc[0, "Cardiomegaly"], b)
    np.testing.assert_equal(df.loc[1, "No Finding"], 1.0)
    for cls in CXR_LT_CLASSES:
        if cls not in CHEXPERT_TO_CXR_LT:
            assert df[cls].isna().all(), cls  # CheXpert does not label it
    expected = {"Edema": 1, "No Finding": 1} | ({"Atelectasis": 1} if uncertain == "one" else {})
    assert report.class_counts == expected
    assert (df["source"] == "mimic").all() and df["subject_id"].tolist() == [10000032, 10000032]


def test_mimic_with_metadata_one_row_per_image(tmp_path):
    path = _chexpert_csv(
        tmp_path,
        [
            {"subject_id": 10000032, "study_id": 50414267, "Edema": "1.0"},
            {"subject_id": 12345678, "study_id": 59999999, "Pneumothorax": "1.0"},
        ],
    )
    meta = _write(
        tmp_path / "meta.csv",
        """
dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns
02aa804e-bde0afdd,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544
174413ec-4ec4c1f7,10000032,50414267,CHEST (PA AND LAT),LATERAL,3056,2544
ffff0000-00000000,19999999,51111111,CHEST (PORTABLE AP),AP,3056,2544
""",
    )
    df = read_mimic(path, meta)
    report = _report(df)
    assert df["image_id"].tolist() == ["02aa804e-bde0afdd", "174413ec-4ec4c1f7"]
    assert df["path"].tolist() == [
        "files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg",
        "files/p10/p10000032/s50414267/174413ec-4ec4c1f7.jpg",
    ]
    assert df["view"].tolist() == ["PA", "LATERAL"] and (df["Edema"] == 1.0).all()
    assert report.notes["images_without_labels"] == 1 and report.notes["studies_without_images"] == 1
    assert report.class_counts == {"Edema": 2}
    bad_meta = _write(tmp_path / "meta2.csv", "dicom_id,subject_id,study_id\na,1,2")
    with pytest.raises(ValueError, match=r"meta2.csv: not a MIMIC-CXR metadata file: .*\['ViewPosition'\]"):
        read_mimic(path, bad_meta)
    bad = _write(tmp_path / "chex.csv", "subject_id,study_id,Edema\n1,2,1.0")
    with pytest.raises(
        ValueError, match=r"chex.csv: not a MIMIC-CXR CheXpert label file: .*lacks columns \['Atelectasis'"
    ):
        read_mimic(bad)
    with pytest.raises(ValueError, match="uncertain must be 'zero', 'one' or 'nan', got 'ignore'"):
        read_mimic(path, uncertain="ignore")
    with pytest.raises(ValueError, match="blank must be 'zero' or 'nan', got 'one'"):
        read_mimic(path, blank="one")


def _cxr_lt_csv(tmp_path, rows: list[tuple], classes=CXR_LT_CLASSES):
    lines = [",".join(["dicom_id", "subject_id", "study_id", "ViewPosition", "path", *classes])]
    for dicom, positives, *bad in rows:
        values = ["1" if c in positives else "0" for c in classes]
        if bad:
            values[0] = bad[0]
        sid = "10000032"
        lines.append(",".join([dicom, sid, "50414267", "PA", f"files/p10/p{sid}/s50414267/{dicom}.jpg", *values]))
    return _write(tmp_path / "train.csv", "\n".join(lines))


def test_cxr_lt(tmp_path):
    path = _cxr_lt_csv(
        tmp_path,
        [
            ("d1", {"Pneumonia", "Support Devices"}),
            ("d2", {"No Finding"}),
            ("d3", set(), "0.5"),
            ("d1", {"Edema"}),
            ("d4", {"Tortuous Aorta", "Pneumonia"}),
        ],
    )
    df = read_cxr_lt(path)
    report = _report(df)
    assert df["image_id"].tolist() == ["d1", "d2", "d4"]
    assert list(df.columns[2:28]) == list(CXR_LT_CLASSES)
    assert df["path"][0] == "files/p10/p10000032/s50414267/d1.jpg"
    assert report.skipped == {"bad_value": 1, "duplicate": 1}
    assert report.class_counts == {"Pneumonia": 2, "Support Devices": 1, "No Finding": 1, "Tortuous Aorta": 1}
    assert df[list(CXR_LT_CLASSES)].isin([0.0, 1.0]).all().all()
    assert df["view"].tolist() == ["PA"] * 3 and df["subject_id"].tolist() == [10000032] * 3
    classes_2024 = [("Normal" if c == "No Finding" else c) for c in CXR_LT_CLASSES]
    bad = _cxr_lt_csv(tmp_path, [("d1", set())], classes=classes_2024)
    with pytest.raises(ValueError, match=r"train.csv: not a CXR-LT 2023 train/development file: .*\['No Finding'\]"):
        read_cxr_lt(bad)


def test_cxr_lt_notes_odd_label_sets_and_keeps_them(tmp_path):
    rows = [
        ("d1", {"Pneumonia", "Support Devices"}),
        ("d2", {"No Finding"}),
        ("d3", set()),
        ("d4", {"No Finding", "Support Devices"}),
        ("d5", {"No Finding", "Edema"}),
        ("d6", {"No Finding", "Edema", "Fracture"}),
        ("d7", set(), "0.5"),  # skipped: not noted
        ("d3", set()),  # skipped as a duplicate: not noted
    ]
    df = read_cxr_lt(_cxr_lt_csv(tmp_path, rows))
    report = _report(df)
    kept = [(d, pos) for d, pos, *bad in rows[:6]]
    assert df["image_id"].tolist() == [d for d, _ in kept]
    for d, pos in kept:
        row = df.set_index("image_id").loc[d, list(CXR_LT_CLASSES)]
        assert row.to_dict() == {c: float(c in pos) for c in CXR_LT_CLASSES}, d
    all_zero = sum(not pos for _, pos in kept)
    odd = sum("No Finding" in pos and bool(pos - {"No Finding", "Support Devices"}) for _, pos in kept)
    assert (all_zero, odd) == (1, 2)
    assert report.notes == {"all_zero_rows": all_zero, "no_finding_with_disease_rows": odd}
    assert report.skipped == {"bad_value": 1, "duplicate": 1}
    assert "all_zero_rows: 1" in report.summary() and "no_finding_with_disease_rows: 2" in report.summary()
    clean = read_cxr_lt(_cxr_lt_csv(tmp_path, [("d1", {"Edema"}), ("d2", {"No Finding", "Support Devices"})]))
    assert clean.attrs["report"].notes == {} and "\n  notes:" not in clean.attrs["report"].summary()


def test_repeated_columns_are_refused(tmp_path):
    edema = 5 + CXR_LT_CLASSES.index("Edema") + 1  # 1-based, after the 5 id columns
    for extra in ("Edema", " Edema"):
        path = _cxr_lt_csv(tmp_path, [("d1", {"Edema"})], classes=[*CXR_LT_CLASSES, extra])
        with pytest.raises(ValueError) as info:
            read_cxr_lt(path)
        assert str(info.value) == (
            f"{path}: the header repeats a column: 'Edema' at columns {edema}, 32; a CXR-LT 2023 train/development "
            "file has each column once: keep one copy of each"
        )
    head = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,Patient ID"
    nih = _write(tmp_path / "entry.csv", f"{head}\na.png,Mass,0,1,50,M,PA,2")
    with pytest.raises(
        ValueError, match=r"entry.csv: the header repeats a column: 'Patient ID' at columns 4, 8; a NIH"
    ):
        read_nih_labels(nih)
    chexpert = _write(
        tmp_path / "chexpert.csv", ",".join(["subject_id", "study_id", *CHEXPERT, "Edema", "subject_id"]) + "\n1,2"
    )
    with pytest.raises(ValueError, match=r"repeats a column: 'subject_id' at columns 1, 18; 'Edema' at columns 6, 17"):
        read_mimic(chexpert)
    table = _write(tmp_path / "labels.csv", ",".join(["image_id", "path", *CXR_LT_CLASSES, "Mass"]) + "\na,a.png")
    with pytest.raises(ValueError, match=r"labels.csv: the header repeats a column: 'Mass' at columns 16, 29; a label"):
        read_label_table(table)
    vindr = _write(tmp_path / "vindr.csv", VINDR_HEADER + ",class_name\na,Edema,3,R1,1,1,5,5,Edema")
    with pytest.raises(ValueError, match=r"vindr.csv: the header repeats a column: 'class_name' at columns 2, 9"):
        read_vindr(vindr)


# ---------------------------------------------------------------------------------------------------------------------
# MURA
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "valid"])
def test_mura_real_files(shared_data, split):
    images = shared_data / "mura" / f"{split}_image_paths.csv"
    studies = shared_data / "mura" / f"{split}_labeled_studies.csv"
    df = read_mura(images, studies)
    report = _report(df)
    paths = images.read_text().split()
    labels = dict(line.rsplit(",", 1) for line in studies.read_text().split())
    assert df["path"].tolist() == paths and df["image_id"].tolist() == paths
    assert df["label"].tolist() == [int(labels[p.rsplit("/", 1)[0] + "/"]) for p in paths]
    assert df["label"].dtype == np.int64 and (df["split"] == split).all() and (df["source"] == "mura").all()
    assert set(df["body_part"]) == {"SHOULDER" if split == "train" else "WRIST"}
    assert (
        df["patient"].str.fullmatch(r"patient\d{5}").all()
        and df["study"].str.fullmatch(r"study\d_(positive|negative)").all()
    )
    assert report.skipped == {}
    assert report.class_counts == {
        k: v for k, v in (("abnormal", df["label"].sum()), ("normal", (df["label"] == 0).sum())) if v
    }


def test_mura_missing_study_bad_rows_and_header(shared_data, tmp_path):
    images = (shared_data / "mura" / "train_image_paths.csv").read_text().split()
    studies = (shared_data / "mura" / "train_labeled_studies.csv").read_text().split()
    dropped = studies[0].rsplit(",", 1)[0]
    n_dropped = sum(p.startswith(dropped) for p in images)
    img = _write(tmp_path / "img.csv", "\n".join([*images, images[-1], "not/a/mura/path.png"]))
    stu = _write(tmp_path / "stu.csv", "\n".join([*studies[1:], "MURA-v1.1/train/XR_HAND/patient1/study1_negative/,7"]))
    df = read_mura(img, stu)
    report = _report(df)
    assert report.skipped == {"missing_study": n_dropped, "duplicate": 1, "bad_path": 1}
    assert report.notes["study_rows_bad"] == 1
    assert len(df) == len(images) - n_dropped
    header = _write(tmp_path / "h.csv", "path\n" + "\n".join(images))
    with pytest.raises(ValueError, match=r"h.csv: first line 'path' is not a MURA row; expected a header-less CSV"):
        read_mura(header, stu)
    with pytest.raises(ValueError, match="stu.csv: first line .* is not a MURA row"):
        read_mura(stu, img)  # files swapped
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_mura(img, tmp_path / "nope.csv")


def test_mura_conflicting_study_labels_are_skipped_whatever_the_order(shared_data, tmp_path):
    images = (shared_data / "mura" / "train_image_paths.csv").read_text().split()
    studies = (shared_data / "mura" / "train_labeled_studies.csv").read_text().split()
    torn, label = studies[0].rsplit(",", 1)
    n_torn = sum(p.startswith(torn) for p in images)
    assert 0 < n_torn < len(images)
    other = f"{torn},{1 - int(label)}"
    img = _write(tmp_path / "img.csv", "\n".join(images))
    tables = []
    for order in ([other, *studies, studies[1]], [*studies, studies[1], other]):
        df = read_mura(img, _write(tmp_path / "stu.csv", "\n".join(order)))
        report = _report(df)
        assert report.skipped == {"conflicting_label": n_torn}
        assert report.notes["study_rows_conflicting"] == 2 and report.notes["study_rows_duplicate"] == 1
        assert report.rows_read == report.rows_kept + n_torn == len(images)
        assert not df["path"].str.startswith(torn).any()
        assert (
            "conflicting_label: " + str(n_torn) in report.summary() and "study_rows_conflicting: 2" in report.summary()
        )
        tables.append(df)
    pd.testing.assert_frame_equal(tables[0], tables[1])
    plain = read_mura(img, _write(tmp_path / "stu.csv", "\n".join(studies)))
    assert "study_rows_conflicting" not in plain.attrs["report"].notes and len(plain) == len(images)


# ---------------------------------------------------------------------------------------------------------------------
# Text encodings
# ---------------------------------------------------------------------------------------------------------------------

N_FILLER = 9000  # rows before the odd one: its byte lies beyond the first block pandas decodes
NIH_LABEL_HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position"


def _encoding_cases():
    """Reader -> (files to write: the first holds the name "café" on its last line, how to read them from their
    folder, where the name lands in the table)."""
    filler = range(N_FILLER)
    cxr_lt_head = ",".join(["dicom_id", "subject_id", "study_id", "ViewPosition", "path", *CXR_LT_CLASSES])
    zeros = ",".join(["0"] * 25 + ["1"])
    study = "MURA-v1.1/train/XR_HAND/patient00001/study1_positive/"
    table_head = ",".join(["image_id", "path", *CXR_LT_CLASSES])
    chexpert = ",".join(["subject_id", "study_id", *CHEXPERT]) + "\n10000032,50414267" + ",1.0" * len(CHEXPERT)
    last_id = lambda df: df["image_id"].iloc[-1]  # noqa: E731
    return {
        "nih_boxes": (
            {"boxes.csv": [NIH_HEADER, *(f"n{i}.png,Nodule,1,2,3,4" for i in filler), "café.png,Mass,1,2,3,4"]},
            lambda d, **kw: read_nih_boxes(d / "boxes.csv", **kw),
            last_id,
        ),
        "nih_labels": (
            {
                "entry.csv": [
                    NIH_LABEL_HEADER,
                    *(f"n{i}.png,Mass,0,1,50,M,PA" for i in filler),
                    "café.png,Mass,0,1,5,M,PA",
                ]
            },
            lambda d, **kw: read_nih_labels(d / "entry.csv", **kw),
            last_id,
        ),
        "vindr": (
            {
                "train.csv": [
                    VINDR_HEADER,
                    *(f"v{i},Cardiomegaly,3,R1,1,1,5,5" for i in filler),
                    "café,Edema,3,R1,1,1,5,5",
                ]
            },
            lambda d, **kw: read_vindr(d / "train.csv", **kw),
            last_id,
        ),
        "mimic_metadata": (
            {
                "meta.csv": [
                    "dicom_id,subject_id,study_id,ViewPosition",
                    *(f"m{i},10000032,50414267,PA" for i in filler),
                    "café,10000032,50414267,PA",
                ],
                "chexpert.csv": [chexpert],
            },
            lambda d, **kw: read_mimic(d / "chexpert.csv", d / "meta.csv", **kw),
            last_id,
        ),
        "cxr_lt": (
            {
                "cxr_lt.csv": [
                    cxr_lt_head,
                    *(f"d{i},1,2,PA,files/d{i}.jpg,{zeros}" for i in filler),
                    f"café,1,2,PA,f.jpg,{zeros}",
                ]
            },
            lambda d, **kw: read_cxr_lt(d / "cxr_lt.csv", **kw),
            last_id,
        ),
        "mura": (
            {
                "paths.csv": [*(f"{study}image{i}.png" for i in filler), f"{study}café.png"],
                "studies.csv": [f"{study},1"],
            },
            lambda d, **kw: read_mura(d / "paths.csv", d / "studies.csv", **kw),
            lambda df: df["path"].iloc[-1].rsplit("/", 1)[1].removesuffix(".png"),
        ),
        "label_table": (
            {"labels.csv": [table_head, *(f"t{i},t{i}.png,{zeros}" for i in filler), f"café,x.png,{zeros}"]},
            lambda d, **kw: read_label_table(d / "labels.csv", **kw),
            last_id,
        ),
    }


@pytest.mark.parametrize("case", list(_encoding_cases()))
def test_csv_readers_name_the_file_byte_and_encoding(tmp_path, case):
    files, read, odd_name = _encoding_cases()[case]

    def write(encode):
        for name, lines in files.items():
            (tmp_path / name).write_bytes(encode("\n".join(lines) + "\n"))

    path = tmp_path / next(iter(files))
    write(lambda text: text.encode("cp1252"))  # as Excel saves a CSV on Windows
    offset = path.read_bytes().index(b"\xe9")
    line = len(files[path.name])
    with pytest.raises(ValueError) as info:
        read(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a utf-8 text file: byte {offset} (line {line}) is 0xe9")
    assert message.endswith("re-save it as UTF-8, or pass encoding='cp1252' (or the encoding it was saved in)")
    df = read(tmp_path, encoding="cp1252")
    assert len(df) == N_FILLER + 1 and odd_name(df).startswith("café")
    write(lambda text: codecs.BOM_UTF8 + text.encode("utf-8"))  # UTF-8 with a byte-order mark
    assert odd_name(read(tmp_path)).startswith("café")
    write(lambda text: text.encode("utf-16"))
    with pytest.raises(ValueError, match=r"byte 0 \(line 1\) is 0xff: .*pass encoding='utf-16'"):
        read(tmp_path)
    assert odd_name(read(tmp_path, encoding="utf-16")).startswith("café")
    with pytest.raises(ValueError, match=r"encoding='utf-9' is not a known text encoding; use e.g. 'utf-8'"):
        read(tmp_path, encoding="utf-9")
    with pytest.raises(TypeError, match="encoding must be a str such as 'utf-8' or 'cp1252', got NoneType"):
        read(tmp_path, encoding=None)


def test_readers_take_one_encoding_keyword():
    readers = [read_nih_boxes, read_nih_labels, read_vindr, read_mimic, read_cxr_lt, read_mura, read_label_table]
    for reader in readers:
        param = inspect.signature(reader).parameters["encoding"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default == "utf-8", reader.__name__
    assert "encoding" not in inspect.signature(read_chestx_det).parameters  # JSON is UTF-8


def test_chestx_det_not_utf8(tmp_path):
    path = tmp_path / "cd.json"
    path.write_bytes(
        json.dumps([{"file_name": "café.png", "syms": [], "boxes": []}], ensure_ascii=False).encode("cp1252")
    )
    offset = path.read_bytes().index(b"\xe9")
    with pytest.raises(ValueError) as info:
        read_chestx_det(path)
    assert str(info.value) == (
        f"{path}: not a utf-8 text file: byte {offset} (line 1) is 0xe9: invalid continuation byte; re-save it as UTF-8"
    )
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes().decode("cp1252").encode("utf-8"))
    assert read_chestx_det(path).attrs["report"].notes["entries_without_boxes"] == 1


# ---------------------------------------------------------------------------------------------------------------------
# Label tables in the library's schema, and the package's public names
# ---------------------------------------------------------------------------------------------------------------------


def test_public_names_of_the_package():
    assert sorted(dadam.formats.__all__) == sorted(
        [
            "BORDER_TOLERANCE", "BOX_COLUMNS", "LABEL_FORMATS", "LUNG_BOX_COLUMNS", "ReadReport", "labels_tensor",
            "lung_boxes_tensor", "read_chestx_det", "read_cxr_lt", "read_label_table", "read_mimic", "read_mura",
            "read_nih_boxes", "read_nih_labels", "read_vindr",
        ]
    )  # fmt: skip
    for name in dadam.formats.__all__:
        assert getattr(dadam.formats, name) is not None, name
    assert dadam.formats.BORDER_TOLERANCE == 1.0 and LABEL_FORMATS == ("table", "nih", "cxr-lt")


def test_read_label_table_formats(tmp_path, shared_data):
    table = pd.DataFrame({"image_id": ["a.png", "b.png"], "path": ["x/a.png", "x/b.png"]})
    for j, c in enumerate(CXR_LT_CLASSES):
        table[c] = [float(j % 2), np.nan]
    table.to_csv(tmp_path / "labels.csv", index=False)
    got = read_label_table(tmp_path / "labels.csv")
    assert got["image_id"].tolist() == ["a.png", "b.png"] and got["path"].tolist() == ["x/a.png", "x/b.png"]
    y = labels_tensor(got)
    assert y.shape == (2, 26) and y.dtype == torch.float32
    assert y[0].tolist() == [float(j % 2) for j in range(26)] and torch.isnan(y[1]).all()
    nih = read_label_table(shared_data / "nih14" / "Data_Entry_2017_v2020.csv", fmt="nih")
    assert len(nih) == 32 and nih.attrs["report"].source == "nih"
    cxr_lt = read_label_table(_cxr_lt_csv(tmp_path, [("d1", {"Edema"})]), fmt="cxr-lt")
    assert cxr_lt["image_id"].tolist() == ["d1"] and labels_tensor(cxr_lt)[0, CXR_LT_CLASSES.index("Edema")] == 1.0
    with pytest.raises(ValueError, match=r"label format must be one of \('table', 'nih', 'cxr-lt'\), got 'csv'"):
        read_label_table(tmp_path / "labels.csv", fmt="csv")
    table.drop(columns=["path", "Hernia"]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match=r"short.csv: label table lacks columns \['path', 'Hernia'\]"):
        read_label_table(tmp_path / "short.csv")


def test_labels_tensor_columns_and_errors():
    table = pd.DataFrame({"Mass": [1, 0, None], "Edema": ["1", "0.0", ""], "Hernia": [0.0, 1.0, 0.0]})
    y = labels_tensor(table, class_names=["Hernia", "Mass"])
    assert y.shape == (3, 2) and y[:, 0].tolist() == [0.0, 1.0, 0.0] and y[:2, 1].tolist() == [1.0, 0.0]
    assert torch.isnan(y[2, 1])
    with pytest.raises(ValueError, match=r"label table is missing class columns \['Atelectasis'"):
        labels_tensor(table)
    with pytest.raises(ValueError, match=r"row 2 \(index 2\), column 'Edema': '' is not a number \(1 such cells\)"):
        labels_tensor(table, class_names=["Edema"])


# ---------------------------------------------------------------------------------------------------------------------
# Phantom datasets (dadam.synthetic), read back with every reader
# ---------------------------------------------------------------------------------------------------------------------


def _generate(layout, out, n, size):
    synthetic = pytest.importorskip("dadam.synthetic")
    if not hasattr(synthetic, "generate"):
        pytest.skip("dadam.synthetic has no generate() yet")
    params = inspect.signature(synthetic.generate).parameters
    extra = {k: v for k, v in (("progress", False), ("workers", 1)) if k in params}
    root = synthetic.generate(layout, out, n=n, size=size, seed=0, **extra)
    return out if root is None else root


def _header(path):
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def _check_boxes(df, *, images_root=None):
    report = _report(df)
    assert len(df) > 0 and report.unknown_labels == {} and set(df["label"]) <= set(CXR_LT_CLASSES)
    assert report.skipped.get("outside_image", 0) == 0 and report.skipped.get("zero_area", 0) == 0
    assert ((df["x1"] > df["x0"]) & (df["y1"] > df["y0"])).all()
    if images_root is not None:
        assert all((images_root / i).is_file() for i in df["image_id"])


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["nih", "cxr-lt", "chestx-det", "vindr", "mura"])
def test_readers_read_every_phantom_layout(tmp_path, layout):
    size = 128
    root = pathlib.Path(_generate(layout, tmp_path / layout, n=12, size=size))
    csvs = sorted(root.rglob("*.csv"))
    if layout == "nih":
        boxes_csv = next(p for p in csvs if p.name.startswith("BBox_List"))
        images = boxes_csv.parent / "images"
        # The phantom's boxes are in NIH's 1024 px, as the real file's: the reader scales them to the image files.
        boxes = read_nih_boxes(boxes_csv, image_root=images)
        _check_boxes(boxes, images_root=images)
        assert boxes.attrs["report"].notes["rescaled_to_file_size"] == len(boxes)
        labels = read_nih_labels(next(p for p in csvs if p.name.startswith("Data_Entry")))
        assert len(labels) == 12 and labels.attrs["report"].unknown_labels == {}
        assert set(boxes["image_id"]) <= set(labels["image_id"])
        assert all((images / i).is_file() for i in labels["image_id"])
    elif layout == "cxr-lt":
        tables = [read_cxr_lt(p) for p in csvs if {"dicom_id", "path"} <= set(_header(p))]
        assert tables and sum(len(t) for t in tables) > 0
        for t in tables:
            assert _report(t).skipped == {} and t[list(CXR_LT_CLASSES)].isin([0.0, 1.0]).all().all()
            assert all((root / p).is_file() for p in t["path"])
        chexpert = [p for p in csvs if p.name.endswith("chexpert.csv")]
        metadata = [p for p in csvs if p.name.endswith("metadata.csv")]
        if chexpert and metadata:
            mimic = read_mimic(chexpert[0], metadata[0])
            assert _report(mimic).skipped == {} and mimic.attrs["report"].unknown_labels == {}
            assert all((root / p).is_file() for p in mimic["path"])
    elif layout == "chestx-det":
        jsons = sorted(root.rglob("*.json"))
        assert jsons
        for p in jsons:
            _check_boxes(read_chestx_det(p, image_size=(size, size)))
    elif layout == "vindr":
        ann = [p for p in csvs if {"image_id", "class_name", "rad_id"} <= set(_header(p))]
        assert ann
        for p in ann:
            image_root = p.parent / p.stem if (p.parent / p.stem).is_dir() else None
            for mode in ("all", "union", "majority"):
                df = read_vindr(p, image_root=image_root, raters=mode)
                assert _report(df).unknown_labels == {} and df.attrs["report"].skipped.get("missing_image", 0) == 0
            _check_boxes(read_vindr(p, image_root=image_root), images_root=image_root)
    else:
        pairs = [(p, p.with_name(p.name.replace("_image_paths", "_labeled_studies"))) for p in csvs]
        pairs = [(i, s) for i, s in pairs if i.name.endswith("_image_paths.csv")]
        assert pairs
        for images, studies in pairs:
            df = read_mura(images, studies)
            report = _report(df)
            assert len(df) > 0 and report.skipped == {} and "label_disagrees_with_folder" not in report.notes
            assert set(df["body_part"]) <= {"ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST"}
            assert all((images.parent.parent / p).is_file() for p in df["path"])
