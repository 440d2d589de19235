"""Shared test helpers: the ``check_op`` kernel checker (torchvision ``check_kernel`` style), synthetic banks,
images and label tables, slow obviously-correct references of DADAM's ops, and the location of the real test data."""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import pytest
import torch

from dadam.bank import PatchBank
from dadam.labels import CXR_LT_CLASSES, NO_FINDING

__all__ = [
    "SHARED_DATA",
    "DeviceLog",
    "assert_device_assert_stops",
    "assert_same_format",
    "check_op",
    "fake_cuda",
    "make_bank",
    "make_images",
    "make_label_table",
    "memory_format_of",
    "reference_match",
    "reference_paste",
    "require_shared_data",
    "running_in_ci",
    "train_config",
    "write_nih_training_set",
]

NF = CXR_LT_CLASSES.index(NO_FINDING)
IMAGE_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32)

# The real sample files (see their README.md): ``shared/data`` next to the repository, or $DADAM_SHARED_DATA.
SHARED_DATA = pathlib.Path(
    os.environ.get("DADAM_SHARED_DATA") or pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
)


def running_in_ci() -> bool:
    """Whether the ``CI`` environment variable is set to a true value (``true``, ``1``, ``yes``; any case)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_shared_data(path: pathlib.Path = SHARED_DATA) -> pathlib.Path:
    """``path`` if it is a folder; else the test fails under CI (``CI=true``) and is skipped otherwise.

    Either way the message names the missing folder, and a skip shows in pytest's summary (``-ra``).
    """
    if path.is_dir():
        return path
    message = (
        f"real test data not found: {path} is missing (put the shared data folder there or set DADAM_SHARED_DATA "
        "to its location)"
    )
    if running_in_ci():
        pytest.fail(f"{message}; CI is set, so tests that need it fail instead of skipping", pytrace=False)
    pytest.skip(message)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.preserve_format


def assert_same_format(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == ref.dtype, (out.dtype, ref.dtype)
    assert out.device == ref.device, (out.device, ref.device)
    assert memory_format_of(out) == memory_format_of(ref), (out.stride(), ref.stride())


def assert_device_assert_stops(setup: str, call: str, message: str) -> None:
    """Run ``setup``, then ``call`` without host syncs (``torch.cuda.set_sync_debug_mode("error")``), then a
    synchronisation, in a child Python at the repository root: a device-side assert must stop the child before it
    gets past the synchronisation (an assert ends its process, hence the child), with ``message`` or CUDA's
    "device-side assert" on its stderr. ``setup`` is Python source after ``import torch``, one statement a line."""
    code = (
        f"import torch\n{setup}"
        f"torch.cuda.set_sync_debug_mode('error')\n{call}\n"
        "torch.cuda.set_sync_debug_mode('default')\ntorch.cuda.synchronize()\nprint('not stopped')\n"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root)
    assert res.returncode != 0 and "not stopped" not in res.stdout
    assert message in res.stderr or "device-side assert" in res.stderr, res.stderr[-2000:]


def _to(v, device):
    return v.to(device) if isinstance(v, torch.Tensor) else v


def check_op(
    op: Callable[..., torch.Tensor],
    images: torch.Tensor,
    batch_args: Mapping[str, torch.Tensor],
    *,
    other_args: Mapping[str, object] | None = None,
    reference: Callable[..., torch.Tensor] | None = None,
    cuda: bool = False,
    inplace: bool = False,
) -> torch.Tensor:
    """Check an image op ``op(images, **batch_args, **other_args)`` the way torchvision's ``check_kernel`` does.

    Checks: inputs not mutated (``_version`` unchanged and values equal), output dtype / device / shape / memory
    format equal to the input's, batched == per-sample (every ``batch_args`` tensor is sliced along dim 0 with the
    images), empty batch gives an empty output of the same format, equal to ``reference`` when given (exactly),
    and, with ``cuda=True``, CPU output == CUDA output exactly.

    With ``inplace=True`` the op writes into its images and returns them: every call gets a fresh copy of the images,
    must return that very tensor (same object, same storage) and leaves every other input untouched.

    Returns:
        the op's output on the batch.
    """
    other_args = dict(other_args or {})
    tensors = [images, *batch_args.values(), *(v for v in other_args.values() if isinstance(v, torch.Tensor))]
    versions = [t._version for t in tensors]
    copies = [t.clone() for t in tensors]
    if inplace:
        plain_op = op

        def op(imgs, **kw):
            target = imgs.clone(memory_format=torch.preserve_format)
            ptr = target.data_ptr()
            result = plain_op(target, **kw)
            assert result is target and result.data_ptr() == ptr, "an in-place op must return its input tensor"
            return result

    out = op(images, **batch_args, **other_args)

    assert [t._version for t in tensors] == versions, "op mutated an input in place"
    for t, c in zip(tensors, copies, strict=True):
        assert torch.equal(t, c), "op changed an input's values"
    assert_same_format(out, images)

    # batched == per-sample
    for b in range(images.shape[0]):
        one = op(images[b : b + 1], **{k: v[b : b + 1] for k, v in batch_args.items()}, **other_args)
        assert torch.equal(one[0], out[b]), f"sample {b}: batched output differs from per-sample output"

    # empty batch
    empty = op(images[:0], **{k: v[:0] for k, v in batch_args.items()}, **other_args)
    assert_same_format(empty, images[:0])

    if reference is not None:
        ref = reference(images, **batch_args, **other_args)
        assert torch.equal(out, ref), f"op differs from the reference at {int((out != ref).sum())} elements"

    if cuda:
        dev = torch.device("cuda")
        out_cuda = op(
            images.to(dev),
            **{k: v.to(dev) for k, v in batch_args.items()},
            **{k: _to(v, dev) for k, v in other_args.items()},
        )
        assert out_cuda.device.type == "cuda"
        assert memory_format_of(out_cuda) == memory_format_of(images)
        assert torch.equal(out_cuda.cpu(), out), "CPU and CUDA outputs differ"
    return out


def make_images(
    batch: int, channels: int, size: int, dtype: torch.dtype, *, channels_last: bool = False, seed: int = 0
) -> torch.Tensor:
    """Random images ``(B, C, size, size)``: uint8 0..255 or float in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, channels, size, size), generator=g, dtype=torch.uint8)
    if dtype != torch.uint8:
        x = (torch.rand(batch, channels, size, size, generator=g)).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def make_bank(
    classes: Mapping[str, int] | None = None,
    *,
    canvas: int = 64,
    min_size: int = 3,
    max_size: int = 20,
    seed: int = 0,
) -> PatchBank:
    """A synthetic bank: ``classes[name]`` random uint8 patches of each class, random sizes and positions."""
    classes = classes or {"Fibrosis": 3, "Hernia": 2, "Pneumoperitoneum": 2, "Mass": 3, "Nodule": 4, "Cardiomegaly": 2}
    g = torch.Generator().manual_seed(seed)
    patches, boxes, names = [], [], []
    for name, n in classes.items():
        for _ in range(n):
            h, w = (int(v) for v in torch.randint(min_size, max_size + 1, (2,), generator=g))
            y0 = int(torch.randint(0, canvas - h + 1, (1,), generator=g))
            x0 = int(torch.randint(0, canvas - w + 1, (1,), generator=g))
            patches.append(torch.randint(0, 256, (h, w), generator=g, dtype=torch.uint8))
            boxes.append([x0, y0, x0 + w, y0 + h])
            names.append(name)
    return PatchBank.from_patches(
        patches, boxes, names, canvas=canvas, donors=[f"d{i}" for i in range(len(names))], sources=["syn"] * len(names)
    )


