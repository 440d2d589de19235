"""``DiseasedAreaAugment``: DADAM as a batched ``nn.Module`` (validate once, then ``sample`` + ``paste_patches``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from dadam.bank import PatchBank
from dadam.config import DadamConfig
from dadam.labels import NO_FINDING
from dadam.ops import SUPPORTED_DTYPES, paste_patches
from dadam.sampling import DadamParams, _draw, _tables, apply_labels, sampling_weights
from dadam.stats import LabelStats, tail_classes

__all__ = ["DiseasedAreaAugment"]


class DiseasedAreaAugment(nn.Module):
    """Online Diseased Area Data Augmentation (Kim et al., 2023, section 3.2) on a batch of images.

    With probability ``p`` per sample: a normal image ("No Finding" only) gets a tail-class patch plus up to
    ``max_patches - 1`` non-overlapping, positively correlated companion patches at their aligned positions and
    exactly those labels; an image with a tail class gets one correlated companion class it lacks blended in with
    weight ``alpha`` and that label added. Everything else passes unchanged. See :func:`dadam.sampling.sample`.

    Pixel values: the bank's uint8 pixels keep their scale for uint8 images; float images (float16, bfloat16,
    float32) must be in ``[0, 1]`` and get ``pixels / 255`` (apply DADAM before normalising).

    Randomness: ``generator`` may be a ``torch.Generator`` (must live on the images' device), an ``int`` seed (a
    generator per device is created from it on first use, so a fresh module with the same seed repeats its
    draws) or None (torch's default generator of the device).

    The bank and the class weights are non-persistent buffers: ``.to(device)`` moves them, ``state_dict`` skips them.

    Args:
        bank: the :class:`~dadam.bank.PatchBank` (its canvas is the image size the module accepts).
        stats: the :class:`~dadam.stats.LabelStats` of the training labels.
        p: per-sample probability of augmenting an eligible image, in ``[0, 1]``.
        alpha: blend weight of the patch for tail-class images, in ``(0, 1]``.
        max_patches: most patches pasted on one normal image (``>= 1``).
        tail: tail classes (names or indices); default: the covered classes with frequency at or below the
            ``tail_quantile`` of the covered classes' frequencies (:func:`dadam.stats.tail_classes`). A given class the
            bank does not cover is never pasted, but an image showing it still gets a blended companion; "No
            Finding" is never a tail class. ``tail_names`` / ``tail_mask``: the tail classes that can be pasted.
        gamma: tail classes are drawn proportional to ``freq ** -gamma`` (``>= 0``).
        beta: companions are drawn proportional to ``corr ** beta`` over positively correlated classes (``>= 0``).
        jitter: maximal random shift from the aligned position, fraction of the canvas, in ``[0, 1]``.
        generator: ``torch.Generator``, ``int`` seed or None (see above).
        soft_label: label a blended class with ``alpha`` instead of 1.
        tail_quantile: quantile for the default tail set, in ``[0, 1]``.
        candidates: candidate draws per companion slot for the non-overlap rule (``>= 1``).

    Raises:
        ValueError: on an option out of range, or when no covered class is a tail class (the message names both).

    Shape:
        images ``(B, C, H, W)`` with ``C in {1, 3}`` and ``H = W = bank.canvas``; labels ``(B, 26)``.

    Example:
        >>> aug = DiseasedAreaAugment(bank, LabelStats.from_labels(train_labels), p=0.5, generator=0)  # doctest: +SKIP
        >>> images, labels = aug(images, labels)  # doctest: +SKIP
        >>> images, labels, params = aug(images, labels, return_params=True)  # doctest: +SKIP
        >>> same_images, same_labels = aug(images0, labels0, params=params)  # doctest: +SKIP
    """

    def __init__(
        self,
        bank: PatchBank,
        stats: LabelStats,
        *,
        p: float = DadamConfig.p,
        alpha: float = DadamConfig.alpha,
        max_patches: int = DadamConfig.max_patches,
        tail: Sequence[str | int] | None = DadamConfig.tail,
        gamma: float = DadamConfig.gamma,
        beta: float = DadamConfig.beta,
        jitter: float = DadamConfig.jitter,
        generator: torch.Generator | int | None = None,
        soft_label: bool = DadamConfig.soft_label,
        tail_quantile: float = DadamConfig.tail_quantile,
        candidates: int = DadamConfig.candidates,
    ) -> None:
        super().__init__()
        config = DadamConfig(
            p=p,
            alpha=alpha,
            max_patches=max_patches,
            tail=tail,
            gamma=gamma,
            beta=beta,
            jitter=jitter,
            soft_label=soft_label,
            tail_quantile=tail_quantile,
            candidates=candidates,
        ).validate()
        self.config = config
        p, alpha, max_patches, tail = config.p, config.alpha, config.max_patches, config.tail
        gamma, beta, jitter, candidates = config.gamma, config.beta, config.jitter, config.candidates
        soft_label, tail_quantile = config.soft_label, config.tail_quantile
        if not isinstance(generator, (torch.Generator, int, type(None))) or isinstance(generator, bool):
            raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
        if isinstance(generator, int) and not -(2**63) <= generator < 2**64:
            raise ValueError(f"generator seed must fit in 64 bits, got {generator}")
        if tuple(stats.class_names) != tuple(bank.class_names):
            raise ValueError(f"stats classes {list(stats.class_names)} differ from the bank's {list(bank.class_names)}")
        if len(bank) == 0:
            raise ValueError("the patch bank is empty: no class to paste")
        if NO_FINDING not in bank.class_names:
            raise ValueError(
                f"the class list has no {NO_FINDING!r} class (DADAM pastes onto normal images): {list(bank.class_names)}"
            )
        names = list(bank.class_names)
        num_classes = len(names)
        covered = bank.covered.to("cpu", copy=True)
        covered[names.index(NO_FINDING)] = False
        freq = stats.freq.detach().to("cpu", torch.float32)
        if tail is None:
            tail_mask = tail_classes(freq, covered, quantile=tail_quantile, class_names=names)
        else:
            given_mask = torch.zeros(num_classes, dtype=torch.bool)
            for t in tail:
                if isinstance(t, str):
                    if t not in names:
                        raise ValueError(f"tail class {t!r} is not one of {names}")
                    t = names.index(t)
                if not 0 <= int(t) < num_classes:
                    raise ValueError(f"tail class index {t} is outside [0, {num_classes})")
                given_mask[int(t)] = True
            given_mask[names.index(NO_FINDING)] = False
            tail_mask = given_mask & covered
        tail_mask[names.index(NO_FINDING)] = False
        # Blends are triggered by every tail class, also one the bank has no patch of (only its companion is pasted).
        blend_mask = tail_mask if tail is None else given_mask
        if not bool(tail_mask.any()):
            given = f"default (quantile {tail_quantile})" if tail is None else list(tail)
            raise ValueError(
                f"no tail class is covered by the bank: tail={given}, covered classes="
                f"{[names[i] for i in range(num_classes) if covered[i]]}; pass tail= classes the bank has patches of"
            )
        min_freq = 1.0 / stats.num_samples if stats.num_samples > 0 else 1e-6
        tail_weight, companion_weight = sampling_weights(
            freq,
            stats.corr.detach().to("cpu", torch.float32),
            tail_mask,
            covered,
            gamma=gamma,
            beta=beta,
            min_freq=min_freq,
            no_finding=names.index(NO_FINDING),
        )
        blend_tail_weight = sampling_weights(
            freq,
            stats.corr.detach().to("cpu", torch.float32),
            blend_mask,
            torch.ones_like(covered),
            gamma=gamma,
            beta=beta,
            min_freq=min_freq,
            no_finding=names.index(NO_FINDING),
        )[0]
        self.p, self.alpha, self.max_patches = float(p), float(alpha), int(max_patches)
        self.gamma, self.beta, self.jitter = float(gamma), float(beta), float(jitter)
        self.soft_label, self.candidates = bool(soft_label), int(candidates)
        self.canvas, self.max_size = bank.canvas, bank.max_size
        self.class_names = tuple(names)
        self.tail_names = tuple(names[i] for i in range(num_classes) if tail_mask[i])
        self._no_finding = names.index(NO_FINDING)
        self._seed = generator if isinstance(generator, int) else None
        self._generator = generator if isinstance(generator, torch.Generator) else None
        self._generators: dict[torch.device, torch.Generator] = {}
        for name, t in (
            ("pixels", bank.pixels),
            ("offsets", bank.offsets),
            ("sizes", bank.sizes),
            ("patch_boxes", bank.boxes),
            ("class_start", bank.class_start),
            ("class_count", bank.class_count),
            ("tail_mask", tail_mask),
            ("tail_weight", tail_weight),
            ("blend_tail_weight", blend_tail_weight),
            ("companion_weight", companion_weight),
        ):
            self.register_buffer(name, t.detach().clone(), persistent=False)
        self._tables_key: tuple | None = None  # the sampler's constants, see _sampler_tables
        self._tables_cache = None

    @classmethod
    def from_config(
        cls,
        bank: PatchBank,
        stats: LabelStats,
        config: DadamConfig,
        *,
        generator: torch.Generator | int | None = None,
    ) -> DiseasedAreaAugment:
        """The module for a :class:`~dadam.config.DadamConfig` (validated here).

        Example:
            >>> aug = DiseasedAreaAugment.from_config(bank, stats, DadamConfig(p=1.0), generator=0)  # doctest: +SKIP
        """
        if not isinstance(config, DadamConfig):
            raise TypeError(f"config must be a DadamConfig, got {type(config).__name__}")
        return cls(bank, stats, generator=generator, **dataclasses.asdict(config))

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, alpha={self.alpha}, max_patches={self.max_patches}, gamma={self.gamma}, beta={self.beta}, "
            f"jitter={self.jitter}, canvas={self.canvas}, patches={self.offsets.shape[0]}, tail={list(self.tail_names)}"
        )

    def _generator_for(self, device: torch.device) -> torch.Generator | None:
        if self._generator is not None:
            if self._generator.device.type != device.type:
                raise ValueError(f"generator is on {self._generator.device}, images are on {device}")
            return self._generator
        if self._seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[device]

    def _check_labels(self, labels: torch.Tensor) -> None:
        if labels.ndim != 2 or labels.shape[1] != len(self.class_names):
            raise ValueError(f"labels must be (B, {len(self.class_names)}), got shape {tuple(labels.shape)}")
        if labels.device != self.tail_weight.device:
            raise ValueError(
                f"labels are on {labels.device}, the module on {self.tail_weight.device}: call aug.to(device)"
            )

    def _sampler_tables(self, device: torch.device):
        """The sampler's constants on ``device``, built once and rebuilt when a source buffer moves or changes."""
        sources = (self.tail_weight, self.companion_weight, self.patch_boxes, self.class_start, self.class_count)
        key = (device, *((t.data_ptr(), t._version, t.dtype, t.device) for t in (*sources, self.blend_tail_weight)))
        if self._tables_key != key:
            self._tables_cache = _tables(
                *sources,
                blend_tail_weight=self.blend_tail_weight,
                max_patches=self.max_patches,
                candidates=self.candidates,
                no_finding=self._no_finding,
                device=device,
            )
            self._tables_key = key
        return self._tables_cache

    def sample(self, labels: torch.Tensor) -> DadamParams:
        """Draw the params for a batch of labels alone (no pixels): for audits and offline export.

        The same draws as :func:`dadam.sampling.sample` with the module's buffers and options.

        Args:
            labels: ``(B, 26)`` multi-hot labels on the module's device.

        Returns:
            the :class:`~dadam.sampling.DadamParams` (``params.labels`` are the new labels).
        """
        self._check_labels(labels)
        return _draw(
            labels,
            self._sampler_tables(labels.device),
            canvas=self.canvas,
            p=self.p,
            alpha=self.alpha,
            max_patches=self.max_patches,
            jitter=self.jitter,
            candidates=self.candidates,
            soft_label=self.soft_label,
            no_finding=self._no_finding,
            generator=self._generator_for(labels.device),
        )

    def apply(self, images: torch.Tensor, params: DadamParams, *, path: str = "auto") -> torch.Tensor:
        """Paste/blend the patches of ``params`` into ``images`` (no randomness). See :func:`dadam.ops.paste_patches`."""
        return paste_patches(
            images,
            self.pixels,
            self.offsets,
            self.sizes,
            params.boxes,
            params.patch_ids,
            params.active,
            params.alpha,
            max_size=self.max_size,
            path=path,
        )

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        params: DadamParams | None = None,
        return_params: bool = False,
    ):
        """Augment a batch.

        Args:
            images: ``(B, C, H, W)``, C in {1, 3}, ``H = W = canvas``; uint8 or float in [0, 1]; any device the
                module is on; contiguous or channels_last (kept).
            labels: ``(B, 26)`` float multi-hot labels.
            params: replay these params instead of drawing new ones (their ``labels`` are ignored: the new labels
                are recomputed from ``labels``).
            return_params: also return the params.

        Returns:
            ``(images, labels)`` or ``(images, labels, params)``; new tensors, inputs untouched. An empty batch is
            returned unchanged (with empty params).
        """
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        B, C, H, W = images.shape
        if C not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got C={C} (shape {tuple(images.shape)})")
        if (H, W) != (self.canvas, self.canvas):
            raise ValueError(
                f"images are {H}x{W} but the patch bank's canvas is {self.canvas}x{self.canvas}; "
                f"resize the images or build the bank with canvas={H}"
            )
        if images.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"images dtype must be one of {SUPPORTED_DTYPES}, got {images.dtype}")
        self._check_labels(labels)
        if labels.shape[0] != B:
            raise ValueError(f"images and labels differ in batch size: {B} and {labels.shape[0]}")
        if images.device != labels.device:
            raise ValueError(f"images are on {images.device}, labels on {labels.device}")
        if params is None:
            params = self.sample(labels)
        else:
            if len(params) != B:
                raise ValueError(f"params are for {len(params)} samples, the batch has {B}")
            if params.mode.device != images.device:  # e.g. params recorded on the CPU, replayed on a GPU
                params = params.to(images.device)
            params = dataclasses.replace(params, labels=apply_labels(labels, params, soft_label=self.soft_label))
        if B == 0:  # empty batch: returned as is
            return (images, labels, params) if return_params else (images, labels)
        out = self.apply(images, params)
        return (out, params.labels, params) if return_params else (out, params.labels)
