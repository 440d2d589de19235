import functools
import math

import pytest
import torch

import dadam.ops
from dadam import DiseasedAreaAugment, LabelStats
from dadam.ops import blend_values, paste_backend, paste_patches, round_to_uint8
from dadam.paste.values import feather_ramp, intensity_map, map_patch_values, sqrt_nearest, stat_values
from tests.helpers import (
    IMAGE_DTYPES,
    check_op,
    make_images,
    make_label_table,
    match_with_bank,
    paste_with_bank,
    reference_match,
    reference_paste,
)

CANVAS = 64


@pytest.fixture(scope="module")
def params(bank, table, stats):
    """Params with pastes (up to 3 patches) and blends, from the real sampler, for 12 samples."""
    aug = DiseasedAreaAugment(bank, stats, p=1.0, max_patches=3, generator=3)
    labels = torch.cat([table[table[:, 14] > 0][:6], table[(table[:, 7] > 0) | (table[:, 9] > 0)][:6]])
    p = aug.sample(labels)
    assert bool((p.mode == 1).any()) and bool((p.mode == 2).any())
    return p


def _op(bank, path):
    return functools.partial(paste_with_bank, bank, path=path)


def _batch_args(params):
    return {"boxes": params.boxes, "patch_ids": params.patch_ids, "active": params.active, "alpha": params.alpha}


@pytest.mark.parametrize("path", ["loop", "vectorised"])
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels,channels_last", [(1, False), (3, False), (3, True)])
def test_paste_patches_check_op(bank, params, path, dtype, channels, channels_last):
    images = make_images(len(params), channels, CANVAS, dtype, channels_last=channels_last, seed=1)
    check_op(_op(bank, path), images, _batch_args(params), reference=functools.partial(reference_paste, bank))


@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
def test_vectorised_equals_loop_exactly(bank, dtype):
    table = make_label_table(seed=5)
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(table), p=0.8, alpha=0.37, generator=11)
    for seed in range(3):
        p = aug.sample(table[seed * 64 : (seed + 1) * 64])
        images = make_images(64, 3, CANVAS, dtype, channels_last=seed == 1, seed=seed)
        a = _op(bank, "loop")(images, **_batch_args(p))
        b = _op(bank, "vectorised")(images, **_batch_args(p))
        assert torch.equal(a, b)


def _region_mask(params, b, shape):
    m = torch.zeros(shape[-2:], dtype=torch.bool)
    for k in range(params.max_patches):
        if params.active[b, k]:
            x0, y0, x1, y1 = (int(v) for v in params.boxes[b, k])
            m[y0:y1, x0:x1] = True
    return m


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_paste_and_blend_values(bank, params, dtype):
    images = make_images(len(params), 3, CANVAS, dtype, seed=2)
    out = _op(bank, "vectorised")(images, **_batch_args(params))
    for b in range(len(params)):
        outside = ~_region_mask(params, b, images.shape)
        assert torch.equal(out[b][:, outside], images[b][:, outside]), "pixels outside the patches changed"
        for k in range(params.max_patches):
            if not params.active[b, k]:
                continue
            x0, y0, x1, y1 = (int(v) for v in params.boxes[b, k])
            q = bank.patch(int(params.patch_ids[b, k])).float()  # (h, w)
            got = out[b, :, y0:y1, x0:x1].float()
            bg = images[b, :, y0:y1, x0:x1].float()
            scale = 1.0 if dtype == torch.uint8 else 255.0
            if params.mode[b] == 1:
                assert float(params.alpha[b, k]) == 1.0
                assert torch.equal(got, (q / scale).expand_as(got)), "a pasted patch differs from the bank patch"
            else:
                expect = 0.6 * q / scale + 0.4 * bg
                tol = 1.0 if dtype == torch.uint8 else 1e-6
                assert float((got - expect).abs().max()) <= tol


@pytest.mark.parametrize("path", ["loop", "vectorised"])
def test_patches_clipped_at_the_image_border(bank, path):
    # Hand-made boxes hanging over every border: pixels outside the image are dropped, the rest is placed.
    pid = torch.tensor([[0, 1], [2, 3]])
    h, w = bank.sizes[pid].unbind(-1)
    x0 = torch.tensor([[-3, CANVAS - 2], [10, -100]])
    y0 = torch.tensor([[-2, 5], [CANVAS - 1, 0]])
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], -1)
    active = torch.tensor([[True, True], [True, True]])
    alpha = torch.tensor([[1.0, 0.5], [1.0, 1.0]])
    images = make_images(2, 1, CANVAS, torch.uint8, seed=4)
    out = _op(bank, path)(images, boxes, pid, active, alpha)
    ref = reference_paste(bank, images, boxes, pid, active, alpha)
    assert torch.equal(out, ref)
    q = bank.patch(0)
    assert torch.equal(out[0, 0, : q.shape[0] - 2, : q.shape[1] - 3], q[2:, 3:])


