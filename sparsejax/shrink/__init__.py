"""Structured pruning that physically shrinks models: coupled groups, keep sets, shrink.

Masks simulate sparsity; only structured pruning followed by *physical shrinking* into
smaller dense arrays speeds up standard XLA kernels. This package finds the **coupled
groups** of a Flax NNX model, the parameter slices removed together (a filter with its
bias, BatchNorm channel and the next layer's input rows; a residual stage's channels;
attention heads), by tracing the forward pass (:func:`coupled_groups`) or from an
explicit spec (:class:`Group`, :class:`Member`); turns a structured mask or keep indices
into group keep sets (:func:`keep_sets`, :func:`group_mask`); builds the smaller model
(:func:`shrink`) and removes whole residual blocks (:func:`remove_blocks`). Layer types
tell it their size attributes and whether they are residual blocks through
:func:`register_resize` and :func:`register_residual_block` (Flax layers and the model
zoo are registered; register your own the same way). Needs Flax: import it explicitly.

Example:
  >>> import sparsejax as sj
  >>> from flax import nnx
  >>> from sparsejax.models import LeNet300100
  >>> from sparsejax.shrink import shrink
  >>> model = LeNet300100(rngs=nnx.Rngs(0))
  >>> mask = sj.prune(sj.scores.magnitude(nnx.state(model, nnx.Param)), 0.5,
  ...                 structure=sj.Neurons(), prunable=r"layers/[01]/kernel")
  >>> shrink(model, mask).features        # a new model; `model` is unchanged
  (784, 150, 50, 10)

References:
  Li et al. (2017), Pruning Filters for Efficient ConvNets, ICLR; Liu et al. (2017),
  Network Slimming, ICCV; Molchanov et al. (2019), Importance Estimation for Neural
  Network Pruning, CVPR; Michel, Levy & Neubig (2019), Are Sixteen Heads Really Better
  than One?, NeurIPS.
"""

# Handlers of the Flax layers and of the model zoo, registered on import.
from sparsejax.shrink import _nnx_layers, _zoo  # noqa: F401
from sparsejax.shrink._blocks import block_mask, removable_blocks, remove_blocks
from sparsejax.shrink._groups import (
    Group,
    Member,
    check_groups,
    group_mask,
    keep_sets,
    member_indices,
)
from sparsejax.shrink._layer_handlers import register_residual_block, register_resize
from sparsejax.shrink._shrink import shrink
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
    "register_residual_block",
    "register_resize",
    "removable_blocks",
    "remove_blocks",
    "shrink",
]
