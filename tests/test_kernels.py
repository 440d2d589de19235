"""Tests of the Triton paste kernels (``dadam.kernels.paste``): on CPU tensors they run under Triton's interpreter
(the same kernel source, one program at a time), compared exactly with a slow reference and the loop path, out of
place and in place; their PTX for sm_90 is compiled here (no GPU needed) to check the float operations, the
vectorised image accesses and the registers; the ``gpu`` tests run the compiled kernels on CUDA."""

import functools
import os
import pathlib
import re
import subprocess

import pytest
import torch

import dadam.ops
import dadam.paste.vectorised
from dadam import DiseasedAreaAugment, LabelStats
from dadam.ops import OVERLAP_MESSAGE
from tests.helpers import (
    IMAGE_DTYPES,
    assert_device_assert_stops,
    check_op,
    make_bank,
    make_images,
    make_label_table,
    match_with_bank,
    paste_with_bank,
    reference_match,
    reference_paste,
)

triton = pytest.importorskip("triton")
kernels = pytest.importorskip("dadam.kernels.paste")
kernels_match = pytest.importorskip("dadam.kernels.match")

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


# ---------------------------------------------------------------- interpreter (CPU tensors): the kernels' values


# float16 / bfloat16 through check_op take a few seconds each under the interpreter: in the slow loop (the exact
# comparisons with the loop path below cover them in the quick one)
CHECK_OP_DTYPES = [
    torch.uint8,
    torch.float32,
    pytest.param(torch.float16, marks=pytest.mark.slow),
    pytest.param(torch.bfloat16, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
@pytest.mark.parametrize("dtype", CHECK_OP_DTYPES)
@pytest.mark.parametrize("channels,channels_last", FORMATS)
def test_triton_check_op(bank, params, dtype, channels, channels_last, inplace):
    # out of place: inputs untouched; in place: the images returned are the ones given; format kept, batched ==
    # per-sample, empty batch, equal to the slow numpy reference
    images = make_images(len(params), channels, CANVAS, dtype, channels_last=channels_last, seed=1)
    op = functools.partial(paste_with_bank, bank, path="triton", inplace=inplace)
    check_op(op, images, _args(params), reference=functools.partial(reference_paste, bank), inplace=inplace)


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels,channels_last", FORMATS)
def test_triton_equals_loop_exactly(bank, dtype, channels, channels_last, inplace):
    slots = _random_slots(bank, 6, 4, seed=channels + 10 * channels_last)
    images = make_images(6, channels, CANVAS, dtype, channels_last=channels_last, seed=3)
    a = paste_with_bank(bank, images, **slots, path="loop")
    target = images.clone(memory_format=torch.preserve_format)
    b = paste_with_bank(bank, target, **slots, path="triton", inplace=inplace)
    assert not torch.equal(a, images), "nothing was pasted: the test would prove nothing"
    assert (b is target) == inplace
    _assert_same(b, a)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bfloat16])
def test_image_sides_that_are_no_multiple_of_the_tile(bank, dtype):
    # 77 rows x 101 columns: partial tiles at the bottom and the right, packed and planar layouts, both kernels
    slots = _random_slots(bank, 3, 5, seed=30)
    for channels_last in (False, True):
        images = make_images(3, 3, 128, dtype, channels_last=channels_last, seed=31)[:, :, :77, :101]
        images = images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        a = paste_with_bank(bank, images, **slots, path="loop")
        assert not torch.equal(a, images)
        _assert_same(paste_with_bank(bank, images, **slots, path="triton"), a)
        target = images.clone(memory_format=torch.preserve_format)
        paste_with_bank(bank, target, **slots, path="triton", inplace=True)
        _assert_same(target, a)


def test_uint8_ties_round_half_to_even(bank):
    # alpha 0.5 over backgrounds of both parities: v = (q + x) / 2 hits k + 0.5 for odd q + x.
    slots = _random_slots(bank, 1, 1, seed=7, alpha=(0.5,), spread=0)
    slots["active"][:] = True
    images = make_images(1, 1, CANVAS, torch.uint8, seed=8)
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
    for inplace in (False, True):
        out = paste_with_bank(bank, images.clone(), **slots, path="triton", inplace=inplace)
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
        for inplace in (False, True):
            out = paste_with_bank(bank, images.clone(), **slots, path=path, inplace=inplace)
            assert torch.equal(out, images), (path, inplace)


