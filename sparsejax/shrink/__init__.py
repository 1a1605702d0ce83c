"""Structured pruning that physically shrinks models: coupled groups, keep sets, shrink.

Masks simulate sparsity; only structured pruning followed by *physical shrinking* into
smaller dense arrays speeds up standard XLA kernels. This package:

* finds the **coupled groups** of a Flax NNX model, the parameter slices that must be
  removed together (a filter with its bias, BatchNorm channel and the next layer's input
  rows; a residual stage's channels; attention heads), by tracing the forward pass
  (:func:`coupled_groups`) or from an explicit spec (:class:`Group`, :class:`Member`);
* turns a structured mask (``sparsejax.prune(..., structure=sparsejax.Neurons())``) or keep
  indices into group keep sets (:func:`keep_sets`) and the exactly equivalent mask
  (:func:`group_mask`);
* builds the smaller model (:func:`shrink`) and removes whole residual blocks
  (:func:`remove_blocks`, :func:`block_mask`, :func:`removable_blocks`).

Example:
  >>> import sparsejax as sj
  >>> from flax import nnx
  >>> from sparsejax.models import LeNet300100
  >>> from sparsejax.shrink import shrink
  >>> model = LeNet300100(rngs=nnx.Rngs(0))
  >>> params = nnx.state(model, nnx.Param)
  >>> mask = sj.prune(sj.scores.magnitude(params), 0.5, structure=sj.Neurons(),
  ...                 prunable=r"layers/[01]/kernel")
  >>> small = shrink(model, mask)        # a new model; `model` is unchanged
  >>> small.features
  (784, 150, 50, 10)

Like :mod:`sparsejax.models` and :mod:`sparsejax.train`, this package needs Flax: import
it explicitly (``import sparsejax.shrink``).

References:
  Li et al. (2017), Pruning Filters for Efficient ConvNets, ICLR; Liu et al. (2017),
  Learning Efficient Convolutional Networks through Network Slimming, ICCV; Molchanov et
  al. (2019), Importance Estimation for Neural Network Pruning, CVPR; Michel, Levy &
  Neubig (2019), Are Sixteen Heads Really Better than One?, NeurIPS.
"""

from sparsejax.shrink._groups import (
    Group,
    Member,
    check_groups,
    group_mask,
    keep_sets,
    member_indices,
)
from sparsejax.shrink._shrink import block_mask, removable_blocks, remove_blocks, shrink
from sparsejax.shrink._trace import coupled_groups, example_input

__all__ = [
    "Group",
    "Member",
    "block_mask",
    "check_groups",
    "coupled_groups",
    "example_input",
    "group_mask",
    "keep_sets",
    "member_indices",
    "removable_blocks",
    "remove_blocks",
    "shrink",
]
