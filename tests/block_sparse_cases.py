"""Random block-sparse cases and the masked-dense check shared by ``tests/block_sparse/``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.block_sparse import BlockSparseMatrix, KernelConfig, Tiling, block_sparse_matmul

HIGHEST = jax.lax.Precision.HIGHEST


BACKENDS = [
    pytest.param(("reference", False), id="reference"),
    pytest.param(("pallas", True), id="pallas-interpret"),
]


def full_mask(bmask: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """The full-shape mask of a block mask."""
    return np.repeat(np.repeat(bmask, block[0], 0), block[1], 1)


def random_case(seed, k, n, block, density, dtype, *, empty_row=None, empty_col=None):
    rng = np.random.default_rng(seed)
    bmask = rng.random((k // block[0], n // block[1])) < density
    if empty_row is not None:
        bmask[empty_row, :] = False
    if empty_col is not None:
        bmask[:, empty_col] = False
    w = jnp.asarray(rng.standard_normal((k, n)), dtype)
    return w, bmask


def tolerance(dtype, ref):
    scale = float(jnp.max(jnp.abs(ref))) + 1.0
    return (1e-5 if dtype == jnp.float32 else 2.0**-7) * scale


def config_for(backend_interpret):
    backend, interpret = backend_interpret
    t16 = Tiling(block_m=16)
    return KernelConfig(backend=backend, interpret=interpret, fwd=t16, dx=t16, precision=HIGHEST)


def check_matmul(w, bmask, block, x, cfg, *, jit):
    dtype = w.dtype
    full = jnp.asarray(full_mask(bmask, block))
    m = BlockSparseMatrix.from_dense(w, bmask, block=block)
    ct = jax.random.normal(jax.random.key(7), (*x.shape[:-1], w.shape[1])).astype(dtype)

    def sparse_loss(x, data):
        y = block_sparse_matmul(x, m.with_data(data), config=cfg)
        return jnp.sum(y.astype(jnp.float32) * ct.astype(jnp.float32)), y

    def dense_loss(x, w):
        y = jnp.einsum("...k,kn->...n", x.astype(jnp.float32), jnp.where(full, w, 0).astype(
            jnp.float32), precision=HIGHEST)
        return jnp.sum(y * ct.astype(jnp.float32)), y

    grad = jax.value_and_grad(sparse_loss, argnums=(0, 1), has_aux=True)
    grad_ref = jax.value_and_grad(dense_loss, argnums=(0, 1), has_aux=True)
    if jit:
        grad, grad_ref = jax.jit(grad), jax.jit(grad_ref)
    (_, y), (dx, ddata) = grad(x, m.data)
    (_, y_ref), (dx_ref, dw_ref) = grad_ref(x, w)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert dx.dtype == dtype and ddata.dtype == dtype and ddata.shape == m.data.shape
    y32 = y.astype(jnp.float32)
    np.testing.assert_allclose(y32, y_ref, atol=tolerance(dtype, y_ref), rtol=0)
    np.testing.assert_allclose(dx.astype(jnp.float32), dx_ref, atol=tolerance(dtype, dx_ref), rtol=0)
    ddense = m.with_data(ddata).to_dense().astype(jnp.float32)
    dw_masked = jnp.where(full, dw_ref, 0)
    np.testing.assert_allclose(ddense, dw_masked, atol=tolerance(dtype, dw_masked), rtol=0)
    # empty block columns give exact zeros; empty block rows give exact zero input gradients
    for c in np.flatnonzero(~bmask.any(axis=0)):
        assert not np.any(np.asarray(y32)[..., c * block[1] : (c + 1) * block[1]])
    for r in np.flatnonzero(~bmask.any(axis=1)):
        assert not np.any(np.asarray(dx.astype(jnp.float32))[..., r * block[0] : (r + 1) * block[0]])
