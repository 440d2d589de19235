"""The paste of bank patches into images, by concept; :mod:`dadam.ops` is its public front (validation, dispatch).

- :mod:`dadam.paste.values`: the value rule, defined once (rounding, blend, the feather ramp, the intensity map and
  the statistics it is computed from);
- :mod:`dadam.paste.loop`: the CPU paths, one active slot at a time (NumPy views; a torch twin for bfloat16 and
  autograd);
- :mod:`dadam.paste.vectorised`: the pure-torch GPU path over a padded grid of the slots (the Triton kernels'
  fallback, and what ``torch.compile`` traces);
- the Triton kernels live in :mod:`dadam.kernels` (:mod:`dadam.kernels.paste`, :mod:`dadam.kernels.match`).
"""

from dadam.paste.values import (
    MATCH_GAIN_RANGE,
    MATCH_MODES,
    blend_values,
    feather_ramp,
    intensity_map,
    map_patch_values,
    round_to_uint8,
    stat_values,
)

__all__ = [
    "MATCH_GAIN_RANGE",
    "MATCH_MODES",
    "blend_values",
    "feather_ramp",
    "intensity_map",
    "map_patch_values",
    "round_to_uint8",
    "stat_values",
]
