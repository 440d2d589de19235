"""``python -m fpsm.train``: train an FPSM on CXR-LT, MURA or any label CSV, optionally with online DADAM.

Many GPUs or machines: ``torchrun --nproc_per_node=8 -m fpsm.train ...`` (DDP, ranks from the environment).
The flags are generated from :class:`~fpsm.training.config.TrainConfig` (``--batch-size`` for ``batch_size``) and,
after ``--dadam``, from :class:`dadam.config.DadamConfig` (``--dadam-p``, ``--dadam-tail``, ...).

This module is also the import path of the training API, which lives in :mod:`fpsm.training`:
``from fpsm.train import TrainConfig, fit``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

from dadam.config import DadamConfig, add_dadam_arguments, dadam_config_from_args
from fpsm.cli import add_dataclass_arguments, dataclass_values
from fpsm.training import (
    DATASETS,
    GROUPS,
    MURA_CLASSES,
    FitResult,
    TrainConfig,
    build_model,
    evaluate,
    fit,
    load_checkpoint_weights,
    load_split,
    train_one_epoch,
    write_predictions,
    write_report,
)

__all__ = [
    "DATASETS",
    "MURA_CLASSES",
    "FitResult",
    "TrainConfig",
    "build_model",
    "build_parser",
    "config_from_args",
    "evaluate",
    "fit",
    "load_checkpoint_weights",
    "load_split",
    "main",
    "train_one_epoch",
    "write_predictions",
    "write_report",
]

_DADAM_PREFIX = "dadam-"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m fpsm.train``: the TrainConfig flags by group, then ``--dadam`` and its options."""
    parser = argparse.ArgumentParser(
        prog="python -m fpsm.train",
        description="Train an FPSM (optionally with DADAM). Many GPUs: torchrun --nproc_per_node=N -m fpsm.train ...",
    )
    groups = add_dataclass_arguments(parser, TrainConfig, exclude=("dadam",), groups=GROUPS)
    dadam = groups["DADAM"]
    dadam.add_argument(
        "--dadam", action="store_true", help="augment the training batches with DADAM, needs --bank (default: off)"
    )
    add_dadam_arguments(dadam, prefix=_DADAM_PREFIX, training=True)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The validated :class:`TrainConfig` of parsed :func:`build_parser` arguments.

    Raises:
        ValueError: a DADAM option is out of range, DADAM options were given without ``--dadam``, ``--dadam-p``
            was given in extend mode (where every extra sample changes and no original), or the config is invalid.
    """
    try:
        dadam = dadam_config_from_args(args, prefix=_DADAM_PREFIX)
    except ValueError as err:
        raise ValueError(f"DADAM option {err}") from None
    changed = DadamConfig().changed(dadam)
    if not args.dadam and changed:
        flags = ", ".join(f"--{_DADAM_PREFIX}{name.replace('_', '-')}" for name in changed)
        raise ValueError(f"{flags} given without --dadam: add --dadam to train with DADAM")
    if dadam.mode == "extend" and "p" in changed:
        raise ValueError(
            f"--{_DADAM_PREFIX}p applies to --{_DADAM_PREFIX}mode replace; in extend mode DADAM changes every extra "
            f"sample and no original (set their amounts with --{_DADAM_PREFIX}extra-paste / -blend)"
        )
    values = dataclass_values(args, TrainConfig, exclude=("dadam",))
    return TrainConfig(**values, dadam=dadam if args.dadam else None).validate()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fpsm.train``: parse flags into a :class:`TrainConfig` and :func:`fit` it."""
    parser = build_parser()
    try:
        cfg = config_from_args(parser.parse_args(argv))
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    try:
        res = fit(cfg)
    except (FileExistsError, FileNotFoundError, ValueError) as err:  # a run folder, checkpoint or file, named
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    if int(os.environ.get("RANK", "0")) == 0:  # one report under torchrun
        state = "stopped" if res.stopped else "done"
        print(f"{state}: step {res.step}, run dir {res.run_dir}, metrics {json.dumps(res.metrics)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
