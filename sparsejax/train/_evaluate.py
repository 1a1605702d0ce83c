"""Evaluation: accuracy, loss and per-class metrics over a whole data set."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sparsejax.data import batches as _batches
from sparsejax.metrics import confusion_matrix, metrics_from_confusion
from sparsejax.train._checks import _check_int, _check_xy
from sparsejax.train._state import TrainState
from sparsejax.train._step import Batch, Forward, LossFn, _call, _per_example_loss, _run_forward


def make_eval_step(
    loss_fn: LossFn = optax.softmax_cross_entropy_with_integer_labels,
    *,
    forward: Forward = _call,
    vmap_seeds: bool = False,
    jit: bool = True,
) -> Callable[[TrainState, Batch, jax.Array], dict[str, jax.Array]]:
    """Build ``eval_step(state, batch, where) -> {"loss_sum", "confusion"}``.

    The model runs in evaluation mode (``model.eval()``: dropout off,
    BatchNorm running statistics); nothing is updated. ``where: bool[B]``
    marks the real examples of a padded last batch. The outputs add up over
    batches: ``loss_sum`` (``f32[]``, sum of per-example losses) and
    ``confusion`` (``int32[C, C]``, rows = true class,
    :func:`sparsejax.metrics.confusion_matrix`). With ``vmap_seeds`` both get
    a leading seed axis and the batch is shared by all seeds.
    """

    def eval_step(state: TrainState, batch: Batch, where: jax.Array) -> dict[str, jax.Array]:
        inputs, labels = batch
        model = nnx.merge(state.graphdef, state.params, state.rest)
        model.eval()
        key = jax.random.fold_in(state.key, np.uint32(zlib.crc32(b"eval")))
        logits, _ = _run_forward(forward, model, inputs, key)
        losses = _per_example_loss(loss_fn, logits, labels)
        return {
            "loss_sum": jnp.sum(jnp.where(where, losses, 0.0), dtype=jnp.float32),
            "confusion": confusion_matrix(logits, labels, int(logits.shape[-1]), where),
        }

    step = jax.vmap(eval_step, in_axes=(0, None, None)) if vmap_seeds else eval_step
    return jax.jit(step) if jit else step


@functools.cache
def _default_eval_step(vmap_seeds: bool) -> Callable[..., dict[str, jax.Array]]:
    return make_eval_step(vmap_seeds=vmap_seeds)


def _padded_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Stored-order batches of exactly ``batch_size`` examples; the last one zero-padded."""
    for xb, yb in _batches(x, y, batch_size, seed=None, drop_last=False):
        n = xb.shape[0]
        where = np.arange(batch_size) < n
        if n < batch_size:
            pad = batch_size - n
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
        yield xb, yb, where


def _finish_eval(loss_sum: np.ndarray, confusion: np.ndarray, n: int) -> dict[str, Any]:
    if confusion.ndim == 3:  # a leading seed axis
        per_seed = [_finish_eval(ls, cm, n) for ls, cm in zip(loss_sum, confusion)]
        return {k: [r[k] for r in per_seed] for k in per_seed[0]}
    counted = int(confusion.sum())
    if counted != n:
        raise ValueError(
            f"evaluate: only {counted} of the {n} labels lie in [0, num_classes="
            f"{confusion.shape[0]}); labels must be class indices below the model's output size"
        )
    m = jax.device_get(metrics_from_confusion(confusion))
    return {
        "accuracy": float(np.trace(confusion)) / n,  # exact, whatever the device's division
        "loss": float(loss_sum) / n,
        "precision": [float(v) for v in m.precision],
        "recall": [float(v) for v in m.recall],
        "f1": [float(v) for v in m.f1],
        "support": [int(v) for v in m.support],
        "macro_precision": float(m.macro_precision),
        "macro_recall": float(m.macro_recall),
        "macro_f1": float(m.macro_f1),
        "confusion": confusion.astype(int).tolist(),
    }


def evaluate(
    state: TrainState,
    x: Any,
    y: Any,
    *,
    batch_size: int = 1024,
    eval_step: Callable[[TrainState, Batch, jax.Array], dict[str, jax.Array]] | None = None,
    vmap_seeds: bool = False,
) -> dict[str, Any]:
    """Accuracy, mean loss and per-class / macro precision, recall and F1 on ``(x, y)``.

    All ``N`` examples are used: the last batch is zero-padded to
    ``batch_size`` and the padding masked out, so one compilation serves every
    batch. Metrics come from the summed confusion matrix through
    :func:`sparsejax.metrics.metrics_from_confusion` (scikit-learn's
    ``zero_division=0``, macro averages over all ``C`` classes).

    Args:
      state: a :class:`TrainState` (with ``vmap_seeds``: stacked seeds).
      x: ``[N, ...]`` inputs.
      y: ``int[N]`` class labels in ``[0, C)``.
      batch_size: evaluation batch size (at most ``N`` is used).
      eval_step: from :func:`make_eval_step` (default: cross-entropy loss,
        ``model(x)`` forward, jitted).
      vmap_seeds: evaluate all seeds of a stacked state in one vmapped pass.

    Returns:
      A JSON-friendly dict: ``accuracy``, ``loss``, ``macro_precision``,
      ``macro_recall``, ``macro_f1`` (floats), ``precision``, ``recall``,
      ``f1`` (lists of ``C`` floats), ``support`` and ``confusion`` (ints).
      With ``vmap_seeds`` every value is a list over the seeds.
    """
    x, y = _check_xy(x, y, "evaluate")
    batch_size = _check_int("batch_size", batch_size, 1)
    if x.shape[0] == 0:
        raise ValueError("evaluate: no examples (x has leading size 0)")
    step = eval_step if eval_step is not None else _default_eval_step(vmap_seeds)
    batch_size = min(batch_size, x.shape[0])  # no padding beyond the data
    totals = None
    for xb, yb, where in _padded_batches(x, y, batch_size):
        out = step(state, (xb, yb), where)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    return _finish_eval(np.asarray(totals["loss_sum"]), np.asarray(totals["confusion"]), x.shape[0])