def make_label_table(n: int = 4000, *, seed: int = 0, normal_fraction: float = 0.3) -> torch.Tensor:
    """A ``(n, 26)`` label matrix with long-tailed frequencies, normal rows and known positive correlations.

    Frequencies follow half the CXR-LT frequencies; Fibrosis, Hernia and Pneumoperitoneum get about 3 % each. Mass and Nodule are made to co-occur with Fibrosis and Hernia (so
    they are positively correlated companions of those tail classes); Cardiomegaly is independent.
    """
    from dadam.labels import CXR_LT_TRAIN_COUNTS, CXR_LT_TRAIN_IMAGES

    g = torch.Generator().manual_seed(seed)
    freq = torch.tensor([CXR_LT_TRAIN_COUNTS[c] / CXR_LT_TRAIN_IMAGES for c in CXR_LT_CLASSES])
    y = (torch.rand(n, 26, generator=g) < freq * 0.5).float()
    ci = CXR_LT_CLASSES.index
    tails = torch.tensor([ci("Fibrosis"), ci("Hernia"), ci("Pneumoperitoneum")])
    rows = torch.rand(n, generator=g) < 0.1  # about 10 % of the rows show one of the three tail classes
    y[rows, tails[torch.randint(0, 3, (int(rows.sum()),), generator=g)]] = 1.0
    for tail, comp in (
        ("Fibrosis", "Mass"),
        ("Fibrosis", "Nodule"),
        ("Hernia", "Nodule"),
        ("Pneumoperitoneum", "Mass"),
    ):
        co = (y[:, ci(tail)] > 0) & (torch.rand(n, generator=g) < 0.6)
        y[co, ci(comp)] = 1.0
    y[:, NF] = 0.0
    y[y.sum(1) == 0, NF] = 1.0
    normal = torch.rand(n, generator=g) < normal_fraction
    y[normal] = 0.0
    y[normal, NF] = 1.0
    return y


