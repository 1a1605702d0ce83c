"""What a post-training pruning method is: a frozen config that prunes one linear layer.

A method (:class:`Method`: :class:`~sparsejax.posttrain.Magnitude`,
:class:`~sparsejax.posttrain.Wanda`, :class:`~sparsejax.posttrain.SparseGPT`) says which
calibration statistics it reads (:attr:`Method.statistics`: none, per-feature norms, or
the Gram matrix) and maps ``(kernel, statistics, sparsity, structure)`` to a
:class:`LayerResult`: the new kernel (pruned entries exactly ``0``; SparseGPT also
updates the kept ones), its keep mask and the method's own loss estimate.
:func:`sparsejax.posttrain.prune_sequential` calls it for every linear layer of a model.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar, NamedTuple

import jax

from sparsejax.posttrain._statistics import InputStatistics
from sparsejax.structures import Structure

__all__ = ["STATISTICS", "LayerResult", "Method"]

#: What a method reads from the calibration inputs of a layer.
STATISTICS = ("none", "norms", "gram")


class LayerResult(NamedTuple):
    """One pruned linear layer.

    Attributes:
      kernel: the new ``(in, out)`` kernel, in the input kernel's dtype; pruned entries
        are exactly ``0``.
      mask: ``bool[in, out]``, ``True`` = kept.
      loss: the method's own estimate of the error it caused (SparseGPT: the OBS loss
        ``Σ (w − q)²/[H⁻¹]²_cc / 2`` of Frantar & Alistarh 2023, Alg. 1), or ``None``.
    """

    kernel: jax.Array
    mask: jax.Array
    loss: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class Method(abc.ABC):
    """Base of the post-training pruning methods (frozen, hashable configs)."""

    #: Statistics of the layer inputs the method needs: ``"none"``, ``"norms"`` or ``"gram"``.
    statistics: ClassVar[str] = "none"

    @property
    def name(self) -> str:
        """Lower-case name for tables, e.g. ``"sparsegpt"``."""
        return type(self).__name__.lower()

    def validate(self, shape: tuple[int, int], structure: Structure, path: str = "kernel"
                 ) -> None:
        """Raise a ``ValueError`` naming ``path`` if the method cannot prune a kernel of
        ``shape`` with ``structure`` (called for every layer before any work)."""
        del shape, structure, path

    @abc.abstractmethod
    def prune_layer(
        self,
        kernel: jax.Array,
        stats: InputStatistics | None,
        sparsity: float | None,
        structure: Structure,
        path: str = "kernel",
    ) -> LayerResult:
        """Prune one ``(in, out)`` kernel given its input statistics.

        Args:
          kernel: ``(in, out)`` float kernel.
          stats: the statistics of its calibration inputs (``None`` if the method
            needs none).
          sparsity: fraction to prune, or ``None`` for the full N:M pattern.
          structure: ``Unstructured()`` or ``NM(n, m)``.
          path: the kernel's name in errors.
        """
