"""Tests of sparsejax.structures: shapes, group reductions, validation errors."""

import dataclasses
import pydoc

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsejax as sj
from sparsejax.structures import (
    NM,
    Blocks,
    Filters,
    InputChannels,
    Layers,
    Neurons,
    Unstructured,
    reduce_scores,
)

DENSE = (6, 8)
CONV = (3, 3, 4, 8)


@pytest.mark.parametrize(
    ("structure", "dense_mask", "conv_mask", "dense_groups"),
    [
        (Unstructured(), (6, 8), (3, 3, 4, 8), (6, 8)),
        (Neurons(), (1, 8), (1, 1, 1, 8), (1, 8)),
        (InputChannels(), (6, 1), (1, 1, 4, 1), (6, 1)),
        (Layers(), (), (), ()),
        (Blocks(2, 4), (6, 8), (3, 3, 4, 8), (3, 2)),
        (NM(2, 2), (6, 8), (3, 3, 4, 8), (6, 8)),
    ],
)
def test_mask_and_group_shapes(structure, dense_mask, conv_mask, dense_groups):
    assert structure.mask_shape(DENSE) == dense_mask
    assert structure.mask_shape(CONV) == conv_mask
    assert structure.group_shape(DENSE) == dense_groups
    assert structure.num_groups(DENSE) == int(np.prod(dense_groups))
    # Every mask shape broadcasts to its parameter.
    np.broadcast_shapes(structure.mask_shape(CONV), CONV)
    np.broadcast_shapes(structure.mask_shape(DENSE), DENSE)


def test_filters_is_a_neurons_named_for_filters_and_structures_are_static_hashable():
    # help(sj.Filters) used to document class Neurons (Filters was an alias)
    assert Filters.__name__ == "Filters" and issubclass(Filters, Neurons)
    assert repr(Filters()) == "Filters(axis=None)" and "class Filters" in pydoc.render_doc(Filters)
    assert "Convolution filters" in pydoc.render_doc(Filters)
    assert Filters().mask_shape(CONV) == Neurons().mask_shape(CONV) == (1, 1, 1, 8)
    assert Filters() != Neurons() and Filters() == Filters()
    assert Blocks(2, 4) == Blocks(2, 4) and hash(Blocks(2, 4)) == hash(Blocks(2, 4))
    assert NM(2, 4) != NM(1, 4)
    assert NM(2, 4).max_sparsity == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        NM(2, 4).n = 3  # type: ignore[misc]


W = np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]], np.float32)  # (in=2, out=3)


@pytest.mark.parametrize("jit", [False, True])
def test_neuron_reductions_closed_form(jit):
    def red(x, r):
        return Neurons().reduce(x, r)

    f = jax.jit(red, static_argnums=1) if jit else red
    np.testing.assert_allclose(f(W, "l1"), [[5.0, 7.0, 9.0]])
    np.testing.assert_allclose(
        f(W, "l2"), [[np.sqrt(17.0), np.sqrt(29.0), np.sqrt(45.0)]], rtol=1e-6
    )
    np.testing.assert_allclose(f(W, "mean"), [[-1.5, 1.5, -1.5]])
    np.testing.assert_allclose(f(W, "sum"), [[-3.0, 3.0, -3.0]])
    assert f(W, "l1").dtype == jnp.float32


def test_input_channel_layer_and_unstructured_reductions():
    np.testing.assert_allclose(InputChannels().reduce(W, "l1"), [[6.0], [15.0]])
    np.testing.assert_allclose(InputChannels().reduce(W, "sum"), [[2.0], [-5.0]])
    np.testing.assert_allclose(Layers().reduce(W, "l1"), 21.0)
    assert Layers().reduce(W, "l1").shape == ()
    # Single-entry groups keep the sign: the reduction is not applied.
    np.testing.assert_array_equal(Unstructured().reduce(W, "l1"), W)
    np.testing.assert_array_equal(NM(1, 2).reduce(W, "l1"), W)


def test_conv_filter_l1_norm_li_et_al():
    # Li et al. 2017: a filter's importance is the L1 norm of its kh·kw·in weights.
    x = np.arange(np.prod(CONV), dtype=np.float32).reshape(CONV) - 100.0
    got = Filters().reduce(x, "l1")
    assert got.shape == (1, 1, 1, 8)
    np.testing.assert_allclose(got[0, 0, 0], np.abs(x).sum(axis=(0, 1, 2)), rtol=1e-6)


