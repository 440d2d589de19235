"""File helpers shared by every writer of the project: atomic writes, content digests and the reading of the
project's own safetensors files.

One rule for every file the project writes (images of an export, banks, reports, checkpoints, logs): the bytes go
to a temporary file with a unique name in the target folder, are flushed to disk, and replace the target with
``os.replace``. A reader never sees half a file, a kill leaves either the old file or the new one (plus at worst a
``.<name>.*.tmp`` leftover that :func:`remove_stale_temporaries` clears), and two processes writing the same path
never share a temporary file. The file gets the permissions of a plain ``open(path, "w")``: ``0o666`` less the
umask.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
from collections.abc import Callable, Mapping
from typing import BinaryIO

import torch

__all__ = ["atomic_write", "read_safetensors", "remove_stale_temporaries", "tensor_digest"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], object]) -> pathlib.Path:
    """Write ``path`` atomically: a unique temporary file in the same folder, fsync, then ``os.replace``.

    Args:
        path: the target file (its folder must exist).
        data: the bytes, a str (written as UTF-8), or a function that writes into the binary file object it is
            given (e.g. ``lambda f: torch.save(obj, f)``).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> atomic_write(tmp_path / "report.md", "# report\\n")  # doctest: +SKIP
    """
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temporaries(folder: str | os.PathLike, name: str) -> int:
    """Remove the temporary files a killed :func:`atomic_write` of ``folder/name`` left behind; returns how many."""
    removed = 0
    for p in pathlib.Path(folder).glob(f".{name}.*.tmp"):
        p.unlink(missing_ok=True)
        removed += 1
    return removed


def read_safetensors(
    path: str | os.PathLike, *, format_name: str, what: str, kind: str
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and the tensors of one of the project's safetensors files, whose ``format`` entry is checked.

    Reads with ``safetensors.safe_open`` (never unpickles); the caller checks the version, digest and contents.

    Args:
        path: the file.
        format_name: the ``format`` metadata entry the file must carry.
        what: what the file should be, for the error on an unreadable file (``"patch bank file"``).
        kind: what the file should be, for the error on another format (``"a patch bank"``).

    Returns:
        ``(metadata, tensors)``: the metadata (empty when the file has none) and every tensor by name, on the CPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file, when safetensors cannot read it or its ``format`` is not ``format_name``.

    Example:
        >>> meta, tensors = read_safetensors("bank.safetensors", format_name="dadam-patch-bank",  # doctest: +SKIP
        ...                                  what="patch bank file", kind="a patch bank")
    """
    from safetensors import safe_open

    path = pathlib.Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: not a readable {what} ({type(e).__name__}: {e})") from e
    if meta.get("format") != format_name:
        raise ValueError(f"{path}: not {kind} (format {meta.get('format')!r}, expected {format_name!r})")
    return meta, tensors


def tensor_digest(tensors: Mapping[str, torch.Tensor], extra: str = "") -> str:
    """SHA-256 over ``extra`` and (name, dtype, shape, bytes) of each tensor, in name order.

    Two mappings have the same digest exactly when they hold the same names, dtypes, shapes and bytes (and the same
    ``extra``), on whatever device the tensors live.

    Example:
        >>> tensor_digest({"a": torch.zeros(2)}) == tensor_digest({"a": torch.zeros(2)})
        True
    """
    h = hashlib.sha256(extra.encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
