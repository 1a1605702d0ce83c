"""Importance scores that :func:`~sparsejax.transforms.pruning` may accumulate across steps."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sparsejax.tree import PyTree


class Score(NamedTuple):
    """An importance score for :func:`pruning` that may accumulate statistics across steps.

    ``update`` runs at every step (keep it cheap); ``compute`` runs only on the
    schedule's update steps, inside ``lax.cond``. A plain function
    ``(params, grads) -> scores`` given to :func:`pruning` becomes a ``Score``
    with empty state whose ``compute`` calls it; :func:`accumulated` sums a
    per-step score over training (movement pruning).

    Attributes:
      init: ``params -> score_state`` (any pytree of arrays, ``()`` if none).
      update: ``(score_state, params, grads) -> score_state``, at every step.
      compute: ``(score_state, params, grads) -> scores``, a pytree mirroring
        the params (higher = more important), on update steps only.
    """

    init: Callable[[PyTree], PyTree]
    update: Callable[[PyTree, PyTree, PyTree], PyTree]
    compute: Callable[[PyTree, PyTree, PyTree], PyTree]


def accumulated(fn: Callable[[PyTree, PyTree], PyTree]) -> Score:
    r"""A :class:`Score` that sums ``fn(params, grads)`` over every step since ``init``.

    The state is a ``float32`` pytree mirroring the params (one extra copy of
    them). With ``fn = sparsejax.scores.movement`` (:math:`-w \cdot g`) this is
    the movement score :math:`S = -\sum_t (\partial L / \partial W)^{(t)} W^{(t)}`
    of Sanh et al. (2020): weights moving away from zero are kept.

    Args:
      fn: ``(params, grads) -> per-step scores``, a pytree mirroring the params.

    Returns:
      A :class:`Score`; ``compute`` returns the running sum, including the
      current step.

    References:
      Sanh, Wolf & Rush, "Movement Pruning: Adaptive Sparsity by
      Fine-Tuning", NeurIPS 2020. https://arxiv.org/abs/2005.07683

    Example:
      >>> import optax, sparsejax
      >>> tx = sparsejax.pruning(
      ...     optax.adam(1e-3),
      ...     score=accumulated(sparsejax.scores.movement),
      ...     schedule=sparsejax.schedules.polynomial(0.0, 0.9, begin=0, end=1_000, every=100),
      ... )
    """

    def init(params):
        return jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), params)

    def update(state, params, grads):
        return jax.tree.map(lambda s, x: s + jnp.asarray(x, jnp.float32), state, fn(params, grads))

    def compute(state, params, grads):
        del params, grads
        return state

    return Score(init, update, compute)


def _as_score(score: Score | Callable[[PyTree, PyTree], PyTree]) -> Score:
    if isinstance(score, Score):
        return score
    if not callable(score):
        raise TypeError(f"pruning: score must be a Score or a function (params, grads) -> scores, "
                        f"got {score!r}")
    try:
        inspect.signature(score).bind(None, None)
    except TypeError as e:
        raise TypeError(
            f"pruning: score {score!r} must accept (params, grads); wrap a one-argument score, "
            "e.g. score=lambda p, g: sparsejax.scores.magnitude(p)"
        ) from e
    except ValueError:  # no introspectable signature (some builtins): trust the caller
        pass

    def compute(state, params, grads):
        del state
        return score(params, grads)

    return Score(init=lambda params: (), update=lambda state, params, grads: state, compute=compute)
