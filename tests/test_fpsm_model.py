"""FPSM model and pyramid loss: the TResNet-L contract, heads, combination, loss references, checkpoints."""

import time

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import AsymmetricLossMultiLabel

from fpsm import FPSM, FPSMOutput, create_fpsm, pyramid_loss
from fpsm.loss import masked_asymmetric_loss, masked_soft_margin_loss
from fpsm.model import stage_out_indices

TRESNET_L_CHANNELS = [76, 152, 1216, 2432]  # paper stages 1..4
STRIDES = [4, 8, 16, 32]


@pytest.fixture(scope="module")
def tresnet_l() -> FPSM:
    """TResNet-L FPSM on all four stages, built once per module (random weights)."""
    torch.manual_seed(0)
    return create_fpsm("tresnet_l", stages=(1, 2, 3, 4), num_classes=26)


def small_model(**options) -> FPSM:
    torch.manual_seed(0)
    return create_fpsm("resnet10t", **{"num_classes": 5, **options})


def head_reference(model: FPSM, images: torch.Tensor, dataset_ids=None) -> list[torch.Tensor]:
    """Obviously-correct head computation: pool each feature map, append one-hot, apply each Linear."""
    feats = model.forward_features(images)
    pooled = [nn.AdaptiveAvgPool2d(1)(f).flatten(1) for f in feats]
    if model.use_concatenate:
        pooled = [torch.cat(pooled, 1)]
    if model.use_binary_enc:
        code = F.one_hot(dataset_ids, model.num_datasets).float()
        pooled = [torch.cat([p, code], 1) for p in pooled]
    return [F.linear(p, h.weight, h.bias) for p, h in zip(pooled, model.heads, strict=True)]


# ---- TResNet-L contract -----------------------------------------------------------------------------------------


def test_tresnet_l_feature_info_contract(tresnet_l):
    info = tresnet_l.backbone.feature_info
    assert info.channels() == TRESNET_L_CHANNELS
    assert info.reduction() == STRIDES
    assert tresnet_l.stages == (1, 2, 3, 4)
    assert tresnet_l.feature_dims == TRESNET_L_CHANNELS
    assert [(h.in_features, h.out_features) for h in tresnet_l.heads] == [(c, 26) for c in TRESNET_L_CHANNELS]
    # TResNet's pretrained config normalises with mean 0 / std 1: the training code must read it from the model
    assert tuple(tresnet_l.pretrained_cfg["mean"]) == (0.0, 0.0, 0.0)


def test_tresnet_l_stage_mapping_uses_reductions():
    with torch.device("meta"):
        info = timm.create_model("tresnet_l").feature_info  # index 0 is the stem (reduction 2)
    assert [d["reduction"] for d in info] == [2, 4, 8, 16, 32]
    assert stage_out_indices(info, (1, 2, 3, 4)) == (1, 2, 3, 4)
    assert stage_out_indices(info, (2, 4)) == (2, 4)
    with torch.device("meta"):
        convnext = timm.create_model("convnext_atto").feature_info  # no stem entry: index = stage - 1
    assert stage_out_indices(convnext, (1, 3)) == (0, 2)


def test_tresnet_l_maps_small_input(tresnet_l):
    tresnet_l.eval()
    with torch.no_grad():
        feats = tresnet_l.forward_features(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, 64 // s, 64 // s) for c, s in zip(TRESNET_L_CHANNELS, STRIDES, strict=True)
    ]


def test_tresnet_l_binary_encoding_head_sizes(tresnet_l):
    enc = FPSM(tresnet_l.backbone, stages=(1, 2, 3, 4), num_classes=26, use_binary_enc=True, num_datasets=2)
    assert enc.feature_dims == [78, 154, 1218, 2434]
    assert [h.in_features for h in enc.heads] == [78, 154, 1218, 2434]
    concat = FPSM(tresnet_l.backbone, stages=(1, 2, 3, 4), use_concatenate=True, use_binary_enc=True, num_datasets=3)
    assert concat.feature_dims == [sum(TRESNET_L_CHANNELS) + 3]
    assert len(concat.heads) == 1