def test_blocks_reduce_and_expand():
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    g = Blocks(2, 2).reduce(x, "sum")
    np.testing.assert_allclose(
        g, [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    )
    keep = jnp.array([[True, False], [False, True]])
    full = Blocks(2, 2).expand(keep, (4, 4))
    np.testing.assert_array_equal(full, np.kron(np.asarray(keep), np.ones((2, 2), bool)))
    # Leading (conv) axes keep their own block grid.
    g3 = Blocks(2, 4).reduce(np.ones((3, 4, 8), np.float32), "l1")
    assert g3.shape == (3, 2, 2)
    np.testing.assert_allclose(g3, 8.0)
    assert Blocks(2, 4).expand(g3 > 0, (3, 4, 8)).shape == (3, 4, 8)


def test_bf16_scores_reduce_in_float32():
    x = jnp.asarray(W, jnp.bfloat16)
    got = Neurons().reduce(x, "l1")
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, [[5.0, 7.0, 9.0]])


def test_reduce_scores_tree_prunable_only():
    tree = {"kernel": W, "bias": np.array([1.0, -1.0, 2.0], np.float32)}
    out = reduce_scores(tree, Neurons(), "l1")
    np.testing.assert_allclose(out["kernel"], [[5.0, 7.0, 9.0]])
    np.testing.assert_array_equal(out["bias"], tree["bias"])  # not prunable: unchanged
    out = jax.jit(lambda t: reduce_scores(t, Blocks(1, 3), "l2"))(tree)
    np.testing.assert_allclose(out["kernel"], [[np.sqrt(14.0)], [np.sqrt(77.0)]], rtol=1e-6)
    chex.assert_trees_all_equal_shapes(
        reduce_scores(tree, Layers(), "sum", prunable="bias"), {"kernel": W, "bias": np.float32(0)}
    )


def test_blocks_not_divisible_names_path_shape_block():
    with pytest.raises(ValueError, match=r"'dense/kernel'.*\(6, 8\).*\(4, 4\)"):
        Blocks(4, 4).mask_shape((6, 8), "dense/kernel")
    with pytest.raises(ValueError, match=r"'k'.*\(6, 8\).*\(4, 4\)"):
        reduce_scores({"k": np.ones((6, 8), np.float32)}, Blocks(4, 4))


def test_nm_not_divisible_names_path_dim_and_m():
    # 2:4 on an input dimension of 6.
    with pytest.raises(ValueError, match=r"'layer/kernel'.*is 6, not divisible by 4"):
        NM(2, 4).mask_shape((6, 8), "layer/kernel")
    with pytest.raises(ValueError, match=r"'k'.*is 6, not divisible by 4"):
        reduce_scores({"k": np.ones((6, 8), np.float32)}, NM(2, 4))


