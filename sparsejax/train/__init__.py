"""Reference training core for Flax NNX models on the functional path.

Usable as is or copied into a research script. A model is split once into a
static :class:`~flax.nnx.GraphDef`, its trainable ``nnx.Param`` state and the
``rest`` (BatchNorm statistics, RNG streams, masks stored as non-``Param``
variables, ...). Everything that changes during training lives in one pytree,
:class:`TrainState`, and a step is a pure function ``(state, batch) ->
(state, metrics)``: gradients with respect to ``params`` only; the optimizer
called as ``tx.update(grads, opt_state, params)``, so the sparsejax transforms
work with no extra call; the model in training mode, its updated ``rest`` kept;
every RNG stream reseeded from ``(state.key, state.step)``, so a run resumed
from a checkpoint draws exactly the dropout masks of the uninterrupted run.

The data position ``(epoch, batch)`` of the next batch is part of the state,
so :mod:`sparsejax.checkpoint` saves it and :func:`train` resumes mid-epoch on
the same example order (:func:`sparsejax.data.batches`).

Many seeds at once: :func:`create_train_states` (or ``TrainState.create`` with
``S`` keys) stacks ``S`` independent states along a leading seed axis, and
``train(..., vmap_seeds=True)`` runs them with one ``jax.vmap``-ed step on the
same batches or on per-seed batch orders; ``TrainState.with_mask`` gives each
its own mask (timings: docs/results.md, ``benchmarks/vmap_seeds.py``).
:func:`make_train_loop` runs many steps as one program, reading the pruning
schedule from the optimizer state.

References:
  Flax NNX functional API (``nnx.split`` / ``nnx.merge``),
  https://flax.readthedocs.io/en/latest/nnx_basics.html
"""

from sparsejax.train._evaluate import evaluate, make_eval_step
from sparsejax.train._fit import train, train_many_seeds
from sparsejax.train._loop import make_train_loop
from sparsejax.train._state import TrainState, create_train_state, create_train_states

# The type aliases of the signatures stay importable (``X as X``), outside the public list.
from sparsejax.train._step import Batch as Batch
from sparsejax.train._step import Forward as Forward
from sparsejax.train._step import LossFn as LossFn
from sparsejax.train._step import MetricsFn as MetricsFn
from sparsejax.train._step import Penalty as Penalty
from sparsejax.train._step import StepFn as StepFn
from sparsejax.train._step import make_train_step

__all__ = [
    "TrainState",
    "create_train_state",
    "create_train_states",
    "evaluate",
    "make_eval_step",
    "make_train_loop",
    "make_train_step",
    "train",
    "train_many_seeds",
]
