"""fpsm.training.base_aug: the light base augmentation drawn from the run's generator and applied with kornia's
functional ops; checked against plain tensor references (shifts, quarter turns, the brightness/contrast formula)."""

from __future__ import annotations

import pytest
import torch

from fpsm.training.base_aug import BaseAugment, BaseAugParams, LightAugConfig, apply_base_aug, sample_base_params


def _params(B, *, angle=0.0, dx=0.0, dy=0.0, scale=1.0, brightness=0.0, contrast=1.0):
    full = lambda v: torch.full((B,), float(v))  # noqa: E731
    return BaseAugParams(
        full(angle), torch.stack([full(dx), full(dy)], 1), full(scale), full(brightness), full(contrast)
    )


def _images(B=3, S=16, seed=0):
    return torch.randint(0, 256, (B, 1, S, S), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_identity_params_return_the_image_as_float():
    x = _images()
    out = apply_base_aug(x, _params(3))
    assert out.dtype == torch.float32 and out.shape == x.shape and x._version == 0
    torch.testing.assert_close(out, x.float() / 255, rtol=0, atol=1e-6)


def test_whole_pixel_shift_matches_a_slice():
    x = _images(S=12).float() / 255
    out = apply_base_aug(x, _params(3, dx=3, dy=-2))
    ref = torch.zeros_like(x)
    ref[..., 0:10, 3:12] = x[..., 2:12, 0:9]  # content moves right by 3 and up by 2; zeros come in
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_quarter_turn_is_clockwise_as_displayed():
    x = _images(S=10).float() / 255
    out = apply_base_aug(x, _params(3, angle=90.0))
    torch.testing.assert_close(out, torch.rot90(x, k=-1, dims=(2, 3)), rtol=0, atol=1e-5)


def test_brightness_then_contrast_formula_and_clamp():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    p = _params(4)
    p.brightness = torch.tensor([0.1, -0.1, 0.0, 0.05])
    p.contrast = torch.tensor([1.1, 0.9, 1.0, 1.05])
    out = apply_base_aug(x, p)
    ref = torch.stack([((x[i] + p.brightness[i]).clamp(0, 1) * p.contrast[i]).clamp(0, 1) for i in range(4)])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_draws_stay_in_the_light_ranges_and_follow_the_generator():
    cfg = LightAugConfig()
    g = torch.Generator().manual_seed(5)
    p = sample_base_params(4096, (100, 200), cfg, generator=g)
    assert float(p.angle.abs().max()) <= 5 and float(p.angle.abs().max()) > 4.9
    assert float(p.translate[:, 0].abs().max()) <= 0.05 * 200 and float(p.translate[:, 1].abs().max()) <= 0.05 * 100
    assert 0.9 <= float(p.scale.min()) and float(p.scale.max()) <= 1.1
    assert float(p.brightness.abs().max()) <= 0.1 and 0.9 <= float(p.contrast.min()) <= float(p.contrast.max()) <= 1.1
    # the same generator state gives the same draws; drawing moves the state on (the next batch differs)
    again = sample_base_params(4096, (100, 200), cfg, generator=torch.Generator().manual_seed(5))
    assert torch.equal(p.angle, again.angle) and torch.equal(p.contrast, again.contrast)
    state = torch.get_rng_state()
    x = _images(B=4)
    a = BaseAugment()(x, generator=torch.Generator().manual_seed(9))
    b = BaseAugment()(x, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)  # torch's global generator untouched
    g2 = torch.Generator().manual_seed(9)
    first = BaseAugment()(x, generator=g2)
    assert not torch.equal(BaseAugment()(x, generator=g2), first)


def test_batched_equals_per_sample():
    x = _images(B=5, S=20)
    out, p = BaseAugment()(x, generator=torch.Generator().manual_seed(3), return_params=True)
    for i in range(5):
        one = BaseAugParams(
            *(getattr(p, f)[i : i + 1] for f in ("angle", "translate", "scale", "brightness", "contrast"))
        )
        torch.testing.assert_close(apply_base_aug(x[i : i + 1], one), out[i : i + 1], rtol=0, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"images must be \(B, C, H, W\), got shape \(8, 8\)"):
        apply_base_aug(torch.zeros(8, 8), _params(1))
    with pytest.raises(ValueError, match="params are for 2 images, the batch has 3"):
        apply_base_aug(_images(), _params(2))


@pytest.mark.gpu
def test_cuda_equals_cpu_and_does_not_sync():
    x = _images(B=4, S=32)
    p = sample_base_params(4, (32, 32), LightAugConfig(), generator=torch.Generator().manual_seed(0))
    ref = apply_base_aug(x, p)
    xc = x.cuda()
    pc = BaseAugParams(*(getattr(p, f).cuda() for f in ("angle", "translate", "scale", "brightness", "contrast")))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = apply_base_aug(xc, pc)
        BaseAugment()(xc, generator=torch.Generator(device="cuda").manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=1e-4)
