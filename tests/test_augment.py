import dataclasses
import math
import pathlib
import re

import pytest
import torch

from dadam import DiseasedAreaAugment, LabelStats, PatchBank
from dadam.config import COMPANION_RULES
from dadam.labels import CXR_LT_CLASSES
from dadam.sampling import MODE_BLEND, MODE_NONE, MODE_PASTE, apply_labels, sample
from tests.helpers import (
    IMAGE_DTYPES,
    NF,
    assert_device_assert_stops,
    assert_same_format,
    fake_cuda,
    make_images,
    make_label_table,
    reference_match,
    reference_paste,
)

CANVAS = 64


def _aug(bank, stats, **kw):
    kw.setdefault("generator", 0)
    return DiseasedAreaAugment(bank, stats, **kw)


def _eligible(aug, labels):
    """Slow per-sample eligibility: 1 paste, 2 blend possible, 0 neither."""
    bw, cw = aug.blend_tail_weight, aug.companion_weight
    out = []
    for y in labels:
        pos = y > 0.5
        if pos[NF] and int(pos.sum()) == 1:
            out.append(1)
            continue
        tails = [t for t in range(26) if pos[t] and bw[t] > 0]
        out.append(2 if any(cw[t, j] > 0 and not pos[j] for t in tails for j in range(26)) else 0)
    return torch.tensor(out)


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_p0_is_identity(bank, stats, table):
    aug = _aug(bank, stats, p=0.0)
    images = make_images(32, 1, CANVAS, torch.uint8)
    labels = table[:32].clone()
    out, new_labels, params = aug(images, labels, return_params=True)
    assert torch.equal(out, images) and torch.equal(new_labels, labels)
    assert not params.changed.any() and not params.active.any()


@pytest.mark.parametrize("companions", COMPANION_RULES)
def test_p1_changes_every_eligible_sample_and_labels_are_exact(bank, stats, table, companions):
    aug = _aug(bank, stats, p=1.0, max_patches=3, companions=companions)
    labels = table[:400].clone()
    params = aug.sample(labels)
    eligible = _eligible(aug, labels)
    assert (eligible == 1).sum() > 50 and (eligible == 2).sum() > 10 and (eligible == 0).sum() > 10
    assert torch.equal(params.mode, eligible), "p=1 must change exactly the eligible samples"
    tw, cw = aug.tail_weight, aug.companion_weight
    for b in range(len(labels)):
        y, new = labels[b], params.labels[b]
        cls = params.classes[b][params.active[b]].tolist()
        if params.mode[b] == MODE_PASTE:
            assert tw[cls[0]] > 0, "the first pasted class must be a tail class"
            # correlation: rho(t, j) > 0; co-occurrence: t and j share a label row
            assert all(cw[cls[0], j] > 0 and j != cls[0] and j != NF for j in cls[1:]), "companions need w(t, j) > 0"
            assert len(set(cls)) == len(cls)
            assert set(new.nonzero().flatten().tolist()) == set(cls) and new[NF] == 0
            assert params.alpha[b][params.active[b]].eq(1.0).all()
        elif params.mode[b] == MODE_BLEND:
            (j,) = cls
            assert y[j] == 0 and float(params.alpha[b, 0]) == pytest.approx(0.6)
            assert any(y[t] > 0.5 and tw[t] > 0 and cw[t, j] > 0 for t in range(26))
            expect = y.clone()
            expect[j] = 1.0
            assert torch.equal(new, expect)
        else:
            assert torch.equal(new, y) and not params.active[b].any()
    assert torch.equal(apply_labels(labels, params), params.labels)