def test_inactive_slots_empty_batch_and_no_slots(bank, params):
    images = make_images(len(params), 3, CANVAS, torch.bfloat16, channels_last=True, seed=11)
    args = _args(params)
    args["active"] = torch.zeros_like(params.active)
    out = paste_with_bank(bank, images, **args, path="triton")
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()
    assert out.is_contiguous(memory_format=torch.channels_last)
    empty = paste_with_bank(bank, images[:0], **{k: v[:0] for k, v in _args(params).items()}, path="triton")
    assert empty.shape == (0, 3, CANVAS, CANVAS) and empty.dtype == torch.bfloat16
    no_slots = {k: v[:, :0] for k, v in _args(params).items()}
    out = paste_with_bank(bank, images, **no_slots, path="triton")
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()
    target = images.clone()
    assert paste_with_bank(bank, target, **no_slots, path="triton", inplace=True) is target
    assert torch.equal(target, images)


def test_non_dense_images_and_nan_background(bank):
    # a transposed (neither contiguous nor channels_last) image and a strided slice, with NaNs: blends keep the NaN,
    # pastes replace it by the patch, exactly as the loop path, out of place and in place
    slots = _random_slots(bank, 3, 3, seed=12)
    for dtype in (torch.float32, torch.bfloat16):
        for images in (
            make_images(3, 3, CANVAS, dtype, seed=13).transpose(2, 3),
            make_images(3, 6, CANVAS, dtype, channels_last=True, seed=13)[:, ::2],
        ):
            images[:, :, ::7, ::5] = float("nan")
            a = paste_with_bank(bank, images, **slots, path="loop")
            b = paste_with_bank(bank, images, **slots, path="triton")
            assert b.stride() == a.stride()
            _assert_same(b, a)
            assert bool(b.isnan().any())
            target = images.clone(memory_format=torch.preserve_format)
            paste_with_bank(bank, target, **slots, path="triton", inplace=True)
            _assert_same(target, a)


def test_vectorised_int64_indices_equal_int32(bank, monkeypatch):
    # the lean vectorised path indexes with int32 below 2**31 elements; force its int64 branch and compare
    slots = _random_slots(bank, 4, 3, seed=14)
    images = make_images(4, 3, CANVAS, torch.uint8, channels_last=True, seed=15)
    small = paste_with_bank(bank, images, **slots, path="vectorised")
    monkeypatch.setattr(dadam.paste.vectorised, "INT32_LIMIT", 0)
    large = paste_with_bank(bank, images, **slots, path="vectorised")
    _assert_same(large, small)
    _assert_same(small, paste_with_bank(bank, images, **slots, path="loop"))


# ---------------------------------------------------------------- interpreter: the checks folded into the kernels


def _kernel(bank, images, slots, **kw):
    return kernels.paste_patches_triton(images, bank.pixels, bank.offsets, bank.sizes, *slots.values(), **kw)


