"""``DadamConfig``: every DADAM option in one frozen dataclass, the one source of truth for the option group.

The module (:class:`dadam.DiseasedAreaAugment`), the offline export, the label audit and the training command line all
take a ``DadamConfig``; their command-line flags are generated here from its fields (:func:`add_dadam_arguments`,
:func:`dadam_config_from_args`), so an option is declared, documented and checked exactly once.

Example:
    >>> cfg = DadamConfig(p=0.5, max_patches=3)
    >>> cfg.replace(p=1.0).p
    1.0
    >>> DadamConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import argparse
import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COMPANION_RULES",
    "EPOCH_OPTIONS",
    "MATCH_MODES",
    "MODES",
    "PAPER_EXTRA_FRACTION",
    "PLACEMENTS",
    "DadamConfig",
    "add_dadam_arguments",
    "count_or_fraction",
    "dadam_config_from_args",
]

# Above this a class weight freq ** -gamma or corr ** beta under/overflows float32 for realistic frequencies
# (freq >= 1e-6): the sampler's inverse CDF would see inf or 0 everywhere.
_MAX_EXPONENT = 6.0


# The rules a normal image's companion classes are drawn by (see :mod:`dadam.sampling`).
COMPANION_RULES = ("cooccurrence", "correlation")
# What ``match`` makes equal before a patch is pasted: nothing (the paper), the mean, or the mean and the std.
MATCH_MODES = ("none", "mean", "meanstd")
# How DADAM enters a training epoch: change originals online ("replace") or add extra augmented samples ("extend").
MODES = ("replace", "extend")
# Where a patch goes: its donor position (aligned) or that position mapped through the lung-field boxes (lung).
PLACEMENTS = ("aligned", "lung")
PAPER_EXTRA_FRACTION = 50_000 / 210_000
"""The paper's extra samples per kind as a fraction of its training set: 50k pasted and 50k blended on 210k."""
EPOCH_OPTIONS = ("mode", "extra_paste", "extra_blend")
"""The options that shape a training epoch (which samples DADAM sees), not the augmentation module itself."""
# The largest fraction accepted for an extra amount (10 x the training set per kind).
_MAX_FRACTION = 10.0
_NO_LEGACY = object()


