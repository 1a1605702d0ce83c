"""Training sparse VD models with the ordinary train step: the noisy forward and the KL term.

``sparsejax.train.make_train_step(forward=noisy_forward, penalty=kl_penalty(N, kl_warmup(W)))``:
the step's PRNG key draws the weight noise, and the KL term weighted by ``β(step)/N`` is
added to the objective.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sparsejax.models import _shapes
from sparsejax.variational._layers import _VDLayer


def vd_layers(model: nnx.Module) -> list[tuple[str, _VDLayer]]:
    """``[(path, layer), ...]`` of every VD layer of ``model`` in graph order (paths ``/``-joined)."""
    return [
        ("/".join(str(k) for k in path), node)
        for path, node in nnx.iter_graph(model)
        if isinstance(node, _VDLayer)
    ]


def model_kl(model: nnx.Module) -> jax.Array:
    """Sum of :meth:`VDLinear.kl` over every VD layer of ``model`` (f32[]; 0 if none)."""
    return sum((layer.kl() for _, layer in vd_layers(model)), jnp.zeros((), jnp.float32))


def noisy_forward(model: nnx.Module, inputs: jax.Array, key: jax.Array) -> jax.Array:
    """``model(inputs, key=key)``: the forward of a VD model for the ordinary train step.

    :func:`sparsejax.train.make_train_step` (``forward=noisy_forward``) passes each step a
    key of its own (derived from ``state.key`` and ``state.step``), so the weight noise is a
    pure function of the train state; in evaluation mode the key is ignored. Any model
    whose ``__call__`` takes ``key=`` works (the VD LeNets, the gated models of
    :mod:`sparsejax.dynamic` at full density).
    """
    return model(inputs, key=key)


def kl_penalty(
    num_examples: int, kl_weight: float | Callable[[jax.Array], jax.Array] = 1.0
) -> Callable[[nnx.Module, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]:
    """The KL term of the per-example negative ELBO, for ``make_train_step(penalty=...)``.

    ``penalty(model, step) -> (β(step) · model_kl(model) / num_examples, {"kl", "kl_weight"})``
    with ``β`` = ``kl_weight`` (a float or a schedule such as :func:`kl_warmup`). With
    :func:`sparsejax.train.make_train_step` and :func:`noisy_forward` the objective is
    ``mean(loss_fn(logits, y)) + β(step) · model_kl(model) / num_examples`` (the SGVB
    objective of Molchanov et al. 2017 per example, with the warm-up of β), evaluated on
    the training-mode model; the metrics are ``loss`` (the objective), ``data_loss`` (the
    negative log-likelihood), ``kl``, ``kl_weight`` and ``accuracy``.

    Args:
      num_examples: training-set size ``N`` (the KL is per data set).
      kl_weight: β, float or ``step -> β``.

    Returns:
      The pure penalty function.

    Raises:
      ValueError: ``num_examples`` not a positive int.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import sparsejax.train as train
      >>> from flax import nnx
      >>> step = train.make_train_step(forward=noisy_forward,
      ...                              penalty=kl_penalty(60_000, kl_warmup(1_000)))
      >>> state = train.create_train_state(VDLeNet300100(rngs=nnx.Rngs(0)), optax.adam(1e-3),
      ...                                  key=0)
      >>> sorted(step(state, (jnp.ones((4, 784)), jnp.zeros(4, jnp.int32)))[1])
      ['accuracy', 'data_loss', 'kl', 'kl_weight', 'loss']
    """
    num_examples = _shapes.positive_int("num_examples", num_examples)

    def penalty(model: nnx.Module, step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        beta = jnp.asarray(kl_weight(step) if callable(kl_weight) else kl_weight, jnp.float32)
        kl = model_kl(model)
        return beta * kl / num_examples, {"kl": kl, "kl_weight": beta}

    return penalty


def make_vd_train_step(
    num_examples: int,
    kl_weight: float | Callable[[jax.Array], jax.Array] = 1.0,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = (
        optax.softmax_cross_entropy_with_integer_labels
    ),
    *,
    jit: bool = True,
) -> Callable[..., Any]:
    """Deprecated: ``make_train_step(loss_fn, forward=noisy_forward, penalty=kl_penalty(...))``.

    Builds exactly that step (:func:`sparsejax.train.make_train_step` with
    :func:`noisy_forward` and :func:`kl_penalty`); metrics ``loss``, ``data_loss``, ``kl``,
    ``kl_weight``, ``accuracy``. Arguments as in :func:`kl_penalty`; ``jit`` wraps the step
    in ``jax.jit``.
    """
    warnings.warn(
        "sparsejax.variational.make_vd_train_step is deprecated: use "
        "sparsejax.train.make_train_step(forward=sparsejax.variational.noisy_forward, "
        "penalty=sparsejax.variational.kl_penalty(...))",
        DeprecationWarning,
        stacklevel=2,
    )
    penalty = kl_penalty(num_examples, kl_weight)
    from sparsejax.train import make_train_step  # deprecated alias: imports up a layer

    return make_train_step(loss_fn, forward=noisy_forward, penalty=penalty, jit=jit)
