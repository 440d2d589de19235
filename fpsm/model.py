"""The Feature Pyramid Sum Model (FPSM): one multi-label head per backbone stage.

Kim et al. (2023) put a classifier on several stages of a TResNet-L backbone: each stage's feature map is
global-average pooled, optionally extended by a one-hot code of the source dataset ("binary encoding"), and fed
to its own linear layer. Training sums the per-stage losses (see :func:`fpsm.loss.pyramid_loss`); the combined
prediction is the mean of the per-stage probabilities (``combine="mean_prob"``) or the sigmoid of the summed logits
(``combine="sum_logit"``). The paper leaves this open; ``mean_prob`` is an interpretation.

Stages are numbered as in the paper, by output stride: stage 1..4 = stride 4, 8, 16, 32. They are mapped onto
timm's ``out_indices`` through the backbone's ``feature_info`` reductions, so any timm model with ``feature_info``
works (TResNet, ResNet, EfficientNet, ConvNeXt, ...).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

import timm
import torch
import torch.nn as nn
from timm.layers import get_spatial_dim

__all__ = ["COMBINE_RULES", "FPSM", "FPSMOutput", "STAGE_REDUCTIONS", "create_fpsm", "stage_out_indices"]

# Paper stage number -> output stride (timm's feature_info "reduction").
STAGE_REDUCTIONS: dict[int, int] = {1: 4, 2: 8, 3: 16, 4: 32}
COMBINE_RULES = ("mean_prob", "sum_logit")
"""How the heads' outputs make the prediction: the mean of their probabilities, or the sigmoid of their summed logits."""

# Probabilities are clamped to [eps, 1 - eps] before the logit of the combined prediction (|logit| <= 13.8).
_LOGIT_EPS = 1e-6
# How long create_fpsm(pretrained=True) waits for a connection to the weights' host before calling it offline.
_PROBE_SECONDS = 3.0


@dataclass
class FPSMOutput:
    """What :class:`FPSM` returns.

    Attributes:
        stage_logits: one ``(B, C)`` tensor of raw logits per head (per stage, in ``model.stages`` order; a single
            entry for the concatenated variant). The loss is computed on these.
        probs: ``(B, C)`` float32 combined probability: the mean over heads of ``sigmoid(stage_logits[k])``
            (``combine="mean_prob"``) or ``sigmoid(sum_k stage_logits[k])`` (``"sum_logit"``).
        logits: ``(B, C)`` float32: ``logit(probs)`` with ``probs`` clamped to ``[1e-6, 1 - 1e-6]``
            (``"mean_prob"``), or the summed logits (``"sum_logit"``).
    """

    stage_logits: list[torch.Tensor]
    probs: torch.Tensor
    logits: torch.Tensor


def _check_stages(stages: Sequence[int]) -> tuple[int, ...]:
    if isinstance(stages, (int, str, bytes)) or not hasattr(stages, "__iter__"):
        raise TypeError(
            f"stages must be a sequence of stage numbers, e.g. stages=(4,) or stages=(2, 3, 4), got {stages!r}"
        )
    stages = tuple(stages)
    if not stages:
        raise ValueError("stages must name at least one stage of 1, 2, 3, 4, got ()")
    for s in stages:
        if isinstance(s, bool) or not isinstance(s, int) or s not in STAGE_REDUCTIONS:
            raise ValueError(f"stages must be integers in 1..4 (stride 4, 8, 16, 32), got {stages}")
    if any(b <= a for a, b in zip(stages, stages[1:], strict=False)):
        raise ValueError(f"stages must be strictly increasing, got {stages}")
    return stages


def _feature_info_list(backbone: str) -> tuple[list[dict], dict]:
    """The ``feature_info`` and the ``pretrained_cfg`` of timm model ``backbone``, built on the meta device (no
    memory, no weights)."""
    if not timm.is_model(backbone):
        raise ValueError(f"backbone={backbone!r} is not a timm model name (see timm.list_models())")
    try:
        with torch.device("meta"):
            model = timm.create_model(backbone, pretrained=False)
    except Exception:  # a few models cannot be built on the meta device; build them for real
        model = timm.create_model(backbone, pretrained=False)
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"backbone={backbone!r} has no feature_info, so its stages cannot be located")
    return [dict(d) for d in getattr(info, "info", info)], dict(getattr(model, "pretrained_cfg", None) or {})


