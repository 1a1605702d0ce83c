"""Inference of gated models: the gathered fast path, predictions, the confidence cascade.

The *gathered* path (:func:`apply_gathered`, :func:`make_gathered`) computes only the
active channels of every example; :func:`gated_predictions` collects logits, active
channels and effective MACs on the masked path; :func:`adaptive_select` /
:func:`adaptive_predict` implement the confidence cascade: run at the lowest density,
escalate while ``max softmax < threshold``; every run made counts toward the compute spent.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.dynamic._cost import active_counts, effective_flops
from sparsejax.dynamic._gates import _is_traced, check_density
from sparsejax.dynamic._models import _GatedModel
from sparsejax.models import _shapes


@functools.partial(jax.jit, static_argnames=("graphdef", "ks"))
def apply_gathered(
    graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array, ks: tuple[int, ...]
) -> jax.Array:
    """Gathered (compute-only-active-channels) inference of a gated model, jitted.

    For batch-1 / small-batch inference. Every example runs :meth:`gathered_one`
    (vmapped): the ``k`` active output columns of each kernel and the matching input rows
    of the next layer are gathered into dense arrays of static shape, so one compilation
    serves every density with the same ``ks`` (one per distinct tuple of ``k``, not per
    density).

    Args:
      graphdef: from ``nnx.split(model)``.
      state: the model's full state from ``nnx.split(model)``.
      x: ``(batch, *input_shape)``.
      ks: static active channels per gated layer, ``model.active_k(density)``.

    Returns:
      ``(batch, classes)`` logits; equal to ``model(x, density)`` (deterministic gates)
      up to float summation order.

    ``graphdef`` is a static argument, so every call hashes it to find the compiled
    program, a host cost that can exceed a small model's whole batch-1 forward (timings:
    docs/results.md); for latency-critical serving use :func:`make_gathered`.
    """
    return _gathered_batch(graphdef, state, x, ks)


def _gathered_batch(graphdef, state, x, ks):
    model = nnx.merge(graphdef, state)
    return jax.vmap(lambda xi: model.gathered_one(xi, ks))(x)


def make_gathered(graphdef: nnx.GraphDef, ks: Sequence[int]) -> Callable[..., jax.Array]:
    """A jitted ``f(state, x) -> logits`` of the gathered path for fixed ``ks``.

    The same computation as :func:`apply_gathered`, with ``graphdef`` and ``ks`` closed
    over: a call looks up no static argument, so the host cost per call is only the
    flattening of ``state``. Build one function per operating point and keep it.

    Args:
      graphdef: from ``nnx.split(model)`` of a gated model.
      ks: active channels per gated layer, ``model.active_k(density)`` (positive ints).

    Returns:
      ``f(state, x)``: ``state`` the model's full state, ``x (batch, *input_shape)``;
      returns ``(batch, classes)`` logits.
    """
    ks = tuple(ks)
    for i, k in enumerate(ks):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks[{i}] must be a positive int, got {k!r}")
    ks = tuple(int(k) for k in ks)
    return jax.jit(functools.partial(_gathered_batch, graphdef, ks=ks))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _predict(graphdef, state, x, density):
    model = nnx.merge(graphdef, state)
    logits, gates = model.with_gates(x, density)
    counts = active_counts(gates)
    return logits, counts, effective_flops(model.costs, counts)


class GatedPredictions(NamedTuple):
    """Per-example outputs of :func:`gated_predictions` (numpy arrays)."""

    logits: np.ndarray  # (N, classes)
    counts: dict[str, np.ndarray]  # {layer: (N,)} active channels
    flops: np.ndarray  # (N,) effective MACs, predictor included


def gated_predictions(
    model: _GatedModel, x: Any, density: float, *, batch_size: int = 1000
) -> GatedPredictions:
    """Logits, active channels and effective MACs of every example at ``density``.

    Deterministic gates, masked path, one compilation for every density (the density is
    traced). Host loop over batches of ``batch_size``.

    Raises:
      ValueError: a density outside ``(0, 1]``.
    """
    density = check_density(density)
    batch_size = _shapes.positive_int("batch_size", batch_size)
    graphdef, state = nnx.split(model)
    x = np.asarray(x)
    outs = [
        jax.device_get(_predict(graphdef, state, x[i : i + batch_size], jnp.float32(density)))
        for i in range(0, x.shape[0], batch_size)
    ]
    logits = np.concatenate([o[0] for o in outs])
    counts = {n: np.concatenate([o[1][n] for o in outs]) for n in outs[0][1]}
    flops = np.concatenate([np.broadcast_to(o[2], (o[0].shape[0],)) for o in outs])
    return GatedPredictions(logits, counts, flops)


class AdaptiveResult(NamedTuple):
    """Outcome of the confidence cascade (:func:`adaptive_select`).

    Attributes:
      logits: ``(batch, classes)`` logits of the level where each example stopped.
      level: ``int32 (batch,)`` index of that level in the density ladder.
      flops: ``(batch,)`` MACs spent: the sum over every level run (0 .. level).
    """

    logits: jax.Array
    level: jax.Array
    flops: jax.Array


def adaptive_select(logits: jax.Array, flops: jax.Array, threshold: float) -> AdaptiveResult:
    """The escalation policy, given every level's outputs.

    An example runs at level 0 (the lowest density); while its confidence
    ``max softmax(logits)`` is below ``threshold`` and a higher level remains, it is run
    again at the next level. The cost is cumulative (the low-density runs that failed are
    paid for).

    Args:
      logits: ``(L, batch, classes)``, level ``l`` = the model at the ``l``-th density of
        an increasing ladder.
      flops: ``(L, batch)`` or ``(L,)`` effective MACs of each level.
      threshold: confidence threshold in ``[0, 1]`` (``0``: always level 0; ``1``: always
        the last level, paying for all).

    Returns:
      :class:`AdaptiveResult`. Pure; jit-safe for a traced ``threshold``.

    References:
      Bolukbasi et al. (2017), Adaptive Neural Networks for Efficient Inference, ICML.
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"logits must be (levels, batch, classes), got shape {logits.shape}")
    if not _is_traced(threshold) and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    levels, batch = logits.shape[:2]
    flops = jnp.broadcast_to(jnp.asarray(flops, jnp.float32).reshape(levels, -1), (levels, batch))
    # threshold 1 means "never confident": a float32 softmax can round to exactly 1.0
    confident = jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1) >= threshold  # (L, B)
    confident = (confident & (jnp.asarray(threshold) < 1.0)).at[-1].set(True)
    level = jnp.argmax(confident, axis=0).astype(jnp.int32)  # first confident level
    chosen = jnp.take_along_axis(logits, level[None, :, None], axis=0)[0]
    spent = jnp.sum(jnp.where(jnp.arange(levels)[:, None] <= level[None, :], flops, 0.0), axis=0)
    return AdaptiveResult(chosen, level, spent)


