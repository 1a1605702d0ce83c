"""The jitted training step: ``train_step(state, batch) -> (state, metrics)``."""

from __future__ import annotations

import functools
import inspect
import zlib
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sparsejax.metrics import accuracy as _accuracy
from sparsejax.train._state import TrainState, _holds_variables, _plain

Batch: TypeAlias = tuple[Any, Any]
LossFn: TypeAlias = Callable[[jax.Array, jax.Array], jax.Array]
Forward: TypeAlias = Callable[..., Any]
MetricsFn: TypeAlias = Callable[[jax.Array, jax.Array], Mapping[str, jax.Array]]
Penalty: TypeAlias = Callable[[nnx.Module, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]
StepFn: TypeAlias = Callable[["TrainState", Batch], tuple["TrainState", dict[str, jax.Array]]]


def _call(model: nnx.Module, inputs: jax.Array, key: jax.Array | None = None) -> jax.Array:
    return model(inputs)


def _takes_key(forward: Forward) -> bool:
    """Whether ``forward`` takes ``(model, inputs, key)`` (else ``(model, inputs)``)."""
    try:
        params = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: the two-argument form
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _run_forward(
    forward: Forward, model: nnx.Module, inputs: jax.Array, key: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(logits, extra_losses)`` from a forward returning ``logits`` or ``(logits, losses)``."""
    out = forward(model, inputs, key) if _takes_key(forward) else forward(model, inputs)
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], Mapping):
            raise TypeError(
                "forward must return logits or (logits, {name: scalar loss term}), got a tuple "
                f"of {len(out)} items"
            )
        return out[0], dict(out[1])
    return out, {}


def _classification(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    return {"accuracy": _accuracy(logits, labels)}


def _reseed(model: nnx.Module, key: jax.Array) -> None:
    """Reseed every RNG stream of ``model``: tag ``t`` gets ``fold_in(key, crc32(t))``."""
    tags = sorted({s.key.tag for _, s in nnx.iter_graph(model) if isinstance(s, nnx.RngStream)})
    if tags:
        stream_keys = {t: jax.random.fold_in(key, np.uint32(zlib.crc32(t.encode()))) for t in tags}
        nnx.reseed(model, policy="match_shape", **stream_keys)


def _per_example_loss(loss_fn: LossFn, logits: jax.Array, labels: jax.Array) -> jax.Array:
    losses = loss_fn(logits, labels)
    if jnp.ndim(losses) != 1 or jnp.shape(losses)[0] != jnp.shape(logits)[0]:
        raise ValueError(
            "loss_fn(logits, labels) must return per-example losses of shape (batch,) = "
            f"({jnp.shape(logits)[0]},), got shape {jnp.shape(losses)}"
        )
    return losses


def _check_seed_axis_flags(vmap_seeds: bool, per_seed_batches: bool) -> None:
    if per_seed_batches and not vmap_seeds:
        raise ValueError("per_seed_batches=True needs vmap_seeds=True")


def _one_step(
    loss_fn: LossFn, forward: Forward, metrics_fn: MetricsFn, penalty: Penalty | None
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """The single-seed, unjitted ``train_step(state, batch, prune_now=None)``.

    ``prune_now`` (``None``: not passed) goes to ``tx.update`` as the
    schedule-on-the-host hint of :func:`sparsejax.transforms.pruning`.
    """

    def train_step(
        state: TrainState, batch: Batch, prune_now: bool | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        inputs, labels = batch
        step_key = jax.random.fold_in(state.key, state.step)
        # A key of its own for the forward: streams are reseeded from step_key itself.
        forward_key = jax.random.fold_in(step_key, np.uint32(zlib.crc32(b"forward")))
        plain = not (_holds_variables(state.params) or _holds_variables(state.rest))

        def objective(params):
            # copy=True: fresh variables of the grad trace, which BatchNorm and the RNG
            # streams may then update (the state's own variables belong to the outer trace).
            model = nnx.merge(state.graphdef, params, state.rest, copy=True)
            model.train()
            _reseed(model, step_key)
            logits, terms = _run_forward(forward, model, inputs, forward_key)
            loss = jnp.mean(_per_example_loss(loss_fn, logits, labels))
            extra = {}
            if terms:
                extra = {"data_loss": loss, **terms}
                loss = loss + sum(terms.values())
            if penalty is not None:
                value, penalty_metrics = penalty(model, state.step)
                extra = {"data_loss": extra.get("data_loss", loss), **extra, **penalty_metrics}
                loss = loss + value
            _, _, rest = nnx.split(model, nnx.Param, ...)
            if plain:
                rest = _plain(rest)
            return loss, (logits, rest, extra)

        (loss, (logits, rest, extra)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params
        )
        hint = {} if prune_now is None else {"prune_now": prune_now}
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params, **hint)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **extra, **metrics_fn(logits, labels)}
        new_state = state.replace(
            step=state.step + 1, params=params, rest=rest, opt_state=opt_state
        )
        return new_state, metrics

    return train_step


def make_train_step(
    loss_fn: LossFn = optax.softmax_cross_entropy_with_integer_labels,
    *,
    forward: Forward = _call,
    metrics_fn: MetricsFn = _classification,
    penalty: Penalty | None = None,
    vmap_seeds: bool = False,
    per_seed_batches: bool = False,
    host_schedule: bool = False,
    jit: bool = True,
) -> StepFn:
    """Build ``train_step(state, batch) -> (state, metrics)``.

    One step: merge ``(graphdef, params, rest)``, switch to training mode
    (``model.train()``: dropout on, BatchNorm with batch statistics), reseed
    every RNG stream of the model (stream tag ``s`` gets
    ``fold_in(fold_in(state.key, state.step), crc32(s))``: randomness is a pure
    function of the state's key and step), compute
    ``mean(loss_fn(forward(model, x), y))`` and its gradient with respect to
    ``params`` only, ``updates, opt_state = tx.update(grads, opt_state,
    params)`` (the sparsejax transforms need ``params``: no extra call),
    ``params = optax.apply_updates(params, updates)``; ``rest`` takes the
    values the forward pass left (new BatchNorm statistics).

    Args:
      loss_fn: ``(logits[B, C], labels[B]) -> losses[B]`` per-example loss
        (default: softmax cross-entropy with integer labels).
      forward: ``(model, inputs, key) -> logits`` (or ``(model, inputs)``); default
        ``model(inputs)``. ``key`` is a typed PRNG key of the step, independent of
        the keys that reseed the model's RNG streams, for stochastic forwards (sampled
        widths, gate noise). It may return ``(logits, {name: scalar})``: each extra
        term is added to the objective and logged under its name.
      metrics_fn: ``(logits, labels) -> {name: scalar}`` logged besides
        ``"loss"``; default ``{"accuracy": ...}``.
      penalty: optional ``(model, step) -> (value, {name: scalar})`` added to
        the objective, evaluated on the model after its forward pass (so it
        sees the training-mode model: e.g. the KL term of variational dropout,
        a group-lasso or L0 penalty). With a penalty the metrics hold
        ``"loss"`` (the whole objective), ``"data_loss"`` (the mean of
        ``loss_fn``) and the penalty's own entries.
      vmap_seeds: ``jax.vmap`` the step over a leading seed axis of the state
        (see :func:`create_train_states`).
      per_seed_batches: with ``vmap_seeds``, the batch also has a leading seed
        axis (``x[S, B, ...]``); otherwise all seeds see the same batch.
      host_schedule: the step becomes ``train_step(state, batch, prune_now)``
        with ``prune_now`` a static Python bool passed to ``tx.update`` (see
        :func:`sparsejax.transforms.pruning`): the loop says on the host
        whether this step updates the mask, e.g.
        ``prune_now=t in set(sparsejax.schedules.update_steps(schedule, n))``.
        Two compilations (``True``/``False``) and no ``lax.cond``, whose
        predicate XLA:GPU reads back to the host on every step.
        :func:`make_train_loop` does this for a window of steps, reading the
        schedule from the optimizer state.
      jit: wrap in ``jax.jit`` (``False`` gives the eager reference).

    Returns:
      A pure function. ``batch`` is ``(inputs[B, ...], labels[B])``; the
      metrics are ``float32`` scalars (``[S]`` with ``vmap_seeds``).
    """
    _check_seed_axis_flags(vmap_seeds, per_seed_batches)
    train_step = _one_step(loss_fn, forward, metrics_fn, penalty)
    batch_axis = 0 if per_seed_batches else None
    if not host_schedule:
        step = train_step
        if vmap_seeds:
            step = jax.vmap(train_step, in_axes=(0, batch_axis))
        return jax.jit(step) if jit else step

    def hinted_step(state, batch, prune_now):
        if not isinstance(prune_now, (bool, np.bool_)):
            raise TypeError(
                "train_step(state, batch, prune_now): prune_now must be a Python bool "
                f"(host_schedule=True), got {prune_now!r} of type {type(prune_now).__name__}"
            )
        one = functools.partial(train_step, prune_now=bool(prune_now))
        return (jax.vmap(one, in_axes=(0, batch_axis)) if vmap_seeds else one)(state, batch)

    return jax.jit(hinted_step, static_argnames="prune_now") if jit else hinted_step
