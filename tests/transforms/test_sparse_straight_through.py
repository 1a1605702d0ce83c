"""straight_through (STE / SR-STE): the loss sees the exact N:M or top-k projection of dense
weights that learn through it, the sparse-refined decay in closed form, jit / vmap, accessors,
and error messages."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from transform_problems import _batch, _mlp_loss, _mlp_params, _train_step

import sparsejax as sj
from sparsejax.transforms import (
    StraightThroughState,
    current_mask,
    pruning_schedules,
    straight_through,
    with_mask,
)

LR, DECAY = 0.05, 2e-4


def _run(tx, steps, jit=True):
    params = _mlp_params(jax.random.key(0))
    state = tx.init(params)
    params = sj.apply_mask(params, current_mask(state))
    step = jax.jit(_train_step(tx)) if jit else _train_step(tx)
    out = [(params, state)]
    for _ in range(steps):
        params, state, _ = step(params, state, _batch())
        out.append((params, state))
    return out


def test_two_four_projection_and_the_sr_ste_update_in_closed_form():
    """SGD: W' = W - lr (g(W~) + λ m̄ ⊙ W) exactly; params = 2:4 projection of W'."""
    tx = straight_through(optax.sgd(LR), decay=DECAY)
    history = _run(tx, 5)
    for (params, state), (new_params, new_state) in itertools.pairwise(history):
        dense = {"dense0": state.dense[0], "out": state.dense[1]}
        mask = current_mask(state)
        grads = jax.grad(_mlp_loss)(params, _batch())
        for name in ("dense0", "out"):
            w, g, m = (np.asarray(x) for x in (dense[name], grads[name]["kernel"],
                                                 mask[name]["kernel"]))
            # the forward saw the projection of W
            np.testing.assert_array_equal(np.asarray(params[name]["kernel"]), np.where(m, w, 0))
            expected = w - np.float32(LR) * (g + np.where(m, 0, np.float32(DECAY) * w))
            np.testing.assert_allclose(np.asarray(new_state.dense[0 if name == "dense0" else 1]),
                                       expected, rtol=1e-6, atol=1e-7)
            new_w = np.asarray(new_state.dense[0 if name == "dense0" else 1])
            new_m = np.asarray(current_mask(new_state)[name]["kernel"])
            # 2:4 along the input axis: exactly 2 kept of every 4, the 2 largest |W'|
            runs = np.abs(new_w).reshape(-1, 4, new_w.shape[1])
            kept = new_m.reshape(-1, 4, new_w.shape[1])
            assert np.all(kept.sum(1) == 2)
            assert np.all(np.where(kept, runs, np.inf).min(1) >= np.where(kept, -np.inf,
                                                                           runs).max(1))
            p = np.asarray(new_params[name]["kernel"])
            assert np.all(p[~new_m] == 0.0)  # pruned params exactly 0
            np.testing.assert_allclose(p[new_m], new_w[new_m], rtol=2 ** -23, atol=0)
        # biases are not projected: plain SGD
        np.testing.assert_allclose(new_params["out"]["bias"],
                                   params["out"]["bias"] - LR * grads["out"]["bias"], rtol=1e-6)


def test_plain_ste_passes_the_gradient_straight_through():
    """decay=0: a pruned weight moves by -lr·g(W~) and comes back when it outgrows a kept one."""
    params = {"w": jnp.array([[4.0, 1.0], [-1.0, 1.0], [3.0, 1.0], [2.0, 1.0]])}
    tx = straight_through(optax.sgd(1.0), decay=0.0)
    state = tx.init(params)
    params = sj.apply_mask(params, current_mask(state))
    assert params["w"][:, 0].tolist() == [4.0, 0.0, 3.0, 0.0]
    grads = {"w": jnp.array([[0.0, 0.0], [-5.0, 0.0], [0.0, 0.0], [0.0, 0.0]])}
    updates, state = tx.update(grads, state, params)
    assert state.dense[0][:, 0].tolist() == [4.0, 4.0, 3.0, 2.0]
    assert optax.apply_updates(params, updates)["w"][:, 0].tolist() == [4.0, 4.0, 0.0, 0.0]


def test_top_k_projection_keeps_exact_counts_and_jit_equals_eager():
    tx = straight_through(optax.adam(LR), structure=sj.Unstructured(), sparsity=0.75,
                          distribution="erk")
    jitted, eager = _run(tx, 4), _run(tx, 4, jit=False)
    erk = sj.erk_sparsities(_mlp_params(jax.random.key(0)), 0.75)
    for (pj, sj_), (pe, se) in zip(jitted, eager):
        chex.assert_trees_all_equal(current_mask(sj_), current_mask(se))
        chex.assert_trees_all_close(pj, pe, rtol=1e-5, atol=1e-6)
        for name, n in (("dense0/kernel", 64), ("out/kernel", 32)):
            m = np.asarray(dict(sj.tree.named_leaves(current_mask(sj_)))[name])
            assert int(m.sum()) == n - round(erk[name] * n)
            p = np.asarray(dict(sj.tree.named_leaves(pj))[name])
            assert np.count_nonzero(p) <= int(m.sum()) and np.all(p[~m] == 0.0)


def test_vmapped_over_seeds_equals_each_seed():
    tx = straight_through(optax.adam(LR), decay=DECAY)
    params_b = jax.vmap(_mlp_params)(jax.random.split(jax.random.key(1), 2))
    state = jax.vmap(tx.init)(params_b)
    params = jax.vmap(sj.apply_mask)(params_b, current_mask(state))
    step = jax.jit(jax.vmap(_train_step(tx), in_axes=(0, 0, None)))
    for _ in range(3):
        params, state, _ = step(params, state, _batch())
    single = jax.jit(_train_step(tx))
    for i in range(2):
        p = jax.tree.map(lambda x, i=i: x[i], params_b)
        s = tx.init(p)
        p = sj.apply_mask(p, current_mask(s))
        for _ in range(3):
            p, s, _ = single(p, s, _batch())
        chex.assert_trees_all_equal(jax.tree.map(lambda x, i=i: x[i], current_mask(state)),
                                    current_mask(s))
        chex.assert_trees_all_close(jax.tree.map(lambda x, i=i: x[i], params), p, rtol=1e-5,
                                    atol=1e-6)


def test_state_holds_one_dense_copy_and_accessors():
    params = _mlp_params(jax.random.key(0))
    state = straight_through(optax.adam(LR)).init(params)
    assert isinstance(state, StraightThroughState)
    # memory: the dense copy holds exactly the prunable leaves
    assert [d.shape for d in state.dense] == [(4, 16), (16, 2)]
    assert pruning_schedules(state) == ()
    with pytest.raises(ValueError, match=r"with_mask: the optimizer state holds a "
                                         r"StraightThroughState, whose mask is the projection"):
        with_mask(state, current_mask(state))
    with pytest.raises(ValueError, match=r"current_step: the optimizer state holds a "
                                         r"StraightThroughState \(straight_through counts no steps\)"):
        sj.current_step(state)


def test_errors_name_the_option_and_value():
    inner = optax.sgd(0.1)
    with pytest.raises(ValueError, match=r"straight_through: decay must be a number >= 0, got "
                                         r"-0.1"):
        straight_through(inner, decay=-0.1)
    with pytest.raises(ValueError, match=r"straight_through: structure=Unstructured\(\) needs a "
                                         r"sparsity"):
        straight_through(inner, structure=sj.Unstructured())
    with pytest.raises(TypeError, match=r"structure must be a sparsejax Structure, got '2:4'"):
        straight_through(inner, structure="2:4")
    with pytest.raises(ValueError, match=r"straight_through: sparsity must be in \[0, 1\]"):
        straight_through(inner, structure=sj.Unstructured(), sparsity=2.0)
    with pytest.raises(ValueError, match=r"axis -2 of the parameter at 'w' \(shape \(6, 3\)\)"):
        straight_through(inner).init({"w": jnp.ones((6, 3))})
    tx = straight_through(inner)
    state = tx.init({"w": jnp.ones((4, 3))})
    with pytest.raises(ValueError, match=r"straight_through: update\(updates, state, params\) "
                                         r"needs params"):
        tx.update({"w": jnp.ones((4, 3))}, state)
