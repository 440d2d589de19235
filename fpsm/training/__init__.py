"""FPSM training as a library: ``fit(TrainConfig(...))``, and the pieces it is made of.

| module | holds |
| --- | --- |
| ``config`` | :class:`TrainConfig` (every option of a run; DADAM as one :class:`dadam.config.DadamConfig`) |
| ``data`` | the dataset splits as label tables, the training and evaluation loaders |
| ``steps`` | one training step, one pass over a loader, predictions of an evaluation loader |
| ``base_aug`` | the base augmentation on the device (small affine, brightness, contrast), seeded by the run |
| ``checkpoint`` | :class:`RunState`, random states, atomic checkpoints and weights, resume |
| ``runlog`` | CSV logs, TensorBoard, per-class reports, prediction files |
| ``build`` | the model, optimiser, schedule, the run's generator and DADAM of a config |
| ``loop`` | :func:`fit`: set-up, the training loop, the final evaluation and weights |

The command line is ``python -m fpsm.train`` (:mod:`fpsm.train`).
"""

from fpsm.training.base_aug import BaseAugment, LightAugConfig
from fpsm.training.checkpoint import (
    RunState,
    check_checkpoint,
    choose_best,
    load_checkpoint_weights,
    load_weights,
    model_weights,
    read_checkpoint,
    restore_checkpoint,
    save_best_weights,
    save_checkpoint,
    save_weights,
)
from fpsm.training.config import DATASETS, GROUPS, MURA_CLASSES, RESUME_FREE_FIELDS, SPLITS, TrainConfig
from fpsm.training.data import (
    TrainData,
    dataset_codes,
    load_split,
    load_train_data,
    make_eval_loader,
    make_train_loader,
    patient_split,
    read_splits,
)
from fpsm.training.loop import (
    MODEL_BEST_FILE,
    FitResult,
    best_weights_file,
    build_model,
    build_optimizer,
    build_scheduler,
    fit,
    run_files,
)
from fpsm.training.runlog import RunLog, write_predictions, write_report
from fpsm.training.steps import StepOptions, amp_dtype, evaluate, train_one_epoch, train_step

__all__ = [
    "DATASETS",
    "GROUPS",
    "MODEL_BEST_FILE",
    "BaseAugment",
    "LightAugConfig",
    "MURA_CLASSES",
    "RESUME_FREE_FIELDS",
    "SPLITS",
    "StepOptions",
    "FitResult",
    "RunLog",
    "RunState",
    "TrainConfig",
    "TrainData",
    "amp_dtype",
    "best_weights_file",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "check_checkpoint",
    "choose_best",
    "dataset_codes",
    "evaluate",
    "fit",
    "load_checkpoint_weights",
    "load_split",
    "load_train_data",
    "load_weights",
    "make_eval_loader",
    "make_train_loader",
    "model_weights",
    "patient_split",
    "read_checkpoint",
    "read_splits",
    "restore_checkpoint",
    "run_files",
    "save_best_weights",
    "save_checkpoint",
    "save_weights",
    "train_one_epoch",
    "train_step",
    "write_predictions",
    "write_report",
]