def _two_slots(bank, first, second, *, active=(True, True), alpha=(1.0, 0.5)):
    """One sample, two slots with patches 0 and 1 placed at ``first`` / ``second`` = (x0, y0)."""
    pid = torch.tensor([[0, 1]])
    h, w = bank.sizes[pid].unbind(-1)
    x0 = torch.tensor([[first[0], second[0]]])
    y0 = torch.tensor([[first[1], second[1]]])
    return {
        "boxes": torch.stack([x0, y0, x0 + w, y0 + h], -1),
        "patch_ids": pid,
        "active": torch.tensor([list(active)]),
        "alpha": torch.tensor([list(alpha)]),
    }


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
def test_kernels_find_overlapping_patches(bank, inplace):
    h0, w0 = (int(v) for v in bank.sizes[0])
    images = make_images(1, 1, CANVAS, torch.uint8, seed=16)
    overlapping = _two_slots(bank, (10, 10), (10 + w0 - 1, 10 + h0 - 1))  # share the corner pixel
    with pytest.raises(ValueError, match=re.escape(OVERLAP_MESSAGE)):
        _kernel(bank, images.clone(), overlapping, inplace=inplace)
    fine = [
        _two_slots(bank, (10, 10), (10 + w0, 10)),  # side by side: touching, no common pixel
        _two_slots(bank, (10, 10), (10, 10), active=(True, False)),  # the second slot is inactive
        _two_slots(bank, (-w0 + 1, 5), (-w0 + 1, 5)),  # same place, but only one column of it in the image ...
    ]
    fine[2]["boxes"][0, 1, 0] = -w0 - 3  # ... and the second one wholly left of the image
    for slots in fine:
        out = _kernel(bank, images.clone(), slots, inplace=inplace)
        assert torch.equal(out, reference_paste(bank, images, *slots.values()))
    with pytest.raises(ValueError, match=r"must not overlap: sample 0, slots 0 and 1"):  # the op names them
        paste_with_bank(bank, images, **overlapping, path="loop")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_out_of_place_kernel_checks_every_float_pixel(bank, dtype):
    slots = _two_slots(bank, (10, 10), (60, 60))
    for bad, expect in ((None, 1), (1.5, 0), (-0.25, 0), (float("nan"), 0)):
        images = make_images(1, 3, CANVAS, dtype, channels_last=True, seed=17)
        if bad is not None:
            images[0, 2, CANVAS - 1, CANVAS - 1] = bad  # far from both patches
        ok = torch.ones(1, dtype=torch.int32)
        _kernel(bank, images, slots, ok=ok, check_values=True)
        assert int(ok) == expect, (bad, int(ok))
    images = make_images(1, 3, CANVAS, torch.uint8, seed=17)
    ok = torch.ones(1, dtype=torch.int32)
    _kernel(bank, images, slots, ok=ok, check_values=True)
    assert int(ok) == 1  # uint8 is always in range


def test_in_place_kernel_checks_the_pixels_it_reads(bank):
    # in place the kernel reads only the background of blends: a bad value there is found, elsewhere it is not
    slots = _two_slots(bank, (10, 10), (60, 60), alpha=(1.0, 0.5))  # slot 0 pasted, slot 1 blended
    where = {"under the blend": (61, 61), "under the paste": (11, 11), "outside the patches": (CANVAS - 1, 0)}
    found = {}
    for name, (x, y) in where.items():
        images = make_images(1, 1, CANVAS, torch.float32, seed=18)
        images[0, 0, y, x] = 2.0
        ok = torch.ones(1, dtype=torch.int32)
        _kernel(bank, images, slots, ok=ok, check_values=True, inplace=True)
        found[name] = int(ok) == 0
    assert found == {"under the blend": True, "under the paste": False, "outside the patches": False}


def test_triton_errors(bank, params, monkeypatch):
    images = make_images(len(params), 1, CANVAS, torch.uint8)
    args = _args(params)
    with pytest.raises(ValueError, match="boxes is on meta but images are on cpu"):
        paste_with_bank(bank, images, **{**args, "boxes": args["boxes"].to("meta")}, path="triton")
    with pytest.raises(ValueError, match="images dtype must be one of"):
        _kernel(bank, images.to(torch.float64), args)
    with pytest.raises(ValueError, match=r"check_values=True needs the caller's ok word"):
        _kernel(bank, images, args, check_values=True)
    with pytest.raises(ValueError, match="ok is on meta but images are on cpu"):
        _kernel(bank, images, args, ok=torch.ones(1, dtype=torch.int32, device="meta"))
    with pytest.raises(ValueError, match=r"inplace=True needs images whose elements do not share memory"):
        paste_with_bank(bank, images[:1].expand(4, -1, -1, -1), **_args(params[:4]), path="triton", inplace=True)
    monkeypatch.setattr(kernels, "HAS_TRITON", False)
    with pytest.raises(RuntimeError, match="needs the 'triton' package"):
        paste_with_bank(bank, images, **args, path="triton")
    assert paste_with_bank(bank, images, **args, path="auto").device.type == "cpu"  # auto on CPU never needs Triton


# ---------------------------------------------------------------- interpreter: feather, the intensity map, match


