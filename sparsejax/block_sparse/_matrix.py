"""The compact block format: :class:`BlockSparseMatrix`, and the differentiable matmul.

A block-sparse weight ``W : (K, N)`` with ``bk × bn`` blocks (``nbr = K // bk``
block rows, ``nbc = N // bn`` block columns) is stored as its ``nnzb`` kept
blocks plus int32 indices, **column-major** (blocks sorted by block column, then
block row — a block-CSC layout, i.e. BSR of ``Wᵀ``):

=============  ==================  ==================================================
array          shape               meaning
=============  ==================  ==================================================
``data``       ``(nnzb, bk, bn)``  the kept blocks, sorted by (column, row)
``rows``       ``(nnzb,)``         block row of each stored block
``cols``       ``(nnzb,)``         block column of each stored block
``col_ptr``    ``(nbc + 1,)``      blocks of column ``j`` are ``col_ptr[j]:col_ptr[j+1]``
``row_ptr``    ``(nbr + 1,)``      row-major view: blocks of row ``r`` are the
                                   entries ``row_ptr[r]:row_ptr[r+1]`` of ``t_*``
``t_cols``     ``(nnzb,)``         row-major order: block column of each entry
``t_blocks``   ``(nnzb,)``         row-major order: position of the block in ``data``
``col_order``  ``(nbc,)``          block columns by kept-block count, descending
``row_order``  ``(nbr,)``          block rows by kept-block count, descending
=============  ==================  ==================================================

:func:`block_sparse_matmul` is differentiable in ``x`` and the kept blocks through
``jax.custom_vjp``: the backward pass is :func:`~sparsejax.block_sparse.spmm_t` and
:func:`~sparsejax.block_sparse.sddmm`, never a dense matrix.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.block_sparse._kernels import sddmm, spmm, spmm_t
from sparsejax.block_sparse._launch import KernelConfig

__all__ = ["BlockSparseMatrix", "block_mask_of", "block_sparse_matmul"]


def _as_block(block: Any) -> tuple[int, int]:
    if isinstance(block, (int, np.integer)) and not isinstance(block, bool):
        block = (int(block), int(block))
    try:
        bk, bn = (int(b) for b in block)
        ok = all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in block)
    except (TypeError, ValueError):
        ok = False
    if not ok or bk < 1 or bn < 1:
        raise ValueError(f"block must be a positive int or a pair (rows, cols), got {block!r}")
    return bk, bn


def _concrete(value: Any, name: str) -> np.ndarray:
    """``np.asarray(value)``, with a clear error when ``value`` is a tracer."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        raise TypeError(
            f"{name} must be concrete (not traced inside jit/vmap): the block structure fixes "
            "the shapes of the compact format; convert outside jit (the weights may be traced)"
        ) from None


