"""dadam: online Diseased Area Data Augmentation (DADAM) for multi-label chest X-ray classification.

The public entry points are :class:`DiseasedAreaAugment` (the batched ``nn.Module``), :class:`PatchBank` (the disease
patches) and :class:`LabelStats` (class frequencies and label correlation of the training labels). Submodules:
``dadam.ops`` (pure tensor ops), ``dadam.sampling`` (all randomness), ``dadam.stats``, ``dadam.bank``.
"""

from dadam.augment import DiseasedAreaAugment
from dadam.bank import PatchBank
from dadam.stats import LabelStats

__all__ = ["DiseasedAreaAugment", "LabelStats", "PatchBank"]
