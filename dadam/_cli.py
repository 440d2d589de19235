"""Command-line options shared by ``python -m dadam.audit`` and ``python -m dadam.export`` (CLI code only)."""

from __future__ import annotations

import argparse

# The DiseasedAreaAugment options a CLI exposes, as (flag, keyword, argparse settings).
_OPTIONS = (
    ("--p", "p", dict(type=float, default=0.5, help="probability of augmenting an eligible image (default 0.5)")),
    ("--alpha", "alpha", dict(type=float, default=0.6, help="blend weight for tail-class images (default 0.6)")),
    ("--max-patches", "max_patches", dict(type=int, default=3, help="most patches on one normal image (default 3)")),
    ("--tail", "tail", dict(nargs="*", default=None, help="tail class names (default: from the statistics)")),
    ("--gamma", "gamma", dict(type=float, default=1.0, help="tail classes drawn ~ freq^-gamma (default 1)")),
    ("--beta", "beta", dict(type=float, default=1.0, help="companions drawn ~ corr^beta (default 1)")),
    ("--jitter", "jitter", dict(type=float, default=0.0, help="max shift, fraction of the canvas (default 0)")),
    ("--soft-label", "soft_label", dict(action="store_true", help="label a blended class alpha instead of 1")),
    ("--tail-quantile", "tail_quantile", dict(type=float, default=0.5, help="quantile of the default tail set")),
    ("--candidates", "candidates", dict(type=int, default=8, help="draws per slot for the non-overlap rule")),
)


def add_augment_options(group: argparse._ActionsContainer) -> None:
    """Add the DADAM options (``--p``, ``--alpha``, ...) to a parser or argument group."""
    for flag, dest, settings in _OPTIONS:
        group.add_argument(flag, dest=dest, **settings)


def augment_options(args: argparse.Namespace) -> dict:
    """The DADAM keyword arguments from parsed arguments (for ``audit_labels``, ``export``, the module)."""
    return {dest: getattr(args, dest) for _, dest, _ in _OPTIONS}
