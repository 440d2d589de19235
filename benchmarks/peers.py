"""What DADAM is measured against: the memory roofline, a naive loop, kornia, DALI and the offline reference.

Each peer does the same job on the same batch and, where it can, with the same params, so its output can be
compared with DADAM's. Optional peers (kornia, DALI, the offline modules) are imported inside the functions that use
them; :func:`unavailable` says why one cannot run here.
"""

from __future__ import annotations

import importlib
import pathlib
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence

import torch

from benchmarks.config import DADAM
from benchmarks.inputs import write_jpegs
from dadam import LabelStats, PatchBank
from dadam.files import atomic_write
from dadam.sampling import MODE_BLEND, MODE_PASTE, DadamParams

__all__ = [
    "DaliMultiPaste",
    "kornia_mix",
    "naive_paste_loop",
    "offline_export",
    "offline_per_image",
    "roofline_calls",
    "unavailable",
]


def unavailable(module: str) -> str | None:
    """None when ``module`` imports, else the reason: ``"<module> not installed"`` or ``"... not importable (...)"``.

    Example:
        >>> unavailable("torch") is None, unavailable("no_such_module_here")
        (True, 'no_such_module_here not installed')
    """
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        # not found on the path (rather than blocked by a None entry in sys.modules, or a missing dependency)
        if e.name not in sys.modules and (module + ".").startswith(f"{e.name}."):
            return f"{module} not installed"
        return f"{module} not importable ({type(e).__name__}: {e})"
    except Exception as e:
        return f"{module} not importable ({type(e).__name__}: {e})"
    return None