def test_backbone_must_match_stages(tresnet_l):
    with pytest.raises(ValueError, match=r"strides \[4, 8, 16, 32\] do not match stages \(2, 3, 4\)"):
        FPSM(tresnet_l.backbone, stages=(2, 3, 4))


@pytest.mark.slow
def test_tresnet_l_448_forward_backward_cpu(tresnet_l):
    tresnet_l.train()
    tresnet_l.zero_grad()
    images = torch.randn(2, 3, 448, 448)
    targets = (torch.rand(2, 26) < 0.3).float()
    start = time.perf_counter()
    feats = tresnet_l.forward_features(images)
    out = tresnet_l.forward_head(feats)
    loss = pyramid_loss(out, targets)
    loss.backward()
    seconds = time.perf_counter() - start
    print(f"\nTResNet-L FPSM 448x448 batch 2 forward+backward on CPU: {seconds:.2f} s")
    assert [tuple(f.shape[-2:]) for f in feats] == [(112, 112), (56, 56), (28, 28), (14, 14)]
    assert [f.shape[1] for f in feats] == TRESNET_L_CHANNELS
    assert out.probs.shape == (2, 26) and torch.isfinite(loss)
    for head in tresnet_l.heads:
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    first_conv = tresnet_l.backbone.body_conv1.conv.weight  # stride-4 stem after space-to-depth
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    tresnet_l.zero_grad(set_to_none=True)