def _cached_weights(pretrained_cfg: dict) -> str | None:
    """The local file of the timm weights a ``pretrained_cfg`` names, when a download put it in the Hugging Face or
    torch hub cache; else None. Nothing is fetched."""
    hub_id = pretrained_cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        names = [pretrained_cfg["hf_hub_filename"]] if pretrained_cfg.get("hf_hub_filename") else []
        for name in names or ["model.safetensors", "pytorch_model.bin"]:  # timm's file names on the hub
            found = try_to_load_from_cache(repo, name, revision=revision or None)
            if isinstance(found, str):
                return found
    url = pretrained_cfg.get("url")
    if url:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))
        if os.path.isfile(path):
            return path
    return None


def _unreachable(pretrained_cfg: dict) -> str | None:
    """Why the download of a ``pretrained_cfg``'s weights cannot work (offline mode, no connection), or None.

    huggingface_hub retries a failed download for about a minute; a plain connection with a short timeout tells in a
    second or two. Behind a proxy the connection is not tried (the download may go through it).
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = constants.ENDPOINT if pretrained_cfg.get("hf_hub_id") else pretrained_cfg.get("url") or constants.ENDPOINT
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=_PROBE_SECONDS).close()
    except OSError as err:
        return f"{host}:{port} cannot be reached: {err}"
    return None


def stage_out_indices(
    feature_info: Sequence[dict], stages: Sequence[int], *, backbone: str = "backbone"
) -> tuple[int, ...]:
    """Map paper stage numbers to timm ``out_indices`` by the stages' output strides.

    For each stage the last ``feature_info`` entry with the stage's reduction is taken (the deepest feature at that
    stride).

    Args:
        feature_info: a timm model's ``feature_info`` (list of dicts with ``num_chs`` and ``reduction``).
        stages: paper stage numbers, strictly increasing, each in 1..4 (stride 4, 8, 16, 32).
        backbone: name used in the error message.

    Returns:
        One index into ``feature_info`` per stage.

    Example:
        >>> stage_out_indices([{"num_chs": 76, "reduction": 2}, {"num_chs": 76, "reduction": 4}], (1,))
        (1,)
    """
    stages = _check_stages(stages)
    reductions = [int(d["reduction"]) for d in feature_info]
    out = []
    for s in stages:
        hits = [i for i, r in enumerate(reductions) if r == STAGE_REDUCTIONS[s]]
        if not hits:
            raise ValueError(
                f"stage {s} needs a feature of stride {STAGE_REDUCTIONS[s]}, but {backbone} only has strides "
                f"{sorted(set(reductions))}; choose stages among those"
            )
        out.append(hits[-1])
    return tuple(out)


class FPSM(nn.Module):
    """Feature Pyramid Sum Model around a timm ``features_only`` backbone.

    Use :func:`create_fpsm` to build one from a timm model name; this class wraps an already built feature
    extractor whose ``feature_info.reduction()`` equals the strides of ``stages``.

    Each head: global average pooling ``(B, C_s, H_s, W_s) -> (B, C_s)`` -> [concat one-hot dataset code
    ``(B, num_datasets)``] -> dropout(``drop_rate``) -> ``Linear -> (B, num_classes)``. With ``use_concatenate`` the
    pooled stage features are concatenated (then the one-hot code, once) into a single head.

    Args:
        backbone: a timm ``features_only`` model returning one feature map per entry of ``stages``.
        stages: paper stage numbers of the backbone outputs, strictly increasing, each in 1..4.
        num_classes: number of labels ``C``.
        use_binary_enc: append a one-hot code of ``dataset_ids`` to every head input.
        num_datasets: length of the one-hot code (number of source datasets).
        use_concatenate: one head on the concatenated pooled features instead of one head per stage.
        drop_rate: dropout probability before each linear layer.
        combine: ``"mean_prob"`` (the mean of the heads' probabilities) or ``"sum_logit"`` (the sigmoid of the summed
            logits): how :attr:`FPSMOutput.probs` is made. The loss is always summed per head.
        in_chans: the backbone's input channels (the data config's mean and std follow it).

    Attributes:
        pretrained_cfg: the backbone's timm config.
        data_config: the input the backbone expects (``mean``, ``std``, ``input_size``, ``interpolation``,
            ``crop_pct``, ``crop_mode``), from ``timm.data.resolve_data_config`` on :attr:`pretrained_cfg`.
            TResNet's weights want mean 0 and std 1, a ResNet's the ImageNet statistics.

    Shape:
        - images: ``(B, in_chans, H, W)``; dataset_ids: ``(B,)`` int64 in ``[0, num_datasets)``.
        - output: :class:`FPSMOutput` with ``(B, num_classes)`` tensors.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        stages: Sequence[int] = (2, 3, 4),
        num_classes: int = 26,
        use_binary_enc: bool = False,
        num_datasets: int = 2,
        use_concatenate: bool = False,
        drop_rate: float = 0.0,
        combine: str = "mean_prob",
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.stages = _check_stages(stages)
        if combine not in COMBINE_RULES:
            raise ValueError(f"combine must be one of {COMBINE_RULES}, got {combine!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if use_binary_enc and (isinstance(num_datasets, bool) or not isinstance(num_datasets, int) or num_datasets < 1):
            raise ValueError(f"num_datasets must be a positive integer when use_binary_enc=True, got {num_datasets!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        info = getattr(backbone, "feature_info", None)
        if info is None or not hasattr(info, "reduction"):
            raise TypeError("backbone must be a timm features_only model (with feature_info.reduction())")
        expected = [STAGE_REDUCTIONS[s] for s in self.stages]
        if list(info.reduction()) != expected:
            raise ValueError(
                f"backbone feature strides {list(info.reduction())} do not match stages {self.stages} "
                f"(expected strides {expected})"
            )
        self.backbone = backbone
        self.num_classes = num_classes
        self.use_binary_enc = bool(use_binary_enc)
        self.num_datasets = num_datasets
        self.use_concatenate = bool(use_concatenate)
        self.drop_rate = drop_rate
        self.stage_channels: list[int] = list(info.channels())
        self._spatial_dims = tuple(get_spatial_dim(getattr(backbone, "output_fmt", "NCHW")))
        code = num_datasets if self.use_binary_enc else 0
        chans = [sum(self.stage_channels)] if self.use_concatenate else self.stage_channels
        self.feature_dims: list[int] = [c + code for c in chans]
        self.drop = nn.Dropout(drop_rate)
        self.heads = nn.ModuleList(nn.Linear(d, num_classes) for d in self.feature_dims)
        self.combine = combine
        self.in_chans = in_chans
        # The backbone's timm config (mean/std, input size), read by data_config.
        self.pretrained_cfg = dict(getattr(backbone, "pretrained_cfg", {}) or {})

    @property
    def data_config(self) -> dict:
        """The backbone's input config from ``timm.data.resolve_data_config`` (a new dict each time).

        ``mean`` and ``std`` have ``in_chans`` values (for one channel, the mean of timm's three).

        Example:
            >>> create_fpsm("resnet10t").data_config["std"]
            (0.229, 0.224, 0.225)
        """
        from timm.data import resolve_data_config

        config = dict(resolve_data_config(pretrained_cfg=self.pretrained_cfg))
        if self.in_chans == 1 and len(config["mean"]) > 1:
            config["mean"] = (sum(config["mean"]) / len(config["mean"]),)
            config["std"] = (sum(config["std"]) / len(config["std"]),)
        return config

    def _dataset_code(self, dataset_ids: torch.Tensor | None, batch: int, ref: torch.Tensor) -> torch.Tensor | None:
        if not self.use_binary_enc:
            if dataset_ids is not None:
                raise ValueError("dataset_ids was given but the model was built with use_binary_enc=False")
            return None
        if dataset_ids is None:
            raise ValueError(f"dataset_ids (B,) int64 in [0, {self.num_datasets}) is required when use_binary_enc=True")
        if not isinstance(dataset_ids, torch.Tensor) or dataset_ids.dtype.is_floating_point or dataset_ids.is_complex():
            raise TypeError(
                f"dataset_ids must be an integer tensor, got {type(dataset_ids).__name__} "
                f"{getattr(dataset_ids, 'dtype', '')}"
            )
        if dataset_ids.shape != (batch,):
            raise ValueError(f"dataset_ids must have shape ({batch},), got {tuple(dataset_ids.shape)}")
        # The value check reads the ids back to the host: done for CPU ids only, so that a training step on the GPU
        # never waits for it (out-of-range GPU ids trip one_hot's device-side assert instead).
        on_cpu = dataset_ids.device.type == "cpu"
        if on_cpu and batch and (int(dataset_ids.min()) < 0 or int(dataset_ids.max()) >= self.num_datasets):
            raise ValueError(
                f"dataset_ids must be in [0, {self.num_datasets}) (num_datasets={self.num_datasets}), "
                f"got values in [{int(dataset_ids.min())}, {int(dataset_ids.max())}]"
            )
        code = nn.functional.one_hot(dataset_ids.to(ref.device, torch.long), self.num_datasets)  # (B, D)
        return code.to(ref.dtype)

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone feature maps, one per stage: ``(B, C_s, H / stride_s, W / stride_s)`` (NCHW backbones)."""
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        return list(self.backbone(images))

    def forward_head(self, features: Sequence[torch.Tensor], dataset_ids: torch.Tensor | None = None) -> FPSMOutput:
        """Pool, (encode,) classify and combine the stage feature maps from :meth:`forward_features`."""
        if len(features) != len(self.stages):
            raise ValueError(f"expected {len(self.stages)} feature maps (stages {self.stages}), got {len(features)}")
        pooled = [f.mean(dim=self._spatial_dims) for f in features]  # each (B, C_s)
        if self.use_concatenate:
            pooled = [torch.cat(pooled, dim=1)]  # (B, sum C_s)
        code = self._dataset_code(dataset_ids, pooled[0].shape[0], pooled[0])  # (B, D) or None
        if code is not None:
            pooled = [torch.cat([p, code], dim=1) for p in pooled]
        stage_logits = [head(self.drop(p)) for head, p in zip(self.heads, pooled, strict=True)]  # each (B, C)
        if self.combine == "sum_logit":  # one logit per class: the sum over the heads
            logits = torch.stack([lg.float() for lg in stage_logits]).sum(dim=0)  # (B, C)
            return FPSMOutput(stage_logits=stage_logits, probs=logits.sigmoid(), logits=logits)
        # mean_prob: the mean of the per-head probabilities (every stage votes with equal weight)
        probs = torch.stack([lg.float().sigmoid() for lg in stage_logits]).mean(dim=0)  # (B, C)
        return FPSMOutput(stage_logits=stage_logits, probs=probs, logits=torch.logit(probs, eps=_LOGIT_EPS))

    def forward(self, images: torch.Tensor, dataset_ids: torch.Tensor | None = None) -> FPSMOutput:
        """Args:
            images: ``(B, in_chans, H, W)`` float images, normalised as the backbone expects.
            dataset_ids: ``(B,)`` int64 source-dataset index; required iff ``use_binary_enc``. Values outside
                ``[0, num_datasets)`` raise ``ValueError`` for CPU tensors (checked without a host sync on the GPU:
                a device-side assert there).

        Returns:
            :class:`FPSMOutput` with per-stage logits and the combined ``probs`` / ``logits``.
        """
        return self.forward_head(self.forward_features(images), dataset_ids)


def create_fpsm(
    backbone: str = "tresnet_l",
    *,
    stages: Sequence[int] = (2, 3, 4),
    num_classes: int = 26,
    use_binary_enc: bool = False,
    num_datasets: int = 2,
    use_concatenate: bool = False,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    pretrained_cfg_overlay: dict | None = None,
    drop_rate: float = 0.0,
    in_chans: int = 3,
    combine: str = "mean_prob",
) -> FPSM:
    """Build an :class:`FPSM` on ``timm.create_model(backbone, features_only=True, out_indices=...)``.

    Pretrained weights offline: no download is possible here, so pass a local file of the backbone's full timm
    model (e.g. ``timm.create_model("tresnet_l").state_dict()`` saved with ``torch.save``, or timm's
    ``.safetensors`` / ``.pth`` from the hub) either as ``checkpoint_path`` or as
    ``pretrained=True, pretrained_cfg_overlay=dict(file=path)``. Both go through timm's pretrained loader, which
    applies the model's checkpoint filter (e.g. TResNet's inplace-abn -> BatchNorm conversion), drops the classifier
    and adapts the first convolution to ``in_chans``. The checkpoint must hold every backbone weight under timm's
    key names, else ``ValueError`` lists the missing keys. To restore a trained FPSM use
    ``model.load_state_dict(torch.load(path))`` instead.

    Args:
        backbone: timm model name with ``feature_info`` (default TResNet-L as in the paper).
        stages: paper stage numbers 1..4 (strides 4, 8, 16, 32), strictly increasing.
        num_classes: number of labels (26 for CXR-LT 2023).
        use_binary_enc: append a one-hot dataset code to every head input.
        num_datasets: length of that code.
        use_concatenate: one head on the concatenated pooled stage features.
        pretrained: load timm pretrained weights: from the Hugging Face / torch hub cache when a download put them
            there, else downloaded; offline and not cached, ``FileNotFoundError`` within seconds, naming
            ``checkpoint_path`` and ``pretrained_cfg_overlay`` (the ways to give a local file).
        checkpoint_path: local full-model timm checkpoint of ``backbone`` to initialise the backbone from.
        pretrained_cfg_overlay: passed to timm (e.g. ``dict(file="tresnet_l.safetensors")``).
        drop_rate: dropout before each head's linear layer.
        in_chans: input channels (1 for grayscale X-rays, 3 for RGB).
        combine: ``"mean_prob"`` or ``"sum_logit"``: how the heads make the prediction (see :class:`FPSM`).

    Returns:
        The model, in training mode.

    Example:
        >>> model = create_fpsm("resnet10t", stages=(2, 3, 4), num_classes=26)
        >>> out = model(torch.randn(2, 3, 64, 64))
        >>> out.probs.shape, len(out.stage_logits), model.feature_dims
        (torch.Size([2, 26]), 3, [128, 256, 512])
    """
    stages = _check_stages(stages)
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans!r}")
    overlay = dict(pretrained_cfg_overlay) if pretrained_cfg_overlay is not None else None
    if checkpoint_path is not None:
        if overlay is not None and overlay.get("file") is not None:
            raise ValueError(
                "give the backbone weights either as checkpoint_path or as pretrained_cfg_overlay['file'], not both "
                f"(got {checkpoint_path!r} and {overlay['file']!r})"
            )
        overlay = {**(overlay or {}), "file": os.fspath(checkpoint_path)}
        pretrained = True
    weights_file = overlay.get("file") if overlay else None
    if weights_file is not None and not os.path.isfile(weights_file):
        raise FileNotFoundError(f"backbone checkpoint not found: {weights_file}")

    info, pretrained_cfg = _feature_info_list(backbone)
    out_indices = stage_out_indices(info, stages, backbone=backbone)
    if pretrained and weights_file is None:
        weights_file = _cached_weights(pretrained_cfg)  # a cached download loads as a local file: no network
        if weights_file is not None:
            overlay = {**(overlay or {}), "file": weights_file}
        else:
            reason = _unreachable(pretrained_cfg)
            if reason is not None:
                source = pretrained_cfg.get("hf_hub_id") or pretrained_cfg.get("url") or "timm's default weights"
                raise FileNotFoundError(
                    f"pretrained=True: the {backbone} weights ({source}) are not in the local cache and cannot be "
                    f"downloaded ({reason}). Give a local file of the backbone's timm weights instead: "
                    f"checkpoint_path='{backbone}.safetensors' (--checkpoint-path) or "
                    f"pretrained_cfg_overlay=dict(file='{backbone}.safetensors'); or use pretrained=False"
                )
    if pretrained and weights_file is not None and not weights_file.lower().endswith((".npz", ".npy")):
        _check_checkpoint_keys(backbone, weights_file)
    extra = {"pretrained_cfg_overlay": overlay} if overlay is not None else {}
    features = timm.create_model(
        backbone, pretrained=pretrained, features_only=True, out_indices=out_indices, in_chans=in_chans, **extra
    )
    return FPSM(
        features,
        stages=stages,
        num_classes=num_classes,
        use_binary_enc=use_binary_enc,
        num_datasets=num_datasets,
        use_concatenate=use_concatenate,
        drop_rate=drop_rate,
        combine=combine,
        in_chans=in_chans,
    )


def _check_checkpoint_keys(backbone: str, path: str) -> None:
    """Raise if the checkpoint at ``path`` lacks backbone weights (timm would silently leave them random)."""
    from timm.models import load_state_dict

    state = load_state_dict(path)  # unwraps "state_dict" / "model" / EMA entries and "module." prefixes
    with torch.device("meta"):
        model = timm.create_model(backbone, pretrained=False)
    classifier = model.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    skip = tuple(f"{c}." for c in classifier)
    needed = [k for k in model.state_dict() if not k.startswith(skip)]
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(
            f"{path}: not a full {backbone} checkpoint in timm's key format: {len(missing)} of {len(needed)} backbone "
            f"weights missing (first: {missing[:5]}); to restore a trained FPSM use model.load_state_dict(...)"
        )
