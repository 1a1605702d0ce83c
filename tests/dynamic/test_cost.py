"""Cost tables, active channels, effective MACs and gate penalties (closed forms)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gated_models import mnist1d as _mnist1d
from gated_models import random_predictors as _random_predictors

from sparsejax import dynamic as dy
from sparsejax import metrics
from sparsejax.models import MNIST1DCNN, LeNet5


@pytest.mark.parametrize("jit", [False, True])
def test_gate_penalty_equals_closed_form(jit):
    model = _random_predictors(_mnist1d("hard_concrete"), jax.random.key(3))
    x = jax.random.normal(jax.random.key(1), (4, 40))
    _, gates = model.with_gates(x, 0.5)
    f = jax.jit(dy.gate_penalty, static_argnums=1) if jit else dy.gate_penalty
    expected = np.mean([
        np.mean(1 / (1 + np.exp(-(np.asarray(g.logits) - (2 / 3) * np.log(1 / 11)))))
        for g in gates.values()
    ])
    assert float(f(gates, "hard_concrete")) == pytest.approx(expected, rel=1e-5)
    expected_l1 = np.mean([np.mean(np.maximum(np.asarray(g.logits), 0)) for g in gates.values()])
    assert float(f(gates, "fbs")) == pytest.approx(expected_l1, rel=1e-5)



def test_dense_flops_match_metrics_flops_of_zoo_models():
    cnn = MNIST1DCNN(rngs=nnx.Rngs(0))
    lenet = LeNet5(rngs=nnx.Rngs(0))
    for zoo, gated, x in (
        (cnn, _mnist1d(), jnp.ones((1, 40))),
        (lenet, dy.GatedLeNet5(rngs=nnx.Rngs(0)), jnp.ones((1, 28, 28, 1))),
    ):
        graphdef = nnx.graphdef(zoo)
        report = metrics.flops(lambda p, x, g=graphdef: nnx.merge(g, p)(x), nnx.state(zoo), x)
        assert dy.dense_flops(gated.costs) == report.total_flops
    assert dy.dense_flops(_mnist1d().costs) == 31_750
    assert dy.dense_flops(dy.GatedLeNet5(rngs=nnx.Rngs(0)).costs) == 2_293_000


def test_effective_flops_closed_form():
    model = _mnist1d()
    _, gates = model.with_gates(jnp.ones((2, 40)), 0.5)  # k = 13 in every layer
    flops = dy.effective_flops(model.costs, dy.active_counts(gates))
    # conv1 19*5*1*13 + conv2 10*3*13*13 + conv3 5*3*13*13 + linear 5*13*10
    layers = 1235 + 5070 + 2535 + 650
    predictors = 1 * 25 + 13 * 25 + 13 * 25
    assert flops.tolist() == [layers + predictors] * 2
    no_pred = dy.effective_flops(model.costs, dy.active_counts(gates), include_predictor=False)
    assert no_pred.tolist() == [layers] * 2
    with pytest.raises(ValueError, match="'conv2'"):
        dy.effective_flops(model.costs, {"conv1": 3, "conv3": 3})


