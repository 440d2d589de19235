"""Audit DADAM: label distribution and label correlation before vs after (the paper's Fig. 3 and 4), and image grids.

- :mod:`dadam.audit.label_audit`: :func:`audit_labels` runs DADAM's draws over a whole label table (labels only)
  and returns an :class:`AuditResult` (frequencies, raise factors, correlation before / after, the largest change
  over covered pairs, the corr-of-corr, labels per pasted image against real images with the same tail class);
- :mod:`dadam.audit.figures`: :func:`plot_label_distribution`, :func:`plot_correlation` and
  :func:`plot_companion_comparison` (both companion rules side by side);
- :mod:`dadam.audit.grid`: :func:`save_grid`, augmented images with the placed boxes (red: pasted, cyan: blended);
- :mod:`dadam.audit.phantom`: :func:`phantom_bank`, a bank of phantom lesions of every class (or of a few);
- :mod:`dadam.audit.realism`: how realistic the pastes look: :func:`border_step_ratio` (the seam against the natural
  step at the same place), :func:`interior_pearson` (the lesion kept inside), :func:`realism_table` and
  :func:`save_realism_grid` (the paper's paste, ``feather`` and ``match`` side by side);
- :mod:`dadam.audit.cli`: the command line, ``python -m dadam.audit --help`` (:func:`main`).

Every file is written atomically (:func:`dadam.files.atomic_write`).

Example:
    >>> result = audit_labels(table, bank, config=DadamConfig(p=0.5), seed=0)  # doctest: +SKIP
    >>> print(result.headline())  # doctest: +SKIP
    >>> plot_label_distribution(result, "audit/dist.png")  # doctest: +SKIP
"""

from dadam.audit.figures import plot_companion_comparison, plot_correlation, plot_label_distribution
from dadam.audit.grid import BLEND_COLOR, PASTE_COLOR, save_grid
from dadam.audit.label_audit import AuditResult, audit_labels, labels_per_image
from dadam.audit.phantom import phantom_bank
from dadam.audit.realism import (
    REALISM_OPTIONS,
    border_step_ratio,
    format_realism_table,
    interior_pearson,
    realism_table,
    save_realism_grid,
)

__all__ = [
    "BLEND_COLOR",
    "PASTE_COLOR",
    "REALISM_OPTIONS",
    "AuditResult",
    "audit_labels",
    "border_step_ratio",
    "format_realism_table",
    "interior_pearson",
    "labels_per_image",
    "main",
    "phantom_bank",
    "plot_companion_comparison",
    "plot_correlation",
    "plot_label_distribution",
    "realism_table",
    "save_grid",
    "save_realism_grid",
]


def __getattr__(name: str) -> object:
    """``dadam.audit.main``, the command line, imported on first use (the library parts do not need it)."""
    if name == "main":
        from dadam.audit.cli import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