def test_inactive_slots_do_nothing(bank, params):
    images = make_images(len(params), 1, CANVAS, torch.uint8, seed=6)
    inactive = torch.zeros_like(params.active)
    for path in ("loop", "vectorised"):
        out = _op(bank, path)(images, params.boxes, params.patch_ids, inactive, params.alpha)
        assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()


def test_round_to_uint8_half_to_even_and_clamp():
    x = torch.tensor([0.5, 1.5, 2.5, -3.0, 254.5, 300.0, 127.49])
    assert round_to_uint8(x).tolist() == [0, 2, 2, 0, 254, 255, 127]


def test_blend_values_float_and_uint8():
    q = torch.tensor([255, 0], dtype=torch.uint8)
    assert blend_values(q, torch.tensor([0.0, 1.0]), torch.tensor(0.6)).tolist() == pytest.approx([0.6, 0.4])
    assert blend_values(q, torch.tensor([0, 255], dtype=torch.uint8), torch.tensor(0.6)).tolist() == [153, 102]
    # alpha 1 is exactly the patch even over a non-finite background
    assert blend_values(q, torch.tensor([float("nan"), 0.5]), torch.tensor(1.0)).tolist() == [1.0, 0.0]


def test_paste_patches_bad_inputs(bank, params):
    images = make_images(len(params), 1, CANVAS, torch.uint8)
    args = (bank.pixels, bank.offsets, bank.sizes)
    with pytest.raises(ValueError, match="path must be"):
        paste_patches(images, *args, *_batch_args(params).values(), max_size=bank.max_size, path="fast")
    with pytest.raises(ValueError, match=r"images must be \(B, C, H, W\)"):
        paste_patches(images[0], *args, *_batch_args(params).values(), max_size=bank.max_size)
    with pytest.raises(ValueError, match="boxes must have shape"):
        paste_patches(images[:2], *args, *_batch_args(params).values(), max_size=bank.max_size)
    with pytest.raises(ValueError, match="dtype must be one of"):
        paste_patches(images.to(torch.int32), *args, *_batch_args(params).values(), max_size=bank.max_size)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_paste_patches_cuda_equals_cpu(bank, params, dtype, channels_last):
    images = make_images(len(params), 3, CANVAS, dtype, channels_last=channels_last, seed=7)
    gpu_bank = bank.to("cuda")

    def op(images, boxes, patch_ids, active, alpha):
        b = gpu_bank if images.is_cuda else bank
        return paste_patches(
            images,
            b.pixels,
            b.offsets,
            b.sizes,
            boxes,
            patch_ids,
            active,
            alpha,
            max_size=b.max_size,
            path="vectorised",
        )

    check_op(op, images, _batch_args(params), cuda=True)


@pytest.mark.gpu
def test_paste_patches_no_host_sync_on_cuda(bank, params):
    gpu_bank = bank.to("cuda")
    p = params.to("cuda")
    images = make_images(len(params), 3, CANVAS, torch.float32).cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = paste_patches(
            images,
            gpu_bank.pixels,
            gpu_bank.offsets,
            gpu_bank.sizes,
            p.boxes,
            p.patch_ids,
            p.active,
            p.alpha,
            max_size=gpu_bank.max_size,
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == images.shape


@pytest.mark.slow
def test_vectorised_path_compiles_to_one_graph_with_the_same_values(bank, params):
    # torch.compile is one of the GPU levers: the pure-torch path must compile without graph breaks (fullgraph)
    # and give the loop path's values bit for bit (here with inductor's CPU backend).
    images = make_images(len(params), 3, CANVAS, torch.float32, channels_last=True, seed=5)
    compiled = torch.compile(_op(bank, "vectorised"), fullgraph=True)
    out = compiled(images, **_batch_args(params))
    assert torch.equal(out, _op(bank, "loop")(images, **_batch_args(params)))
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("path", ["loop", "vectorised"])
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels,channels_last", [(1, False), (3, True)])
def test_paste_patches_in_place(bank, params, path, dtype, channels, channels_last):
    # inplace=True returns the images given, written in place, with the out-of-place values
    images = make_images(len(params), channels, CANVAS, dtype, channels_last=channels_last, seed=9)
    op = functools.partial(paste_with_bank, bank, path=path, inplace=True)
    check_op(op, images, _batch_args(params), reference=functools.partial(reference_paste, bank), inplace=True)


def _overlapping(bank):
    pid = torch.tensor([[0, 1, 2]])
    h, w = bank.sizes[pid].unbind(-1)
    x0 = torch.tensor([[0, 30, 30 + int(w[0, 1]) - 1]])  # slot 2 starts on slot 1's last column
    y0 = torch.tensor([[0, 40, 40]])
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], -1)
    return boxes, pid, torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3)


