"""The sampled search of global selection: same masks as the radix search, bit for bit."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from select_reference import reference_mask  # the stable-sort reference

from sparsejax._platform import target_platform
from sparsejax.select import _pallas as selection_kernels
from sparsejax.select import _plan as plan
from sparsejax.select import _sampled as sampled
from sparsejax.select import prune
from sparsejax.select._keys import float_key
from sparsejax.structures import NM, Neurons, Unstructured

TREE = [(3, 5), (4, 2, 3), (16, 16), (1, 7)]


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def sampled_state(leaves, k, bits=2):
    """(valid, passes done, threshold prefix) of the sampled start for float leaves."""
    fns = [
        lambda zero=None, x=x: float_key(jnp.asarray(x, jnp.float32), None, zero)
        for x in leaves
    ]
    sizes = [int(np.size(x)) for x in leaves]
    valid, p, kbase, below, upto = jax.jit(
        lambda: sampled._sampled_start(fns, sizes, jnp.uint32(k), bits)
    )()
    return bool(valid), int(p), int(kbase[()] if np.ndim(kbase) == 0 else kbase), below, upto


@settings(max_examples=40, deadline=None)
@given(s=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1), decimals=st.integers(0, 3))
def test_sampled_equals_stable_sort_reference(s, seed, decimals):
    rng = np.random.default_rng(seed)
    leaves = [jnp.asarray(np.round(rng.standard_normal(sh), decimals), jnp.float32) for sh in TREE]
    n = sum(math.prod(sh) for sh in TREE)
    mask = prune(leaves, s, scope="global", search="sampled")
    for got, want in zip(mask, reference_mask(leaves, round(s * n))):
        np.testing.assert_array_equal(np.asarray(got), want)


@settings(max_examples=25, deadline=None)
@given(
    s=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
    decimals=st.integers(0, 3),
    masked=st.booleans(),
)
def test_pallas_passes_equal_the_references(s, seed, decimals, masked):
    # The kernels (interpret mode off GPU) against a stable sort, and with an existing
    # mask against the radix search. Shapes are fixed, so the kernels trace once.
    rng = np.random.default_rng(seed)
    leaves = [jnp.asarray(np.round(rng.standard_normal(sh), decimals), jnp.float32) for sh in TREE]
    n = sum(math.prod(sh) for sh in TREE)
    kw = {}
    if masked:
        kw["mask"] = [jnp.asarray(rng.random(sh) > 0.3) for sh in TREE]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plan, "_pallas_passes", lambda: True)
        got = prune(leaves, s, scope="global", search="sampled", **kw)
    want = (
        prune(leaves, s, scope="global", search="radix", **kw)
        if masked
        else reference_mask(leaves, round(s * n))
    )
    assert_same(got, want)


@pytest.mark.parametrize("jit", [False, True])
def test_sampled_equals_radix_on_a_strided_sample(jit):
    # 3 · 2**21 entries: stride 6, so the bracket comes from a real sample.
    rng = np.random.default_rng(0)
    leaves = {
        "a": jnp.asarray(np.abs(rng.standard_normal((1024, 2048))), jnp.float32),
        "b": jnp.asarray(rng.standard_normal((2048, 2048)), jnp.float32),
        "c": jnp.asarray(rng.standard_normal((5, 7)), jnp.float32),
    }
    run = jax.jit(prune, static_argnames=("scope", "search")) if jit else prune
    for s in (0.1, 0.5, 0.9, 0.999):
        sparsity = jnp.float32(s) if jit else s
        radix = run(leaves, sparsity, scope="global", search="radix")
        sampled = run(leaves, sparsity, scope="global", search="sampled")
        assert_same(sampled, radix)
        n = 3 * 2**21 + 35
        k = round((float(np.float32(s)) if jit else s) * n)
        assert sum(int((~np.asarray(m)).sum()) for m in jax.tree.leaves(sampled)) == k


def test_the_histogram_pass_fixes_all_32_key_bits_on_smooth_scores():
    rng = np.random.default_rng(1)
    leaves = [np.abs(rng.standard_normal((1024, 1024))).astype(np.float32) for _ in range(4)]
    n = 4 * 2**20
    k = round(0.9 * n)
    valid, p, kbase, below, upto = sampled_state(leaves, k)
    assert valid and p == 16  # the bracket spans < 2**18 keys: shift 0, no radix pass left
    flat = np.sort(np.concatenate([x.ravel() for x in leaves]))
    threshold = flat[k - 1]  # the k-th smallest
    key = int(np.asarray(float_key(jnp.float32(threshold), None)))
    assert kbase == key
    for x, b, u in zip(leaves, np.asarray(below), np.asarray(upto)):
        assert b == int((x < threshold).sum()) and u == int((x <= threshold).sum())


def test_a_missed_bracket_falls_back_to_the_radix_search():
    # Period = the sample stride: every sampled entry is 0, the other entries are 1..
    n = 2**22
    stride = n >> sampled._SAMPLE_LOG2
    x = np.ones(n, np.float32) + np.arange(n, dtype=np.float32) * 1e-7
    x[stride // 2 :: stride] = 0.0
    leaves = [x.reshape(1024, -1)]
    k = n // 2
    valid, *_ = sampled_state(leaves, k)
    assert not valid
    mask = prune(leaves, 0.5, scope="global", search="sampled")
    np.testing.assert_array_equal(np.asarray(mask[0]), reference_mask(leaves, k)[0])


def test_sampled_with_ties_existing_mask_nan_nm_and_neurons_under_jit():
    rng = np.random.default_rng(2)
    tied = [jnp.ones((64, 32)), jnp.zeros((3, 3)), jnp.ones((50, 2))]
    for s in (0.1, 0.5, 0.77):
        assert_same(
            prune(tied, s, scope="global", search="sampled"),
            prune(tied, s, scope="global", search="radix"),
        )
    scores = {
        "w": jnp.asarray(rng.standard_normal((64, 16)), jnp.float32).at[0, 0].set(jnp.nan),
        "v": jnp.asarray(rng.standard_normal((32, 8)), jnp.float32),
    }
    existing = {"w": jnp.asarray(rng.random((64, 16)) > 0.3), "v": jnp.ones((32, 8), bool)}
    f = jax.jit(prune, static_argnames=("scope", "search", "structure"))
    for structure in (Unstructured(), NM(2, 4), Neurons()):
        for s in (0.2, 0.45):
            kw = {"mask": existing} if not isinstance(structure, NM) else {}
            assert_same(
                f(scores, s, scope="global", search="sampled", structure=structure, **kw),
                f(scores, s, scope="global", search="radix", structure=structure, **kw),
            )


def test_sampled_splits_ties_over_leaves_by_relative_position(monkeypatch):
    # One decimal: thousands of entries share the threshold score in every leaf; the split
    # comes from the two relative-position histograms, and matches the reference rule.
    calls = []
    fn = sampled._relative_tie
    monkeypatch.setattr(sampled, "_relative_tie", lambda *a: calls.append(1) or fn(*a))
    rng = np.random.default_rng(12)
    leaves = [
        jnp.asarray(np.round(rng.standard_normal(sh), 1), jnp.float32)
        for sh in ((300, 70), (90, 100), (3, 3))
    ]
    n = sum(int(np.size(x)) for x in leaves)
    for s in (0.2, 0.5, 0.8):
        got = prune(leaves, s, scope="global", search="sampled")
        assert_same(got, reference_mask(leaves, round(s * n)))
        assert_same(got, prune(leaves, s, scope="global", search="radix"))
    assert calls  # traced once, used by every call


def test_sampled_under_vmap_over_four_seeds():
    trees = [
        [jnp.asarray(np.random.default_rng(i).standard_normal(sh), jnp.float32) for sh in TREE]
        for i in range(4)
    ]
    stacked = [jnp.stack(xs) for xs in zip(*trees)]
    sparsities = jnp.asarray([0.0, 0.3, 0.6, 1.0], jnp.float32)
    masks = jax.vmap(lambda t, s: prune(t, s, scope="global", search="sampled"))(
        stacked, sparsities
    )
    n = sum(math.prod(sh) for sh in TREE)
    for i in range(4):
        k = round(float(sparsities[i]) * n)
        for got, want in zip(masks, reference_mask(trees[i], k)):
            np.testing.assert_array_equal(np.asarray(got[i]), want)


def test_sampled_on_sharded_params_moves_only_a_sample_and_histograms(devices8):
    mesh = Mesh(np.array(devices8), ("x",))
    rng = np.random.default_rng(3)
    big = jnp.asarray(np.round(rng.standard_normal((4096, 1024)), 2), jnp.float32)
    small = jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)
    spec = NamedSharding(mesh, P("x", None))
    sharded = {"big": jax.device_put(big, spec), "small": small}
    f = jax.jit(lambda t, s: prune(t, s, scope="global", search="sampled"))
    hlo = f.lower(sharded, jnp.float32(0.3)).compile().as_text()
    # Collectives carry per-leaf counts, the 2**18-bin histograms (all-reduced) and the
    # strided sample (2**20 of the 2**22 entries, all-gathered), never a whole leaf.
    results = re.findall(r"= (\(?[^=]*?) (?:all-gather|all-reduce|all-to-all)\(", hlo)
    sizes = [
        math.prod(int(d) for d in dims.split(",") if d)
        for r in results
        for dims in re.findall(r"\[([\d,]*)\]", r)
    ]
    assert 2**18 in sizes and 2**20 in sizes
    assert max(sizes) == 2**20
    for s in (0.3, 0.77):
        got = f(sharded, jnp.float32(s))
        k = round(float(np.float32(s)) * (big.size + small.size))
        want = reference_mask([big, small], k)
        np.testing.assert_array_equal(np.asarray(got["big"]), want[0])
        np.testing.assert_array_equal(np.asarray(got["small"]), want[1])
        assert got["big"].sharding.is_equivalent_to(spec, 2)


def test_auto_samples_only_large_global_selections(monkeypatch):
    leaves = [jnp.asarray(np.random.default_rng(4).standard_normal((64, 64)), jnp.float32)]

    def has_scatter(**kw):
        text = jax.jit(lambda t: prune(t, 0.5, **kw)).lower(leaves).as_text()
        return "scatter" in text

    monkeypatch.setattr(plan, "_sampling_pays", lambda: True)  # as on a GPU
    monkeypatch.setattr(plan, "_sorting_pays", lambda n: False)  # as on several GPUs
    assert not has_scatter(scope="global")  # 4096 groups < 2**22
    monkeypatch.setattr(plan, "_SAMPLED_MIN", 4096)
    assert has_scatter(scope="global") and not has_scatter(scope="layer")
    assert not has_scatter(scope="global", search="radix")
    monkeypatch.setattr(plan, "_sampling_pays", lambda: False)  # XLA:CPU
    assert not has_scatter(scope="global")


def test_search_errors():
    scores = {"w": jnp.ones((4, 4))}
    with pytest.raises(ValueError, match=r"search must be one of .*got 'exact'"):
        prune(scores, 0.5, scope="global", search="exact")
    with pytest.raises(
        ValueError, match=r"search='sampled' needs scope='global', got scope='layer'"
    ):
        prune(scores, 0.5, search="sampled")


@pytest.mark.parametrize("with_mask", [False, True])
def test_pallas_passes_equal_the_xla_passes(monkeypatch, with_mask):
    # The kernels of sparsejax.select._pallas (interpret mode off GPU) in place of
    # XLA's reduction + scatter and mask fusion: the same masks, bit for bit. Scores
    # rounded to 2 decimals tie at the threshold: the split comes from the compacted ties.
    rng = np.random.default_rng(5)
    scores = {
        "a": jnp.asarray(np.round(rng.standard_normal((300, 70)), 2), jnp.float32),
        "b": jnp.asarray(rng.standard_normal((9000,)).reshape(90, 100), jnp.float32),
    }
    kw = {}
    if with_mask:
        kw["mask"] = jax.tree.map(lambda x: jnp.asarray(rng.random(x.shape) > 0.4), scores)
    calls = []
    for name in ("bracket_pass", "compact", "finish_mask", "_compacted_relative_tie"):
        module = sampled if name.startswith("_") else selection_kernels
        fn = getattr(module, name)
        monkeypatch.setattr(  # count the CPU program's kernels (other platforms' branches
            module, name,     # are traced too, see sparsejax._platform.by_platform)
            lambda *a, fn=fn, name=name, **k: (
                target_platform() == "cpu" and calls.append(name)) or fn(*a, **k),
        )
    for s in (0.3, 0.8):
        want = prune(scores, s, scope="global", search="sampled", **kw)
        monkeypatch.setattr(plan, "_pallas_passes", lambda: True)
        got = prune(scores, s, scope="global", search="sampled", **kw)
        monkeypatch.setattr(plan, "_pallas_passes", lambda: False)
        assert_same(got, want)
        assert_same(got, prune(scores, s, scope="global", search="radix", **kw))
    # Traced once (the counts are arguments): one kernel of each kind per leaf, and one
    # tie branch that splits the ties over both leaves from the compacted entries.
    per_leaf = ["bracket_pass", "compact", "finish_mask"]
    assert sorted(calls) == sorted(["_compacted_relative_tie"] + per_leaf * 2)
    # All tied: every key is in the bracket, the kernel's slots overflow, the radix passes
    # find the threshold and finish_mask recomputes every entry.
    tied = {"a": jnp.ones((300, 70)), "b": jnp.ones((90, 100))}
    monkeypatch.setattr(plan, "_pallas_passes", lambda: True)
    got = prune(tied, 0.5, scope="global", search="sampled")
    monkeypatch.setattr(plan, "_pallas_passes", lambda: False)
    assert_same(got, prune(tied, 0.5, scope="global", search="radix"))


def test_pallas_passes_under_vmap(monkeypatch):
    # vmap over 4 seeds batches the kernels (a grid axis); ties at 2 decimals.
    rng = np.random.default_rng(8)
    scores = jnp.asarray(np.round(rng.standard_normal((4, 300, 70)), 2), jnp.float32)

    def one(s):
        return prune([s], 0.7, scope="global", search="sampled")[0]

    want = np.stack([reference_mask([np.asarray(s)], round(0.7 * s.size))[0] for s in scores])
    monkeypatch.setattr(plan, "_pallas_passes", lambda: True)
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(one))(scores)), want)


def test_pallas_passes_with_a_missed_bracket(monkeypatch):
    # The sampled entries (period = the sample stride) are 0, all others above: the bracket
    # misses, the provisional masks are wrong, and finish_mask must rewrite every entry.
    n = 2**21
    stride = max(1, n >> sampled._SAMPLE_LOG2)
    x = np.ones(n, np.float32) + np.arange(n, dtype=np.float32) * 1e-7
    x[stride // 2 :: stride] = 0.0
    leaves = [x[: n // 2].reshape(512, -1), x[n // 2 :].reshape(-1, 4096)]
    k = 3 * n // 4
    assert not sampled_state(leaves, k)[0]
    monkeypatch.setattr(plan, "_pallas_passes", lambda: True)
    got = prune(leaves, 0.75, scope="global", search="sampled")
    assert_same(got, reference_mask(leaves, k))
