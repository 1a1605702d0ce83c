"""Tests for sparsejax.transforms: keep_sparse and gradual pruning inside optax.

Invariant 1 of DESIGN.md (a pruned weight is exactly 0.0 after any number of
steps with any optax optimizer) is checked as a hypothesis property; the rest
checks exact pruned counts, shrinking masks, update steps, jit / vmap /
sharding / NNX / chain behaviour and error messages.
"""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import sparsejax.masks as sjm
from sparsejax import schedules, scores
from sparsejax.structures import Neurons
from sparsejax.transforms import (
    KeepSparseState,
    PruningState,
    Score,
    accumulated,
    current_mask,
    current_step,
    keep_sparse,
    pruning,
)
from sparsejax.tree import named_leaves

OPTIMIZERS = {
    "sgd_momentum": lambda: optax.sgd(0.05, momentum=0.9),
    "nesterov": lambda: optax.sgd(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(0.05),
    "adamw": lambda: optax.adamw(0.05, weight_decay=0.1),
    "lion": lambda: optax.lion(0.01, weight_decay=0.1),
    "injected_adamw": lambda: optax.inject_hyperparams(optax.adamw)(
        learning_rate=optax.cosine_decay_schedule(0.05, 40), weight_decay=0.1
    ),
    "chain_clip_adam": lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.05)),
}

magnitude_score = lambda p, g: scores.magnitude(p)  # noqa: E731


# --------------------------------------------------------------------------- fixtures


def _quadratic_problem(seed: int):
    """Params, a 50 % random mask and a target: loss 0.5 |W - T|^2 has a nonzero gradient everywhere."""
    k = jax.random.split(jax.random.key(seed), 4)
    params = {
        "w": jax.random.normal(k[0], (6, 8)) + 3.0,
        "b": jax.random.normal(k[1], (8,)),
        "v": jax.random.normal(k[2], (8, 4)) + 3.0,
    }
    target = jax.tree.map(lambda p: -2.0 * p, params)
    mask = {
        "w": jax.random.bernoulli(k[3], 0.5, (6, 8)),
        "b": jnp.ones((), bool),
        "v": jax.random.bernoulli(jax.random.fold_in(k[3], 1), 0.5, (8, 4)),
    }
    return params, mask, target


def _quadratic_loss(params, target):
    return 0.5 * sum(jnp.sum((p - t) ** 2) for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(target)))


def _mlp_params(key):
    k = jax.random.split(key, 2)
    return {
        "dense0": {"kernel": jax.random.normal(k[0], (4, 16)) * 0.5, "bias": jnp.zeros(16)},
        "out": {"kernel": jax.random.normal(k[1], (16, 2)) * 0.25, "bias": jnp.zeros(2)},
    }


def _mlp(params, x):
    h = jnp.tanh(x @ params["dense0"]["kernel"] + params["dense0"]["bias"][None, :])
    return h @ params["out"]["kernel"] + params["out"]["bias"][None, :]


def _batch(seed=0):
    x = jax.random.normal(jax.random.key(100 + seed), (32, 4))
    y = jnp.stack([jnp.sin(2.0 * x[:, 0]), x[:, 1] * x[:, 2]], axis=1)
    return x, y


def _mlp_loss(params, batch):
    x, y = batch
    return jnp.mean((_mlp(params, x) - y) ** 2)


def _train_step(tx, loss_fn=_mlp_loss):
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def _expected_pruned(sparsity, n):
    """round(s * n) with s the float32 schedule value; refuses near-ties so the test is robust."""
    x = float(np.float32(sparsity)) * n
    assert abs(x - np.floor(x) - 0.5) > 1e-3, f"ambiguous tie {x}"
    return int(np.round(x))


def _full(mask, params):
    """[(path, full-shape numpy mask, numpy param)], the mask validated against the params."""
    sjm.validate_mask(params, mask)
    masks, params = jax.device_get((mask, params))
    return [
        (name, np.broadcast_to(np.asarray(m), np.shape(p)), np.asarray(p))
        for (name, m), (_, p) in zip(named_leaves(masks), named_leaves(params))
    ]


def _pruned(mask, params):
    """{path: number of pruned entries} for the prunable (ndim >= 2) leaves."""
    return {n: int(m.size - m.sum()) for n, m, p in _full(mask, params) if p.ndim >= 2}