def _active_patches(bank: PatchBank, boxes: torch.Tensor, patch_ids: torch.Tensor, active: torch.Tensor):
    """``(b, k, patch, x0, y0)`` for each active slot in order, ``patch`` its ``(h, w)`` uint8 numpy array read from
    the bank's flat buffer by hand: the loop both references run."""
    for b in range(patch_ids.shape[0]):
        for k in range(patch_ids.shape[1]):
            if not bool(active[b, k]):
                continue
            i = int(patch_ids[b, k])
            h, w = int(bank.sizes[i, 0]), int(bank.sizes[i, 1])
            off = int(bank.offsets[i])
            yield b, k, bank.pixels[off : off + h * w].numpy().reshape(h, w), int(boxes[b, k, 0]), int(boxes[b, k, 1])


def reference_paste(
    bank: PatchBank,
    images: torch.Tensor,
    boxes: torch.Tensor,
    patch_ids: torch.Tensor,
    active: torch.Tensor,
    alpha: torch.Tensor,
    *,
    gain: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    feather: int = 0,
    **_ignored,
) -> torch.Tensor:
    """Slow numpy reference of ``paste_patches`` with the bank's buffers (as ``paste_with_bank``): loop over samples,
    slots and patch rows, float32 formula per row.

    Per pixel: ``m = clip(g * q + o, 0, 255)`` with a map, ``p = m`` (uint8) or ``m / 255`` (float images), the
    weight ``w = a * min(1, (d + 0.5) / feather)`` with ``d`` the distance to the nearest box edge (``w = a`` without
    feather), ``v = p`` where ``w >= 1`` else ``w * p + (1 - w) * x``, rounded half to even for uint8.
    """
    out = images.clone()
    B, C, H, W = images.shape
    f32 = np.float32
    for b, k, patch, x0, y0 in _active_patches(bank, boxes, patch_ids, active):
        h, w = patch.shape
        q = patch.astype(np.float32)
        if gain is not None:
            q = np.clip(f32(float(gain[b, k])) * q + f32(float(offset[b, k])), f32(0), f32(255))
        a = f32(float(alpha[b, k]))
        for c in range(C):
            for r in range(h):
                y = y0 + r
                if not 0 <= y < H:
                    continue
                cols = [cx for cx in range(w) if 0 <= x0 + cx < W]
                if not cols:
                    continue
                xs = np.array(cols)
                bg = images[b, c, y, x0 + xs].to(torch.float32).numpy()
                qq = q[r, xs] if images.dtype == torch.uint8 else q[r, xs] / f32(255)
                wt = np.full(len(xs), a, np.float32)
                if feather:
                    d = np.minimum(min(r, h - 1 - r), np.minimum(xs, w - 1 - xs)).astype(np.float32)
                    wt = a * np.minimum((d + f32(0.5)) / f32(feather), f32(1))
                v = np.where(wt >= 1, qq, wt * qq + (f32(1) - wt) * bg)
                if images.dtype == torch.uint8:
                    val = torch.from_numpy(np.clip(np.round(v), 0, 255).astype(np.uint8))
                else:
                    val = torch.from_numpy(v.astype(np.float32)).to(images.dtype)
                out[b, c, y, x0 + xs] = val
    return out


