"""A patch bank of phantom lesions, for audits and demos without real box annotations (``--phantom-bank``)."""

from __future__ import annotations

import numpy as np
import torch

from dadam.bank import PatchBank
from dadam.labels import CXR_LT_CLASSES, NO_FINDING

__all__ = ["phantom_bank"]


def phantom_bank(*, canvas: int = 448, per_class: int = 2, seed: int = 0, progress: bool = False) -> PatchBank:
    """A bank of phantom lesions (:func:`dadam.synthetic.render_chest`) covering every class but "No Finding".

    Each patch is cut from a phantom chest drawn at ``canvas x canvas`` with that one class, at its drawn box.

    Args:
        canvas: side of the canvas.
        per_class: phantom images (each giving one or more patches) per class.
        seed: seed of the phantoms.
        progress: tqdm bar.

    Returns:
        the :class:`~dadam.bank.PatchBank`.
    """
    from tqdm.auto import tqdm

    from dadam.synthetic import render_chest

    patches, boxes, classes, donors = [], [], [], []
    jobs = [(c, k) for c in CXR_LT_CLASSES if c != NO_FINDING for k in range(per_class)]
    for j, (c, k) in enumerate(tqdm(jobs, disable=not progress, desc="phantom bank")):
        y = np.zeros(len(CXR_LT_CLASSES), np.float32)
        y[CXR_LT_CLASSES.index(c)] = 1
        img, found = render_chest(y, size=canvas, rng=np.random.default_rng([seed, j]))
        for name, x0, y0, x1, y1 in found:
            patches.append(torch.from_numpy(np.ascontiguousarray(img[y0:y1, x0:x1])))
            boxes.append([x0, y0, x1, y1])
            classes.append(name)
            donors.append(f"phantom_{c}_{k}")
    return PatchBank.from_patches(
        patches, boxes, classes, canvas=canvas, donors=donors, sources=["phantom"] * len(classes)
    )
