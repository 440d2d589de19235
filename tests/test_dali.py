"""dadam.dali on the CPU (device_id=None): decoding equals PIL, labels follow their images, shards are disjoint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

pytest.importorskip("nvidia.dali")

from dadam.dali import DaliLoader  # noqa: E402
from dadam.data import decode_image  # noqa: E402
from dadam.labels import CXR_LT_CLASSES  # noqa: E402


def _table(paths, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.integers(0, 2, size=(len(paths), 26)).astype(float), columns=list(CXR_LT_CLASSES))
    df.insert(0, "path", [str(p) for p in paths])
    df.insert(0, "image_id", [p.name for p in paths])
    return df


@pytest.fixture(scope="module")
def jpeg_table(tmp_path_factory):
    d = tmp_path_factory.mktemp("jpg")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(10):
        # smooth content so that JPEG and resampling differences stay small
        yy, xx = np.mgrid[0:48, 0:48]
        arr = (127 + 100 * np.sin(xx / (3 + i)) * np.cos(yy / 5) + rng.normal(0, 2, (48, 48))).clip(0, 255)
        p = d / f"img{i:02d}.jpg"
        Image.fromarray(arr.astype(np.uint8)).save(p, quality=95)
        paths.append(p)
    return _table(paths), d


def _collect(loader):
    out = [(x.clone(), y.clone(), i.clone()) for x, y, i in loader]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out]), torch.cat([o[2] for o in out])


def test_png_decoding_equals_pil(shared_data):
    paths = sorted((shared_data / "nih14" / "images").glob("*.png"))[:4]  # includes no RGBA file
    table = _table(paths)
    loader = DaliLoader(table, "/", canvas=1024, batch_size=2, device="cpu", train=False, num_threads=1)
    images, labels, ids = _collect(loader)
    assert images.shape == (4, 1, 1024, 1024) and images.dtype == torch.uint8 and images.device.type == "cpu"
    for k, p in enumerate(paths):
        with Image.open(p) as im:
            ref = torch.from_numpy(np.array(im.convert("L")))
        assert (images[k, 0].int() - ref.int()).abs().max() <= 1  # lossless PNG: equal up to luma rounding
    torch.testing.assert_close(labels, torch.tensor(table[list(CXR_LT_CLASSES)].to_numpy(np.float32)))
    assert ids.tolist() == [0, 0, 0, 0]


def test_jpeg_resize_close_to_torch_path(jpeg_table):
    table, _ = jpeg_table
    loader = DaliLoader(table, "/", canvas=32, batch_size=4, device="cpu", train=False, num_threads=1, dataset_id=1)
    images, labels, ids = _collect(loader)
    assert images.shape == (10, 1, 32, 32) and ids.tolist() == [1] * 10  # partial last batch kept in eval
    for k, p in enumerate(table["path"]):
        with Image.open(p) as im:
            ref = np.asarray(im.convert("L").resize((32, 32), Image.BILINEAR)).astype(np.float32)
        diff = (images[k, 0].float() - torch.from_numpy(ref)).abs()
        assert diff.mean() < 2.5 and diff.max() < 40, (k, diff.mean(), diff.max())
        tv = decode_image(p, canvas=32)[0].float()
        assert (images[k, 0].float() - tv).abs().mean() < 2.5
    normed, _, _ = _collect(DaliLoader(table, "/", canvas=32, batch_size=4, device="cpu", train=False, normalize=True))
    assert normed.dtype == torch.float32
    torch.testing.assert_close(normed, images.float() / 255)


def test_training_shards_shuffle_and_labels_follow_images(jpeg_table):
    table, _ = jpeg_table
    y = torch.tensor(table[list(CXR_LT_CLASSES)].to_numpy(np.float32))
    natives = torch.stack([decode_image(p, canvas=16) for p in table["path"]]).float()
    seen = []
    for shard in range(2):
        loader = DaliLoader(
            table, "/", canvas=16, batch_size=2, device="cpu", shard_id=shard, num_shards=2, train=True, seed=5
        )
        assert len(loader) == 2  # 5 samples per shard, last partial batch dropped
        images, labels, _ = _collect(loader)
        assert images.shape == (4, 1, 16, 16)
        for k in range(4):
            # identify each image by its nearest reference, then check its labels are that row's labels
            row = (natives - images[k].float()).abs().mean(dim=(1, 2, 3)).argmin().item()
            torch.testing.assert_close(labels[k], y[row])
            seen.append(row)
    assert len(set(seen)) == 8  # shards are disjoint


def test_errors(jpeg_table, shared_data):
    table, _ = jpeg_table
    with pytest.raises(ValueError, match="device must be 'auto', 'cuda' or 'cpu', got 'tpu'"):
        DaliLoader(table, "/", canvas=16, batch_size=2, device="tpu")
    dcm = table.head(2).copy()
    dcm.loc[1, "path"] = "/x/a.dcm"
    with pytest.raises(ValueError, match=r"row 1 .*a.dcm is not a format DALI decodes"):
        DaliLoader(dcm, "/", canvas=16, batch_size=2, device="cpu")
    with pytest.raises(ValueError, match=r"shard_id must be in \[0, num_shards=2\), got 2"):
        DaliLoader(table, "/", canvas=16, batch_size=2, device="cpu", shard_id=2, num_shards=2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' but torch.cuda.is_available"):
            DaliLoader(table, "/", canvas=16, batch_size=2, device="cuda")


@pytest.mark.gpu
def test_mixed_decoding_matches_cpu(jpeg_table):
    table, _ = jpeg_table
    cpu, _, _ = _collect(DaliLoader(table, "/", canvas=32, batch_size=4, device="cpu", train=False))
    gpu, labels, _ = _collect(DaliLoader(table, "/", canvas=32, batch_size=4, device="cuda", train=False))
    assert gpu.is_cuda and labels.is_cuda
    assert (gpu.cpu().float() - cpu.float()).abs().mean() < 1.5  # nvJPEG vs libjpeg-turbo IDCT