def reference_match(
    bank: PatchBank,
    images: torch.Tensor,
    boxes: torch.Tensor,
    patch_ids: torch.Tensor,
    active: torch.Tensor,
    *,
    mode: str,
    **_ignored,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow reference of ``match_intensity`` with the bank's buffers (as ``match_with_bank``): per slot, Python-int
    sums over the box inside the image (channel 0; float images as ``rint(clip(255 * x, 0, 255))``), then the map in
    numpy float32 scalars."""
    B, K = patch_ids.shape
    H, W = images.shape[2:]
    gain, offset = torch.ones(B, K), torch.zeros(B, K)
    f32 = np.float32

    def flt(v: int) -> np.float32:  # one rounding of the exact integer
        return np.array(v, np.int64).astype(np.float32)

    for b, k, patch, x0, y0 in _active_patches(bank, boxes, patch_ids, active):
        xs, qs = [], []
        for r in range(patch.shape[0]):
            for c in range(patch.shape[1]):
                y, x = y0 + r, x0 + c
                if 0 <= y < H and 0 <= x < W:
                    v = images[b, 0, y, x]
                    if images.dtype != torch.uint8:
                        v = np.rint(np.clip(f32(float(v)) * f32(255), 0, 255))
                    xs.append(int(v))
                    qs.append(int(patch[r, c]))
        n = len(xs)
        if n == 0:
            continue
        mx, mq = flt(sum(xs)) / flt(n), flt(sum(qs)) / flt(n)
        g = f32(1)
        if mode == "meanstd":
            vx = n * sum(v * v for v in xs) - sum(xs) ** 2
            vq = n * sum(v * v for v in qs) - sum(qs) ** 2
            if vq > 0:
                g = min(max(np.sqrt(flt(vx) / flt(vq)), f32(0.25)), f32(4))
        gain[b, k] = float(g)
        offset[b, k] = float(mx - g * mq)
    return gain, offset


def paste_with_bank(bank: PatchBank, images, boxes, patch_ids, active, alpha, *, path: str, **options) -> torch.Tensor:
    """``dadam.ops.paste_patches`` with a bank's buffers (``options``: its keyword options), the op under test in the
    ops and kernel tests."""
    from dadam.ops import paste_patches

    args = (bank.pixels, bank.offsets, bank.sizes, boxes, patch_ids, active, alpha)
    return paste_patches(images, *args, max_size=bank.max_size, path=path, **options)


def match_with_bank(bank: PatchBank, images, boxes, patch_ids, active, *, mode: str, path: str, **options):
    """``dadam.ops.match_intensity`` with a bank's buffers (``options``: its keyword options), the op under test in
    the ops and kernel tests."""
    from dadam.ops import match_intensity

    args = (bank.pixels, bank.offsets, bank.sizes, boxes, patch_ids, active)
    return match_intensity(images, *args, mode=mode, max_size=bank.max_size, path=path, **options)


def train_config(data: pathlib.Path, out: pathlib.Path, **fields):
    """A ``fpsm.train.TrainConfig`` for a small run on the CPU: the labels-csv folder ``data`` (``train.csv``, and
    ``val.csv`` as the official validation split), ``resnet10t``, no loader workers, no progress bar or TensorBoard,
    a log line per step, lr 1e-3, into ``out``; ``fields`` set these or any other field."""
    from fpsm.train import TrainConfig

    base = dict(
        dataset="labels-csv",
        root=str(data),
        train_csv=str(data / "train.csv"),
        val_csv=str(data / "val.csv"),
        val_split="official",
        out_dir=str(out),
        backbone="resnet10t",
        num_workers=0,
        device="cpu",
        progress=False,
        tensorboard=False,
        log_every=1,
        lr=1e-3,
    )
    return TrainConfig(**{**base, **fields})


def write_nih_training_set(
    folder: pathlib.Path,
    shared_data: pathlib.Path,
    *,
    side: int,
    canvas: int,
    seed: int,
    val_rows: int,
    unknown_fraction: float = 0.0,
) -> None:
    """A small training set for fpsm.train from the 32 real NIH images (``shared_data / "nih14"``).

    Writes ``folder/images/*.png`` (grey, resized to ``side``), ``train.csv`` (every image; random multi-hot CXR-LT
    labels, 30% positives, NaN = unknown at ``unknown_fraction``), ``val.csv`` (its first ``val_rows`` rows) and
    ``bank.safetensors`` (a patch bank of the NIH boxes at ``canvas``).
    """
    import pandas as pd
    from PIL import Image

    from dadam.formats import read_nih_boxes

    (folder / "images").mkdir(parents=True)
    paths = sorted((shared_data / "nih14" / "images").glob("*.png"))
    for path in paths:
        with Image.open(path) as im:
            im.convert("L").resize((side, side), Image.BILINEAR).save(folder / "images" / path.name)
    rng = np.random.default_rng(seed)
    y = (rng.random((len(paths), len(CXR_LT_CLASSES))) < 0.3).astype(float)
    if unknown_fraction:
        y[rng.random(y.shape) < unknown_fraction] = np.nan
    df = pd.DataFrame(y, columns=list(CXR_LT_CLASSES))
    df.insert(0, "path", [f"images/{p.name}" for p in paths])
    df.insert(0, "image_id", [p.name for p in paths])
    df.to_csv(folder / "train.csv", index=False)
    df.iloc[:val_rows].to_csv(folder / "val.csv", index=False)
    boxes = read_nih_boxes(shared_data / "nih14" / "BBox_List_2017.csv")
    bank = PatchBank.from_boxes(boxes, shared_data / "nih14" / "images", canvas=canvas, progress=False, workers=1)
    bank.save(folder / "bank.safetensors")


# ---------------------------------------------------------------- fake CUDA: launches and host syncs without a GPU

# aten ops that allocate or describe a tensor without running a kernel on the device
_NO_KERNEL = (
    "aten.empty.memory_format",
    "aten.empty_like.default",
    "aten.empty_strided.default",
    "aten.new_empty.default",
    "aten.new_empty_strided.default",
    "aten.lift_fresh.default",
    "aten.detach.default",
)
# aten ops whose output shape or value needs the host to read device memory
_SYNCING = (
    "aten._local_scalar_dense",
    "aten.is_nonzero",
    "aten.equal",
    "aten.nonzero",
    "aten.masked_select",
    "aten._unique2",
    "aten.unique_consecutive",
    "aten.unique_dim",
)


class DeviceLog:
    """What ran on the (fake) CUDA device while :meth:`recording`: kernel launches and host syncs.

    ``launches``: one entry per aten op that runs a kernel on a CUDA tensor (views, ``empty*`` and metadata ops are
    not launches) and per Triton kernel launched. ``syncs``: reads of device values by the host (``.item()``,
    ``bool()``, ``nonzero``, ...), copies from the device to the host, copies from pageable host memory to the
    device, and ``torch.cuda.synchronize()``.
    """

    def __init__(self) -> None:
        self.launches: list[str] = []
        self.syncs: list[str] = []
        self.active = False

    @contextlib.contextmanager
    def recording(self) -> Iterator[DeviceLog]:
        from torch.utils._python_dispatch import TorchDispatchMode

        log = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                log._aten(func, args, kwargs)
                return func(*args, **kwargs)

        self.launches, self.syncs = [], []
        self.active = True
        try:
            with _Mode():
                yield self
        finally:
            self.active = False

    def _aten(self, func, args, kwargs) -> None:
        name = str(func)
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        on_cuda = any(t.device.type == "cuda" for t in tensors) or str(kwargs.get("device", "")).startswith("cuda")
        to_cuda = str(kwargs.get("device", "")).startswith("cuda")
        if name.startswith(("aten._to_copy", "aten.copy_")) and tensors:
            src = tensors[-1] if name.startswith("aten.copy_") else tensors[0]
            dst_cuda = to_cuda if name.startswith("aten._to_copy") else tensors[0].device.type == "cuda"
            if src.device.type == "cuda" and not dst_cuda and (name.startswith("aten.copy_") or "device" in kwargs):
                self.syncs.append(f"{name} (device to host)")
            elif src.device.type == "cpu" and dst_cuda and not _pinned(src):
                self.syncs.append(f"{name} (pageable host to device)")
        if on_cuda and name.startswith(_SYNCING):
            self.syncs.append(name)
        if not on_cuda or name.startswith("prim.") or getattr(func, "is_view", False) or name in _NO_KERNEL:
            return
        self.launches.append(name)


def _pinned(t: torch.Tensor) -> bool:
    try:
        return bool(t.is_pinned())
    except RuntimeError:  # no CUDA driver: nothing can be pinned here
        return False


@contextlib.contextmanager
def fake_cuda(on_launch: Callable[[str], None] | None = None) -> Iterator[DeviceLog]:
    """Run CUDA code on this machine without a GPU: ``torch.*(device="cuda")`` makes fake tensors (shapes, dtypes,
    strides, no data: ``FakeTensorMode``), Triton launches are recorded instead of run (and passed to ``on_launch``,
    which may raise), ``torch.cuda.synchronize`` is recorded as a sync. Yields a :class:`DeviceLog`; wrap the code to
    count in ``log.recording()``.

    Example:
        >>> with fake_cuda() as log:  # doctest: +SKIP
        ...     aug = aug.to("cuda")
        ...     with log.recording():
        ...         aug(torch.rand(8, 1, 64, 64, device="cuda"), labels.to("cuda"))
        ...     print(len(log.launches), log.syncs)
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    log = DeviceLog()
    mp = pytest.MonkeyPatch()
    try:
        from triton.runtime.jit import JITFunction

        def run(self, *args, grid, warmup, **kwargs):
            if warmup:
                return None  # nothing to build: no GPU
            name = f"triton {getattr(self, '__name__', self)} grid={tuple(grid)}"
            if on_launch is not None:
                on_launch(name)
            if log.active:
                log.launches.append(name)
            return None

        mp.setattr(JITFunction, "run", run)
    except ImportError:  # no Triton: nothing to patch
        pass
    mp.setattr(torch.cuda, "synchronize", lambda *a, **k: log.syncs.append("torch.cuda.synchronize"))
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            yield log
    finally:
        mp.undo()
