"""Kernels for real sparse speedups.

* :mod:`sparsejax.kernels.block_sparse` — block-sparse products (Pallas/Triton
  kernels and a ``jnp`` reference): :func:`spmm`, :func:`spmm_t`, :func:`sddmm`.
* :mod:`sparsejax.kernels.selection` — global selection's sampled search in one
  read of the scores, as Pallas kernels:
  :func:`~sparsejax.kernels.selection.bracket_pass` (counts, in-bracket bits,
  provisional mask), :func:`~sparsejax.kernels.selection.compact` (the in-bracket
  entries), :func:`~sparsejax.kernels.selection.finish_mask`.
* :mod:`sparsejax.kernels.linear` — :class:`~sparsejax.kernels.linear.BlockSparseLinear`,
  the NNX layer (import it from there; it needs Flax).

The user-facing format is :class:`sparsejax.block_sparse.BlockSparseMatrix`.
"""

from sparsejax.kernels.block_sparse import (
    BACKENDS,
    KERNELS,
    KernelConfig,
    Launch,
    Tiling,
    check_pallas_block,
    choose_launch,
    default_backend,
    sddmm,
    smem_bytes,
    smem_limit,
    spmm,
    spmm_t,
)

__all__ = [
    "BACKENDS",
    "KERNELS",
    "KernelConfig",
    "Launch",
    "Tiling",
    "check_pallas_block",
    "choose_launch",
    "default_backend",
    "sddmm",
    "smem_bytes",
    "smem_limit",
    "spmm",
    "spmm_t",
]
