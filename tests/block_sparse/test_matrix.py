"""The compact block format: layout, conversions from masks, bad inputs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from block_sparse_cases import full_mask, random_case

import sparsejax as sj
from sparsejax.block_sparse import (
    BlockSparseMatrix,
    KernelConfig,
    Tiling,
    block_mask_of,
    block_sparse_matmul,
)


def test_layout_of_a_known_mask():
    bmask = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1]], bool)  # block column 1 empty
    w = jnp.arange(6 * 9, dtype=jnp.float32).reshape(6, 9)
    m = BlockSparseMatrix.from_dense(w, bmask, block=(2, 3))
    assert m.nnz_blocks == 4 and m.grid == (3, 3) and m.shape == (6, 9)
    # column-major: (r, c) = (0, 0), (1, 0), (0, 2), (2, 2)
    np.testing.assert_array_equal(m.rows, [0, 1, 0, 2])
    np.testing.assert_array_equal(m.cols, [0, 0, 2, 2])
    np.testing.assert_array_equal(m.col_ptr, [0, 2, 2, 4])
    # row-major view: (0, 0)=block 0, (0, 2)=block 2, (1, 0)=block 1, (2, 2)=block 3
    np.testing.assert_array_equal(m.row_ptr, [0, 2, 3, 4])
    np.testing.assert_array_equal(m.t_cols, [0, 2, 0, 2])
    np.testing.assert_array_equal(m.t_blocks, [0, 2, 1, 3])
    np.testing.assert_array_equal(m.data[3], w[4:6, 6:9])
    # launch orders: columns by kept count (2, 0, 2) and rows (2, 1, 1), descending, stable
    np.testing.assert_array_equal(m.col_order, [0, 2, 1])
    np.testing.assert_array_equal(m.row_order, [0, 1, 2])
    assert m.rows.dtype == jnp.int32 and m.density == pytest.approx(4 / 9)
    np.testing.assert_array_equal(m.to_dense(), jnp.where(full_mask(bmask, (2, 3)), w, 0))
    np.testing.assert_array_equal(m.block_mask(), bmask)
    np.testing.assert_array_equal(m.mask(), full_mask(bmask, (2, 3)))


@pytest.mark.parametrize("sparsity", [0.75, 1.0])
def test_roundtrip_from_prune(sparsity):
    w = jax.random.normal(jax.random.key(0), (128, 64))
    mask = sj.prune({"w": jnp.abs(w)}, sparsity, structure=sj.Blocks(16, 32))["w"]
    m = BlockSparseMatrix.from_dense(w, mask, block=(16, 32))
    assert m.nnz_blocks == 16 - round(sparsity * 16)
    np.testing.assert_array_equal(m.to_dense(), jnp.where(mask, w, 0))
    np.testing.assert_array_equal(m.mask(), mask)
    # the pytree flattens to its 7 arrays and rebuilds under jit
    assert len(jax.tree.leaves(m)) == 9
    np.testing.assert_array_equal(jax.jit(lambda a: a.to_dense())(m), jnp.where(mask, w, 0))


def test_mask_forms_agree():
    w, bmask = random_case(1, 64, 64, (16, 16), 0.5, jnp.float32)
    full = full_mask(bmask, (16, 16))
    a = BlockSparseMatrix.from_dense(w, full, block=16)
    b = BlockSparseMatrix.from_dense(w, bmask, block=16)
    c = BlockSparseMatrix.from_dense(jnp.where(full, w, 0), block=16)  # mask=None: nonzero blocks
    for other in (b, c):
        chex.assert_trees_all_equal(a, other)
    neuron = np.zeros((1, 64), bool)
    neuron[0, 16:48] = True  # neuron mask broadcasting over rows, aligned to blocks
    np.testing.assert_array_equal(
        block_mask_of(neuron, (64, 64), 16), np.tile([False, True, True, False], (4, 1))
    )
    np.testing.assert_array_equal(block_mask_of(jnp.array(True), (64, 32), (32, 16)), np.ones((2, 2)))


def test_from_dense_with_traced_weight():
    w, bmask = random_case(2, 32, 32, (16, 16), 0.5, jnp.float32)
    dense = jax.jit(lambda w: BlockSparseMatrix.from_dense(w, bmask, block=16).to_dense())(w)
    np.testing.assert_array_equal(dense, jnp.where(full_mask(bmask, (16, 16)), w, 0))


def test_bad_inputs_raise():
    w = jnp.ones((32, 32))
    mixed = np.ones((32, 32), bool)
    mixed[17, 3] = False
    with pytest.raises(ValueError, match=r"block \(1, 0\) \(rows 16:32, cols 0:16\)"):
        BlockSparseMatrix.from_dense(w, mixed, block=16)
    with pytest.raises(ValueError, match=r"not divisible by the block \(16, 24\)"):
        BlockSparseMatrix.from_dense(w, np.ones((32, 32), bool), block=(16, 24))
    with pytest.raises(ValueError, match="neither broadcasts"):
        BlockSparseMatrix.from_dense(w, np.ones((3, 32), bool), block=16)
    with pytest.raises(TypeError, match="must be a bool array"):
        BlockSparseMatrix.from_dense(w, np.ones((32, 32)), block=16)
    with pytest.raises(ValueError, match="block must be a positive int"):
        BlockSparseMatrix.from_dense(w, np.ones((32, 32), bool), block=(0, 16))
    with pytest.raises(TypeError, match="must be concrete"):
        jax.jit(lambda m: BlockSparseMatrix.from_dense(w, m, block=16).data)(jnp.ones((32, 32), bool))
    m = BlockSparseMatrix.from_dense(w, np.ones((32, 32), bool), block=16)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 32\).*\(4, 16\)"):
        block_sparse_matmul(jnp.ones((4, 16)), m)
    with pytest.raises(TypeError, match="BlockSparseMatrix"):
        block_sparse_matmul(jnp.ones((4, 32)), w)
    with pytest.raises(ValueError, match="backend must be one of"):
        block_sparse_matmul(jnp.ones((4, 32)), m, backend="cuda")
    with pytest.raises(ValueError, match="data must have shape"):
        m.with_data(jnp.ones((3, 16, 16)))
    small = BlockSparseMatrix.from_dense(jnp.ones((16, 16)), np.ones((2, 2), bool), block=8)
    with pytest.raises(ValueError, match=r"power of two >= 16, got block \(8, 8\)"):
        block_sparse_matmul(jnp.ones((4, 16)), small, backend="pallas", interpret=True)
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        Tiling(block_m=48)
    with pytest.raises(ValueError, match="num_warps"):
        Tiling(num_warps=3)
    with pytest.raises(ValueError, match="num_stages"):
        Tiling(num_stages=0)
    with pytest.raises(TypeError, match="fwd must be a Tiling"):
        KernelConfig(fwd=(128, 64))
    with pytest.raises(ValueError, match="ddata.block_m must be None"):
        KernelConfig(ddata=Tiling(block_m=64))
    with pytest.raises(ValueError, match="smem_limit"):
        KernelConfig(smem_limit=0)
