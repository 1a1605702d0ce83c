"""Deprecated: the block-sparse kernels moved to :mod:`sparsejax.block_sparse`.

``sparsejax.kernels.block_sparse`` → :mod:`sparsejax.block_sparse`,
``sparsejax.kernels.linear`` → :mod:`sparsejax.block_sparse.linear`,
``sparsejax.kernels.selection`` → the sampled search's passes in
``sparsejax.select._pallas``. These aliases re-export the old names.
"""

import warnings

from sparsejax.block_sparse import (
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

warnings.warn(
    "sparsejax.kernels is deprecated: import from sparsejax.block_sparse",
    DeprecationWarning,
    stacklevel=2,
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
