"""Optax transformations: pruned weights stay exactly zero; prune gradually; train sparse.

Every transform wraps an arbitrary optax optimizer ``inner``, keeps its mask in
the optimizer state and follows one update (DESIGN.md, "How pruning enters a
training step"): zero the incoming gradients at pruned positions, run ``inner``,
change the mask where the method says so, and return ``where(mask, u, -p)``,
so that after ``optax.apply_updates`` every pruned weight is exactly ``0.0``
whatever ``inner`` did (momentum, Adam's moments, weight decay, ...).

* :func:`keep_sparse`: a fixed mask; :func:`static_sparse` draws it at random
  (:func:`random_mask`, uniform or ERK) -- the "Static" baseline.
* :func:`pruning`: gradual pruning on a schedule (masks only shrink).
* :func:`dynamic_sparse` and its methods :func:`sparse_evolutionary` (SET),
  :func:`rigl` (RigL) and :func:`sparse_momentum` (SNFS): a sparse mask from
  the start, rewired by drop-and-grow on a :func:`drop_schedule` with exact
  per-layer counts, the inner optimizer's moments reset where it changes.
* :func:`straight_through`: dense weights in the state, the loss sees their
  N:M or top-k projection (STE / SR-STE).

The user writes an ordinary train step; no extra call per step is needed.
:func:`current_mask` finds the mask anywhere in a nested optax state,
:func:`with_mask` and :func:`with_key` swap it (one optimizer, many seeds),
:func:`pruning_schedules` gives the schedules that ``make_train_loop`` reads.
A transform that writes ``-p`` must be the **last** to touch the updates: wrap
the whole optimizer or put it at the end of an ``optax.chain``. All functions
are pure; ``update`` needs ``params``. Everything works under ``jax.jit`` (a
new mask never retraces), ``jax.vmap`` and with params sharded over a mesh.
"""

from sparsejax.transforms._access import (
    current_mask,
    current_step,
    pruning_schedules,
    with_key,
    with_mask,
)
from sparsejax.transforms._drop_schedule import DropSchedule, drop_schedule
from sparsejax.transforms._dynamic_sparse import SparseTrainingState, dynamic_sparse
from sparsejax.transforms._keep_sparse import KeepSparseState, keep_sparse
from sparsejax.transforms._mask_leaves import MaskLeaves
from sparsejax.transforms._pruning import PruningState, pruning
from sparsejax.transforms._score import Score, accumulated
from sparsejax.transforms._sparse_methods import rigl, sparse_evolutionary, sparse_momentum
from sparsejax.transforms._static_sparse import random_mask, static_sparse
from sparsejax.transforms._straight_through import StraightThroughState, straight_through

__all__ = [
    "DropSchedule",
    "KeepSparseState",
    "MaskLeaves",
    "PruningState",
    "Score",
    "SparseTrainingState",
    "StraightThroughState",
    "accumulated",
    "current_mask",
    "current_step",
    "drop_schedule",
    "dynamic_sparse",
    "keep_sparse",
    "pruning",
    "pruning_schedules",
    "random_mask",
    "rigl",
    "sparse_evolutionary",
    "sparse_momentum",
    "static_sparse",
    "straight_through",
    "with_key",
    "with_mask",
]
