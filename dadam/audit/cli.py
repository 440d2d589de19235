"""Command line of the audit: ``python -m dadam.audit --help``.

Examples::

    python -m dadam.audit --labels phantom --phantom-rows 200000 --phantom-bank --out audit/ --prefix phantom_
    python -m dadam.audit --labels phantom --phantom-rows 200000 --phantom-bank --phantom-classes nih \\
        --p 0.5 --max-patches 3 --compare-companions --out docs/images --prefix companions_
    python -m dadam.audit --labels Data_Entry_2017_v2020.csv --labels-format nih --stats-labels phantom \\
        --boxes BBox_List_2017.csv --box-images nih/images --canvas 448 --out audit/ --prefix nih_ \\
        --grid --images nih --grid-ids 00000129_000.png 00000427_000.png --p 1
    python -m dadam.audit --labels nih/Data_Entry_2017_v2020.csv --labels-format nih --stats-labels phantom \\
        --boxes nih/BBox_List_2017.csv --box-images nih/images --canvas 448 --images nih --p 1 \\
        --realism --realism-seeds 10 --out docs/images --prefix nih_
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from dadam.audit.figures import plot_companion_comparison, plot_correlation, plot_label_distribution
from dadam.audit.grid import save_grid
from dadam.audit.label_audit import audit_labels
from dadam.audit.phantom import phantom_bank
from dadam.bank import PatchBank
from dadam.config import COMPANION_RULES as RULES
from dadam.config import DadamConfig, add_dadam_arguments, dadam_config_from_args
from dadam.files import atomic_write
from dadam.formats import LABEL_FORMATS, labels_tensor, read_label_table
from dadam.labels import CXR_LT_CLASSES
from dadam.stats import LabelStats

__all__ = ["NIH_BOX_CLASSES", "main"]

#: The CXR-LT classes of NIH's box annotations (BBox_List_2017.csv), the paper's patch source: ``--phantom-classes nih``.
NIH_BOX_CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural Effusion",
    "Pneumonia",
    "Pneumothorax",
)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m dadam.audit",
        description="Audit DADAM over a label table: class frequencies and label correlation before / after "
        "(summary.csv/.md, audit.json, dist.png, corr.png), and optionally a grid of augmented images (grid.png).",
    )
    src = ap.add_argument_group("labels")
    src.add_argument("--labels", required=True, help="label table CSV, or 'phantom' for dadam.synthetic labels")
    src.add_argument("--labels-format", default="table", choices=LABEL_FORMATS, help="format of --labels")
    src.add_argument("--phantom-rows", type=int, default=200_000, help="rows of phantom labels")
    src.add_argument("--phantom-seed", type=int, default=0)
    src.add_argument(
        "--stats-labels", default=None, help="label table the statistics come from, or 'phantom' (default: --labels)"
    )
    bk = ap.add_argument_group("patch bank (one of)")
    bk.add_argument("--bank", default=None, help="patch bank file (PatchBank.save)")
    bk.add_argument("--boxes", default=None, help="NIH BBox_List_2017.csv to build a bank from")
    bk.add_argument("--box-images", default=None, help="images of --boxes")
    bk.add_argument("--phantom-bank", action="store_true", help="a bank of phantom lesions of every class")
    bk.add_argument(
        "--phantom-classes",
        nargs="+",
        default=None,
        help="the classes of the phantom bank (default: every disease class); 'nih': the 8 classes of NIH's boxes",
    )
    bk.add_argument("--phantom-per-class", type=int, default=2, help="phantom images per class of the phantom bank")
    bk.add_argument("--canvas", type=int, default=448, help="canvas of a bank built here")
    opt = ap.add_argument_group("DADAM options")
    add_dadam_arguments(opt)
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--repeats", type=int, default=1)
    out = ap.add_argument_group("output")
    out.add_argument("--out", required=True, help="output folder")
    out.add_argument("--prefix", default="", help="file name prefix")
    out.add_argument(
        "--compare-companions",
        action="store_true",
        help="audit both companion rules (--companions is ignored) and write only {prefix}companions.json and "
        "{prefix}companions.png, the figures of both side by side",
    )
    out.add_argument(
        "--realism",
        action="store_true",
        help="measure the realism of the pastes over every row of the label table (with --images): the border-step "
        "ratio and the interior Pearson of the paper's paste, feather and match side by side; write only "
        "{prefix}realism.json and {prefix}realism.png",
    )
    out.add_argument("--realism-seeds", type=int, default=10, help="draws (seeds 0..N-1) of --realism")
    out.add_argument("--grid", action="store_true", help="also write {prefix}grid.png of augmented images")
    out.add_argument("--images", default=None, help="root the label table's paths are relative to (for --grid)")
    out.add_argument("--grid-ids", nargs="*", default=None, help="image_ids to show (default: the first --grid-n)")
    out.add_argument("--grid-n", type=int, default=16)
    out.add_argument("--ncols", type=int, default=4)
    return ap


def _load_labels(spec: str, fmt: str, rows: int, seed: int) -> pd.DataFrame:
    if spec == "phantom":
        from dadam.synthetic import sample_labels

        y = sample_labels(rows, seed=seed)
        return pd.DataFrame(y.astype(np.float64), columns=list(CXR_LT_CLASSES))
    return read_label_table(spec, fmt=fmt)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the audit CLI; returns the exit status (0 done, 2 error)."""
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config = dadam_config_from_args(args)  # bad options fail before any work
        table = _load_labels(args.labels, args.labels_format, args.phantom_rows, args.phantom_seed)
        stats = None
        if args.stats_labels:
            st = _load_labels(args.stats_labels, args.labels_format, args.phantom_rows, args.phantom_seed)
            stats = LabelStats.from_labels(st)
        chosen = sum([args.bank is not None, args.boxes is not None, args.phantom_bank])
        if chosen != 1:
            raise ValueError("give exactly one of --bank, --boxes (with --box-images) or --phantom-bank")
        if args.bank:
            bank = PatchBank.load(args.bank)
        elif args.boxes:
            if not args.box_images:
                raise ValueError("--boxes needs --box-images (the folder of the box images)")
            from dadam.formats import read_nih_boxes

            boxes = read_nih_boxes(args.boxes, image_root=args.box_images)
            print(boxes.attrs["report"].summary())
            bank = PatchBank.from_boxes(boxes, args.box_images, canvas=args.canvas)
            print(bank.report.summary())
        else:
            classes = args.phantom_classes
            classes = NIH_BOX_CLASSES if classes == ["nih"] else classes
            bank = phantom_bank(canvas=args.canvas, per_class=args.phantom_per_class, classes=classes, progress=True)
        print(bank)
        out = pathlib.Path(args.out)
        run = dict(seed=args.seed, repeats=args.repeats, progress=True)
        if args.realism:
            written = _realism(args, table, bank, stats, config, out)
        elif args.compare_companions:
            written = _compare_companions(table, bank, stats, config, run, out, args.prefix, args)
        else:
            result = audit_labels(table, bank, stats, config=config, **run)
            written = list(result.save(out, prefix=args.prefix).values())
            written.append(plot_label_distribution(result, out / f"{args.prefix}dist.png"))
            written.append(plot_correlation(result, out / f"{args.prefix}corr.png"))
            print(result.headline())
        if args.grid and not args.realism:
            written.append(_grid(args, table, bank, stats, config, out / f"{args.prefix}grid.png"))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in written:
        print(f"wrote {w}")
    return 0