def block_mask_of(
    mask: Any, shape: tuple[int, int], block: tuple[int, int] | int, name: str = "mask"
) -> np.ndarray:
    """Block-level keep pattern ``(K // bk, N // bn)`` of a mask for a ``(K, N)`` weight.

    Args:
      mask: concrete bool array: either broadcastable to ``shape`` and constant
        on every ``bk × bn`` tile (the output of ``prune(..., structure=Blocks(bk, bn))``,
        or a neuron / scalar mask), or already block level ``(K // bk, N // bn)``.
      shape: ``(K, N)``.
      block: ``(bk, bn)`` or an int for square blocks.
      name: how the mask is named in errors (e.g. its parameter path).

    Returns:
      A numpy bool array ``(K // bk, N // bn)``.

    Raises:
      ValueError: shape not divisible by the block, mask not broadcastable, or a
        tile with both kept and pruned entries (naming the tile).
      TypeError: ``mask`` is traced.
    """
    bk, bn = _as_block(block)
    k, n = (int(s) for s in shape)
    if k % bk or n % bn:
        raise ValueError(f"{name}: weight shape {(k, n)} is not divisible by the block {(bk, bn)}")
    m = _concrete(mask, name)
    if m.dtype != np.bool_:
        raise TypeError(f"{name} must be a bool array, got dtype {m.dtype}")
    nbr, nbc = k // bk, n // bn
    if m.shape == (nbr, nbc) and m.shape != (k, n):
        return m.copy()
    try:
        full = np.broadcast_to(m, (k, n))
    except ValueError:
        raise ValueError(
            f"{name} of shape {m.shape} neither broadcasts to the weight shape {(k, n)} nor has "
            f"the block shape {(nbr, nbc)}"
        ) from None
    tiles = full.reshape(nbr, bk, nbc, bn)
    anyk = tiles.any(axis=(1, 3))
    allk = tiles.all(axis=(1, 3))
    mixed = np.argwhere(anyk != allk)
    if mixed.size:
        r, c = (int(v) for v in mixed[0])
        raise ValueError(
            f"{name} is not constant on {(bk, bn)} blocks: block ({r}, {c}) (rows "
            f"{r * bk}:{(r + 1) * bk}, cols {c * bn}:{(c + 1) * bn}) mixes kept and pruned "
            f"entries ({mixed.shape[0]} such blocks); prune with structure=Blocks{(bk, bn)}"
        )
    return anyk


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "data", "rows", "cols", "col_ptr", "row_ptr", "t_cols", "t_blocks", "col_order",
        "row_order",
    ],
    meta_fields=["shape", "block"],
)
@dataclasses.dataclass(frozen=True)
class BlockSparseMatrix:
    """A ``(K, N)`` matrix stored as its kept ``bk × bn`` blocks (a pytree).

    Blocks are stored column-major (sorted by block column, then block row),
    with a row-major index view for the transposed product (see
    :mod:`~sparsejax.block_sparse._matrix` for the layout). ``nnzb`` is the
    number of kept blocks, ``nbr = K // bk``, ``nbc = N // bn``.

    Attributes:
      data: ``(nnzb, bk, bn)`` kept blocks (the trainable values).
      rows, cols: ``(nnzb,)`` int32 block row / column of each stored block.
      col_ptr: ``(nbc + 1,)`` int32; column ``j`` owns ``data[col_ptr[j]:col_ptr[j+1]]``.
      row_ptr: ``(nbr + 1,)`` int32 pointers of the row-major view.
      t_cols, t_blocks: ``(nnzb,)`` int32 block column and ``data`` position of
        the blocks in row-major order.
      col_order: ``(nbc,)`` int32 block columns sorted by their number of kept
        blocks, descending (ties: lower index first) — the kernel launches the
        heaviest columns first.
      row_order: ``(nbr,)`` int32, the same for block rows (input gradient).
      shape: static ``(K, N)``.
      block: static ``(bk, bn)``.
    """

    data: jax.Array
    rows: jax.Array
    cols: jax.Array
    col_ptr: jax.Array
    row_ptr: jax.Array
    t_cols: jax.Array
    t_blocks: jax.Array
    col_order: jax.Array
    row_order: jax.Array
    shape: tuple[int, int]
    block: tuple[int, int]

    @classmethod
    def from_block_mask(
        cls, weight: jax.Array, block_mask: Any, block: tuple[int, int] | int
    ) -> BlockSparseMatrix:
        """Gather the kept blocks of ``weight : (K, N)`` given a concrete ``(K//bk, N//bn)`` mask.

        ``weight`` may be traced (only the mask must be concrete).
        """
        bk, bn = _as_block(block)
        if jnp.ndim(weight) != 2:
            raise ValueError(f"weight must be 2-D (K, N), got shape {jnp.shape(weight)}")
        k, n = (int(s) for s in jnp.shape(weight))
        bmask = block_mask_of(block_mask, (k, n), (bk, bn), "mask")
        nbr, nbc = bmask.shape
        cols, rows = np.nonzero(bmask.T)  # column-major: sorted by column, then row
        col_count, row_count = bmask.sum(axis=0), bmask.sum(axis=1)
        col_ptr = np.concatenate([[0], np.cumsum(col_count)])
        row_ptr = np.concatenate([[0], np.cumsum(row_count)])
        order = np.lexsort((cols, rows))  # row-major view
        tiles = jnp.asarray(weight).reshape(nbr, bk, nbc, bn).transpose(0, 2, 1, 3)
        i32 = functools.partial(jnp.asarray, dtype=jnp.int32)
        return cls(
            data=tiles[rows, cols],
            rows=i32(rows),
            cols=i32(cols),
            col_ptr=i32(col_ptr),
            row_ptr=i32(row_ptr),
            t_cols=i32(cols[order]),
            t_blocks=i32(order),
            col_order=i32(np.argsort(-col_count, kind="stable")),
            row_order=i32(np.argsort(-row_count, kind="stable")),
            shape=(k, n),
            block=(bk, bn),
        )

    @classmethod
    def from_dense(
        cls, weight: jax.Array, mask: Any = None, *, block: tuple[int, int] | int
    ) -> BlockSparseMatrix:
        """Compact a (masked) dense ``weight : (K, N)``.

        Args:
          weight: ``(K, N)`` dense weight (may be traced when ``mask`` is given).
          mask: concrete bool mask, full shape (constant on blocks, e.g. from
            ``prune(..., structure=Blocks(bk, bn))``), broadcastable to it, or
            block level ``(K // bk, N // bn)``. ``None``: keep every block with a
            nonzero entry (``weight`` must then be concrete).
          block: ``(bk, bn)`` or an int for square blocks.

        Returns:
          The compact matrix; ``to_dense()`` equals ``where(mask, weight, 0)``.
        """
        bk, bn = _as_block(block)
        if mask is None:
            w = _concrete(weight, "weight (with mask=None)")
            if w.ndim != 2:
                raise ValueError(f"weight must be 2-D (K, N), got shape {w.shape}")
            k, n = w.shape
            if k % bk or n % bn:
                raise ValueError(f"weight shape {(k, n)} is not divisible by the block {(bk, bn)}")
            mask = (w.reshape(k // bk, bk, n // bn, bn) != 0).any(axis=(1, 3))
        return cls.from_block_mask(weight, mask, (bk, bn))

    @property
    def nnz_blocks(self) -> int:
        """Number of stored blocks ``nnzb``."""
        return int(self.data.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        """``(nbr, nbc)``: blocks per column / row of the matrix."""
        return self.shape[0] // self.block[0], self.shape[1] // self.block[1]

    @property
    def density(self) -> float:
        """Fraction of kept blocks, ``nnzb / (nbr·nbc)``."""
        nbr, nbc = self.grid
        return self.nnz_blocks / (nbr * nbc)

    @property
    def dtype(self) -> Any:
        """dtype of the stored blocks."""
        return self.data.dtype

    def block_mask(self) -> jax.Array:
        """``(nbr, nbc)`` bool: which blocks are stored."""
        return jnp.zeros(self.grid, bool).at[self.rows, self.cols].set(True)

    def mask(self) -> jax.Array:
        """Full-shape ``(K, N)`` bool mask (constant on blocks)."""
        bk, bn = self.block
        return jnp.repeat(jnp.repeat(self.block_mask(), bk, axis=0), bn, axis=1)

    def to_dense(self) -> jax.Array:
        """``(K, N)`` dense matrix with zeros in the pruned blocks."""
        (nbr, nbc), (bk, bn) = self.grid, self.block
        tiles = jnp.zeros((nbr, nbc, bk, bn), self.data.dtype).at[self.rows, self.cols].set(
            self.data
        )
        return tiles.transpose(0, 2, 1, 3).reshape(self.shape)

    def with_data(self, data: jax.Array) -> BlockSparseMatrix:
        """Same structure, new ``(nnzb, bk, bn)`` block values."""
        if jnp.shape(data) != self.data.shape:
            raise ValueError(f"data must have shape {self.data.shape}, got {jnp.shape(data)}")
        return dataclasses.replace(self, data=data)

    def astype(self, dtype: Any) -> BlockSparseMatrix:
        """Same structure, blocks cast to ``dtype``."""
        return self.with_data(self.data.astype(dtype))

    def __rmatmul__(self, x: jax.Array) -> jax.Array:
        """``x @ W`` with the default backend (see :func:`block_sparse_matmul`)."""
        return block_sparse_matmul(x, self)


class _Index(NamedTuple):
    """The int32 index arrays of a :class:`BlockSparseMatrix` (no cotangent)."""

    rows: jax.Array
    cols: jax.Array
    col_ptr: jax.Array
    row_ptr: jax.Array
    t_cols: jax.Array
    t_blocks: jax.Array
    col_order: jax.Array
    row_order: jax.Array


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _matmul(cfg: KernelConfig, block, x, data, idx):
    del block
    return spmm(x, data, idx.rows, idx.cols, idx.col_ptr, cfg, idx.col_order)


def _matmul_fwd(cfg, block, x, data, idx):
    y = spmm(x, data, idx.rows, idx.cols, idx.col_ptr, cfg, idx.col_order)
    return y, (x, data, idx)


def _matmul_bwd(cfg, block, res, dy):
    x, data, idx = res
    dy = dy.astype(x.dtype)
    dx = spmm_t(
        dy, data, idx.rows, idx.cols, idx.row_ptr, idx.t_cols, idx.t_blocks, cfg, idx.row_order
    )
    ddata = sddmm(x, dy, idx.rows, idx.cols, block, data.dtype, cfg)
    return dx, ddata, None


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def block_sparse_matmul(
    x: jax.Array,
    w: BlockSparseMatrix,
    *,
    backend: str | None = None,
    interpret: bool | None = None,
    config: KernelConfig | None = None,
) -> jax.Array:
    """``x @ W`` for a block-sparse ``W``; differentiable in ``x`` and ``w.data``.

    Pure and jit-compatible. Inputs are promoted to a common dtype
    (``jnp.result_type(x, w.data)``); products accumulate in float32 and the
    result has the promoted dtype. bf16 and float32 are the tested dtypes.

    Args:
      x: ``(..., K)``.
      w: block-sparse ``(K, N)`` matrix.
      backend: ``"pallas"`` (Triton kernel; default on GPU) or ``"reference"``
        (gather + einsum; default elsewhere). Overrides ``config.backend``.
      interpret: run the Pallas kernel in interpret mode (CPU debugging/tests).
      config: full :class:`~sparsejax.block_sparse.KernelConfig`
        (per-kernel :class:`~sparsejax.block_sparse.Tiling`, launch
        order, precision).

    Returns:
      ``(..., N)``.

    Raises:
      ValueError: ``x.shape[-1] != K``, bad backend, a block size the Pallas
        backend cannot tile (powers of two ≥ 16 only), or a tiling that does
        not fit in shared memory (raised at trace time, before compilation).
      TypeError: ``w`` is not a :class:`BlockSparseMatrix`.
    """
    if not isinstance(w, BlockSparseMatrix):
        raise TypeError(f"w must be a BlockSparseMatrix, got {type(w).__name__}")
    cfg = config if config is not None else KernelConfig()
    if not isinstance(cfg, KernelConfig):
        raise TypeError(f"config must be a KernelConfig, got {cfg!r}")
    if backend is not None or interpret is not None:
        cfg = dataclasses.replace(
            cfg,
            backend=cfg.backend if backend is None else backend,
            interpret=cfg.interpret if interpret is None else interpret,
        )
    k, n = w.shape
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"x must have shape (..., {k}) to multiply a {w.shape} matrix, got {x.shape}")
    dtype = jnp.result_type(x, w.data)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k).astype(dtype)
    data = w.data.astype(dtype)
    idx = _Index(*(getattr(w, name) for name in _Index._fields))
    y = _matmul(cfg, w.block, x2, data, idx)
    return y.reshape((*lead, n))
