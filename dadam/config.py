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

__all__ = ["COMPANION_RULES", "DadamConfig", "add_dadam_arguments", "dadam_config_from_args"]

# Above this a class weight freq ** -gamma or corr ** beta under/overflows float32 for realistic frequencies
# (freq >= 1e-6): the sampler's inverse CDF would see inf or 0 everywhere.
_MAX_EXPONENT = 6.0


# The rules a normal image's companion classes are drawn by (see :mod:`dadam.sampling`).
COMPANION_RULES = ("cooccurrence", "correlation")
_NO_LEGACY = object()


def _opt(default: Any, help: str, *, legacy: Any = _NO_LEGACY, **cli: Any) -> Any:
    """A dataclass field with its one-line help text and argparse settings (``cli``) in the metadata.

    ``help`` may name another option as ``{field_name}``; :func:`add_dadam_arguments` writes its flag there (with the
    parser's prefix). ``legacy``: the value a dict written before this option existed stands for (the behaviour of
    that release); :meth:`DadamConfig.from_dict` gives it to a dict that lacks the option.
    """
    metadata = {"help": help, "cli": cli}
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
    """

    p: float = _opt(0.5, "probability of augmenting an eligible image", type=float)
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
        if self.tail is not None:
            for t in self.tail:
                if isinstance(t, bool) or not isinstance(t, (str, numbers.Integral)):
                    raise ValueError(f"tail classes must be class names or int indices, got {t!r} in tail={self.tail}")
        return self

    def replace(self, **changes: Any) -> DadamConfig:
        """A copy with some options changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON files and checkpoints: ``tail`` as a list of names and plain ``int`` indices."""
        d = dataclasses.asdict(self)
        d["tail"] = None if self.tail is None else [t if isinstance(t, str) else int(t) for t in self.tail]
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


def add_dadam_arguments(parser: argparse._ActionsContainer, *, prefix: str = "", exclude: Sequence[str] = ()) -> None:
    """Add one flag per :class:`DadamConfig` field: ``--{prefix}{name with - for _}``, its help and its default.

    Args:
        parser: a parser or an argument group.
        prefix: flag prefix, e.g. ``"dadam-"`` gives ``--dadam-p``, ``--dadam-max-patches``.
        exclude: field names to leave out.
    """
    defaults = DadamConfig()
    flags = {f.name: _flag(prefix, f.name) for f in dataclasses.fields(DadamConfig)}
    for f in dataclasses.fields(DadamConfig):
        if f.name in exclude:
            continue
        default = getattr(defaults, f.name)
        cli = dict(f.metadata["cli"])
        shown = "" if cli.get("action") == "store_true" else f" (default: {default})"
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


def _flag(prefix: str, name: str) -> str:
    return f"--{prefix}{name.replace('_', '-')}"


def _dest(prefix: str, name: str) -> str:
    return f"{prefix.replace('-', '_')}{name}"
