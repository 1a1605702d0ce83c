"""Tests of sparsejax.structures: shapes, group reductions, validation errors."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_filters_is_neurons_and_structures_are_static_hashable():
    assert Filters is Neurons
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
