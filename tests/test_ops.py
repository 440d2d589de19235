import functools

import pytest
import torch

import dadam.ops
from dadam import DiseasedAreaAugment, LabelStats
from dadam.ops import blend_values, paste_backend, paste_patches, round_to_uint8
from tests.helpers import (
    IMAGE_DTYPES,
    check_op,
    make_bank,
    make_images,
    make_label_table,
    paste_with_bank,
    reference_paste,
)

CANVAS = 64


@pytest.fixture(scope="module")
def bank():
    return make_bank(canvas=CANVAS)


@pytest.fixture(scope="module")
def params(bank):
    """Params with pastes (up to 3 patches) and blends, from the real sampler, for 12 samples."""
    table = make_label_table()
    aug = DiseasedAreaAugment(bank, LabelStats.from_labels(table), p=1.0, max_patches=3, generator=3)
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
    ref = functools.partial(reference_paste, pixels=bank.pixels, offsets=bank.offsets, sizes=bank.sizes)
    check_op(_op(bank, path), images, _batch_args(params), reference=lambda images, **kw: ref(images, **kw))


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
    ref = reference_paste(images, bank.pixels, bank.offsets, bank.sizes, boxes, pid, active, alpha)
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
    ref = functools.partial(reference_paste, pixels=bank.pixels, offsets=bank.offsets, sizes=bank.sizes)
    op = functools.partial(paste_with_bank, bank, path=path, inplace=True)
    check_op(op, images, _batch_args(params), reference=lambda images, **kw: ref(images, **kw), inplace=True)


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
        reference_paste(images, bank.pixels, bank.offsets, bank.sizes, boxes, pid, active, alpha),
    )
    boxes[0, 2, 1] = -int(bank.sizes[2, 0])  # overlapping only above the image: nothing shared in the image
    active[0, 2] = True
    _op(bank, path)(images, boxes, pid, active, alpha)


def test_ok_word_on_the_cpu_checks_values_with_a_value_error(bank, params):
    images = make_images(len(params), 1, CANVAS, torch.float32, seed=11)
    bad = images.clone()
    bad[3, 0, 5, 5] = 1.5
    ok = torch.ones(1, dtype=torch.int32)
    args = (bank.pixels, bank.offsets, bank.sizes, *_batch_args(params).values())
    paste_patches(bad, *args, max_size=bank.max_size)  # without ok: the op does not check values
    with pytest.raises(
        ValueError, match=r"images \(torch.float32\) must be in \[0, 1\], got values in \[3.1054e-05, 1.5\]"
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
