"""Label tables in the library's own schema: reading one in any supported format, its ``(N, C)`` label matrix, and
its optional lung-box columns (:data:`~dadam.anatomy.LUNG_BOX_COLUMNS`: ``lung_x0, lung_y0, lung_x1, lung_y1``, the
image's lung-field box normalised to ``[0, 1]``, all four empty where unknown; ``placement="lung"``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from dadam.anatomy import LUNG_BOX_COLUMNS
from dadam.formats.common import check_file, check_unique_columns, decoding_errors, read_header, text_codec
from dadam.formats.mimic import read_cxr_lt
from dadam.formats.nih import read_nih_labels
from dadam.labels import CXR_LT_CLASSES

__all__ = ["LABEL_FORMATS", "LUNG_BOX_COLUMNS", "labels_tensor", "lung_boxes_tensor", "read_label_table"]

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


def lung_boxes_tensor(table: pd.DataFrame, *, what: str = "label table") -> torch.Tensor:
    """The lung boxes of a table's :data:`~dadam.anatomy.LUNG_BOX_COLUMNS` (``lung_x0, lung_y0, lung_x1, lung_y1``).

    Each row is the lung-field box of its image (both lungs, apices to costophrenic angles; see
    :mod:`dadam.anatomy`), normalised xyxy in ``[0, 1]`` with a top-left origin; a row with all four cells empty is
    unknown (NaN: that image keeps the aligned placement).

    Args:
        table: A label table (or a box table: one row per box, the lung box of its donor image).
        what: How errors name the table.

    Returns:
        ``(N, 4)`` float32, NaN rows where unknown.

    Raises:
        ValueError: some of the four columns are missing (naming them), or a row (naming its position, index and
            values) has a cell that is not a number, some but not all cells empty, a value outside ``[0, 1]``, or
            ``x1 <= x0`` or ``y1 <= y0``; the message counts such rows.

    Shape:
        table: N rows -> (N, 4)

    Example:
        >>> rows = pd.DataFrame({"lung_x0": [0.1, None], "lung_y0": [0.1, None], "lung_x1": [0.9, None],
        ...                      "lung_y1": [0.8, None]})
        >>> lung_boxes_tensor(rows)[:, 2].tolist()
        [0.8999999761581421, nan]
    """
    missing = [c for c in LUNG_BOX_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{what} lacks the lung-box columns {missing} (it has {list(table.columns)}); give all four of "
            f"{list(LUNG_BOX_COLUMNS)} (normalised xyxy, empty where unknown), or estimate the lung boxes from the "
            "images with dadam.anatomy.lung_box"
        )
    raw = table[list(LUNG_BOX_COLUMNS)]
    values = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)  # (N, 4)
    empty = raw.isna().to_numpy()  # (N, 4) a missing cell, not junk
    known = ~empty.any(1)  # (N,)
    with np.errstate(invalid="ignore"):
        ok = (values >= 0).all(1) & (values <= 1).all(1)  # NaN fails
        ok &= (values[:, 0] < values[:, 2]) & (values[:, 1] < values[:, 3])
    bad = (known & ~ok) | (empty.any(1) & ~empty.all(1)) | (np.isnan(values) & ~empty).any(1)  # (N,)
    if bad.any():
        row = int(np.argmax(bad))
        cells = [raw.iat[row, k] for k in range(4)]
        cells = ", ".join(
            f"{c}={v.item() if isinstance(v, np.generic) else v!r}"
            for c, v in zip(LUNG_BOX_COLUMNS, cells, strict=True)
        )
        raise ValueError(
            f"{what} row {row} (index {table.index[row]!r}): lung box {cells} is not a box: the four cells must be "
            "numbers in [0, 1] with lung_x0 < lung_x1 and lung_y0 < lung_y1, or all empty when unknown "
            f"({int(bad.sum())} such rows)"
        )
    return torch.from_numpy(values.astype(np.float32))
