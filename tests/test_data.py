"""dadam.data: decoding, the label Dataset, resumable/sharded samplers, loaders and the model input step."""

from __future__ import annotations

import os
import pickle
import socket

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dadam.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LabelBatch,
    LabelDataset,
    ResumableSampler,
    ShardSampler,
    SkippedImage,
    decode_image,
    default_num_workers,
    make_loader,
    remove_stale_worker_dirs,
    to_model_input,
)
from dadam.labels import CXR_LT_CLASSES


def _pil_gray_resized(path, size):
    with Image.open(path) as im:
        arr = np.array(im.convert("L"))  # writable: torch.from_numpy warns on read-only arrays
    return arr, np.array(Image.fromarray(arr).resize((size, size), Image.BILINEAR))


def _table(paths, n_classes=26, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=(len(paths), n_classes)).astype(float)
    y[0, 3] = np.nan  # unknown label must survive
    df = pd.DataFrame(y, columns=list(CXR_LT_CLASSES[:n_classes]))
    df.insert(0, "path", [str(p) for p in paths])
    df.insert(0, "image_id", [p.name for p in paths])
    df["source"] = "test"
    return df


@pytest.fixture()
def nih_table(shared_data):
    paths = sorted((shared_data / "nih14" / "images").glob("*.png"))[:12]
    return _table(paths)


def test_decode_png_matches_pil(shared_data):
    # 00001369_000 is RGBA: both must reduce it to luma; the rest are 8-bit gray.
    for name in ("00000129_000.png", "00001369_000.png"):
        path = shared_data / "nih14" / "images" / name
        native = decode_image(path)
        ref, ref_small = _pil_gray_resized(path, 64)
        assert native.shape == (1, 1024, 1024) and native.dtype == torch.uint8
        assert (native[0].int() - torch.from_numpy(ref).int()).abs().max() <= 1
        small = decode_image(path, canvas=64)
        assert small.shape == (1, 64, 64) and small.dtype == torch.uint8
        # antialiased bilinear vs PIL's bilinear (a box-like filter when downscaling): close, not equal
        assert (small[0].float() - torch.from_numpy(ref_small).float()).abs().mean() < 3.0


