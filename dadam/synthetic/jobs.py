"""Drawing and writing the images of a phantom dataset: one job per image, run in order or in a process pool.

Image ``index`` of a layout is drawn from ``numpy.random.SeedSequence([seed, index, layout_code])``, so any number of
workers writes the same bytes. Images are encoded as PNG, JPEG or a minimal DICOM (VinDr) and written atomically.
"""

from __future__ import annotations

import io
import multiprocessing
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from dadam.files import atomic_write
from dadam.synthetic.chest import Box, render_chest_with_masks
from dadam.synthetic.limbs import render_limb

__all__ = ["ImageJob", "JobResult", "draw_image", "have_pydicom", "image_rng", "run_jobs"]


@dataclass
class ImageJob:
    """One image to draw and write (picklable for the worker pool)."""

    index: int
    rel: str  # path relative to the dataset root
    fmt: str  # "png" | "jpg" | "dicom"
    labels: np.ndarray | None = None  # (26,) for chest images; None draws a limb
    part: str = ""  # MURA body part
    abnormal: bool = False
    native: tuple[int, int] | None = None  # (H, W) to resize to (VinDr)
    monochrome1: bool = False
    polygons: bool = False  # also outline each lesion (ChestX-Det)


@dataclass
class JobResult:
    """What a job drew: boxes in the written image's pixels, its size, and lesion outlines when asked for."""

    boxes: list[Box]
    height: int
    width: int
    polygons: list[list[list[int]]] = field(default_factory=list)


def image_rng(seed: int, index: int, layout_code: int) -> np.random.Generator:
    """The generator image ``index`` of a layout is drawn with (independent of the worker that draws it)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(layout_code)]))


def _outline(mask: np.ndarray) -> list[list[int]]:
    """Outline of the largest part of ``mask`` as ``[[x, y], ...]`` integer pixels (ChestX-Det style)."""
    import contourpy  # a matplotlib dependency

    lines = contourpy.contour_generator(z=mask.astype(np.float64)).lines(0.5)
    if not lines:
        return []
    line = max(lines, key=len)
    points = np.rint(line).astype(np.int64)
    keep = np.ones(len(points), bool)
    keep[1:] = np.any(points[1:] != points[:-1], axis=1)
    return points[keep].tolist()


def _dicom_bytes(img16: np.ndarray, *, monochrome1: bool, uid_seed: str) -> bytes:
    """A minimal DX DICOM file (explicit VR little endian, 16-bit allocated, 12 bits stored)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    sop_uid = generate_uid(entropy_srcs=[uid_seed, "sop"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["dadam.synthetic"])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.Modality = "DX"
    ds.PatientID = uid_seed[:16]
    ds.Rows, ds.Columns = int(img16.shape[0]), int(img16.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(img16, dtype="<u2").tobytes()
    bio = io.BytesIO()
    ds.save_as(bio, enforce_file_format=True)
    return bio.getvalue()


def have_pydicom() -> bool:
    """Whether pydicom is installed (VinDr images are written as DICOM with it, as PNG without)."""
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return False
    return True


def _encode(img: np.ndarray, job: ImageJob, uid_seed: str) -> bytes:
    if job.fmt == "dicom":
        v = np.rint(img.astype(np.float32) / 255.0 * 4095.0).astype(np.uint16)
        return _dicom_bytes(4095 - v if job.monochrome1 else v, monochrome1=job.monochrome1, uid_seed=uid_seed)
    bio = io.BytesIO()
    if job.fmt == "jpg":
        Image.fromarray(img).save(bio, format="JPEG", quality=95)
    else:
        Image.fromarray(img).save(bio, format="PNG", compress_level=1)
    return bio.getvalue()


def _resize_to_native(img: np.ndarray, boxes: list[Box], native: tuple[int, int]) -> tuple[np.ndarray, list[Box]]:
    """The image resized to ``native`` ``(H, W)`` and its boxes scaled with it, rounded outwards."""
    native_h, native_w = native
    sx, sy = native_w / img.shape[1], native_h / img.shape[0]
    img = np.asarray(Image.fromarray(img).resize((native_w, native_h), Image.BILINEAR))
    boxes = [
        (
            name,
            int(np.floor(x0 * sx)),
            int(np.floor(y0 * sy)),
            min(native_w, int(np.ceil(x1 * sx))),
            min(native_h, int(np.ceil(y1 * sy))),
        )
        for name, x0, y0, x1, y1 in boxes
    ]
    return img, boxes


def draw_image(args: tuple[str, int, int, str, int, ImageJob]) -> JobResult:
    """Worker: draw one image, write it, return its boxes (in the written image's pixels).

    Args:
        args: ``(root, size, seed, layout, layout_code, job)`` (one tuple, for ``Pool.imap``).
    """
    root, size, seed, layout, layout_code, job = args
    rng = image_rng(seed, job.index, layout_code)
    polygons: list[list[list[int]]] = []
    if job.labels is None:
        img, boxes = render_limb(job.part, abnormal=job.abnormal, size=size, rng=rng)
    else:
        img, boxes, masks = render_chest_with_masks(job.labels, size=size, rng=rng)
        if job.polygons:
            polygons = [_outline(m) for m in masks]
    if job.native is not None:
        img, boxes = _resize_to_native(img, boxes, job.native)
    path = pathlib.Path(root) / job.rel
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, _encode(img, job, f"{seed}-{layout}-{job.index}"))
    return JobResult(boxes=boxes, height=int(img.shape[0]), width=int(img.shape[1]), polygons=polygons)


def run_jobs(
    root: pathlib.Path,
    jobs: Sequence[ImageJob],
    *,
    size: int,
    seed: int,
    layout: str,
    layout_code: int,
    workers: int,
    progress: bool,
) -> list[JobResult]:
    """Draw and write every job (in a pool of ``workers`` processes when there are enough); results in job order."""
    from tqdm.auto import tqdm

    args = [(str(root), size, seed, layout, layout_code, job) for job in jobs]
    bar = tqdm(total=len(args), desc=f"phantom {layout}", unit="img", disable=not progress)
    out: list[JobResult] = []
    if workers <= 1 or len(args) < 8:
        for a in args:
            out.append(draw_image(a))
            bar.update(1)
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            for res in pool.imap(draw_image, args, chunksize=4):
                out.append(res)
                bar.update(1)
    bar.close()
    return out
