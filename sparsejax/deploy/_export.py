"""``export``: masked parameters to sparse storage, BCOO or :class:`BlockSparseMatrix`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from sparsejax.block_sparse import BlockSparseMatrix, block_mask_of
from sparsejax.masks import validate_mask
from sparsejax.tree import Prunable, PyTree, path_str, prunable_tree

__all__ = ["FORMATS", "export", "is_sparse"]

#: Storage formats of :func:`export`.
FORMATS: tuple[str, ...] = ("bcoo", "block")


def is_sparse(x: Any) -> bool:
    """Whether ``x`` is a leaf :func:`export` made sparse (a BCOO or a BlockSparseMatrix)."""
    return isinstance(x, (sparse.BCOO, BlockSparseMatrix))


def _bcoo(w: np.ndarray, keep: np.ndarray) -> sparse.BCOO:
    """The kept entries (exactly the mask's, zeros included), row-major sorted indices."""
    idx = np.argwhere(keep).astype(np.int32)
    return sparse.BCOO(
        (jnp.asarray(w[keep]), jnp.asarray(idx)),
        shape=w.shape,
        indices_sorted=True,
        unique_indices=True,
    )


def export(
    params: PyTree,
    mask: PyTree | None = None,
    *,
    format: str = "bcoo",
    block: tuple[int, int] | int | None = None,
    prunable: Prunable = None,
) -> PyTree:
    """Masked parameters in a sparse storage format, for inference with :func:`sparse_apply`.

    Every prunable leaf becomes a sparse matrix holding exactly the entries the mask keeps
    (a kept weight that happens to be 0.0 is still stored): a
    ``jax.experimental.sparse.BCOO`` (``format="bcoo"``, any rank: Dense and Conv kernels)
    or a :class:`~sparsejax.block_sparse.BlockSparseMatrix` of ``block`` tiles
    (``format="block"``, 2-D weights ``(in, out)`` pruned with
    ``sparsejax.Blocks(bk, bn)``). Other leaves (biases, norms) stay dense. Runs eagerly
    (the sparsity pattern fixes the shapes).

    Args:
      params: the parameters (e.g. :func:`~sparsejax.deploy.strip` of a training state).
      mask: a mask mirroring ``params``; default: keep the nonzero entries.
      format: one of :data:`FORMATS`.
      block: ``(bk, bn)`` (or an int) for ``format="block"``.
      prunable: which leaves to store sparse (default: float leaves with ``ndim >= 2``).

    Returns:
      A pytree like ``params`` whose prunable leaves are sparse (flatten it with
      ``is_leaf=sparsejax.deploy.is_sparse`` to see them whole).

    Raises:
      ValueError: an unknown format, ``format="block"`` without ``block`` or on a leaf that
        is not 2-D, divisible by the block and constant on its tiles (naming the path), a
        mask of another tree.

    Example:
      >>> import jax.numpy as jnp, sparsejax as sj
      >>> params = {"w": jnp.array([[1.0, -3.0], [0.5, 2.0]]), "b": jnp.ones(2)}
      >>> sp = export(params, sj.prune(sj.scores.magnitude(params), 0.5))
      >>> sp["w"].nse, sp["w"].todense().tolist()
      (2, [[0.0, -3.0], [0.0, 2.0]])
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "block" and block is None:
        raise ValueError("format='block' needs block=(bk, bn), the tile of the Blocks mask")
    nonzero = mask is None
    if not nonzero:
        validate_mask(params, mask)
    which = prunable_tree(params, prunable)

    def one(kp, p, m, w):
        if not w:
            return p
        name = path_str(kp)
        arr = np.asarray(jax.device_get(p))
        keep = arr != 0 if nonzero else np.broadcast_to(np.asarray(m, bool), arr.shape)
        if format == "bcoo":
            return _bcoo(arr, keep)
        if arr.ndim != 2:
            raise ValueError(
                f"format='block' stores 2-D weights (in, out); the parameter at {name!r} has "
                f"shape {arr.shape}: exclude it with prunable= or use format='bcoo'"
            )
        level = block_mask_of(keep, arr.shape, block, name=f"mask at {name!r}")
        return BlockSparseMatrix.from_block_mask(jnp.asarray(arr), level, block)

    return jax.tree_util.tree_map_with_path(one, params, params if nonzero else mask, which)
