"""Command-line flags generated from the fields of a config dataclass (``TrainConfig``, ``EvalConfig``).

A field ``batch_size: int = 32`` becomes ``--batch-size`` (int, default 32); ``bool`` fields get ``--x`` and
``--no-x``; ``tuple[int, ...]`` fields take one or more ints (``tuple[str, ...]``: strings); a field without a
default is a required flag. A field whose ``metadata["group"]`` names a group is listed under that heading in
``--help``, its ``metadata["help"]`` (when given) is its description, and ``metadata["choices"]`` its choices.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

__all__ = ["add_dataclass_arguments", "dataclass_values"]


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, *, exclude: Sequence[str] = (), groups: Sequence[str] = ()
) -> dict[str, argparse._ArgumentGroup]:
    """Add one flag per field of the dataclass ``cls`` (see the module docstring).

    Args:
        parser: the parser.
        cls: a dataclass.
        exclude: field names without a generated flag.
        groups: group names in the order ``--help`` lists them (others follow in field order).

    Returns:
        the argument groups created, by name (to add more flags under a heading).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> groups = add_dataclass_arguments(parser, TrainConfig, exclude=("dadam",))  # doctest: +SKIP
    """
    made = {name: parser.add_argument_group(name) for name in groups}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        group = f.metadata.get("group")
        if group is not None and group not in made:
            made[group] = parser.add_argument_group(group)
        container = parser if group is None else made[group]
        flag = "--" + f.name.replace("_", "-")
        described = f.metadata.get("help", "")
        if f.default is dataclasses.MISSING:
            container.add_argument(flag, type=str, required=True, help=described or None)
            continue
        # the default, unless the description says what it stands for ("(default: the dataset's own file)")
        shown = described if "(default:" in described else f"{described} (default: %(default)s)".lstrip()
        typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        choices = {"choices": f.metadata["choices"]} if "choices" in f.metadata else {}
        if typ == "bool":
            container.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=shown)
        elif typ.startswith("tuple[str"):
            default = list(f.default)
            if "(default:" not in described:
                shown = f"{described} (default: {' '.join(default) or 'none'})".lstrip()
            container.add_argument(flag, type=str, nargs="*", default=default, metavar="NAME", help=shown)
        elif typ.startswith("tuple"):
            container.add_argument(flag, type=int, nargs="+", default=list(f.default), metavar="N", help=shown)
        elif typ.startswith("int"):
            container.add_argument(flag, type=int, default=f.default, help=shown, **choices)
        elif typ.startswith("float"):
            container.add_argument(flag, type=float, default=f.default, help=shown, **choices)
        else:
            container.add_argument(flag, type=str, default=f.default, help=shown, **choices)
    return made


def dataclass_values(args: argparse.Namespace, cls: type, *, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The values of ``cls``'s fields in parsed arguments (tuple fields as tuples), for ``cls(**values)``."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        value = getattr(args, f.name)
        typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        values[f.name] = tuple(value) if typ.startswith("tuple") and value is not None else value
    return values
