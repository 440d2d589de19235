"""A patch bank of phantom lesions, for audits and demos without real box annotations (``--phantom-bank``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dadam.bank import PatchBank
from dadam.labels import CXR_LT_CLASSES, NO_FINDING

__all__ = ["phantom_bank"]


def phantom_bank(
    *,
    canvas: int = 448,
    per_class: int = 2,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    progress: bool = False,
) -> PatchBank:
    """A bank of phantom lesions (:func:`dadam.synthetic.render_chest`), by default of every class but "No Finding".

    Each patch is cut from a phantom chest drawn at ``canvas x canvas`` with that one class, at its drawn box.

    Args:
        canvas: side of the canvas.
        per_class: phantom images (each giving one or more patches) per class.
        seed: seed of the phantoms.
        classes: the classes to cover (default: all but "No Finding"), e.g. the 8 classes of NIH's boxes.
        progress: tqdm bar.

    Returns:
        the :class:`~dadam.bank.PatchBank`.

    Raises:
        ValueError: an unknown class, or "No Finding", in ``classes``.
    """
    from tqdm.auto import tqdm

    from dadam.synthetic import render_chest

    wanted = [c for c in CXR_LT_CLASSES if c != NO_FINDING] if classes is None else list(classes)
    bad = [c for c in wanted if c not in CXR_LT_CLASSES or c == NO_FINDING]
    if bad:
        raise ValueError(f"phantom bank classes {bad} are not disease classes of {list(CXR_LT_CLASSES)}")
    patches, boxes, names, donors = [], [], [], []
    jobs = [(c, k) for c in CXR_LT_CLASSES if c in wanted for k in range(per_class)]
    for j, (c, k) in enumerate(tqdm(jobs, disable=not progress, desc="phantom bank")):
        y = np.zeros(len(CXR_LT_CLASSES), np.float32)
        y[CXR_LT_CLASSES.index(c)] = 1
        img, found = render_chest(y, size=canvas, rng=np.random.default_rng([seed, j]))
        for name, x0, y0, x1, y1 in found:
            patches.append(torch.from_numpy(np.ascontiguousarray(img[y0:y1, x0:x1])))
            boxes.append([x0, y0, x1, y1])
            names.append(name)
            donors.append(f"phantom_{c}_{k}")
    return PatchBank.from_patches(patches, boxes, names, canvas=canvas, donors=donors, sources=["phantom"] * len(names))
