"""Size and compression: parameter counts and ShrinkBench's compression ratio."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from sparsejax.masks import summary
from sparsejax.tree import Prunable, PyTree, prunable_tree


def _all_leaves(path: str, leaf: Any) -> bool:
    del path, leaf
    return True


def _selected(params: PyTree, prunable: Prunable) -> list[bool]:
    return jax.tree.leaves(prunable_tree(params, prunable))


def num_params(params: PyTree, prunable: Prunable = _all_leaves) -> int:
    """Number of parameter entries (default: every leaf; pass ``prunable`` to restrict).

    Pass only parameters (e.g. ``nnx.state(model, nnx.Param)``), not batch statistics or
    RNG counters. Pure; runs on shapes only, so abstract leaves work too.
    """
    leaves = jax.tree.leaves(params)
    return sum(
        int(np.prod(np.shape(p), dtype=np.int64))
        for p, keep in zip(leaves, _selected(params, prunable), strict=True)
        if keep
    )


def num_nonzero(params: PyTree, mask: PyTree | None = None, prunable: Prunable = _all_leaves) -> int:
    """Number of nonzero entries of ``apply_mask(params, mask)`` (or of ``params``).

    Counts *values*, like ShrinkBench's ``nonzero``: a kept weight that happens to be exactly
    ``0.0`` is not counted. Eager: per-leaf counts of :func:`sparsejax.masks.summary` summed
    into a Python ``int``.
    """
    rows = summary(params, mask)
    return sum(r.nonzero for r, keep in zip(rows, _selected(params, prunable), strict=True) if keep)


def compression_ratio(
    params: PyTree, mask: PyTree | None = None, prunable: Prunable = _all_leaves
) -> float:
    """ShrinkBench's compression ratio: ``num_params / num_nonzero`` (``inf`` if all zero).

    Args:
      params: parameter pytree.
      mask: optional mask pytree (applied before counting).
      prunable: leaves to count; the default (all leaves) is ShrinkBench's whole-model ratio.

    Returns:
      ``>= 1.0`` for any mask; e.g. ``10.0`` when 90 % of all parameters are zero.
    """
    total = num_params(params, prunable)
    if total == 0:
        raise ValueError("compression_ratio: the selected parameters are empty")
    nonzero = num_nonzero(params, mask, prunable)
    return math.inf if nonzero == 0 else total / nonzero
