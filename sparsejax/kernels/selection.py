"""Deprecated alias of the sampled search's Pallas passes, now beside their caller in
``sparsejax.select._pallas`` (imports Pallas)."""

import warnings

from sparsejax.select._pallas import (
    MAX_ENTRIES,
    ROWS,
    SLOTS,
    TILE,
    Compacted,
    HitBits,
    bracket_pass,
    compact,
    finish_mask,
)

warnings.warn(
    "sparsejax.kernels.selection is deprecated: the kernels are private "
    "(sparsejax.select._pallas)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "MAX_ENTRIES",
    "ROWS",
    "SLOTS",
    "TILE",
    "Compacted",
    "HitBits",
    "bracket_pass",
    "compact",
    "finish_mask",
]
