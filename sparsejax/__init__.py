"""sparsejax: pure-functional neural-network pruning and sparsity for JAX/Flax.

The core works on any parameter pytree and imports only jax, optax and chex:

* :mod:`sparsejax.masks` — mask pytrees (bool leaves that broadcast to their
  parameter: scalar, per-neuron ``(1, out)``, per-input ``(in, 1)`` or full).
* :mod:`sparsejax.scores` — importance: magnitude, random, gradient, Taylor,
  SNIP, movement, OBD (Hutchinson / exact / Fisher Hessian diagonal),
  activation mean and APoZ.
* :mod:`sparsejax.structures` — granularities: unstructured, neurons/filters,
  input channels, whole layers, blocks, N:M.
* :mod:`sparsejax.select` — :func:`prune`: scores → mask, layerwise or global
  (sort-free radix selection), uniform / ERK / per-layer distributions.
* :mod:`sparsejax.schedules` — one-shot, constant, periodic, polynomial
  (Zhu & Gupta 2017), iterative (compound) sparsity schedules.
* :mod:`sparsejax.transforms` — optax transforms: :func:`keep_sparse` and
  gradual :func:`pruning` inside any optimizer, no extra call per step.

Also jax-only, and exported here: :class:`BlockSparseMatrix` and
:func:`block_sparse_matmul` (block-sparse weights, Pallas GPU kernels; Gray et
al. 2017), :mod:`sparsejax.parallel` (data-parallel / FSDP placement of
params, masks and optimizer state), :mod:`sparsejax.criteria` (structured
criteria: filter norms, group Taylor, BatchNorm scale, the exact-loss-change
oracle, Spearman correlation) and :mod:`sparsejax.sensitivity` (layer and
parameter sensitivity, budget allocation).

Built on the core (import them explicitly; they use Flax or more):
:mod:`sparsejax.models` (NNX zoo), :mod:`sparsejax.data`, :mod:`sparsejax.train`,
:mod:`sparsejax.checkpoint`, :mod:`sparsejax.metrics`, :mod:`sparsejax.runner`,
:mod:`sparsejax.lottery` (IMP, rewinding), :mod:`sparsejax.regularizers` (group
lasso), :mod:`sparsejax.variational` (sparse VD), :mod:`sparsejax.shrink`
(coupled groups, physical shrinking), :mod:`sparsejax.dynamic` (input-dependent gating) and
:mod:`sparsejax.kernels` (the block-sparse kernels, ``BlockSparseLinear``).

Example:
  >>> import jax.numpy as jnp, optax, sparsejax as sj
  >>> params = {"w": jnp.arange(1.0, 9.0).reshape(4, 2), "b": jnp.zeros(2)}
  >>> mask = sj.prune(sj.scores.magnitude(params), 0.5)
  >>> sj.apply_mask(params, mask)["w"].tolist()
  [[0.0, 0.0], [0.0, 0.0], [5.0, 6.0], [7.0, 8.0]]
"""

from sparsejax import criteria, parallel, schedules, scores, sensitivity, structures
from sparsejax.block_sparse import BlockSparseMatrix, block_sparse_matmul
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
)

__version__ = "0.1.0"

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
    "criteria",
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
    "schedules",
    "scores",
    "sensitivity",
    "sparsity",
    "structures",
    "summary",
    "union",
    "validate_mask",
]
