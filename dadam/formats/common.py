"""What every reader shares: file checks, text encodings, CSV headers, cell parsing and the label mapping step."""

from __future__ import annotations

import codecs
import contextlib
import csv
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from dadam.formats.report import ReadReport
from dadam.labels import CXR_LT_CLASSES, map_labels

__all__ = [
    "MISSING_TEXT",
    "check_dir",
    "check_file",
    "check_unique_columns",
    "decoding_errors",
    "label_status",
    "positive_counts",
    "read_csv_checked",
    "read_header",
    "require_columns",
    "text_codec",
    "to_float",
]

MISSING_TEXT = ("", "nan", "na", "n/a", "null", "none")  # spellings of a missing value, not junk


def check_file(path: str | os.PathLike, what: str) -> pathlib.Path:
    """``path`` as a Path; ``FileNotFoundError`` naming ``what`` and the path when it is not a file."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def check_dir(path: str | os.PathLike, what: str) -> pathlib.Path:
    """``path`` as a Path; ``FileNotFoundError`` naming ``what`` and the path when it is not a folder."""
    p = pathlib.Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def text_codec(encoding: str) -> str:
    """The codec a reader opens its text files with: ``encoding`` once checked; UTF-8 is read as ``utf-8-sig`` so that
    a leading byte-order mark (as Excel writes it) is dropped.

    Raises:
        TypeError: if ``encoding`` is not a str.
        ValueError: if Python knows no codec of that name.
    """
    if not isinstance(encoding, str):
        raise TypeError(f"encoding must be a str such as 'utf-8' or 'cp1252', got {type(encoding).__name__}")
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(
            f"encoding={encoding!r} is not a known text encoding; use e.g. 'utf-8', 'cp1252' or 'latin-1'"
        ) from None
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else encoding


def _other_encoding(data: bytes, codec: str) -> str:
    """An encoding, other than ``codec``, that decodes ``data``: UTF-16 when the file starts with its byte-order mark,
    else UTF-8, then Windows-1252 (what Excel writes on Windows), else Latin-1 (which decodes any bytes)."""
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    used = codecs.lookup(codec).name
    for candidate in (*(("utf-16",) if utf16 else ()), "utf-8", "cp1252"):
        if codecs.lookup(candidate).name == used:
            continue
        try:
            data.decode(candidate)
        except UnicodeDecodeError:
            continue
        return candidate
    return "latin-1"


@contextlib.contextmanager
def decoding_errors(path: pathlib.Path, encoding: str, *, keyword: bool = True) -> Iterator[None]:
    """Turn a ``UnicodeError`` raised while decoding ``path`` into a ``ValueError`` that names the file, the byte
    offset and line of the first byte that is not valid ``encoding``, and the fix: re-save the file as UTF-8 or, when
    the reader takes one (``keyword``), pass the ``encoding=`` the file was written in.

    Example:
        >>> with decoding_errors(path, "utf-8"):  # doctest: +SKIP
        ...     table = pd.read_csv(path, encoding=text_codec("utf-8"))
    """
    try:
        yield
    except UnicodeError as error:  # UnicodeDecodeError, or e.g. UTF-16's "stream does not start with BOM"
        data = path.read_bytes()
        codec = text_codec(encoding)
        try:
            data.decode(codec)
            where = getattr(error, "reason", str(error))  # no position of the whole file to give
        except UnicodeDecodeError as whole:
            line = data.count(b"\n", 0, whole.start) + 1
            where = f"byte {whole.start} (line {line}) is 0x{data[whole.start]:02x}: {whole.reason}"
        fix = "re-save it as UTF-8"
        if keyword:
            fix += f", or pass encoding={_other_encoding(data, codec)!r} (or the encoding it was saved in)"
        raise ValueError(f"{path}: not a {encoding} text file: {where}; {fix}") from error


def read_header(p: pathlib.Path, codec: str) -> list[str]:
    """The first CSV line of ``p``, each field stripped (``[]`` for an empty file)."""
    with open(p, newline="", encoding=codec) as f:
        return [h.strip() for h in next(csv.reader(f), [])]


def check_unique_columns(p: pathlib.Path, columns: Sequence[str], names: Sequence[str], what: str) -> None:
    """``ValueError`` naming the file, the column and its positions (1-based) when one of ``names`` appears more than
    once in ``columns``: pandas would rename the second copy (``Edema.1``) and the reader would ignore it."""
    repeated = [(c, [i + 1 for i, h in enumerate(columns) if h == c]) for c in dict.fromkeys(names)]
    repeated = [(c, at) for c, at in repeated if len(at) > 1]
    if repeated:
        where = "; ".join(f"{c!r} at columns {', '.join(map(str, at))}" for c, at in repeated)
        raise ValueError(
            f"{p}: the header repeats a column: {where}; a {what} file has each column once: keep one copy of each"
        )


def require_columns(p: pathlib.Path, columns: list[str], expected: Sequence[str], what: str) -> None:
    """``ValueError`` naming the file, the header and the missing columns when ``columns`` lacks one of ``expected``,
    or naming the column and its positions when one of ``expected`` appears twice."""
    missing = [c for c in expected if c not in columns]
    if missing:
        raise ValueError(
            f"{p}: not a {what} file: header {columns!r} lacks columns {missing}; expected columns {list(expected)}"
        )
    check_unique_columns(p, columns, expected, what)


def read_csv_checked(
    p: pathlib.Path,
    expected: Sequence[str],
    what: str,
    *,
    encoding: str,
    dtype: type | Mapping[str, type] = str,
    usecols: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read a headed CSV after checking its header (:func:`require_columns`), naming the file on a decoding error.

    Cells are read as strings (or ``dtype``), empty cells stay ``""``, and column names are stripped of spaces.
    """
    codec = text_codec(encoding)
    with decoding_errors(p, encoding):
        require_columns(p, read_header(p, codec), expected, what)
        raw = pd.read_csv(
            p, dtype=dtype, keep_default_na=False, encoding=codec, usecols=None if usecols is None else list(usecols)
        )
    raw.columns = [c.strip() for c in raw.columns]
    return raw


