"""PatchBank: layout, boxes cut from real NIH images, persistence (format, checksum, files of earlier releases)."""

import hashlib
import logging
import math
import os
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from dadam.bank import PatchBank
from dadam.formats import read_nih_boxes
from dadam.io import read_image
from dadam.labels import CXR_LT_CLASSES, class_index
from tests.helpers import make_bank

CANVAS = 224


@pytest.fixture(scope="module")
def nih_boxes(shared_data):
    return read_nih_boxes(shared_data / "nih14" / "BBox_List_2017.csv")


@pytest.fixture(scope="module")
def nih_bank(nih_boxes, shared_data):
    return PatchBank.from_boxes(nih_boxes, shared_data / "nih14" / "images", canvas=CANVAS, workers=2, progress=False)


def test_nih_bank_every_box_at_its_place(nih_bank, nih_boxes, shared_data):
    bank = nih_bank
    assert len(bank) == len(nih_boxes) == 12
    assert bank.report.donors_read == 12 and not bank.report.skipped_donors and not bank.report.skipped_boxes
    assert bank.class_counts()["Cardiomegaly"] == 3 and bank.class_counts()["Nodule"] == 3
    assert sum(bank.class_counts().values()) == 12
    assert bank.classes.tolist() == sorted(bank.classes.tolist())
    assert set(bank.sources) == {"nih"}
    seen = set()
    for i in range(len(bank)):
        donor = bank.donors[i]
        rows = nih_boxes[nih_boxes["image_id"] == donor]
        img = read_image(shared_data / "nih14" / "images" / donor)  # (1, 1024, 1024)
        resized = TF.resize(img, [CANVAS, CANVAS], antialias=True)[0]
        x0, y0, x1, y1 = bank.boxes[i].tolist()
        assert torch.equal(bank.patch(i), resized[y0:y1, x0:x1]), f"patch {i} is not the crop of {donor}"
        # the canvas box is the table's box scaled by canvas / 1024, rounded outwards
        r = next(r for _, r in rows.iterrows() if class_index(r["label"]) == int(bank.classes[i]))
        s = CANVAS / 1024
        assert [x0, y0, x1, y1] == [
            math.floor(r.x0 * s),
            math.floor(r.y0 * s),
            min(CANVAS, math.ceil(r.x1 * s)),
            min(CANVAS, math.ceil(r.y1 * s)),
        ]
        np.testing.assert_allclose(bank.norm_boxes[i].numpy(), np.array([r.x0, r.y0, r.x1, r.y1]) / 1024, rtol=1e-6)
        assert bank.sizes[i].tolist() == [y1 - y0, x1 - x0]
        seen.add(donor)
    assert len(seen) == 12
    assert bank.max_size == tuple(bank.sizes.max(0).values.tolist())
    assert bank.memory_bytes() >= bank.pixels.numel()
    # flat layout: patches are back to back
    assert bank.offsets.tolist() == [0, *torch.cumsum(bank.sizes.prod(1), 0)[:-1].tolist()]
    assert bank.class_start[-1] == 12 and bank.class_count.sum() == 12


def test_margin_grows_boxes_and_clips(nih_boxes, shared_data):
    small = nih_boxes.iloc[:3]
    b0 = PatchBank.from_boxes(small, shared_data / "nih14" / "images", canvas=CANVAS, progress=False)
    b1 = PatchBank.from_boxes(small, shared_data / "nih14" / "images", canvas=CANVAS, margin=0.25, progress=False)
    for i in range(3):
        assert (b1.boxes[i, :2] <= b0.boxes[i, :2]).all() and (b1.boxes[i, 2:] >= b0.boxes[i, 2:]).all()
        assert (b1.boxes[i] >= 0).all() and (b1.boxes[i] <= CANVAS).all()
        assert (b1.sizes[i] > b0.sizes[i]).any()


