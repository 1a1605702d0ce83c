"""Tests of sparsejax.select.prune: exact counts, ties, references, transforms, errors."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from select_reference import kept, npt, pruned_count, random_tree, reference_mask

from sparsejax.masks import init_mask
from sparsejax.select import prune
from sparsejax.structures import NM, Blocks, InputChannels, Layers, Neurons, Unstructured

# --------------------------------------------------------------------------- #
# Exact counts, reference equality, ties.
# --------------------------------------------------------------------------- #


# Fixed trees, so that hypothesis varies values and sparsities without recompiling.
TREE = [(3, 5), (4, 2, 3), (16, 16), (1, 7)]


SMALL = [(8, 4), (1, 7)]


@given(s=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1), decimals=st.integers(0, 3))
def test_global_equals_stable_sort_reference(s, seed, decimals):
    leaves = random_tree(np.random.default_rng(seed), TREE, decimals)
    n = sum(int(np.prod(sh)) for sh in TREE)
    mask = prune(leaves, s, scope="global")
    for got, want in zip(mask, reference_mask(leaves, round(s * n))):
        np.testing.assert_array_equal(np.asarray(got), want)
    assert sum(pruned_count(m, sh) for m, sh in zip(mask, TREE)) == round(s * n)


@given(s=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_layer_prunes_exactly_round_s_n(s, seed):
    leaves = random_tree(np.random.default_rng(seed), TREE)
    mask = prune(leaves, s, scope="layer")
    for got, leaf in zip(mask, leaves):
        assert pruned_count(got, leaf.shape) == round(s * leaf.size)
        np.testing.assert_array_equal(
            np.asarray(got), reference_mask([leaf], round(s * leaf.size))[0]
        )


def test_global_selection_never_sorts_or_concatenates_the_scores():
    leaves = random_tree(np.random.default_rng(0), TREE)
    # (search="auto" sorts small problems on a single accelerator; the radix search never)
    text = jax.jit(lambda t: prune(t, 0.5, scope="global", search="radix")).lower(leaves).as_text()
    assert "stablehlo.sort" not in text and "top_k" not in text
    # The only concatenations stack a few per-leaf counts, never the scores.
    for dims in re.findall(r"stablehlo.concatenate[^\n]*-> tensor<([0-9x]*)x?[a-z]+[0-9]*>", text):
        assert math.prod(int(d) for d in dims.split("x") if d) < 64, dims


def test_ties_broken_by_relative_position_then_leaf_order():
    tree = {"a": jnp.zeros((3, 4)), "b": jnp.zeros((2, 2))}  # leaves order: a, b
    # Relative positions: a[i] at i * floor(2**32 / 12), b[j] at j * 2**30 (j / 4).
    # 8 of 16: a[0..5] (below 1/2) and b[0..1]; no leaf is stripped.
    for search in ("radix", "sort", "sampled"):
        m = prune(tree, 0.5, scope="global", search=search)
        np.testing.assert_array_equal(m["a"].ravel(), [False] * 6 + [True] * 6, err_msg=search)
        np.testing.assert_array_equal(m["b"].ravel(), [False, False, True, True], err_msg=search)
    # 3 of 16: a[0] and b[0] (both at 0; "a" first), then a[1] (1/12 < 1/4 of b[1]).
    m = prune(tree, 3 / 16, scope="global")
    np.testing.assert_array_equal(m["a"].ravel(), [False, False] + [True] * 10)
    np.testing.assert_array_equal(m["b"].ravel(), [False, True, True, True])
    # 14 of 16: the two highest relative positions stay, a[10] (10/12) and a[11] (11/12),
    # both above b[3] (3/4).
    m = prune(tree, 0.875, scope="global")
    np.testing.assert_array_equal(m["a"].ravel(), [False] * 10 + [True] * 2)
    np.testing.assert_array_equal(m["b"].ravel(), [False] * 4)
    m = prune(tree, 0.25, scope="layer")  # 3 of "a", 1 of "b": the flat index in each leaf
    np.testing.assert_array_equal(m["a"].ravel(), [False] * 3 + [True] * 9)
    np.testing.assert_array_equal(m["b"].ravel(), [False, True, True, True])


@pytest.mark.parametrize("search", ["radix", "sort", "sampled"])
def test_all_tied_global_pruning_interleaves_layers_and_strips_none(search):
    # A small early layer beside a large one, every score equal (all-zero gradients, say):
    # each layer loses its share, as with distinct scores spread evenly, never a whole layer.
    tree = {"conv0": jnp.zeros((3, 3, 1, 4)), "dense": jnp.zeros((64, 32)), "out": jnp.zeros((32, 3))}
    sizes = {name: int(np.size(x)) for name, x in tree.items()}
    total = sum(sizes.values())
    run = jax.jit(lambda t, s: prune(t, s, scope="global", search=search))
    for s in (0.1, 0.5, 0.9, 0.95):  # 0.95 of the 36 entries of conv0: 34.2
        m = npt(run(tree, jnp.float32(s)))
        k = round(float(np.float32(s)) * total)
        pruned = {name: int((~m[name]).sum()) for name in tree}
        assert sum(pruned.values()) == k
        for name, n in sizes.items():
            # Each leaf loses the entries below one relative position Q, ceil(Q·n) of them,
            # and the counts add up to k: (k - L)·n / total <= pruned < k·n / total + 1.
            share = k * n / total
            assert share - len(tree) * n / total <= pruned[name] < share + 1, (name, s, pruned)
            assert 0 < pruned[name] < n, (name, s, pruned)  # never a whole layer
            flat = m[name].ravel()
            np.testing.assert_array_equal(flat, np.arange(n) >= pruned[name])
        for got, want in zip(jax.tree.leaves(m), reference_mask(jax.tree.leaves(tree), k)):
            np.testing.assert_array_equal(got, want)


def test_round_half_to_even_python_and_array_sparsity():
    x = {"w": jnp.arange(10.0).reshape(2, 5)}
    # Python floats: Python's round(s * n): 0.25 * 10 = 2.5 -> 2 and 0.35 * 10 = 3.5 -> 4.
    assert pruned_count(prune(x, 0.25)["w"], (2, 5)) == 2
    assert pruned_count(prune(x, 0.35)["w"], (2, 5)) == 4
    assert pruned_count(prune(x, 0.05)["w"], (2, 5)) == round(0.05 * 10) == 0
    # A float32 array is exactly float32(0.05) = 0.0500000007..., so 10 · s > 0.5 -> 1.
    assert pruned_count(prune(x, jnp.float32(0.05))["w"], (2, 5)) == 1
    f = jax.jit(lambda t, s: prune(t, s))
    assert pruned_count(f(x, jnp.float32(0.05))["w"], (2, 5)) == 1
    assert pruned_count(f(x, jnp.float32(0.25))["w"], (2, 5)) == 2  # 2.5 -> 2
    assert pruned_count(f(x, jnp.float32(0.35))["w"], (2, 5)) == 3  # float32(0.35) < 0.35


def test_signed_zero_nan_and_infinities_follow_numpy_order_under_jit():
    x = jnp.asarray(
        [[0.0, -0.0, np.nan, -np.inf], [np.inf, -1.0, 0.0, np.nan], [-0.0, 2.0, -np.inf, 1.0]],
        jnp.float32,
    )
    f = jax.jit(lambda t, s: prune(t, s))
    for i in range(13):
        got = f({"w": x}, jnp.float32(i / 12))["w"]
        np.testing.assert_array_equal(np.asarray(got), reference_mask([x], i)[0])
    # NaN ranks above +inf: pruned only when everything else is.
    got = f({"w": x}, jnp.float32(10 / 12))["w"]
    assert bool(got[0, 2]) and bool(got[1, 3])


@pytest.mark.parametrize("bits", [1, 4])
def test_bits_per_pass_only_changes_speed(bits):
    leaves = random_tree(np.random.default_rng(3), [(8, 4)], decimals=0)
    for s in (0.3, 0.77):
        n = sum(x.size for x in leaves)
        got = prune(leaves, s, scope="global", bits_per_pass=bits)
        for g, w in zip(got, reference_mask(leaves, round(s * n))):
            np.testing.assert_array_equal(np.asarray(g), w)


def test_sparsity_zero_and_one_and_non_prunable_leaves():
    leaves = random_tree(np.random.default_rng(0), TREE)  # the plans of the hypothesis test
    m0, m1 = npt(prune([*leaves, jnp.ones(4)], 0.0)), npt(prune([*leaves, jnp.ones(4)], 1.0))
    for a, b, x in zip(m0, m1, leaves):
        assert a.shape == b.shape == x.shape
        assert bool(a.all()) and not bool(b.any())
    assert m0[-1].shape == () and bool(m0[-1]) and bool(m1[-1])  # the bias: not prunable


# --------------------------------------------------------------------------- #
# Cumulative masks.
# --------------------------------------------------------------------------- #


@given(density=st.floats(0.0, 1.0), s=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_cumulative_masks_never_regrow_and_count_exactly(density, s, seed):
    rng = np.random.default_rng(seed)
    scores = random_tree(rng, SMALL)
    m0 = [rng.random(sh) < density for sh in SMALL]  # any existing mask
    n = sum(int(np.prod(sh)) for sh in SMALL)
    m1 = npt(prune(scores, s, scope="global", mask=m0))
    already = n - sum(int(x.sum()) for x in m0)
    target = round(s * n)
    assert n - sum(int(x.sum()) for x in m1) == max(already, target)
    for a, b in zip(m1, m0):
        assert not (a & ~b).any()  # nothing regrows
    if target > already:
        # The new prunes are the lowest of the surviving scores (reference on survivors).
        flat = np.concatenate(
            [np.where(np.asarray(m), np.asarray(x), -np.inf).ravel() for x, m in zip(scores, m0)]
        )
        keep = np.ones(n, bool)
        keep[np.argsort(flat, kind="stable")[:target]] = False
        np.testing.assert_array_equal(np.concatenate([np.asarray(x).ravel() for x in m1]), keep)
    else:
        for a, b in zip(m1, m0):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cumulative_structured_mask_keeps_existing_shape_and_prunes_whole_groups():
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.standard_normal((6, 8)).astype(np.float32))
    start = init_mask({"w": w})
    m1 = npt(prune({"w": w}, 0.25, structure=Neurons(), mask=start))
    assert m1["w"].shape == (6, 8)  # broadcast of the existing (6, 8) mask and (1, 8)
    assert int((~m1["w"]).all(axis=0).sum()) == 2
    m2 = npt(prune({"w": w}, 0.5, structure=Neurons(), mask=m1))
    dead1, dead2 = (~m1["w"]).all(0), (~m2["w"]).all(0)
    assert dead2.sum() == 4 and (dead2 | ~dead1).all()  # the first two stay pruned
    # From a structured existing mask the output stays (1, out).
    compact = prune({"w": w}, 0.25, structure=Neurons())
    assert compact["w"].shape == (1, 8)
    assert prune({"w": w}, 0.5, structure=Neurons(), mask=compact)["w"].shape == (1, 8)


# --------------------------------------------------------------------------- #
# Structures.
# --------------------------------------------------------------------------- #


def test_neurons_and_input_channels_prune_lowest_l1_groups():
    w = jnp.asarray([[1.0, -5.0, 0.5, 2.0], [1.0, 4.0, -0.5, -3.0]])  # column L1: 2, 9, 1, 5
    m = prune({"w": w}, 0.5, structure=Neurons())["w"]
    assert m.shape == (1, 4)
    np.testing.assert_array_equal(m, [[False, True, False, True]])
    m = prune({"w": w}, 0.5, structure=InputChannels(), reduction="sum")["w"]  # row sums -1.5, 1.5
    assert m.shape == (2, 1)
    np.testing.assert_array_equal(m, [[False], [True]])


def test_global_neurons_count_groups_not_parameters():
    rng = np.random.default_rng(5)
    tree = {
        "a": jnp.asarray(rng.random((100, 6), np.float32)),
        "c": jnp.asarray(rng.random((3, 3, 4, 10), np.float32)),  # a conv: 10 filters
    }
    m = npt(prune(tree, 0.5, structure=Neurons(), reduction="mean", scope="global"))
    assert m["a"].shape == (1, 6) and m["c"].shape == (1, 1, 1, 10)
    assert int((~m["a"]).sum()) + int((~m["c"]).sum()) == 8  # 8 of 16 neurons
    g = np.concatenate([np.asarray(tree["a"]).mean(0), np.asarray(tree["c"]).mean((0, 1, 2))])
    pruned = np.argsort(g, kind="stable")[:8]
    np.testing.assert_array_equal(
        np.concatenate([m["a"].ravel(), m["c"].ravel()]), ~np.isin(np.arange(16), pruned)
    )


def test_global_layer_pruning_removes_lowest_scored_whole_leaves():
    tree = {f"l{i}": jnp.full((4, 4), v) for i, v in enumerate([3.0, 1.0, 2.0, 0.5, 5.0])}
    m = npt(prune(tree, 0.4, structure=Layers(), scope="global"))  # round(0.4·5) = 2 layers
    assert all(m[k].shape == () for k in tree)
    assert {k for k in tree if not bool(m[k])} == {"l1", "l3"}


def test_blocks_prune_whole_tiles():
    rng = np.random.default_rng(6)
    w = jnp.asarray(rng.standard_normal((4, 6)).astype(np.float32))
    m = np.asarray(prune({"w": w}, 0.5, structure=Blocks(2, 3))["w"])
    assert m.shape == (4, 6)
    tiles = m.reshape(2, 2, 2, 3).transpose(0, 2, 1, 3).reshape(4, 6)
    assert all(len(set(t)) == 1 for t in tiles)  # constant on every tile
    assert int((~m).sum()) == 2 * 6
    l1 = np.abs(np.asarray(w)).reshape(2, 2, 2, 3).sum(axis=(1, 3)).ravel()
    np.testing.assert_array_equal(
        tiles[:, 0], ~np.isin(np.arange(4), np.argsort(l1, kind="stable")[:2])
    )


@pytest.mark.parametrize("jit", [False, True])
def test_nm_keeps_exactly_n_of_every_m_along_input_axis(jit):
    rng = np.random.default_rng(7)
    w = jnp.asarray(rng.standard_normal((3, 3, 8, 5)).astype(np.float32))
    f = (
        jax.jit(lambda t: prune(t, structure=NM(2, 4)))
        if jit
        else (lambda t: prune(t, structure=NM(2, 4)))
    )
    m = np.asarray(f({"w": w})["w"])
    assert m.shape == w.shape
    groups = m.reshape(3, 3, 2, 4, 5)
    np.testing.assert_array_equal(groups.sum(axis=3), 2)
    # The kept two are the two largest of each run of four.
    vals = np.asarray(w).reshape(3, 3, 2, 4, 5)
    order = np.argsort(vals, axis=3, kind="stable")
    np.testing.assert_array_equal(np.take_along_axis(groups, order[:, :, :, 2:], axis=3), True)
    assert (m == np.asarray(prune({"w": w}, 0.5, structure=NM(2, 4))["w"])).all()


def test_gradual_nm_prunes_round_s_n_among_candidates_only():
    rng = np.random.default_rng(8)
    w = jnp.asarray(rng.standard_normal((8, 5)).astype(np.float32))
    for s, scope in [(0.25, "layer"), (0.3, "global"), (0.0, "layer")]:
        m = np.asarray(prune({"w": w}, s, structure=NM(2, 4), scope=scope)["w"])
        assert int((~m).sum()) == round(s * 40)
        pruned_per_group = (~m).reshape(2, 4, 5).sum(axis=1)
        assert (pruned_per_group <= 2).all()
        # Pruned entries are among the two lowest of their run and are the lowest such candidates.
        vals = np.asarray(w).reshape(2, 4, 5)
        rank = np.argsort(np.argsort(vals, axis=1, kind="stable"), axis=1, kind="stable")
        cand = (rank < 2).reshape(8, 5)
        assert not (~m & ~cand).any()
        flat = np.where(cand, np.asarray(w), np.inf).ravel()
        want = np.ones(40, bool)
        want[np.argsort(flat, kind="stable")[: round(s * 40)]] = False
        np.testing.assert_array_equal(m.ravel(), want)
    # Continuing to the full 2:4 from a gradual mask keeps every earlier prune.
    m1 = npt(prune({"w": w}, 0.25, structure=NM(2, 4)))
    m2 = npt(prune({"w": w}, structure=NM(2, 4), mask=m1))
    assert not (m2["w"] & ~m1["w"]).any()
    np.testing.assert_array_equal(m2["w"].reshape(2, 4, 5).sum(axis=1), 2)


# --------------------------------------------------------------------------- #
# jit, traced sparsity, vmap, sharding, NNX.
# --------------------------------------------------------------------------- #


def model_scores(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv": {
            "kernel": jnp.asarray(rng.standard_normal((3, 3, 4, 8)).astype(np.float32)),
            "bias": jnp.zeros(8),
        },
        "dense": {
            "kernel": jnp.asarray(rng.standard_normal((8, 4)).astype(np.float32)),
            "bias": jnp.zeros(4),
        },
    }


@pytest.mark.parametrize(
    ("structure", "scope", "s"), [(Unstructured(), "layer", 0.6), (NM(1, 4), "global", 0.4)]
)
def test_jit_with_traced_sparsity_equals_eager(structure, scope, s):
    scores = model_scores()
    eager = npt(prune(scores, jnp.float32(s), structure=structure, scope=scope))
    f = jax.jit(lambda t, s: prune(t, s, structure=structure, scope=scope))
    jax.tree.map(np.testing.assert_array_equal, eager, f(scores, jnp.float32(s)))
    n = 288 + 32
    assert kept(eager, scores) == n - (
        round(s * 288) + round(s * 32) if scope == "layer" else round(s * n)
    )


def test_traced_sparsity_inside_lax_cond_like_a_gradual_transform():
    scores = model_scores(1)
    start = init_mask(scores)

    @jax.jit
    def update(mask, s, do):
        return lax.cond(do, lambda: prune(scores, s, mask=mask, scope="global"), lambda: mask)

    mask = start
    for s in (0.2, 0.5, 0.8):
        new = update(mask, jnp.float32(s), True)
        assert kept(new, scores) == 320 - round(float(np.float32(s)) * 320)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a & ~b, False), npt(new), npt(mask))
        mask = new
    jax.tree.map(np.testing.assert_array_equal, update(mask, jnp.float32(0.9), False), mask)


@pytest.mark.parametrize("search", ["auto", "sort"])
def test_vmap_over_four_score_seeds_and_sparsities(search):
    trees = [random_tree(np.random.default_rng(seed), [(6, 5), (4, 4)]) for seed in range(4)]
    scores = {"a": jnp.stack([t[0] for t in trees]), "b": jnp.stack([t[1] for t in trees])}
    sparsities = jnp.asarray([0.0, 0.25, 0.45, 1.0], jnp.float32)
    masks = jax.vmap(lambda t, s: prune(t, s, scope="global", search=search))(scores, sparsities)
    assert masks["a"].shape == (4, 6, 5)
    for i, k in enumerate([0, round(0.25 * 46), round(float(np.float32(0.45)) * 46), 46]):
        want = reference_mask(trees[i], k)
        np.testing.assert_array_equal(masks["a"][i], want[0])
        np.testing.assert_array_equal(masks["b"][i], want[1])


def test_sharded_params_stay_sharded_and_match_unsharded(devices8):
    mesh = Mesh(np.array(devices8), ("x",))
    rng = np.random.default_rng(9)
    scores = {
        "big": jnp.asarray(np.round(rng.standard_normal((64, 32)), 1).astype(np.float32)),
        "small": jnp.asarray(rng.standard_normal((16, 8)).astype(np.float32)),
    }
    spec = NamedSharding(mesh, P("x", None))
    sharded = {"big": jax.device_put(scores["big"], spec), "small": scores["small"]}
    f = jax.jit(lambda t, s: prune(t, s, scope="global")).lower(sharded, jnp.float32(0.3)).compile()
    # Only counts cross devices: collectives move a few integers, never the scores.
    hlo = f.as_text()
    assert not re.search(r"all-to-all|collective-permute", hlo)
    collectives = re.findall(
        r"= \w+\[([\d,]*)\][^ ]* (?:all-gather|all-reduce|reduce-scatter)\(", hlo
    )
    assert collectives and all(
        math.prod(int(d) for d in c.split(",") if d) <= 64 for c in collectives
    )
    for s in (0.3, 0.77):
        got = f(sharded, jnp.float32(s))
        k = round(float(np.float32(s)) * 2176)
        want = reference_mask([scores["big"], scores["small"]], k)
        np.testing.assert_array_equal(np.asarray(got["big"]), want[0])
        np.testing.assert_array_equal(np.asarray(got["small"]), want[1])
        assert got["big"].sharding.is_equivalent_to(spec, 2)
    # All ties, across shards: broken by relative position (the tie passes run on the
    # sharded leaf): each leaf loses its first half.
    tied = {"big": jax.device_put(jnp.zeros((64, 32)), spec), "small": jnp.zeros((16, 8))}
    m = f(tied, jnp.float32(0.5))
    assert m["big"].sharding.is_equivalent_to(spec, 2)
    np.testing.assert_array_equal(np.asarray(m["big"]).ravel(), np.arange(2048) >= 1024)
    np.testing.assert_array_equal(np.asarray(m["small"]).ravel(), np.arange(128) >= 64)


def test_nnx_state():
    from flax import nnx

    rng = np.random.default_rng(0)

    def init(key, shape, dtype):  # numpy init: no jax.random compile in this test
        return jnp.asarray(rng.standard_normal(shape), dtype)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(6, 4, kernel_init=init, bias_init=init, rngs=rngs)
            self.l2 = nnx.Linear(4, 3, kernel_init=init, bias_init=init, rngs=rngs)

    _, state = nnx.split(Net(nnx.Rngs(0)), nnx.Param)
    scores = jax.tree.map(jnp.abs, state)
    mask = npt(prune(scores, 0.5, scope="global"))
    assert jax.tree.structure(mask) == jax.tree.structure(state)
    flat = dict(jax.tree_util.tree_flatten_with_path(mask)[0])
    kernels = [m for p, m in flat.items() if "kernel" in jax.tree_util.keystr(p)]
    assert sum(int((~m).sum()) for m in kernels) == 18  # round(0.5 · 36)
    assert kept(mask, state) == 36 - 18  # kernels
    assert all(m.shape == () and m for p, m in flat.items() if "bias" in jax.tree_util.keystr(p))
    bad = jax.tree.map(lambda x: x.at[0, 0].set(jnp.nan) if x.ndim == 2 else x, scores)
    flat = dict(jax.tree_util.tree_flatten_with_path(npt(prune(bad, 0.5)))[0])
    kernel = next(m for p, m in flat.items() if "l1" in jax.tree_util.keystr(p) and m.ndim == 2)
    assert bool(kernel[0, 0]) and int((~kernel).sum()) == 12  # the NaN is kept, 12 of 24 go


# --------------------------------------------------------------------------- #
# Bad inputs.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_sparsity_out_of_range(value):
    with pytest.raises(
        ValueError, match=rf"sparsity must be in \[0, 1\], got {re.escape(repr(value))}"
    ):
        prune({"w": jnp.ones((2, 2))}, value)
    with pytest.raises(ValueError, match=r"got 1.5"):
        prune({"w": jnp.ones((2, 2))}, jnp.float32(1.5), scope="global")


@pytest.mark.parametrize("search", ["radix", "sort"])
def test_nan_scores_rank_highest_eagerly_and_under_jit_alike(search):
    x = jnp.asarray([[1.0, np.nan], [np.nan, 0.5]])
    tree = {"layer": {"w": x}}
    eager = prune(tree, 0.5, search=search)  # no error: one documented rule
    jitted = jax.jit(lambda t: prune(t, 0.5, search=search))(tree)
    for m in (eager, jitted):  # NaN ranks above every number: the two numbers go first
        np.testing.assert_array_equal(m["layer"]["w"], [[False, True], [True, False]])
    m = prune(tree, 0.75, search=search)  # then the NaN at the lower position
    np.testing.assert_array_equal(m["layer"]["w"], [[False, False], [True, False]])
    inf = jnp.asarray([[np.inf, -np.inf], [np.nan, 0.0]])
    m = prune({"w": inf}, 0.5, search=search)  # -inf, then 0.0; +inf and NaN stay
    np.testing.assert_array_equal(m["w"], [[True, False], [True, False]])


def test_mismatched_trees_and_bad_arguments():
    scores = {"a": jnp.ones((4, 4)), "b": jnp.ones((4, 2))}
    with pytest.raises(ValueError, match=r"paths only in params: \['c'\]"):
        prune(scores, 0.5, params={"a": jnp.ones((4, 4)), "c": jnp.ones((4, 2))})
    with pytest.raises(ValueError, match=r"paths only in scores: \['b'\]"):
        prune(scores, 0.5, mask={"a": jnp.ones((4, 4), bool)})
    with pytest.raises(ValueError, match=r"mask at 'b' has shape \(3,\)"):
        prune(scores, 0.5, mask={"a": jnp.ones((4, 4), bool), "b": jnp.ones(3, bool)})
    with pytest.raises(
        ValueError, match=r"scores at 'b' have shape \(4, 2\); expected .* \(4, 3\)"
    ):
        prune(scores, 0.5, params={"a": jnp.ones((4, 4)), "b": jnp.ones((4, 3))})
    with pytest.raises(ValueError, match=r"scope must be one of .* got 'model'"):
        prune(scores, 0.5, scope="model")
    with pytest.raises(ValueError, match=r"distribution must be one of .* got 'erdos'"):
        prune(scores, 0.5, distribution="erdos")
    with pytest.raises(ValueError, match=r"needs scope='layer'"):
        prune(scores, 0.5, scope="global", distribution="erk")
    with pytest.raises(ValueError, match=r"reduction must be one of .* got 'linf'"):
        prune(scores, 0.5, reduction="linf")
    with pytest.raises(ValueError, match=r"sparsity is required for Unstructured\(\)"):
        prune(scores)
    with pytest.raises(ValueError, match=r"bits_per_pass must be 1, 2 or 4, got 8"):
        prune(scores, 0.5, bits_per_pass=8)
    with pytest.raises(ValueError, match=r"no prunable parameter"):
        prune({"b": jnp.ones(3)}, 0.5)


def test_structure_errors_name_the_path():
    with pytest.raises(ValueError, match=r"'w'.*is 6, not divisible by 4"):
        prune({"w": jnp.ones((6, 8))}, structure=NM(2, 4))
    with pytest.raises(ValueError, match=r"'w'.*\(6, 8\).*\(4, 4\)"):
        prune({"w": jnp.ones((6, 8))}, 0.5, structure=Blocks(4, 4))
    with pytest.raises(ValueError, match=r"at least 2 dimension.*'v'.*\(5,\)"):
        prune({"v": jnp.ones(5)}, 0.5, structure=InputChannels(), prunable="v")
    with pytest.raises(ValueError, match=r"sparsity for 'w' is 0.6, above 1 - n/m = 0.5"):
        prune({"w": jnp.ones((8, 8))}, 0.6, structure=NM(2, 4))


def test_group_scores_are_reduced_once_behind_a_barrier():
    """Every radix pass compares the same group floats: the reduction is materialised once.

    On an H100, XLA fused two copies of the L1 reduction of a (5, 1, 25) kernel into
    different consumers; their sums can round differently and the count came out wrong.
    """
    params = {"conv1": {"kernel": jnp.ones((5, 1, 25)), "bias": jnp.zeros(25)}}
    jaxpr = str(jax.make_jaxpr(lambda p, s: prune(
        p, s, prunable=["^conv1/kernel$"], structure=Neurons(), reduction="l1"))(
        params, jnp.float32(0.24)))
    assert re.search(r"f32\[1,1,25\] = optimization_barrier", jaxpr)
    # group-shaped scores need no reduction, and get no barrier
    grouped = {"conv1": {"kernel": jnp.ones((1, 1, 25)), "bias": jnp.zeros(25)}}
    jaxpr = str(jax.make_jaxpr(lambda g, s: prune(
        g, s, params=params, prunable=["^conv1/kernel$"], structure=Neurons()))(
        grouped, jnp.float32(0.24)))
    assert not re.search(r"f32\[[\d,]*\] = optimization_barrier", jaxpr)


def _two_scale_layers(a_norms, b_norms):
    """Dense kernels (3, 4) whose output units have the given L1 norms."""
    col = lambda v: jnp.tile(jnp.asarray(v, jnp.float32) / 3.0, (3, 1))  # noqa: E731
    return {"a": {"kernel": col(a_norms)}, "b": {"kernel": col(b_norms)}}


@pytest.mark.parametrize("jit", [False, True])
def test_global_normalize_prevents_layer_collapse(jit):
    tree = _two_scale_layers([1.0, 2.0, 3.0, 4.0], [150.0, 250.0, 350.0, 450.0])
    run = lambda f: jax.jit(f)() if jit else f()  # noqa: E731

    def units(m):
        return {k: np.asarray(m[k]["kernel"]).reshape(-1).astype(int).tolist() for k in m}

    # Unnormalised: the small-scale layer goes first, entirely (layer collapse).
    plain = run(lambda: prune(tree, 0.5, structure=Neurons(), scope="global"))
    assert units(plain) == {"a": [0, 0, 0, 0], "b": [1, 1, 1, 1]}
    # "max": a/4 = .25 .5 .75 1, b/450 = .333 .556 .778 1 -> lowest 3: a0, b0, a1.
    m = run(lambda: prune(tree, 3 / 8, structure=Neurons(), scope="global", normalize="max"))
    assert units(m) == {"a": [0, 0, 1, 1], "b": [0, 1, 1, 1]}
    # "l2" (Molchanov et al. 2017): a/√30 = .183 .365 .548 .730,
    # b/√410000 = .234 .390 .547 .703 -> lowest 4: a0, b0, a1, b1.
    m = run(lambda: prune(tree, 0.5, structure=Neurons(), scope="global", normalize="l2"))
    assert units(m) == {"a": [0, 0, 1, 1], "b": [0, 0, 1, 1]}
    # Layerwise ranking is invariant to a per-layer scale.
    for how in ("l1", "l2", "max", "mean"):
        lay = run(lambda how=how: prune(tree, 0.5, structure=Neurons(), normalize=how))
        assert units(lay) == {"a": [0, 0, 1, 1], "b": [0, 0, 1, 1]}


def test_global_normalize_uses_only_alive_groups():
    tree = _two_scale_layers([1.0, 2.0, 3.0, 4.0], [160.0, 250.0, 350.0, 440.0])
    start = {"a": {"kernel": jnp.asarray([[True, True, True, False]])},
             "b": {"kernel": jnp.ones((1, 4), bool)}}
    # a's alive mean is 2 (a3 pruned): a/2 = .5 1 1.5; b/300 = .533 .833 1.167 1.467.
    # Target 4 of 8 with a3 counted: a0, b0, b1 join (a mean over all of a, 2.5, would pick a1).
    m = prune(tree, 0.5, structure=Neurons(), scope="global", normalize="mean", mask=start)
    got = {k: np.asarray(m[k]["kernel"]).reshape(-1).astype(int).tolist() for k in m}
    assert got == {"a": [0, 1, 1, 0], "b": [0, 0, 1, 1]}


def test_normalize_rejects_unknown_values():
    tree = _two_scale_layers([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="normalize must be None or one of .* got 'z'"):
        prune(tree, 0.5, normalize="z")
