"""Predict a split with a trained FPSM and write ``predictions.csv`` (``image_id`` + class probabilities) and
the metrics report (``report.csv`` / ``report.md``, when the split has labels).

Command line: ``python -m fpsm.evaluate --checkpoint runs/x --dataset cxr-lt --root ROOT --out DIR`` (a run folder
stands for its ``model_best.pt``, else its ``model.pt``; also under ``torchrun``: each rank predicts its shard and
rank 0 writes everything). The images are normalised as the backbone's timm data config says (``FPSM.data_config``)
and get the dataset codes of test time (``dataset_code="augmented"``: 0).

The checkpoint is loaded with ``weights_only=True`` (:func:`fpsm.training.read_checkpoint`): a file that holds
anything but tensors and plain containers is refused, never unpickled. With ``--bad-images skip`` an unreadable
image is left out of the predictions and the report and listed in ``skipped_images.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from dadam.data import BAD_IMAGES, InputNormalizer, SkippedImage, default_num_workers, remove_stale_worker_dirs
from dadam.files import atomic_write
from fpsm.cli import add_dataclass_arguments, dataclass_values
from fpsm.distributed import cleanup_distributed, gather_objects, init_distributed
from fpsm.training import (
    DATASETS,
    SPLITS,
    TrainConfig,
    amp_dtype,
    best_weights_file,
    build_model,
    dataset_codes,
    evaluate,
    load_split,
    load_weights,
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
        checkpoint: ``model_best.pt``, ``model.pt`` or ``checkpoint.pt`` of a training run, or the run folder (its
            ``model_best.pt``, else ``model.pt``); the run's ``config.json`` next to a bare ``model.pt`` gives the
            architecture.
        dataset: ``"cxr-lt"``, ``"mura"`` or ``"labels-csv"``.
        root: dataset root (default: the training run's root).
        split: split name (default: the validation split: ``development`` / ``valid``).
        csv: label file to read instead (required for labels-csv).
        out: output folder.
        canvas: input side (default: the training canvas).
        batch_size: images per batch per rank.
        num_workers: decoding workers (default: this process's CPUs shared among the local ranks, at most 32).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        amp: ``"auto"`` (bf16 on CUDA), ``"bf16"`` or ``"off"``.
        threshold: decision threshold for F1/precision/recall.
        progress: tqdm bar.
        bad_images: ``"error"`` (an unreadable image stops the evaluation, naming it) or ``"skip"`` (it is left out
            of the predictions and the report and listed in ``skipped_images.csv``).
    """

    checkpoint: str
    dataset: str = "cxr-lt"
    root: str | None = None
    split: str | None = None
    csv: str | None = None
    out: str = "eval_out"
    canvas: int | None = None
    batch_size: int = 64
    num_workers: int = default_num_workers()
    device: str = "auto"
    amp: str = "auto"
    threshold: float = 0.5
    progress: bool = True
    bad_images: str = "error"

    def validate(self) -> EvalConfig:
        """Raise ``ValueError`` naming the first bad field; returns ``self``."""
        for name, allowed in (("dataset", DATASETS), ("amp", ("auto", "bf16", "off")), ("bad_images", BAD_IMAGES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name, low in (("batch_size", 1), ("num_workers", 0), ("canvas", 1)):
            v = getattr(self, name)
            if (v is not None or name != "canvas") and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if not 0.0 <= self.threshold <= 1.0:  # NaN fails too
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        return self


@dataclass
class EvalResult:
    """Predictions (``image_id`` + one column per class), the report (None for unlabelled splits) and the images
    left out as unreadable (``bad_images="skip"``)."""

    predictions: pd.DataFrame
    report: pd.DataFrame | None
    out: Path
    skipped: list[SkippedImage] = field(default_factory=list)


def load_model(
    checkpoint: str | os.PathLike, *, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild a trained FPSM from a run's checkpoint (architecture from the stored or adjacent config).

    The file is loaded with ``weights_only=True``: nothing in it is unpickled beyond tensors and plain containers.

    Returns:
        ``(model in eval mode on device, the run's TrainConfig)``.

    Raises:
        FileNotFoundError: ``checkpoint`` is not a file.
        ValueError: naming the file, when it is not a checkpoint or weights file of an FPSM, refuses to load (it
            holds other objects), or has no config (no ``config.json`` beside a bare ``model.pt``).
    """
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = best_weights_file(checkpoint)
    state = read_checkpoint(checkpoint)
    if isinstance(state, dict) and "config" in state:
        raw, where = state["config"], checkpoint
    elif (checkpoint.parent / "config.json").is_file():
        where = checkpoint.parent / "config.json"
        try:
            raw = json.loads(where.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{where}: not a JSON config ({err})") from None
    else:
        raise ValueError(
            f"{checkpoint} holds no config and there is no config.json next to it: cannot rebuild the model"
        )
    try:
        cfg = TrainConfig.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: not a training config of fpsm.train ({err})") from None
    weights = model_weights(state, source=checkpoint)
    heads = [k for k in weights if k.startswith("heads.") and k.endswith(".weight")]
    if not heads or not isinstance(weights[heads[0]], torch.Tensor) or weights[heads[0]].ndim != 2:
        raise ValueError(f"{checkpoint}: no FPSM head weights (heads.<i>.weight) in it: not an FPSM checkpoint")
    num_classes = weights[heads[0]].shape[0]
    cfg_model = dataclasses.replace(cfg, pretrained=False, checkpoint_path=None)
    model = build_model(cfg_model, num_classes)
    description = f"{cfg.backbone}, stages {tuple(cfg.stages)}, {num_classes} classes"
    load_weights(model, weights, source=str(checkpoint), description=description)
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

    cfg.validate()
    info = init_distributed(cfg.device)
    try:
        if info.local_rank == 0:
            remove_stale_worker_dirs()  # of DataLoader workers killed with an earlier run
        model, run_cfg = load_model(cfg.checkpoint, device=info.device)
        split = cfg.split or SPLITS[cfg.dataset][1]
        root = cfg.root if cfg.root is not None else run_cfg.root
        table, classes, image_root = load_split(cfg.dataset, root, split, csv_path=cfg.csv)
        if model.num_classes != len(classes):
            raise ValueError(
                f"{cfg.checkpoint} predicts {model.num_classes} classes, dataset {cfg.dataset!r} has {len(classes)}"
            )
        canvas = cfg.canvas or run_cfg.canvas
        codes = dataset_codes(run_cfg, table, where=f"split {split!r}")  # test time: "augmented" is 0
        ds = LabelDataset(
            table, image_root, canvas=canvas, classes=classes, dataset_id=codes, bad_images=cfg.bad_images
        )
        loader = make_loader(ds, batch_size=cfg.batch_size, train=False, num_workers=cfg.num_workers)
        mine: list[SkippedImage] = []
        probs, targets = evaluate(
            model,
            loader,
            device=info.device,
            amp_dtype=amp_dtype(cfg.amp, info.device),
            channels_last=run_cfg.channels_last,
            use_dataset_ids=run_cfg.use_binary_enc,
            progress=cfg.progress and info.is_main,
            skipped=mine,
            normalize=InputNormalizer.from_data_config(model.data_config, channels_last=run_cfg.channels_last),
        )
        skipped = sorted((s for part in gather_objects(mine) for s in part), key=lambda s: s.index)
        keep = ~torch.isnan(probs).any(dim=1)  # (N,): the rows of images left out as bad hold NaN
        probs, targets = probs[keep], targets[keep]
        out = Path(cfg.out)
        pred = pd.DataFrame(probs.numpy(), columns=list(classes))
        pred.insert(0, "image_id", table["image_id"].astype(str)[keep.numpy()].tolist())
        report = None
        has_labels = bool((~torch.isnan(targets)).any())
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_predictions(probs, pred["image_id"], classes, out / "predictions.csv")
            if has_labels:
                report = write_report(probs, targets, classes, out / "report", threshold=cfg.threshold)
            if skipped:
                rows = pd.DataFrame([dataclasses.asdict(s) for s in skipped]).rename(columns={"index": "row"})
                atomic_write(out / "skipped_images.csv", rows.to_csv(index=False))
        return EvalResult(predictions=pred, report=report, out=out, skipped=skipped)
    finally:
        cleanup_distributed()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fpsm.evaluate``: predictions and report for one split."""
    parser = argparse.ArgumentParser(
        prog="python -m fpsm.evaluate",
        description="Predict a split with a trained FPSM; write predictions.csv and report.csv/.md",
    )
    add_dataclass_arguments(parser, EvalConfig)
    try:
        cfg = EvalConfig(**dataclass_values(parser.parse_args(argv), EvalConfig)).validate()
    except ValueError as err:
        parser.error(str(err))
    try:
        res = predict(cfg)
    except (FileNotFoundError, ValueError) as err:  # a bad checkpoint, table or image, named in the message
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    if int(os.environ.get("RANK", "0")) == 0:
        if res.skipped:
            print(f"{len(res.skipped)} image(s) left out as unreadable: {res.out / 'skipped_images.csv'}")
        if res.report is not None:
            mean = res.report.loc["mean"]
            print(f"{len(res.predictions)} images: mAP {mean['AP']:.4f}, mAUC {mean['AUC']:.4f} -> {res.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
