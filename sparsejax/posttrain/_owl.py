"""OWL's per-block sparsities for a model, from one dense calibration pass.

:func:`block_outlier_ratios` streams the calibration batch through the *unpruned* model
block by block (as the OWL code does) and measures each block's outlier ratio over the
Wanda scores of all its linear layers; :func:`owl_layer_sparsities` turns them into a
``{path: sparsity}`` map for :func:`sparsejax.posttrain.prune_sequential`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flax import nnx

from sparsejax.posttrain._calibration import (
    embed_chunks,
    forward_chunks,
    linear_layers,
    stage_statistics,
)
from sparsejax.posttrain._layer_sparsity import outlier_ratio, owl_sparsities
from sparsejax.posttrain._statistics import input_norms
from sparsejax.posttrain._wanda import wanda_scores

__all__ = ["block_outlier_ratios", "owl_layer_sparsities"]


def block_outlier_ratios(model: nnx.Module, tokens: Any, m: float = 5.0, *,
                         batch_size: int = 8) -> np.ndarray:
    """Each block's fraction of Wanda scores above ``m`` × their mean (dense model).

    Args:
      model: a model of the :func:`~sparsejax.posttrain.prune_sequential` protocol.
      tokens: calibration tokens ``(num_sequences, seq_len)``.
      m: outlier threshold ``M`` (paper: 5).
      batch_size: sequences per forward pass.

    Returns:
      ``float64[num_blocks]``.
    """
    layers = linear_layers(model)
    xs = embed_chunks(model, tokens, batch_size)
    ratios = []
    for i, block in enumerate(model.blocks):
        names = tuple(n for j, n, _ in layers if j == i)
        stats = stage_statistics(block, xs, names, gram=False)
        scores = [wanda_scores(getattr(block, n).kernel[...], input_norms(stats[n]),
                               f"blocks/{i}/{n}/kernel") for n in names]
        ratios.append(float(outlier_ratio(scores, m)))
        if i + 1 < len(model.blocks):
            xs = forward_chunks(block, xs)
    return np.asarray(ratios, np.float64)


def owl_layer_sparsities(
    model: nnx.Module,
    tokens: Any,
    sparsity: float,
    *,
    m: float = 5.0,
    lam: float = 0.08,
    batch_size: int = 8,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """OWL's sparsity for every pruned layer: ``{kernel path: sparsity of its block}``.

    Args:
      model: a model of the :func:`~sparsejax.posttrain.prune_sequential` protocol.
      tokens: calibration tokens ``(num_sequences, seq_len)``.
      sparsity: the model's target sparsity (over the blocks' linear layers).
      m: outlier threshold ``M`` (paper: 5).
      lam: half-width λ of the density range (paper: 0.08).
      batch_size: sequences per forward pass.
      log: called with one line listing the block sparsities.

    Returns:
      A map for ``prune_sequential(..., layer_sparsity=...)``; every layer of block
      ``l`` gets block ``l``'s sparsity, and the parameter-weighted mean is ``sparsity``.

    Raises:
      ValueError: see :func:`owl_sparsities`.

    References:
      Yin et al., "Outlier Weighed Layerwise Sparsity (OWL)", ICML 2024.
    """
    ratios = block_outlier_ratios(model, tokens, m, batch_size=batch_size)
    layers = linear_layers(model)
    sizes = [sum(int(np.prod(getattr(model.blocks[i], n).kernel.shape))
                 for i, n, _ in layers if i == b) for b in range(len(model.blocks))]
    per_block = owl_sparsities(ratios, sparsity, lam, sizes)
    if log is not None:
        log("OWL block sparsities: " + ", ".join(f"{s:.3f}" for s in per_block)
            + " (outlier ratios " + ", ".join(f"{r:.4f}" for r in ratios) + ")")
    return {path: float(per_block[i]) for i, _, path in layers}