@pytest.mark.parametrize(
    ("structure", "shape", "pattern"),
    [
        (Neurons(), (), r"at least 1 dimension.*'b'.*\(\)"),
        (InputChannels(), (5,), r"at least 2 dimension.*'b'.*\(5,\)"),
        (Blocks(1, 1), (5,), r"at least 2 dimension.*'b'.*\(5,\)"),
        (NM(2, 4), (8,), r"at least 2 dimension.*'b'.*\(8,\)"),
    ],
)
def test_structure_incompatible_with_ndim(structure, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        structure.mask_shape(shape, "b")


def test_invalid_structure_parameters_and_reduction():
    with pytest.raises(ValueError, match=r"Blocks.rows must be a positive integer, got 0"):
        Blocks(0, 2)
    with pytest.raises(ValueError, match=r"Blocks.cols must be a positive integer, got 2.5"):
        Blocks(2, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"n=5, m=4"):
        NM(5, 4)
    with pytest.raises(ValueError, match=r"n=0, m=4"):
        NM(0, 4)
    with pytest.raises(ValueError, match=r"reduction must be one of .* got 'max'"):
        Neurons().reduce(W, "max")
    with pytest.raises(ValueError, match=r"got 'linf'"):
        reduce_scores({"k": W}, Unstructured(), "linf")
    with pytest.raises(TypeError, match="Structure"):
        reduce_scores({"k": W}, "neurons")  # type: ignore[arg-type]


# ----------------------------------------------------------------- axes and layouts


@pytest.mark.parametrize(
    ("structure", "shape", "mask"),
    [
        (Neurons(layout="equinox"), (128, 64), (128, 1)),  # Equinox Linear (out, in)
        (Neurons(axis=0), (128, 64), (128, 1)),
        (Filters(layout="torch"), (8, 4, 3, 3), (8, 1, 1, 1)),  # PyTorch conv (out, in, kh, kw)
        (InputChannels(layout="equinox"), (128, 64), (1, 64)),
        (InputChannels(layout="torch"), (8, 4, 3, 3), (1, 4, 1, 1)),
        (Neurons(layout="flax"), (64, 128), (1, 128)),
        (Neurons(layout="equinox"), (7,), (7,)),  # a bias
    ],
)
def test_layout_presets_give_the_units_axis(structure, shape, mask):
    assert structure.mask_shape(shape, "layers/0/weight") == mask


def test_layout_and_axis_are_one_choice():
    assert Neurons(layout="equinox") == Neurons(axis=0) and repr(NM(2, 4, layout="torch")) == (
        "NM(n=2, m=4, axis=1)")
    assert Blocks(2, 4, layout="flax") == Blocks(2, 4) and Blocks(2, 4, axes=(-2, -1)) == Blocks(2, 4)
    assert Blocks(2, 4, layout="equinox").axes == (1, 0)
    with pytest.raises(ValueError, match="contradicts layout='equinox'"):
        Neurons(axis=-1, layout="equinox")
    with pytest.raises(ValueError, match="layout must be one of"):
        NM(2, 4, layout="tf")
    with pytest.raises(ValueError, match=r"acts on axis 2.*'k'.*\(3, 4\)"):
        Neurons(axis=2).mask_shape((3, 4), "k")
    with pytest.raises(ValueError, match="both block axes"):
        Blocks(1, 1, axes=(0, -2)).mask_shape((3, 4), "k")


@pytest.mark.parametrize("structure", [Neurons(), InputChannels(), NM(2, 4)])
def test_weight_leaves_need_an_explicit_layout(structure):
    """A Flax default on an (out, in) `weight` silently pruned inputs instead of neurons."""
    with pytest.raises(ValueError, match=r"'layers/0/weight'.*layout='equinox'"):
        structure.mask_shape((128, 64), "layers/0/weight")
    assert structure.mask_shape((128, 64), "layers/0/kernel")  # Flax names: the default
    assert Neurons().mask_shape((64,), "layers/0/weight") == (64,)  # 1-D: no ambiguity


def _transposed(tree):
    return jax.tree.map(lambda x: jnp.swapaxes(x, -1, -2), tree)


@settings(max_examples=12)
@given(
    rows=st.integers(1, 2), cols=st.integers(1, 2), sparsity=st.sampled_from([0.25, 0.5, 0.75]),
    kind=st.sampled_from(["neurons", "inputs", "nm", "blocks"]), seed=st.integers(0, 3),
)
def test_out_in_layout_prunes_the_transpose_of_the_flax_layout(rows, cols, sparsity, kind, seed):
    """The same decisions whichever way the weight is stored (exact counts, same ties)."""
    flax_s, eqx_s = {
        "neurons": (Neurons(), Neurons(layout="equinox")),
        "inputs": (InputChannels(), InputChannels(layout="equinox")),
        "nm": (NM(1, 4), NM(1, 4, layout="equinox")),
        "blocks": (Blocks(2, 2), Blocks(2, 2, layout="equinox")),
    }[kind]
    w = np.random.default_rng(seed).normal(size=(4 * rows, 4 * cols)).astype(np.float32)
    w_in_out = {"w": jnp.asarray(w)}
    a = sj.prune(sj.scores.magnitude(w_in_out), sparsity, structure=flax_s)["w"]
    b = sj.prune(sj.scores.magnitude(_transposed(w_in_out)), sparsity, structure=eqx_s)["w"]
    full = np.broadcast_to(np.asarray(a), w.shape)
    np.testing.assert_array_equal(full.T, np.broadcast_to(np.asarray(b), w.T.shape))
    assert b.shape == eqx_s.mask_shape(w.T.shape)


def test_nm_along_axis_keeps_n_of_every_m_jitted():
    w = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)  # (out, in)
    f = jax.jit(lambda p: sj.prune(sj.scores.magnitude(p), structure=NM(2, 4, axis=-1))["w"])
    m = np.asarray(f({"w": jnp.asarray(w)}))
    assert m.shape == (3, 16) and (m.reshape(3, 4, 4).sum(-1) == 2).all()
    kept = np.sort(np.abs(w).reshape(3, 4, 4), -1)[..., 2:]
    np.testing.assert_allclose(np.sort(np.where(m, np.abs(w), 0).reshape(3, 4, 4), -1)[..., 2:],
                               kept)
    assert NM(2, 4, axis=-1).group_shape((3, 16)) == (16, 3)
    with pytest.raises(ValueError, match=r"axis 1 of the parameter at 'w'.*is 6, not divisible"):
        NM(2, 4, axis=1).mask_shape((3, 6), "w")
