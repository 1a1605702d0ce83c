"""Start a gated model from a trained dense one: its weights and its filter ranking."""

from __future__ import annotations

import numbers

import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.dynamic._layers import _GATE_BIAS
from sparsejax.dynamic._models import _GatedModel
from sparsejax.structures import Neurons
from sparsejax.tree import named_leaves


def init_gates_from_filters(gated: _GatedModel, spread: float = 0.1) -> None:
    """Start every gate predictor at the static L1 filter ranking (in place).

    The predictor's weights become 0 and its biases ``base + spread · r``, with ``r`` in
    ``[0, 1]`` the rank of the channel's filter L1 norm in its layer (0: the smallest;
    equal norms: the lower index ranks lower, as in :func:`sparsejax.prune`) and
    ``base`` the gate kind's initial bias (FBS 1.0, hard concrete 3.0). At step 0 every
    input selects, at every density, the channels that L1-norm filter pruning (Li et al.
    2017) keeps, with multipliers near 1 (FBS ``1 .. 1 + spread``, hard concrete 1): the
    gated model starts as the statically pruned one, and training makes the choice
    input-dependent. Call after :func:`load_dense_params`, so the norms are the trained
    filters'.

    Args:
      gated: a gated zoo model (:class:`GatedLeNet5`, :class:`GatedMNIST1DCNN`).
      spread: bias range of the ranking, ``> 0`` (small: the winners' FBS saliencies
        scale their channels).

    Raises:
      ValueError: ``spread`` not a positive number.
    """
    if isinstance(spread, bool) or not isinstance(spread, numbers.Real) or not spread > 0:
        raise ValueError(f"spread must be a number > 0, got {spread!r}")
    base = _GATE_BIAS[gated.gate_kind]
    for name in gated.gated_layers:
        layer = getattr(gated, name)
        kernel = layer.kernel[...]
        channels = kernel.shape[-1]
        norms = Neurons().reduce(jnp.abs(kernel), "l1").reshape(channels)  # as sj.prune
        rank = jnp.argsort(jnp.argsort(norms, stable=True), stable=True)
        bias = base + spread * rank.astype(jnp.float32) / max(channels - 1, 1)
        gate = layer.gate
        gate.kernel[...] = jnp.zeros_like(gate.kernel[...])
        gate.bias[...] = bias.astype(gate.bias[...].dtype)


def load_dense_params(gated: _GatedModel, dense_params: nnx.State) -> None:
    """Copy a trained zoo model's ``nnx.Param`` state into ``gated`` (in place).

    Every ``kernel``/``bias`` of the dense model (e.g. ``nnx.state(LeNet5(...), nnx.Param)``)
    must exist in the gated model with the same path and shape; the gate predictors keep
    their initialisation.

    Raises:
      ValueError: a dense path missing from the gated model, or a shape mismatch (naming
        the path and both shapes).
    """
    target = dict(named_leaves(nnx.state(gated, nnx.Param)))
    for name, value in named_leaves(dense_params):
        if name not in target:
            raise ValueError(f"dense parameter {name!r} has no counterpart in the gated model")
        if tuple(target[name].shape) != tuple(np.shape(value)):
            raise ValueError(
                f"shape mismatch at {name!r}: dense {tuple(np.shape(value))}, gated "
                f"{tuple(target[name].shape)}"
            )
    nnx.update(gated, dense_params)
