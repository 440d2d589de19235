"""Phantom chest (and limb) radiographs with boxes, written in the on-disk layout of real datasets.

The phantoms stand in for data that cannot be shipped (NIH ChestX-ray14, CXR-LT/MIMIC-CXR-JPG, ChestX-Det,
VinDr-CXR, MURA) so that the readers, the patch bank, the augmentation and the training loop can be run end to end
without downloads. Each image is drawn procedurally: rounded shoulders, arms and a tapered chest wall, lung fields,
heart and mediastinum, spine, posterior and anterior ribs with uneven spacing, clavicles, diaphragm domes over an
abdomen that fades downward (liver, gastric bubble, bowel gas), branching lung vessels, pose, exposure variation and
grain, plus one drawn lesion per positive class with a tight box computed from the drawn mask. The smooth anatomy is
drawn on a half-resolution grid and upsampled once; lesions are drawn at full resolution.

Labels over the 26 CXR-LT classes follow the long tail of the real CXR-LT 2023 train counts and a co-occurrence
structure from a latent Gaussian copula with a few "syndrome" factors (heart failure, infection, ICU, chronic,
air leak/trauma, neoplasm). ``No Finding`` is 1 exactly when no other class is.

Everything is deterministic for a seed: image ``i`` is drawn from
``numpy.random.SeedSequence([seed, i, LAYOUTS.index(layout) + 1])``, so any number of workers writes the same bytes.

Modules: ``label_sampling`` (the copula), ``anatomy`` (the body's random shape), ``body`` (its density maps),
``skeleton`` and ``vessels`` (bones and lung markings), ``lesions`` (one painter per class), ``chest``
(:func:`render_chest`), ``limbs`` (:func:`render_limb`), ``jobs`` (drawing and writing images), ``layouts``
(the datasets' files and :func:`generate`), ``drawing`` (primitives) and ``__main__`` (the command line).

Example:
    >>> import tempfile
    >>> root = generate("nih", tempfile.mkdtemp(), n=4, size=128, progress=False, workers=1)
    >>> sorted(p.name for p in root.iterdir())
    ['BBox_List_2017.csv', 'Data_Entry_2017_v2020.csv', 'images', 'test_list.txt', 'train_val_list.txt']
"""

from __future__ import annotations

from collections.abc import Sequence

from dadam.synthetic.chest import Box, render_chest
from dadam.synthetic.label_sampling import sample_labels
from dadam.synthetic.layouts import (
    CHEXPERT_LABELS,
    LAYOUTS,
    NIH_BBOX_HEADER,
    NIH_DATA_ENTRY_HEADER,
    VINDR_CLASSES,
    generate,
)
from dadam.synthetic.limbs import MURA_PARTS, render_limb

__all__ = [
    "CHEXPERT_LABELS",
    "LAYOUTS",
    "MURA_PARTS",
    "NIH_BBOX_HEADER",
    "NIH_DATA_ENTRY_HEADER",
    "VINDR_CLASSES",
    "Box",
    "generate",
    "main",
    "render_chest",
    "render_limb",
    "sample_labels",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m dadam.synthetic --layout nih --n 100 --size 512 --seed 0 --out DIR``.

    The parser lives in :mod:`dadam.synthetic.__main__`, imported here on call only: importing it with the package
    would make ``python -m dadam.synthetic`` find it already loaded.
    """
    from dadam.synthetic.__main__ import main as run

    return run(argv)