def _compare_companions(table, bank, stats, config, run, out: pathlib.Path, prefix: str, args) -> list[pathlib.Path]:
    """Audit every companion rule with the same table, bank, seed and options; write the comparison JSON and PNG."""
    results = {rule: audit_labels(table, bank, stats, config=config.replace(companions=rule), **run) for rule in RULES}
    for rule, r in results.items():
        print(f"--- companions={rule}\n{r.headline()}")
    names = ("rarest_tail_raise", "corr_max_change_covered", "corr_max_change", "corr_kept", "labels_per_image_tv")
    print(f"{'figure':<28}" + "".join(f"{rule:>14}" for rule in results))
    for name in names:
        print(f"{name:<28}" + "".join(f"{r.figures()[name]:>14.4f}" for r in results.values()))
    first = next(iter(results.values()))
    doc = {
        "command": "python -m dadam.audit " + " ".join(args.argv),
        "rows": first.counts.get("rows"),
        "covered": list(first.covered),
        "tail": list(first.tail),
        "config": config.to_dict(),
        "seed": args.seed,
        "rules": {
            rule: {
                "figures": r.figures(),
                "counts": r.counts,
                "raise_factor": dict(zip(r.class_names, np.round(r.raise_factor, 4).tolist(), strict=True)),
                "labels_per_image": {
                    "pasted": np.round(r.labels_per_image_pasted, 5).tolist(),
                    "real": np.round(r.labels_per_image_real, 5).tolist(),
                    "real_capped": np.round(r.labels_per_image_real_capped, 5).tolist(),
                },
                "corr_after": np.round(r.corr_after, 5).tolist(),
            }
            for rule, r in results.items()
        },
        "corr_before": np.round(first.corr_before, 5).tolist(),
    }
    out.mkdir(parents=True, exist_ok=True)
    path = atomic_write(out / f"{prefix}companions.json", json.dumps(doc, indent=1, allow_nan=True) + "\n")
    return [path, plot_companion_comparison(results, out / f"{prefix}companions.png")]


