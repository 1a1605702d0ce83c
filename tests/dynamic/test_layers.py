"""Gated layers: exactly k channels per input, skipped channels exactly zero, bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gated_models import mnist1d as _mnist1d
from gated_models import random_predictors as _random_predictors

from sparsejax import dynamic as dy
from sparsejax.models import LeNet5


@pytest.mark.parametrize("gate", dy.GATE_KINDS)
def test_gate_selects_exactly_k_channels_per_input(gate):
    model = _mnist1d(gate)
    x = jax.random.normal(jax.random.key(1), (5, 40))
    graphdef, state = nnx.split(model)

    def counts(state, x, d):
        _, gates = nnx.merge(graphdef, state).with_gates(x, d)
        return dy.active_counts(gates)

    f = jax.jit(counts)
    for d, k in ((1.0, 25), (0.5, 13), (0.25, 6), (0.04, 1)):
        for layer, c in f(state, x, d).items():
            assert c.tolist() == [k] * 5, (layer, d)
    # per-example densities: one k per example
    d = jnp.asarray([0.04, 0.25, 0.5, 0.75, 1.0])
    assert f(state, x, d)["conv2"].tolist() == [1, 6, 13, 19, 25]
    # the selected channels depend on the input
    _random_predictors(model, jax.random.key(2))
    _, gates = jax.jit(lambda s, x: nnx.merge(graphdef, s).with_gates(x, 0.25))(
        nnx.state(model), x)
    chosen = {tuple(np.flatnonzero(row)) for row in np.asarray(gates["conv3"].values)}
    assert len(chosen) > 1


def test_skipped_channels_output_exactly_zero():
    graphdef, state = nnx.split(dy.GatedConv(3, 8, (3, 3), rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 3))
    y, gate = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, 0.5))(state, x)
    off = np.asarray(gate.values) == 0
    assert off.sum() == 2 * 4
    assert np.all(np.asarray(y).transpose(0, 3, 1, 2)[off] == 0.0)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(TypeError, match="True"):
        dy.check_density(True)
    with pytest.raises(ValueError, match="'l1'"):
        dy.GatedConv(2, 4, (3,), gate="l1", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="in_channels=7 must divide in_features=20"):
        dy.GatedLinear(20, 4, in_channels=7, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch,\) = \(2,\)"):
        _mnist1d()(jnp.ones((2, 40)), jnp.asarray([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="penalty"):
        dy.sampled_density_forward(penalty=-1.0)
    gated = dy.GatedLeNet5(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="shape mismatch at 'conv1/kernel'"):
        dy.load_dense_params(gated, nnx.state(LeNet5((28, 28, 3), rngs=nnx.Rngs(0)), nnx.Param))