def roofline_calls(images: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """The memory roofline of an out-of-place op over ``images``: it reads and writes every byte once.

    Returns:
        ``"clone"``: ``images.clone()``, a fresh output per call (the roofline of the table); ``"reused copy"``: a copy
        into one output buffer allocated here, which skips the allocator. On the CPU a large fresh output costs one
        page fault per 4 KiB page on first touch (glibc maps blocks over its mmap threshold, 32 MiB at most, anew
        for every call); an op whose outputs come from a pool can beat the clone, never the reused copy.
    """
    out = torch.empty_like(images)
    return {"clone": images.clone, "reused copy": lambda: out.copy_(images)}


def naive_paste_loop(
    images: torch.Tensor, labels: torch.Tensor, params: DadamParams, patches: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """What a user would write: for every sample and slot, slice-assign (paste) or blend the patch, fix the labels.

    Uses the same params as DADAM (so the outputs can be compared) and DADAM's value convention: float images get
    ``patch / 255``; a blend is ``a * q + (1 - a) * x`` in float32 (rounded half-to-even for uint8).

    Args:
        images: ``(B, C, H, W)`` uint8 or float in [0, 1].
        labels: ``(B, 26)`` labels.
        params: the :class:`~dadam.sampling.DadamParams` of a DADAM call (hard labels).
        patches: the bank's patches, ``patches[i]`` a ``(h, w)`` uint8 tensor on the images' device.

    Returns:
        ``(images, labels)``, new tensors.
    """
    out = images.clone()
    new_labels = labels.clone()
    boxes, pids = params.boxes.tolist(), params.patch_ids.tolist()
    active, modes, classes = params.active.tolist(), params.mode.tolist(), params.classes.tolist()
    is_float = images.dtype.is_floating_point
    for b in range(images.shape[0]):
        if modes[b] == MODE_PASTE:
            new_labels[b] = 0
        for k in range(len(active[b])):
            if not active[b][k]:
                continue
            x0, y0, x1, y1 = boxes[b][k]
            patch = patches[pids[b][k]]
            if modes[b] == MODE_PASTE:
                out[b, :, y0:y1, x0:x1] = patch / 255 if is_float else patch
            elif modes[b] == MODE_BLEND:
                a = params.alpha[b, k]
                q = patch.float() / 255 if is_float else patch.float()
                mixed = a * q + (1 - a) * out[b, :, y0:y1, x0:x1].float()
                out[b, :, y0:y1, x0:x1] = mixed if is_float else mixed.round().clamp(0, 255)
            new_labels[b, classes[b][k]] = 1
    return out, new_labels


def kornia_mix(kind: str, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], object]:
    """A kornia CutMix (``kind="cutmix"``) or MixUp (``"mixup"``) call that also mixes the multi-hot labels.

    kornia mixes class ids; the call passes the row index as the class and mixes the label rows with the returned
    pairing and lambda.
    """
    import kornia.augmentation as K

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "cutmix":
            aug = K.RandomCutMixV2(data_keys=["input", "class"], use_correct_lambda=True, p=1.0)
        else:
            aug = K.RandomMixUpV2(data_keys=["input", "class"], p=1.0)
    aug = aug.to(images.device)
    index = torch.arange(images.shape[0], device=images.device)

    def run():
        out, mix = aug(images, index)
        if kind == "cutmix":  # (num_mix=1, B, 3): (own, paired, lambda = 1 - cut area) -> weight of the own labels
            perm, lam = mix[0, :, 1].long(), mix[0, :, 2, None]
            y = lam * labels + (1 - lam) * labels[perm]
        else:  # (B, 3): image = x * (1 - lambda) + x[perm] * lambda
            perm, lam = mix[:, 1].long(), mix[:, 2, None]
            y = (1 - lam) * labels + lam * labels[perm]
        return out, y

    return run


class DaliMultiPaste:
    """DALI ``fn.multi_paste`` with DADAM's params: input 0 is the image (the background), inputs 1..K the patches.

    Pastes only (``multi_paste`` has no blend): a blend slot is pasted. Inactive slots get a 0x0 region. A call does
    the work of the other rows and nothing more or less:

    - the pipeline runs synchronously (``exec_async=False, exec_pipelined=False, prefetch_queue_depth=1``): nothing
      runs ahead of the call or after it, and the inputs are fed inside the call, so there is nothing to prefetch;
    - DALI reads the caller's image buffer (``no_copy=True``), as DADAM reads its input tensor;
    - the output is computed when the call returns and is handed over as a ``(B, H, W, C)`` torch tensor
      (``torch.from_dlpack``, as DALI's PyTorch iterator does under the dynamic executor);
    - it uses ``threads`` CPU threads: pass ``torch.get_num_threads()``, the threads of the torch rows.

    Args:
        images: ``(B, C, H, W)`` uint8 or float32.
        params: the DADAM params whose patches are pasted.
        patches: the bank's patches, ``patches[i]`` a ``(h, w)`` uint8 tensor.
        device: where the pipeline runs (``cpu`` or ``cuda``).
        threads: DALI's CPU threads.
    """

    def __init__(self, images, params: DadamParams, patches, *, device: torch.device, threads: int) -> None:
        import numpy as np
        from nvidia.dali import fn, pipeline_def, types

        B, C, H, W = images.shape
        K = params.active.shape[1]
        self.threads = threads
        dali_type = {torch.uint8: types.UINT8, torch.float32: types.FLOAT}[images.dtype]
        gpu = device.type == "cuda"
        np_images = np.ascontiguousarray(images.permute(0, 2, 3, 1).cpu().numpy())  # (B, H, W, C)
        boxes, pids, active = params.boxes.cpu().tolist(), params.patch_ids.cpu().tolist(), params.active.cpu().tolist()
        empty = np.zeros((1, 1, C), np_images.dtype)
        self.feeds: dict[str, object] = {"img": np_images}
        for k in range(K):
            feed = []
            for b in range(B):
                if active[b][k]:
                    p = patches[pids[b][k]].cpu().numpy().astype(np_images.dtype)
                    if np_images.dtype != np.uint8:
                        p = p / np.float32(255)
                    feed.append(np.ascontiguousarray(np.repeat(p[:, :, None], C, axis=2)))
                else:
                    feed.append(empty)
            self.feeds[f"p{k}"] = feed
        if gpu:  # image and patch feeds live on the GPU (DALI reads torch's __cuda_array_interface__)
            self.feeds = {
                name: torch.from_numpy(feed).to(device)
                if name == "img"
                else [torch.from_numpy(a).to(device) for a in feed]
                for name, feed in self.feeds.items()
            }
        self.feeds["oa"] = [
            np.array([[0, 0]] + [[boxes[b][k][1], boxes[b][k][0]] for k in range(K)], np.int32) for b in range(B)
        ]
        self.feeds["sh"] = [
            np.array(
                [[H, W]]
                + [
                    [boxes[b][k][3] - boxes[b][k][1], boxes[b][k][2] - boxes[b][k][0]] if active[b][k] else [0, 0]
                    for k in range(K)
                ],
                np.int32,
            )
            for b in range(B)
        ]
        where = "gpu" if gpu else "cpu"

        @pipeline_def(
            batch_size=B,
            num_threads=threads,
            device_id=(device.index or 0) if gpu else None,
            exec_dynamic=True,
            exec_async=False,
            exec_pipelined=False,
            prefetch_queue_depth=1,
        )
        def pipe():
            img = fn.external_source(name="img", layout="HWC", dtype=dali_type, device=where, no_copy=True)
            pats = [
                fn.external_source(name=f"p{k}", layout="HWC", dtype=dali_type, device=where, no_copy=True)
                for k in range(K)
            ]
            oa = fn.external_source(name="oa", dtype=types.INT32)
            sh = fn.external_source(name="sh", dtype=types.INT32)
            return fn.multi_paste(img, *pats, out_anchors=oa, shapes=sh, output_size=[H, W], device=where)

        self.pipe = pipe()
        self.pipe.build()

    def __call__(self) -> torch.Tensor:
        """One batch: ``(B, H, W, C)`` on the pipeline's device."""
        for name, feed in self.feeds.items():
            self.pipe.feed_input(name, feed)
        (out,) = self.pipe.run()
        return torch.from_dlpack(out.as_tensor())

    def output(self) -> torch.Tensor:
        """The pasted batch as ``(B, C, H, W)`` on the CPU."""
        return self().permute(0, 3, 1, 2).cpu()


def offline_per_image(
    images: torch.Tensor, online: torch.Tensor, params: DadamParams, bank: PatchBank, folder: pathlib.Path
) -> tuple[list[float], list[int], bool]:
    """The offline reference, one image at a time: ``placements`` + ``augment_image`` + a PNG written atomically.

    Args:
        images: ``(n, 1, S, S)`` uint8 source images on the CPU.
        online: ``(n, 1, S, S)`` DADAM's output on the same params (the expected result).
        params: the params of the ``n`` images.
        bank: the patch bank (CPU).
        folder: where the PNGs go.

    Returns:
        ``(seconds, bytes, equal)``: seconds and PNG bytes of each image, and whether every output equals ``online``.
    """
    import numpy as np
    from PIL import Image

    from dadam.offline import augment_image, placements

    times, sizes, equal = [], [], True
    for i in range(images.shape[0]):
        t0 = time.perf_counter()
        out = augment_image(images[i, 0].numpy(), placements(bank, params, i))
        path = atomic_write(
            folder / f"{i:07d}.png", lambda f, out=out: Image.fromarray(out).save(f, format="PNG", compress_level=6)
        )
        times.append(time.perf_counter() - t0)
        sizes.append(path.stat().st_size)
        equal &= bool(np.array_equal(out, online[i, 0].numpy()))
    return times, sizes, equal


def offline_export(n: int, canvas: int, bank: PatchBank, stats: LabelStats, *, seed: int = 0) -> tuple[float, int, int]:
    """``dadam.export.export`` end to end on ``n`` phantom JPEGs (decode, resize, augment, PNG, CSV, manifest).

    One untimed export of one image first (imports, caches).

    Returns:
        ``(seconds, bytes, written)``: wall seconds of the timed export, bytes it wrote, images it wrote.
    """
    from dadam.export import export

    with tempfile.TemporaryDirectory(prefix="dadam_export_") as tmp:
        src, out = pathlib.Path(tmp) / "src", pathlib.Path(tmp) / "out"
        src.mkdir()
        table = write_jpegs(src, n, canvas, seed=seed)
        export(table.iloc[:1], src, bank, stats, pathlib.Path(tmp) / "warmup", config=DADAM, seed=seed, progress=False)
        t0 = time.perf_counter()
        report = export(table, src, bank, stats, out, config=DADAM, seed=seed, progress=False)
        wall = time.perf_counter() - t0
        nbytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return wall, nbytes, report.written