def to_float(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Numbers of a column of strings/numbers, and a mask of non-empty values that are not numbers.

    Shape:
        values: (N,); returns two (N,) arrays: float64 (NaN where empty or not a number) and bool.
    """
    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(num)
    if bad.any():  # only the cells that did not parse: missing-value spellings or junk
        text = values[bad].astype("string").str.strip().str.lower().fillna("")
        bad[bad] = ~text.isin(MISSING_TEXT).to_numpy()
    return num, bad


def label_status(
    source_labels: list[str], table: Mapping[str, str | None], report: ReadReport, source: str
) -> tuple[list[str | None], list[str], np.ndarray]:
    """Map source label names to CXR-LT classes, counting unknown and excluded names in ``report``.

    Returns:
        The canonical class of each name (None when unknown or excluded), the stripped names, and a status array
        (``"ok"``, ``"unknown"`` or ``"excluded"``), one entry per name.
    """
    canonical, mreport = map_labels(source_labels, table, source=source)
    for k, v in mreport.unknown.items():
        report.unknown_labels[k] = report.unknown_labels.get(k, 0) + v
    for k, v in mreport.excluded.items():
        report.excluded_labels[k] = report.excluded_labels.get(k, 0) + v
    stripped = [str(s).strip() for s in source_labels]
    status = np.array(
        [
            "unknown" if s not in table else ("excluded" if c is None else "ok")
            for s, c in zip(stripped, canonical, strict=True)
        ],
        dtype=object,
    )
    return canonical, stripped, status


def positive_counts(df: pd.DataFrame) -> dict[str, int]:
    """Class -> number of 1.0 cells, for the CXR-LT class columns of a label table that have any."""
    return {c: int((df[c] == 1.0).sum()) for c in CXR_LT_CLASSES if (df[c] == 1.0).any()}
