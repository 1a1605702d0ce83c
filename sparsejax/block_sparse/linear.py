"""``BlockSparseLinear``: a Flax NNX Dense layer whose kernel is a :class:`BlockSparseMatrix`.

Drop-in replacement for a block-pruned ``nnx.Linear``: same call signature
(``layer(inputs)`` on ``(..., in_features)`` → ``(..., out_features)``, bias
added), but only the kept ``bk × bn`` blocks are stored (``data``, an
``nnx.Param`` of shape ``(nnzb, bk, bn)``, so ``nnx.Optimizer(wrt=nnx.Param)``
fine-tunes exactly the kept weights) and multiplied (the Pallas kernel on GPU).
The int32 block indices live in :class:`BlockIndex` variables, which are not
``nnx.Param`` and are never seen by an optimizer. This module imports Flax;
``sparsejax.block_sparse`` loads it only when one of its names is used.

References:
  Gray, Radford, Kingma. "GPU Kernels for Block-Sparse Weights", OpenAI, 2017.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sparsejax.block_sparse._launch import KernelConfig
from sparsejax.block_sparse._matrix import BlockSparseMatrix, block_sparse_matmul

__all__ = ["BlockIndex", "BlockSparseLinear"]

_INDEX_FIELDS = (
    "rows", "cols", "col_ptr", "row_ptr", "t_cols", "t_blocks", "col_order", "row_order",
)


class BlockIndex(nnx.Variable):
    """Int32 block-structure index of a block-sparse kernel (not trainable, not a ``Param``)."""


class BlockSparseLinear(nnx.Module):
    """Linear layer ``y = x @ W + b`` with a block-sparse ``W : (in_features, out_features)``.

    Build it from a pruned ``nnx.Linear`` with :meth:`from_linear`, or from a
    :class:`BlockSparseMatrix` directly. Pure in the NNX sense (no state changes
    on call).

    Attributes:
      in_features, out_features: ``K`` and ``N``.
      block: ``(bk, bn)``.
      data: ``nnx.Param`` ``(nnzb, bk, bn)``, the kept blocks.
      bias: ``nnx.Param`` ``(out_features,)`` or ``None``.
      dtype: computation dtype (``None``: promote inputs and params, as ``nnx.Linear``).
      config: :class:`~sparsejax.block_sparse.KernelConfig` (backend, tiles).
    """

    def __init__(
        self,
        kernel: BlockSparseMatrix,
        bias: jax.Array | None = None,
        *,
        dtype: Any = None,
        config: KernelConfig | None = None,
    ):
        if not isinstance(kernel, BlockSparseMatrix):
            raise TypeError(f"kernel must be a BlockSparseMatrix, got {type(kernel).__name__}")
        self.in_features, self.out_features = kernel.shape
        self.block = kernel.block
        if bias is not None and jnp.shape(bias) != (self.out_features,):
            raise ValueError(
                f"bias must have shape ({self.out_features},), got {jnp.shape(bias)}"
            )
        self.use_bias = bias is not None
        self.dtype = dtype
        self.config = config if config is not None else KernelConfig()
        self.data = nnx.Param(kernel.data)
        self.bias = nnx.Param(jnp.asarray(bias)) if bias is not None else None
        for name in _INDEX_FIELDS:
            setattr(self, name, BlockIndex(getattr(kernel, name)))

    @classmethod
    def from_linear(
        cls,
        linear: nnx.Linear,
        mask: Any = None,
        *,
        block: tuple[int, int] | int,
        config: KernelConfig | None = None,
    ) -> BlockSparseLinear:
        """Convert a (block-pruned) ``nnx.Linear``.

        Args:
          linear: the dense layer; its kernel ``(in, out)`` and bias are copied.
          mask: concrete bool mask of the kernel (full shape, constant on
            blocks, e.g. ``prune(..., structure=Blocks(bk, bn))``'s leaf), or
            block level ``(in // bk, out // bn)``; ``None``: keep blocks with a
            nonzero entry.
          block: ``(bk, bn)`` or an int.
          config: kernel configuration.

        Returns:
          A layer computing ``linear(x)`` with ``kernel = where(mask, kernel, 0)``.
        """
        if not isinstance(linear, nnx.Linear):
            raise TypeError(f"linear must be an nnx.Linear, got {type(linear).__name__}")
        kernel = BlockSparseMatrix.from_dense(linear.kernel[...], mask, block=block)
        bias = linear.bias[...] if linear.bias is not None else None
        return cls(kernel, bias, dtype=linear.dtype, config=config)

    @property
    def kernel(self) -> BlockSparseMatrix:
        """The current weight as a :class:`BlockSparseMatrix`."""
        return BlockSparseMatrix(
            data=self.data[...],
            **{name: getattr(self, name)[...] for name in _INDEX_FIELDS},
            shape=(self.in_features, self.out_features),
            block=self.block,
        )

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """``(..., in_features) → (..., out_features)``.

        ``out_sharding`` exists for signature compatibility with ``nnx.Linear``;
        only ``None`` is supported.
        """
        if out_sharding is not None:
            raise ValueError(
                f"BlockSparseLinear does not support out_sharding, got {out_sharding!r}"
            )
        kernel = self.kernel
        bias = self.bias[...] if self.bias is not None else None
        dtype = self.dtype
        if dtype is None:
            dtype = jnp.result_type(inputs, kernel.data, *(() if bias is None else (bias,)))
        y = block_sparse_matmul(inputs.astype(dtype), kernel.astype(dtype), config=self.config)
        if bias is not None:
            y = y + jnp.reshape(bias.astype(dtype), (1,) * (y.ndim - 1) + (-1,))
        return y