@pytest.mark.parametrize("path", ["loop", "vectorised", "auto"])
def test_overlapping_patches_raise_on_the_cpu(bank, path):
    boxes, pid, active, alpha = _overlapping(bank)
    images = make_images(1, 1, CANVAS, torch.uint8, seed=10)
    with pytest.raises(ValueError, match=r"must not overlap: sample 0, slots 1 and 2 \(boxes \[30, 40, "):
        _op(bank, path)(images, boxes, pid, active, alpha)
    active[0, 2] = False  # an inactive slot may overlap anything
    assert torch.equal(
        _op(bank, path)(images, boxes, pid, active, alpha),
        reference_paste(bank, images, boxes, pid, active, alpha),
    )
    boxes[0, 2, 1] = -int(bank.sizes[2, 0])  # overlapping only above the image: nothing shared in the image
    active[0, 2] = True
    _op(bank, path)(images, boxes, pid, active, alpha)


def test_ok_word_on_the_cpu_checks_values_with_a_value_error(bank, params):
    images = make_images(len(params), 1, CANVAS, torch.float32, seed=11)
    b, k = (int(i) for i in params.active.nonzero()[0])
    x0, y0 = (int(v) for v in params.boxes[b, k, :2])
    bad = images.clone()
    bad[b, 0, y0, x0] = 1.5  # under a placed patch: the CPU checks the pixels the op reads or replaces
    ok = torch.ones(1, dtype=torch.int32)
    args = (bank.pixels, bank.offsets, bank.sizes, *_batch_args(params).values())
    paste_patches(bad, *args, max_size=bank.max_size)  # without ok: the op does not check values
    with pytest.raises(
        ValueError, match=r"images \(torch.float32\) must be in \[0, 1\], got values in \[[0-9.e-]+, 1.5\]"
    ):
        paste_patches(bad, *args, max_size=bank.max_size, ok=ok)
    assert int(ok) == 1  # the CPU raises; the word is the GPU's
    paste_patches(images, *args, max_size=bank.max_size, ok=ok)
    with pytest.raises(ValueError, match=r"ok must be a \(1,\) torch.int32 tensor on cpu"):
        paste_patches(images, *args, max_size=bank.max_size, ok=torch.ones(1))


def test_paste_backend_names_the_path_and_the_reason(monkeypatch):
    monkeypatch.setattr(dadam.ops, "_triton_failure", None)
    assert paste_backend("cpu") == "cpu-loop"
    monkeypatch.setattr(dadam.ops, "_has_triton", lambda: True)
    assert paste_backend("cuda") == "triton"
    monkeypatch.setattr(dadam.ops, "_has_triton", lambda: False)
    assert (
        paste_backend(torch.device("cuda", 1))
        == "torch-vectorised (triton unavailable: the triton package does not import)"
    )


@pytest.mark.gpu
def test_loop_path_by_name_works_on_cuda(bank, params):
    # the NumPy fast loop is CPU-only; path="loop" on CUDA tensors takes the torch loop with the same values
    images = make_images(len(params), 3, CANVAS, torch.float32, seed=8)
    gpu = bank.to("cuda")
    args = {k: v.cuda() for k, v in _batch_args(params).items()}
    out = paste_with_bank(gpu, images.cuda(), **args, path="loop")
    assert torch.equal(out.cpu(), _op(bank, "loop")(images, **_batch_args(params)))


# ---------------------------------------------------------------- feather and match (dadam.paste.values)


def _random_map(params, seed=0):
    """A (B, K) gain in [0.5, 2] and offset in [-60, 60]: bright and dark maps, many values clamped at 0 or 255."""
    g = torch.Generator().manual_seed(seed)
    B, K = params.active.shape
    return {"gain": 0.5 + 1.5 * torch.rand(B, K, generator=g), "offset": 120 * torch.rand(B, K, generator=g) - 60}