def test_decode_jpeg_and_dicom(tmp_path, shared_data):
    rng = np.random.default_rng(1)
    arr = (rng.random((40, 56)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    with Image.open(tmp_path / "a.jpg") as im:
        ref = np.array(im.convert("L"))
    x = decode_image(tmp_path / "a.jpg")
    assert x.shape == (1, 40, 56)
    assert (x[0].int() - torch.from_numpy(ref).int()).abs().max() <= 2  # libjpeg-turbo IDCT vs PIL's
    pytest.importorskip("pydicom")
    dcm = next((shared_data / "dicom").glob("*.dcm"))
    d = decode_image(dcm, canvas=32)
    assert d.shape == (1, 32, 32) and d.dtype == torch.uint8 and d.float().std() > 5


def test_dataset_items(nih_table, shared_data):
    ds = LabelDataset(nih_table, shared_data, canvas=64, dataset_id=1)
    assert len(ds) == 12
    img, y, did = ds[0]
    assert img.shape == (1, 64, 64) and img.dtype == torch.uint8
    assert y.shape == (26,) and y.dtype == torch.float32
    assert torch.isnan(y[3]) and did.item() == 1 and did.dtype == torch.long
    expected = nih_table[list(CXR_LT_CLASSES)].to_numpy(np.float32)[5]
    np.testing.assert_array_equal(ds[5][1].numpy(), expected)
    # relative paths resolve against root
    rel = nih_table.assign(path=[f"nih14/images/{i}" for i in nih_table["image_id"]])
    torch.testing.assert_close(LabelDataset(rel, shared_data, canvas=64)[2][0], ds[2][0])


def test_per_row_codes_and_extra_samples(nih_table, shared_data):
    """dataset_id per row; index n + i serves row i as an extend-mode extra sample, marked in batch.extra."""
    ids = [i % 3 for i in range(12)]
    ds = LabelDataset(nih_table, shared_data, canvas=32, dataset_id=ids)
    assert [int(ds[i][2]) for i in range(12)] == ids
    extra = ds[12 + 5]
    assert torch.equal(extra[0], ds[5][0]) and int(extra[2]) == 2
    batch = ds.collate([ds[0], ds[12 + 5], ds[7], ds[12 + 0]])
    assert batch.extra.tolist() == [False, True, False, True] and batch[2].tolist() == [0, 2, 1, 0]
    again = pickle.loads(pickle.dumps(batch))
    assert torch.equal(again.extra, batch.extra) and LabelBatch(*batch).extra.tolist() == [False] * 4
    with pytest.raises(IndexError, match="index 24 out of range for 12 rows"):
        ds[24]
    with pytest.raises(ValueError, match=r"dataset_id must be an int or one int per row \(12\)"):
        LabelDataset(nih_table, shared_data, canvas=32, dataset_id=[0, 1])
    with pytest.raises(ValueError, match="dataset_id values must be >= 0, got -1"):
        LabelDataset(nih_table, shared_data, canvas=32, dataset_id=[-1] * 12)


def test_dataset_errors(nih_table, shared_data, tmp_path):
    with pytest.raises(ValueError, match=r"lacks columns \['Atelectasis'\]"):
        LabelDataset(nih_table.drop(columns=["Atelectasis"]), shared_data, canvas=64)
    with pytest.raises(ValueError, match="canvas must be a positive int, got 0"):
        LabelDataset(nih_table, shared_data, canvas=0)
    bad = nih_table.copy()
    bad.loc[1, "path"] = str(tmp_path / "missing.png")
    ds = LabelDataset(bad, shared_data, canvas=64)
    with pytest.raises(FileNotFoundError, match=r"row 1 \(image_id '.*'\): image file .*missing.png not found"):
        ds[1]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    bad.loc[2, "path"] = str(tmp_path / "broken.png")
    with pytest.raises(ValueError, match=r"row 2 .*cannot decode .*broken.png"):
        LabelDataset(bad, shared_data, canvas=64)[2]


def test_resumable_sampler_order_and_skip():
    s = ResumableSampler(10, seed=3)
    s.set_epoch(2)
    full = list(s)
    assert sorted(full) == list(range(10))
    ref = torch.randperm(10, generator=torch.Generator().manual_seed(5)).tolist()
    assert full == ref  # seed + epoch
    s.set_epoch(2, start=4)
    assert list(s) == full[4:] and len(s) == 6
    s2 = ResumableSampler(10, seed=0)
    s2.load_state_dict(s.state_dict())
    assert list(s2) == full[4:]
    s.set_epoch(3)
    assert list(s) != full
    with pytest.raises(ValueError, match="start must be in"):
        s.set_epoch(0, start=11)


def test_resumable_sampler_shards_cover_dataset():
    shards = [ResumableSampler(11, seed=0, num_replicas=3, rank=r) for r in range(3)]
    for s in shards:
        s.set_epoch(1)
    got = [list(s) for s in shards]
    assert all(len(g) == 4 for g in got)  # ceil(11 / 3), padded by wrap-around
    assert set(sum(got, [])) == set(range(11))
    ev = [list(ShardSampler(11, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(ev, [])) == list(range(11))  # no padding, no duplicates


def test_make_loader_batches_and_workers(nih_table, shared_data):
    ds = LabelDataset(nih_table, shared_data, canvas=64)
    loader = make_loader(ds, batch_size=5, num_workers=0, seed=7)
    batches = list(loader)
    assert len(batches) == 2  # drop_last for training
    images, labels, ids = batches[0]
    assert images.shape == (5, 1, 64, 64) and images.dtype == torch.uint8
    assert labels.shape == (5, 26) and ids.shape == (5,) and ids.dtype == torch.long
    order = loader.sampler.indices()
    torch.testing.assert_close(images, torch.stack([ds[i][0] for i in order[:5]]))
    # two workers, persistent: same batches, same order
    loader2 = make_loader(ds, batch_size=5, num_workers=2, seed=7)
    assert loader2.persistent_workers
    for (a, la, _), (b, lb, _) in zip(batches, loader2, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(la, lb, equal_nan=True)
    # resuming after one batch gives the remaining batch
    loader.sampler.set_epoch(0, start=5)
    rest = list(loader)
    assert len(rest) == 1 and torch.equal(rest[0][0], batches[1][0])
    ev = make_loader(ds, batch_size=5, train=False, num_workers=0)
    assert [b[0].shape[0] for b in ev] == [5, 5, 2]
    # starting an epoch leaves the global RNG alone (a resumed run starts one more iterator than the original)
    state = torch.get_rng_state()
    iter(loader)
    iter(ev)
    assert torch.equal(torch.get_rng_state(), state)


def test_to_model_input():
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8, generator=g)
    x = to_model_input(u8, channels_last=True)
    assert x.shape == (2, 3, 8, 8) and x.is_contiguous(memory_format=torch.channels_last)
    for c in range(3):
        ref = (u8[:, 0].float() / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(x[:, c], ref)
    torch.testing.assert_close(to_model_input(u8.float() / 255), x.contiguous())
    assert u8._version == 0
    one = to_model_input(u8, in_chans=1, mean=(0.5,), std=(0.5,))
    torch.testing.assert_close(one, u8.float() / 127.5 - 1)
    with pytest.raises(ValueError, match=r"images must be \(B, 1, H, W\), got shape \(2, 3, 8, 8\)"):
        to_model_input(x)


def test_input_normalizer_from_a_timm_config_keeps_constants_per_device():
    """TResNet's config (mean 0, std 1) gives x / 255; the constants are made once per device; channels-last output
    is written so (no copy of a contiguous result)."""
    from dadam.data import InputNormalizer

    g = torch.Generator().manual_seed(1)
    u8 = torch.randint(0, 256, (3, 1, 6, 6), dtype=torch.uint8, generator=g)
    tres = InputNormalizer.from_data_config({"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}, channels_last=True)
    x = tres(u8)
    assert x.is_contiguous(memory_format=torch.channels_last) and x.shape == (3, 3, 6, 6)
    for c in range(3):
        torch.testing.assert_close(x[:, c], u8[:, 0].float() / 255, rtol=0, atol=1e-7)
    torch.testing.assert_close(tres(u8.float() / 255), x)  # float input in [0, 1] alike
    first = tres.constants(torch.device("cpu"))
    tres(u8)
    assert all(a is b for a, b in zip(first, tres.constants(torch.device("cpu")), strict=True))  # cached
    gray = InputNormalizer.from_data_config({"mean": IMAGENET_MEAN, "std": IMAGENET_STD}, in_chans=1)
    assert gray.mean == (pytest.approx(sum(IMAGENET_MEAN) / 3),) and gray(u8).shape == (3, 1, 6, 6)
    with pytest.raises(ValueError, match=r"std values must be > 0, got \(0.0,\)"):
        InputNormalizer(mean=(0.0,), std=(0.0,))


def test_decode_16bit_png_scales_to_uint8(tmp_path):
    """torchvision decodes 16-bit PNG to uint16; decode_image must still return uint8 scaled by the full range."""
    arr = (np.arange(64 * 64, dtype=np.int64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    path = tmp_path / "gray16.png"
    Image.fromarray(arr).save(path)
    img = decode_image(path)
    assert img.dtype == torch.uint8 and img.shape == (1, 64, 64)
    ref = np.round(arr.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert (img[0].int() - torch.from_numpy(ref).int()).abs().max() <= 1
    assert decode_image(path, canvas=32).shape == (1, 32, 32)


def _with_bad_rows(nih_table, tmp_path):
    """The NIH table with row 1 pointing at a missing file and rows 3 and 4 at a file that is no image."""
    bad = nih_table.copy()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    bad.loc[1, "path"] = str(tmp_path / "missing.png")
    bad.loc[[3, 4], "path"] = str(tmp_path / "broken.png")
    return bad


def test_skip_leaves_bad_files_out_of_their_batch(nih_table, shared_data, tmp_path, caplog):
    ds = LabelDataset(_with_bad_rows(nih_table, tmp_path), shared_data, canvas=32, bad_images="skip")
    good = LabelDataset(nih_table, shared_data, canvas=32)
    skipped = ds[1]
    assert isinstance(skipped, SkippedImage) and skipped.index == 1 and "FileNotFoundError" in skipped.reason
    assert "missing.png" in caplog.text  # logged where it happens
    batches = list(make_loader(ds, batch_size=3, train=False, num_workers=2))  # rows 0-2, 3-5, 6-8, 9-11
    assert all(isinstance(b, LabelBatch) for b in batches)
    assert [b.kept.tolist() for b in batches[:2]] == [[True, False, True], [False, False, True]]
    assert [[s.index for s in b.skipped] for b in batches] == [[1], [3, 4], [], []]
    images, labels, ids = batches[1]  # one image left: row 5
    assert images.shape == (1, 1, 32, 32) and labels.shape == (1, 26) and ids.shape == (1,)
    assert torch.equal(images[0], good[5][0]) and torch.equal(batches[0][0][1], good[2][0])
    np.testing.assert_array_equal(labels[0].numpy(), good[5][1].numpy())
    assert sum(b[0].shape[0] for b in batches) == len(ds) - 3
    # a batch travels between processes with its records
    again = pickle.loads(pickle.dumps(batches[1]))
    assert isinstance(again, LabelBatch) and again.skipped == batches[1].skipped
    assert torch.equal(again.kept, batches[1].kept) and torch.equal(again[0], images)


def test_a_batch_of_bad_files_only_is_empty(nih_table, shared_data, tmp_path):
    ds = LabelDataset(_with_bad_rows(nih_table, tmp_path), shared_data, canvas=32, bad_images="skip")
    batch = ds.collate([ds[3], ds[4]])
    images, labels, ids = batch
    assert images.shape == (0, 1, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (0, 26) and ids.shape == (0,) and batch.kept.tolist() == [False, False]


@pytest.mark.skipif(not os.path.isfile("/proc/net/unix"), reason="needs Linux's /proc/net/unix")
def test_stale_worker_folders_are_removed_and_live_ones_kept(tmp_path):
    def folder(name: str, *, socket_file: bool, listening: bool = False):
        d = tmp_path / name
        d.mkdir()
        if socket_file:
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(d / "listener-x"))
            s.listen()
            if not listening:
                s.close()  # as after a kill: the file stays, nothing listens
            return s
        return None

    folder("pymp-dead", socket_file=True)
    live = folder("pymp-live", socket_file=True, listening=True)
    folder("pymp-empty", socket_file=False)
    folder("pymp-files", socket_file=False)
    (tmp_path / "pymp-files" / "notes.txt").write_text("not a socket")
    folder("other-dead", socket_file=True)
    try:
        assert remove_stale_worker_dirs(tmp_path) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other-dead", "pymp-empty", "pymp-files", "pymp-live"]
    finally:
        live.close()


def test_default_num_workers_follows_the_cpus(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert default_num_workers() == 2  # DataLoader warns above the CPUs it may use
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_num_workers() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 ranks on the machine share its CPUs
    assert default_num_workers() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(512)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert default_num_workers() == 32
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_num_workers() == 1


@pytest.mark.gpu
def test_model_input_on_cuda_has_no_host_sync_after_its_first_call():
    from dadam.data import InputNormalizer

    norm = InputNormalizer(mean=(0.0,), std=(1.0,), channels_last=True)
    u8 = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8).cuda()
    ref = norm(u8.cpu())
    norm(u8)  # makes the constants on this device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = norm(u8)
        to_model_input(u8, mean=(0.5,), std=(0.25,))
        to_model_input(u8, mean=(0.5,), std=(0.25,))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(out.cpu(), ref)