def _named(tree):
    return named_leaves(tree)


def _assert_pruned_are_zero(params, mask):
    for name, m, p in _full(mask, params):
        assert np.all(p[~m] == 0.0), f"{name}: pruned weights moved: {p[~m][p[~m] != 0][:5]}"


def _assert_shrinks(old, new):
    old, new = jax.device_get((old, new))
    for (name, a), (_, b) in zip(named_leaves(old), named_leaves(new)):
        assert not np.any(np.asarray(b) & ~np.asarray(a)), f"mask grew at {name}"


@functools.cache
def _quadratic_step(name: str, gradual: bool = False):
    """(tx, jitted train step) for the quadratic problem, one compile per case.

    ``keep_sparse``'s update reads the mask from the state only, so one step
    serves every mask (swap it with ``state.with_mask(...)``).
    """
    if gradual:
        # Prune 15 % more every 3 steps until 60 % of the 80 kernel entries,
        # while momentum and Adam moments are live.
        tx = pruning(
            OPTIMIZERS[name](),
            score=magnitude_score,
            schedule=schedules.periodic(0.15, every=3, final=0.6, begin=1),
            scope="global",
        )
    else:
        tx = keep_sparse(OPTIMIZERS[name](), _quadratic_problem(0)[1])
    return tx, jax.jit(_train_step(tx, _quadratic_loss))


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


# --------------------------------------------------------------------------- pruning on a tiny MLP

SIZES = {"dense0/kernel": 64, "out/kernel": 32}
# Updates at 2, 5, 8, 11, 14 to 0, 0.4625, 0.7, 0.7875, 0.8.
POLY = schedules.polynomial(0.0, 0.8, begin=2, end=14, every=3)
TX_LAYER = pruning(optax.adam(0.02), score=magnitude_score, schedule=POLY)
# Updates at 0, 2, 4 to 0, 0.6125, 0.7 (global: of all 96 kernel entries).
GLOBAL_SCHEDULE = schedules.polynomial(0.0, 0.7, begin=0, end=4, every=2)
TX_GLOBAL = pruning(optax.adamw(0.02, weight_decay=0.1), score=magnitude_score, scope="global",
                    schedule=GLOBAL_SCHEDULE)

TRACES: dict = {}


@functools.cache
def _jitted(tx):
    """One jitted ``(init, train step)`` per transform, shared by the tests (counts step traces)."""

    def step(params, opt_state, batch):
        TRACES[tx] = TRACES.get(tx, 0) + 1
        return _train_step(tx)(params, opt_state, batch)

    return jax.jit(tx.init), jax.jit(step)


def _run_mlp(tx, num_steps, *, jit=True, params=None):
    """``num_steps`` train steps on the MLP, all jitted or all eager: [(params, state, loss)]."""
    params = _mlp_params(jax.random.key(0)) if params is None else params
    init, step = _jitted(tx) if jit else (tx.init, _train_step(tx))
    state, batch, history = init(params), _batch(), []
    for _ in range(num_steps):
        params, state, loss = step(params, state, batch)
        history.append((params, state, float(loss)))
    return history


def test_pruning_mlp_reaches_scheduled_sparsity_exactly_and_only_on_schedule():
    history = _run_mlp(TX_LAYER, 18)
    prev = jax.tree.map(lambda p: jnp.ones(p.shape if p.ndim >= 2 else (), bool),
                        _mlp_params(jax.random.key(0)))
    changed = []
    for t, (params, state, _) in enumerate(history):
        mask = current_mask(state)
        assert int(current_step(state)) == t + 1
        _assert_shrinks(prev, mask)
        _assert_pruned_are_zero(params, mask)
        counts = _pruned(mask, params)
        if bool(POLY.is_update(t)):
            assert counts == {k: _expected_pruned(POLY(t), n) for k, n in SIZES.items()}, t
        else:
            chex.assert_trees_all_equal(mask, prev)
        if counts != _pruned(prev, params):
            changed.append(t)
        prev = mask
    assert changed == [5, 8, 11, 14]  # step 2 is an update to sparsity 0.0
    # round(0.8 n) per layer at the end, and the pruned network still learned.
    assert _pruned(prev, history[-1][0]) == {"dense0/kernel": 51, "out/kernel": 26}
    assert history[-1][2] < 0.8 * history[0][2]
    # A changing mask never retraced the jitted step.
    assert TRACES[TX_LAYER] == 1


