"""Tests for dadam.io: grayscale decoding of PNG (8/16 bit, RGB/RGBA), JPEG and DICOM, sizes without decoding."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dadam.io import image_size, is_dicom, read_image

RGBA_NIH = ["00001369_000.png", "00002578_000.png", "00000100_000.png"]
DICOM_NAME = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, as PIL's convert("L") computes it (integer maths, rounded)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def test_8bit_png_round_trip(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png")
    assert x.shape == (1, 37, 53) and x.dtype == torch.uint8
    assert torch.equal(x[0], torch.from_numpy(a))
    f = read_image(tmp_path / "a.png", dtype=torch.float32)
    assert f.dtype == torch.float32 and torch.allclose(f[0], torch.from_numpy(a).float() / 255)
    assert image_size(tmp_path / "a.png") == (37, 53)


def test_16bit_png_round_trip_is_scaled_not_clipped(tmp_path):
    a = np.random.default_rng(1).integers(0, 65536, (20, 30), dtype=np.uint16)
    a[0, 0], a[0, 1], a[0, 2] = 0, 65535, 300  # 300 must not saturate as a clip to 255 would
    Image.fromarray(a).save(tmp_path / "a16.png")
    assert Image.open(tmp_path / "a16.png").mode.startswith("I")
    f = read_image(tmp_path / "a16.png", dtype=torch.float64)
    assert torch.allclose(f[0] * 65535, torch.from_numpy(a.astype(np.float64)), atol=1e-6)
    u = read_image(tmp_path / "a16.png")
    ref = np.round(a.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert u.dtype == torch.uint8 and torch.equal(u[0], torch.from_numpy(ref))
    assert u[0, 0, 1] == 255 and u[0, 0, 2] == 1


def test_rgba_and_rgb_become_luminance_alpha_ignored(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    for alpha in (255, 0, 77):
        rgba = np.dstack([rgb, np.full((16, 24), alpha, np.uint8)])
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"a{alpha}.png")
        assert torch.equal(read_image(tmp_path / f"a{alpha}.png")[0], torch.from_numpy(_luma(rgb)))
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    assert torch.equal(read_image(tmp_path / "rgb.png")[0], torch.from_numpy(_luma(rgb)))


def test_real_rgba_nih_files(shared_data):
    for name in RGBA_NIH:
        path = shared_data / "nih14" / "images" / name
        with Image.open(path) as im:
            assert im.mode == "RGBA"
            rgb = np.asarray(im)[..., :3]
        x = read_image(path)
        assert x.shape == (1, 1024, 1024) and x.dtype == torch.uint8
        assert torch.equal(x[0], torch.from_numpy(_luma(rgb)))
        assert image_size(path) == (1024, 1024)


def test_jpeg_gray_and_colour(tmp_path):
    a = (np.add.outer(np.arange(40), np.arange(50)) * 2).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "g.jpg", quality=95)
    x = read_image(tmp_path / "g.jpg")
    assert torch.equal(x[0], torch.from_numpy(np.array(Image.open(tmp_path / "g.jpg"))))
    assert (x[0].int() - torch.from_numpy(a).int()).abs().max() <= 3
    Image.fromarray(np.dstack([a, a, a])).save(tmp_path / "c.jpg", quality=95)
    assert read_image(tmp_path / "c.jpg").shape == (1, 40, 50)


def test_real_dicom_matches_pydicom_decode(shared_data, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    path = shared_data / "dicom" / DICOM_NAME
    assert is_dicom(path) and image_size(path) == (1024, 1024)
    ref = pydicom.dcmread(path).pixel_array.astype(np.float64)  # MONOCHROME2, no rescale, no window
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    f = read_image(path, dtype=torch.float64)
    assert f.shape == (1, 1024, 1024)
    assert torch.allclose(f[0], torch.from_numpy(ref), atol=1e-6)
    u = read_image(path)
    assert torch.equal(u[0], torch.from_numpy(np.round(ref * 255).astype(np.uint8)))
    # Detected by the DICM magic too, whatever the suffix.
    shutil.copy(path, tmp_path / "no_suffix")
    assert is_dicom(tmp_path / "no_suffix") and torch.equal(read_image(tmp_path / "no_suffix"), u)


def _write_dicom(path, arr: np.ndarray, *, photometric: str, slope=1.0, intercept=0.0, window=None):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = arr.astype(np.uint16).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_synthetic_dicom_rescale_window_monochrome1(tmp_path):
    a = np.random.default_rng(3).integers(0, 4096, (24, 32)).astype(np.uint16)
    slope, intercept, (c, w) = 2.0, -1024.0, (1500.0, 2000.0)
    _write_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1", slope=slope, intercept=intercept, window=(c, w))
    # Reference: DICOM PS3.3 C.11.2.1.2.1 linear window on the rescaled values, min-max, then invert MONOCHROME1.
    v = a * slope + intercept
    y = np.clip((v - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    y = (y - y.min()) / (y.max() - y.min())
    ref = 1.0 - y
    f = read_image(tmp_path / "m1.dcm", dtype=torch.float64)
    assert f.shape == (1, 24, 32) and torch.allclose(f[0], torch.from_numpy(ref), atol=1e-6)
    assert image_size(tmp_path / "m1.dcm") == (24, 32)
    # Without a window: rescale is linear, so the result is the min-max of the raw values.
    _write_dicom(tmp_path / "m2.dicom", a, photometric="MONOCHROME2", slope=slope, intercept=intercept)
    ref2 = (a - a.min()) / (a.max() - a.min())
    assert torch.allclose(read_image(tmp_path / "m2.dicom", dtype=torch.float64)[0], torch.from_numpy(ref2), atol=1e-9)


def test_resize_square_tuple_and_antialiased(tmp_path):
    a = np.zeros((64, 64), np.uint8)
    a[:, ::2] = 255  # 1-pixel stripes: without antialiasing a 2x downscale keeps 0/255
    Image.fromarray(a).save(tmp_path / "s.png")
    x = read_image(tmp_path / "s.png", size=32)
    assert x.shape == (1, 32, 32) and x.dtype == torch.uint8
    assert (x[..., 1:-1].int() - 128).abs().max() <= 2  # interior: the border column sees half a kernel
    y = read_image(tmp_path / "s.png", size=(16, 48), dtype=torch.float32)
    assert y.shape == (1, 16, 48) and 0.0 <= y.min() and y.max() <= 1.0
    assert torch.equal(read_image(tmp_path / "s.png", size=64), read_image(tmp_path / "s.png"))


def test_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        image_size(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"this is not a png" * 10)
    with pytest.raises(ValueError, match="cannot read image file .*junk.png"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="junk.png"):
        image_size(tmp_path / "junk.png")
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(ValueError, match="junk.dcm"):
        read_image(tmp_path / "junk.dcm")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(ValueError, match="dtype must be torch.uint8 or a floating dtype, got torch.int32"):
        read_image(tmp_path / "ok.png", dtype=torch.int32)
    with pytest.raises(ValueError, match="size must be positive"):
        read_image(tmp_path / "ok.png", size=0)
    with pytest.raises(TypeError, match="size must be an int"):
        read_image(tmp_path / "ok.png", size=(1, 2, 3))


def test_image_size_reads_only_the_header(tmp_path):
    a = np.random.default_rng(4).integers(0, 256, (300, 200), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])  # pixels truncated, header intact
    assert image_size(tmp_path / "cut.png") == (300, 200)
    with pytest.raises(ValueError, match="cut.png"):
        read_image(tmp_path / "cut.png")
