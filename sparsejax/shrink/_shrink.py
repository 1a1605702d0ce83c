"""Physical shrinking: a new, smaller ``nnx.Module`` with the removed units gone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.masks import validate_mask
from sparsejax.shrink._groups import (
    Group,
    check_groups,
    keep_sets,
    member_indices,
)
from sparsejax.shrink._layer_handlers import resize_attributes
from sparsejax.shrink._trace import coupled_groups, example_input
from sparsejax.tree import PyTree, path_str

__all__ = ["shrink"]


def _take(tree: PyTree, cuts: Mapping[str, list[tuple[int, np.ndarray]]]) -> PyTree:
    """Slice the cut leaves on the host (model surgery is bookkeeping, not a traced op)."""

    def one(kp, leaf):
        todo = cuts.get(path_str(kp), ())
        if not todo:
            return leaf
        arr = np.asarray(leaf)
        for axis, idx in todo:
            arr = np.take(arr, idx, axis=axis)
        return jnp.asarray(arr)

    return jax.tree_util.tree_map_with_path(one, tree)


def _host_where(p: Any, m: Any) -> Any:
    """``apply_mask`` for one leaf, on the host; all-keep leaves pass through untouched."""
    keep = np.asarray(m)
    if keep.all():
        return p
    arr = np.asarray(p)
    return jnp.asarray(np.where(keep, arr, np.zeros((), arr.dtype)))


def shrink(
    model: nnx.Module,
    mask_or_keep: PyTree | Mapping[Any, Sequence[int]],
    *,
    groups: Sequence[Group] | None = None,
    inputs: Any = None,
    strict: bool = True,
) -> nnx.Module:
    """A new, physically smaller model without the removed units of each coupled group.

    Every member slice of a removed unit is cut out (``jnp.take`` along the member axis):
    the leader kernel's output columns, biases, BatchNorm ``scale``/``bias``/``mean``/``var``,
    the next layers' input rows (``H·W`` rows per channel after a flatten), attention heads
    of ``query``/``key``/``value``/``out``; size attributes (``in_features``,
    ``num_features``, ``num_heads``, ``MLP.features``, ...) follow, set by the resize
    handler of each layer type (:func:`register_resize`). ``model`` is untouched;
    the result keeps its train/eval mode and can be trained as any other model.

    **Equivalence.** With ``keep = keep_sets(groups, params, mask_or_keep)`` and
    ``mask = mask_or_keep`` (or all-keep when indices are given), the shrunk model computes
    exactly the function of the *masked model*, the original with parameters
    ``apply_mask(apply_mask(params, mask), group_mask(groups, params, keep))``: the removed
    units' slices of **every** coupled parameter are zeroed (for a BatchNorm channel: the
    conv filter, ``scale`` and ``bias``, and the next layer's input rows, so the channel's
    nonzero eval-mode output ``-mean·scale/√(var+ε) + bias`` is also cut). Entries the mask
    prunes inside kept units stay zero. In training mode BatchNorm statistics are per
    channel, so the equivalence also holds there; dropout draws different random masks.

    Args:
      model: an ``nnx.Module``.
      mask_or_keep: a mask mirroring ``nnx.state(model, nnx.Param)`` (e.g. from
        ``sparsejax.prune(..., structure=sparsejax.Neurons())``) or ``{group: unit
        indices}`` (see :func:`keep_sets`).
      groups: coupled groups; default :func:`coupled_groups` (traced). Pass an explicit
        spec (:class:`Group` / :class:`Member`) for models the tracer cannot follow.
      inputs: an example batch for tracing and for the final shape check (default: from
        the model's ``in_shape``).
      strict: see :func:`keep_sets` (raise on inconsistent masks and on pruned units of
        blocked groups).

    Returns:
      A new ``nnx.Module`` of the same class with smaller arrays.

    Raises:
      ValueError: a bad mask / keep mapping / group spec (naming the parameter path), or a
        model whose forward pass rejects the shrunk shapes.

    References:
      Li et al. (2017), Pruning Filters for Efficient ConvNets, ICLR; Liu et al. (2017),
      Network Slimming, ICCV; Molchanov et al. (2019), Importance Estimation for Neural
      Network Pruning, CVPR; Michel, Levy & Neubig (2019), Are Sixteen Heads Really Better
      than One?, NeurIPS.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if groups is None:
        groups = coupled_groups(model, inputs)
    else:
        groups = tuple(groups)
        check_groups(groups, params, rest)
    is_mask = not isinstance(mask_or_keep, Mapping) or (
        jax.tree.structure(mask_or_keep) == jax.tree.structure(params)
    )
    if is_mask:
        validate_mask(params, mask_or_keep)
        params = jax.tree.map(_host_where, params, mask_or_keep)
    keep = keep_sets(groups, params, mask_or_keep, strict=strict)
    cuts: dict[str, list[tuple[int, np.ndarray]]] = {}
    for g in groups:
        kept = np.asarray(keep[g.name], np.int64)
        if kept.size == g.size:
            continue
        for m in g.members:
            cuts.setdefault(m.path, []).append((m.axis, member_indices(m, g.size, kept)))
    new = nnx.merge(graphdef, _take(params, cuts), _take(rest, cuts), copy=True)
    resize_attributes(new)
    _check_runs(new, model, inputs)
    return new


def _check_runs(new: nnx.Module, old: nnx.Module, inputs: Any) -> None:
    if inputs is None:
        try:
            inputs = example_input(old)
        except ValueError:
            return
    probe = nnx.clone(new)
    probe.eval()
    g, state = nnx.split(probe)
    try:
        jax.eval_shape(lambda s, x: nnx.merge(g, s, copy=True)(x), state, inputs)
    except Exception as err:
        raise ValueError(
            f"the shrunk {type(old).__name__} does not run on inputs of shape "
            f"{getattr(inputs, 'shape', None)}: {err}. Its forward pass needs coupled sizes "
            "that the groups do not tie (e.g. equal q/k/v head widths): keep those groups "
            "whole or pass an explicit `groups` spec"
        ) from err