def _random_map(slots, seed):
    g = torch.Generator().manual_seed(seed)
    shape = slots["active"].shape
    return {"gain": 0.5 + 1.5 * torch.rand(shape, generator=g), "offset": 120 * torch.rand(shape, generator=g) - 60}


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
@pytest.mark.parametrize("dtype", CHECK_OP_DTYPES)
@pytest.mark.parametrize("channels,channels_last", FORMATS)
def test_triton_feather_and_map_equal_loop_exactly(bank, dtype, channels, channels_last, inplace):
    slots = _random_slots(bank, 6, 4, seed=40 + channels + 10 * channels_last)
    maps = _random_map(slots, seed=41)
    images = make_images(6, channels, CANVAS, dtype, channels_last=channels_last, seed=42)
    for options in ({"feather": 7}, {**maps, "feather": 3}):
        a = paste_with_bank(bank, images, **slots, path="loop", **options)
        assert not torch.equal(a, paste_with_bank(bank, images, **slots, path="loop")), "options ignored"
        target = images.clone(memory_format=torch.preserve_format)
        b = paste_with_bank(bank, target, **slots, path="triton", inplace=inplace, **options)
        _assert_same(b, a)


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_triton_feather_and_map_check_op(bank, params, dtype, inplace):
    images = make_images(len(params), 3, CANVAS, dtype, channels_last=True, seed=43)
    op = functools.partial(paste_with_bank, bank, path="triton", inplace=inplace)
    args = {**_args(params), **_random_map(_args(params), seed=44)}
    ref = functools.partial(reference_paste, bank)
    check_op(op, images, args, other_args={"feather": 5}, reference=ref, inplace=inplace)


def test_in_place_kernel_checks_the_background_under_a_feather_ramp(bank):
    # with feather a paste reads the background under its ramp (and only there): a bad value there is found
    slots = _two_slots(bank, (10, 10), (60, 60), alpha=(1.0, 1.0))
    where = {"on the ramp": (10, 10), "inside the full weight": (10 + 4, 10 + 4), "outside": (CANVAS - 1, 0)}
    found = {}
    for name, (x, y) in where.items():
        images = make_images(1, 1, CANVAS, torch.float32, seed=45)
        images[0, 0, y, x] = 2.0
        ok = torch.ones(1, dtype=torch.int32)
        _kernel(bank, images, slots, ok=ok, check_values=True, inplace=True, feather=2)
        found[name] = int(ok) == 0
    assert found == {"on the ramp": True, "inside the full weight": False, "outside": False}


@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels,channels_last", FORMATS)
@pytest.mark.parametrize("mode", ["mean", "meanstd"])
def test_match_kernel_equals_the_reference_and_the_loop(bank, dtype, channels, channels_last, mode):
    slots = _random_slots(bank, 5, 4, seed=46 + channels)
    del slots["alpha"]
    images = make_images(5, channels, CANVAS, dtype, channels_last=channels_last, seed=47)
    got = match_with_bank(bank, images, **slots, mode=mode, path="triton")
    loop = match_with_bank(bank, images, **slots, mode=mode, path="loop")
    ref = reference_match(bank, images, **slots, mode=mode)
    for a, b, c in zip(got, loop, ref, strict=True):
        _assert_same(a, c)
        _assert_same(b, c)
    assert bool((got[1] != 0).any()), "no slot was matched: the test would prove nothing"


def test_match_kernel_checks_the_float_pixels_it_reads(bank):
    slots = _two_slots(bank, (10, 10), (60, 60))
    del slots["alpha"]
    for (x, y), expect in (((11, 11), 0), ((CANVAS - 1, 0), 1)):
        images = make_images(1, 3, CANVAS, torch.float32, seed=48)
        images[0, 0, y, x] = float("nan")
        ok = torch.ones(1, dtype=torch.int32)
        kernels_match.match_intensity_triton(
            images, bank.pixels, bank.offsets, bank.sizes, *slots.values(), mode="mean", ok=ok, check_values=True
        )
        assert int(ok) == expect, (x, y)
    with pytest.raises(ValueError, match="check_values=True needs the caller's ok word"):
        kernels_match.match_intensity_triton(
            images, bank.pixels, bank.offsets, bank.sizes, *slots.values(), mode="mean", check_values=True
        )


# ---------------------------------------------------------------- compiled PTX (sm_90, compiled on the CPU)

_POINTERS = {
    "pixels_ptr": "*u8",
    "active_ptr": "*u8",
    "alpha_ptr": "*fp32",
    "gain_ptr": "*fp32",
    "offset_ptr": "*fp32",
    "ok_ptr": "*i32",
}