def count_or_fraction(text: str) -> int | float:
    """Parse a command-line amount: ``"50000"`` is a count (int), ``"0.25"`` or ``"1.0"`` a fraction (float).

    Raises:
        argparse.ArgumentTypeError: the text is not a number.
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count (e.g. 50000) or a fraction of the training set (e.g. 0.25), got {text!r}"
        ) from None


def _opt(default: Any, help: str, *, legacy: Any = _NO_LEGACY, epoch: bool = False, **cli: Any) -> Any:
    """A dataclass field with its one-line help text and argparse settings (``cli``) in the metadata.

    ``help`` may name another option as ``{field_name}``; :func:`add_dadam_arguments` writes its flag there (with the
    parser's prefix). ``legacy``: the value a dict written before this option existed stands for (the behaviour of
    that release); :meth:`DadamConfig.from_dict` gives it to a dict that lacks the option. ``epoch``: an option of
    the training epoch (:data:`EPOCH_OPTIONS`), whose flag only training command lines get.
    """
    metadata = {"help": help, "cli": cli, "epoch": epoch}
    if legacy is not _NO_LEGACY:
        metadata["legacy"] = legacy
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DadamConfig:
    """The options of DADAM (Kim et al., 2023, section 3.2), validated by :meth:`validate`.

    Attributes:
        p: per-sample probability of augmenting an eligible image, in ``[0, 1]``.
        alpha: blend weight of the patch on tail-class images, in ``(0, 1]`` (the paper: 0.6).
        max_patches: most patches pasted on one normal image, ``>= 1``.
        tail: tail classes (names or indices); None: the covered classes with frequency at or below the
            ``tail_quantile`` of the covered classes' frequencies.
        tail_quantile: quantile of the default tail set, in ``[0, 1]``.
        gamma: tail classes are drawn proportional to ``freq ** -gamma``, in ``[0, 6]``.
        beta: with ``companions="correlation"``, companions are drawn proportional to ``corr ** beta``, in ``[0, 6]``.
        jitter: largest random shift from the aligned position, fraction of the canvas, in ``[0, 1]``.
        candidates: candidate draws per companion slot for the non-overlap rule, ``>= 1``.
        soft_label: label a blended class with ``alpha`` instead of 1.
        companions: how a normal image's companion classes are drawn (see :mod:`dadam.sampling`):
            ``"cooccurrence"`` pastes the covered classes of a real training label row that shows the tail class;
            ``"correlation"`` draws them proportional to ``corr ** beta`` (the paper's rule, release 0.1.0). A dict
            without this key (a file of release 0.1.0) reads as ``"correlation"``.
        mode: how DADAM enters a training epoch (:data:`EPOCH_OPTIONS`; the module itself ignores it):
            ``"extend"`` (the paper) adds ``extra_paste`` samples drawn from the normal images and ``extra_blend``
            drawn from the tail-class images to the originals, changes every extra sample and no original (``p`` is
            not used); ``"replace"`` changes originals online with probability ``p``. A dict without this key reads
            as ``"replace"``, the behaviour before the option existed.
        placement: where a patch goes on the canvas: ``"aligned"`` at its box on the donor (the paper);
            ``"lung"`` at that box's centre mapped from the donor's lung-field box into the recipient's (see
            :mod:`dadam.anatomy`), the patch size unchanged. A dict without this key reads as ``"aligned"``.
        extra_paste: extra pasted samples per epoch (``mode="extend"``): an int is a count, a float a fraction of
            the training set (default: the paper's 50k / 210k).
        extra_blend: extra blended samples per epoch, as ``extra_paste``.
        feather: pixels on the canvas over which a patch's weight (1 for a paste, ``alpha`` for a blend) rises from
            the box edge to full weight, ``w = weight * min(1, (d + 0.5) / feather)`` with ``d`` a pixel's distance to
            the nearest box edge (:mod:`dadam.paste.values`); ``>= 0``, 0: the paper's hard edge.
        match: before pasting, map each patch's intensities affinely so that its mean (``"mean"``) or mean and
            standard deviation (``"meanstd"``) equal the recipient's under the box; ``"none"``: the paper's patch
            as it is. The map is recorded in the params (``gain``, ``offset``).
    """

    p: float = _opt(0.5, "probability of augmenting an eligible image (in training: replace mode only)", type=float)
    alpha: float = _opt(0.6, "blend weight of the patch on tail-class images", type=float)
    max_patches: int = _opt(3, "most patches pasted on one normal image", type=int)
    tail: tuple[str | int, ...] | None = _opt(
        None, "tail class names (default: the rarer covered classes, see {tail_quantile})", nargs="+"
    )
    tail_quantile: float = _opt(
        0.5, "frequency quantile of the covered classes that makes the default tail set", type=float
    )
    gamma: float = _opt(1.0, "tail classes are drawn ~ freq^-gamma", type=float)
    beta: float = _opt(1.0, "companion classes are drawn ~ corr^beta (with {companions} correlation)", type=float)
    jitter: float = _opt(0.0, "largest random shift from the aligned position, fraction of the canvas", type=float)
    candidates: int = _opt(8, "candidate draws per companion slot for the non-overlap rule", type=int)
    soft_label: bool = _opt(False, "label a blended class with alpha instead of 1", action="store_true")
    companions: str = _opt(
        "cooccurrence",
        "companion classes of a normal image: the covered classes of a real label row with the tail class "
        "(cooccurrence), or drawn ~ corr^beta (correlation, the paper's rule)",
        legacy="correlation",
        choices=COMPANION_RULES,
    )
    placement: str = _opt(
        "aligned",
        "where a patch goes: its box on the donor (aligned), or that box mapped from the donor's lung-field box into "
        "the recipient's (lung)",
        legacy="aligned",
        choices=PLACEMENTS,
    )
    mode: str = _opt(
        "extend",
        "training epoch: originals plus extra DADAM samples, originals unchanged (extend, the paper), or originals "
        "changed online with probability {p} (replace)",
        legacy="replace",
        choices=MODES,
        epoch=True,
    )
    extra_paste: int | float = _opt(
        PAPER_EXTRA_FRACTION,
        "extend mode: extra samples per epoch pasted onto normal images; a count (50000) or a fraction of the "
        "training set (0.25)",
        type=count_or_fraction,
        epoch=True,
    )
    extra_blend: int | float = _opt(
        PAPER_EXTRA_FRACTION,
        "extend mode: extra samples per epoch blended onto tail-class images; a count or a fraction",
        type=count_or_fraction,
        epoch=True,
    )
    feather: int = _opt(0, "pixels over which a patch's weight rises from its box edge (0: the hard edge)", type=int)
    match: str = _opt(
        "none",
        "map each patch's intensities so that its mean (mean) or mean and std (meanstd) equal the recipient's under "
        "the box (none: the patch as it is)",
        choices=MATCH_MODES,
    )

    def __post_init__(self) -> None:
        if isinstance(self.tail, str):  # one class name, not its letters
            object.__setattr__(self, "tail", (self.tail,))
        elif self.tail is not None and not isinstance(self.tail, tuple):
            object.__setattr__(self, "tail", tuple(self.tail))

    def validate(self) -> DadamConfig:
        """Raise ``ValueError`` naming the first option out of range; returns ``self`` (for chaining)."""

        def number(name: str) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{name} must be a number, got {v!r}")
            return float(v)  # NaN fails every range test below

        def whole(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")

        if not 0.0 <= number("p") <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p}")
        if not 0.0 < number("alpha") <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        whole("max_patches", 1)
        whole("candidates", 1)
        if not 0.0 <= number("jitter") <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")
        if not 0.0 <= number("tail_quantile") <= 1.0:
            raise ValueError(f"tail_quantile must be in [0, 1], got {self.tail_quantile}")
        if not (number("gamma") >= 0 and number("beta") >= 0):
            raise ValueError(f"gamma and beta must be >= 0, got gamma={self.gamma}, beta={self.beta}")
        for name in ("gamma", "beta"):
            if not number(name) <= _MAX_EXPONENT:
                raise ValueError(
                    f"{name} must be at most {_MAX_EXPONENT:g} (larger exponents overflow the class weights), "
                    f"got {getattr(self, name)}"
                )
        if not isinstance(self.soft_label, bool):
            raise ValueError(f"soft_label must be a bool, got {self.soft_label!r}")
        if self.companions not in COMPANION_RULES:
            raise ValueError(f"companions must be one of {COMPANION_RULES}, got {self.companions!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("extra_paste", "extra_blend"):
            _check_amount(name, getattr(self, name))
        whole("feather", 0)
        if self.match not in MATCH_MODES:
            raise ValueError(f"match must be one of {MATCH_MODES}, got {self.match!r}")
        if self.tail is not None:
            for t in self.tail:
                if isinstance(t, bool) or not isinstance(t, (str, numbers.Integral)):
                    raise ValueError(f"tail classes must be class names or int indices, got {t!r} in tail={self.tail}")
        return self

    def augment_options(self) -> dict[str, Any]:
        """The options of the augmentation module (:class:`dadam.DiseasedAreaAugment`'s keywords): every field but
        the epoch options (:data:`EPOCH_OPTIONS`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("epoch")}

    def extra_counts(self, n: int) -> tuple[int, int]:
        """The extra pasted and blended samples of one ``mode="extend"`` epoch over ``n`` training images.

        A count is taken as is; a fraction ``f`` gives ``round(f * n)``. ``(0, 0)`` in ``mode="replace"``.

        Example:
            >>> DadamConfig().extra_counts(210_000)
            (50000, 50000)
            >>> DadamConfig(extra_paste=7, extra_blend=0.5).extra_counts(10)
            (7, 5)
        """
        if self.mode != "extend":
            return 0, 0
        amounts = (self.extra_paste, self.extra_blend)
        return tuple(int(v) if isinstance(v, numbers.Integral) else round(v * n) for v in amounts)

    def replace(self, **changes: Any) -> DadamConfig:
        """A copy with some options changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON files and checkpoints: ``tail`` as a list of names and plain ``int`` indices."""
        d = dataclasses.asdict(self)
        d["tail"] = None if self.tail is None else [t if isinstance(t, str) else int(t) for t in self.tail]
        for name in ("extra_paste", "extra_blend"):  # a count stays an int, a fraction a float
            v = d[name]
            d[name] = int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DadamConfig:
        """The config of :meth:`to_dict`'s output; unknown keys raise ``ValueError`` naming them.

        A missing key means a dict written before that option existed: the option gets the value that stands for
        the behaviour of that release where the field declares one (``companions``: ``"correlation"``), else its
        default.

        Example:
            >>> DadamConfig.from_dict({"p": 0.5}).companions  # a config of release 0.1.0
            'correlation'
        """
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown DADAM options {unknown}; known: {sorted(names)}")
        legacy = {f.name: f.metadata["legacy"] for f in fields if "legacy" in f.metadata and f.name not in values}
        return cls(**legacy, **dict(values))

    def changed(self, other: DadamConfig) -> dict[str, tuple[Any, Any]]:
        """The options that differ: ``{name: (self's value, other's value)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def add_dadam_arguments(
    parser: argparse._ActionsContainer, *, prefix: str = "", exclude: Sequence[str] = (), training: bool = False
) -> None:
    """Add one flag per :class:`DadamConfig` field: ``--{prefix}{name with - for _}``, its help and its default.

    Args:
        parser: a parser or an argument group.
        prefix: flag prefix, e.g. ``"dadam-"`` gives ``--dadam-p``, ``--dadam-max-patches``.
        exclude: field names to leave out.
        training: also add the epoch options (:data:`EPOCH_OPTIONS`: ``--{prefix}mode``, ``--{prefix}extra-paste``,
            ``--{prefix}extra-blend``), which only a training command line uses.
    """
    defaults = DadamConfig()
    flags = {f.name: _flag(prefix, f.name) for f in dataclasses.fields(DadamConfig)}
    for f in dataclasses.fields(DadamConfig):
        if f.name in exclude or (f.metadata.get("epoch") and not training):
            continue
        default = getattr(defaults, f.name)
        cli = dict(f.metadata["cli"])
        shown = f"{default:.6g}" if isinstance(default, float) else default  # 0.238095, not 0.23809523809523808
        shown = " (default: off)" if cli.get("action") == "store_true" else f" (default: {shown})"
        if "(default:" in f.metadata["help"]:  # the help says what the default stands for
            shown = ""
        if cli.get("action") == "store_true":
            cli.setdefault("default", default)
        else:
            cli["default"] = default
        parser.add_argument(
            flags[f.name],
            dest=_dest(prefix, f.name),
            help=f"{f.metadata['help'].format(**flags)}{shown}",
            **cli,
        )


def dadam_config_from_args(
    args: argparse.Namespace, *, prefix: str = "", base: DadamConfig | None = None
) -> DadamConfig:
    """The validated :class:`DadamConfig` of parsed arguments (flags added by :func:`add_dadam_arguments`).

    Fields without a flag in ``args`` keep their value in ``base`` (default: the defaults).
    """
    values = {}
    for f in dataclasses.fields(DadamConfig):
        dest = _dest(prefix, f.name)
        if hasattr(args, dest):
            values[f.name] = getattr(args, dest)
    return (base or DadamConfig()).replace(**values).validate()


def _check_amount(name: str, value: Any) -> None:
    """An extra amount: an int count ``>= 0`` or a finite float fraction in ``[0, 10]``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, float)):
        raise ValueError(f"{name} must be a count (int >= 0) or a fraction of the training set (float), got {value!r}")
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise ValueError(f"{name} must be a count >= 0, got {value}")
    elif not 0.0 <= value <= _MAX_FRACTION:  # NaN fails too
        raise ValueError(
            f"{name} must be a fraction of the training set in [0, {_MAX_FRACTION:g}], got {value}; give a count "
            "as an int (50000)"
        )


def _flag(prefix: str, name: str) -> str:
    return f"--{prefix}{name.replace('_', '-')}"


def _dest(prefix: str, name: str) -> str:
    return f"{prefix.replace('-', '_')}{name}"
