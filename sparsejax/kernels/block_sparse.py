"""Deprecated alias of :mod:`sparsejax.block_sparse` (the products and their launch settings)."""

import warnings

from sparsejax.block_sparse import (
    BACKENDS,
    KERNELS,
    SHORT_LOOP_BLOCKS,
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
    "sparsejax.kernels.block_sparse is deprecated: import from sparsejax.block_sparse",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "BACKENDS",
    "KERNELS",
    "SHORT_LOOP_BLOCKS",
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
