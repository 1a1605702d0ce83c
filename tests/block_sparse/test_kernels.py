"""The block-sparse products and their gradients (reference and Pallas interpret)
against masked dense, and the Pallas → Triton lowering."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from block_sparse_cases import (
    BACKENDS,
    HIGHEST,
    check_matmul,
    config_for,
    full_mask,
    random_case,
    tolerance,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsejax.block_sparse import BlockSparseMatrix, KernelConfig, Tiling, block_sparse_matmul


@pytest.mark.parametrize(
    ("backend", "dtype", "m", "k", "n", "block", "density"),
    [
        (("pallas", True), jnp.float32, 40, 64, 96, (16, 16), 0.5),
        (("pallas", True), jnp.bfloat16, 16, 96, 64, (32, 16), 0.3),
        (("reference", False), jnp.float32, 16, 96, 64, (32, 16), 0.3),
        (("reference", False), jnp.bfloat16, 40, 64, 96, (16, 16), 0.5),
    ],
    ids=["pallas-f32-square-padded-M", "pallas-bf16-rect", "reference-f32-rect",
         "reference-bf16-square-padded-M"],
)
def test_matmul_and_grads_match_masked_dense(backend, dtype, m, k, n, block, density):
    w, bmask = random_case(m + k, k, n, block, density, dtype, empty_row=1, empty_col=2)
    x = jax.random.normal(jax.random.key(m), (m, k)).astype(dtype)
    check_matmul(w, bmask, block, x, config_for(backend), jit=True)


def test_reference_unjitted_with_batch_dims():
    w, bmask = random_case(3, 64, 32, (16, 16), 0.6, jnp.float32, empty_col=0)
    m = BlockSparseMatrix.from_dense(w, bmask, block=16)
    x = jax.random.normal(jax.random.key(3), (2, 5, 64))
    y = block_sparse_matmul(x, m, config=KernelConfig(precision=HIGHEST))  # eager, no jit
    ref = jnp.einsum("bmk,kn->bmn", x, jnp.where(full_mask(bmask, (16, 16)), w, 0), precision=HIGHEST)
    assert y.shape == (2, 5, 32)
    np.testing.assert_allclose(y, ref, atol=tolerance(jnp.float32, ref), rtol=0)
    assert not np.any(np.asarray(y)[..., :16])  # block column 0 is empty


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_pruned_and_all_kept(backend):
    cfg = config_for(backend)
    x = jax.random.normal(jax.random.key(0), (8, 32))
    w = jax.random.normal(jax.random.key(1), (32, 48))
    empty = BlockSparseMatrix.from_dense(w, np.zeros((2, 3), bool), block=16)
    full = BlockSparseMatrix.from_dense(w, np.ones((2, 3), bool), block=16)
    assert (empty.nnz_blocks, full.nnz_blocks) == (0, 6)

    @jax.jit
    def run(x, e, f):
        y_empty, dx_empty = jax.value_and_grad(
            lambda x: jnp.sum(block_sparse_matmul(x, e, config=cfg) ** 2))(x)
        return y_empty, dx_empty, block_sparse_matmul(x, f, config=cfg)

    y_empty, dx_empty, y_full = run(x, empty, full)
    assert float(y_empty) == 0.0
    np.testing.assert_array_equal(dx_empty, jnp.zeros_like(x))
    np.testing.assert_allclose(y_full, jnp.dot(x, w, precision=HIGHEST), atol=1e-5)


def test_rmatmul_uses_default_backend():
    w, bmask = random_case(4, 32, 32, (16, 16), 0.5, jnp.float32)
    m = BlockSparseMatrix.from_dense(w, bmask, block=16)
    x = jnp.ones((3, 32))
    chex.assert_trees_all_close(x @ m, block_sparse_matmul(x, m), atol=0)


@settings(max_examples=5)
@given(
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(1, 9), st.integers(1, 5), st.integers(1, 5)),
    block=st.sampled_from([(4, 4), (8, 4), (2, 8)]),
    density=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]),
)
def test_reference_random_shapes(seed, shape, block, density):
    m, kb, nb = shape
    k, n = kb * block[0], nb * block[1]
    w, bmask = random_case(seed, k, n, block, density, jnp.float32)
    x = jnp.asarray(np.random.default_rng(seed + 1).standard_normal((m, k)), jnp.float32)
    mat = BlockSparseMatrix.from_dense(w, bmask, block=block)
    cfg = KernelConfig(backend="reference", precision=HIGHEST)
    y = jax.jit(lambda x, mat: block_sparse_matmul(x, mat, config=cfg))(x, mat)
    ref = jnp.dot(x, jnp.where(full_mask(bmask, block), w, 0), precision=HIGHEST)
    np.testing.assert_allclose(y, ref, atol=1e-4 * (1 + float(jnp.max(jnp.abs(ref)))), rtol=0)
    assert mat.nnz_blocks == int(bmask.sum())


@pytest.mark.parametrize(
    ("dtype", "tiling"),
    [(jnp.bfloat16, Tiling()), (jnp.float32, Tiling(num_warps=4, num_stages=3)),
     (jnp.bfloat16, Tiling(block_m=128, block_k=32, num_warps=8, num_stages=4))],
    ids=["bf16-auto", "f32-4-warps-3-stages", "bf16-chunked"],
)
def test_pallas_kernels_lower_to_triton_for_cuda(dtype, tiling):
    """Cross-platform lowering (no GPU needed) runs the Pallas → Triton IR lowering."""
    w, bmask = random_case(5, 128, 192, (64, 64), 0.5, dtype, empty_col=0)
    m = BlockSparseMatrix.from_dense(w, bmask, block=64)
    cfg = KernelConfig(backend="pallas", fwd=tiling, dx=tiling, ddata=Tiling(block_k=32))

    def fwd_bwd(x, data, ct):
        y, pull = jax.vjp(lambda a, d: block_sparse_matmul(a, m.with_data(d), config=cfg), x, data)
        return y, pull(ct)

    x, ct = jnp.ones((300, 128), dtype), jnp.ones((300, 192), dtype)
    text = jax.jit(fwd_bwd).trace(x, m.data, ct).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("xla.gpu.triton") == 3  # spmm, spmm_t, sddmm
