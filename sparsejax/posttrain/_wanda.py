"""Wanda: pruning by weights and activations (Sun, Liu, Bair & Kolter, ICLR 2024).

The score of weight ``W_ij`` (output ``i``, input ``j``) is ``|W_ij|·‖X_j‖₂``, the norm of
input feature ``j`` over every calibration token; scores compete within each output unit
(the paper's default "per output" comparison), and N:M keeps the ``n`` highest of every
``m`` consecutive inputs of each output unit. No weight update. Paper defaults: 128
calibration sequences of 2,048 tokens (C4), every linear layer of every block pruned
to the same sparsity, blocks in order with the inputs of the already-pruned ones.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp

from sparsejax.posttrain._method import LayerResult, Method
from sparsejax.posttrain._selection import (
    COMPARISONS,
    check_kernel,
    check_sparsity,
    kernel_mask,
)
from sparsejax.posttrain._statistics import InputStatistics
from sparsejax.structures import Structure, Unstructured

__all__ = ["Wanda", "wanda_mask", "wanda_scores"]


def wanda_scores(kernel: jax.Array, norms: jax.Array, path: str = "kernel") -> jax.Array:
    """Wanda's scores ``|W_ij|·‖X_j‖₂`` of an ``(in, out)`` kernel.

    Args:
      kernel: ``(in, out)`` float kernel; entry ``[j, i]`` connects input ``j`` to output ``i``.
      norms: ``float[in]``, ``‖X_j‖₂`` over the calibration tokens
        (:func:`sparsejax.posttrain.input_norms`).
      path: the kernel's name in errors.

    Returns:
      ``float32[in, out]``. Pure.

    Raises:
      ValueError: ``norms`` not of shape ``(in,)`` (naming ``path``).

    Example:
      >>> wanda_scores(jnp.array([[1.0, -2.0], [3.0, 1.0]]), jnp.array([2.0, 0.5])).tolist()
      [[2.0, 4.0], [1.5, 0.5]]
    """
    d_in, _ = check_kernel(kernel, path)
    if tuple(jnp.shape(norms)) != (d_in,):
        raise ValueError(f"{path!r}: input norms of shape {tuple(jnp.shape(norms))} for a kernel "
                         f"with {d_in} inputs")
    return jnp.abs(jnp.asarray(kernel, jnp.float32)) * jnp.asarray(norms, jnp.float32)[:, None]


def wanda_mask(
    kernel: jax.Array,
    norms: jax.Array,
    sparsity: float | None = None,
    *,
    structure: Structure = Unstructured(),  # noqa: B008 (frozen, immutable)
    comparison: str = "row",
    path: str = "kernel",
) -> jax.Array:
    """Keep mask of the highest Wanda scores of one ``(in, out)`` kernel.

    Args:
      kernel: ``(in, out)`` float kernel.
      norms: ``float[in]`` input-feature norms ``‖X_j‖₂``.
      sparsity: fraction to prune (``None``: the full ``NM(n, m)`` pattern).
      structure: ``Unstructured()`` or ``NM(n, m)`` along the input axis.
      comparison: ``"row"`` (default: ``round(s·in)`` per output unit, as the paper) or
        ``"layer"``.
      path: the kernel's name in errors.

    Returns:
      ``bool[in, out]`` (``True`` = kept). Pure; works under ``jit``.

    References:
      Sun, Liu, Bair & Kolter, "A Simple and Effective Pruning Approach for Large
      Language Models", ICLR 2024.

    Example:
      >>> w = jnp.array([[1.0, -2.0], [3.0, 1.0]])
      >>> wanda_mask(w, jnp.array([2.0, 0.5]), 0.5).tolist()
      [[True, True], [False, False]]
    """
    return kernel_mask(wanda_scores(kernel, norms, path), sparsity, comparison=comparison,
                       structure=structure, path=path)


@dataclasses.dataclass(frozen=True)
class Wanda(Method):
    """Wanda (Sun et al. 2024): ``|W|·‖X‖₂`` per output unit; no weight update.

    Attributes:
      comparison: ``"row"`` (default, the paper's per-output comparison) or ``"layer"``.
    """

    comparison: str = "row"
    statistics: ClassVar[str] = "norms"

    def __post_init__(self):
        if self.comparison not in COMPARISONS:
            raise ValueError(f"Wanda.comparison must be one of {COMPARISONS}, got "
                             f"{self.comparison!r}")

    def prune_layer(self, kernel, stats: InputStatistics | None, sparsity, structure,
                    path="kernel") -> LayerResult:
        if stats is None:
            raise ValueError(f"{path!r}: Wanda needs the statistics of the layer's inputs")
        d_in, _ = check_kernel(kernel, path)
        if tuple(stats.sum_squares.shape) != (d_in,):
            raise ValueError(f"{path!r}: input statistics of {stats.sum_squares.shape[0]} "
                             f"features for a kernel with {d_in} inputs")
        s = check_sparsity(sparsity, structure, path)
        return _wanda_layer(kernel, stats.sum_squares, s, structure, self.comparison)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _wanda_layer(kernel, sum_squares, sparsity, structure, comparison) -> LayerResult:
    # checked eagerly by the caller, under the layer's own name
    mask = wanda_mask(kernel, jnp.sqrt(sum_squares), sparsity, structure=structure,
                      comparison=comparison)
    return LayerResult(jnp.where(mask, kernel, jnp.zeros((), kernel.dtype)), mask)
