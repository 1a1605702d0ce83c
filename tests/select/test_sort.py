"""The sort search (``search="sort"``): the radix search's masks, bit for bit."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from select_reference import npt, random_tree, reference_mask

from sparsejax.select import prune
from sparsejax.select._plan import _sorting_pays
from sparsejax.structures import NM, Blocks, Neurons, Unstructured

SORT_SHAPES = [(8, 4), (16, 8), (2, 2, 4, 2)]


SORT_STRUCTURES = [Unstructured(), Neurons(), NM(2, 4), Blocks(2, 2)]


def _sort_vs_radix(scope, structure):
    kw = {"scope": scope, "structure": structure, "prunable": lambda path, leaf: leaf.ndim >= 2}

    def both(leaves, existing, s):
        return [prune(leaves, s, mask=existing, search=how, **kw) for how in ("sort", "radix")]

    return jax.jit(both)


_SORT_FNS = {(scope, type(st).__name__): _sort_vs_radix(scope, st)
             for scope in ("layer", "global") for st in SORT_STRUCTURES}


@given(
    s=st.floats(0.0, 0.5), density=st.floats(0.5, 1.0), seed=st.integers(0, 2**31 - 1),
    which=st.sampled_from(sorted(_SORT_FNS)),
)
def test_sort_search_equals_radix_bit_for_bit(s, density, seed, which):
    # search="sort" (the default for small models on one accelerator) selects exactly what
    # the radix search does: ties (few decimals), existing masks, structures, both scopes.
    rng = np.random.default_rng(seed)
    leaves = random_tree(rng, SORT_SHAPES, decimals=0)
    existing = [jnp.asarray(rng.random(sh) < density) for sh in SORT_SHAPES]
    by_sort, by_radix = npt(_SORT_FNS[which](leaves, existing, jnp.float32(s)))
    for a, b in zip(by_sort, by_radix):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("jit", [False, True])
def test_layer_scope_sort_shares_two_sorts_and_matches_each_leaf(jit):
    # Five leaves with their own sparsities (a per-layer map): the layer-scope sort selects,
    # in every leaf, exactly the round(s·n) lowest entries of a stable sort of that leaf
    # alone (ties by index), and agrees with the radix search bit for bit.
    rng = np.random.default_rng(11)
    shapes = {"a": (7, 5), "b": (3, 4, 6), "c": (1, 9), "d": (16, 16), "e": (2, 3)}
    tree = {k: jnp.asarray(np.round(rng.standard_normal(sh), 0).astype(np.float32))
            for k, sh in shapes.items()}
    dist = {"a": 0.3, "b": 0.5, "c": 0.0, "d": 0.9, "e": 1.0}

    def both(t):
        return [prune(t, 0.5, scope="layer", distribution=dist, search=how)
                for how in ("sort", "radix")]

    by_sort, by_radix = npt((jax.jit(both) if jit else both)(tree))
    for name, x in tree.items():
        want = reference_mask([x], round(dist[name] * x.size))[0]
        np.testing.assert_array_equal(by_sort[name], want, err_msg=name)
        np.testing.assert_array_equal(by_radix[name], want, err_msg=name)


def test_sort_search_nan_and_exact_counts_eager():
    x = jnp.asarray([[0.5, -0.0, 0.0, 2.0], [np.inf, -np.inf, 0.5, 1.0]], jnp.float32)
    for s in (0.25, 0.5, 0.75):
        got = np.asarray(prune({"w": x}, s, scope="global", search="sort")["w"])
        np.testing.assert_array_equal(got, reference_mask([x], round(s * x.size))[0])
    f = jax.jit(lambda t, s: prune(t, s, search="sort"))
    nan = x.at[0, 0].set(jnp.nan)
    got = np.asarray(f({"w": nan}, jnp.float32(7 / 8))["w"])
    assert got.sum() == 1 and bool(got[0, 0])  # NaN ranks above +inf: kept last
    assert _sorting_pays(10) is (jax.default_backend() != "cpu" and jax.device_count() == 1)
