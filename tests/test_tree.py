"""sparsejax.tree: the default prunable filter skips integer and bool leaves (issue #25, item 7)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import schedules, scores
from sparsejax.transforms import current_mask, pruning
from sparsejax.tree import default_prunable, prunable_tree


@pytest.mark.parametrize(
    "leaf, want",
    [
        (np.ones((3, 4), np.float32), True),
        (jnp.ones((3, 4), jnp.bfloat16), True),
        (jnp.ones((2, 3, 4), jnp.float16), True),
        (jax.ShapeDtypeStruct((3, 4), jnp.float32), True),
        (np.ones((3, 4), np.int32), False),
        (np.ones((3, 4), np.uint8), False),
        (np.ones((3, 4), bool), False),
        (jax.ShapeDtypeStruct((3, 4), jnp.int8), False),
        (np.ones((3, 4), np.complex64), False),
        (np.ones(4, np.float32), False),
        ([[1.0, 2.0], [3.0, 4.0]], True),
        ([[1, 2], [3, 4]], False),
    ],
)
def test_default_prunable_is_float_and_at_least_2d(leaf, want):
    assert default_prunable("x", leaf) is want


def params():
    rng = np.random.default_rng(0)
    return {
        "dense": jnp.asarray(rng.standard_normal((6, 5)), jnp.float32),
        "table": jnp.asarray(rng.integers(0, 9, (4, 4)), jnp.int32),  # e.g. an index table
        "flags": jnp.ones((2, 3), bool),
        "bias": jnp.zeros(5),
    }


def test_integer_and_bool_leaves_are_never_pruned_by_default():
    p = params()
    assert jax.tree.map(bool, prunable_tree(p)) == {
        "dense": True, "table": False, "flags": False, "bias": False
    }
    # Global selection over the params: before, the int leaf's all-zero scores went first
    # and "table" was emptied; now only the 30 float entries count, 15 go.
    mask = sj.prune(scores.magnitude(p), 0.5, params=p, scope="global")
    assert int((~np.asarray(mask["dense"])).sum()) == 15
    for k in ("table", "flags", "bias"):
        assert np.asarray(mask[k]).shape == () and bool(mask[k])
    # Named on purpose, an integer leaf is prunable.
    mask = sj.prune(scores.magnitude(p), 0.5, params=p, prunable=["dense", "table"], scope="global")
    assert int((~np.asarray(mask["table"])).sum()) == 16  # its zero scores rank lowest


@pytest.mark.parametrize("jit", [False, True])
def test_gradual_pruning_leaves_integer_leaves_alone(jit):
    p = params()
    tx = pruning(
        optax.sgd(0.1),
        score=lambda q, g: scores.magnitude(q),
        schedule=schedules.one_shot(0.5, at=0),
        scope="global",
    )
    update = jax.jit(tx.update) if jit else tx.update
    updates, state = update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
    mask = current_mask(state)
    assert int((~np.asarray(mask["dense"])).sum()) == 15
    assert np.asarray(mask["table"]).shape == () and bool(mask["table"])
    new = optax.apply_updates(p, updates)
    np.testing.assert_array_equal(new["table"], p["table"])