# ---- heads, combination, dataset encoding -----------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["resnet10t", "efficientnet_b0"])
def test_any_feature_info_backbone(backbone):
    model = create_fpsm(backbone, stages=(1, 2, 3, 4), num_classes=7).eval()
    with torch.device("meta"):
        info = timm.create_model(backbone).feature_info
    by_stride = {d["reduction"]: d["num_chs"] for d in info}  # last entry per stride wins
    assert model.feature_dims == [by_stride[s] for s in STRIDES]
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, 64, 64))
        out = model(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, by_stride[s], 64 // s, 64 // s) for s in STRIDES]
    assert len(out.stage_logits) == 4 and out.probs.shape == (2, 7)


def test_stage_logits_equal_reference_and_combination_is_mean_prob():
    model = small_model(stages=(2, 3, 4)).eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = model(images)
        ref = head_reference(model, images)
    assert isinstance(out, FPSMOutput) and len(out.stage_logits) == 3
    for got, want in zip(out.stage_logits, ref, strict=True):
        torch.testing.assert_close(got, want)
    mean_prob = sum(torch.sigmoid(lg) for lg in ref) / 3
    torch.testing.assert_close(out.probs, mean_prob)
    torch.testing.assert_close(out.logits, torch.log(mean_prob / (1 - mean_prob)))
    assert model.feature_dims == [128, 256, 512] and model.num_classes == 5


def test_sum_logit_combination():
    model = small_model(stages=(2, 3, 4), combine="sum_logit").eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = model(images)
        ref = head_reference(model, images)
    total = ref[0] + ref[1] + ref[2]
    torch.testing.assert_close(out.logits, total)
    torch.testing.assert_close(out.probs, 1 / (1 + torch.exp(-total)))
    with pytest.raises(ValueError, match=r"combine must be one of \('mean_prob', 'sum_logit'\), got 'max'"):
        small_model(combine="max")


def test_data_config_comes_from_timm():
    """timm's TResNet weights want mean 0 and std 1 (not the ImageNet statistics); a ResNet's want ImageNet's."""
    for name in ("tresnet_l", "tresnet_l.miil_in1k_448"):
        cfg = create_fpsm(name, stages=(4,), num_classes=2).data_config
        assert cfg["mean"] == (0.0, 0.0, 0.0) and cfg["std"] == (1.0, 1.0, 1.0)
    assert create_fpsm("tresnet_l.miil_in1k_448", stages=(4,)).data_config["input_size"] == (3, 448, 448)
    res = small_model().data_config
    assert res["mean"] == (0.485, 0.456, 0.406) and res["std"] == (0.229, 0.224, 0.225)
    gray = small_model(in_chans=1).data_config
    assert gray["mean"] == (pytest.approx((0.485 + 0.456 + 0.406) / 3),) and len(gray["std"]) == 1
    res["mean"] = (9.0,)  # a copy each time
    assert small_model().data_config["mean"] == (0.485, 0.456, 0.406)


def test_logits_are_clamped():
    model = small_model().eval()
    with torch.no_grad():
        for head, bias in zip(model.heads, [100.0, 100.0, -100.0], strict=True):
            head.weight.zero_()
            head.bias.fill_(bias)
        out = model(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(out.probs, torch.full((1, 5), 2 / 3))  # mean of 1, 1, 0
    with torch.no_grad():
        for head in model.heads:
            head.bias.fill_(100.0)
        out = model(torch.randn(1, 3, 64, 64))
    assert torch.equal(out.probs, torch.ones(1, 5))
    torch.testing.assert_close(out.logits, torch.logit(torch.ones(1, 5), eps=1e-6))  # clamped, about 13.8
    assert (out.logits > 13).all() and (out.logits < 14).all()


def test_binary_encoding_shifts_logits_by_code_weights():
    model = small_model(use_binary_enc=True, num_datasets=3).eval()
    images = torch.randn(2, 3, 64, 64)
    images = torch.cat([images, images])  # same images under dataset 0, 0 and 2, 1
    ids = torch.tensor([0, 0, 2, 1])
    with torch.no_grad():
        out = model(images, ids)
        ref = head_reference(model, images, ids)
    for got, want, head in zip(out.stage_logits, ref, model.heads, strict=True):
        torch.testing.assert_close(got, want)
        code_w = head.weight[:, -3:]  # (C, 3): the one-hot columns
        torch.testing.assert_close(got[2] - got[0], code_w[:, 2] - code_w[:, 0])
        torch.testing.assert_close(got[3] - got[1], code_w[:, 1] - code_w[:, 0])
    assert model.feature_dims == [131, 259, 515]


def test_concat_variant_has_one_head():
    model = small_model(use_concatenate=True).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(images)
        (ref,) = head_reference(model, images)
    assert len(model.heads) == 1 and model.feature_dims == [128 + 256 + 512]
    assert len(out.stage_logits) == 1
    torch.testing.assert_close(out.stage_logits[0], ref)
    torch.testing.assert_close(out.probs, torch.sigmoid(ref))


def test_gradients_reach_every_head_and_backbone():
    model = small_model(stages=(1, 2, 3, 4), use_binary_enc=True).train()
    out = model(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))
    pyramid_loss(out, torch.tensor([[1.0, 0, float("nan"), 1, 0], [0, 0, 1, 1, 0]])).backward()
    for head in model.heads:
        assert head.weight.grad.abs().sum() > 0 and head.bias.grad.abs().sum() > 0
    stem = next(p for n, p in model.backbone.named_parameters() if n.startswith("conv1"))
    assert stem.grad is not None and stem.grad.abs().sum() > 0


def test_grayscale_input():
    model = small_model(in_chans=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.probs.shape == (2, 5)
    assert model.backbone.conv1[0].weight.shape[1] == 1


def test_drop_rate_applies_dropout_in_training_only():
    model = small_model(drop_rate=0.5)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.train()  # BatchNorm uses batch stats (deterministic), so only dropout can make runs differ
        assert not torch.equal(model(images).probs, model(images).probs)
        model.eval()
        assert torch.equal(model(images).probs, model(images).probs)
    with pytest.raises(ValueError, match=r"drop_rate must be in \[0, 1\), got 1.0"):
        small_model(drop_rate=1.0)


def test_model_errors():
    enc = small_model(use_binary_enc=True, num_datasets=2).eval()
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match="dataset_ids .* is required when use_binary_enc=True"):
        enc(x)
    with pytest.raises(ValueError, match=r"dataset_ids must be in \[0, 2\).*got values in \[0, 2\]"):
        enc(x, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"dataset_ids must be in \[0, 2\)"):
        enc(x, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"dataset_ids must have shape \(2,\)"):
        enc(x, torch.tensor([0]))
    with pytest.raises(TypeError, match="dataset_ids must be an integer tensor"):
        enc(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="use_binary_enc=False"):
        small_model()(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"images must be \(B, C, H, W\)"):
        enc(torch.randn(3, 64, 64), torch.tensor([0, 1, 0]))
    for stages in [(0, 1), (2, 5), (3, 2), (2, 2), ()]:
        with pytest.raises(ValueError, match="stages"):
            create_fpsm("resnet10t", stages=stages)
    with pytest.raises(ValueError, match="not a timm model name"):
        create_fpsm("no_such_net")
    with pytest.raises(ValueError, match=r"stage 1 needs a feature of stride 4, but vit_tiny_patch16_224 only has"):
        create_fpsm("vit_tiny_patch16_224", stages=(1, 2))
    with pytest.raises(ValueError, match="in_chans must be 1 .* or 3"):
        create_fpsm("resnet10t", in_chans=2)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        create_fpsm("resnet10t", num_classes=0)


# ---- pyramid loss -----------------------------------------------------------------------------------------------


def _logits_and_targets(b=6, c=5, stages=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = [torch.randn(b, c, generator=g) * 3 for _ in range(stages)]
    targets = (torch.rand(b, c, generator=g) < 0.4).float()
    return logits, targets


def test_soft_margin_loss_equals_torch_sum_over_stages():
    logits, targets = _logits_and_targets()
    want = sum(nn.MultiLabelSoftMarginLoss()(lg, targets) for lg in logits)
    got = pyramid_loss(logits, targets)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for lg in logits:  # one stage: exactly torch's value
        assert torch.equal(masked_soft_margin_loss(lg, targets), nn.MultiLabelSoftMarginLoss()(lg, targets))


def test_soft_margin_loss_on_model_output():
    model = small_model().eval()
    targets = (torch.rand(2, 5) < 0.5).float()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    want = sum(nn.MultiLabelSoftMarginLoss()(lg, targets) for lg in out.stage_logits)
    torch.testing.assert_close(pyramid_loss(out, targets), want, rtol=1e-6, atol=0)


def test_nan_targets_are_masked_like_the_known_subset():
    logits, targets = _logits_and_targets(b=8, c=6, seed=1)
    unknown = torch.rand(8, 6, generator=torch.Generator().manual_seed(2)) < 0.35
    unknown[3] = True  # a sample with no known label is left out of the batch mean
    targets = targets.masked_fill(unknown, float("nan"))
    logits = [lg.requires_grad_() for lg in logits]

    want = 0.0
    for lg in logits:  # reference: torch's loss per sample on its known classes, mean over samples with any
        per_sample = [
            nn.MultiLabelSoftMarginLoss()(lg[i, ~unknown[i]][None], targets[i, ~unknown[i]][None])
            for i in range(8)
            if (~unknown[i]).any()
        ]
        want = want + torch.stack(per_sample).mean()
    got = pyramid_loss(logits, targets)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    got.backward()
    for lg in logits:
        assert torch.isfinite(lg.grad).all()
        assert (lg.grad[unknown] == 0).all() and (lg.grad[~unknown] != 0).all()


def test_all_unknown_targets_give_zero_loss_with_finite_grad():
    lg = torch.randn(2, 3, requires_grad=True)
    loss = pyramid_loss([lg], torch.full((2, 3), float("nan")))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(lg.grad, torch.zeros(2, 3))
    lg.grad = None
    loss = pyramid_loss([lg], torch.full((2, 3), float("nan")), loss="asl")
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(lg.grad, torch.zeros(2, 3))


def test_asl_equals_timm_and_masks_nan():
    logits, targets = _logits_and_targets(seed=3)
    want = sum(AsymmetricLossMultiLabel()(lg, targets) for lg in logits)
    torch.testing.assert_close(pyramid_loss(logits, targets, loss="asl"), want, rtol=1e-6, atol=0)

    unknown = torch.rand(6, 5, generator=torch.Generator().manual_seed(4)) < 0.4
    nan_targets = targets.masked_fill(unknown, float("nan"))
    want = 0.0
    for lg in logits:  # reference: timm's summed loss on each sample's known classes, divided by batch size
        rows = [
            AsymmetricLossMultiLabel(reduction="sum")(lg[i, ~unknown[i]][None], targets[i, ~unknown[i]][None])
            for i in range(6)
        ]
        want = want + torch.stack(rows).sum() / 6
    torch.testing.assert_close(pyramid_loss(logits, nan_targets, loss="asl"), want, rtol=1e-6, atol=1e-7)


def test_loss_errors():
    logits, targets = _logits_and_targets()
    with pytest.raises(ValueError, match=r"loss must be one of \('soft_margin', 'asl'\), got 'bce'"):
        pyramid_loss(logits, targets, loss="bce")
    with pytest.raises(ValueError, match=r"equal shapes, got \(6, 5\) and \(6, 4\)"):
        pyramid_loss(logits, targets[:, :4])
    with pytest.raises(TypeError, match="targets must be a float tensor"):
        pyramid_loss(logits, targets.long())
    with pytest.raises(ValueError, match="no stage logits"):
        pyramid_loss([], targets)
    with pytest.raises(ValueError, match="reduction='none'"):
        masked_asymmetric_loss(logits[0], targets, asl=AsymmetricLossMultiLabel())


# ---- checkpoints ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet10t_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    source = timm.create_model("resnet10t")  # full model, with its ImageNet classifier
    state = source.state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "resnet10t.pth"
    torch.save(state, path)
    return path, state


def _assert_backbone_equals(model: FPSM, state: dict) -> None:
    own = model.backbone.state_dict()
    assert own, "empty backbone"
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


def test_backbone_checkpoint_loads_through_both_offline_paths(resnet10t_checkpoint):
    path, state = resnet10t_checkpoint
    fresh = small_model()
    with pytest.raises(AssertionError):
        _assert_backbone_equals(fresh, state)  # random init differs, so the check below can fail
    by_path = create_fpsm("resnet10t", num_classes=5, checkpoint_path=path)
    _assert_backbone_equals(by_path, state)
    by_overlay = create_fpsm("resnet10t", num_classes=5, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    _assert_backbone_equals(by_overlay, state)
    gray = create_fpsm("resnet10t", num_classes=5, checkpoint_path=path, in_chans=1)
    stem = state["conv1.0.weight"]  # timm adapts RGB -> 1 channel by summing the input channels
    torch.testing.assert_close(gray.backbone.state_dict()["conv1.0.weight"], stem.sum(dim=1, keepdim=True))


@pytest.mark.slow
def test_tresnet_checkpoint_loads_into_flattened_feature_net(tmp_path):
    torch.manual_seed(2)
    state = timm.create_model("tresnet_m").state_dict()
    path = tmp_path / "tresnet_m.pth"
    torch.save(state, path)
    model = create_fpsm("tresnet_m", checkpoint_path=path)
    own = model.backbone.state_dict()  # timm's feature net flattens body.layer1 -> body_layer1
    assert len(own) > 100
    for key, value in own.items():
        assert torch.equal(value, state[key.replace("body_", "body.", 1)]), key


def test_pretrained_weights_in_the_hub_cache_load_without_network(resnet10t_checkpoint, tmp_path, monkeypatch):
    """pretrained=True finds timm's weights in the Hugging Face cache and loads them as a local file (offline)."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    _, state = resnet10t_checkpoint
    repo = tmp_path / "hf" / "models--timm--resnet10t.c3_in1k"  # the cache layout of a hub download
    (repo / "snapshots" / "0123abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    save_file({k: v.contiguous() for k, v in state.items()}, str(repo / "snapshots" / "0123abc" / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a download attempt would fail
    model = create_fpsm("resnet10t", num_classes=5, pretrained=True)
    _assert_backbone_equals(model, state)


def test_checkpoint_errors(resnet10t_checkpoint, tmp_path):
    path, _ = resnet10t_checkpoint
    with pytest.raises(FileNotFoundError, match="backbone checkpoint not found"):
        create_fpsm("resnet10t", checkpoint_path=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="either as checkpoint_path or as pretrained_cfg_overlay"):
        create_fpsm("resnet10t", checkpoint_path=path, pretrained_cfg_overlay=dict(file=str(path)))
    other = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), other)  # different key names (conv1.weight)
    with pytest.raises(ValueError, match=r"resnet18.pth: not a full resnet10t checkpoint .* weights missing"):
        create_fpsm("resnet10t", checkpoint_path=other)
    fpsm_ckpt = tmp_path / "fpsm.pth"
    torch.save(small_model().state_dict(), fpsm_ckpt)  # an FPSM checkpoint is not a backbone checkpoint
    with pytest.raises(ValueError, match="model.load_state_dict"):
        create_fpsm("resnet10t", checkpoint_path=fpsm_ckpt)


def test_fpsm_state_dict_round_trip(tmp_path):
    model = small_model(use_binary_enc=True, num_datasets=3)
    model.train()
    with torch.no_grad():  # move BatchNorm running stats off their init values
        model(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0]))
    path = tmp_path / "fpsm.pth"
    torch.save(model.state_dict(), path)
    torch.manual_seed(123)
    restored = create_fpsm("resnet10t", num_classes=5, use_binary_enc=True, num_datasets=3)
    restored.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    restored.eval()
    images, ids = torch.randn(2, 3, 64, 64), torch.tensor([2, 0])
    with torch.no_grad():
        a, b = model(images, ids), restored(images, ids)
    assert torch.equal(a.probs, b.probs)
    assert all(torch.equal(x, y) for x, y in zip(a.stage_logits, b.stage_logits, strict=True))


@pytest.mark.gpu
def test_cpu_equals_cuda_and_autocast():
    model = small_model(use_binary_enc=True).eval()
    images, ids = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    targets = torch.tensor([[1.0, 0, float("nan"), 1, 0], [0, 0, 1, 1, 0]])
    with torch.no_grad():
        cpu = model(images, ids)
        cpu_loss = pyramid_loss(cpu, targets)
        model.cuda()
        gpu = model(images.cuda(), ids.cuda())
        torch.testing.assert_close(gpu.probs.cpu(), cpu.probs, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(pyramid_loss(gpu, targets.cuda()).cpu(), cpu_loss, rtol=1e-4, atol=1e-5)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            amp = model(images.cuda(), ids.cuda())
    assert amp.probs.dtype == torch.float32 and torch.isfinite(amp.logits).all()
    torch.testing.assert_close(amp.probs.cpu(), cpu.probs, rtol=0, atol=0.05)


@pytest.mark.gpu
def test_cuda_forward_with_dataset_ids_does_not_sync_host():
    """A training forward on the GPU must not read dataset_ids back to the host (the id check is CPU-only)."""
    model = small_model(use_binary_enc=True).cuda()
    images, ids = torch.randn(2, 3, 64, 64, device="cuda"), torch.tensor([0, 1], device="cuda")
    model(images, ids)  # warm-up: cuDNN autotuning and allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = model(images, ids)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert out.probs.shape == (2, 5)


@pytest.mark.gpu
def test_targets_out_of_range_trip_a_device_assert_on_cuda():
    """On CUDA the range check of the targets is a device-side assert (no host sync); it ends the CUDA context, so it
    runs in its own process."""
    import subprocess
    import sys

    code = (
        "import torch\nfrom fpsm.loss import pyramid_loss\n"
        "t = torch.tensor([[{}, 0.0]], device='cuda')\n"
        "pyramid_loss([torch.zeros(1, 2, device='cuda')], t)\ntorch.cuda.synchronize()\n"
    )
    good = subprocess.run([sys.executable, "-c", code.format("1.0")], capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stderr[-2000:]
    bad = subprocess.run([sys.executable, "-c", code.format("2.0")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "assert" in bad.stderr.lower(), bad.stderr[-2000:]
