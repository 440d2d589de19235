"""Label tables in the library's own schema: reading one in any supported format, and its ``(N, C)`` label matrix."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from dadam.formats.common import check_file, check_unique_columns, decoding_errors, read_header, text_codec
from dadam.formats.mimic import read_cxr_lt
from dadam.formats.nih import read_nih_labels
from dadam.labels import CXR_LT_CLASSES

__all__ = ["LABEL_FORMATS", "labels_tensor", "read_label_table"]

LABEL_FORMATS = ("table", "nih", "cxr-lt")


def read_label_table(path: str | os.PathLike, *, fmt: str = "table", encoding: str = "utf-8") -> pd.DataFrame:
    """Read a label table in one of :data:`LABEL_FORMATS`.

    Args:
        path: The CSV.
        fmt: ``"table"`` (a CSV in the label-table contract: ``image_id, path``, the 26 CXR-LT classes as columns),
            ``"nih"`` (NIH ``Data_Entry_2017*.csv``, :func:`~dadam.formats.read_nih_labels`) or ``"cxr-lt"`` (CXR-LT
            2023 ``train.csv``, :func:`~dadam.formats.read_cxr_lt`).
        encoding: The file's text encoding (UTF-8, with or without a byte-order mark, by default).

    Returns:
        The label table: ``image_id``, ``path`` and one column per CXR-LT class (1.0, 0.0, NaN = unknown).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: an unknown ``fmt``, a table without the needed columns or with one of them twice (naming them and
            the file), or a file that is not valid ``encoding`` text.

    Example:
        >>> table = read_label_table("train.csv", fmt="cxr-lt")  # doctest: +SKIP
        >>> labels_tensor(table).shape  # doctest: +SKIP
        torch.Size([264849, 26])
    """
    if fmt == "nih":
        return read_nih_labels(path, encoding=encoding)
    if fmt == "cxr-lt":
        return read_cxr_lt(path, encoding=encoding)
    if fmt != "table":
        raise ValueError(f"label format must be one of {LABEL_FORMATS}, got {fmt!r}")
    codec = text_codec(encoding)
    p = check_file(path, "label table CSV")
    with decoding_errors(p, encoding):
        check_unique_columns(p, read_header(p, codec), ("image_id", "path", *CXR_LT_CLASSES), "label table")
        table = pd.read_csv(p, dtype={"image_id": str, "path": str}, encoding=codec)
    missing = [c for c in ("image_id", "path", *CXR_LT_CLASSES) if c not in table.columns]
    if missing:
        raise ValueError(f"{p}: label table lacks columns {missing}; it has {list(table.columns)}")
    return table


def labels_tensor(table: pd.DataFrame, *, class_names: Sequence[str] = CXR_LT_CLASSES) -> torch.Tensor:
    """The label matrix of a label table (NaN = unknown), naming missing columns and cells that are not numbers.

    Args:
        table: A label table.
        class_names: The columns to take, in this order.

    Returns:
        ``(N, C)`` float32, ``C = len(class_names)``.

    Raises:
        ValueError: a class column is missing, or a cell is not a number (naming its row, column and value).

    Shape:
        table: N rows -> (N, C)

    Example:
        >>> labels_tensor(pd.DataFrame({"Mass": [1.0, None]}), class_names=["Mass"]).tolist()
        [[1.0], [nan]]
    """
    missing = [c for c in class_names if c not in table.columns]
    if missing:
        raise ValueError(f"label table is missing class columns {missing}; it has {list(table.columns)}")
    raw = table[list(class_names)]
    values = raw.apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & raw.notna()  # a cell that is not a number: an error, not a silent "unknown"
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise ValueError(
            f"label table row {row} (index {table.index[row]!r}), column {class_names[col]!r}: "
            f"{raw.iat[row, col]!r} is not a number ({int(bad.to_numpy().sum())} such cells); use 1, 0 or empty"
        )
    return torch.from_numpy(values.to_numpy(dtype=np.float32, na_value=np.nan).copy())
