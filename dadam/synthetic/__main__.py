"""Command line of the phantom generator: ``python -m dadam.synthetic --layout nih --n 100 --out DIR``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dadam.synthetic.drawing import DRAW_BYTES_PER_PIXEL, MAX_SIZE, MIN_SIZE
from dadam.synthetic.label_sampling import MAX_MIN_RATE
from dadam.synthetic.layouts import LAYOUTS, generate

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dadam.synthetic",
        description="Write phantom chest/limb radiographs with boxes in a real dataset's on-disk layout.",
    )
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="dataset layout to write")
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument(
        "--size",
        type=int,
        default=512,
        help=f"image side in pixels, {MIN_SIZE} to {MAX_SIZE} (default 512); drawing one image takes up to about "
        f"{DRAW_BYTES_PER_PIXEL} bytes per pixel in each worker ({DRAW_BYTES_PER_PIXEL * MAX_SIZE**2 / 1e9:.0f} GB at "
        f"{MAX_SIZE}), so the limit keeps two workers well inside 24 GB of memory",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument(
        "--min-rate",
        type=float,
        default=0.0,
        help="chest layouts: draw each finding in at least about this fraction of the images, up to "
        f"{MAX_MIN_RATE} (default 0: the CXR-LT long tail); e.g. 0.03 for an evaluation set with enough rare positives",
    )
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--workers", type=int, default=0, help="processes (0 = min(2, cpu count))")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of an earlier phantom dataset in --out (without it, a file that exists is an error)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, write the dataset, print where; returns 0 (argparse exits with 2 on a bad argument)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        root = generate(
            args.layout,
            args.out,
            n=args.n,
            size=args.size,
            seed=args.seed,
            progress=not args.no_progress,
            workers=args.workers,
            overwrite=args.overwrite,
            min_rate=args.min_rate,
        )
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))
    print(f"wrote {args.n} {args.layout} phantom images to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
