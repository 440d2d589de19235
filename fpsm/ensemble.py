"""Ensembles: the (weighted) mean of several models' probabilities, live or from prediction files.

Command line::

    python -m fpsm.ensemble a.csv b.csv --weights 1 2 --out ens.csv

An existing ``--out`` file (one of the inputs included) is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from dadam.files import atomic_write
from fpsm.model import FPSMOutput

__all__ = ["EnsembleModel", "average_predictions", "main", "normalize_weights", "read_predictions"]


def normalize_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Check ``weights`` (one per member, finite, >= 0, positive sum) and scale them to sum 1; ``None`` -> equal.

    Example:
        >>> normalize_weights([1, 3], 2)
        [0.25, 0.75]
    """
    if n < 1:
        raise ValueError("an ensemble needs at least one member, got 0")
    if weights is None:
        return [1.0 / n] * n
    w = [float(v) for v in weights]
    if len(w) != n:
        raise ValueError(f"weights has {len(w)} values but there are {n} members")
    if any(not math.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w}")
    total = sum(w)
    return [v / total for v in w]


class EnsembleModel(nn.Module):
    """The weighted mean of the members' probabilities.

    A member returning an :class:`~fpsm.model.FPSMOutput` contributes ``out.probs``; a member returning a tensor is
    taken to return logits and contributes ``sigmoid(logits)``. ``dataset_ids`` goes only to members that use it
    (FPSM models built with ``use_binary_enc=True``).

    Args:
        models: the members, all predicting the same ``C`` classes.
        weights: one non-negative weight per member (normalised to sum 1); default equal weights.

    Shape:
        images ``(B, in_chans, H, W)`` -> probs ``(B, C)`` float32.

    Example:
        >>> from fpsm import create_fpsm
        >>> ens = EnsembleModel([create_fpsm("resnet10t", num_classes=3), create_fpsm("resnet10t", num_classes=3)])
        >>> ens(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 3])
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.register_buffer("weights", torch.tensor(normalize_weights(weights, len(self.models))), persistent=False)

    def forward(self, images: torch.Tensor, dataset_ids: torch.Tensor | None = None) -> torch.Tensor:
        probs = []
        for i, model in enumerate(self.models):
            out = model(images, dataset_ids) if getattr(model, "use_binary_enc", False) else model(images)
            p = out.probs if isinstance(out, FPSMOutput) else out.float().sigmoid()  # (B, C)
            if probs and p.shape != probs[0].shape:
                raise ValueError(f"member {i} predicts shape {tuple(p.shape)}, member 0 {tuple(probs[0].shape)}")
            probs.append(p.float())
        return torch.einsum("m,mbc->bc", self.weights.to(probs[0].device), torch.stack(probs))


def read_predictions(path: str | os.PathLike, *, id_column: str = "image_id") -> pd.DataFrame:
    """Read a prediction CSV: ``id_column`` then one probability column per class.

    Args:
        path: the CSV file.
        id_column: the name of the id column.

    Returns:
        DataFrame indexed by the ids (as str), float64 class columns in file order.

    Raises:
        ValueError: naming the file, row and column, for a missing id column, a duplicate or empty id, or a value
            that is not a number in [0, 1].
    """
    path = os.fspath(path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])  # raw text, for error messages
    if id_column not in df.columns:
        raise ValueError(f"{path}: no {id_column!r} column (columns: {list(df.columns)})")
    classes = [c for c in df.columns if c != id_column]
    if not classes:
        raise ValueError(f"{path}: no class columns besides {id_column!r}")
    ids = df[id_column]
    for row, value in enumerate(ids, start=2):  # row 1 is the header
        if value == "":
            raise ValueError(f"{path}:{row}: empty {id_column}")
    dup = ids[ids.duplicated()]
    if len(dup):
        row = int(dup.index[0]) + 2
        raise ValueError(f"{path}:{row}: duplicate {id_column} {dup.iloc[0]!r}")
    values = df[classes].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)  # (N, C)
    bad = ~(np.isfinite(values) & (values >= 0) & (values <= 1))
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(
            f"{path}:{r + 2}: column {classes[c]!r} value {df[classes[c]].iloc[r]!r} for {ids.iloc[r]} is not a "
            "probability in [0, 1]"
        )
    return pd.DataFrame(values, index=pd.Index(ids, name=id_column), columns=classes)


def average_predictions(
    paths: Sequence[str | os.PathLike], weights: Sequence[float] | None = None, *, id_column: str = "image_id"
) -> pd.DataFrame:
    """The weighted mean of several prediction CSVs (see :func:`read_predictions`).

    Every file must hold the same ids and the same class columns (any row or column order); the result keeps the
    first file's order.

    Args:
        paths: the CSV files.
        weights: one non-negative weight per file (normalised to sum 1); default equal weights.
        id_column: the id column name.

    Returns:
        DataFrame with ``id_column`` then the class columns, the weighted mean probabilities.

    Raises:
        ValueError: when ids or columns differ between files (naming the file and examples), or a file is bad.

    Example:
        >>> average_predictions(["a.csv", "b.csv"], [1, 2])  # doctest: +SKIP
    """
    paths = [os.fspath(p) for p in paths]
    w = normalize_weights(weights, len(paths))
    frames = [read_predictions(p, id_column=id_column) for p in paths]
    first = frames[0]
    total = np.zeros(first.shape, dtype=np.float64)
    for path, df, wi in zip(paths, frames, w, strict=True):
        if set(df.columns) != set(first.columns):
            raise ValueError(
                f"{path}: class columns differ from {paths[0]}: missing {sorted(set(first.columns) - set(df.columns))}, "
                f"extra {sorted(set(df.columns) - set(first.columns))}"
            )
        if len(df.index) != len(first.index) or not df.index.isin(first.index).all():
            missing = first.index.difference(df.index)
            extra = df.index.difference(first.index)
            raise ValueError(
                f"{path}: ids differ from {paths[0]}: {len(missing)} missing (e.g. {list(missing[:3])}), "
                f"{len(extra)} extra (e.g. {list(extra[:3])})"
            )
        total += wi * df.loc[first.index, first.columns].to_numpy()
    out = pd.DataFrame(total, index=first.index, columns=first.columns)
    return out.reset_index()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fpsm.ensemble``: average prediction CSVs into one."""
    parser = argparse.ArgumentParser(
        prog="python -m fpsm.ensemble",
        description="Average the class probabilities of several prediction CSVs (id column + one column per class). "
        "All files must have the same ids and class columns.",
    )
    parser.add_argument("csv", nargs="+", help="prediction CSV files")
    parser.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per file (default equal)")
    parser.add_argument("--out", required=True, help="output CSV (written atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists (even an input)")
    parser.add_argument("--id-column", default="image_id", help="name of the id column (default: image_id)")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    if out.exists() and not args.overwrite:
        inputs = {os.path.realpath(p) for p in args.csv}
        what = "is one of the input files" if os.path.realpath(out) in inputs else "exists"
        parser.error(f"--out {out} {what}: pass --overwrite to replace it, or choose another --out")
    try:
        df = average_predictions(args.csv, args.weights, id_column=args.id_column)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, df.to_csv(index=False))
    w = normalize_weights(args.weights, len(args.csv))
    print(
        f"wrote {args.out}: {len(df)} ids x {df.shape[1] - 1} classes, mean of {len(args.csv)} files, weights "
        + ", ".join(f"{wi:.3g}" for wi in w)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
