"""Training gated models with the ordinary train step and a sampled-density forward."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from gated_models import mnist1d as _mnist1d
from gated_models import random_predictors as _random_predictors

from sparsejax import dynamic as dy
from sparsejax.train import create_train_state, make_train_step


def test_train_step_penalty_and_learning():
    state = create_train_state(_mnist1d("hard_concrete"), optax.adam(1e-2),
                               key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 40))
    y = jnp.arange(16, dtype=jnp.int32) % 10
    jitted = make_train_step(forward=dy.sampled_density_forward(min_density=0.2, penalty=0.1))
    s1, m1 = jitted(state, (x, y))
    assert int(s1.step) == 1
    # the expected-L0 penalty starts near P(z != 0) at log a = 3: sigmoid(3 + 2/3 log 11);
    # the logged term is the weighted one, penalty · gate_penalty
    assert float(m1["penalty"]) / 0.1 == pytest.approx(
        1 / (1 + math.exp(-3 - 2 / 3 * math.log(11))), abs=0.01)
    first = float(m1["loss"])
    for _ in range(30):
        s1, m1 = jitted(s1, (x, y))
    assert float(m1["loss"]) < first


def _hand_written_objective(state, x, y, key, lo, hi, lam):
    """The gated objective written out (the body of the former make_gated_train_step)."""
    k_density, k_gate = jax.random.split(key)
    density = jax.random.uniform(k_density, (x.shape[0],), jnp.float32, lo, hi)
    slot = jnp.arange(x.shape[0]) % 4
    density = jnp.where(slot == 0, lo, jnp.where(slot == 1, hi, density))

    def objective(params):
        model = nnx.merge(state.graphdef, params, state.rest, copy=True)
        logits, gates = model.with_gates(x, density, key=k_gate)
        reg = dy.gate_penalty(gates, model.gate_kind)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)) + lam * reg
        return loss, (reg, density)

    return jax.value_and_grad(objective, has_aux=True)(state.params)


@pytest.mark.parametrize("gate", dy.GATE_KINDS)
def test_sampled_density_forward_gives_the_hand_written_objective(gate):
    model = _random_predictors(_mnist1d(gate), jax.random.key(3), scale=0.5)
    state = create_train_state(model, optax.sgd(0.5), key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 40))
    y = jnp.arange(16, dtype=jnp.int32) % 10
    lo, hi, lam = 0.2, 0.9, 0.1
    forward = dy.sampled_density_forward(min_density=lo, max_density=hi, penalty=lam)
    # the forward alone, at a fixed key: the densities and gate noise the objective uses
    key = jax.random.key(7)
    (loss, (reg, density)), _ = _hand_written_objective(state, x, y, key, lo, hi, lam)
    logits, terms = forward(state.model(), x, key)
    assert density[:2].tolist() == pytest.approx([lo, hi])
    assert np.all((np.asarray(density) >= lo) & (np.asarray(density) <= hi))
    data = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    assert float(data + terms["penalty"]) == pytest.approx(float(loss), rel=1e-6)
    assert float(terms["penalty"]) == pytest.approx(lam * float(reg), rel=1e-6)
    # inside make_train_step, at the key the step hands its forward
    seen = []

    def spy(model, inputs, key):
        seen.append(key)
        return forward(model, inputs, key)

    s1, m1 = make_train_step(forward=spy, jit=False)(state, (x, y))
    (loss, (reg, _)), grads = _hand_written_objective(state, x, y, seen[0], lo, hi, lam)
    assert float(m1["loss"]) == pytest.approx(float(loss), rel=1e-6)
    assert float(m1["penalty"]) == pytest.approx(lam * float(reg), rel=1e-6)
    assert float(m1["data_loss"]) == pytest.approx(float(loss - lam * reg), rel=1e-6)
    updates, _ = state.tx.update(grads, state.opt_state, state.params)
    chex.assert_trees_all_close(s1.params, optax.apply_updates(state.params, updates),
                                rtol=1e-5, atol=1e-6)
    # jitted: the same step
    s2, m2 = make_train_step(forward=forward)(state, (x, y))
    assert float(m2["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-5)
    chex.assert_trees_all_close(s2.params, s1.params, rtol=1e-5, atol=1e-6)


def test_make_gated_train_step_is_a_deprecated_alias():
    state = create_train_state(_mnist1d("hard_concrete"), optax.adam(1e-2),
                               key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 40))
    y = jnp.arange(16, dtype=jnp.int32) % 10
    with pytest.warns(DeprecationWarning, match="sampled_density_forward"):
        old = dy.make_gated_train_step(min_density=0.2, penalty=0.1)
    new = make_train_step(forward=dy.sampled_density_forward(min_density=0.2, penalty=0.1))
    s_old, m_old = old(state, (x, y))
    s_new, m_new = new(state, (x, y))
    assert sorted(m_old) == ["accuracy", "data_loss", "loss", "penalty"]
    chex.assert_trees_all_close(m_old, m_new)
    chex.assert_trees_all_close(s_old.params, s_new.params)
    with pytest.raises(ValueError, match="min_density.*1.5"):
        dy.make_gated_train_step(min_density=1.5)
    with pytest.raises(ValueError, match="penalty"):
        dy.make_gated_train_step(penalty=-1.0)
