"""Optax transformations that keep pruned weights at exactly zero and prune gradually.

Both wrap an arbitrary optax optimizer ``inner`` and follow one four-step
update (DESIGN.md, "How pruning enters a training step"):

1. zero the incoming gradients at pruned positions (``where(mask, g, 0)``),
2. run ``inner``,
3. (:func:`pruning` only) on the schedule's update steps, re-score the
   parameters and shrink the mask, inside ``jax.lax.cond``,
4. return ``where(mask, u, -p)``, so that after ``optax.apply_updates`` every
   pruned weight is exactly ``0.0`` -- whatever ``inner`` did (momentum,
   Adam's moments, decoupled weight decay, ...), and even if it was not zero
   before.

The user writes an ordinary train step; no extra call per step is needed.
The mask lives in the optimizer state (:class:`KeepSparseState`,
:class:`PruningState`, which also carries its schedule); :func:`current_mask`
finds it anywhere in a nested optax state and :func:`with_mask` swaps it.
Masks are pytrees mirroring the params (see :mod:`sparsejax.masks`).

Because step 4 writes ``-p`` into the updates, the pruning transformation must
be the **last** one to touch the updates: wrap the whole optimizer or put it at
the end of an ``optax.chain``; a transformation after it (e.g. ``optax.scale``)
would rescale ``-p`` and un-zero pruned weights.

All functions are pure; ``update`` needs ``params``. Everything works under
``jax.jit`` (the mask is an array in the state: changing it never retraces),
``jax.vmap`` (a batched step turns ``lax.cond`` into a select, so both branches
run) and with params sharded over a mesh.
"""

from sparsejax.transforms._access import (
    current_mask,
    current_step,
    pruning_schedules,
    with_mask,
)
from sparsejax.transforms._keep_sparse import KeepSparseState, keep_sparse
from sparsejax.transforms._mask_leaves import MaskLeaves
from sparsejax.transforms._pruning import PruningState, pruning
from sparsejax.transforms._score import Score, accumulated

__all__ = [
    "KeepSparseState",
    "MaskLeaves",
    "PruningState",
    "Score",
    "accumulated",
    "current_mask",
    "current_step",
    "keep_sparse",
    "pruning",
    "pruning_schedules",
    "with_mask",
]