@pytest.mark.parametrize("companions", COMPANION_RULES)
def test_placed_patches_never_overlap_and_match_their_patch(bank, stats, table, companions):
    for seed in range(6):
        kw = dict(p=1.0, max_patches=4, jitter=0.3 * (seed % 2), generator=seed, companions=companions)
        aug = _aug(bank, stats, **kw)
        params = aug.sample(table[seed * 300 : (seed + 1) * 300])
        assert params.active.sum(1).max() >= 3
        for b in range(len(params)):
            act = params.active[b]
            boxes = params.boxes[b][act].tolist()
            for i in range(len(boxes)):
                for k in range(i):
                    assert not _overlap(boxes[i], boxes[k]), f"seed {seed} sample {b}: {boxes[i]} overlaps {boxes[k]}"
            for (x0, y0, x1, y1), pid, c in zip(
                boxes, params.patch_ids[b][act].tolist(), params.classes[b][act].tolist(), strict=True
            ):
                assert 0 <= x0 < x1 <= CANVAS and 0 <= y0 < y1 <= CANVAS
                assert [y1 - y0, x1 - x0] == bank.sizes[pid].tolist()
                assert int(bank.classes[pid]) == c
                if aug.jitter == 0:
                    assert [x0, y0, x1, y1] == bank.boxes[pid].tolist(), "aligned position expected without jitter"
                else:
                    shift = (torch.tensor([x0, y0]) - bank.boxes[pid][:2]).abs().max()
                    assert shift <= math.ceil(0.3 * CANVAS)


@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels,channels_last", [(1, False), (3, True)])
def test_forward_pixels_and_format(bank, stats, table, dtype, channels, channels_last):
    aug = _aug(bank, stats, p=0.9)
    images = make_images(24, channels, CANVAS, dtype, channels_last=channels_last, seed=3)
    labels = table[:24].clone()
    v_img, v_lab = images._version, labels._version
    out, new_labels, params = aug(images, labels, return_params=True)
    assert images._version == v_img and labels._version == v_lab
    assert_same_format(out, images)
    assert new_labels.dtype == labels.dtype and new_labels.shape == labels.shape
    ref = reference_paste(bank, images, params.boxes, params.patch_ids, params.active, params.alpha)
    assert torch.equal(out, ref)
    assert params.changed.any()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_forward_in_place_writes_into_the_given_images(bank, stats, table, dtype):
    # inplace=True: the returned images are the caller's tensor, modified; values as the slow reference
    aug = _aug(bank, stats, p=0.9, generator=5)
    images = make_images(24, 3, CANVAS, dtype, channels_last=True, seed=3)
    labels = table[:24].clone()
    target = images.clone(memory_format=torch.preserve_format)
    out, new_labels, params = aug(target, labels, return_params=True, inplace=True)
    assert out is target and out.is_contiguous(memory_format=torch.channels_last)
    ref = reference_paste(bank, images, params.boxes, params.patch_ids, params.active, params.alpha)
    assert torch.equal(target, ref) and not torch.equal(target, images)
    assert torch.equal(labels, table[:24]) and new_labels is not labels  # labels are never written in place
    again = images.clone(memory_format=torch.preserve_format)
    assert aug.apply(again, params, inplace=True) is again and torch.equal(again, ref)
    assert torch.equal(aug(images, labels, params=params)[0], ref)  # out of place: the same values
    assert aug.backend == "cpu-loop"


def test_replayed_overlapping_params_raise(bank, stats, table):
    aug = _aug(bank, stats, p=1.0, max_patches=3)
    normal = table[table[:, NF] > 0][:8].clone()
    images = make_images(8, 1, CANVAS, torch.uint8, seed=6)
    _, _, params = aug(images, normal, return_params=True)
    b = int(params.active.sum(1).argmax())
    assert int(params.active[b].sum()) >= 2, "the test needs a sample with two patches"
    edited = params[:]  # a copy: shift slot 1 onto slot 0
    edited.boxes = params.boxes.clone()
    edited.boxes[b, 1] = params.boxes[b, 0]
    edited.patch_ids = params.patch_ids.clone()
    edited.patch_ids[b, 1] = params.patch_ids[b, 0]
    with pytest.raises(ValueError, match=f"must not overlap: sample {b}, slots 0 and 1"):
        aug(images, normal, params=edited)


