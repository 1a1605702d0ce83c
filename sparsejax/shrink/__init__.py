"""Structured pruning that physically shrinks models: coupled groups, unit masks, shrink, save.

Masks simulate sparsity; only structured pruning followed by *physical shrinking* into
smaller dense arrays speeds up standard XLA kernels. This package finds the **coupled
groups** of a model, the parameter slices removed together (a filter with its bias,
BatchNorm channel and the next layer's input rows; a residual stage's channels; attention
heads), by tracing an NNX model or any ``apply_fn(params, x)`` (:func:`coupled_groups`) or
from an explicit spec (:class:`Group`, :class:`Member`). :func:`prune_units` selects units
per group in one call and :func:`unit_mask` turns any structured mask into the mask of
everything the removed units own, so that ``apply_mask`` equals :func:`shrink`, which
builds the smaller NNX model (:func:`shrink_params`: a params pytree of any layout);
:func:`remove_blocks` drops whole residual blocks; :func:`save_model` / :func:`load_model`
store a pruned or shrunk model with its mask and widths. Layer types tell it their size
attributes and residual blocks through :func:`register_resize` and
:func:`register_residual_block`. Needs Flax: import it explicitly.

Example:
  >>> from flax import nnx
  >>> from sparsejax.models import LeNet300100
  >>> from sparsejax.shrink import prune_units, shrink
  >>> model = LeNet300100(rngs=nnx.Rngs(0))
  >>> mask = prune_units(model, 0.5)      # the hidden layers; the logits are left alone
  >>> shrink(model, mask).features        # a new model; `model` is unchanged
  (784, 150, 50, 10)

References:
  Li et al. (2017), Pruning Filters for Efficient ConvNets, ICLR; Liu et al. (2017), Network
  Slimming, ICCV; Michel, Levy & Neubig (2019), Are Sixteen Heads Really Better than One?,
  NeurIPS; Fang et al. (2023), DepGraph: Towards Any Structural Pruning, CVPR.
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
from sparsejax.shrink._save import LoadedModel, load_model, save_model
from sparsejax.shrink._shrink import shrink
from sparsejax.shrink._trace import coupled_groups, example_input
from sparsejax.shrink._units import prune_units, shrink_params, unit_mask

__all__ = [
    "Group",
    "LoadedModel",
    "Member",
    "block_mask",
    "check_groups",
    "coupled_groups",
    "example_input",
    "group_mask",
    "keep_sets",
    "load_model",
    "member_indices",
    "prune_units",
    "register_residual_block",
    "register_resize",
    "removable_blocks",
    "remove_blocks",
    "save_model",
    "shrink",
    "shrink_params",
    "unit_mask",
]
