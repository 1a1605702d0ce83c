"""Post-training pruning of trained language models: magnitude, Wanda, SparseGPT, OWL.

One-shot pruning with a little calibration data and no retraining, layer by layer, on
the core's selection (:func:`sparsejax.prune`, :class:`sparsejax.NM`, masks). Kernels are
Flax ``(in, out)``: a *row* of the papers' ``W (out, in)`` (one output unit) is a column
here, and N:M runs along the input axis.

* Layers (pure, jit-able): :func:`magnitude_mask`, :func:`wanda_scores` /
  :func:`wanda_mask` (Sun et al. 2024), :func:`sparsegpt` (Frantar & Alistarh 2023),
  unstructured and N:M; configs :class:`Magnitude`, :class:`Wanda`, :class:`SparseGPT`.
* Calibration statistics: :class:`InputStatistics`, :func:`input_statistics`,
  :func:`accumulate`, :func:`hessian`, :func:`input_norms`, :func:`reconstruction_error`.
* Models: :func:`prune_sequential` prunes block after block, each from the outputs of the
  pruned blocks before it (:class:`PrunedModel`, :class:`LayerReport`); per-layer
  sparsities uniform, mapped (:func:`sparsity_per_layer`) or OWL's (Yin et al. 2024:
  :func:`owl_layer_sparsities`, :func:`owl_sparsities`, :func:`outlier_ratio`);
  :func:`evaluate_language_model` (perplexity, bits per byte). Needs Flax.

Example:
  >>> import jax
  >>> from flax import nnx
  >>> from sparsejax import posttrain
  >>> from sparsejax.models import DecoderLM
  >>> lm = DecoderLM(vocab_size=256, dim=32, depth=2, num_heads=2, max_len=16,
  ...                rngs=nnx.Rngs(0))
  >>> calib = jax.random.randint(jax.random.key(1), (4, 16), 0, 256)
  >>> pruned = posttrain.prune_sequential(lm, calib, posttrain.Wanda(), 0.5)
  >>> round(pruned.sparsity, 3), pruned.layers[0].path
  (0.5, 'blocks/0/qkv/kernel')
"""

from sparsejax.posttrain._calibration import (
    LayerReport,
    PrunedModel,
    linear_layers,
    prune_sequential,
)
from sparsejax.posttrain._layer_sparsity import outlier_ratio, owl_sparsities, sparsity_per_layer
from sparsejax.posttrain._magnitude import Magnitude, magnitude_mask
from sparsejax.posttrain._method import LayerResult, Method
from sparsejax.posttrain._owl import block_outlier_ratios, owl_layer_sparsities
from sparsejax.posttrain._perplexity import LanguageModelEval, evaluate_language_model
from sparsejax.posttrain._selection import COMPARISONS, kernel_mask
from sparsejax.posttrain._sparsegpt import SparseGPT, block_counts, sparsegpt
from sparsejax.posttrain._statistics import (
    InputStatistics,
    accumulate,
    hessian,
    input_norms,
    input_statistics,
    reconstruction_error,
)
from sparsejax.posttrain._wanda import Wanda, wanda_mask, wanda_scores

__all__ = [
    "COMPARISONS",
    "InputStatistics",
    "LanguageModelEval",
    "LayerReport",
    "LayerResult",
    "Magnitude",
    "Method",
    "PrunedModel",
    "SparseGPT",
    "Wanda",
    "accumulate",
    "block_counts",
    "block_outlier_ratios",
    "evaluate_language_model",
    "hessian",
    "input_norms",
    "input_statistics",
    "kernel_mask",
    "linear_layers",
    "magnitude_mask",
    "outlier_ratio",
    "owl_layer_sparsities",
    "owl_sparsities",
    "prune_sequential",
    "reconstruction_error",
    "sparsegpt",
    "sparsity_per_layer",
    "wanda_mask",
    "wanda_scores",
]
