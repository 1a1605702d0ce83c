"""Block-sparse weights: compact format, conversion from block masks, and a differentiable matmul.

A block mask from the core (``sj.prune(scores, s, structure=sj.Blocks(bk, bn))``
returns, for a kernel ``W : (K, N)``, a full-shape bool mask constant on
``bk × bn`` tiles) is turned into a :class:`BlockSparseMatrix` that stores only
the kept blocks and their int32 indices. :func:`block_sparse_matmul` computes
``x @ W`` from it with a Pallas kernel that skips the pruned blocks (GPU) or a
``jnp`` gather/einsum reference (CPU/TPU), and is differentiable with respect
to ``x`` **and** the kept blocks (the backward pass is two more block-sparse
kernels), so a block-pruned model can be fine-tuned without re-densifying it.
The products :func:`spmm`, :func:`spmm_t`, :func:`sddmm` and their launch settings
(:class:`KernelConfig`, :class:`Tiling`) are here too; :class:`BlockSparseLinear`
(NNX, :mod:`sparsejax.block_sparse.linear`) imports Flax on first use.

Example:
  >>> import jax, jax.numpy as jnp, sparsejax as sj
  >>> from sparsejax.block_sparse import BlockSparseMatrix, block_sparse_matmul
  >>> w = jax.random.normal(jax.random.key(0), (64, 32))
  >>> mask = sj.prune({"w": jnp.abs(w)}, 0.5, structure=sj.Blocks(16, 16))["w"]
  >>> bsm = BlockSparseMatrix.from_dense(w, mask, block=(16, 16))
  >>> bsm.nnz_blocks, bsm.shape
  (4, (64, 32))
  >>> x = jnp.ones((8, 64))
  >>> bool(jnp.allclose(block_sparse_matmul(x, bsm), x @ jnp.where(mask, w, 0), atol=1e-4))
  True

References:
  Gray, Radford, Kingma. "GPU Kernels for Block-Sparse Weights", OpenAI, 2017.
  Gale, Zaharia, Young, Elsen. "Sparse GPU Kernels for Deep Learning", SC 2020.
"""

from typing import Any

from sparsejax.block_sparse._kernels import sddmm, spmm, spmm_t
from sparsejax.block_sparse._launch import (
    BACKENDS,
    KERNELS,
    SHORT_LOOP_BLOCKS,
    KernelConfig,
    Launch,
    Tiling,
    check_pallas_block,
    choose_launch,
    default_backend,
    smem_bytes,
    smem_limit,
)
from sparsejax.block_sparse._matrix import BlockSparseMatrix, block_mask_of, block_sparse_matmul

__all__ = [
    "BACKENDS",
    "KERNELS",
    "SHORT_LOOP_BLOCKS",
    "BlockIndex",
    "BlockSparseLinear",
    "BlockSparseMatrix",
    "KernelConfig",
    "Launch",
    "Tiling",
    "block_mask_of",
    "block_sparse_matmul",
    "check_pallas_block",
    "choose_launch",
    "default_backend",
    "sddmm",
    "smem_bytes",
    "smem_limit",
    "spmm",
    "spmm_t",
]

_NNX_NAMES = ("BlockIndex", "BlockSparseLinear")


def __getattr__(name: str) -> Any:
    """The NNX layer's names, imported on first use (the module imports Flax)."""
    if name in _NNX_NAMES:
        from sparsejax.block_sparse import linear

        return getattr(linear, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NNX_NAMES))
