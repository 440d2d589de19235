"""Tests of the Triton paste kernel (``dadam.kernels``): on CPU tensors it runs under Triton's interpreter (the same
kernel source, one program at a time), compared exactly with the loop path; its PTX for sm_90 is compiled here
(no GPU needed) to check the float operations; the ``gpu`` tests run the compiled kernel on CUDA."""

import functools
import re

import pytest
import torch

import dadam.ops
from dadam import DiseasedAreaAugment, LabelStats
from dadam.ops import paste_patches
from tests.helpers import (
    IMAGE_DTYPES,
    check_op,
    make_bank,
    make_images,
    make_label_table,
    paste_with_bank,
    reference_paste,
)

triton = pytest.importorskip("triton")
kernels = pytest.importorskip("dadam.kernels.paste")

CANVAS = 96
FORMATS = [(1, False), (3, False), (3, True)]  # (channels, channels_last)


@pytest.fixture(scope="module")
def bank():
    # Patches up to 70 x 70 px: several 16 x 64 tiles in both directions, some hanging over the canvas border.
    return make_bank(canvas=CANVAS, min_size=3, max_size=70, seed=2)


@pytest.fixture(scope="module")
def params(bank):
    """Sampler params with pastes and blends (alpha 0.5: exact .5 ties in uint8) for 8 samples."""
    table = make_label_table(seed=1)
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(table), p=0.9, max_patches=3, alpha=0.5, generator=4)
    p = aug.sample(torch.cat([table[table[:, 14] > 0][:4], table[(table[:, 7] > 0) | (table[:, 9] > 0)][:4]]))
    assert bool(p.active.any()) and bool((p.alpha < 1)[p.active].any()) and bool((p.alpha == 1)[p.active].any())
    return p


def _args(p):
    return {"boxes": p.boxes, "patch_ids": p.patch_ids, "active": p.active, "alpha": p.alpha}


def _random_slots(bank, B, K, *, seed, alpha=(1.0, 0.5, 0.37), spread=20):
    """Random slots anywhere around the canvas (many clipped at a border), mixed alphas, ~1/4 inactive."""
    g = torch.Generator().manual_seed(seed)
    pid = torch.randint(0, len(bank), (B, K), generator=g)
    h, w = bank.sizes[pid].unbind(-1)
    x0 = torch.randint(-spread - 60, CANVAS + spread, (B, K), generator=g)
    y0 = torch.randint(-spread - 60, CANVAS + spread, (B, K), generator=g)
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], -1)
    active = torch.rand(B, K, generator=g) < 0.75
    for b in range(B):  # the contract: active patches of one sample do not overlap (the GPU runs them at once)
        for k in range(K):
            for j in range(k):
                lo, hi = (
                    torch.maximum(boxes[b, k, :2], boxes[b, j, :2]),
                    torch.minimum(boxes[b, k, 2:], boxes[b, j, 2:]),
                )
                if active[b, j] and bool((lo < hi).all()):
                    active[b, k] = False
    alphas = torch.tensor(alpha)[torch.randint(0, len(alpha), (B, K), generator=g)]
    return {"boxes": boxes, "patch_ids": pid, "active": active, "alpha": alphas}


def _assert_same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
    diff = a.ne(b) & ~(a.isnan() & b.isnan()) if a.is_floating_point() else a.ne(b)
    assert not bool(diff.any()), f"{int(diff.sum())} elements differ, first at {diff.nonzero()[0].tolist()}"


# ---------------------------------------------------------------- interpreter (CPU tensors): the kernel's values


@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels,channels_last", FORMATS)
def test_triton_check_op(bank, params, dtype, channels, channels_last):
    # inputs untouched, format kept, batched == per-sample, empty batch, equal to the slow numpy reference
    images = make_images(len(params), channels, CANVAS, dtype, channels_last=channels_last, seed=1)
    ref = functools.partial(reference_paste, pixels=bank.pixels, offsets=bank.offsets, sizes=bank.sizes)
    op = functools.partial(paste_with_bank, bank, path="triton")
    check_op(op, images, _args(params), reference=lambda images, **kw: ref(images, **kw))


@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels,channels_last", FORMATS)
def test_triton_equals_loop_exactly(bank, dtype, channels, channels_last):
    slots = _random_slots(bank, 6, 4, seed=channels + 10 * channels_last)
    images = make_images(6, channels, CANVAS, dtype, channels_last=channels_last, seed=3)
    a = paste_with_bank(bank, images, **slots, path="loop")
    b = paste_with_bank(bank, images, **slots, path="triton")
    assert not torch.equal(a, images), "nothing was pasted: the test would prove nothing"
    _assert_same(b, a)


