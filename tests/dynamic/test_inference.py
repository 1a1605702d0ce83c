"""The gathered fast path, its compilations, gated predictions and the confidence cascade."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gated_models import mnist1d as _mnist1d
from gated_models import random_predictors as _random_predictors

from sparsejax import dynamic as dy


def _masked(graphdef):
    return jax.jit(lambda s, x, d: nnx.merge(graphdef, s)(x, d))


@pytest.mark.parametrize("gate", dy.GATE_KINDS)
def test_gathered_equals_masked_mnist1d(gate):
    model = _random_predictors(_mnist1d(gate), jax.random.key(4), scale=0.5)
    graphdef, state = nnx.split(model)
    masked = _masked(graphdef)
    for batch, densities in ((1, (0.25,)), (3, (1.0, 0.6, 0.04))):
        x = jax.random.normal(jax.random.key(5), (batch, 40))
        for d in densities:
            fast = dy.apply_gathered(graphdef, state, x, model.active_k(d))
            chex.assert_trees_all_close(fast, masked(state, x, d), atol=1e-5, rtol=1e-5)
    if gate == "fbs":  # not jitted: the masked path eagerly gives the same logits
        x = jax.random.normal(jax.random.key(5), (1, 40))
        chex.assert_trees_all_close(
            model(x, 0.25), dy.apply_gathered(graphdef, state, x, model.active_k(0.25)),
            atol=1e-5,
        )



def test_gathered_equals_masked_lenet5_and_fc1_is_gated():
    model = _random_predictors(dy.GatedLeNet5(rngs=nnx.Rngs(0)), jax.random.key(6), scale=0.2)
    x = jax.random.normal(jax.random.key(7), (2, 28, 28, 1))
    graphdef, state = nnx.split(model)
    logits, gates = jax.jit(lambda s, x: nnx.merge(graphdef, s).with_gates(x, 0.3))(state, x)
    assert logits.shape == (2, 10)
    assert {n: c.tolist() for n, c in dy.active_counts(gates).items()} == {
        "conv1": [6, 6], "conv2": [15, 15], "fc1": [150, 150]
    }
    frac = dy.active_fraction(gates)
    np.testing.assert_allclose(frac["fc1"], [0.3, 0.3], rtol=1e-6)
    np.testing.assert_allclose(frac["conv1"], [0.3, 0.3], rtol=1e-6)
    fast = dy.apply_gathered(graphdef, state, x, model.active_k(0.3))
    chex.assert_trees_all_close(fast, logits, atol=1e-5, rtol=1e-5)


TRACES = {"gathered": 0, "masked": 0}


class _CountingCNN(dy.GatedMNIST1DCNN):
    def gathered_one(self, x, ks):
        TRACES["gathered"] += 1  # Python side effect: runs once per trace
        return super().gathered_one(x, ks)

    def with_gates(self, x, density=1.0, *, key=None):
        TRACES["masked"] += 1
        return super().with_gates(x, density, key=key)


def test_density_changes_retrace_only_per_distinct_k():
    model = _CountingCNN(rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    x = jnp.ones((1, 40))
    TRACES.update(gathered=0, masked=0)
    # 0.5, 0.51, 0.52 all give k = 13 on 25 channels: one compilation
    for d in (0.5, 0.51, 0.52, 0.5):
        assert model.active_k(d) == (13, 13, 13)
        dy.apply_gathered(graphdef, state, x, model.active_k(d))
    assert TRACES["gathered"] == 1
    dy.apply_gathered(graphdef, state, x, model.active_k(0.3))  # k = 8: second compilation
    dy.apply_gathered(graphdef, state, x, model.active_k(0.31))  # k = 8 again
    assert TRACES["gathered"] == 2
    # the masked path takes the density as a traced argument: one trace for any density
    masked = jax.jit(lambda s, x, d: nnx.merge(graphdef, s)(x, d))
    for d in (0.1, 0.5, 0.77, 1.0):
        masked(state, x, jnp.float32(d))
    assert TRACES["masked"] == 1



def test_make_gathered_equals_apply_gathered_and_traces_once():
    model = _CountingCNN(rngs=nnx.Rngs(0))
    _random_predictors(model, jax.random.key(8), scale=0.5)
    graphdef, state = nnx.split(model)
    x = jax.random.normal(jax.random.key(9), (3, 40))
    ks = model.active_k(0.4)
    f = dy.make_gathered(graphdef, list(ks))  # any sequence of ints
    TRACES.update(gathered=0)
    out = f(state, x)
    for _ in range(3):
        f(state, x + 1.0)
    assert TRACES["gathered"] == 1
    chex.assert_trees_all_close(out, dy.apply_gathered(graphdef, state, x, ks), atol=1e-6)
    masked = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, 0.4))(state, x)
    chex.assert_trees_all_close(out, masked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ks, bad", [((3, 0, 3), "ks[1]"), ((3, 2.5, 3), "ks[1]"),
                                     ((True, 3, 3), "ks[0]")])
def test_make_gathered_rejects_bad_ks(ks, bad):
    graphdef, _ = nnx.split(dy.GatedMNIST1DCNN(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=re.escape(bad) + " must be a positive int"):
        dy.make_gathered(graphdef, ks)



def test_adaptive_select_escalates_below_threshold():
    sure = jnp.asarray([10.0, 0.0, 0.0])  # max softmax ~ 1
    unsure = jnp.asarray([0.1, 0.0, 0.0])  # max softmax ~ 0.35
    logits = jnp.stack([
        jnp.stack([sure, unsure, unsure]),  # level 0
        jnp.stack([sure, sure, unsure]),  # level 1
        jnp.stack([sure, sure, sure * 2]),  # level 2
    ])
    flops = jnp.asarray([10.0, 30.0, 100.0])
    res = jax.jit(dy.adaptive_select)(logits, flops, 0.9)
    assert res.level.tolist() == [0, 1, 2]
    assert res.flops.tolist() == [10.0, 40.0, 140.0]  # failed runs are paid for
    chex.assert_trees_all_close(res.logits[2], sure * 2)
    assert dy.adaptive_select(logits, flops, 0.0).flops.tolist() == [10.0] * 3
    assert dy.adaptive_select(logits, flops, 1.0).level.tolist() == [2, 2, 2]
    # a saturated float32 softmax (exactly 1.0) still escalates at threshold 1, jitted too
    saturated = jnp.asarray([[[20.0, 0.0]], [[0.0, 1.0]]])
    assert float(jnp.max(jax.nn.softmax(saturated[0]))) == 1.0
    for select in (dy.adaptive_select, jax.jit(dy.adaptive_select)):
        assert select(saturated, jnp.asarray([1.0, 2.0]), 1.0).level.tolist() == [1]
        assert select(saturated, jnp.asarray([1.0, 2.0]), 0.99).level.tolist() == [0]
    with pytest.raises(ValueError, match="1.5"):
        dy.adaptive_select(logits, flops, 1.5)


def test_adaptive_predict_matches_runs_at_each_density():
    model = _random_predictors(_mnist1d(), jax.random.key(8))
    x = jax.random.normal(jax.random.key(9), (6, 40))
    res = dy.adaptive_predict(model, x, (0.25, 1.0), threshold=0.5)
    graphdef = nnx.graphdef(model)

    @jax.jit
    def run(state, d):
        logits, gates = nnx.merge(graphdef, state).with_gates(x, d)
        return logits, dy.effective_flops(model.costs, dy.active_counts(gates))

    (lo, f_lo), (hi, f_hi) = run(nnx.state(model), 0.25), run(nnx.state(model), 1.0)
    conf = np.max(np.asarray(jax.nn.softmax(lo)), -1)
    expect_level = (conf < 0.5).astype(int)
    assert res.level.tolist() == expect_level.tolist()
    np.testing.assert_allclose(res.flops, f_lo + expect_level * f_hi)
    np.testing.assert_allclose(res.logits, np.where(expect_level[:, None], hi, lo), atol=1e-6)
    with pytest.raises(ValueError, match="increasing"):
        dy.adaptive_predict(model, x, (0.5, 0.25), 0.5)


