"""Metrics of pruned networks: size, compression, FLOPs, theoretical speedup, classification.

Size and FLOP metrics follow ShrinkBench (Blalock et al. 2020), the reference for reporting
pruning results:

* **compression ratio** = (number of parameters) / (number of nonzero parameters), over
  *all* parameters, biases and normalisation scales included (``prunable`` narrows it);
* **FLOPs** = multiply-accumulates (MACs) of the dense and convolution layers — one
  multiply-add counts as one FLOP, as in ShrinkBench's ``dense_flops`` / ``conv2d_flops``;
  multiply by 2 for the "two FLOPs per MAC" convention. Biases, activations, normalisation
  and pooling are not counted;
* **nonzero FLOPs** of a layer = FLOPs × density of its weight (ShrinkBench's rule of three:
  every weight takes part in the same number of MACs, exactly so for dense layers and for
  convolutions without padding effects), and **theoretical speedup** = dense FLOPs /
  nonzero FLOPs.

FLOPs are derived *generically* by tracing the model's forward pass with
:func:`jax.make_jaxpr`: no per-layer-type table, so any model built from ``dot_general``
(``Dense``, ``Einsum``, attention projections) and ``conv_general_dilated`` is covered, in
Linen, NNX (``flops(model, x)``) or plain JAX. The per-parameter size table is
:func:`sparsejax.masks.summary` / :func:`sparsejax.masks.format_summary`.

Classification metrics (accuracy, per-class and macro precision / recall / F1, confusion
matrix) are pure, ``jit``-compatible (``num_classes`` static) and follow scikit-learn's
definitions with ``zero_division=0``.

References:
  Blalock, Gonzalez Ortiz, Frankle, Guttag. "What is the State of Neural Network Pruning?".
  MLSys 2020 (ShrinkBench).
"""

from sparsejax.metrics._classification import (
    ClassificationMetrics,
    accuracy,
    classification_metrics,
    confusion_matrix,
    metrics_from_confusion,
)
from sparsejax.metrics._counts import compression_ratio, num_nonzero, num_params
from sparsejax.metrics._flops import NO_PARAMETER, FlopsReport, FlopsRow, flops, format_flops
from sparsejax.metrics._pareto import pareto_front

__all__ = [
    "NO_PARAMETER",
    "ClassificationMetrics",
    "FlopsReport",
    "FlopsRow",
    "accuracy",
    "classification_metrics",
    "compression_ratio",
    "confusion_matrix",
    "flops",
    "format_flops",
    "metrics_from_confusion",
    "num_nonzero",
    "num_params",
    "pareto_front",
]