def test_uint8_ties_round_half_to_even(bank):
    # alpha 0.5 over backgrounds of both parities: v = (q + x) / 2 hits k + 0.5 for odd q + x.
    slots = _random_slots(bank, 1, 1, seed=7, alpha=(0.5,), spread=0)
    slots["active"][:] = True
    images = make_images(1, 1, CANVAS, torch.uint8, seed=8)
    out = paste_with_bank(bank, images, **slots, path="triton")
    b, k = 0, 0
    x0, y0 = (int(v) for v in slots["boxes"][b, k, :2])
    q = bank.patch(int(slots["patch_ids"][b, k])).int()
    ys, xs = slice(max(y0, 0), min(y0 + q.shape[0], CANVAS)), slice(max(x0, 0), min(x0 + q.shape[1], CANVAS))
    q = q[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    x = images[b, 0, ys, xs].int()
    odd = (q + x) % 2 == 1
    assert int(odd.sum()) > 10, "too few ties to test"
    half = (q + x) // 2  # floor of k + 0.5; half to even picks the even one of half, half + 1
    expect = torch.where(odd & (half % 2 == 1), half + 1, half)
    assert torch.equal(out[b, 0, ys, xs].int(), expect)


def test_absurd_boxes_do_not_wrap_into_the_image(bank):
    # x0 / y0 far outside int32: clamped before the int32 cast, so nothing is written (as in the loop path)
    slots = _random_slots(bank, 2, 2, seed=9)
    slots["active"][:] = True  # the boxes below do not overlap
    far = torch.tensor([[2**32 + 5, -(2**32) + 3], [2**40, 5]])
    slots["boxes"][..., 0] = far
    slots["boxes"][..., 1] = far.flip(0)
    images = make_images(2, 3, CANVAS, torch.float32, seed=10)
    for path in ("loop", "vectorised", "triton"):
        out = paste_with_bank(bank, images, **slots, path=path)
        assert torch.equal(out, images), path


def test_inactive_slots_empty_batch_and_no_slots(bank, params):
    images = make_images(len(params), 3, CANVAS, torch.bfloat16, channels_last=True, seed=11)
    args = _args(params)
    args["active"] = torch.zeros_like(params.active)
    out = paste_with_bank(bank, images, **args, path="triton")
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()
    empty = paste_with_bank(bank, images[:0], **{k: v[:0] for k, v in _args(params).items()}, path="triton")
    assert empty.shape == (0, 3, CANVAS, CANVAS) and empty.dtype == torch.bfloat16
    no_slots = paste_with_bank(bank, images, **{k: v[:, :0] for k, v in _args(params).items()}, path="triton")
    assert torch.equal(no_slots, images) and no_slots.data_ptr() != images.data_ptr()


def test_non_dense_images_and_nan_background(bank):
    # a transposed (neither contiguous nor channels_last) float32 image with NaNs: blends keep the NaN, pastes
    # replace it by the patch, exactly as the loop path
    slots = _random_slots(bank, 3, 3, seed=12)
    for dtype in (torch.float32, torch.bfloat16):
        images = make_images(3, 3, CANVAS, dtype, seed=13).transpose(2, 3)
        images[:, :, ::7, ::5] = float("nan")
        a = paste_with_bank(bank, images, **slots, path="loop")
        b = paste_with_bank(bank, images, **slots, path="triton")
        assert b.stride() == a.stride()
        _assert_same(b, a)
        assert bool(b.isnan().any())


def test_vectorised_int64_indices_equal_int32(bank, monkeypatch):
    # the lean vectorised path indexes with int32 below 2**31 elements; force its int64 branch and compare
    slots = _random_slots(bank, 4, 3, seed=14)
    images = make_images(4, 3, CANVAS, torch.uint8, channels_last=True, seed=15)
    small = paste_with_bank(bank, images, **slots, path="vectorised")
    monkeypatch.setattr(dadam.ops, "_INT32_LIMIT", 0)
    large = paste_with_bank(bank, images, **slots, path="vectorised")
    _assert_same(large, small)
    _assert_same(small, paste_with_bank(bank, images, **slots, path="loop"))


def test_triton_errors(bank, params, monkeypatch):
    images = make_images(len(params), 1, CANVAS, torch.uint8)
    args = _args(params)
    with pytest.raises(ValueError, match="boxes is on meta but images are on cpu"):
        paste_with_bank(bank, images, **{**args, "boxes": args["boxes"].to("meta")}, path="triton")
    with pytest.raises(ValueError, match="images dtype must be one of"):
        kernels.paste_patches_triton(
            images.to(torch.float64), bank.pixels, bank.offsets, bank.sizes, *args.values(), max_size=bank.max_size
        )
    with pytest.raises(ValueError, match="more than the grid limit"):
        kernels.paste_patches_triton(
            images, bank.pixels, bank.offsets, bank.sizes, *args.values(), max_size=(2**20, 2**20)
        )
    monkeypatch.setattr(kernels, "HAS_TRITON", False)
    with pytest.raises(RuntimeError, match="needs the 'triton' package"):
        paste_with_bank(bank, images, **args, path="triton")
    assert (
        paste_patches(
            images, bank.pixels, bank.offsets, bank.sizes, *args.values(), max_size=bank.max_size, path="auto"
        ).device.type
        == "cpu"
    )  # auto on CPU never needs Triton


# ---------------------------------------------------------------- compiled PTX (sm_90, compiled on the CPU)

_SIGNATURE = {
    "out_ptr": None,
    "pixels_ptr": "*u8",
    "offsets_ptr": "*i64",
    "sizes_ptr": "*i64",
    "boxes_ptr": "*i64",
    "patch_ids_ptr": "*i64",
    "active_ptr": "*u8",
    "alpha_ptr": "*fp32",
    **dict.fromkeys(("K", "H", "W", "stride_b", "stride_c", "stride_h", "stride_w", "tiles_w"), "i32"),
    **dict.fromkeys(("C", "KIND", "TH", "TW"), "constexpr"),
}


@pytest.mark.parametrize("elem,kind", [("fp32", 1), ("fp16", 1), ("i16", 2), ("u8", 0)])
def test_ptx_has_no_fma_and_ieee_division(elem, kind):
    # With the launch options the float math is separately rounded mul/add (no fma contraction) and q / 255 is
    # div.rn (Triton's plain '/' is the approximate div.full); the uint8 rounding constants survive optimisation.
    compiler = pytest.importorskip("triton.compiler")
    from triton.backends.compiler import GPUTarget

    src = compiler.ASTSource(
        kernels._paste_kernel,
        {**_SIGNATURE, "out_ptr": f"*{elem}"},
        constexprs={"C": 3, "KIND": kind, "TH": kernels.TILE[0], "TW": kernels.TILE[1]},
    )
    try:
        ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=kernels._OPTIONS).asm["ptx"]
    except Exception as e:  # no ptxas / LLVM backend in this install
        pytest.skip(f"cannot compile for sm_90 here: {e!r}")
    assert not re.search(r"\bfma\.", ptx), "fma contraction would break bit-identity with torch"
    assert re.search(r"\bmul\.rn\.f32", ptx) and re.search(r"\badd\.rn\.f32", ptx)
    assert not re.search(r"div\.(full|approx)", ptx)
    assert bool(re.search(r"\bdiv\.rn\.f32", ptx)) == (kind != 0)
    if kind == 0:
        assert "0f4B400000" in ptx and "0fCB400000" in ptx, "the round-half-to-even trick was folded away"


