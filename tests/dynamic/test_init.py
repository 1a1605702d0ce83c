"""Gated models started from trained dense weights and from the static L1 filter ranking."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gated_models import mnist1d as _mnist1d

from sparsejax import dynamic as dy
from sparsejax.models import MNIST1DCNN, LeNet5


@pytest.mark.parametrize("which", ["lenet5", "mnist1d"])
def test_dense_weights_load_and_reproduce_the_zoo_model(which):
    if which == "lenet5":
        zoo, gated = LeNet5(rngs=nnx.Rngs(5)), dy.GatedLeNet5(rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    else:
        zoo, gated = MNIST1DCNN(rngs=nnx.Rngs(5)), _mnist1d()
        x = jax.random.normal(jax.random.key(1), (2, 40))
    dy.load_dense_params(gated, nnx.state(zoo, nnx.Param))
    for name in gated.gated_layers:  # FBS saliency = relu(0 + 1) = 1: every gate open at 1.0
        layer = getattr(gated, name)
        layer.gate.kernel[...] = jnp.zeros_like(layer.gate.kernel[...])
    gd, zd = nnx.graphdef(gated), nnx.graphdef(zoo)
    out_gated = jax.jit(lambda s, x: nnx.merge(gd, s)(x, 1.0))(nnx.state(gated), x)
    out_zoo = jax.jit(lambda s, x: nnx.merge(zd, s)(x))(nnx.state(zoo), x)
    chex.assert_trees_all_close(out_gated, out_zoo, atol=1e-6)


@pytest.mark.parametrize("gate", ["hard_concrete", "fbs"])
def test_gates_from_filters_start_at_static_l1_filter_pruning(gate):
    # After init_gates_from_filters every input selects, at every density, the channels
    # that L1-norm filter pruning keeps; hard-concrete gates are then exactly 1, so the
    # gated model computes the statically pruned zoo model.
    zoo, gated = LeNet5(rngs=nnx.Rngs(5)), dy.GatedLeNet5(gate=gate, rngs=nnx.Rngs(0))
    dy.load_dense_params(gated, nnx.state(zoo, nnx.Param))
    dy.init_gates_from_filters(gated)
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
    for d in (0.25, 0.5, 0.9):
        pruned = nnx.clone(zoo)
        keep = {}
        for name, k in zip(gated.gated_layers, gated.active_k(d), strict=True):
            layer = getattr(pruned, name)
            w = np.asarray(layer.kernel[...])
            norms = np.abs(w.reshape(-1, w.shape[-1])).sum(0)
            keep[name] = np.sort(np.argsort(norms, kind="stable")[-k:])
            off = np.setdiff1d(np.arange(w.shape[-1]), keep[name])
            layer.kernel[...] = layer.kernel[...].at[..., off].set(0.0)
            layer.bias[...] = layer.bias[...].at[off].set(0.0)
        logits, gates = gated.with_gates(x, d)
        for name in gated.gated_layers:
            for row in np.asarray(gates[name].values):
                np.testing.assert_array_equal(np.flatnonzero(row), keep[name])
        if gate == "hard_concrete":
            chex.assert_trees_all_close(logits, pruned(x), atol=1e-5)
    with pytest.raises(ValueError, match="spread must be a number > 0, got 0"):
        dy.init_gates_from_filters(gated, 0)


