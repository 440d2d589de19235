"""Offline DADAM for a whole label table: params for every row, then image by image to disk, resumable.

The paper's offline procedure, driven by the same :class:`~dadam.sampling.DadamParams` as the online op:

- :func:`make_augment` builds the seeded, CPU :class:`~dadam.DiseasedAreaAugment` the draws come from;
- :func:`draw_params` draws params for every row of a label matrix (labels only, in chunks);
- :func:`export` writes an augmented copy of a label table to disk: ``images/<name>.png``, ``labels.csv``,
  ``params.safetensors`` and ``manifest.json``, each image with :func:`dadam.offline.augment_image`; a killed run
  resumes where it stopped and ends with the same bytes;
- :func:`load_params` reads the params back (to replay an export with the online op).

Command line (:func:`main`)::

    python -m dadam.export --labels train.csv --images /data/cxr-lt --bank bank.safetensors --out dadam_out \\
        --n 10000 --seed 0 --p 1.0

Rerunning the same command after a kill resumes where it stopped and ends with the same files.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dadam.augment import DiseasedAreaAugment
from dadam.bank import PatchBank
from dadam.config import DadamConfig, add_dadam_arguments, dadam_config_from_args
from dadam.files import atomic_write, remove_stale_temporaries, tensor_digest
from dadam.formats import LABEL_FORMATS, labels_tensor, read_label_table
from dadam.offline import augment_image, placements
from dadam.sampling import MODE_BLEND, MODE_NONE, MODE_PASTE, DadamParams
from dadam.stats import LabelStats

__all__ = [
    "MANIFEST_VERSION",
    "ExportReport",
    "draw_params",
    "export",
    "load_params",
    "main",
    "make_augment",
    "read_label_table",
]

MANIFEST_VERSION = 2
MODE_NAMES = {MODE_NONE: "none", MODE_PASTE: "paste", MODE_BLEND: "blend"}


# ---------------------------------------------------------------------------------------------------------------------
# Params for a label table
# ---------------------------------------------------------------------------------------------------------------------


def make_augment(bank: PatchBank, stats: LabelStats, config: DadamConfig, *, seed: int) -> DiseasedAreaAugment:
    """The :class:`~dadam.DiseasedAreaAugment` the offline tools draw params with: on the CPU, seeded by ``seed``.

    Args:
        bank: the patch bank (moved to the CPU).
        stats: the label statistics the classes are drawn from (moved to the CPU).
        config: the DADAM options (validated here).
        seed: seed of the module's generator.

    Returns:
        the module (:meth:`~dadam.DiseasedAreaAugment.sample` draws the params; :func:`draw_params` uses it).

    Example:
        >>> aug = make_augment(bank, stats, DadamConfig(p=1.0), seed=0)  # doctest: +SKIP
    """
    return DiseasedAreaAugment.from_config(bank.to("cpu"), stats.to("cpu"), config, generator=int(seed))


def draw_params(
    labels: torch.Tensor, aug: DiseasedAreaAugment, *, chunk: int = 65536, progress: bool = False
) -> DadamParams:
    """Draw DADAM params for every row of a label matrix, ``chunk`` rows per :meth:`DiseasedAreaAugment.sample` call.

    No pixels are touched, so 100k rows take seconds on a CPU. The draws depend on ``chunk`` (the generator
    advances per call): keep it fixed to reproduce a run.

    Args:
        labels: ``(N, C)`` label matrix (NaN = unknown) on the module's device.
        aug: the module (its generator makes the draws reproducible; see :func:`make_augment`).
        chunk: rows per call (``>= 1``).
        progress: show a tqdm bar.

    Returns:
        :class:`~dadam.sampling.DadamParams` with ``N`` samples (``params.labels`` are the new labels).

    Shape:
        labels ``(N, C)`` -> params with ``N`` samples.

    Example:
        >>> params = draw_params(labels, make_augment(bank, stats, DadamConfig(), seed=0))  # doctest: +SKIP
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    from tqdm.auto import tqdm

    n = labels.shape[0]
    if n == 0:
        return aug.sample(labels)
    parts = [aug.sample(labels[s : s + chunk]) for s in tqdm(range(0, n, chunk), disable=not progress, desc="params")]
    return DadamParams.cat(parts)


