"""Label statistics DADAM draws classes from: class frequencies, label correlation, tail classes and label rows.

All functions take a multi-hot label matrix ``(N, num_classes)`` with values 1.0 (positive), 0.0 (negative) and
NaN (unknown). Unknown entries are handled *pairwise-complete*: a class frequency is computed over the rows where that
class is known, and the correlation of two classes over the rows where both are known (as ``pandas.DataFrame.corr``).
A class without variance over those rows (always 0, or always 1) correlates 0 with every class, including itself.

:class:`LabelStats` also keeps the label rows themselves, compactly, for the co-occurrence rule of
:mod:`dadam.sampling` (a normal image gets the classes of a real row that shows its tail class): each row's positive
classes as one 32-bit mask, the rows sorted by class (a flat row index with a start per class, like the bank's class
ranges) and the co-occurrence counts. :meth:`LabelStats.save` / :meth:`LabelStats.load` keep them in one safetensors
file, so a large label table is read once.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from dadam.files import atomic_write, read_safetensors, tensor_digest
from dadam.labels import CXR_LT_CLASSES, NO_FINDING

__all__ = ["MAX_TEMPLATE_CLASSES", "LabelStats", "class_frequencies", "label_correlation", "tail_classes"]

#: Most classes whose label rows :class:`LabelStats` keeps (a row's positive classes are one int32 bit mask).
MAX_TEMPLATE_CLASSES = 32
FORMAT_NAME = "dadam.LabelStats"
FORMAT_VERSION = 1
# The tensors of the label rows: all of them or none.
_ROW_TABLES = ("row_classes", "template_rows", "template_start", "cooccurrence")


def _as_label_tensor(labels: torch.Tensor | np.ndarray, name: str = "labels") -> torch.Tensor:
    x = torch.as_tensor(labels)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (N, num_classes) matrix, got shape {tuple(x.shape)}")
    return x.to(torch.float64)


def class_frequencies(labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Fraction of positive rows per class, over the rows where the class is known (not NaN).

    Args:
        labels: multi-hot matrix, 1.0 positive, 0.0 negative, NaN unknown.

    Returns:
        ``(num_classes,)`` float64 frequencies in ``[0, 1]``; 0 for a class that is never known.

    Shape:
        labels ``(N, C)`` -> ``(C,)``.

    Example:
        >>> class_frequencies(torch.tensor([[1.0, 0.0], [0.0, float("nan")]]))
        tensor([0.5000, 0.0000], dtype=torch.float64)
    """
    x = _as_label_tensor(labels)
    known = ~torch.isnan(x)
    pos = torch.where(known, x, torch.zeros_like(x)).sum(0)  # (C,)
    n = known.sum(0).to(torch.float64)  # (C,)
    return torch.where(n > 0, pos / n.clamp_min(1), torch.zeros_like(pos))