def _compile_for_sm90(kernel, elem: str, values: dict, constexprs: dict):
    """The kernel compiled for sm_90 as a launch with ``values`` would be: Triton specialises integer arguments equal
    to 1 (constants) or divisible by 16, and 16-byte aligned pointers."""
    compiler = pytest.importorskip("triton.compiler")
    from triton.backends.compiler import GPUTarget

    signature, attrs, consts = {}, {}, dict(constexprs)
    for i, name in enumerate(kernel.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = _POINTERS.get(name, f"*{elem}" if name in ("src_ptr", "dst_ptr", "img_ptr") else "*i64")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif values[name] == 1:
            signature[name], consts[name] = "constexpr", 1
        else:
            signature[name] = "i32"
            if values[name] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = compiler.ASTSource(kernel, signature, constexprs=consts, attrs=attrs)
    options = {"enable_fp_fusion": False, "num_warps": 4}
    try:
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
    except Exception as e:  # no ptxas / LLVM backend in this install
        pytest.skip(f"cannot compile for sm_90 here: {e!r}")


def _variant(inplace, elem, kind, channels_last, S=448, C=3, feather=0, with_map=False):
    size = {"fp32": 4, "fp16": 2, "i16": 2, "u8": 1}[elem]
    th, te = kernels.TILE[size]
    cp, planes = (C, 1) if channels_last else (1, C)
    strides = (C * S * S, 1, S * C, C) if channels_last else (C * S * S, S * S, S, 1)
    values = dict(zip(("s_b", "s_c", "s_h", "s_w"), strides, strict=True), H=S, W=S)
    constexprs = dict(
        K=4, CP=cp, PLANES=planes, KIND=kind, CHECK=kind != 0, MAP=with_map, FEATHER=feather, TH=th, TE=te
    )
    if inplace:
        return kernels._paste_in_place_kernel, values, {**constexprs, "SPLIT": kernels.SPLIT}
    values.update({"d" + k[1:]: v for k, v in values.items() if k.startswith("s_")}, tiles=7, tiles_e=3)
    return kernels._copy_paste_kernel, values, constexprs


PTX_CASES = [
    (False, "fp32", 1, False),
    (False, "u8", 0, False),
    pytest.param(False, "fp16", 1, True, marks=pytest.mark.slow),
    pytest.param(False, "i16", 2, False, marks=pytest.mark.slow),
    (True, "fp32", 1, False),
    pytest.param(True, "u8", 0, True, marks=pytest.mark.slow),
    pytest.param(True, "i16", 2, True, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("inplace,elem,kind,channels_last", PTX_CASES)
def test_ptx_for_sm90_keeps_the_value_rule_and_vectorises(inplace, elem, kind, channels_last):
    # With the launch options the float math is separately rounded mul/add (no fma contraction) and q / 255 is
    # div.rn (Triton's plain '/' is the approximate div.full); the uint8 rounding constants survive optimisation.
    # Out of place, the image rows are read and written 16 bytes at a time (contiguous and channels_last alike).
    kernel, values, constexprs = _variant(inplace, elem, kind, channels_last)
    ptx = _compile_for_sm90(kernel, elem, values, constexprs)
    assert not re.search(r"\bfma\.", ptx), "fma contraction would break bit-identity with torch"
    assert re.search(r"\bmul\.rn\.f32", ptx) and re.search(r"\badd\.rn\.f32", ptx)
    assert not re.search(r"div\.(full|approx)", ptx)
    assert bool(re.search(r"\bdiv\.rn\.f32", ptx)) == (kind != 0)
    if kind == 0:
        assert "0f4B400000" in ptx and "0fCB400000" in ptx, "the round-half-to-even trick was folded away"
    if not inplace:
        assert re.search(r"ld\.global(\.\w+)*\.v4\.b32", ptx) and re.search(r"st\.global(\.\w+)*\.v4\.b32", ptx)


@pytest.mark.parametrize("inplace,elem,kind", [(False, "u8", 0), (True, "fp32", 1)])
def test_ptx_for_sm90_with_feather_and_map_keeps_the_value_rule(inplace, elem, kind):
    # the ramp's (d + 0.5) / F is div.rn (uint8 images have no other division), the map g * q + o a mul and an add
    kernel, values, constexprs = _variant(inplace, elem, kind, False, feather=8, with_map=True)
    ptx = _compile_for_sm90(kernel, elem, values, constexprs)
    assert not re.search(r"\bfma\.", ptx), "fma contraction would break bit-identity with torch"
    assert re.search(r"\bdiv\.rn\.f32", ptx) and not re.search(r"div\.(full|approx)", ptx)
    assert re.search(r"\bmul\.rn\.f32", ptx) and re.search(r"\badd\.rn\.f32", ptx)
    if not inplace:
        assert re.search(r"ld\.global(\.\w+)*\.v4\.b32", ptx) and re.search(r"st\.global(\.\w+)*\.v4\.b32", ptx)


@pytest.mark.parametrize("elem,kind,meanstd", [("u8", 0, True), ("fp32", 1, True), ("i16", 2, False)])
def test_ptx_for_sm90_of_the_match_kernel_uses_ieee_division_and_square_root(elem, kind, meanstd):
    S = 448
    values = {"K": 4, "H": S, "W": S, "s_b": 3 * S * S, "s_h": S, "s_w": 1}
    constexprs = dict(
        KIND=kind, CHECK=kind != 0, MEANSTD=meanstd, GAIN_LO=0.25, GAIN_HI=4.0, BLOCK=1024, BW=64, SPLIT=8
    )
    ptx = _compile_for_sm90(kernels_match._match_kernel, elem, values, constexprs)
    assert not re.search(r"\bfma\.", ptx), "fma contraction would break bit-identity with torch"
    assert re.search(r"\bdiv\.rn\.f32", ptx) and not re.search(r"div\.(full|approx)", ptx)
    assert bool(re.search(r"\bsqrt\.rn\.f32", ptx)) == meanstd and not re.search(r"sqrt\.approx", ptx)
    assert re.search(r"cvt\.rn\.f32\.s64", ptx), "int64 sums convert to float32 rounding to nearest"
    assert re.search(r"atom\.global\.gpu\.acq_rel\.add\.u64", ptx), "the parts' sums: int64 atomics, acquire/release"


@pytest.mark.slow
@pytest.mark.parametrize(
    "inplace,elem,kind,channels_last,feather",
    [(False, "fp32", 1, False, 0), (False, "u8", 0, False, 0), (False, "u8", 0, False, 8), (True, "fp32", 1, False, 8)],
)
def test_sm90_build_spills_no_registers(inplace, elem, kind, channels_last, feather):
    # ptxas (shipped with Triton) reports the registers: spills to local memory would slow every program down
    kernel, values, constexprs = _variant(inplace, elem, kind, channels_last, feather=feather, with_map=feather > 0)
    ptx = _compile_for_sm90(kernel, elem, values, constexprs)
    ptxas = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip(f"no ptxas at {ptxas}")
    src = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"dadam_{kernel.__name__}_{elem}.ptx"
    src.write_text(ptx)
    res = subprocess.run(
        [str(ptxas), "-v", "--gpu-name", "sm_90a", str(src), "-o", os.devnull], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert re.search(r"\b0 bytes spill stores", res.stderr), res.stderr[-2000:]


# ---------------------------------------------------------------- CUDA: the compiled kernels


def _every_cuda_case(test):
    """A GPU test over in and out of place, every image dtype and every memory format."""
    test = pytest.mark.parametrize("channels,channels_last", FORMATS)(test)
    test = pytest.mark.parametrize("dtype", IMAGE_DTYPES)(test)
    test = pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])(test)
    return pytest.mark.gpu(test)


def _cuda_case(bank, dtype, channels, channels_last, *, seed):
    """16 images and their random slots (4 each) on the CPU, and the bank and the slots on CUDA."""
    slots = _random_slots(bank, 16, 4, seed=seed + channels)
    images = make_images(16, channels, CANVAS, dtype, channels_last=channels_last, seed=seed + 1)
    return images, slots, bank.to("cuda"), {k: v.cuda() for k, v in slots.items()}


@_every_cuda_case
def test_triton_cuda_equals_loop(bank, dtype, channels, channels_last, inplace):
    images, slots, gpu, cuda_slots = _cuda_case(bank, dtype, channels, channels_last, seed=20)
    a = paste_with_bank(bank, images, **slots, path="loop")
    b = paste_with_bank(gpu, images.cuda(), **cuda_slots, path="triton", inplace=inplace)
    v = paste_with_bank(gpu, images.cuda(), **cuda_slots, path="vectorised", inplace=inplace)
    _assert_same(b.cpu(), a)
    _assert_same(v.cpu(), a)


@pytest.mark.gpu
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "in_place"])
@pytest.mark.parametrize("path", ["auto", "triton"])
def test_triton_cuda_no_host_sync(bank, params, path, inplace):
    gpu = bank.to("cuda")
    p = params.to("cuda")
    images = make_images(len(params), 3, CANVAS, torch.float32).cuda()
    paste_with_bank(gpu, images.clone(), **_args(p), path=path, inplace=inplace)  # compile outside the check
    torch.cuda.synchronize()
    target = images.clone()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = paste_with_bank(gpu, target, **_args(p), path=path, inplace=inplace)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    _assert_same(out.cpu(), paste_with_bank(bank, images.cpu(), **_args(params), path="loop"))


