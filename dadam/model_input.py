"""The model input step: a device batch of grayscale images -> the backbone's normalised float input.

:class:`InputNormalizer` holds the backbone's mean and std (``FPSM.data_config``, from timm's
``resolve_data_config``) and keeps its constants on each device it has seen, so a training step never builds a tensor
from a Python list on the GPU (``torch.tensor(list, device="cuda")`` waits for the host copy). It writes the output in
the memory format the model wants in one pass: no second copy for channels-last. :func:`to_model_input` is the
functional form (its normalisers are cached by their settings).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "InputNormalizer", "to_model_input"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputNormalizer:
    """``(x - mean) / std`` of a 1-channel batch, repeated to ``in_chans`` channels; uint8 is scaled by 1/255 first.

    Args:
        mean: per-output-channel mean (length ``in_chans``; length 1 is broadcast).
        std: per-output-channel std, each ``> 0``.
        in_chans: channels the model expects (the gray channel is repeated).
        dtype: float dtype of the output.
        channels_last: write the output in ``torch.channels_last`` memory format.

    The constants ``1 / (255 std)``, ``1 / std`` and ``-mean / std`` are made once per device (from the CPU by a
    pinned, non-blocking copy) and kept: a call issues two elementwise kernels and no host sync.

    Shape:
        images ``(B, 1, H, W)`` uint8 (0..255) or float (0..1) -> ``(B, in_chans, H, W)`` ``dtype``.

    Example:
        >>> norm = InputNormalizer(mean=(0.0,), std=(1.0,))  # TResNet's timm config
        >>> norm(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)).unique().tolist()
        [1.0]
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        in_chans: int = 3,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        if len(mean) not in (1, in_chans) or len(std) not in (1, in_chans):
            raise ValueError(f"mean/std must have 1 or in_chans={in_chans} values, got {len(mean)} and {len(std)}")
        if not all(s > 0 for s in std):  # NaN fails too
            raise ValueError(f"std values must be > 0, got {std}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a float dtype, got {dtype}")
        self.mean, self.std, self.in_chans = mean, std, in_chans
        self.dtype, self.channels_last = dtype, channels_last
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_data_config(
        cls,
        data_config: Mapping[str, Any],
        *,
        in_chans: int = 3,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> InputNormalizer:
        """The normaliser of a timm data config (``FPSM.data_config``: its ``mean`` and ``std``).

        A 3-value config for a 1-channel model uses the mean of the values (the gray input stands for all three).
        """
        mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
        if in_chans == 1 and len(mean) > 1:
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        return cls(mean, std, in_chans=in_chans, dtype=dtype, channels_last=channels_last)

    def __repr__(self) -> str:
        return (
            f"InputNormalizer(mean={self.mean}, std={self.std}, in_chans={self.in_chans}, dtype={self.dtype}, "
            f"channels_last={self.channels_last})"
        )

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(scale_uint8, scale_float, shift)``, each ``(1, in_chans, 1, 1)`` on ``device`` (made on first use)."""
        device = torch.device(device)
        found = self._constants.get(device)
        if found is None:
            c = self.in_chans
            std = torch.tensor(self.std, dtype=torch.float64).expand(c)  # (in_chans,)
            mean = torch.tensor(self.mean, dtype=torch.float64).expand(c)
            values = torch.stack([1.0 / (255.0 * std), 1.0 / std, -mean / std]).to(self.dtype)  # (3, in_chans)
            if device.type == "cuda":
                values = values.pin_memory().to(device, non_blocking=True)  # no wait for the host
            else:
                values = values.to(device)
            found = tuple(v.view(1, c, 1, 1) for v in values.unbind(0))
            self._constants[device] = found
        return found

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be (B, 1, H, W), got shape {tuple(images.shape)}")
        B, _, H, W = images.shape
        scale_u8, scale_f, shift = self.constants(images.device)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty((B, self.in_chans, H, W), dtype=self.dtype, device=images.device, memory_format=fmt)
        x = images if images.dtype == torch.uint8 else images.to(self.dtype)
        scale = scale_u8 if images.dtype == torch.uint8 else scale_f
        torch.mul(x.expand(B, self.in_chans, H, W), scale, out=out)  # written once, in the output's layout
        return out.add_(shift)  # (B, in_chans, H, W)


@functools.lru_cache(maxsize=32)
def _normalizer(
    mean: tuple[float, ...], std: tuple[float, ...], in_chans: int, dtype: torch.dtype, channels_last: bool
) -> InputNormalizer:
    return InputNormalizer(mean, std, in_chans=in_chans, dtype=dtype, channels_last=channels_last)


def to_model_input(
    images: torch.Tensor,
    *,
    in_chans: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """Turn a device batch of grayscale images into the backbone's normalised input.

    Pass the backbone's statistics, ``mean`` and ``std`` of ``FPSM.data_config`` (timm's TResNet weights expect mean
    0 and std 1; the ImageNet statistics are only the default).
    The :class:`InputNormalizer` of each setting is cached, with its constants per device.

    Args:
        images: uint8 (0..255) or float (0..1) batch with 1 channel.
        in_chans: channels the model expects (the gray channel is repeated).
        mean: per-output-channel mean (length ``in_chans``; length 1 is broadcast).
        std: per-output-channel std.
        dtype: float dtype of the output.
        channels_last: return ``torch.channels_last`` memory format (written so, not copied).

    Returns:
        ``(B, in_chans, H, W)`` float tensor ``(x - mean) / std``.

    Shape:
        images: ``(B, 1, H, W)`` -> ``(B, in_chans, H, W)``.

    Example:
        >>> x = to_model_input(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
        >>> x.shape
        torch.Size([2, 3, 8, 8])
    """
    key = (tuple(float(m) for m in mean), tuple(float(s) for s in std), in_chans, dtype, channels_last)
    return _normalizer(*key)(images)
