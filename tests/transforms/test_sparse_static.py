"""random_mask and static_sparse: exact ERK / uniform counts, determinism per key, jit / vmap,
the fixed mask inside any optimizer, and error messages."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sparsejax as sj
from sparsejax.transforms import KeepSparseState, current_mask, random_mask, static_sparse

PARAMS = {
    "conv": {"kernel": jnp.zeros((3, 3, 8, 16)), "bias": jnp.zeros(16)},
    "dense": {"kernel": jnp.zeros((256, 64)), "bias": jnp.zeros(64)},
    "out": {"kernel": jnp.zeros((64, 10)), "bias": jnp.zeros(10)},
}
KERNELS = ("conv/kernel", "dense/kernel", "out/kernel")


def _kept(mask):
    named = dict(sj.tree.named_leaves(mask))
    return {k: int(np.asarray(named[k]).sum()) for k in KERNELS}


def test_erk_counts_are_rigls_and_the_total_is_exact():
    mask = random_mask(PARAMS, 0.9, jax.random.key(0))
    erk = sj.erk_sparsities(PARAMS, 0.9)
    sizes = {k: int(np.prod(np.shape(dict(sj.tree.named_leaves(PARAMS))[k]))) for k in KERNELS}
    # each layer prunes round(s_l · n_l) of its entries, s_l the ERK sparsity of the layer
    assert _kept(mask) == {k: sizes[k] - round(erk[k] * sizes[k]) for k in KERNELS}
    # (kh + kw + in + out) / (kh·kw·in·out): the small layers are denser than the large one
    kept = _kept(mask)
    assert kept["out/kernel"] / 640 > kept["conv/kernel"] / 1152 > kept["dense/kernel"] / 16384
    assert abs(sum(kept.values()) - 0.1 * (1152 + 16384 + 640)) <= 3
    # non-kernel leaves are dense (scalar True)
    assert mask["dense"]["bias"].shape == () and bool(mask["dense"]["bias"])


def test_uniform_distribution_and_per_layer_map():
    uniform = random_mask(PARAMS, 0.75, jax.random.key(1), distribution="uniform")
    assert _kept(uniform) == {"conv/kernel": 288, "dense/kernel": 4096, "out/kernel": 160}
    mapped = random_mask(PARAMS, 0.5, jax.random.key(1), distribution={"out": 0.9})
    assert _kept(mapped) == {"conv/kernel": 576, "dense/kernel": 8192, "out/kernel": 64}


_JITTED = jax.jit(lambda k, s: random_mask(PARAMS, s, k, distribution="uniform"))
SIZES = {"conv/kernel": 1152, "dense/kernel": 16384, "out/kernel": 640}


@given(st.integers(0, 2**32 - 1), st.sampled_from([0.5, 0.8, 0.95]))
def test_random_mask_counts_are_exact_for_every_key(seed, sparsity):
    mask = _JITTED(jax.random.key(seed), sparsity)
    assert _kept(mask) == {k: n - round(sparsity * n) for k, n in SIZES.items()}


def test_random_mask_is_a_function_of_the_key_eagerly_and_jitted():
    key = jax.random.key(12)
    chex.assert_trees_all_equal(random_mask(PARAMS, 0.8, key, distribution="uniform"),
                                _JITTED(key, 0.8))
    for s in (0.0, 1.0):  # nothing / everything pruned
        assert _kept(_JITTED(key, s)) == {k: n - round(s * n) for k, n in SIZES.items()}


def test_vmap_over_keys_equals_a_loop_and_seeds_differ():
    keys = jax.random.split(jax.random.key(3), 3)
    batched = jax.vmap(lambda k: random_mask(PARAMS, 0.9, k))(keys)
    for i in range(3):
        single = random_mask(PARAMS, 0.9, keys[i])
        chex.assert_trees_all_equal(jax.tree.map(lambda x, i=i: x[i], batched), single)
    a, b = (np.asarray(batched["dense"]["kernel"][i]) for i in (0, 1))
    assert not np.array_equal(a, b)
    # an int seed and a raw uint32[2] key are accepted and mean the same as the typed key
    chex.assert_trees_all_equal(random_mask(PARAMS, 0.9, 7), random_mask(PARAMS, 0.9,
                                                                          jax.random.key(7)))
    chex.assert_trees_all_equal(random_mask(PARAMS, 0.9, jax.random.PRNGKey(7)),
                                random_mask(PARAMS, 0.9, jax.random.key(7)))


def test_static_sparse_is_keep_sparse_with_the_random_mask():
    params = {"w": jax.random.normal(jax.random.key(0), (20, 10)), "b": jnp.ones(10)}
    tx = static_sparse(optax.adam(0.1), 0.8, key=jax.random.key(5))
    state = tx.init(params)
    assert isinstance(state, KeepSparseState)
    expected = random_mask(params, 0.8, jax.random.key(5))
    chex.assert_trees_all_equal(current_mask(state), expected)
    assert int(current_mask(state)["w"].sum()) == 40
    step = jax.jit(lambda p, s: tx.update(jax.tree.map(jnp.ones_like, p), s, p))
    for _ in range(3):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
    w = np.asarray(params["w"])
    keep = np.asarray(expected["w"])
    assert np.all(w[~keep] == 0.0) and np.all(w[keep] != 0.0)
    chex.assert_trees_all_equal(current_mask(state), expected)  # fixed
    given_mask = {"w": jnp.asarray(keep), "b": jnp.ones((), bool)}
    chex.assert_trees_all_equal(current_mask(static_sparse(optax.sgd(0.1), mask=given_mask)
                                             .init(params)), given_mask)


def test_errors_name_the_argument_and_value():
    with pytest.raises(TypeError, match=r"random_mask: key must be one jax.random.key.*got 'a'"):
        random_mask(PARAMS, 0.5, "a")
    with pytest.raises(TypeError, match=r"random_mask: key must be one"):
        random_mask(PARAMS, 0.5, jax.random.split(jax.random.key(0), 2))
    with pytest.raises(ValueError, match=r"random_mask: sparsity must be in \[0, 1\], got 1.5"):
        random_mask(PARAMS, 1.5, jax.random.key(0))
    with pytest.raises(ValueError, match=r"unknown distribution|distribution"):
        random_mask(PARAMS, 0.5, jax.random.key(0), distribution="gaussian")
    with pytest.raises(ValueError, match=r"static_sparse: a random mask needs sparsity and key="):
        static_sparse(optax.sgd(0.1), 0.5)
    with pytest.raises(ValueError, match=r"static_sparse: give either mask= or \(sparsity, key=\)"):
        static_sparse(optax.sgd(0.1), 0.5, key=0, mask={"w": jnp.ones((), bool)})