@pytest.mark.parametrize("path", ["loop", "vectorised"])
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels,channels_last", [(1, False), (3, True)])
@pytest.mark.parametrize("feather,with_map", [(3, False), (0, True), (5, True)], ids=["feather", "map", "both"])
def test_feather_and_map_check_op(bank, params, path, dtype, channels, channels_last, feather, with_map):
    # every check of check_op, and equal to the slow reference with the ramp and the affine map, in and out of place
    images = make_images(len(params), channels, CANVAS, dtype, channels_last=channels_last, seed=12)
    args = {**_batch_args(params), **(_random_map(params) if with_map else {})}
    ref = functools.partial(reference_paste, bank)
    for inplace in (False, True):
        op = functools.partial(paste_with_bank, bank, path=path, inplace=inplace)
        out = check_op(op, images, args, other_args={"feather": feather}, reference=ref, inplace=inplace)
    assert not torch.equal(out, paste_with_bank(bank, images, **_batch_args(params), path=path)), "options ignored"


def test_feather_ramp_values_and_the_paste_reads_the_background(bank):
    # one 6 x 9 patch pasted (alpha 1) with feather 2 on a constant background: the weights are the ramp's
    pid = torch.tensor([[0]])
    h, w = (int(v) for v in bank.sizes[0])
    boxes = torch.tensor([[[10, 12, 10 + w, 12 + h]]])
    images = torch.full((1, 1, CANVAS, CANVAS), 0.5)
    out = _op(bank, "loop")(images, boxes, pid, torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 1), feather=2)
    q = bank.patch(0).float() / 255
    r = torch.arange(h)[:, None]
    c = torch.arange(w)[None, :]
    d = torch.minimum(torch.minimum(r, h - 1 - r), torch.minimum(c, w - 1 - c))
    weight = torch.tensor([0.25, 0.75, 1.0])[d.clamp(max=2)]  # (d + 0.5) / 2, then full weight from d = 2 on
    got = out[0, 0, 12 : 12 + h, 10 : 10 + w]
    torch.testing.assert_close(got, weight * q + (1 - weight) * 0.5, rtol=0, atol=1e-6)
    assert torch.equal(got[d >= 2], q[d >= 2]), "full weight must give exactly the patch"
    assert torch.equal(out[0, 0, :12], images[0, 0, :12]), "pixels outside the box changed"
    assert feather_ramp(torch.arange(5), 4).tolist() == [0.125, 0.375, 0.625, 0.875, 1.0]
    assert feather_ramp(torch.arange(3), 0).tolist() == [1.0, 1.0, 1.0]


def test_map_patch_values_and_stat_values():
    q = torch.tensor([0, 100, 250], dtype=torch.uint8)
    assert map_patch_values(q, torch.tensor(1.5), torch.tensor(-20.0)).tolist() == [0.0, 130.0, 255.0]
    assert stat_values(torch.tensor([0.0, 0.5, 1.0, 0.5 / 255, 1.5 / 255])).tolist() == [0, 128, 255, 0, 2]  # to even
    u = torch.tensor([3, 200], dtype=torch.uint8)
    assert stat_values(u) is u


def _slot_cases(bank, B=5, K=3, seed=0):
    """Random slots (some clipped at the border or wholly outside, ~1/4 inactive) without overlaps."""
    g = torch.Generator().manual_seed(seed)
    pid = torch.randint(0, len(bank), (B, K), generator=g)
    h, w = bank.sizes[pid].unbind(-1)
    x0 = torch.randint(-25, CANVAS, (B, K), generator=g)
    y0 = torch.randint(-25, CANVAS, (B, K), generator=g)
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], -1)
    active = torch.rand(B, K, generator=g) < 0.75
    boxes[0, 0, :2] = torch.tensor([-60, 3])  # wholly outside the image
    return {"boxes": boxes, "patch_ids": pid, "active": active}


@pytest.mark.parametrize("path", ["loop", "vectorised"])
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", ["mean", "meanstd"])
def test_match_intensity_equals_the_reference(bank, path, dtype, channels_last, mode):
    slots = _slot_cases(bank, seed=3)
    images = make_images(5, 3, CANVAS, dtype, channels_last=channels_last, seed=13)
    images[1, 1:] = 0  # only channel 0 counts
    gain, offset = match_with_bank(bank, images, **slots, mode=mode, path=path)
    ref_gain, ref_offset = reference_match(bank, images, **slots, mode=mode)
    assert gain.dtype == offset.dtype == torch.float32 and gain.shape == slots["active"].shape
    assert torch.equal(gain, ref_gain) and torch.equal(offset, ref_offset)
    off = ~slots["active"]
    off[0, 0] = True  # the box outside the image: the identity map
    assert bool((gain[off] == 1).all() and (offset[off] == 0).all())
    if mode == "mean":
        assert bool((gain == 1).all())