def test_same_seed_same_output_and_replay(bank, stats, table):
    images = make_images(48, 3, CANVAS, torch.float32, seed=1)
    labels = table[:48].clone()
    a = _aug(bank, stats, p=0.7, generator=123)
    b = _aug(bank, stats, p=0.7, generator=123)
    out_a, lab_a, params = a(images, labels, return_params=True)
    out_b, lab_b = b(images, labels)
    assert torch.equal(out_a, out_b) and torch.equal(lab_a, lab_b)
    out_c, _ = a(images, labels)  # the generator moved on
    assert not torch.equal(out_a, out_c)
    g = torch.Generator().manual_seed(5)
    g2 = torch.Generator().manual_seed(5)
    assert torch.equal(
        _aug(bank, stats, generator=g)(images, labels)[0], _aug(bank, stats, generator=g2)(images, labels)[0]
    )
    # replay with params, whole batch and per sample
    out_r, lab_r = a(images, labels, params=params)
    assert torch.equal(out_r, out_a) and torch.equal(lab_r, lab_a)
    for i in range(48):
        one, one_lab = a(images[i : i + 1], labels[i : i + 1], params=params[i])
        assert torch.equal(one[0], out_a[i]) and torch.equal(one_lab[0], lab_a[i])


@pytest.mark.parametrize("companions", COMPANION_RULES)
def test_tail_class_frequencies_follow_freq_power_minus_gamma(bank, stats, companions):
    normal = torch.zeros(20000, 26)
    normal[:, NF] = 1.0
    for gamma in (0.0, 1.0):
        aug = _aug(bank, stats, p=1.0, gamma=gamma, max_patches=1, generator=7, companions=companions)
        params = aug.sample(normal)
        counts = torch.bincount(params.classes[:, 0], minlength=26).double()
        tail = aug.tail_mask
        expect = torch.where(tail, stats.freq.double().clamp_min(1 / stats.num_samples) ** -gamma, 0.0)
        expect = expect / expect.sum() * len(normal)
        assert torch.equal(counts > 0, tail), "only tail classes may be pasted first"
        chi2 = float(((counts - expect)[tail] ** 2 / expect[tail]).sum())
        dof = int(tail.sum()) - 1
        assert chi2 < dof + 6 * math.sqrt(2 * dof) + 10, f"gamma={gamma}: chi2={chi2:.1f} for {dof} dof"


def test_blend_companion_frequencies_follow_corr_power_beta(bank, stats):
    aug = _aug(bank, stats, p=1.0, beta=2.0, generator=8, companions="correlation")
    t = CXR_LT_CLASSES.index("Fibrosis")
    labels = torch.zeros(20000, 26)
    labels[:, t] = 1.0
    params = aug.sample(labels)
    assert (params.mode == MODE_BLEND).all()
    counts = torch.bincount(params.classes[:, 0], minlength=26).double()
    w = aug.companion_weight[t].double()
    assert w.gt(0).sum() >= 2 and torch.equal(counts > 0, w > 0)
    expect = w / w.sum() * len(labels)
    ok = w > 0
    chi2 = float(((counts - expect)[ok] ** 2 / expect[ok]).sum())
    assert chi2 < 40, chi2


def test_nothing_to_draw_leaves_the_sample_unchanged(bank, stats):
    aug = _aug(bank, stats, p=1.0)
    t = CXR_LT_CLASSES.index("Fibrosis")
    y = torch.zeros(4, 26)
    y[:, t] = 1.0
    y[:, aug.companion_weight[t] > 0] = 1.0  # every companion already present
    params = aug.sample(y)
    assert (params.mode == MODE_NONE).all() and torch.equal(params.labels, y)


def test_soft_label(bank, stats, table):
    aug = _aug(bank, stats, p=1.0, soft_label=True, alpha=0.4)
    labels = table[:300]
    params = aug.sample(labels)
    blend = params.mode == MODE_BLEND
    assert blend.any()
    j = params.classes[blend, 0]
    assert torch.allclose(params.labels[blend].gather(1, j[:, None]), torch.tensor(0.4))


def test_empty_batch_returns_empty_unchanged(bank, stats):
    aug = _aug(bank, stats)
    images, labels = torch.zeros(0, 1, CANVAS, CANVAS, dtype=torch.uint8), torch.zeros(0, 26)
    out, new_labels, params = aug(images, labels, return_params=True)
    assert out.shape == images.shape and new_labels.shape == labels.shape and len(params) == 0


