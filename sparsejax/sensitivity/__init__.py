"""Sensitivity analysis: how much each layer (or weight) can be pruned, and budget allocation.

* :func:`layer_sensitivity` — prune one layer at a time to each sparsity of a
  grid (any score, any structure), evaluate ``eval_fn(params) -> metric`` and
  restore: the per-layer sensitivity curves of Han et al. (2015, Fig. 6) and Li
  et al. (2017, Fig. 2). The grid is evaluated in one ``jax.vmap`` per layer
  when ``eval_fn`` is traceable, in a Python loop otherwise.
* :func:`allocate_budget` — per-layer sparsities that remove a target fraction
  of the prunable parameters or FLOPs while every layer's metric drop stays
  under a bound, chosen greedily on the curves; the result is a ``{path:
  sparsity}`` map for ``sparsejax.prune(..., distribution=...)``.
* :func:`parameter_sensitivity` — per-weight saliencies (OBD ``½·h·w²`` or
  Fisher, from :mod:`sparsejax.scores`) summarised per layer and compared with
  magnitude (Spearman's ρ and top-k overlap).
* :func:`plot_sensitivity_curves`, :func:`plot_sensitivity_heatmap` — figures (matplotlib,
  imported lazily; they return the Figure and never change the backend).

References:
  Han, Pool, Tran, Dally. "Learning both Weights and Connections for Efficient Neural
  Networks", NeurIPS 2015 (layer sensitivity, Fig. 6).
  Li, Kadav, Durdanovic, Samet, Graf. "Pruning Filters for Efficient ConvNets", ICLR 2017
  (sensitivity of each layer to filter pruning, Section 4.2).
  LeCun, Denker, Solla. "Optimal Brain Damage", NeurIPS 1990.
  Theis, Korshunova, Tejani, Huszár. "Faster gaze prediction with dense networks and Fisher
  pruning", 2018.
"""

from sparsejax.sensitivity._budget import allocate_budget, layer_flops
from sparsejax.sensitivity._layers import LayerSensitivity, layer_sensitivity
from sparsejax.sensitivity._parameters import (
    ParameterSensitivity,
    format_parameter_sensitivity,
    parameter_sensitivity,
)
from sparsejax.sensitivity._plots import plot_sensitivity_curves, plot_sensitivity_heatmap

__all__ = [
    "LayerSensitivity",
    "ParameterSensitivity",
    "allocate_budget",
    "format_parameter_sensitivity",
    "layer_flops",
    "layer_sensitivity",
    "parameter_sensitivity",
    "plot_sensitivity_curves",
    "plot_sensitivity_heatmap",
]