def test_save_load_round_trip_and_tampering(nih_bank, tmp_path):
    path = tmp_path / "bank.safetensors"
    nih_bank.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["bank.safetensors"]  # no temporary left behind
    loaded = PatchBank.load(path)
    for name, t in nih_bank.tensors().items():
        assert torch.equal(getattr(loaded, name), t), name
    assert torch.equal(loaded.class_start, nih_bank.class_start)
    assert loaded.donors == nih_bank.donors and loaded.sources == nih_bank.sources
    assert loaded.canvas == CANVAS and loaded.max_size == nih_bank.max_size and loaded.class_names == CXR_LT_CLASSES

    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip a pixel byte
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"tampered\.safetensors: SHA-256 .* corrupt file"):
        PatchBank.load(bad)

    text = path.read_bytes().replace(b'"canvas":"224"', b'"canvas":"228"')
    assert text != path.read_bytes()
    bad.write_bytes(text)
    with pytest.raises(ValueError, match="tampered.safetensors: SHA-256"):
        PatchBank.load(bad)

    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="tampered.safetensors: not a readable patch bank file"):
        PatchBank.load(bad)


def test_unreadable_donor_is_reported_not_fatal(nih_boxes, shared_data, tmp_path, caplog):
    root = tmp_path / "images"
    root.mkdir()
    ids = nih_boxes["image_id"].tolist()
    for name in ids[:3]:
        shutil.copy(shared_data / "nih14" / "images" / name, root / name)
    (root / ids[3]).write_bytes(b"\x89PNG broken")  # corrupt donor; ids[4] is missing altogether
    with caplog.at_level(logging.WARNING, logger="dadam.bank"):
        bank = PatchBank.from_boxes(nih_boxes.iloc[:5], root, canvas=64, progress=False)
    assert len(bank) == 3 and bank.report.donors_read == 3
    skipped = dict(bank.report.skipped_donors)
    assert set(skipped) == {str(root / ids[3]), str(root / ids[4])}
    assert "FileNotFoundError" in skipped[str(root / ids[4])]
    assert ids[3] in caplog.text and ids[4] in caplog.text
    assert "2 donors and 0 boxes skipped" in bank.report.summary()


def test_source_mapping_and_bad_tables(nih_boxes, shared_data):
    two = nih_boxes.iloc[:2].copy()
    bank = PatchBank.from_boxes(two, {"nih": shared_data / "nih14" / "images"}, canvas=64, progress=False)
    assert len(bank) == 2
    with pytest.raises(ValueError, match=r"image_root has no folder for sources \['nih'\]"):
        PatchBank.from_boxes(two, {"vindr": shared_data}, canvas=64, progress=False)
    with pytest.raises(ValueError, match=r"missing columns \['x1'\]"):
        PatchBank.from_boxes(two.drop(columns="x1"), shared_data, progress=False)
    with pytest.raises(ValueError, match="unknown class 'Flu'"):
        PatchBank.from_boxes(two.assign(label="Flu"), shared_data, progress=False)
    flat = two.copy()
    flat.loc[flat.index[0], "x1"] = flat.iloc[0]["x0"]  # zero-width box: skipped and reported
    bank = PatchBank.from_boxes(flat, shared_data / "nih14" / "images", canvas=64, progress=False)
    assert len(bank) == 1 and len(bank.report.skipped_boxes) == 1 and "invalid box" in bank.report.skipped_boxes[0][2]


def test_from_patches_validates_and_sorts():
    bank = make_bank({"Nodule": 2, "Fibrosis": 1}, canvas=32, max_size=8)
    assert bank.classes.tolist() == [class_index("Fibrosis"), class_index("Nodule"), class_index("Nodule")]
    assert bank.class_start[class_index("Nodule")] == 1 and bank.class_count[class_index("Nodule")] == 2
    p = torch.zeros(3, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"patch 0: box \[0, 0, 3, 4\] does not match patch size \(3, 4\)"):
        PatchBank.from_patches([p], [[0, 0, 3, 4]], ["Mass"], canvas=32)
    with pytest.raises(ValueError, match="outside the 32x32 canvas"):
        PatchBank.from_patches([p], [[30, 0, 34, 3]], ["Mass"], canvas=32)
    with pytest.raises(ValueError, match="must be uint8"):
        PatchBank.from_patches([p.float()], [[0, 0, 4, 3]], ["Mass"], canvas=32)


