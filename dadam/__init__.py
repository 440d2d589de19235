"""dadam: online Diseased Area Data Augmentation (DADAM) for multi-label chest X-ray classification.

The public entry points are :class:`DiseasedAreaAugment` (the batched ``nn.Module``), :class:`DadamConfig` (its
options), :class:`PatchBank` (the disease patches) and :class:`LabelStats` (class frequencies, label correlation and
the label rows of the training labels). A normal image's companion classes follow ``DadamConfig.companions``: the
covered classes of a real label row that shows the tail class (``"cooccurrence"``, the default) or ``corr ** beta``
(``"correlation"``, the paper's rule). Submodules: ``dadam.ops`` (pure tensor ops) <- ``dadam.sampling`` (all
randomness: named uniforms, one pure function per rule, the sampler tables) <- ``dadam.augment`` (the module);
``dadam.stats``, ``dadam.bank``, ``dadam.config``, ``dadam.files`` (atomic writes, digests); ``dadam.formats`` (dataset readers), ``dadam.data`` (decoding, datasets); ``dadam.offline`` (the paper's
per-image procedure), ``dadam.export`` (an augmented copy of a label table on disk), ``dadam.audit`` (label
statistics before / after, figures, grids); ``dadam.synthetic`` (phantom datasets).
"""

from dadam.augment import DiseasedAreaAugment
from dadam.bank import PatchBank
from dadam.config import DadamConfig
from dadam.stats import LabelStats

__all__ = ["DadamConfig", "DiseasedAreaAugment", "LabelStats", "PatchBank"]