@pytest.mark.gpu
def test_cuda_ok_word_reports_bad_values_without_a_sync(bank):
    slots = {k: v.cuda() for k, v in _two_slots(bank, (10, 10), (60, 60)).items()}
    gpu = bank.to("cuda")
    images = make_images(1, 3, CANVAS, torch.float32, seed=19).cuda()
    images[0, 1, 0, CANVAS - 1] = 3.0
    ok = torch.ones(1, dtype=torch.int32, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        _kernel(gpu, images, slots, ok=ok, check_values=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(ok) == 0


@pytest.mark.gpu
def test_cuda_overlapping_replayed_params_stop_with_a_device_assert():
    """Overlapping active patches on a GPU: a device-side assert (no host sync); it ends the process: a child."""
    setup = (
        "from tests.helpers import make_bank, make_images, paste_with_bank\n"
        "bank = make_bank(canvas=64).to('cuda')\n"
        "pid = torch.tensor([[0, 1]], device='cuda')\n"
        "h, w = bank.sizes[pid].unbind(-1)\n"
        "xy = torch.tensor([[5, 6]], device='cuda')\n"
        "boxes = torch.stack([xy, xy, xy + w, xy + h], -1)\n"
        "active = torch.ones(1, 2, dtype=torch.bool, device='cuda')\n"
        "alpha = torch.ones(1, 2, device='cuda')\n"
        "images = make_images(1, 1, 64, torch.uint8).cuda()\n"
    )
    call = "paste_with_bank(bank, images, boxes, pid, active, alpha, path='auto')"
    assert_device_assert_stops(setup, call, "share image pixels")


@_every_cuda_case
def test_triton_cuda_feather_map_and_match_equal_the_cpu(bank, dtype, channels, channels_last, inplace):
    images, slots, gpu, cuda_slots = _cuda_case(bank, dtype, channels, channels_last, seed=50)
    placed = {k: v for k, v in slots.items() if k != "alpha"}
    for mode in ("mean", "meanstd"):
        cpu_map = match_with_bank(bank, images, **placed, mode=mode, path="loop")
        cuda_map = match_with_bank(gpu, images.cuda(), **{k: cuda_slots[k] for k in placed}, mode=mode, path="triton")
        for a, b in zip(cpu_map, cuda_map, strict=True):
            _assert_same(b.cpu(), a)
    maps = dict(zip(("gain", "offset"), cpu_map, strict=True))
    a = paste_with_bank(bank, images, **slots, path="loop", feather=6, **maps)
    cuda_maps = {k: v.cuda() for k, v in maps.items()}
    b = paste_with_bank(gpu, images.cuda(), **cuda_slots, path="triton", inplace=inplace, feather=6, **cuda_maps)
    _assert_same(b.cpu(), a)


@pytest.mark.gpu
def test_triton_cuda_match_and_feather_without_host_sync(bank, params):
    gpu = bank.to("cuda")
    p = params.to("cuda")
    images = make_images(len(params), 3, CANVAS, torch.float32).cuda()

    def call():
        gain, offset = match_with_bank(gpu, images, p.boxes, p.patch_ids, p.active, mode="meanstd", path="auto")
        return paste_with_bank(gpu, images, **_args(p), path="auto", gain=gain, offset=offset, feather=4)

    call()  # compile outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    gain, offset = match_with_bank(bank, images.cpu(), params.boxes, params.patch_ids, params.active, mode="meanstd",
                                   path="loop")  # fmt: skip
    ref = paste_with_bank(bank, images.cpu(), **_args(params), path="loop", gain=gain, offset=offset, feather=4)
    _assert_same(out.cpu(), ref)
