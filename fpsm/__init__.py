"""FPSM: the Feature Pyramid Sum Model for multi-label chest X-ray classification (Kim et al., 2023).

``fpsm.create_fpsm`` builds the model on any timm backbone with ``feature_info``; ``fpsm.pyramid_loss`` is its
training loss; ``fpsm.metrics`` has the per-class report, ``fpsm.ensemble`` probability averaging, ``fpsm.training``
the training library (``fit(TrainConfig(...))``; command line ``python -m fpsm.train``), ``fpsm.evaluate`` the
predictions of a trained run (import them as submodules).
"""

from fpsm.loss import pyramid_loss
from fpsm.model import FPSM, FPSMOutput, create_fpsm

__all__ = ["FPSM", "FPSMOutput", "create_fpsm", "pyramid_loss"]