def test_pruning_cost_is_paid_only_inside_cond():
    # The score uses `cos`, which appears nowhere else: it must only be traced
    # inside the true branch of the lax.cond.
    tx = pruning(optax.sgd(0.1), score=lambda p, g: jax.tree.map(jnp.cos, p), schedule=POLY)
    params = jax.eval_shape(_mlp_params, jax.random.key(0))  # shapes only: nothing runs
    closed = jax.make_jaxpr(tx.update)(params, jax.eval_shape(tx.init, params), params)
    conds = [e for e in closed.jaxpr.eqns if e.primitive.name == "cond"]
    assert len(conds) == 1
    count = lambda j: len(re.findall(r"= cos ", str(j)))  # noqa: E731
    false_branch, true_branch = conds[0].params["branches"]
    assert count(true_branch) == 4 and count(false_branch) == 0  # one per leaf
    assert count(closed) == count(true_branch)


def test_pruning_jitted_equals_eager():
    eager = _run_mlp(TX_LAYER, 6, jit=False)[-1]
    jitted = _run_mlp(TX_LAYER, 6, jit=True)[-1]
    chex.assert_trees_all_equal(current_mask(eager[1]), current_mask(jitted[1]))
    chex.assert_trees_all_close(eager[0], jitted[0], rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(eager[1], jitted[1], rtol=1e-5, atol=1e-6)
    # Updates at 2 (0.0) and 5 (0.4625).
    assert _pruned(current_mask(eager[1]), eager[0]) == {"dense0/kernel": 30, "out/kernel": 15}



def test_pruning_with_the_schedule_on_the_host_equals_lax_cond():
    """prune_now=t in update_steps: no cond traced, same masks and params as the cond path."""
    update_at = set(schedules.update_steps(POLY, 18))
    assert sorted(update_at) == [2, 5, 8, 11, 14]

    def hinted(params, opt_state, batch, prune_now):
        loss, grads = jax.value_and_grad(_mlp_loss)(params, batch)
        updates, opt_state = TX_LAYER.update(grads, opt_state, params, prune_now=prune_now)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(hinted, static_argnames="prune_now")
    params = _mlp_params(jax.random.key(0))
    shapes = jax.eval_shape(TX_LAYER.init, params)
    for prune_now, conds in ((False, 0), (True, 0)):
        jaxpr = jax.make_jaxpr(hinted, static_argnums=3)(params, shapes, _batch(), prune_now)
        assert [e.primitive.name for e in jaxpr.jaxpr.eqns].count("cond") == conds
    # prune_now=False traces no scoring: a `cos` score appears only with True
    cos_tx = pruning(optax.sgd(0.1), score=lambda p, g: jax.tree.map(jnp.cos, p), schedule=POLY)
    cos_state = jax.eval_shape(cos_tx.init, params)
    n_cos = {b: len(re.findall(r"= cos ", str(jax.make_jaxpr(
        lambda p, s, b=b: cos_tx.update(p, s, p, prune_now=b))(params, cos_state))))
        for b in (False, True)}
    assert n_cos == {False: 0, True: 4}

    reference = _run_mlp(TX_LAYER, 18)
    state = jax.jit(TX_LAYER.init)(params)
    for t in range(18):
        params, state, loss = step(params, state, _batch(), prune_now=t in update_at)
        ref_params, ref_state, ref_loss = reference[t]
        chex.assert_trees_all_equal(current_mask(state), current_mask(ref_state))
        chex.assert_trees_all_close(params, ref_params, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-6)
    assert _pruned(current_mask(state), params) == {"dense0/kernel": 51, "out/kernel": 26}
    # A wrong True hint (step 18 is no update step) leaves the mask alone.
    _, state2, _ = step(params, state, _batch(), prune_now=True)
    chex.assert_trees_all_equal(current_mask(state2), current_mask(state))
    with pytest.raises(TypeError, match=r"prune_now must be None or a Python bool.*got 1 of"):
        TX_LAYER.update(params, state, params, prune_now=1)


def _vmapped_global_run(device=None):
    """TX_GLOBAL for 6 steps, vmapped over 4 seeds (init and update), unsharded, on
    ``device`` (default: the first device); one run per device."""
    return _vmapped_global_run_on(jax.devices()[0] if device is None else device)


@functools.cache
def _vmapped_global_run_on(device):
    with jax.default_device(device):
        keys = jax.random.split(jax.random.key(7), 4)
        params_b = jax.jit(jax.vmap(_mlp_params))(keys)
        step = jax.jit(jax.vmap(_train_step(TX_GLOBAL), in_axes=(0, 0, None)))
        p, s = params_b, jax.jit(jax.vmap(TX_GLOBAL.init))(params_b)
        for _ in range(6):
            p, s, _ = step(p, s, _batch())
        return keys, params_b, jax.device_get(p), jax.device_get(s)


def test_pruning_vmapped_over_seeds():
    keys, params_b, p, s = _vmapped_global_run()
    np.testing.assert_array_equal(current_step(s), [6, 6, 6, 6])
    # vmap of init gave each seed the parameters it would get on its own.
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[2], params_b), _mlp_params(keys[2]))
    masks = [jax.tree.map(lambda x, i=i: x[i], current_mask(s)) for i in range(4)]
    for i, mask in enumerate(masks):
        params = jax.tree.map(lambda x, i=i: x[i], p)
        _assert_pruned_are_zero(params, mask)
        assert sum(_pruned(mask, params).values()) == 67  # round(0.7 * 96), global
        # Each seed got its own mask: the one magnitude pruning of its own
        # initial weights would start from.
        if i:
            assert not all(np.array_equal(a, b) for a, b in
                           zip(jax.tree.leaves(mask), jax.tree.leaves(masks[0])))