def test_bad_options_and_inputs(bank, stats):
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\], got 0.0"):
        DiseasedAreaAugment(bank, stats, alpha=0.0)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\], got 1.5"):
        DiseasedAreaAugment(bank, stats, alpha=1.5)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got -0.1"):
        DiseasedAreaAugment(bank, stats, p=-0.1)
    with pytest.raises(ValueError, match="max_patches must be an int >= 1, got 0"):
        DiseasedAreaAugment(bank, stats, max_patches=0)
    with pytest.raises(ValueError, match="tail class 'Flu' is not one of"):
        DiseasedAreaAugment(bank, stats, tail=["Flu"])
    with pytest.raises(TypeError, match="generator must be"):
        DiseasedAreaAugment(bank, stats, generator="seed")
    only_common = PatchBank.from_patches(
        [torch.zeros(4, 4, dtype=torch.uint8)], [[0, 0, 4, 4]], ["No Finding"], canvas=64
    )
    with pytest.raises(
        ValueError,
        match=re.escape("no tail class is covered by the bank: tail=default (quantile 0.5), covered classes=[]"),
    ):
        DiseasedAreaAugment(only_common, stats)
    with pytest.raises(ValueError, match=re.escape("tail=['Atelectasis'], covered classes=['Cardiomegaly'")):
        DiseasedAreaAugment(bank, stats, tail=["Atelectasis"])
    aug = _aug(bank, stats)
    img = torch.zeros(2, 1, CANVAS, CANVAS, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"labels must be \(B, 26\), got shape \(2, 14\)"):
        aug(img, torch.zeros(2, 14))
    with pytest.raises(ValueError, match=r"images must be \(B, C, H, W\), got shape \(1, 64, 64\)"):
        aug(img[0], torch.zeros(2, 26))
    with pytest.raises(ValueError, match="images must have 1 or 3 channels, got C=2"):
        aug(torch.zeros(2, 2, CANVAS, CANVAS), torch.zeros(2, 26))
    with pytest.raises(ValueError, match="images are 32x32 but the patch bank's canvas is 64x64"):
        aug(torch.zeros(2, 1, 32, 32), torch.zeros(2, 26))
    with pytest.raises(ValueError, match="differ in batch size: 2 and 3"):
        aug(img, torch.zeros(3, 26))
    with pytest.raises(ValueError, match="params are for 1 samples, the batch has 2"):
        aug(img, torch.zeros(2, 26), params=aug.sample(torch.zeros(1, 26)))


def test_buffers_move_and_stay_out_of_state_dict(bank, stats):
    aug = _aug(bank, stats)
    assert aug.state_dict() == {}
    names = {n for n, _ in aug.named_buffers()}
    assert {"pixels", "offsets", "sizes", "patch_boxes", "tail_weight", "companion_weight"} <= names
    assert aug.to(torch.float64).pixels.dtype == torch.uint8


def test_sampler_is_free_of_host_sync_patterns():
    """Code review as a test: the hot-path modules use none of the calls that sync a GPU with the host."""
    root = pathlib.Path(__file__).resolve().parents[1] / "dadam"
    banned = re.compile(
        r"\.item\(\)|\.tolist\(\)|\.cpu\(\)|\.numpy\(\)|nonzero\(|for \w+ in range\((B|batch|len\()"
        r"|\.to\(\"cpu\"|torch\.tensor\("
    )
    files = [root / "ops.py", root / "augment.py", *sorted((root / "sampling").glob("*.py"))]
    assert len(files) >= 8
    offenders = [
        f"{path.name}:{i}: {line.strip()}"
        for path in files
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if banned.search(line.split("#")[0])
        and "CPU-only path" not in line
        and not line.strip().startswith((">>>", "..."))  # docstring examples
    ]
    assert not offenders, "host-sync calls outside the CPU-only path:\n" + "\n".join(offenders)
    for bad in ("x = t.item()", "for b in range(B):", 't.to("cpu")', "torch.tensor([1], device=d)"):
        assert banned.search(bad), bad  # the pattern itself bites


