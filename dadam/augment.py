"""``DiseasedAreaAugment``: DADAM as a batched ``nn.Module`` (validate once, then ``sample`` + ``paste_patches``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from dadam.anatomy import check_lung_boxes, lung_box, lung_box_errors
from dadam.bank import PatchBank
from dadam.config import DadamConfig
from dadam.labels import NO_FINDING
from dadam.ops import SUPPORTED_DTYPES, check_image_values, match_intensity, paste_backend, paste_patches
from dadam.sampling import DadamParams, SamplerTables, apply_labels, build_tables, sample_batch
from dadam.sampling.backend import clear_ok_if_bad
from dadam.stats import LabelStats

__all__ = ["DiseasedAreaAugment", "check_image_values", "check_label_values"]


def check_label_values(labels: torch.Tensor) -> None:
    """Labels must be 0, 1 or NaN (unknown). On the CPU a ``ValueError`` names the values found; on a GPU a
    device-side assert (``torch._assert_async``, no host sync) stops the process at the next synchronisation."""
    ok_values = (labels == 0) | (labels == 1) | torch.isnan(labels)  # (B, C)
    if labels.device.type != "cpu":
        torch._assert_async(ok_values.all(), "DADAM: labels must be 0, 1 or NaN (unknown)")
    elif not bool(ok_values.all()):
        bad = labels[~ok_values]
        raise ValueError(
            f"labels must be 0, 1 or NaN (unknown), got {bad.numel()} other values in "
            f"[{float(bad.min()):g}, {float(bad.max()):g}] (e.g. {float(bad[0]):g}); map soft or uncertain labels "
            "(-1, 0.5) to 0, 1 or NaN first"
        )


# The one device-side assert of a forward on a GPU (every input check of the call folded into one ``ok`` word).
CHECK_MESSAGE = (
    "DADAM: bad input on the GPU: labels outside {0, 1, NaN}, float images outside [0, 1] (or NaN), lung boxes that "
    "are neither boxes in [0, 1] nor NaN, or overlapping patches in replayed params; the same call on the CPU raises "
    "a ValueError naming the values"
)


class DiseasedAreaAugment(nn.Module):
    """Online Diseased Area Data Augmentation (Kim et al., 2023, section 3.2) on a batch of images.

    With probability ``p`` per sample: a normal image ("No Finding" only) gets a tail-class patch plus
    non-overlapping companion patches at their aligned positions and exactly those labels; an image with a tail
    class gets one companion class it lacks blended in with weight ``alpha`` and that label added. Everything else
    passes unchanged. The companions follow ``companions``: ``"cooccurrence"`` (default) pastes the covered classes
    of a real training label row that shows the tail class, and blends a class drawn from the co-occurrence counts;
    ``"correlation"`` draws them ``~ corr ** beta`` (the paper's rule). See :mod:`dadam.sampling`.

    Pixel values: the bank's uint8 pixels keep their scale for uint8 images; float images (float16, bfloat16,
    float32) must be in ``[0, 1]`` and get ``pixels / 255`` (apply DADAM before normalising). Labels must be 0, 1 or
    NaN (unknown). Out-of-range values raise a ``ValueError`` on the CPU and a device-side assert on a GPU (one per
    call, no host sync: see :mod:`dadam.kernels`).

    Speed on a GPU: a forward is a few kernel launches and never syncs with the host. ``inplace=True`` (on
    :meth:`forward` and :meth:`apply`) writes only the patch pixels into the caller's images and returns that same
    tensor; the default returns a new tensor (one kernel writes every output pixel). :attr:`backend` names the paste
    backend in use.

    Realism beyond the paper (both off by default: the paper's hard paste): ``feather`` ramps each patch's weight
    up from its box edge over that many pixels; ``match`` maps each patch's intensities so that its mean (and std)
    equal the recipient's under the box, measured on the device at paste time and recorded in the returned params
    (``gain``, ``offset``; a replay uses the recorded map). See :mod:`dadam.paste.values` for the formulas.

    Randomness: ``generator`` may be a ``torch.Generator`` (must live on the images' device), an ``int`` seed (a
    generator per device is created from it on first use, so a fresh module with the same seed repeats its
    draws) or None (torch's default generator of the device).

    The bank and the sampler's tables (:attr:`tables`, built once on the CPU in ``__init__``) are non-persistent
    buffers: ``.to(device)`` moves them, ``state_dict`` skips them, and a call never builds or copies them.

    Args:
        bank: the :class:`~dadam.bank.PatchBank` (its canvas is the image size the module accepts).
        stats: the :class:`~dadam.stats.LabelStats` of the training labels (``companions="cooccurrence"`` needs their
            label rows: build them with :meth:`~dadam.stats.LabelStats.from_labels` or ``load``).
        p: per-sample probability of augmenting an eligible image, in ``[0, 1]``.
        alpha: blend weight of the patch for tail-class images, in ``(0, 1]``.
        max_patches: most patches pasted on one normal image (``>= 1``).
        tail: tail classes (names or indices); default: the covered classes with frequency at or below the
            ``tail_quantile`` of the covered classes' frequencies (:func:`dadam.stats.tail_classes`). A given class the
            bank does not cover is never pasted, but an image showing it still gets a blended companion; "No
            Finding" is never a tail class. ``tail_names`` / ``tail_mask``: the tail classes that can be pasted.
        gamma: tail classes are drawn proportional to ``freq ** -gamma`` (``>= 0``).
        beta: with ``companions="correlation"``, companions are drawn proportional to ``corr ** beta`` (``>= 0``).
        jitter: maximal random shift from the aligned position, fraction of the canvas, in ``[0, 1]``.
        generator: ``torch.Generator``, ``int`` seed or None (see above).
        soft_label: label a blended class with ``alpha`` instead of 1.
        tail_quantile: quantile for the default tail set, in ``[0, 1]``.
        candidates: candidate draws per companion slot for the non-overlap rule (``>= 1``).
        companions: ``"cooccurrence"`` or ``"correlation"`` (see above).
        placement: ``"aligned"`` (a patch at its box on the donor) or ``"lung"`` (that box mapped from the donor's
            lung-field box into the image's: :mod:`dadam.anatomy`; the bank must know its donors' lung boxes, the
            images' come as ``lung_boxes`` or are estimated by :func:`dadam.anatomy.lung_box`).
        feather: pixels over which a patch's weight rises from its box edge to full weight (``>= 0``; 0: hard edge).
        match: ``"none"``, ``"mean"`` or ``"meanstd"`` (see above).

    Raises:
        ValueError: on an option out of range, when no covered class is a tail class (the message names both), or
            with ``placement="lung"`` and a bank without its donors' lung boxes (the message names the fix).

    Shape:
        images ``(B, C, H, W)`` with ``C in {1, 3}`` and ``H = W = bank.canvas``; labels ``(B, 26)``.

    Example:
        >>> aug = DiseasedAreaAugment(bank, LabelStats.from_labels(train_labels), p=0.5, generator=0)  # doctest: +SKIP
        >>> images, labels = aug(images, labels)  # doctest: +SKIP
        >>> images, labels, params = aug(images, labels, return_params=True)  # doctest: +SKIP
        >>> same_images, same_labels = aug(images0, labels0, params=params)  # doctest: +SKIP
        >>> images, labels = aug(images, labels, mask=labels.new_ones(len(labels), dtype=torch.bool))  # doctest: +SKIP
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
        companions: str = DadamConfig.companions,
        placement: str = DadamConfig.placement,
        feather: int = DadamConfig.feather,
        match: str = DadamConfig.match,
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
            companions=companions,
            placement=placement,
            feather=feather,
            match=match,
        ).validate()
        if not isinstance(generator, (torch.Generator, int, type(None))) or isinstance(generator, bool):
            raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
        if isinstance(generator, int) and not -(2**63) <= generator < 2**64:
            raise ValueError(f"generator seed must fit in 64 bits, got {generator}")
        tables, tail_mask = build_tables(bank, stats, config)
        self.config = config
        self.p, self.alpha, self.max_patches = config.p, config.alpha, config.max_patches
        self.gamma, self.beta, self.jitter = config.gamma, config.beta, config.jitter
        self.soft_label, self.candidates, self.companions = config.soft_label, config.candidates, config.companions
        self.feather, self.match = config.feather, config.match
        self.placement = config.placement
        self.canvas, self.max_size = bank.canvas, bank.max_size
        self.class_names = tuple(bank.class_names)
        self.no_finding = self.class_names.index(NO_FINDING)
        is_tail = tail_mask.tolist()  # CPU-only path: construction
        self.tail_names = tuple(n for n, t in zip(self.class_names, is_tail, strict=True) if t)
        self._seed = generator if isinstance(generator, int) else None
        self._generator = generator if isinstance(generator, torch.Generator) else None
        self._generators: dict[torch.device, torch.Generator] = {}
        bank_tensors = {
            "pixels": bank.pixels,
            "offsets": bank.offsets,
            "sizes": bank.sizes,
            "class_start": bank.class_start,
            "class_count": bank.class_count,
            "tail_mask": tail_mask,
        }
        for name, t in (*bank_tensors.items(), *tables.tensors().items()):
            self.register_buffer(name, t.detach().clone(), persistent=False)

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
        return cls(bank, stats, generator=generator, **config.augment_options())

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, alpha={self.alpha}, max_patches={self.max_patches}, companions={self.companions!r}, "
            f"gamma={self.gamma}, beta={self.beta}, jitter={self.jitter}, feather={self.feather}, "
            f"match={self.match!r}, placement={self.placement!r}, canvas={self.canvas}, "
            f"patches={self.offsets.shape[0]}, tail={list(self.tail_names)}"
        )

    @property
    def tables(self) -> SamplerTables:
        """The sampler's :class:`~dadam.sampling.SamplerTables` on the module's device (views of its buffers)."""
        names = SamplerTables._fields
        return SamplerTables(
            **{name: getattr(self, name) for name in names if name not in ("canvas", "no_finding")},
            canvas=self.canvas,
            no_finding=self.no_finding,
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

    @property
    def backend(self) -> str:
        """The paste backend on the module's device: ``"triton"``, ``"torch-vectorised (triton unavailable:
        <reason>)"`` or ``"cpu-loop"`` (:func:`dadam.ops.paste_backend`)."""
        return paste_backend(self.pixels.device)

    def _check_labels(self, labels: torch.Tensor, *, values: bool = True) -> None:
        if labels.ndim != 2 or labels.shape[1] != len(self.class_names):
            raise ValueError(f"labels must be (B, {len(self.class_names)}), got shape {tuple(labels.shape)}")
        if labels.device != self.tail_weight.device:
            raise ValueError(
                f"labels are on {labels.device}, the module on {self.tail_weight.device}: call aug.to(device)"
            )
        if values:
            check_label_values(labels)

    def sample(
        self, labels: torch.Tensor, *, mask: torch.Tensor | None = None, lung_boxes: torch.Tensor | None = None
    ) -> DadamParams:
        """Draw the params for a batch of labels alone (no pixels): for audits and offline export.

        Args:
            labels: ``(B, 26)`` multi-hot labels (0, 1, NaN) on the module's device.
            mask: ``(B,)`` bool on the labels' device: only these samples may change (``p`` still applies);
                None: all.
            lung_boxes: ``(B, 4)`` recipients' lung boxes (see :meth:`forward`); ``placement="lung"`` needs them
                here (no images to estimate them from); ignored with ``placement="aligned"``.

        Returns:
            the :class:`~dadam.sampling.DadamParams` (``params.labels`` are the new labels). No intensity map is
            recorded (``gain`` None: it needs the images): with ``match`` on, :meth:`apply` and :meth:`forward`
            measure it at paste time.
        """
        self._check_labels(labels)
        return self._draw(labels, mask, lung_boxes=lung_boxes)

    def _draw(
        self,
        labels: torch.Tensor,
        mask: torch.Tensor | None,
        ok: torch.Tensor | None = None,
        lung_boxes: torch.Tensor | None = None,
    ) -> DadamParams:
        """:meth:`sample` for checked labels (with ``ok``: the sampler checks the label values into it)."""
        generator = self._generator_for(labels.device)
        return sample_batch(
            labels, self.tables, self.config, generator=generator, mask=mask, ok=ok, lung_boxes=lung_boxes
        )

    def apply(
        self, images: torch.Tensor, params: DadamParams, *, path: str = "auto", inplace: bool = False
    ) -> torch.Tensor:
        """Paste/blend the patches of ``params`` into ``images`` (no randomness). See :func:`dadam.ops.paste_patches`.

        With ``inplace=True`` the patches are written into ``images`` and ``images`` itself is returned. With
        ``match`` on, slots without a recorded map (``params.gain`` None or NaN) are measured on ``images`` first
        (:meth:`intensity_map` gives the params with the map).
        """
        return self._paste(images, self.intensity_map(images, params, path=path), path=path, inplace=inplace, ok=None)

    def intensity_map(
        self, images: torch.Tensor, params: DadamParams, *, path: str = "auto", ok: torch.Tensor | None = None
    ) -> DadamParams:
        """``params`` with the intensity map of ``match`` (:func:`dadam.ops.match_intensity`) measured on ``images``
        where none is recorded (``gain`` None or NaN); a recorded map is kept. With ``match="none"``: ``params``.

        Example:
            >>> params = aug.intensity_map(images, aug.sample(labels))  # doctest: +SKIP
        """
        if self.match == "none":
            return params
        gain, offset = match_intensity(
            *self._slot_args(images, params), mode=self.match, max_size=self.max_size, path=path, ok=ok
        )  # (B, K) each
        if params.gain is not None:  # a replay: the recorded map wins where there is one
            missing = torch.isnan(params.gain)
            gain = torch.where(missing, gain, params.gain.to(torch.float32))
            offset = torch.where(missing, offset, params.offset.to(torch.float32))
        return dataclasses.replace(params, gain=gain, offset=offset)

    def _slot_args(self, images: torch.Tensor, params: DadamParams) -> tuple[torch.Tensor, ...]:
        """The positional arguments :func:`~dadam.ops.paste_patches` and :func:`~dadam.ops.match_intensity` share:
        the images, the bank's buffers and the slots of ``params``."""
        return (images, self.pixels, self.offsets, self.sizes, params.boxes, params.patch_ids, params.active)

    def _paste(self, images, params, *, path="auto", inplace=False, ok=None) -> torch.Tensor:
        gain, offset = params.gain, params.offset
        if gain is not None and self.match == "none":  # a map recorded elsewhere; a NaN (not measured) is none
            missing = torch.isnan(gain)
            gain, offset = torch.where(missing, 1.0, gain), torch.where(missing, 0.0, offset)
        return paste_patches(
            *self._slot_args(images, params),
            params.alpha,
            max_size=self.max_size,
            path=path,
            inplace=inplace,
            ok=ok,
            gain=gain,
            offset=offset,
            feather=self.feather,
        )

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        params: DadamParams | None = None,
        return_params: bool = False,
        mask: torch.Tensor | None = None,
        inplace: bool = False,
        lung_boxes: torch.Tensor | None = None,
    ):
        """Augment a batch.

        Args:
            images: ``(B, C, H, W)``, C in {1, 3}, ``H = W = canvas``; uint8 or float in [0, 1]; any device the
                module is on; contiguous or channels_last (kept).
            labels: ``(B, 26)`` float multi-hot labels: 0, 1 or NaN (unknown).
            params: replay these params instead of drawing new ones (their ``labels`` are ignored: the new labels
                are recomputed from ``labels``).
            return_params: also return the params.
            mask: ``(B,)`` bool on the labels' device: only these samples may change (``p`` still applies); None:
                all. Not with ``params`` (they already say which samples change).
            inplace: write the patches into ``images`` and return ``images`` itself (the caller's tensor is
                modified: the returned images alias the input). Default: a new tensor, the input untouched.
            lung_boxes: ``placement="lung"``: ``(B, 4)`` float lung boxes of the images, normalised xyxy in
                ``[0, 1]`` (e.g. a label table's lung columns: :func:`dadam.formats.lung_boxes_tensor`), a row of NaN
                where unknown (that sample keeps the aligned boxes); None: estimated from the images
                (:func:`dadam.anatomy.lung_box`). Ignored with ``placement="aligned"`` and in a replay (the params
                hold the final boxes).

        With ``match`` on, the returned params record the intensity map measured on ``images`` (a replay with given
        params uses their recorded map).

        Returns:
            ``(images, labels)`` or ``(images, labels, params)``; new labels (the input labels are never modified)
            and new images (or ``images`` itself with ``inplace``). An empty batch is returned unchanged (with empty
            params).
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
        if images.device != labels.device:
            raise ValueError(f"images are on {images.device}, labels on {labels.device}")
        ok = None
        if images.device.type != "cpu":  # every check of the call folds into one ok word, asserted once at the end
            from dadam.kernels import new_ok_flag

            ok = new_ok_flag(images.device)
        self._check_labels(labels, values=ok is None)  # on a GPU: the label values go into ok (sampler or below)
        if labels.shape[0] != B:
            raise ValueError(f"images and labels differ in batch size: {B} and {labels.shape[0]}")
        if params is None:
            if self.placement == "lung" and lung_boxes is None:
                lung_boxes = lung_box(images)  # (B, 4) torch ops, no host sync; always valid boxes
            elif self.placement == "lung":
                check_lung_boxes(lung_boxes, B, images.device)  # the values: on the CPU here, on a GPU into ok
                if ok is not None:
                    ok.mul_(~lung_box_errors(lung_boxes).any())
            params = self._draw(labels, mask, ok, lung_boxes)
        else:
            if ok is not None:
                clear_ok_if_bad(ok, labels)
            if mask is not None:
                raise ValueError("give params (a replay: they already say which samples change) or mask, not both")
            if len(params) != B:
                raise ValueError(f"params are for {len(params)} samples, the batch has {B}")
            if params.mode.device != images.device:  # e.g. params recorded on the CPU, replayed on a GPU
                params = params.to(images.device)
            params = dataclasses.replace(params, labels=apply_labels(labels, params, soft_label=self.soft_label))
        if B == 0:  # empty batch: returned as is
            return (images, labels, params) if return_params else (images, labels)
        if ok is None:  # on a GPU: checked by the paste kernel
            check_image_values(images, params.boxes, params.active)
        params = self.intensity_map(images, params, ok=ok)  # measured before an in-place paste writes the images
        out = self._paste(images, params, inplace=inplace, ok=ok)
        if ok is not None:
            from dadam.kernels import assert_ok

            assert_ok(ok, CHECK_MESSAGE)
        return (out, params.labels, params) if return_params else (out, params.labels)
