"""sparsejax: pure-functional neural-network pruning and sparsity for JAX/Flax.

The core is imported here; it works on any parameter pytree and needs only jax, optax
and numpy: :mod:`~sparsejax.masks` (mask pytrees), :mod:`~sparsejax.scores` (importance
scores and unit criteria), :mod:`~sparsejax.structures` (granularities),
:mod:`~sparsejax.select` (:func:`prune`: scores to mask, layerwise or global),
:mod:`~sparsejax.schedules` and :mod:`~sparsejax.transforms` (optax transforms:
:func:`keep_sparse`, gradual :func:`pruning`, sparse training from scratch:
:func:`static_sparse`, :func:`sparse_evolutionary`, :func:`rigl`, :func:`sparse_momentum`,
:func:`straight_through`).

Everything else loads on first use, so ``import sparsejax`` pulls in neither Flax nor
Pallas: the jax-only tools (``sj.metrics``, ``sj.sensitivity``, ``sj.regularizers``,
``sj.parallel``, ``sj.block_sparse`` with :class:`BlockSparseMatrix`), the Flax layer
(``sj.models``, ``sj.data``, ``sj.checkpoint``), the techniques (``sj.lottery``,
``sj.variational``, ``sj.dynamic``, ``sj.shrink``), ``sj.train`` and ``sj.runner``.
``docs/architecture.md`` maps the layers.

Example:
  >>> import jax.numpy as jnp, optax, sparsejax as sj
  >>> params = {"w": jnp.arange(1.0, 9.0).reshape(4, 2), "b": jnp.zeros(2)}
  >>> mask = sj.prune(sj.scores.magnitude(params), 0.5)
  >>> sj.apply_mask(params, mask)["w"].tolist()
  [[0.0, 0.0], [0.0, 0.0], [5.0, 6.0], [7.0, 8.0]]
"""

import importlib
from typing import Any

from sparsejax import schedules, scores, structures, tree
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
from sparsejax.select import erk_sparsities, prune
from sparsejax.structures import (
    NM,
    Blocks,
    Filters,
    InputChannels,
    Layers,
    Neurons,
    Structure,
    Unstructured,
    reduce_scores,
)
from sparsejax.transforms import (
    KeepSparseState,
    PruningState,
    Score,
    accumulated,
    current_mask,
    current_step,
    keep_sparse,
    pruning,
    rigl,
    sparse_evolutionary,
    sparse_momentum,
    static_sparse,
    straight_through,
)

__version__ = "0.1.0"

# Submodules loaded on first attribute access (``sj.train``), and names they provide.
_LAZY_MODULES = (
    "block_sparse", "checkpoint", "criteria", "data", "deploy", "dynamic", "lottery", "metrics",
    "models", "parallel", "posttrain", "regularizers", "runner", "sensitivity", "shrink",
    "train", "variational",
)
_LAZY_NAMES = {
    "BlockSparseMatrix": "sparsejax.block_sparse",
    "block_sparse_matmul": "sparsejax.block_sparse",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"sparsejax.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'sparsejax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_NAMES))


__all__ = [
    "NM",
    "BlockSparseMatrix",
    "Blocks",
    "Filters",
    "InputChannels",
    "KeepSparseState",
    "LayerStats",
    "Layers",
    "Neurons",
    "PruningState",
    "Score",
    "Structure",
    "Unstructured",
    "accumulated",
    "apply_mask",
    "block_sparse_matmul",
    "broadcast_mask",
    "count_kept",
    "current_mask",
    "current_step",
    "erk_sparsities",
    "format_summary",
    "init_mask",
    "intersect",
    "keep_sparse",
    "parallel",
    "prune",
    "pruning",
    "reduce_scores",
    "rigl",
    "schedules",
    "scores",
    "sensitivity",
    "sparse_evolutionary",
    "sparse_momentum",
    "sparsity",
    "static_sparse",
    "straight_through",
    "structures",
    "summary",
    "tree",
    "union",
    "validate_mask",
]