def test_to_returns_a_new_bank(nih_bank):
    moved = nih_bank.to("cpu")
    assert moved is not nih_bank and torch.equal(moved.pixels, nih_bank.pixels) and len(moved) == len(nih_bank)


@pytest.mark.gpu
def test_bank_to_cuda(nih_bank):
    b = nih_bank.to("cuda")
    assert b.pixels.is_cuda and b.class_start.is_cuda and torch.equal(b.pixels.cpu(), nih_bank.pixels)


def test_load_rejects_a_well_signed_but_inconsistent_layout(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    bank = make_bank({"Mass": 2, "Nodule": 1}, canvas=32, max_size=8)
    path = tmp_path / "bank.safetensors"
    bank.save(path)
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["offsets"] = tensors["offsets"] + 10_000  # past the end of pixels: the ops would read out of bounds
    meta["sha256"] = _reference_bank_sha256(tensors, meta)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=r"bad\.safetensors: inconsistent patch bank layout: patches beyond the"):
        PatchBank.load(tmp_path / "bad.safetensors")


def test_from_patches_accepts_numpy_and_torch_class_indices():
    p = torch.zeros(2, 2, dtype=torch.uint8)
    boxes = [[0, 0, 2, 2], [4, 4, 6, 6]]
    bank = PatchBank.from_patches([p, p], boxes, [np.int64(class_index("Mass")), torch.tensor(3)], canvas=8)
    assert sorted(bank.classes.tolist()) == [3, class_index("Mass")]
    with pytest.raises(ValueError, match="unknown class 26"):
        PatchBank.from_patches([p], boxes[:1], [np.int64(26)], canvas=8)


def test_sources_filter_without_source_column(nih_boxes, shared_data):
    two = nih_boxes.iloc[:2].drop(columns="source")
    bank = PatchBank.from_boxes(two, shared_data / "nih14" / "images", canvas=64, sources=[""], progress=False)
    assert len(bank) == 2
    with pytest.raises(ValueError, match=r"kept no patch from 0 box rows .*0 patches from 0 donors"):
        PatchBank.from_boxes(two, shared_data / "nih14" / "images", canvas=64, sources=["nih"], progress=False)