def test_sample_on_a_large_label_table(bank, stats):
    labels = make_label_table(100_000, seed=9)
    params = _aug(bank, stats, p=0.5).sample(labels)
    assert len(params) == 100_000 and params.changed.any() and params.labels.shape == labels.shape
    # the functional sampler (the correlation rule) with the module's tensors and the same seed draws the same params
    labels = labels[:2000]
    aug = _aug(bank, stats, p=0.5, generator=0, companions="correlation")
    assert torch.equal(
        aug.sample(labels).labels,
        sample(
            labels,
            tail_weight=aug.tail_weight,
            companion_weight=aug.companion_weight,
            patch_boxes=aug.patch_boxes,
            class_start=aug.class_start,
            class_count=aug.class_count,
            canvas=CANVAS,
            p=0.5,
            generator=torch.Generator().manual_seed(0),
        ).labels,
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_equals_cpu_with_replayed_params(bank, stats, table, dtype, channels_last):
    aug = _aug(bank, stats, p=0.9, generator=2)
    images = make_images(64, 3, CANVAS, dtype, channels_last=channels_last, seed=4)
    labels = table[:64].clone()
    out, lab, params = aug(images, labels, return_params=True)
    aug_cuda = _aug(bank, stats, p=0.9, generator=2).cuda()
    out_cuda, lab_cuda = aug_cuda(images.cuda(), labels.cuda(), params=params.to("cuda"))
    assert torch.equal(out_cuda.cpu(), out) and torch.equal(lab_cuda.cpu(), lab)
    assert out_cuda.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.gpu
@pytest.mark.parametrize("companions", COMPANION_RULES)
def test_cuda_forward_has_no_host_sync(bank, stats, table, companions):
    aug = _aug(bank, stats, p=0.9, generator=2, companions=companions).cuda()
    images = make_images(64, 3, CANVAS, torch.float32).cuda()
    labels = table[:64].cuda()
    mask = torch.arange(64, device="cuda") % 2 == 0
    weights = dict(tail_weight=aug.tail_weight.cpu(), companion_weight=aug.companion_weight.cpu())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:  # the first call included: the tables moved with the module, nothing is built or copied per call
        for _ in range(3):
            out, new_labels = aug(images, labels)
        out, new_labels = aug(images, labels, mask=mask)
        sample(  # the functional correlation rule from CPU tensors: pinned, non-blocking copies
            labels,
            **weights,
            patch_boxes=bank.boxes,
            class_start=bank.class_start,
            class_count=bank.class_count,
            canvas=CANVAS,
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == images.shape and new_labels.shape == labels.shape


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_cuda_in_place_forward_equals_cpu_without_sync(bank, stats, table, dtype):
    aug = _aug(bank, stats, p=0.9, generator=2)
    images = make_images(64, 3, CANVAS, dtype, channels_last=True, seed=4)
    labels = table[:64].clone()
    out, lab, params = aug(images, labels, return_params=True)
    aug_cuda = _aug(bank, stats, p=0.9, generator=2).cuda()
    target, cuda_params, cuda_labels = images.cuda(), params.to("cuda"), labels.cuda()  # copies sync: before the check
    aug_cuda(target.clone(), cuda_labels.clone(), params=cuda_params, inplace=True)  # build outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        res, lab_cuda = aug_cuda(target, cuda_labels, params=cuda_params, inplace=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert res is target and torch.equal(res.cpu(), out) and torch.equal(lab_cuda.cpu(), lab)
    assert aug_cuda.backend == "triton"


def test_uncovered_tail_class_triggers_blends_but_is_never_pasted(bank, stats):
    # "Pleural Other" has no patch in the bank: an image showing it still gets a blended companion (the method),
    # a normal image never gets it pasted.
    po, fib = CXR_LT_CLASSES.index("Pleural Other"), CXR_LT_CLASSES.index("Fibrosis")
    assert not bank.covered[po]
    corr = stats.corr.clone()
    corr[po, CXR_LT_CLASSES.index("Mass")] = corr[CXR_LT_CLASSES.index("Mass"), po] = 0.3
    s2 = LabelStats(stats.freq, corr, stats.class_names, stats.num_samples)
    aug = _aug(bank, s2, p=1.0, tail=["Pleural Other", "Fibrosis"], companions="correlation")
    assert aug.tail_names == ("Fibrosis",)
    y = torch.zeros(300, 26)
    y[:100, po] = 1.0
    y[100:200, NF] = 1.0
    y[200:, fib] = 1.0
    params = aug.sample(y)
    assert (params.mode[:100] == MODE_BLEND).all() and (params.mode[100:200] == MODE_PASTE).all()
    assert (params.mode[200:] == MODE_BLEND).all()
    assert params.labels[:100, CXR_LT_CLASSES.index("Mass")].eq(1).any()
    assert not (params.classes[100:200] == po).any() and (params.classes[100:200, 0] == fib).all()
    # the default tail set (covered classes only) leaves such an image alone
    assert (_aug(bank, s2, p=1.0, companions="correlation").sample(y[:100]).mode == MODE_NONE).all()


def test_single_tail_name_and_nan_options(bank, stats):
    assert _aug(bank, stats, tail="Fibrosis").tail_names == ("Fibrosis",)
    with pytest.raises(ValueError, match="gamma and beta must be >= 0, got gamma=nan"):
        DiseasedAreaAugment(bank, stats, gamma=float("nan"))
    with pytest.raises(ValueError, match="beta=nan"):
        DiseasedAreaAugment(bank, stats, beta=float("nan"))


@pytest.mark.gpu
def test_replay_cpu_params_on_cuda(bank, stats, table):
    aug = _aug(bank, stats, p=0.9, generator=2)
    images = make_images(16, 1, CANVAS, torch.uint8, seed=4)
    out, lab, params = aug(images, table[:16].clone(), return_params=True)
    out_cuda, lab_cuda = aug.cuda()(images.cuda(), table[:16].cuda(), params=params)  # params stay on the CPU
    assert torch.equal(out_cuda.cpu(), out) and torch.equal(lab_cuda.cpu(), lab)


def test_out_of_range_values_raise_naming_the_tensor_and_range(bank, stats, table):
    aug = _aug(bank, stats)
    labels = table[:4].clone()
    images = make_images(4, 1, CANVAS, torch.float32)
    for bad, found in ((images * 255, r"\[0\.\d+, 25\d\.\d+\]"), (images - 0.5, r"\[-0\.4\d+, 0\.4\d+\]")):
        with pytest.raises(ValueError, match=r"images \(torch.float32\) must be in \[0, 1\], got values in " + found):
            aug(bad, labels)
    # On the CPU the pixels under the placed patches are checked (those DADAM reads or replaces): a NaN there raises,
    # one elsewhere is left to the caller
    _, _, params = aug(images, labels, return_params=True)
    b, k = (int(i) for i in params.active.nonzero()[0])
    x0, y0 = (int(v) for v in params.boxes[b, k, :2])
    nan_image = images.clone()
    nan_image[b, 0, y0, x0] = float("nan")
    with pytest.raises(ValueError, match=r"must be in \[0, 1\], got values in \[nan, nan\]"):
        aug(nan_image, labels, params=params)
    untouched = params.active.any(1).logical_not().nonzero().flatten()
    assert len(untouched) > 0, "the case needs a sample without patches"
    outside = images.clone()
    outside[untouched[0]] = float("nan")  # a sample DADAM leaves alone
    aug(outside, labels, params=params)
    aug(images.to(torch.float16), labels)  # in range: fine
    aug((images * 255).to(torch.uint8), labels)  # uint8 is always in range
    soft = labels.clone()
    soft[1, 3] = 0.5
    soft[2, 4] = -1.0
    unknown = labels.clone()
    unknown[0, :5] = float("nan")
    aug(images, unknown)  # NaN means unknown: allowed
    message = r"labels must be 0, 1 or NaN \(unknown\), got 2 other values in \[-1, 0.5\]"
    with pytest.raises(ValueError, match=message):
        aug(images, soft)
    with pytest.raises(ValueError, match=message):
        aug.sample(soft)
    with pytest.raises(ValueError, match=message):
        aug(images, soft, params=aug.sample(labels))


def test_bad_module_arguments(bank, stats):
    with pytest.raises(ValueError, match=r"generator seed must fit in 64 bits, got 18446744073709551616"):
        DiseasedAreaAugment(bank, stats, generator=2**64)
    with pytest.raises(ValueError, match="generator seed must fit in 64 bits"):
        DiseasedAreaAugment(bank, stats, generator=-(2**63) - 1)
    with pytest.raises(ValueError, match="gamma must be at most 6"):
        DiseasedAreaAugment(bank, stats, gamma=float("inf"))
    with pytest.raises(ValueError, match="beta must be at most 6"):
        DiseasedAreaAugment(bank, stats, beta=1e6)
    with pytest.raises(ValueError, match="tail classes must be class names or int indices, got 1.5"):
        DiseasedAreaAugment(bank, stats, tail=[1.5])
    with pytest.raises(ValueError, match=r"tail class index 26 is outside \[0, 26\)"):
        DiseasedAreaAugment(bank, stats, tail=[26])
    with pytest.raises(ValueError, match="companions must be one of"):
        DiseasedAreaAugment(bank, stats, companions="pearson")
    names = [c for c in CXR_LT_CLASSES if c != "No Finding"] + ["Normal"]
    other = PatchBank.from_patches(
        [torch.zeros(4, 4, dtype=torch.uint8)], [[0, 0, 4, 4]], ["Mass"], canvas=CANVAS, class_names=names
    )
    other_stats = LabelStats(torch.full((26,), 0.1), torch.zeros(26, 26), tuple(names), 10)
    with pytest.raises(ValueError, match="the class list has no 'No Finding' class .*'Normal'"):
        DiseasedAreaAugment(other, other_stats, companions="correlation")
    with pytest.raises(ValueError, match="stats classes .* differ from the bank's"):
        DiseasedAreaAugment(other, stats)


@pytest.mark.gpu
def test_cuda_out_of_range_values_stop_with_a_device_assert(tmp_path):
    """On a GPU the check is a device-side assert (no host sync); it ends the process, so it runs in a child."""
    setup = (
        "from dadam import DiseasedAreaAugment, LabelStats\n"
        "from tests.helpers import make_bank, make_label_table\n"
        "y = make_label_table(200)\n"
        "aug = DiseasedAreaAugment(make_bank(canvas=64), LabelStats.from_labels(y), generator=0).cuda()\n"
        "x, y8 = torch.rand(8, 1, 64, 64, device='cuda'), y[:8].cuda()\n"
    )
    assert_device_assert_stops(setup, "aug(x * 255, y8)", "float images must be in [0, 1]")


# ---------------------------------------------------------------- feather and match


def _reference(bank, images, params, **options):
    slots = (params.boxes, params.patch_ids, params.active, params.alpha)
    return reference_paste(bank, images, *slots, **options)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_feather_and_match_record_the_map_and_replay_it(bank, stats, table, dtype):
    aug = _aug(bank, stats, p=1.0, jitter=0.1, feather=4, match="meanstd", generator=7)
    images = make_images(24, 3, CANVAS, dtype, seed=8)
    labels = table[:24].clone()
    out, _, params = aug(images, labels, return_params=True)
    measured = reference_match(bank, images, params.boxes, params.patch_ids, params.active, mode="meanstd")
    assert torch.equal(params.gain, measured[0]) and torch.equal(params.offset, measured[1])
    assert bool((params.gain[params.active] != 1).any()), "no slot was matched: the test would prove nothing"
    assert torch.equal(out, _reference(bank, images, params, gain=params.gain, offset=params.offset, feather=4))
    # a replay uses the recorded map, also on other images (where a fresh measure would differ)
    assert torch.equal(aug(images, labels, params=params)[0], out)
    other = make_images(24, 3, CANVAS, dtype, seed=9)
    replayed, _, again = aug(other, labels, params=params, return_params=True)
    assert torch.equal(again.gain, params.gain) and torch.equal(again.offset, params.offset)
    assert torch.equal(replayed, _reference(bank, other, params, gain=params.gain, offset=params.offset, feather=4))
    # params without a map (sample(): no pixels yet) are measured at paste time; NaN marks one slot as not measured
    assert aug.sample(labels).gain is None
    unmeasured = dataclasses.replace(params, gain=None, offset=None)
    assert torch.equal(aug.apply(images, unmeasured), out)
    k = int(params.active[0].nonzero()[0])
    partial = dataclasses.replace(params, gain=params.gain.clone(), offset=torch.zeros_like(params.offset))
    partial.gain[:] = 1.5
    partial.gain[0, k] = float("nan")
    mixed = aug.intensity_map(other, partial)
    one = reference_match(bank, other[:1], params.boxes[:1], params.patch_ids[:1], params.active[:1], mode="meanstd")
    assert float(mixed.gain[0, k]) == float(one[0][0, k])
    assert bool((mixed.gain[1:] == 1.5).all())
    # in place: the statistics are read before the patches are written
    target = images.clone()
    assert aug(target, labels, params=params, inplace=True)[0] is target and torch.equal(target, out)


def test_a_module_without_match_uses_a_recorded_map(bank, stats, table):
    images = make_images(16, 1, CANVAS, torch.uint8, seed=10)
    labels = table[:16].clone()
    _, _, params = _aug(bank, stats, p=1.0, match="mean", generator=3)(images, labels, return_params=True)
    plain = _aug(bank, stats, p=1.0, feather=2)
    expect = _reference(bank, images, params, gain=params.gain, offset=params.offset, feather=2)
    assert torch.equal(plain.apply(images, params), expect)
    nan = dataclasses.replace(params, gain=torch.full_like(params.gain, float("nan")))  # not measured: no map
    assert torch.equal(plain.apply(images, nan), _reference(bank, images, params, feather=2))
    defaults = _aug(bank, stats, p=1.0)
    assert (defaults.feather, defaults.match) == (0, "none") and "feather=0, match='none'" in repr(defaults)


def test_feather_and_match_options_are_checked(bank, stats):
    with pytest.raises(ValueError, match="feather must be an int >= 0, got -1"):
        _aug(bank, stats, feather=-1)
    with pytest.raises(ValueError, match=r"match must be one of \('none', 'mean', 'meanstd'\), got 'median'"):
        _aug(bank, stats, match="median")
    from dadam.config import DadamConfig

    aug = DiseasedAreaAugment.from_config(bank, stats, DadamConfig(feather=8, match="meanstd"))
    assert (aug.feather, aug.match) == (8, "meanstd")
    assert DadamConfig.from_dict({"p": 0.5}).feather == 0 and DadamConfig.from_dict({"p": 0.5}).match == "none"


def test_launches_of_a_forward_with_feather_and_match(bank, stats, table):
    # fake CUDA tensors (no GPU): feather adds no launch, match two (the zeroed sums and the match kernel), and no
    # host sync
    pytest.importorskip("triton")
    counts = {}
    for name, options in (("defaults", {}), ("feather", {"feather": 8}), ("both", {"feather": 8, "match": "meanstd"})):
        aug = _aug(bank, stats, p=1.0, max_patches=4, generator=None, **options)
        with fake_cuda() as log:
            aug = aug.to("cuda")
            images = torch.rand(64, 3, CANVAS, CANVAS, device="cuda")
            labels = table[:64].to("cuda")
            with log.recording():
                _, _, params = aug(images, labels, return_params=True)
            counts[name] = (list(log.launches), list(log.syncs))
            if name == "both":
                with log.recording():
                    aug(images, labels, params=params)
                counts["replay"] = (list(log.launches), list(log.syncs))
    for name, (_launches, syncs) in counts.items():
        assert not syncs, (name, syncs)
    assert len(counts["feather"][0]) == len(counts["defaults"][0])
    assert len(counts["both"][0]) == len(counts["defaults"][0]) + 2
    assert sum("_match_kernel" in n for n in counts["both"][0]) == 1
    assert sum("_paste" in n for n in counts["both"][0]) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_cuda_forward_with_feather_and_match_equals_cpu_without_sync(bank, stats, table, dtype):
    images = make_images(64, 3, CANVAS, dtype, channels_last=True, seed=11)
    labels = table[:64].clone()
    options = dict(p=0.9, feather=5, match="meanstd", generator=2)
    out, lab, params = _aug(bank, stats, **options)(images, labels, return_params=True)
    aug_cuda = _aug(bank, stats, **options).cuda()
    plain = dataclasses.replace(params, gain=None, offset=None).to("cuda")  # measured on the GPU
    cuda_images, cuda_labels = images.cuda(), labels.cuda()  # copies from the host sync: before the check
    aug_cuda(cuda_images, cuda_labels, params=plain)  # build outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        res, lab_cuda, got = aug_cuda(cuda_images, cuda_labels, params=plain, return_params=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(res.cpu(), out) and torch.equal(lab_cuda.cpu(), lab)
    assert torch.equal(got.gain.cpu(), params.gain) and torch.equal(got.offset.cpu(), params.offset)
