"""What one DADAM call did (:class:`DadamParams`) and the labels that follow from it (:func:`apply_labels`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch

__all__ = ["MODE_BLEND", "MODE_NONE", "MODE_PASTE", "DadamParams", "apply_labels"]

MODE_NONE, MODE_PASTE, MODE_BLEND = 0, 1, 2


@dataclass
class DadamParams:
    """What one DADAM call did, as on-device tensors (B samples, K = ``max_patches`` slots).

    Attributes:
        boxes: ``(B, K, 4)`` long, where each patch goes on the canvas, xyxy, pixels, half-open (0 where inactive).
        patch_ids: ``(B, K)`` long, bank patch index (0 where inactive).
        classes: ``(B, K)`` long, class of the patch (-1 where inactive).
        active: ``(B, K)`` bool, slot holds a placed patch. Active patches of a sample never overlap.
        alpha: ``(B, K)`` float32, patch weight: 1.0 for a paste, ``alpha`` for a blend (0 where inactive).
        mode: ``(B,)`` long, 0 unchanged, 1 paste (normal image), 2 blend (tail-class image); blends use slot 0 only.
        changed: ``(B,)`` bool, ``mode != 0``.
        labels: ``(B, num_classes)`` the new labels (dtype of the input labels; :func:`apply_labels`).
        template: ``(B,)`` long, the label row of :class:`~dadam.stats.LabelStats` a paste took its classes from
            (co-occurrence rule), else -1. Default: all -1.
        dropped: ``(B,)`` long, classes of that row the bank covers that were not placed (no room without overlap,
            or beyond ``max_patches``). Default: all 0.
        gain: ``(B, K)`` float32 or None, the intensity map of each slot's patch (``match``):
            ``m = min(max(gain * q + offset, 0), 255)`` on the bank's 0..255 scale (:mod:`dadam.paste.values`).
            None (the sampler's params, files without it): no map recorded; NaN in a slot: not measured. A module
            with ``match != "none"`` measures the slots without a recorded map from the recipient image at paste
            time and uses a recorded map as it is (a replay is exact).
        offset: ``(B, K)`` float32 or None, the offset of that map (None exactly where ``gain`` is None).
    """

    boxes: torch.Tensor
    patch_ids: torch.Tensor
    classes: torch.Tensor
    active: torch.Tensor
    alpha: torch.Tensor
    mode: torch.Tensor
    changed: torch.Tensor
    labels: torch.Tensor
    template: torch.Tensor | None = None
    dropped: torch.Tensor | None = None
    gain: torch.Tensor | None = None
    offset: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.template is None:
            self.template = torch.full_like(self.mode, -1)
        if self.dropped is None:
            self.dropped = torch.zeros_like(self.mode)
        if (self.gain is None) != (self.offset is None):
            raise ValueError(
                "DadamParams: gain and offset (the intensity map) go together: give both or neither, got "
                f"gain={'None' if self.gain is None else 'a tensor'}, offset={'None' if self.offset is None else 'a tensor'}"
            )

    def __len__(self) -> int:
        return int(self.mode.shape[0])

    def __getitem__(self, index) -> DadamParams:
        """Params of a subset of the batch (``int`` keeps the batch dimension: ``params[3]`` has B = 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return DadamParams(**{name: t[index] for name, t in self.tensors().items()})

    def to(self, device: torch.device | str) -> DadamParams:
        """A copy with every tensor on ``device``."""
        return DadamParams(**{name: t.to(device) for name, t in self.tensors().items()})

    @property
    def max_patches(self) -> int:
        return int(self.active.shape[1])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every field that holds a tensor, by name (for files: ``safetensors.torch.save(params.tensors())``);
        ``gain`` and ``offset`` are left out when no map is recorded (None)."""
        return {f.name: t for f in fields(self) if (t := getattr(self, f.name)) is not None}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], *, source: str = "tensors") -> DadamParams:
        """The params of :meth:`tensors`' output; ``template`` and ``dropped`` may be missing (files of release
        0.1.0), ``gain`` and ``offset`` too (no intensity map). ``source`` names the file in the error about missing
        or unknown tensors."""
        names = [f.name for f in fields(cls)]
        optional = {"template", "dropped", "gain", "offset"}
        missing = [n for n in names if n not in tensors and n not in optional]
        unknown = sorted(set(tensors) - set(names))
        if missing or unknown:
            raise ValueError(
                f"{source}: not DADAM params (missing tensors {missing}, unknown tensors {unknown}; expected {names})"
            )
        return cls(**{n: tensors[n] for n in names if n in tensors})

    @classmethod
    def cat(cls, parts: Sequence[DadamParams]) -> DadamParams:
        """Params of several batches joined along the batch dimension (``torch.cat`` of every field).

        Args:
            parts: params with the same ``max_patches`` and number of classes, on one device. Where some parts
                record an intensity map and others do not, the others get ``gain`` NaN (not measured), offset 0.

        Returns:
            params with ``sum(len(p) for p in parts)`` samples, in order.

        Example:
            >>> params = DadamParams.cat([aug.sample(y[:4096]), aug.sample(y[4096:])])  # doctest: +SKIP
        """
        if not parts:
            raise ValueError("DadamParams.cat needs at least one DadamParams, got an empty sequence")
        maps = {}
        if any(p.gain is not None for p in parts):  # a part without a map: NaN, measured at paste time
            maps["gain"] = torch.cat(
                [torch.full_like(p.alpha, float("nan")) if p.gain is None else p.gain for p in parts]
            )
            maps["offset"] = torch.cat([torch.zeros_like(p.alpha) if p.offset is None else p.offset for p in parts])
        names = [f.name for f in fields(cls) if f.name not in ("gain", "offset")]
        return cls(**{name: torch.cat([getattr(p, name) for p in parts]) for name in names}, **maps)


def apply_labels(labels: torch.Tensor, params: DadamParams, *, soft_label: bool = False) -> torch.Tensor:
    """The labels after DADAM, from the params alone: the one place the new labels are computed.

    Mode 1 (paste): exactly the active slots' classes (1.0), everything else 0 ("No Finding" cleared).
    Mode 2 (blend): the input labels with the slot-0 class set to 1.0 (or to its ``alpha`` if ``soft_label``).
    Mode 0: unchanged.

    Args:
        labels: ``(B, C)`` multi-hot labels.
        params: the :class:`DadamParams` of the call (its ``labels`` are not read).
        soft_label: blended classes get ``alpha`` instead of 1.

    Returns:
        ``(B, C)`` new labels, dtype of ``labels``; the input is not modified.

    Shape:
        labels ``(B, C)`` -> ``(B, C)``.

    Example:
        >>> y2 = apply_labels(y, params)  # doctest: +SKIP
    """
    num_classes = labels.shape[1]
    hot = params.classes[..., None] == torch.arange(num_classes, device=labels.device)  # (B, K, C), -1 matches none
    hot = (hot & params.active[..., None]).to(labels.dtype)  # (B, K, C)
    pasted = hot.amax(1) if hot.shape[1] else torch.zeros_like(labels)  # (B, C)
    value = params.alpha[:, :1].to(labels.dtype) if soft_label else torch.ones_like(labels[:, :1])  # (B, 1)
    blended = torch.where(hot[:, 0] > 0, value, labels) if hot.shape[1] else labels
    mode = params.mode[:, None]
    return torch.where(mode == MODE_PASTE, pasted, torch.where(mode == MODE_BLEND, blended, labels))