def test_match_makes_mean_and_std_equal_and_clamps_the_gain(bank):
    # a flat recipient (std 0) clamps the gain at 1/4; a textured one gets the patch's std times the gain
    pid = torch.tensor([[1]])
    h, w = (int(v) for v in bank.sizes[1])
    boxes = torch.tensor([[[4, 5, 4 + w, 5 + h]]])
    active = torch.ones(1, 1, dtype=torch.bool)
    q = bank.patch(1).double()
    flat = torch.full((1, 1, CANVAS, CANVAS), 77, dtype=torch.uint8)
    gain, offset = match_with_bank(bank, flat, boxes, pid, active, mode="meanstd", path="loop")
    assert float(gain) == 0.25 and float(offset) == pytest.approx(77 - 0.25 * float(q.mean()), abs=1e-4)
    images = make_images(1, 1, CANVAS, torch.uint8, seed=14)
    x = images[0, 0, 5 : 5 + h, 4 : 4 + w].double()
    gain, offset = match_with_bank(bank, images, boxes, pid, active, mode="meanstd", path="vectorised")
    mapped = float(gain) * q + float(offset)
    assert float(mapped.mean()) == pytest.approx(float(x.mean()), abs=1e-3)
    assert float(mapped.std(unbiased=False)) == pytest.approx(float(x.std(unbiased=False)), rel=1e-5)
    flat_patch = intensity_map(torch.tensor([[9, 900, 90000, 450, 22500]]), "meanstd")  # std of the patch 0
    assert [t.tolist() for t in flat_patch] == [[1.0], [50.0]]


def test_feather_and_map_bad_arguments(bank, params):
    images = make_images(len(params), 1, CANVAS, torch.uint8)
    args = (images, bank.pixels, bank.offsets, bank.sizes, *_batch_args(params).values())
    with pytest.raises(ValueError, match="feather must be an int >= 0 \\(pixels\\), got -1"):
        paste_patches(*args, max_size=bank.max_size, feather=-1)
    with pytest.raises(ValueError, match="gain and offset go together: got gain a tensor and offset None"):
        paste_patches(*args, max_size=bank.max_size, gain=torch.ones_like(params.alpha))
    with pytest.raises(ValueError, match=r"offset must be a float tensor of shape \(12, 3\) \(one per slot\)"):
        paste_patches(*args, max_size=bank.max_size, gain=torch.ones_like(params.alpha), offset=torch.zeros(12))
    slots = (params.boxes, params.patch_ids, params.active)
    with pytest.raises(ValueError, match=r"mode must be one of \('mean', 'meanstd'\), got 'none'"):
        match_with_bank(bank, images, *slots, mode="none", path="auto")
    with pytest.raises(ValueError, match="path must be"):
        match_with_bank(bank, images, *slots, mode="mean", path="fast")
    with pytest.raises(ValueError, match=r"active must have shape \(12, 3\)"):
        match_with_bank(bank, images, params.boxes, params.patch_ids, params.active[:, :2], mode="mean", path="auto")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
def test_feather_map_and_match_cuda_equal_cpu(bank, params, dtype):
    # the vectorised torch path on a GPU: the same bits as the CPU loop, for the paste and the map
    images = make_images(len(params), 3, CANVAS, dtype, channels_last=True, seed=15)
    gpu = bank.to("cuda")
    slots = (params.boxes, params.patch_ids, params.active)
    for mode in ("mean", "meanstd"):
        cpu_map = match_with_bank(bank, images, *slots, mode=mode, path="loop")
        cuda_map = match_with_bank(gpu, images.cuda(), *(t.cuda() for t in slots), mode=mode, path="vectorised")
        assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu_map, cuda_map, strict=True)), mode
    args = {**_batch_args(params), **_random_map(params)}

    def op(images, **kw):
        b = gpu if images.is_cuda else bank
        return paste_with_bank(b, images, **kw, path="vectorised" if images.is_cuda else "loop", feather=6)

    check_op(op, images, args, cuda=True)


def test_the_square_root_of_the_map_is_correctly_rounded():
    # float32 square roots rounded to nearest (torch's CPU sqrt can be 1 ulp off): the float64 root of a float32,
    # correctly rounded by math.sqrt, rounds to the float32 one without a double-rounding error
    x = torch.rand(20000, generator=torch.Generator().manual_seed(0)) * 16
    expect = torch.tensor([math.sqrt(v) for v in x.double().tolist()], dtype=torch.float64).float()
    assert torch.equal(sqrt_nearest(x), expect)
    assert sqrt_nearest(torch.tensor(4.0)).item() == 2.0
