"""What a linear layer's calibration inputs tell the pruning methods: norms, Gram matrix.

A linear layer ``y = x @ kernel + bias`` (Flax layout, ``kernel (in, out)``) reads inputs
``x (..., in)``. :class:`InputStatistics` accumulates, over every calibration token, the
per-feature sums of squares ``Σ x_j²`` (Wanda's ``‖X_j‖₂²``) and optionally the Gram matrix
``Σ x xᵀ`` (SparseGPT's Hessian ``H = 2XXᵀ/n``). Accumulation is streaming
(:func:`accumulate`), so no layer input needs to stay in memory. Products run at
``Precision.HIGHEST`` (no TF32 on GPUs).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "InputStatistics",
    "accumulate",
    "hessian",
    "input_norms",
    "input_statistics",
    "reconstruction_error",
]

_HIGHEST = lax.Precision.HIGHEST


class InputStatistics(NamedTuple):
    """Running statistics of one linear layer's inputs (a pytree).

    Attributes:
      count: ``float32[]``, the number of input vectors (tokens) seen.
      sum_squares: ``float32[in]``, ``Σ_t x_tj²`` per input feature.
      gram: ``float32[in, in]``, ``Σ_t x_t x_tᵀ``, or ``None`` when not collected.
    """

    count: jax.Array
    sum_squares: jax.Array
    gram: jax.Array | None


def _rows(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"layer inputs must be a float array (..., in), got {x.dtype}{x.shape}")
    return x.reshape(-1, x.shape[-1]).astype(jnp.float32)


def input_statistics(x: jax.Array, *, gram: bool = True) -> InputStatistics:
    """Statistics of the inputs ``x (..., in)`` (every leading axis counts as tokens).

    Args:
      x: float inputs of one linear layer, e.g. ``(batch, seq, in)``.
      gram: also collect the ``(in, in)`` Gram matrix (needed by SparseGPT and by
        :func:`reconstruction_error`).

    Returns:
      :class:`InputStatistics` (float32). Pure; works under ``jit``.

    Example:
      >>> s = input_statistics(jnp.array([[1.0, 2.0], [3.0, 0.0]]))
      >>> s.count.item(), s.sum_squares.tolist(), s.gram.tolist()
      (2.0, [10.0, 4.0], [[10.0, 2.0], [2.0, 4.0]])
    """
    rows = _rows(x)
    return InputStatistics(
        count=jnp.asarray(rows.shape[0], jnp.float32),
        sum_squares=jnp.sum(rows * rows, axis=0),
        gram=jnp.matmul(rows.T, rows, precision=_HIGHEST) if gram else None,
    )


def accumulate(stats: InputStatistics | None, x: jax.Array) -> InputStatistics:
    """``stats`` plus the statistics of more inputs ``x (..., in)`` (``None``: start).

    The Gram matrix is collected when ``stats`` has one (or, from ``None``, always).

    Raises:
      ValueError: ``x`` has another feature count than ``stats``.
    """
    if stats is None:
        return input_statistics(x)
    rows = _rows(x)
    if rows.shape[1] != stats.sum_squares.shape[0]:
        raise ValueError(f"inputs with {rows.shape[1]} features added to statistics of "
                         f"{stats.sum_squares.shape[0]}")
    new = input_statistics(rows, gram=stats.gram is not None)
    return InputStatistics(
        count=stats.count + new.count,
        sum_squares=stats.sum_squares + new.sum_squares,
        gram=None if stats.gram is None else stats.gram + new.gram,
    )


def hessian(stats: InputStatistics) -> jax.Array:
    """SparseGPT's layer Hessian ``H = 2·XXᵀ/n`` (``n`` tokens), ``float32[in, in]``.

    The Hessian of the layer-wise reconstruction loss ``‖WX − ŴX‖²/n`` in each output
    row (Frantar & Alistarh 2023, Eq. 1; dampening is applied by the pruner).

    Raises:
      ValueError: statistics collected without the Gram matrix.
    """
    if stats.gram is None:
        raise ValueError("these InputStatistics hold no Gram matrix: collect them with gram=True")
    return 2.0 * stats.gram / jnp.maximum(stats.count, 1.0)


def input_norms(stats: InputStatistics) -> jax.Array:
    """Wanda's ``‖X_j‖₂``: the L2 norm of input feature ``j`` over all tokens, ``float32[in]``."""
    return jnp.sqrt(stats.sum_squares)


def reconstruction_error(
    kernel: jax.Array, pruned_kernel: jax.Array, stats: InputStatistics, *, relative: bool = True
) -> jax.Array:
    """Output error of replacing ``kernel`` by ``pruned_kernel`` on the calibration inputs.

    ``‖X W − X Ŵ‖²_F = Σ_out ΔWᵀ G ΔW`` with ``G`` the Gram matrix (``X (tokens, in)``,
    kernels ``(in, out)``); with ``relative``, divided by ``‖X W‖²_F``. Biases cancel.

    Returns:
      A float32 scalar (0 where ``relative`` and ``‖XW‖ = 0``).

    Raises:
      ValueError: kernels of different shapes, or statistics without the Gram matrix.
    """
    if jnp.shape(kernel) != jnp.shape(pruned_kernel):
        raise ValueError(f"kernel shapes differ: {jnp.shape(kernel)} vs {jnp.shape(pruned_kernel)}")
    if stats.gram is None:
        raise ValueError("reconstruction_error needs statistics with the Gram matrix (gram=True)")
    w = jnp.asarray(kernel, jnp.float32)
    delta = w - jnp.asarray(pruned_kernel, jnp.float32)
    err = jnp.sum(delta * jnp.matmul(stats.gram, delta, precision=_HIGHEST))
    if not relative:
        return err
    ref = jnp.sum(w * jnp.matmul(stats.gram, w, precision=_HIGHEST))
    return jnp.where(ref > 0, err / jnp.where(ref > 0, ref, 1.0), 0.0)
