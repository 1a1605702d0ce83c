"""Magnitude pruning of a trained layer: the baseline of SparseGPT and Wanda.

``|W_ij|`` compared across the whole layer (``"layer"``, the magnitude baseline of both
papers) or within each output unit (``"row"``); N:M keeps the ``n`` largest of every
``m`` consecutive inputs of each output unit. No calibration data.
"""

from __future__ import annotations

import dataclasses
import functools

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

__all__ = ["Magnitude", "magnitude_mask"]


def magnitude_mask(
    kernel: jax.Array,
    sparsity: float | None = None,
    *,
    structure: Structure = Unstructured(),  # noqa: B008 (frozen, immutable)
    comparison: str = "layer",
    path: str = "kernel",
) -> jax.Array:
    """Keep mask of the largest ``|w|`` of one ``(in, out)`` kernel.

    Args:
      kernel: ``(in, out)`` float kernel (Flax layout; an output unit is a column).
      sparsity: fraction to prune (``None``: the full ``NM(n, m)`` pattern).
      structure: ``Unstructured()`` or ``NM(n, m)`` along the input axis.
      comparison: ``"layer"`` (``round(s·in·out)`` smallest of the kernel) or ``"row"``
        (``round(s·in)`` smallest of every output unit).
      path: the kernel's name in errors.

    Returns:
      ``bool[in, out]`` (``True`` = kept). Pure; works under ``jit``.

    Raises:
      ValueError: see :func:`sparsejax.posttrain.kernel_mask`.

    References:
      Han et al. 2015, "Learning both Weights and Connections for Efficient Neural
      Networks"; the magnitude baselines of Frantar & Alistarh 2023 and Sun et al. 2024.

    Example:
      >>> w = jnp.array([[1.0, -4.0], [3.0, 2.0]])
      >>> magnitude_mask(w, 0.5, comparison="row").tolist()
      [[False, True], [True, False]]
    """
    return kernel_mask(jnp.abs(jnp.asarray(kernel, jnp.float32)), sparsity,
                       comparison=comparison, structure=structure, path=path)


@dataclasses.dataclass(frozen=True)
class Magnitude(Method):
    """Magnitude pruning (no calibration data).

    Attributes:
      comparison: ``"layer"`` (default, the papers' baseline) or ``"row"``.
    """

    comparison: str = "layer"

    def __post_init__(self):
        if self.comparison not in COMPARISONS:
            raise ValueError(f"Magnitude.comparison must be one of {COMPARISONS}, got "
                             f"{self.comparison!r}")

    def prune_layer(self, kernel, stats: InputStatistics | None, sparsity, structure,
                    path="kernel") -> LayerResult:
        del stats
        check_kernel(kernel, path)
        s = check_sparsity(sparsity, structure, path)
        return _magnitude_layer(kernel, s, structure, self.comparison)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _magnitude_layer(kernel, sparsity, structure, comparison) -> LayerResult:
    # checked eagerly by the caller, under the layer's own name
    mask = magnitude_mask(kernel, sparsity, structure=structure, comparison=comparison)
    return LayerResult(jnp.where(mask, kernel, jnp.zeros((), kernel.dtype)), mask)