def test_pruning_sharded_keeps_sharding_and_matches_unsharded_vmapped_runs(devices8):
    mesh = Mesh(np.array(devices8).reshape(2, 4), ("data", "model"))
    specs = {
        "dense0": {"kernel": P("data", "model"), "bias": P("model")},
        "out": {"kernel": P("model", None), "bias": P()},
    }
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                             is_leaf=lambda x: isinstance(x, P))
    x, y = _batch()
    batch = jax.device_put((x, y), NamedSharding(mesh, P("data", None)))
    step = jax.jit(_train_step(TX_GLOBAL))
    keys, _, p_ref, s_ref = _vmapped_global_run(devices8[0])  # on the sharded runs' platform
    for i in (0,):
        p = jax.device_put(_mlp_params(keys[i]), shardings)
        state = TX_GLOBAL.init(p)
        for name, m in _named(state.mask):  # init: a full-shape mask has its kernel's sharding
            assert m.sharding == dict(_named(shardings))[name] if name in SIZES else m.shape == ()
        for _ in range(6):
            p, state, _ = step(p, state, batch)
        for (name, q), (_, m), (_, sh) in zip(_named(p), _named(state.mask), _named(shardings)):
            assert q.sharding.is_equivalent_to(sh, q.ndim), name
            if name in SIZES:
                assert m.sharding.is_equivalent_to(sh, m.ndim), (name, m.sharding)
        pick = functools.partial(jax.tree.map, lambda x, i=i: x[i])
        chex.assert_trees_all_equal(jax.device_get(state.mask), jax.device_get(pick(s_ref.mask)))
        chex.assert_trees_all_close(jax.device_get(p), pick(p_ref), rtol=1e-5, atol=1e-6)
        assert sum(_pruned(state.mask, p).values()) == 67


def test_pruning_on_nnx_state():
    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(4, 16, rngs=rngs), nnx.Linear(16, 2, rngs=rngs)])

        def __call__(self, x):
            return self.layers[1](jnp.tanh(self.layers[0](x)))

    graphdef, params, rest = nnx.split(MLP(nnx.Rngs(0)), nnx.Param, ...)
    tx = pruning(optax.adam(0.02), score=magnitude_score, schedule=schedules.one_shot(0.75, at=1))

    def loss_fn(params, batch):
        x, y = batch
        return jnp.mean((nnx.merge(graphdef, params, rest)(x) - y) ** 2)

    step = jax.jit(_train_step(tx, loss_fn))
    state = tx.init(params)
    for _ in range(3):
        params, state, _ = step(params, state, _batch())
    mask = current_mask(state)
    assert isinstance(mask, nnx.State)
    assert _pruned(mask, params) == {"layers/0/kernel": 48, "layers/1/kernel": 24}
    _assert_pruned_are_zero(params, mask)
    merged = nnx.merge(graphdef, params, rest)
    assert int(jnp.sum(merged.layers[0].kernel[...] == 0.0)) == 48


