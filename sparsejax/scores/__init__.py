"""Importance scores: pytrees that say how much each weight (or unit) matters.

Every function is pure and returns a pytree that mirrors its input, ready for
``sparsejax.prune(scores, sparsity)``, which removes the **lowest** scores: higher
always means "more important". A float leaf of any float dtype gets a ``float32``
score of its shape; a non-float leaf (an ``int32`` step, a ``bool`` flag, a ``float0``
gradient) gets ``zeros(shape, float32)``; a complex leaf raises ``TypeError``. Errors
name the offending leaf by its path (:func:`sparsejax.tree.path_str`). Values are never
inspected, so a NaN or inf flows into the scores: :func:`check_finite` them first.

Per weight (``w`` weight, ``g`` gradient, ``h`` Hessian diagonal): :func:`magnitude`
``|w|`` (Han et al. 2015); :func:`random` ``U[0, 1)`` (control); :func:`gradient`
``|g|``; :func:`taylor` ``|w·g|`` or ``(w·g)²`` (Molchanov et al. 2017, 2019);
:func:`snip` ``|w·g| / Σ|w·g|`` (Lee et al. 2019); :func:`movement` ``−w·g`` (Sanh et
al. 2020); :func:`obd` ``½·h·w²`` (LeCun et al. 1990), with ``h`` from
:func:`exact_hessian_diag`, :func:`hessian_diag_hutchinson` or :func:`fisher_diag`.

Per unit (neuron / filter), in the ``Neurons`` mask shape ``(1, …, 1, out)``:
:func:`filter_norm` ``Σ|w|`` or ``√Σw²`` (Li et al. 2017); :func:`group_taylor` and
:func:`mean_group_taylor` ``(Σ_unit g·w)²`` (Molchanov et al. 2019); :func:`bn_scale`
``|γ|`` of the following BatchNorm (Liu et al. 2017); :func:`random_units`;
:func:`oracle`, the exact loss change of removing the unit (Molchanov et al. 2017).
Per-channel activation statistics, :func:`activation_mean` and :func:`apoz` /
:func:`apoz_importance` (Hu et al. 2016), become unit scores with
:func:`neuron_scores`. :func:`rank_correlation` (Spearman's ρ per layer,
:func:`spearman`) compares a criterion with the oracle.

``sparsejax.criteria``, the old home of the unit criteria, is a deprecated alias.
"""

from sparsejax.scores._activations import activation_mean, apoz, apoz_importance, neuron_scores
from sparsejax.scores._batchnorm import bn_conv_pairs, bn_scale
from sparsejax.scores._elementwise import gradient, magnitude, movement, random, snip, taylor
from sparsejax.scores._finite import check_finite
from sparsejax.scores._hessian import exact_hessian_diag, fisher_diag, hessian_diag_hutchinson, obd
from sparsejax.scores._rank_correlation import rank_correlation, spearman
from sparsejax.scores._units import (
    filter_norm,
    group_taylor,
    mean_group_taylor,
    oracle,
    random_units,
)

__all__ = [
    "activation_mean",
    "apoz",
    "apoz_importance",
    "bn_conv_pairs",
    "bn_scale",
    "check_finite",
    "exact_hessian_diag",
    "filter_norm",
    "fisher_diag",
    "gradient",
    "group_taylor",
    "hessian_diag_hutchinson",
    "magnitude",
    "mean_group_taylor",
    "movement",
    "neuron_scores",
    "obd",
    "oracle",
    "random",
    "random_units",
    "rank_correlation",
    "snip",
    "spearman",
    "taylor",
]