def label_correlation(labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Pearson correlation of the label columns, pairwise-complete over NaN, 0 for classes without variance.

    Equals ``numpy.corrcoef(labels, rowvar=False)`` when there is no NaN and every class varies, and
    ``pandas.DataFrame(labels).corr()`` with NaN where pandas gives NaN replaced by 0.

    Args:
        labels: multi-hot matrix, 1.0 positive, 0.0 negative, NaN unknown.

    Returns:
        ``(C, C)`` float64 symmetric matrix in ``[-1, 1]``; entry ``(i, j)`` is 0 when class i or j has no
        variance over the rows where both are known (fewer than 2 such rows included).

    Shape:
        labels ``(N, C)`` -> ``(C, C)``.

    Example:
        >>> label_correlation(torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]))[0, 1]
        tensor(0.5000, dtype=torch.float64)
    """
    x = _as_label_tensor(labels)
    known = (~torch.isnan(x)).to(torch.float64)  # (N, C)
    v = torch.nan_to_num(x, nan=0.0)  # (N, C), 0 where unknown
    # Sums over the rows where both i and j are known: n[i, j], sum_x[i, j] = sum x_i, sum_xx[i, j] = sum x_i^2.
    n = known.T @ known  # (C, C)
    sum_x = v.T @ known  # (C, C): sums of class i over rows where j is known too
    sum_xx = (v * v).T @ known
    sum_xy = v.T @ v
    nn_ = n.clamp_min(1)
    cov = sum_xy - sum_x * sum_x.T / nn_
    var_i = sum_xx - sum_x * sum_x / nn_
    var_j = var_i.T
    denom = torch.sqrt(var_i.clamp_min(0) * var_j.clamp_min(0))
    # Relative tolerance: a variance that is rounding noise counts as no variance.
    eps = 1e-12 * n.clamp_min(1)
    ok = (n >= 2) & (var_i > eps) & (var_j > eps)
    corr = torch.where(ok, cov / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(cov))
    return corr.clamp(-1.0, 1.0)


def tail_classes(
    freq: torch.Tensor,
    covered: torch.Tensor | None = None,
    *,
    quantile: float = 0.5,
    class_names: Sequence[str] = CXR_LT_CLASSES,
) -> torch.Tensor:
    """The tail classes: classes whose frequency is at or below a quantile of the class frequencies.

    The threshold is ``torch.quantile(freq[candidates], quantile)`` (linear interpolation) over the candidate
    classes: every class except "No Finding" (which is never a tail class) and, when given, only the classes
    ``covered`` (those the patch bank has patches of). The tail set is the candidates with ``freq <= threshold``.

    Args:
        freq: ``(C,)`` class frequencies (see :func:`class_frequencies`).
        covered: optional ``(C,)`` bool mask of the classes the bank covers.
        quantile: in ``[0, 1]``; 0.5 makes the rarer half of the candidates the tail.
        class_names: the names of the C classes (to find "No Finding").

    Returns:
        ``(C,)`` bool mask of the tail classes (use ``mask.nonzero()`` for indices outside a hot path).

    Shape:
        freq ``(C,)``, covered ``(C,)`` -> ``(C,)`` bool.

    Example:
        >>> f = torch.full((26,), 0.1); f[7] = 0.001
        >>> covered = torch.zeros(26, dtype=torch.bool); covered[[2, 7]] = True
        >>> tail_classes(f, covered, quantile=0.0).nonzero().flatten().tolist()
        [7]
    """
    freq = torch.as_tensor(freq, dtype=torch.float64)
    if freq.ndim != 1 or freq.numel() != len(class_names):
        raise ValueError(f"freq must have shape ({len(class_names)},), got {tuple(freq.shape)}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    cand = torch.ones_like(freq, dtype=torch.bool)
    if NO_FINDING in class_names:
        cand[list(class_names).index(NO_FINDING)] = False
    if covered is not None:
        covered = torch.as_tensor(covered, dtype=torch.bool, device=freq.device)
        if covered.shape != freq.shape:
            raise ValueError(f"covered must have shape {tuple(freq.shape)}, got {tuple(covered.shape)}")
        cand &= covered
    if not bool(cand.any()):
        return cand
    threshold = torch.quantile(freq[cand], quantile)
    return cand & (freq <= threshold)


def _row_tables(positive: torch.Tensor) -> dict[str, torch.Tensor]:
    """The label-row tables of :class:`LabelStats` from a ``(N, C)`` bool matrix of positives (``C <= 32``)."""
    n, c = positive.shape
    bits = (positive.to(torch.int64) << torch.arange(c)).sum(1)  # (N,) in [0, 2^32)
    row_classes = torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32)  # (N,) the same 32 bits, signed
    cls, rows = positive.T.nonzero(as_tuple=True)  # (P,), (P,): sorted by class, then by row
    start = torch.zeros(c + 1, dtype=torch.long)
    start[1:] = torch.cumsum(positive.sum(0), 0)
    pos = positive.to(torch.float64)
    return {
        "row_classes": row_classes,
        "template_rows": rows.to(torch.int32),
        "template_start": start,
        "cooccurrence": (pos.T @ pos).round().long(),  # (C, C), exact below 2^53 rows
    }


@dataclass
class LabelStats:
    """Statistics of a training label table that :class:`dadam.DiseasedAreaAugment` draws classes from.

    The label-row tables (``row_classes``, ``template_rows``, ``template_start``, ``cooccurrence``) are given all
    together or not at all; :meth:`from_labels` builds them for up to :data:`MAX_TEMPLATE_CLASSES` classes. The
    co-occurrence rule (``companions="cooccurrence"``) needs them; the correlation rule needs ``freq`` and ``corr``
    only, so ``LabelStats(freq, corr)`` serves it. A value > 0.5 is a positive (NaN is not).

    Attributes:
        freq: ``(C,)`` float32 class frequencies (:func:`class_frequencies`).
        corr: ``(C, C)`` float32 Pearson correlation of the label columns (:func:`label_correlation`).
        class_names: the C class names, in column order.
        num_samples: number of label rows the statistics come from.
        row_classes: ``(N,)`` int32, the positive classes of each row as a bit mask (bit c: class c), or None.
        template_rows: ``(P,)`` int32 row indices sorted by class: a row appears once per positive class, or None.
        template_start: ``(C + 1,)`` long: the rows showing class c are
            ``template_rows[template_start[c]:template_start[c + 1]]``, or None.
        cooccurrence: ``(C, C)`` long, rows positive for both classes (the diagonal: positives per class), or None.

    Example:
        >>> stats = LabelStats.from_labels(torch.eye(26))
        >>> stats.template_count[:3].tolist(), int(stats.row_classes[2])
        ([1, 1, 1], 4)
    """

    freq: torch.Tensor
    corr: torch.Tensor
    class_names: tuple[str, ...] = field(default=CXR_LT_CLASSES)
    num_samples: int = 0
    row_classes: torch.Tensor | None = None
    template_rows: torch.Tensor | None = None
    template_start: torch.Tensor | None = None
    cooccurrence: torch.Tensor | None = None

    def __post_init__(self) -> None:
        c = len(self.class_names)
        if tuple(self.freq.shape) != (c,):
            raise ValueError(f"freq must have shape ({c},), got {tuple(self.freq.shape)}")
        if tuple(self.corr.shape) != (c, c):
            raise ValueError(f"corr must have shape ({c}, {c}), got {tuple(self.corr.shape)}")
        given = [name for name in _ROW_TABLES if getattr(self, name) is not None]
        if given and len(given) != len(_ROW_TABLES):
            missing = [name for name in _ROW_TABLES if name not in given]
            raise ValueError(f"the label-row tables go together: {given} given, {missing} missing")
        if given:
            n = self.num_samples
            expect = {
                "row_classes": ((n,), torch.int32),
                "template_rows": ((self.template_rows.shape[0],), torch.int32),
                "template_start": ((c + 1,), torch.long),
                "cooccurrence": ((c, c), torch.long),
            }
            for name, (shape, dtype) in expect.items():
                t = getattr(self, name)
                if tuple(t.shape) != shape or t.dtype != dtype:
                    raise ValueError(f"{name} must be {dtype} of shape {shape}, got {t.dtype} {tuple(t.shape)}")

    @property
    def has_rows(self) -> bool:
        """Whether the label-row tables are present (the co-occurrence rule needs them)."""
        return self.row_classes is not None

    @property
    def template_count(self) -> torch.Tensor | None:
        """``(C,)`` long: number of rows showing each class (None without the label-row tables)."""
        return None if self.template_start is None else self.template_start.diff()

    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors by name: ``freq``, ``corr`` and, when present, the label-row tables."""
        names = ("freq", "corr", *(_ROW_TABLES if self.has_rows else ()))
        return {name: getattr(self, name) for name in names}

    def memory_bytes(self) -> int:
        """Bytes held by the tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    @classmethod
    def from_labels(
        cls,
        labels,
        *,
        class_names: Sequence[str] = CXR_LT_CLASSES,
    ) -> LabelStats:
        """Statistics of a label table, with its label-row tables (for up to :data:`MAX_TEMPLATE_CLASSES` classes).

        Args:
            labels: a pandas label table with one float column per class (named as ``class_names``; other
                columns are ignored), or a numpy array / tensor ``(N, C)`` in ``class_names`` order.
                1.0 positive, 0.0 negative, NaN unknown.
            class_names: class names in column order (default: the 26 CXR-LT classes).

        Returns:
            the :class:`LabelStats`.

        Raises:
            ValueError: missing class columns, a wrong number of columns, or no row at all.

        Example:
            >>> stats = LabelStats.from_labels(torch.eye(26))
            >>> stats.num_samples, tuple(stats.corr.shape)
            (26, (26, 26))
        """
        class_names = tuple(class_names)
        if hasattr(labels, "columns"):  # pandas DataFrame
            missing = [c for c in class_names if c not in labels.columns]
            if missing:
                raise ValueError(f"label table is missing class columns {missing}; it has {list(labels.columns)}")
            arr = labels[list(class_names)].to_numpy(dtype=np.float64, na_value=np.nan)
            x = torch.from_numpy(np.array(arr, dtype=np.float64, copy=True))
        else:
            x = _as_label_tensor(labels)
            if x.shape[1] != len(class_names):
                raise ValueError(f"labels must have {len(class_names)} columns, got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(
                f"the label table has no rows (shape {tuple(x.shape)}): LabelStats needs the training labels"
            )
        rows = _row_tables(x > 0.5) if len(class_names) <= MAX_TEMPLATE_CLASSES else {}
        return cls(
            freq=class_frequencies(x).to(torch.float32),
            corr=label_correlation(x).to(torch.float32),
            class_names=class_names,
            num_samples=int(x.shape[0]),
            **rows,
        )

    def to(self, device: torch.device | str) -> LabelStats:
        """A copy with the tensors on ``device``."""
        moved = {name: t.to(device) for name, t in self.tensors().items()}
        return LabelStats(class_names=self.class_names, num_samples=self.num_samples, **moved)

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write the statistics to one safetensors file (atomically), with a format version and a SHA-256.

        Args:
            path: destination file (conventionally ``*.safetensors``); its folder is created.

        Returns:
            the path written.

        Example:
            >>> LabelStats.from_labels(table).save("stats.safetensors")  # doctest: +SKIP
        """
        from safetensors.torch import save

        tensors = {name: t.detach().cpu().contiguous() for name, t in self.tensors().items()}
        meta = {
            "format": FORMAT_NAME,
            "version": str(FORMAT_VERSION),
            "class_names": json.dumps(list(self.class_names)),
            "num_samples": str(int(self.num_samples)),
        }
        meta["sha256"] = _digest(tensors, meta)
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: torch.device | str = "cpu") -> LabelStats:
        """Read a file written by :meth:`save`, verifying its format, its SHA-256 and the label-row layout.

        Raises:
            FileNotFoundError: no such file.
            ValueError: naming the file, if it is not a statistics file, has another format version, its contents
                do not match the stored SHA-256 (corrupt or tampered), or its tables are inconsistent.

        Example:
            >>> stats = LabelStats.load("stats.safetensors")  # doctest: +SKIP
        """
        path = pathlib.Path(path)
        meta, tensors = read_safetensors(
            path, format_name=FORMAT_NAME, what="label statistics file", kind="a LabelStats file"
        )
        if meta.get("version") != str(FORMAT_VERSION):
            raise ValueError(f"{path}: LabelStats format version {meta.get('version')!r}, expected {FORMAT_VERSION}")
        digest = _digest(tensors, meta)
        if digest != meta.get("sha256"):
            raise ValueError(
                f"{path}: SHA-256 of the contents is {digest}, the file says {meta.get('sha256')}: corrupt or "
                "tampered file; rebuild it with LabelStats.from_labels(...).save(...)"
            )
        unknown = sorted(set(tensors) - {"freq", "corr", *_ROW_TABLES})
        if unknown or not {"freq", "corr"} <= set(tensors):
            raise ValueError(f"{path}: unexpected tensors {sorted(tensors)} in a LabelStats file")
        try:
            stats = cls(
                class_names=tuple(json.loads(meta["class_names"])), num_samples=int(meta["num_samples"]), **tensors
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: inconsistent LabelStats file: {e}") from e
        bad = _row_table_errors(stats)
        if bad:  # a checksum proves the file is as written, not that its writer laid it out right
            raise ValueError(f"{path}: inconsistent label-row tables: {'; '.join(bad)}")
        return stats if torch.device(device).type == "cpu" else stats.to(device)


def _digest(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """The SHA-256 a statistics file stores: its tensors and its metadata entries (all but ``sha256``)."""
    return tensor_digest(tensors, extra=json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True))


def _row_table_errors(stats: LabelStats) -> list[str]:
    """What is wrong with the label-row tables (empty list: nothing): the sampler gathers from them unchecked."""
    if not stats.has_rows:
        return []
    c, n = len(stats.class_names), stats.num_samples
    start, rows = stats.template_start, stats.template_rows.long()
    errors = []
    if c > MAX_TEMPLATE_CLASSES:
        errors.append(f"{c} classes, at most {MAX_TEMPLATE_CLASSES} have label-row tables")
    if int(start[0]) != 0 or bool((start.diff() < 0).any()) or int(start[-1]) != rows.numel():
        errors.append(f"template_start must rise from 0 to {rows.numel()}, got {start.tolist()}")
    elif bool(((rows < 0) | (rows >= n)).any()):
        errors.append(f"template_rows outside [0, {n})")
    else:
        cls = torch.repeat_interleave(torch.arange(c), start.diff())  # (P,) class of each entry
        if bool(((stats.row_classes.take(rows).long() >> cls) & 1).eq(0).any()):
            errors.append("a template row does not show the class it is listed under")
    return errors
