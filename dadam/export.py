"""Command line of the offline DADAM export (:func:`dadam.offline.export`): ``python -m dadam.export --help``.

Example::

    python -m dadam.export --labels train.csv --images /data/cxr-lt --bank bank.safetensors --out dadam_out \\
        --n 10000 --seed 0 --p 1.0

Rerunning the same command after a kill resumes where it stopped and ends with the same files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dadam._cli import add_augment_options, augment_options
from dadam.bank import PatchBank
from dadam.formats import LABEL_FORMATS, read_label_table
from dadam.offline import export

__all__ = ["main", "read_label_table"]


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
    add_augment_options(ap)
    ap.add_argument("--changed-only", action="store_true", help="write only the images DADAM changed")
    ap.add_argument("--chunk", type=int, default=65536, help="label rows per sampler call")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after this many new images")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the export CLI; returns the exit status (0 complete, 1 stopped early, 2 error)."""
    args = _parser().parse_args(argv)
    from dadam.stats import LabelStats

    try:
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
            seed=args.seed,
            **augment_options(args),
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