def adaptive_predict(
    model: _GatedModel, x: jax.Array, densities: Sequence[float], threshold: float
) -> AdaptiveResult:
    """Run the confidence cascade of ``model`` on ``x (batch, ...)`` (masked path, jitted).

    Every level runs on the whole batch (a simulation of the cascade: the cost an example
    is charged is only that of the levels it reached); the density is a traced argument,
    so the ladder compiles once.

    Args:
      model: a gated model.
      x: a batch.
      densities: strictly increasing ladder, each in ``(0, 1]``.
      threshold: escalate while ``max softmax < threshold``.

    Returns:
      :class:`AdaptiveResult` (:func:`adaptive_select` over the ladder).

    Raises:
      ValueError: an invalid or non-increasing ladder.
    """
    ds = [check_density(d, f"densities[{i}]") for i, d in enumerate(densities)]
    if not ds or any(b <= a for a, b in itertools.pairwise(ds)):
        raise ValueError(f"densities must be a non-empty increasing sequence, got {densities!r}")
    graphdef, state = nnx.split(model)
    outs = [_predict(graphdef, state, x, jnp.float32(d)) for d in ds]  # one compilation
    return adaptive_select(
        jnp.stack([o[0] for o in outs]),
        jnp.stack([jnp.broadcast_to(o[2], (o[0].shape[0],)) for o in outs]),
        threshold,
    )

