"""Predict a split with a trained FPSM and write ``predictions.csv`` (``image_id`` + class probabilities) and
the metrics report (``report.csv`` / ``report.md``, when the split has labels).

Command line: ``python -m fpsm.evaluate --checkpoint runs/x/checkpoint.pt --dataset cxr-lt --root ROOT --out DIR``
(also under ``torchrun``: each rank predicts its shard and rank 0 writes everything).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from fpsm.cli import add_dataclass_arguments, dataclass_values
from fpsm.distributed import cleanup_distributed, init_distributed
from fpsm.training import (
    DATASETS,
    SPLITS,
    TrainConfig,
    amp_dtype,
    build_model,
    evaluate,
    load_split,
    model_weights,
    read_checkpoint,
    write_predictions,
    write_report,
)

__all__ = ["EvalConfig", "EvalResult", "load_model", "main", "predict"]


@dataclass
class EvalConfig:
    """What to predict and where to write it.

    Args:
        checkpoint: ``checkpoint.pt`` or ``model.pt`` of a training run (the run's ``config.json`` next to a bare
            ``model.pt`` gives the architecture).
        dataset: ``"cxr-lt"``, ``"mura"`` or ``"labels-csv"``.
        root: dataset root (default: the training run's root).
        split: split name (default: the validation split: ``development`` / ``valid``).
        csv: label file to read instead (required for labels-csv).
        out: output folder.
        canvas: input side (default: the training canvas).
        batch_size: images per batch per rank.
        num_workers: decoding workers.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        amp: ``"auto"`` (bf16 on CUDA), ``"bf16"`` or ``"off"``.
        threshold: decision threshold for F1/precision/recall.
        progress: tqdm bar.
    """

    checkpoint: str
    dataset: str = "cxr-lt"
    root: str | None = None
    split: str | None = None
    csv: str | None = None
    out: str = "eval_out"
    canvas: int | None = None
    batch_size: int = 64
    num_workers: int = 4
    device: str = "auto"
    amp: str = "auto"
    threshold: float = 0.5
    progress: bool = True


@dataclass
class EvalResult:
    """Predictions (``image_id`` + one column per class) and the report (None for unlabelled splits)."""

    predictions: pd.DataFrame
    report: pd.DataFrame | None
    out: Path


def load_model(
    checkpoint: str | os.PathLike, *, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild a trained FPSM from a run's checkpoint (architecture from the stored or adjacent config).

    Returns:
        ``(model in eval mode on device, the run's TrainConfig)``.
    """
    checkpoint = Path(checkpoint)
    state = read_checkpoint(checkpoint)
    if isinstance(state, dict) and "config" in state:
        raw = state["config"]
    elif (checkpoint.parent / "config.json").is_file():
        raw = json.loads((checkpoint.parent / "config.json").read_text())
    else:
        raise ValueError(
            f"{checkpoint} holds no config and there is no config.json next to it: cannot rebuild the model"
        )
    cfg = TrainConfig.from_dict(raw)
    weights = model_weights(state, source=checkpoint)
    num_classes = weights[next(k for k in weights if k.startswith("heads.") and k.endswith(".weight"))].shape[0]
    cfg_model = dataclasses.replace(cfg, pretrained=False, checkpoint_path=None)
    model = build_model(cfg_model, num_classes)
    model.load_state_dict(weights)
    return model.to(device).eval(), cfg


def predict(cfg: EvalConfig) -> EvalResult:
    """Predict ``cfg``'s split and write ``predictions.csv`` and (with labels) ``report.csv`` / ``report.md``.

    Returns:
        :class:`EvalResult` (on every rank; files are written by rank 0).

    Example:
        >>> res = predict(EvalConfig("runs/x/checkpoint.pt", dataset="cxr-lt", root="/data/cxr-lt"))  # doctest: +SKIP
        >>> res.report.loc["mean", "AP"]  # doctest: +SKIP
    """
    from dadam.data import LabelDataset, make_loader

    if cfg.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {cfg.dataset!r}")
    info = init_distributed(cfg.device)
    try:
        model, run_cfg = load_model(cfg.checkpoint, device=info.device)
        split = cfg.split or SPLITS[cfg.dataset][1]
        root = cfg.root if cfg.root is not None else run_cfg.root
        table, classes, image_root = load_split(cfg.dataset, root, split, csv_path=cfg.csv)
        if model.num_classes != len(classes):
            raise ValueError(
                f"{cfg.checkpoint} predicts {model.num_classes} classes, dataset {cfg.dataset!r} has {len(classes)}"
            )
        canvas = cfg.canvas or run_cfg.canvas
        ds = LabelDataset(table, image_root, canvas=canvas, classes=classes, dataset_id=run_cfg.dataset_id)
        loader = make_loader(ds, batch_size=cfg.batch_size, train=False, num_workers=cfg.num_workers)
        probs, targets = evaluate(
            model,
            loader,
            device=info.device,
            amp_dtype=amp_dtype(cfg.amp, info.device),
            channels_last=run_cfg.channels_last,
            use_dataset_ids=run_cfg.use_binary_enc,
            progress=cfg.progress and info.is_main,
        )
        out = Path(cfg.out)
        pred = pd.DataFrame(probs.numpy(), columns=list(classes))
        pred.insert(0, "image_id", table["image_id"].astype(str).tolist())
        report = None
        has_labels = bool((~torch.isnan(targets)).any())
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_predictions(probs, pred["image_id"], classes, out / "predictions.csv")
            if has_labels:
                report = write_report(probs, targets, classes, out / "report", threshold=cfg.threshold)
        return EvalResult(predictions=pred, report=report, out=out)
    finally:
        cleanup_distributed()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fpsm.evaluate``: predictions and report for one split."""
    parser = argparse.ArgumentParser(
        prog="python -m fpsm.evaluate",
        description="Predict a split with a trained FPSM; write predictions.csv and report.csv/.md",
    )
    add_dataclass_arguments(parser, EvalConfig)
    res = predict(EvalConfig(**dataclass_values(parser.parse_args(argv), EvalConfig)))
    if res.report is not None and int(os.environ.get("RANK", "0")) == 0:
        mean = res.report.loc["mean"]
        print(f"{len(res.predictions)} images: mAP {mean['AP']:.4f}, mAUC {mean['AUC']:.4f} -> {res.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
