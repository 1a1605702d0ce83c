"""Mask pytree algebra: shapes, counts, broadcasting, errors, jit/vmap/sharding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import sparsejax as sj
from sparsejax.tree import path_str, prunable_tree


def _params():
    return {
        "dense": {"kernel": jnp.arange(12.0).reshape(3, 4) + 1.0, "bias": jnp.ones(4)},
        "conv": {"kernel": jnp.ones((3, 3, 2, 5)), "bias": jnp.zeros(5)},
        "stack": [jnp.ones((2, 2)), (jnp.full((4, 2), 2.0),)],
    }


def test_init_mask_shapes_follow_default_filter():
    mask = sj.init_mask(_params())
    shapes = jax.tree.map(jnp.shape, mask)
    assert shapes == {
        "dense": {"kernel": (3, 4), "bias": ()},
        "conv": {"kernel": (3, 3, 2, 5), "bias": ()},
        "stack": [(2, 2), ((4, 2),)],
    }
    assert all(leaf.dtype == jnp.bool_ for leaf in jax.tree.leaves(mask))


def test_init_mask_by_pattern_and_predicate():
    params = _params()
    by_regex = jax.tree.map(jnp.shape, sj.init_mask(params, prunable=r"dense/kernel$"))
    assert by_regex["dense"]["kernel"] == (3, 4)
    assert by_regex["conv"]["kernel"] == ()
    by_list = jax.tree.map(jnp.shape, sj.init_mask(params, prunable=["conv/kernel", r"stack/1"]))
    assert by_list["conv"]["kernel"] == (3, 3, 2, 5)
    assert by_list["stack"] == [(), ((4, 2),)]
    by_pred = jax.tree.map(jnp.shape, sj.init_mask(params, prunable=lambda p, x: x.ndim == 4))
    assert by_pred["conv"]["kernel"] == (3, 3, 2, 5)
    assert by_pred["dense"]["kernel"] == ()


def test_unknown_layer_pattern_is_an_error():
    with pytest.raises(ValueError, match=r"'decoder/kernel'.*matches no parameter path"):
        sj.init_mask(_params(), prunable="decoder/kernel")


def test_apply_mask_structured_broadcast_and_nan_safety():
    params = _params()
    params["dense"]["kernel"] = params["dense"]["kernel"].at[0, 1].set(jnp.nan)
    mask = sj.init_mask(params)
    mask["dense"]["kernel"] = jnp.array([[True, False, True, False]])  # neurons (1, out)
    mask["conv"]["kernel"] = jnp.zeros((1, 1, 2, 1), bool).at[0, 0, 1, 0].set(True)  # in-channels
    mask["stack"][0] = jnp.zeros((), bool)  # whole layer
    for fn in (sj.apply_mask, jax.jit(sj.apply_mask)):
        out = fn(params, mask)
        k = np.asarray(out["dense"]["kernel"])
        assert np.all(k[:, [1, 3]] == 0.0)  # the NaN sat in a pruned column and is now 0
        np.testing.assert_array_equal(k[:, 0], [1.0, 5.0, 9.0])
        assert np.all(np.asarray(out["conv"]["kernel"])[:, :, 0] == 0)
        assert np.all(np.asarray(out["conv"]["kernel"])[:, :, 1] == 1)
        assert np.all(np.asarray(out["stack"][0]) == 0)
        chex.assert_trees_all_equal(out["stack"][1], params["stack"][1])


def test_count_and_sparsity_exact():
    params = _params()
    mask = sj.init_mask(params)
    mask["dense"]["kernel"] = jnp.array([[True, False, True, False]])  # keeps 6 of 12
    mask["conv"]["kernel"] = jnp.zeros((1, 1, 1, 5), bool).at[..., :2].set(True)  # 36 of 90
    mask["stack"][0] = jnp.zeros((), bool)  # 0 of 4
    # prunable (ndim >= 2): 12 + 90 + 4 + 8 = 114 entries, kept 6 + 36 + 0 + 8 = 50
    assert int(sj.count_kept(mask, params, prunable=None)) == 50
    assert int(sj.count_kept(mask, params)) == 50 + 4 + 5  # all leaves, biases kept
    np.testing.assert_allclose(float(sj.sparsity(mask, params)), 1 - 50 / 114, rtol=1e-6)
    np.testing.assert_allclose(
        float(jax.jit(lambda m: sj.sparsity(m, params))(mask)), 1 - 50 / 114, rtol=1e-6
    )


def test_intersect_union_broadcast_shapes():
    a = {"w": jnp.array([[True, False, True]])}  # (1, 3) neuron mask
    b = {"w": jnp.array([[True, True, False], [False, True, True]])}  # (2, 3) full
    both = sj.intersect(a, b)
    np.testing.assert_array_equal(both["w"], [[True, False, False], [False, False, True]])
    either = sj.union(a, b)
    np.testing.assert_array_equal(either["w"], [[True, True, True], [True, True, True]])
    with pytest.raises(ValueError, match="masks\\[0\\] and masks\\[1\\]"):
        sj.intersect(a, {"v": b["w"]})


def test_summary_table():
    params = _params()
    mask = sj.init_mask(params)
    mask["dense"]["kernel"] = jnp.array([[True, False, True, False]])
    rows = sj.summary(params, mask)
    row = {r.path: r for r in rows}["dense/kernel"]
    assert (row.shape, row.size, row.kept, row.nonzero) == ((3, 4), 12, 6, 6)
    assert row.sparsity == 0.5
    table = sj.format_summary(rows)
    assert "| dense/kernel | (3, 4) | 12 | 6 | 6 | 50.00% |" in table
    assert table.splitlines()[-1].startswith("| **total, all parameters** | | 123 |")
    assert [r.path for r in rows if r.prunable] == ["conv/kernel", "dense/kernel", "stack/0",
                                                    "stack/1/0"]


def test_summary_totals_kernels_and_all_parameters_apart():
    """A 95% kernel prune read 94.85% 'total' because biases were mixed in, unsaid."""
    params = {"w1": jnp.ones((40, 50)), "b1": jnp.ones(50), "w2": jnp.ones((50, 20)),
              "b2": jnp.ones(20)}
    mask = jax.jit(lambda p: sj.prune(sj.scores.magnitude(p), 0.95))(params)
    lines = sj.format_summary(sj.summary(params, mask)).splitlines()
    # 3,000 kernel entries, 150 kept; 70 biases all kept
    assert lines[-2] == "| **total, prunable weights** | | 3,000 | 150 | 150 | 95.00% |"
    assert lines[-1] == "| **total, all parameters** | | 3,070 | 220 | 220 | 92.83% |"
    rows = sj.summary(params, mask, prunable=r"w1|b1")
    assert [r.prunable for r in rows] == [True, False, True, False]  # b1, b2, w1, w2


def test_errors_name_the_path_and_value():
    params = _params()
    bad_shape = sj.init_mask(params)
    bad_shape["conv"]["kernel"] = jnp.ones((3, 2), bool)
    with pytest.raises(ValueError, match=r"'conv/kernel' has shape \(3, 2\).*\(3, 3, 2, 5\)"):
        sj.apply_mask(params, bad_shape)
    bad_dtype = sj.init_mask(params)
    bad_dtype["dense"]["kernel"] = jnp.ones((3, 4), jnp.float32)
    with pytest.raises(ValueError, match="'dense/kernel' has dtype float32"):
        sj.apply_mask(params, bad_dtype)
    missing = sj.init_mask(params)
    del missing["dense"]["bias"]
    with pytest.raises(ValueError, match=r"paths only in params: \['dense/bias'\]"):
        sj.apply_mask(params, missing)


def test_nnx_raw_array_in_state_is_named():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    _, params = nnx.split(model, nnx.Param)
    mask = sj.init_mask(params)
    mask["kernel"] = jnp.ones((3, 2), bool)  # raw array instead of the Param wrapper
    with pytest.raises(ValueError, match="differ at 'kernel'.*variable.replace"):
        sj.apply_mask(params, mask)


def test_nnx_state_paths_and_roundtrip():
    class Tiny(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(4, 3, rngs=rngs), nnx.Linear(3, 2, rngs=rngs)])

        def __call__(self, x):
            return self.layers[1](jax.nn.relu(self.layers[0](x)))

    model = Tiny(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    names = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert names == ["layers/0/bias", "layers/0/kernel", "layers/1/bias", "layers/1/kernel"]
    mask = sj.init_mask(params, prunable=r"layers/0/kernel")
    # a State leaf is an nnx.Param: replace its value, keep the wrapper
    mask["layers"][0]["kernel"] = mask["layers"][0]["kernel"].replace(jnp.zeros((1, 3), bool))
    pruned = nnx.merge(graphdef, sj.apply_mask(params, mask), rest)
    x = jax.random.normal(jax.random.key(1), (5, 4))
    expected = model.layers[1](jax.nn.relu(jnp.broadcast_to(model.layers[0].bias[...], (5, 3))))
    np.testing.assert_allclose(pruned(x), expected, rtol=1e-6)


def test_vmap_over_masks():
    params = {"w": jnp.arange(6.0).reshape(2, 3) + 1}
    masks = {"w": jnp.stack([jnp.eye(2, 3, dtype=bool), jnp.ones((2, 3), bool)])}
    out = jax.vmap(sj.apply_mask, in_axes=(None, 0))(params, masks)
    np.testing.assert_array_equal(out["w"][0], [[1, 0, 0], [0, 5, 0]])
    counts = jax.vmap(lambda m: sj.count_kept(m, params))(masks)
    np.testing.assert_array_equal(counts, [2, 6])


def test_sharded_params_keep_sharding(devices8):
    mesh = Mesh(np.array(devices8), ("d",))
    spec = NamedSharding(mesh, PartitionSpec("d"))
    params = {"w": jax.device_put(jnp.arange(64.0).reshape(16, 4), spec)}
    mask = {"w": jax.device_put(params["w"] % 3 != 0, spec)}
    out = jax.jit(sj.apply_mask)(params, mask)
    assert out["w"].sharding.is_equivalent_to(spec, 2)
    np.testing.assert_array_equal(out["w"], np.where(np.arange(64).reshape(16, 4) % 3, out["w"], 0))
    assert int(jax.jit(lambda m: sj.count_kept(m, params))(mask)) == 64 - 22


@given(
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple),
    keep_axes=st.integers(0, 15),
    seed=st.integers(0, 2**16),
)
def test_broadcast_mask_count_matches_dense_count(shape, keep_axes, seed):
    # Property: for any mask leaf that broadcasts (size-1 axes), count_kept equals
    # the count of the fully broadcast mask, and apply_mask equals where(full, p, 0).
    mshape = tuple(d if (keep_axes >> i) & 1 else 1 for i, d in enumerate(shape))
    rng = np.random.default_rng(seed)
    m = jnp.asarray(rng.random(mshape) < 0.5)
    p = jnp.asarray(rng.normal(size=shape), jnp.float32)
    full = sj.broadcast_mask({"p": m}, {"p": p})["p"]
    assert full.shape == shape
    assert int(sj.count_kept({"p": m}, {"p": p})) == int(full.sum())
    np.testing.assert_array_equal(sj.apply_mask({"p": p}, {"p": m})["p"], np.where(full, p, 0))


def test_prunable_tree_is_static_bools():
    which = prunable_tree(_params())
    assert which == {
        "dense": {"kernel": True, "bias": False},
        "conv": {"kernel": True, "bias": False},
        "stack": [True, (True,)],
    }