# ---------------------------------------------------------------- CUDA: the compiled kernel


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels,channels_last", FORMATS)
def test_triton_cuda_equals_loop(bank, dtype, channels, channels_last):
    gpu = bank.to("cuda")
    slots = _random_slots(bank, 16, 4, seed=20 + channels)
    images = make_images(16, channels, CANVAS, dtype, channels_last=channels_last, seed=21)
    a = paste_with_bank(bank, images, **slots, path="loop")
    b = paste_with_bank(gpu, images.cuda(), **{k: v.cuda() for k, v in slots.items()}, path="triton")
    v = paste_with_bank(gpu, images.cuda(), **{k: v.cuda() for k, v in slots.items()}, path="vectorised")
    _assert_same(b.cpu(), a)
    _assert_same(v.cpu(), a)


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["auto", "triton"])
def test_triton_cuda_no_host_sync(bank, params, path):
    gpu = bank.to("cuda")
    p = params.to("cuda")
    images = make_images(len(params), 3, CANVAS, torch.float32).cuda()
    paste_with_bank(gpu, images, **_args(p), path=path)  # compile outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = paste_with_bank(gpu, images, **_args(p), path=path)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    _assert_same(out.cpu(), paste_with_bank(bank, images.cpu(), **_args(params), path="loop"))