# --------------------------------------------------------------------------- composition, scores


def test_pruning_in_multisteps_chain_with_injected_hyperparams_and_custom_score():
    counting_magnitude = Score(
        init=lambda p: jnp.zeros((), jnp.int32),
        update=lambda s, p, g: s + 1,  # every (inner) step
        compute=lambda s, p, g: scores.magnitude(p),  # update steps only
    )
    inner = optax.inject_hyperparams(optax.adamw)(learning_rate=0.02, weight_decay=0.05)
    # iterative(0.5, rounds=2, steps_per_round=3): updates at inner steps 3, 6 to 50 %, 75 %.
    prune_tx = pruning(inner, score=counting_magnitude, schedule=schedules.iterative(0.5, 2, 3))
    tx = optax.MultiSteps(optax.chain(optax.clip_by_global_norm(1.0), prune_tx), every_k_schedule=2)
    history = _run_mlp(tx, 16)
    half = {"dense0/kernel": 32, "out/kernel": 16}
    for m, (params, state, _) in enumerate(history):
        mask = current_mask(state)
        _assert_pruned_are_zero(params, mask)
        inner_steps = (m + 1) // 2
        assert int(current_step(state)) == inner_steps
        if inner_steps in (5, 6):  # after the update at inner step 3, before the one at 6
            assert _pruned(mask, params) == half
    params, state, _ = history[-1]
    pruning_state = state.inner_opt_state[1]
    assert isinstance(pruning_state, PruningState)
    chex.assert_trees_all_equal(current_mask(state), pruning_state.mask)
    assert int(pruning_state.score_state) == 8
    assert _pruned(pruning_state.mask, params) == {k: 3 * v // 2 for k, v in half.items()}


def test_current_mask_errors():
    with pytest.raises(ValueError, match="no PruningState or KeepSparseState"):
        current_mask(optax.adam(0.1).init({"w": jnp.ones(2)}))
    params, mask, _ = _quadratic_problem(0)
    two = optax.chain(keep_sparse(optax.sgd(0.1), mask), keep_sparse(optax.sgd(0.1), mask))
    with pytest.raises(ValueError, match=r"2 pruning states .* at \['\[0\]', '\[1\]'\]"):
        current_mask(two.init(params))
    with pytest.raises(ValueError, match="KeepSparseState .* counts no steps"):
        current_step(keep_sparse(optax.sgd(0.1), mask).init(params))


def test_accumulated_movement_score():
    tx = pruning(optax.sgd(0.1), score=accumulated(scores.movement),
                 schedule=schedules.one_shot(0.5, at=3))
    state = _run_mlp(tx, 4, jit=False)[-1][1]
    # Replay plain SGD for the same 4 steps (nothing is pruned before step 3)
    # and accumulate Sanh et al.'s S = -sum_t w_t * g_t by hand.
    params, total = _mlp_params(jax.random.key(0)), None
    for _ in range(4):
        g = jax.grad(_mlp_loss)(params, _batch())
        step_score = jax.tree.map(lambda p, gg: -p * gg, params, g)
        total = step_score if total is None else jax.tree.map(jnp.add, total, step_score)
        params = jax.tree.map(lambda p, gg: p - 0.1 * gg, params, g)
    chex.assert_trees_all_close(state.score_state, total, rtol=1e-5, atol=1e-7)
    # The mask selected at step 3 keeps the half of each kernel with the largest S.
    for (name, s), (_, m) in zip(_named(total), _named(state.mask)):
        if name in SIZES:
            s, m = np.asarray(s), np.asarray(m)
            assert (~m).sum() == SIZES[name] // 2
            assert np.max(s[~m]) <= np.min(s[m]), name


def test_pruning_neurons_structure_fixed_mask_shape():
    tx = pruning(optax.adam(0.02), score=magnitude_score, structure=Neurons(),
                 schedule=schedules.polynomial(0.0, 0.5, begin=0, end=4, every=2))
    state = tx.init(_mlp_params(jax.random.key(0)))
    assert jax.tree.map(jnp.shape, state.mask) == {
        "dense0": {"kernel": (1, 16), "bias": ()}, "out": {"kernel": (1, 2), "bias": ()}}
    params, state, _ = _run_mlp(tx, 6, jit=False)[-1]
    m = np.asarray(state.mask["dense0"]["kernel"])
    assert m.shape == (1, 16) and (~m).sum() == 8
    assert np.all(np.asarray(params["dense0"]["kernel"])[:, ~m[0]] == 0.0)
    assert np.all(np.asarray(params["dense0"]["kernel"])[:, m[0]] != 0.0)
    assert (~np.asarray(state.mask["out"]["kernel"])).sum() == 1


def test_pruning_from_an_initial_mask_only_shrinks_it():
    params = _mlp_params(jax.random.key(0))
    m0 = jax.tree.map(lambda p: jax.random.bernoulli(jax.random.key(5), 0.7, p.shape)
                      if p.ndim >= 2 else jnp.asarray(True), params)
    tx = pruning(optax.adam(0.02), score=magnitude_score, mask=m0,
                 schedule=schedules.one_shot(0.5, at=0))
    params, state, _ = _run_mlp(tx, 2, jit=False)[-1]
    _assert_shrinks(m0, state.mask)
    assert _pruned(state.mask, params) == {"dense0/kernel": 32, "out/kernel": 16}


def test_pruning_errors_name_path_and_value():
    params = _mlp_params(jax.random.key(0))
    state = TX_LAYER.init(params)
    with pytest.raises(ValueError, match=r"pruning: update.* needs params \(got params=None\)"):
        TX_LAYER.update(params, state)
    small = {"dense0": params["dense0"], "out": {"kernel": params["out"]["kernel"]}}
    with pytest.raises(ValueError, match=r"paths only in pruning mask: \['out/bias'\]"):
        TX_LAYER.update(small, state, small)
    bad = jax.tree.map(lambda p: jnp.ones((), bool), params)
    with pytest.raises(ValueError, match=r"initial mask at 'dense0/kernel' has shape \(\).*\(4, 16\)"):
        pruning(optax.sgd(0.1), score=magnitude_score, schedule=POLY, mask=bad).init(params)
    with pytest.raises(ValueError, match=r"initial mask at 'dense0/kernel' has shape \(4, 16\).*\(1, 16\)"):
        pruning(optax.sgd(0.1), score=magnitude_score, schedule=POLY, structure=Neurons(),
                mask=sjm.init_mask(params)).init(params)
    with pytest.raises(TypeError, match=r"must accept \(params, grads\)"):
        pruning(optax.sgd(0.1), score=scores.magnitude, schedule=POLY)
    with pytest.raises(TypeError, match=r"schedule must have __call__\(step\), got 0.5"):
        pruning(optax.sgd(0.1), score=magnitude_score, schedule=0.5)


@pytest.mark.parametrize("normalize", [None, "l2"])
def test_pruning_forwards_normalize_to_the_global_ranking(normalize):
    """Two layers of very different scale: unnormalised global filter norms remove the
    small layer entirely; ``normalize="l2"`` (Molchanov et al. 2017) keeps both alive."""
    col = lambda v: jnp.tile(jnp.asarray(v, jnp.float32) / 3.0, (3, 1))  # noqa: E731
    params = {"a": {"kernel": col([1.0, 2.0, 3.0, 4.0])},
              "b": {"kernel": col([150.0, 250.0, 350.0, 450.0])}}
    tx = pruning(optax.sgd(0.0), score=magnitude_score, schedule=schedules.one_shot(0.5),
                 scope="global", structure=Neurons(), normalize=normalize)
    state = tx.init(params)
    _, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state, params)
    got = {k: np.asarray(v["kernel"]).reshape(-1).astype(int).tolist()
           for k, v in state.mask.items()}
    if normalize is None:
        assert got == {"a": [0, 0, 0, 0], "b": [1, 1, 1, 1]}
    else:  # a/√30 = .183 .365 .548 .730, b/√410000 = .234 .390 .547 .703
        assert got == {"a": [0, 0, 1, 1], "b": [0, 0, 1, 1]}
