"""keep_sparse: a fixed mask inside any optax optimizer; invariant 1 of DESIGN.md (a pruned
weight is exactly 0.0 after any number of steps with any optax optimizer) as a hypothesis
property, for keep_sparse and gradual pruning."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from transform_problems import (
    OPTIMIZERS,
    _assert_pruned_are_zero,
    _pruned,
    _quadratic_loss,
    _quadratic_problem,
    _quadratic_step,
    _train_step,
)

import sparsejax.masks as sjm
from sparsejax.transforms import (
    KeepSparseState,
    current_mask,
    keep_sparse,
)

# --------------------------------------------------------------------------- keep_sparse


# Every optimizer jitted; three of them also eagerly (the code path is shared).
KEEP_SPARSE_CASES = [(name, True) for name in OPTIMIZERS] + [
    (name, False) for name in ("nesterov", "adamw", "injected_adamw")
]


@pytest.mark.parametrize(("name", "jit"), KEEP_SPARSE_CASES,
                         ids=[f"{n}-{'jit' if j else 'eager'}" for n, j in KEEP_SPARSE_CASES])
def test_keep_sparse_keeps_zeros_and_trains_the_rest(name, jit):
    params0, mask, target = _quadratic_problem(0)
    tx, jitted = _quadratic_step(name)
    step = jitted if jit else _train_step(tx, _quadratic_loss)
    params, state = params0, tx.init(params0)
    loss0 = _quadratic_loss(params0, target)
    for _ in range(8 if jit else 2):
        params, state, _ = step(params, state, target)
    # Pruned weights are exactly 0.0, although they started far from zero
    # and their gradient never vanishes.
    _assert_pruned_are_zero(params, mask)
    for key in ("w", "v"):
        kept = np.asarray(mask[key])
        assert np.all(np.asarray(params[key])[kept] != np.asarray(params0[key])[kept])
    assert np.all(np.asarray(params["b"]) != np.asarray(params0["b"]))
    # The kept weights solve their part of the problem: the loss restricted to
    # them decreases.
    kept_loss = lambda p: _quadratic_loss(sjm.apply_mask(p, mask), sjm.apply_mask(target, mask))  # noqa: E731
    assert float(kept_loss(params)) < float(kept_loss(params0)) < float(loss0)
    assert isinstance(state, KeepSparseState)
    chex.assert_trees_all_equal(state.mask, mask)


def test_keep_sparse_matches_plain_optimizer_on_the_kept_weights():
    # With momentum SGD the update of a kept weight depends only on its own
    # gradient, so keep_sparse must reproduce plain SGD on the masked gradients.
    params, mask, target = _quadratic_problem(1)
    params = sjm.apply_mask(params, mask)
    tx, ref = keep_sparse(optax.sgd(0.1, momentum=0.9), mask), optax.sgd(0.1, momentum=0.9)
    s, r = tx.init(params), ref.init(params)
    p, q = params, params
    for _ in range(5):
        g = jax.grad(_quadratic_loss)(p, target)
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
        h = sjm.apply_mask(jax.grad(_quadratic_loss)(q, target), mask)
        v, r = ref.update(h, r, q)
        q = optax.apply_updates(q, v)
    chex.assert_trees_all_close(p, q, rtol=1e-6)


def test_keep_sparse_callable_mask_and_structured_leaves():
    params, _, target = _quadratic_problem(2)
    # A neuron mask (1, out) for "w", a lower-rank (out,) leaf for "v" and a
    # mask built from the params at init (like optax.masked).
    fn = lambda p: {  # noqa: E731
        "w": jnp.arange(8)[None, :] % 2 == 0,
        "b": jnp.asarray(True),
        "v": jnp.array([True, False, True, True]),
    }
    tx = keep_sparse(optax.adam(0.1), fn)
    state = tx.init(params)
    assert state.mask["v"].shape == (1, 4) and state.mask["w"].shape == (1, 8)
    step = jax.jit(_train_step(tx, _quadratic_loss))
    for _ in range(3):
        params, state, _ = step(params, state, target)
    assert np.all(np.asarray(params["w"])[:, 1::2] == 0.0)
    assert np.all(np.asarray(params["w"])[:, 0::2] != 0.0)
    assert np.all(np.asarray(params["v"])[:, 1] == 0.0) and np.all(np.asarray(params["v"])[:, 0] != 0.0)


def test_keep_sparse_passes_extra_args_to_inner():
    def update(updates, state, params=None, *, scale):
        del params
        return jax.tree.map(lambda u: scale * u, updates), state

    inner = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
    params = {"w": jnp.ones((2, 2))}
    mask = {"w": jnp.array([[True, False], [True, True]])}
    tx = keep_sparse(inner, mask)
    u, _ = tx.update({"w": jnp.ones((2, 2))}, tx.init(params), params, scale=3.0)
    np.testing.assert_array_equal(u["w"], [[3.0, -1.0], [3.0, 3.0]])


def test_keep_sparse_nan_gradient_at_pruned_position_does_not_leak():
    params = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
    mask = {"w": jnp.array([[True, False], [True, True]])}
    tx = keep_sparse(optax.adam(0.1), mask)
    grads = {"w": jnp.array([[1.0, jnp.nan], [1.0, 1.0]])}
    u, state = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, u)
    assert float(new["w"][0, 1]) == 0.0
    assert np.all(np.isfinite(np.asarray(new["w"])))
    assert np.all(np.isfinite(np.asarray(state.inner_state[0].mu["w"])))


def test_momentum_does_not_revive_weights_pruned_after_it_built_up():
    params, _, target = _quadratic_problem(3)
    everything = jax.tree.map(lambda p: jnp.ones(p.shape if p.ndim >= 2 else (), bool), params)
    _, mask, _ = _quadratic_problem(3)
    tx = keep_sparse(optax.sgd(0.05, momentum=0.9), everything)
    step = jax.jit(_train_step(tx, _quadratic_loss))
    state = tx.init(params)
    for _ in range(10):
        params, state, _ = step(params, state, target)
    # Momentum has built up everywhere; now prune half of the weights.
    trace = state.inner_state[0].trace
    assert np.all(np.abs(np.asarray(trace["w"])[~np.asarray(mask["w"])]) > 1e-3)
    state = state.with_mask(mask)
    naive_params = sjm.apply_mask(params, mask)
    naive_tx, naive_state = optax.sgd(0.05, momentum=0.9), state.inner_state
    for _ in range(20):
        params, state, _ = step(params, state, target)
        # The classic bug: masking only the gradients lets momentum move pruned weights.
        g = sjm.apply_mask(jax.grad(_quadratic_loss)(naive_params, target), mask)
        u, naive_state = naive_tx.update(g, naive_state, naive_params)
        naive_params = optax.apply_updates(naive_params, u)
        _assert_pruned_are_zero(params, mask)
    assert np.any(np.asarray(naive_params["w"])[~np.asarray(mask["w"])] != 0.0)


def test_keep_sparse_multisteps():
    params, mask, target = _quadratic_problem(4)
    tx = optax.MultiSteps(keep_sparse(optax.adam(0.1), mask), every_k_schedule=3)
    step = jax.jit(_train_step(tx, _quadratic_loss))
    state = tx.init(params)
    params1 = params
    for i in range(7):
        params1, state, _ = step(params1, state, target)
        if i >= 2:
            _assert_pruned_are_zero(params1, mask)
    chex.assert_trees_all_equal(current_mask(state), mask)


def test_keep_sparse_errors_name_path_and_value():
    params, mask, _ = _quadratic_problem(0)
    tx = keep_sparse(optax.sgd(0.1), mask)
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"keep_sparse: update.* needs params \(got params=None\)"):
        tx.update(params, state)
    with pytest.raises(ValueError, match=r"paths only in params: \['v'\]"):
        keep_sparse(optax.sgd(0.1), {"w": mask["w"], "b": mask["b"]}).init(params)
    bad_shape = dict(mask, v=jnp.ones((4, 8), bool))
    with pytest.raises(ValueError, match=r"mask at 'v' has shape \(4, 8\).*\(8, 4\)"):
        keep_sparse(optax.sgd(0.1), bad_shape).init(params)
    with pytest.raises(ValueError, match=r"mask at 'w' has dtype float32"):
        keep_sparse(optax.sgd(0.1), dict(mask, w=jnp.ones((6, 8)))).init(params)
    with pytest.raises(ValueError, match=r"paths only in keep_sparse mask: \['v'\]"):
        tx.update({"w": params["w"], "b": params["b"]}, state, {"w": params["w"], "b": params["b"]})


# --------------------------------------------------------------------------- invariant 1 (property)

# Gradual pruning (the mask changes mid-run) is checked here with Nesterov
# momentum, the classic way to revive a pruned weight; the MLP tests below run
# gradual pruning with Adam and AdamW (weight decay) and check the zeros at
# every step. Each case costs one compile of the selection.
GRADUAL_OPTIMIZERS = ("nesterov",)


@given(
    case=st.sampled_from([(n, False) for n in sorted(OPTIMIZERS)]
                         + [(n, True) for n in GRADUAL_OPTIMIZERS]),
    num_steps=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_invariant_pruned_weights_stay_exactly_zero(case, num_steps, seed):
    name, gradual = case
    params, mask, target = _quadratic_problem(seed)
    tx, step = _quadratic_step(name, gradual)
    state = tx.init(params)
    if not gradual:
        state = state.with_mask(mask)
    for _ in range(num_steps):
        params, state, _ = step(params, state, target)
    final_mask = current_mask(state)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))
    _assert_pruned_are_zero(params, final_mask)
    if not gradual:
        chex.assert_trees_all_equal(final_mask, mask)
    else:
        # Updates at steps 1, 4, 7, 10 to 15, 30, 45, 60 % of the 80 kernel entries.
        done = sum(1 for t in (1, 4, 7, 10) if t < num_steps)
        assert sum(_pruned(final_mask, params).values()) == [0, 12, 24, 36, 48][done]


# --------------------------------------------------------------------------- nothing pruned


@pytest.mark.parametrize(
    "inner",
    [
        optax.adam(1e-3),
        optax.adamw(1e-3, weight_decay=1e-2),
        optax.sgd(0.1, momentum=0.9, nesterov=True),
    ],
    ids=["adam", "adamw", "nesterov"],
)
@pytest.mark.parametrize("mask", ["default", "scalar", "full"])
def test_nothing_pruned_is_bit_identical_to_the_inner_optimizer(inner, mask):
    # Op by op, with an all-keep mask (keep_sparse(inner), scalar True leaves, or the full
    # all-True mask a 0 % pruning gives), updates, inner states and weights are the inner
    # optimizer's bit for bit over several steps. (Compiled, XLA's multiply-add
    # contraction may round the bare optimizer's fused step differently; see keep_sparse.)
    rng = np.random.default_rng(4)
    params = {
        "w": jnp.asarray(rng.standard_normal((16, 8)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(8), jnp.float32),
    }
    masks = {
        "default": None,
        "scalar": jax.tree.map(lambda p: jnp.ones((), bool), params),
        "full": jax.tree.map(lambda p: jnp.ones(p.shape, bool), params),
    }
    tx = keep_sparse(inner, masks[mask])
    p1, s1 = params, inner.init(params)
    p2, s2 = params, tx.init(params)
    for step in range(5):
        grads = jax.tree.map(
            lambda p, step=step: jnp.asarray(
                np.random.default_rng(step).standard_normal(p.shape), jnp.float32
            ),
            params,
        )
        u1, s1 = inner.update(grads, s1, p1)
        u2, s2 = tx.update(grads, s2, p2)
        chex.assert_trees_all_equal(u2, u1)
        chex.assert_trees_all_equal(s2.inner_state, s1)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        chex.assert_trees_all_equal(p2, p1)