def _save_params(params: DadamParams, path: pathlib.Path) -> str:
    """Write params as safetensors (atomically); returns their digest."""
    from safetensors.torch import save

    tensors = {name: t.detach().cpu().contiguous() for name, t in params.tensors().items()}
    atomic_write(path, save(tensors, metadata={"format": "dadam.DadamParams"}))
    return tensor_digest(tensors)


def load_params(path: str | os.PathLike) -> DadamParams:
    """Read the ``params.safetensors`` written by :func:`export` (to replay an export with the online op).

    Example:
        >>> params = load_params("out/params.safetensors")  # doctest: +SKIP
        >>> images2, labels2 = aug(images, labels, params=params[:8])  # doctest: +SKIP
    """
    from safetensors.torch import load_file

    return DadamParams.from_tensors(load_file(str(path)), source=str(path))


# ---------------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------------


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _fmt_label(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.9g}"


def _safe_stem(image_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", pathlib.PurePath(image_id).stem) or "image"


def _plain_config(config: DadamConfig | None) -> DadamConfig:
    """The validated config with plain JSON values (tail indices as ``int``), for the manifest."""
    if config is None:
        return DadamConfig()
    if not isinstance(config, DadamConfig):
        raise TypeError(f"config must be a DadamConfig or None, got {type(config).__name__}")
    config.validate()
    if config.tail is not None:
        config = config.replace(tail=tuple(t if isinstance(t, str) else int(t) for t in config.tail))
    return config


def _read_manifest(path: pathlib.Path) -> dict:
    """The manifest of an earlier call, its ``config`` as a :class:`DadamConfig`; version 1 (the DADAM options among
    ``options``) is read too."""
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete {path.parent} to start over") from e
    if manifest.get("format") != "dadam.export" or manifest.get("version") not in (1, MANIFEST_VERSION):
        raise ValueError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}, "
            f"expected 'dadam.export' version 1 or {MANIFEST_VERSION}"
        )
    options = dict(manifest.get("options", {}))
    if manifest["version"] == 1:
        names = {f.name for f in dataclasses.fields(DadamConfig)}
        manifest["config"] = {k: options.pop(k) for k in list(options) if k in names}
        manifest["version"] = MANIFEST_VERSION
    try:
        manifest["config"] = DadamConfig.from_dict(manifest.get("config", {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: unreadable DADAM config ({e}); delete {path.parent} to start over") from e
    manifest["options"] = options
    return manifest


@dataclass
class ExportReport:
    """What :func:`export` did.

    Attributes:
        out_dir: the output folder.
        total: images the export produces in all (``n``, or the changed ones with ``changed_only``).
        written: images written by this call.
        skipped: images already on disk from an earlier (interrupted) call, not rewritten.
        complete: all ``total`` images are on disk and ``labels.csv`` is final.
        modes: number of output images per mode (``none``, ``paste``, ``blend``) over all ``total`` images.
    """

    out_dir: pathlib.Path
    total: int
    written: int
    skipped: int
    complete: bool
    modes: dict[str, int]

    def summary(self) -> str:
        state = "complete" if self.complete else "incomplete (rerun with the same arguments to resume)"
        return (
            f"{self.out_dir}: {self.written} images written, {self.skipped} already there, {self.total} in all, "
            f"{state}; modes {self.modes}"
        )


def export(
    label_table: pd.DataFrame,
    image_root: str | os.PathLike,
    bank: PatchBank,
    stats: LabelStats | None,
    out_dir: str | os.PathLike,
    *,
    config: DadamConfig | None = None,
    n: int | None = None,
    seed: int = 0,
    changed_only: bool = False,
    chunk: int = 65536,
    stop_after: int | None = None,
    progress: bool = True,
) -> ExportReport:
    """Write a DADAM-augmented copy of a label table to disk, image by image (the paper's offline procedure).

    Output image ``i`` (``0 <= i < n``) comes from source row ``i % len(label_table)`` (``n > len`` repeats the table,
    each pass with new draws). Params for all ``n`` rows are drawn first from the labels alone
    (:func:`draw_params`, seeded by ``seed``) and saved. Each source image is then decoded and resized to the bank's
    canvas with :func:`dadam.data.decode_image` (JPEG by torchvision, other formats by PIL; grayscale, antialiased
    bilinear on uint8: the decode and resize of the online pipeline, :class:`dadam.data.LabelDataset`), augmented with :func:`augment_image` and written.

    Files in ``out_dir``:

    - ``images/<i:07d>_<source stem>.png``: 8-bit grayscale, canvas x canvas, written atomically;
    - ``labels.csv``: a label table: ``image_id, path`` (relative to ``out_dir``), the classes (empty = unknown),
      ``source``, ``source_image_id``, ``source_path``, ``mode`` (none / paste / blend), ``patches`` (JSON list of
      ``{"class", "patch", "box", "alpha", "donor"}``), in output order;
    - ``params.safetensors``: the :class:`~dadam.sampling.DadamParams` of all ``n`` rows (:func:`load_params`);
    - ``manifest.json``: format version, ``config`` (:meth:`DadamConfig.to_dict`), ``options`` (seed, ``n``, chunk,
      canvas, checksums of bank, stats and labels), ``total``, ``done``, ``complete``.

    Resuming: a call with the same arguments on an ``out_dir`` of an interrupted call keeps the images already
    written, rewrites ``labels.csv`` from the params, writes the rest, and ends with the same bytes as an
    uninterrupted run. A call with other arguments raises ``ValueError`` naming the options that differ.

    Args:
        label_table: label table (``image_id``, ``path`` relative to ``image_root`` or absolute, the class columns,
            optionally ``source``).
        image_root: folder the relative paths start from.
        bank: the patch bank (its canvas is the output size).
        stats: label statistics the classes are drawn from; None: computed from ``label_table``.
        out_dir: output folder (created).
        config: the DADAM options (default ``DadamConfig()``).
        n: number of output rows (default ``len(label_table)``).
        seed: seed of the draws.
        changed_only: write only the images DADAM changed (mode paste or blend).
        chunk: label rows per sampler call.
        stop_after: stop after writing this many new images (simulates a kill; the output stays resumable).
        progress: tqdm progress bars.

    Returns:
        an :class:`ExportReport`.

    Raises:
        ValueError: bad options, missing columns, an ``out_dir`` written with another config or other options (the
            message names each one that differs), or a non-empty ``out_dir`` without a manifest.
        TypeError: ``config`` is not a :class:`~dadam.config.DadamConfig`.
        FileNotFoundError / RuntimeError: a source image that is missing or cannot be decoded (naming the row).

    Example:
        >>> report = export(table, "/data/nih", bank, None, "out", config=DadamConfig(p=1.0), n=1000)  # doctest: +SKIP
        >>> print(report.summary())  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from dadam.data import decode_image

    if not isinstance(label_table, pd.DataFrame):
        raise TypeError(f"label_table must be a pandas DataFrame, got {type(label_table).__name__}")
    missing = [c for c in ("image_id", "path") if c not in label_table.columns]
    if missing:
        raise ValueError(f"label table lacks columns {missing}; it has {list(label_table.columns)}")
    if len(label_table) == 0:
        raise ValueError("label table is empty")
    n = len(label_table) if n is None else n
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    config = _plain_config(config)
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"stop_after must be >= 0 or None, got {stop_after}")
    class_names = tuple(bank.class_names)
    table = label_table.reset_index(drop=True)
    labels = labels_tensor(table, class_names=class_names)  # (N, C)
    stats = LabelStats.from_labels(labels, class_names=class_names) if stats is None else stats
    image_ids = table["image_id"].astype(str).tolist()
    paths = table["path"].astype(str).tolist()
    sources = table["source"].astype(str).tolist() if "source" in table.columns else [""] * len(table)
    root = pathlib.Path(image_root)

    options = dict(
        seed=int(seed),
        n=n,
        changed_only=bool(changed_only),
        chunk=int(chunk),
        canvas=int(bank.canvas),
        bank_sha256=tensor_digest(bank.tensors()),
        stats_sha256=tensor_digest({"freq": stats.freq.float(), "corr": stats.corr.float()}),
        labels_sha256=tensor_digest(
            {"labels": labels}, "\n".join(f"{a}\t{b}" for a, b in zip(image_ids, paths, strict=True))
        ),
    )

    out = pathlib.Path(out_dir)
    img_dir = out / "images"
    manifest_path, params_path, csv_path = out / "manifest.json", out / "params.safetensors", out / "labels.csv"
    out.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(exist_ok=True)
    if manifest_path.exists():
        manifest = _read_manifest(manifest_path)
        changed = {
            k: (manifest["options"].get(k), options.get(k))
            for k in set(manifest["options"]) | set(options)
            if manifest["options"].get(k) != options.get(k)
        }
        changed.update(manifest["config"].changed(config))
        if changed:
            detail = ", ".join(f"{k}: manifest {a!r}, this call {b!r}" for k, (a, b) in sorted(changed.items()))
            raise ValueError(
                f"{out} was written with other arguments ({detail}); rerun with the manifest's arguments to resume, "
                "or use another out_dir"
            )
        manifest["config"] = config.to_dict()
        from safetensors.torch import load_file

        stored = load_file(str(params_path))  # the digest covers the tensors the file holds (0.1.0: no template)
        if tensor_digest(stored) != manifest.get("params_sha256"):
            raise ValueError(f"{params_path}: checksum differs from {manifest_path}: corrupt file; delete {out}")
        params = DadamParams.from_tensors(stored, source=str(params_path))
    else:
        leftovers = [q.name for q in img_dir.iterdir() if not q.name.endswith(".tmp")]
        if leftovers or csv_path.exists():
            raise ValueError(
                f"{out} holds files ({leftovers[:3] or ['labels.csv']}...) but no manifest.json: not an export "
                "folder or a damaged one; use an empty out_dir"
            )
        aug = make_augment(bank, stats, config, seed=seed)
        rows = torch.arange(n) % len(table)  # (n,) source row of each output
        params = draw_params(labels[rows], aug, chunk=chunk, progress=progress)
        manifest = dict(
            format="dadam.export",
            version=MANIFEST_VERSION,
            config=config.to_dict(),
            options=options,
            params_file=params_path.name,
            params_sha256=_save_params(params, params_path),
        )

    # Output jobs, file names and CSV rows are a pure function of the params: recomputed on every (re)start.
    mode = params.mode.tolist()
    jobs = [i for i in range(n) if not changed_only or mode[i] != MODE_NONE]
    stems = [_safe_stem(s) for s in image_ids]
    names = {i: f"{i:07d}_{stems[i % len(table)]}.png" for i in jobs}
    modes = {name: 0 for name in MODE_NAMES.values()}
    for i in jobs:
        modes[MODE_NAMES[mode[i]]] += 1
    new_labels = params.labels.tolist()
    header = ["image_id", "path", *class_names, "source", "source_image_id", "source_path", "mode", "patches"]

    def csv_row(i: int) -> list[str]:
        r = i % len(table)
        pls = placements(bank, params, i)
        patches = [
            {
                "class": class_names[pl.cls],
                "patch": pl.patch_id,
                "box": [pl.x0, pl.y0, pl.x0 + pl.patch.shape[1], pl.y0 + pl.patch.shape[0]],
                "alpha": round(pl.alpha, 6),
                "donor": bank.donors[pl.patch_id],
            }
            for pl in pls
        ]
        return [
            names[i].removesuffix(".png"),
            f"images/{names[i]}",
            *(_fmt_label(v) for v in new_labels[i]),
            sources[r],
            image_ids[r],
            paths[r],
            MODE_NAMES[mode[i]],
            json.dumps(patches, separators=(",", ":")),
        ]

    def csv_text(indices: Sequence[int]) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(csv_row(i) for i in indices)
        return buf.getvalue()

    remove_stale_temporaries(out, "*")  # temporary files of a killed call (atomic_write's names)
    remove_stale_temporaries(img_dir, "*")
    done = [i for i in jobs if (img_dir / names[i]).is_file()]
    done_set = set(done)
    todo = [i for i in jobs if i not in done_set]
    # The manifest first: a kill before the CSV exists leaves a folder the next call resumes (a CSV without a
    # manifest is refused as a foreign folder).
    manifest.update(total=len(jobs), done=len(done), complete=False)
    atomic_write(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    atomic_write(csv_path, csv_text(done))  # drops a torn last row of a killed call

    written = 0
    limit = len(todo) if stop_after is None else min(stop_after, len(todo))
    with open(csv_path, "a", newline="") as fcsv:
        writer = csv.writer(fcsv, lineterminator="\n")
        for i in tqdm(todo[:limit], disable=not progress, desc="dadam export", unit="img"):
            r = i % len(table)
            src = paths[r] if os.path.isabs(paths[r]) else str(root / paths[r])
            if not os.path.exists(src):
                raise FileNotFoundError(f"row {r} (image_id {image_ids[r]!r}): image file {src} not found")
            try:
                image = decode_image(src, canvas=bank.canvas)[0].numpy()  # (S, S) uint8
            except Exception as e:
                raise RuntimeError(f"row {r} (image_id {image_ids[r]!r}): cannot decode {src}: {e}") from e
            result = augment_image(image, placements(bank, params, i, feather=config.feather, match=config.match))
            atomic_write(img_dir / names[i], _png_bytes(result))
            writer.writerow(csv_row(i))
            fcsv.flush()
            written += 1
    complete = len(done) + written == len(jobs)
    if complete:
        atomic_write(csv_path, csv_text(jobs))  # output order, whatever order a resumed run wrote in
    manifest.update(done=len(done) + written, complete=complete)
    atomic_write(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return ExportReport(out, len(jobs), written, len(done), complete, modes)


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m dadam.export",
        description="Offline DADAM: write an augmented copy of a label table (PNG images, labels.csv, "
        "params.safetensors, manifest.json). Resumable: rerun the same command after a kill.",
    )
    ap.add_argument("--labels", required=True, help="label table CSV")
    ap.add_argument("--labels-format", default="table", choices=LABEL_FORMATS, help="format of --labels")
    ap.add_argument("--images", required=True, help="root folder the label table's paths are relative to")
    ap.add_argument("--bank", required=True, help="patch bank file (PatchBank.save)")
    ap.add_argument("--stats-labels", default=None, help="label table for the class statistics (default: --labels)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--n", type=int, default=None, help="number of output images (default: rows of --labels)")
    ap.add_argument("--seed", type=int, default=0)
    add_dadam_arguments(ap.add_argument_group("DADAM options"))
    ap.add_argument("--changed-only", action="store_true", help="write only the images DADAM changed")
    ap.add_argument("--chunk", type=int, default=65536, help="label rows per sampler call")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after this many new images")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the export CLI; returns the exit status (0 complete, 1 stopped early, 2 error)."""
    args = _parser().parse_args(argv)
    try:
        config = dadam_config_from_args(args)  # bad options fail before any work
        table = read_label_table(args.labels, fmt=args.labels_format)
        stats = None
        if args.stats_labels:
            stats = LabelStats.from_labels(read_label_table(args.stats_labels, fmt=args.labels_format))
        bank = PatchBank.load(args.bank)
        report = export(
            table,
            args.images,
            bank,
            stats,
            args.out,
            n=args.n,
            config=config,
            seed=args.seed,
            changed_only=args.changed_only,
            chunk=args.chunk,
            stop_after=args.stop_after,
            progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.complete else 1


if __name__ == "__main__":
    sys.exit(main())
