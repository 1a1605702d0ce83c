"""Non-finite gradients, updates and scores under keep_sparse and pruning (issue #25, item 6).

No NaN or inf reaches a weight: pruned weights stay exactly 0.0 under NaN/inf gradients
(Adam with decoupled weight decay), the next mask is chosen from the weights' real
magnitudes (not by position), and NaN scores follow one rule eagerly and under jit.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import schedules, scores
from sparsejax.transforms import current_mask, keep_sparse, pruning

SHAPES = {"a": (6, 8), "b": (8, 4), "bias": (4,)}


def params0():
    rng = np.random.default_rng(0)
    return {k: jnp.asarray(rng.standard_normal(sh), jnp.float32) for k, sh in SHAPES.items()}


def grads_like(params, step, bad):
    """Gradients of step ``step``: finite, except ``bad`` (NaN or inf) at step 1 in the
    first three rows of ``a`` and everywhere in ``b``."""
    rng = np.random.default_rng(100 + step)
    g = {k: jnp.asarray(rng.standard_normal(p.shape), jnp.float32) for k, p in params.items()}
    if step == 1:
        g["a"] = g["a"].at[:3].set(bad)
        g["b"] = jnp.full_like(g["b"], bad)
    return g


def run(tx, steps, bad, jit):
    params = params0()
    state = tx.init(params)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    step = jax.jit(step) if jit else step
    history = [params]
    for t in range(steps):
        params, state = step(params, state, grads_like(params, t, bad))
        history.append(params)
    return history, state


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
@pytest.mark.parametrize("jit", [False, True])
def test_nan_and_inf_gradients_under_adamw_never_reach_the_weights(bad, jit):
    # AdamW fed a non-finite gradient keeps NaN moments there (m/sqrt(v) = NaN or inf/inf):
    # those weights keep their values from then on instead of turning NaN. Magnitude
    # pruning at step 3 then selects from the real weights, and the pruned ones are 0.0.
    tx = pruning(
        optax.adamw(1e-2, weight_decay=1e-2),
        score=lambda p, g: scores.magnitude(p),
        schedule=schedules.one_shot(0.5, at=3),
    )
    history, state = run(tx, 6, bad, jit)
    for params in history:
        for leaf in jax.tree.leaves(params):
            assert np.all(np.isfinite(np.asarray(leaf)))
    # Frozen where the gradient was non-finite (b entirely, the first rows of a) ...
    np.testing.assert_array_equal(history[2]["b"], history[1]["b"])
    np.testing.assert_array_equal(history[2]["a"][:3], history[1]["a"][:3])
    # ... and still training elsewhere.
    assert np.all(np.asarray(history[2]["a"][3:]) != np.asarray(history[1]["a"][3:]))
    # The mask of step 3 is magnitude pruning of the weights it saw, not positions.
    mask = current_mask(state)
    want = sj.prune(scores.magnitude(history[3]), 0.5)
    for k in ("a", "b"):
        np.testing.assert_array_equal(np.asarray(mask[k]), np.asarray(want[k]), err_msg=k)
        assert 0 < int((~np.asarray(mask[k])).sum()) < mask[k].size
        for params in history[4:]:
            pruned = np.asarray(params[k])[~np.asarray(mask[k])]
            assert np.all(pruned == 0.0), k


@pytest.mark.parametrize("jit", [False, True])
def test_keep_sparse_under_nan_gradients_keeps_pruned_weights_at_zero(jit):
    params = params0()
    mask = sj.prune(scores.magnitude(params), 0.5)
    tx = keep_sparse(optax.adamw(1e-2, weight_decay=1e-2), mask)
    history, _ = run(tx, 4, jnp.nan, jit)
    for params in history[1:]:
        for k in ("a", "b"):
            p = np.asarray(params[k])
            assert np.all(np.isfinite(p))
            assert np.all(p[~np.asarray(mask[k])] == 0.0)


def test_apply_if_finite_inside_keep_sparse_skips_the_whole_step():
    params = params0()
    mask = sj.prune(scores.magnitude(params), 0.5)
    tx = keep_sparse(optax.apply_if_finite(optax.adamw(1e-2, weight_decay=1e-2), 3), mask)
    history, state = run(tx, 4, jnp.nan, jit=True)
    inner = state.inner_state
    assert int(inner.notfinite_count) == 0 and int(inner.total_notfinite) == 1
    for leaf in jax.tree.leaves(inner.inner_state):
        assert np.all(np.isfinite(np.asarray(leaf)))
    # Step 1 changed nothing (but the first update's pinning of the pruned weights) and
    # the steps after it train every kept weight again.
    for k in ("a", "b"):
        np.testing.assert_array_equal(history[2][k], history[1][k])
        kept = np.asarray(mask[k])
        assert np.all(np.asarray(history[3][k])[kept] != np.asarray(history[2][k])[kept])
        assert np.all(np.asarray(history[3][k])[~kept] == 0.0)


@pytest.mark.parametrize("structure", [sj.Unstructured(), sj.Neurons()])
def test_nan_scores_follow_one_rule_eagerly_and_under_jit(structure):
    # A score that is NaN in places (e.g. a NaN gradient in a Taylor score): NaN ranks
    # above every number, so those entries are pruned last -- the same mask eagerly and
    # jitted (the eager call raised before, the jitted one kept them).
    params = params0()

    def nan_score(p, g):
        s = scores.magnitude(p)
        return {**s, "a": s["a"].at[:, 0].set(jnp.nan)}  # entries, and unit 0, NaN

    tx = pruning(
        optax.sgd(0.0),
        score=nan_score,
        schedule=schedules.one_shot(0.5, at=0),
        structure=structure,
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    masks = []
    for step in (tx.update, jax.jit(tx.update)):
        _, state = step(zeros, tx.init(params), params)
        masks.append(jax.tree.map(np.asarray, current_mask(state)))
    for m in masks[1:]:
        for k in m:
            np.testing.assert_array_equal(m[k], masks[0][k], err_msg=k)
    a = np.broadcast_to(masks[0]["a"], SHAPES["a"])
    assert np.all(a[:, 0]) and not np.all(a)  # the NaN column (unit) is kept
    with pytest.raises(ValueError, match=r"scores at 'a' has \d+ NaN and 0 inf"):
        scores.check_finite(nan_score(params, zeros))  # the check users call eagerly
