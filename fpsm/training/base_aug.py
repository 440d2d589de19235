"""Base augmentation of the training batches on the device (``TrainConfig.aug``), after DADAM, before normalising.

``"light"``: per image a small affine (rotation within +-5 degrees, translation within +-5 % of the side, scale
0.9-1.1) and a brightness shift and contrast factor within +-0.1, as kornia's ``RandomAffine(5, (0.05, 0.05),
(0.9, 1.1))`` and ``ColorJiggle(brightness=0.1, contrast=0.1)``; no flip (a chest X-ray's laterality matters).

kornia's random augmentations draw from torch's global generator; a run draws from its own generator (seeded per
rank, saved in every checkpoint), so a resumed run repeats the same augmentation bit for bit. So the parameters are
drawn here, one named whole-batch tensor per quantity with the run's generator (:func:`sample_base_params`), and
applied with kornia's functional ops (:func:`apply_base_aug`: ``get_affine_matrix2d``, ``warp_affine``,
``adjust_brightness``, ``adjust_contrast``): no per-sample loop, no host sync.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from kornia.enhance import adjust_brightness, adjust_contrast
from kornia.geometry.transform import get_affine_matrix2d, warp_affine
from torch import nn

__all__ = [
    "BASE_AUGMENTATIONS",
    "BaseAugParams",
    "BaseAugment",
    "LightAugConfig",
    "apply_base_aug",
    "sample_base_params",
]


@dataclass(frozen=True)
class LightAugConfig:
    """The ranges of ``aug="light"``.

    Attributes:
        degrees: largest rotation, degrees (uniform in ``[-degrees, degrees]``).
        translate: largest shift per axis, fraction of the side.
        scale: range of the isotropic scale factor.
        brightness: largest additive brightness shift (images in ``[0, 1]``).
        contrast: largest change of the multiplicative contrast factor (uniform in ``[1 - c, 1 + c]``).
    """

    degrees: float = 5.0
    translate: float = 0.05
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.1
    contrast: float = 0.1


BASE_AUGMENTATIONS = {"none": None, "light": LightAugConfig()}
"""``TrainConfig.aug`` -> the ranges of the base augmentation (None: none)."""


@dataclass
class BaseAugParams:
    """One batch's base augmentation, all on the images' device.

    Attributes:
        angle: ``(B,)`` rotation in degrees (kornia's convention: positive turns clockwise as displayed).
        translate: ``(B, 2)`` shift ``(dx, dy)`` in pixels.
        scale: ``(B,)`` isotropic scale factor.
        brightness: ``(B,)`` additive brightness shift.
        contrast: ``(B,)`` multiplicative contrast factor.
    """

    angle: torch.Tensor
    translate: torch.Tensor
    scale: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor

    def __len__(self) -> int:
        return self.angle.shape[0]


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``(n,)`` float32 uniform in ``[low, high)`` from ``generator`` (one ``torch.rand`` call)."""
    return torch.rand(n, generator=generator, device=device).mul_(high - low).add_(low)


def sample_base_params(
    batch: int,
    size: tuple[int, int],
    config: LightAugConfig,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> BaseAugParams:
    """Draw a batch's base augmentation: one whole-batch draw per quantity, in a fixed order.

    Args:
        batch: images ``B``.
        size: ``(H, W)`` of the images (translations are in pixels).
        config: the ranges.
        generator: a ``torch.Generator`` on ``device`` (None: torch's default generator).
        device: where the parameters live.

    Returns:
        :class:`BaseAugParams` with ``B`` samples.

    Example:
        >>> p = sample_base_params(4, (64, 64), LightAugConfig(), generator=torch.Generator().manual_seed(0))
        >>> bool((p.angle.abs() <= 5).all()), bool((p.translate.abs() <= 3.2).all())
        (True, True)
    """
    device = torch.device(device)
    H, W = size
    angle = _uniform(batch, -config.degrees, config.degrees, generator, device)  # (B,)
    shift = torch.stack(
        [
            _uniform(batch, -config.translate, config.translate, generator, device) * W,
            _uniform(batch, -config.translate, config.translate, generator, device) * H,
        ],
        dim=1,
    )  # (B, 2) pixels
    scale = _uniform(batch, config.scale[0], config.scale[1], generator, device)  # (B,)
    brightness = _uniform(batch, -config.brightness, config.brightness, generator, device)  # (B,)
    contrast = _uniform(batch, 1.0 - config.contrast, 1.0 + config.contrast, generator, device)  # (B,)
    return BaseAugParams(angle=angle, translate=shift, scale=scale, brightness=brightness, contrast=contrast)


def apply_base_aug(images: torch.Tensor, params: BaseAugParams) -> torch.Tensor:
    """Apply drawn parameters: the affine about the image centre (bilinear, zeros outside), then brightness and
    contrast, each clamped to ``[0, 1]`` as kornia's ops do.

    Args:
        images: ``(B, C, H, W)`` uint8 (0..255) or float in ``[0, 1]``.
        params: :class:`BaseAugParams` for ``B`` images on the images' device.

    Returns:
        ``(B, C, H, W)`` float32 in ``[0, 1]``, a new tensor.

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H, W)``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    B, _, H, W = images.shape
    if len(params) != B:
        raise ValueError(f"params are for {len(params)} images, the batch has {B}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()  # (B, C, H, W) in [0, 1]
    center = torch.stack(
        [torch.full((B,), (W - 1) / 2.0, device=x.device), torch.full((B,), (H - 1) / 2.0, device=x.device)], 1
    )  # (B, 2) (x, y), made on the device
    scale = params.scale[:, None].expand(B, 2)  # (B, 2) the same factor on both axes
    matrix = get_affine_matrix2d(params.translate, center, scale, params.angle)  # (B, 3, 3)
    x = warp_affine(x, matrix[:, :2, :], (H, W), mode="bilinear", padding_mode="zeros", align_corners=False)
    x = adjust_brightness(x, params.brightness)  # + shift, clamped to [0, 1]
    return adjust_contrast(x, params.contrast)  # * factor, clamped to [0, 1]


class BaseAugment(nn.Module):
    """The base augmentation of ``TrainConfig.aug`` as a module: ``aug(images, generator=g)``.

    Args:
        config: the ranges (:class:`LightAugConfig`).

    Shape:
        ``(B, C, H, W)`` uint8 or float in ``[0, 1]`` -> ``(B, C, H, W)`` float32 in ``[0, 1]``.

    Example:
        >>> aug = BaseAugment()
        >>> out = aug(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), generator=torch.Generator().manual_seed(0))
        >>> out.shape, out.dtype
        (torch.Size([2, 1, 32, 32]), torch.float32)
    """

    def __init__(self, config: LightAugConfig | None = None) -> None:
        super().__init__()
        self.config = config or LightAugConfig()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.config).items())

    def forward(
        self, images: torch.Tensor, *, generator: torch.Generator | None = None, return_params: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, BaseAugParams]:
        """Draw with ``generator`` and apply; ``return_params=True`` also returns the draws."""
        B, _, H, W = images.shape
        params = sample_base_params(B, (H, W), self.config, generator=generator, device=images.device)
        out = apply_base_aug(images, params)
        return (out, params) if return_params else out
