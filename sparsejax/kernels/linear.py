"""Deprecated alias of :mod:`sparsejax.block_sparse.linear` (``BlockSparseLinear``, NNX)."""

import warnings

from sparsejax.block_sparse.linear import BlockIndex, BlockSparseLinear

warnings.warn(
    "sparsejax.kernels.linear is deprecated: import from sparsejax.block_sparse",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["BlockIndex", "BlockSparseLinear"]