def _decode_rows(args, rows: pd.DataFrame, canvas: int) -> torch.Tensor:
    """``(B, 1, S, S)`` uint8: the rows' images decoded at the bank's canvas (paths relative to ``--images``)."""
    from dadam.data import decode_image

    if args.images is None or "path" not in rows.columns:
        raise ValueError("--grid and --realism need --images and a label table with a 'path' column")
    root = pathlib.Path(args.images)
    paths = rows["path"].astype(str)
    return torch.stack([decode_image(root / p if not os.path.isabs(p) else p, canvas=canvas) for p in paths])


def _realism(args, table: pd.DataFrame, bank: PatchBank, stats, config: DadamConfig, out: pathlib.Path) -> list:
    """The realism table over every row (:func:`dadam.audit.realism.realism_table`) as JSON and its grid PNG."""
    from dadam.audit.realism import format_realism_table, realism_table, save_realism_grid

    if args.realism_seeds < 1:
        raise ValueError(f"--realism-seeds must be >= 1, got {args.realism_seeds}")
    images = _decode_rows(args, table, bank.canvas)
    labels = labels_tensor(table, class_names=bank.class_names)
    stats = LabelStats.from_labels(table, class_names=bank.class_names) if stats is None else stats
    result = realism_table(images, labels, bank, stats, config=config, seeds=range(args.realism_seeds))
    text = format_realism_table(result)
    print(text)
    doc = {"command": "python -m dadam.audit " + " ".join(args.argv), **result, "markdown": text}
    out.mkdir(parents=True, exist_ok=True)
    path = atomic_write(out / f"{args.prefix}realism.json", json.dumps(doc, indent=1) + "\n")
    grid = save_realism_grid(images, labels, bank, stats, out / f"{args.prefix}realism.png", config=config, seed=0,
                             crop=224)  # fmt: skip
    return [path, grid]


def _grid(args, table: pd.DataFrame, bank: PatchBank, stats, config: DadamConfig, path: pathlib.Path) -> pathlib.Path:
    """Decode the chosen rows at the bank's canvas, run DADAM on them (seeded) and save the grid."""
    from dadam.augment import DiseasedAreaAugment

    if args.grid_ids:
        ids = table["image_id"].astype(str)
        unknown = [i for i in args.grid_ids if i not in set(ids)]
        if unknown:
            raise ValueError(f"--grid-ids {unknown} are not in the label table {args.labels}")
        rows = table.set_index(ids, drop=False).loc[args.grid_ids]
    else:
        rows = table.head(args.grid_n)
    images = _decode_rows(args, rows, bank.canvas)  # (B, 1, S, S) uint8
    labels = labels_tensor(rows, class_names=bank.class_names)
    stats = LabelStats.from_labels(table, class_names=bank.class_names) if stats is None else stats
    aug = DiseasedAreaAugment.from_config(bank, stats, config, generator=args.seed)
    out, new_labels, params = aug(images, labels, return_params=True)
    modes = params.mode.tolist()
    print(
        f"grid: {len(modes)} images, modes {[{0: 'none', 1: 'paste', 2: 'blend'}[m] for m in modes]}, "
        f"tail {list(aug.tail_names)}"
    )
    return save_grid(out, params, path, labels=new_labels, class_names=bank.class_names, ncols=args.ncols)
