"""sparsejax: pure-functional neural-network pruning and sparsity for JAX/Flax."""

from sparsejax.masks import (
    LayerStats,
    apply_mask,
    broadcast_mask,
    count_kept,
    format_summary,
    init_mask,
    intersect,
    sparsity,
    summary,
    union,
    validate_mask,
)

__version__ = "0.1.0"

__all__ = [
    "LayerStats",
    "apply_mask",
    "broadcast_mask",
    "count_kept",
    "format_summary",
    "init_mask",
    "intersect",
    "sparsity",
    "summary",
    "union",
    "validate_mask",
]