def _reference_bank_sha256(tensors, meta) -> str:
    """The checksum format of a bank file, written out plainly: SHA-256 of ``key=value;`` for each metadata entry but
    the checksum (sorted by key), then of ``name:dtype:shape;`` and the raw bytes of each tensor (sorted by name)."""
    h = hashlib.sha256()
    for key in sorted(k for k in meta if k != "sha256"):
        h.update(f"{key}={meta[key]};".encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _file_contents(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def test_saved_checksum_follows_the_file_format(tmp_path):
    bank = make_bank({"Mass": 3, "Nodule": 2, "Hernia": 1}, canvas=48, seed=4)
    bank.save(tmp_path / "bank.safetensors")
    meta, tensors = _file_contents(tmp_path / "bank.safetensors")
    assert meta["sha256"] == _reference_bank_sha256(tensors, meta)
    assert [p.name for p in tmp_path.iterdir()] == ["bank.safetensors"]  # no temporary file left
    assert (tmp_path / "bank.safetensors").stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_bank_file_written_by_release_0_1_0_loads():
    """tests/data/patch_bank_0.1.0.safetensors: three patches saved by the first release's PatchBank.save."""
    path = pathlib.Path(__file__).parent / "data" / "patch_bank_0.1.0.safetensors"
    bank = PatchBank.load(path)
    assert bank.canvas == 16 and len(bank) == 3 and bank.class_names == CXR_LT_CLASSES
    assert [bank.class_names[c] for c in bank.classes.tolist()] == ["Fibrosis", "Mass", "Nodule"]  # sorted by class
    assert bank.donors == ["d1.png", "d0.png", "d2.png"] and bank.sources == ["vindr", "nih", "nih"]
    assert bank.patch(0).tolist() == [[200, 200], [200, 200]]
    assert bank.patch(1).tolist() == [[0, 20, 40, 60], [80, 100, 120, 140], [160, 180, 200, 220]]
    assert bank.patch(2).tolist() == [[7, 9, 11]] and bank.boxes.tolist()[2] == [0, 15, 3, 16]
    meta, _ = _file_contents(path)
    assert meta["sha256"] == "d78f0590549dc0311ebcc9de2edd192dceaaff5c33ca52bb16d5abf964f7c861"


def test_bank_saved_again_stores_the_same_checksum(tmp_path):
    path = pathlib.Path(__file__).parent / "data" / "patch_bank_0.1.0.safetensors"
    PatchBank.load(path).save(tmp_path / "again.safetensors")
    (meta0, tensors0), (meta1, tensors1) = _file_contents(path), _file_contents(tmp_path / "again.safetensors")
    assert meta1 == meta0 and tensors1.keys() == tensors0.keys()
    for k in tensors0:
        assert torch.equal(tensors1[k], tensors0[k]) and tensors1[k].dtype == tensors0[k].dtype, k


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------- donors' lung boxes


def test_from_boxes_estimates_each_donors_lung_box(nih_bank, nih_boxes, shared_data):
    from dadam.anatomy import lung_box

    assert nih_bank.has_lung_boxes and nih_bank.lung_boxes.shape == (12, 4)
    for i in range(len(nih_bank)):  # the estimate on the donor resized to the canvas
        img = read_image(shared_data / "nih14" / "images" / nih_bank.donors[i], dtype=torch.uint8)
        resized = TF.resize(img, [CANVAS, CANVAS], antialias=True)
        assert torch.equal(nih_bank.lung_boxes[i], lung_box(resized[None])[0]), i


def test_from_boxes_takes_the_lung_boxes_of_the_table(nih_boxes, shared_data):
    from dadam.anatomy import lung_box

    table = nih_boxes.iloc[:4].copy()
    donors = sorted(set(table["image_id"]))
    given = {d: [0.1 + 0.01 * k, 0.2, 0.9, 0.8 - 0.01 * k] for k, d in enumerate(donors)}
    for c, col in enumerate(("lung_x0", "lung_y0", "lung_x1", "lung_y1")):
        table[col] = [given[d][c] for d in table["image_id"]]
    table.loc[table["image_id"] == donors[0], ["lung_x0", "lung_y0", "lung_x1", "lung_y1"]] = np.nan  # estimated
    bank = PatchBank.from_boxes(table, shared_data / "nih14" / "images", canvas=64, progress=False)
    for i, donor in enumerate(bank.donors):
        if donor == donors[0]:
            img = read_image(shared_data / "nih14" / "images" / donor, dtype=torch.uint8)
            want = lung_box(TF.resize(img, [64, 64], antialias=True)[None])[0].tolist()
        else:
            want = given[donor]
        np.testing.assert_allclose(bank.lung_boxes[i].tolist(), want, rtol=1e-6)
    assert bank.has_lung_boxes
    bad = table.copy()
    bad.loc[bad.index[1], "lung_x1"] = 1.5
    with pytest.raises(ValueError, match=r"box table row 1 .*lung_x1=1.5, lung_y1=.* is not a box"):
        PatchBank.from_boxes(bad, shared_data / "nih14" / "images", canvas=64, progress=False)
    twice = pd.concat([table.iloc[1:2], table.iloc[1:2].assign(lung_y1=0.99)])
    with pytest.raises(ValueError, match=rf"rows of donor '{table.iloc[1]['image_id']}' .*give different lung boxes"):
        PatchBank.from_boxes(twice, shared_data / "nih14" / "images", canvas=64, progress=False)


def test_lung_boxes_are_saved_and_loaded(tmp_path):
    bank = make_bank({"Mass": 2, "Nodule": 2}, canvas=32, max_size=8)
    assert not bank.has_lung_boxes and torch.isnan(bank.lung_boxes).all()
    lungs = torch.tensor([[0.1, 0.1, 0.9, 0.8], [0.2, 0.1, 0.8, 0.9], [float("nan")] * 4, [0.0, 0.0, 1.0, 1.0]])
    with_lungs = bank.with_lung_boxes(lungs)
    assert with_lungs.pixels is bank.pixels and not with_lungs.has_lung_boxes  # one row unknown
    with_lungs.save(tmp_path / "v2.safetensors")
    meta, tensors = _file_contents(tmp_path / "v2.safetensors")
    assert meta["version"] == "2" and "lung_boxes" in tensors
    assert meta["sha256"] == _reference_bank_sha256(tensors, meta)
    loaded = PatchBank.load(tmp_path / "v2.safetensors")
    torch.testing.assert_close(loaded.lung_boxes, lungs, rtol=0, atol=0, equal_nan=True)
    bank.save(tmp_path / "v1.safetensors")  # no lung box known: the format of the earlier releases
    meta, tensors = _file_contents(tmp_path / "v1.safetensors")
    assert meta["version"] == "1" and "lung_boxes" not in tensors
    assert torch.isnan(PatchBank.load(tmp_path / "v1.safetensors").lung_boxes).all()
    # a version-2 file must have its lung boxes, valid ones
    del tensors["pixels"]
    meta["version"] = "2"
    _, v2 = _file_contents(tmp_path / "v2.safetensors")
    v2["lung_boxes"][0, 2] = 0.05  # x1 < x0
    meta2 = dict(meta)
    meta2["sha256"] = _reference_bank_sha256(v2, meta2)
    from safetensors.torch import save_file

    save_file(v2, str(tmp_path / "bad.safetensors"), metadata=meta2)
    with pytest.raises(ValueError, match="inconsistent patch bank layout: lung_boxes that are neither NaN nor boxes"):
        PatchBank.load(tmp_path / "bad.safetensors")
    del v2["lung_boxes"]
    meta2["sha256"] = _reference_bank_sha256(v2, meta2)
    save_file(v2, str(tmp_path / "bad.safetensors"), metadata=meta2)
    with pytest.raises(ValueError, match=r"bad\.safetensors: patch bank file lacks tensors \['lung_boxes'\]"):
        PatchBank.load(tmp_path / "bad.safetensors")
    meta2["version"] = "3"
    meta2["sha256"] = _reference_bank_sha256(v2, meta2)
    save_file(v2, str(tmp_path / "bad.safetensors"), metadata=meta2)
    with pytest.raises(ValueError, match="format version 3, expected one of 1, 2"):
        PatchBank.load(tmp_path / "bad.safetensors")


def test_lung_box_errors_of_a_bank():
    bank = make_bank({"Mass": 2}, canvas=32, max_size=8)
    with pytest.raises(ValueError, match=r"lung_boxes row 1 is \[0.5, 0.1, 0.5, 0.9\]: a donor's lung box"):
        bank.with_lung_boxes(torch.tensor([[0.1, 0.1, 0.9, 0.9], [0.5, 0.1, 0.5, 0.9]]))
    with pytest.raises(ValueError, match=r"lung_boxes must have shape \(2, 4\), got \(1, 4\)"):
        bank.with_lung_boxes(torch.tensor([[0.1, 0.1, 0.9, 0.9]]))
    p = torch.zeros(2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"lung_boxes row 0 is \[0.1, 0.1, 1.5, 0.9\]"):
        PatchBank.from_patches([p], [[0, 0, 2, 2]], ["Mass"], canvas=8, lung_boxes=[[0.1, 0.1, 1.5, 0.9]])


def test_old_bank_file_refuses_lung_placement_naming_the_fix():
    from dadam import DiseasedAreaAugment, LabelStats
    from tests.helpers import make_label_table

    bank = PatchBank.load(pathlib.Path(__file__).parent / "data" / "patch_bank_0.1.0.safetensors")
    assert not bank.has_lung_boxes and torch.isnan(bank.lung_boxes).all()
    stats = LabelStats.from_labels(make_label_table(500))
    DiseasedAreaAugment(bank, stats, tail=["Fibrosis"])  # aligned: fine
    with pytest.raises(ValueError, match=r"placement='lung' .* 3 of the bank's 3 patches have none .*rebuild the bank"):
        DiseasedAreaAugment(bank, stats, tail=["Fibrosis"], placement="lung")
