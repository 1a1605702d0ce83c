"""Structured decisions in one call: the mask of everything a unit removes, and unit pruning.

:func:`unit_mask` turns a structured mask (or keep indices) into the mask of **every**
parameter slice the removed units own: the kernel's output columns, the bias, the norm
scale and shift, the next layers' input rows, the attention heads of q/k/v/out. Applying
it gives the pruned model itself, the function :func:`~sparsejax.shrink.shrink` builds.
:func:`prune_units` scores and selects units per coupled group (exact counts, layerwise
or global) and returns that mask; layers whose units reach the model's output are left
alone. :func:`shrink_params` cuts the removed units out of a parameter pytree of any
layout (Linen, Equinox, plain JAX). Groups come from an NNX model, from tracing
``apply_fn(params, x)``, or from an explicit spec.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.masks import intersect, validate_mask
from sparsejax.select import prune
from sparsejax.shrink._groups import (
    Group,
    _mask_units,
    check_groups,
    group_mask,
    keep_sets,
    member_indices,
)
from sparsejax.shrink._shrink import _host_where, _take
from sparsejax.shrink._trace import coupled_groups
from sparsejax.structures import REDUCTIONS, Neurons, Unstructured
from sparsejax.tree import PyTree, named_leaves

__all__ = ["prune_units", "shrink_params", "unit_mask"]

GroupFilter = str | Sequence[str] | Callable[[str, Group], bool] | None
OVER = ("leader", "group")


def _resolve(
    model_or_params: Any, groups: Sequence[Group] | None, apply_fn: Any, inputs: Any, caller: str
) -> tuple[PyTree, tuple[Group, ...]]:
    """The parameter pytree and the checked coupled groups of a model or a params tree."""
    if isinstance(model_or_params, nnx.Module):
        if apply_fn is not None:
            raise TypeError(f"{caller}: apply_fn= is for a params pytree; an nnx.Module is traced itself")
        _, params, rest = nnx.split(model_or_params, nnx.Param, ...)
        if groups is None:
            return params, coupled_groups(model_or_params, inputs)
        groups = tuple(groups)
        check_groups(groups, params, rest)
        return params, groups
    params = model_or_params
    if groups is None:
        if apply_fn is None or inputs is None:
            raise ValueError(
                f"{caller}: a params pytree needs its coupled groups: groups= (an explicit spec of "
                "Group / Member) or apply_fn=(params, x) -> y with inputs= to trace them"
            )
        return params, coupled_groups(apply_fn, inputs, params=params)
    groups = tuple(groups)
    check_groups(groups, params)
    return params, groups


def _is_mask(tree: Any, params: PyTree) -> bool:
    if not isinstance(tree, Mapping):
        return True
    try:
        return jax.tree.structure(tree) == jax.tree.structure(params)
    except Exception:
        return False


def unit_mask(
    model_or_params: nnx.Module | PyTree,
    mask_or_keep: PyTree | Mapping[Any, Sequence[int]],
    *,
    groups: Sequence[Group] | None = None,
    apply_fn: Callable[..., Any] | None = None,
    inputs: Any = None,
    strict: bool = True,
) -> PyTree:
    """The mask of a structured decision over everything it removes.

    A unit (neuron, filter, channel, head) is removed when the mask prunes its whole
    slice of the group's leader (e.g. a ``Neurons()`` / ``Filters()`` mask of the kernel,
    as :func:`~sparsejax.shrink.keep_sets` reads it). The returned mask also prunes the
    unit's bias, its BatchNorm / LayerNorm scale and shift, the next layers' input rows
    and, for attention heads, the heads' slices of ``query``/``key``/``value``/``out``: so
    ``apply_mask(params, unit_mask(model, mask))`` computes exactly the function of
    ``shrink(model, mask)`` (masking only the kernel leaves the bias and the BatchNorm shift
    of a removed filter alive, feeding the next layer). Entries the input mask prunes
    inside kept units stay pruned.

    Args:
      model_or_params: an ``nnx.Module`` (its groups are traced), or a parameter pytree of
        any layout with ``groups=`` or ``apply_fn=`` and ``inputs=``.
      mask_or_keep: a mask mirroring the params (``nnx.state(model, nnx.Param)``) or keep
        indices ``{group: unit indices}`` (see :func:`~sparsejax.shrink.keep_sets`).
      groups: an explicit spec; default: traced.
      apply_fn: ``apply_fn(params, x)`` of a params pytree (Linen ``module.apply``, an
        Equinox model recombined, plain JAX), traced with ``inputs``.
      inputs: an example batch for the trace (NNX default: the model's ``in_shape``).
      strict: as for :func:`~sparsejax.shrink.keep_sets` (raise when a unit of a group that
        cannot be removed, e.g. one reaching the output, is pruned).

    Returns:
      A mask mirroring the params: the input mask intersected with the group mask.

    Raises:
      ValueError: a bad mask (naming the path), a pruned unit of a blocked group (naming
        the group and why), a params pytree without ``groups`` or ``apply_fn``/``inputs``.

    Example:
      >>> import sparsejax as sj
      >>> from sparsejax.models import LeNet300100
      >>> model = LeNet300100(rngs=nnx.Rngs(0))
      >>> params = nnx.state(model, nnx.Param)
      >>> neurons = sj.prune(sj.scores.magnitude(params), 0.5, structure=sj.Neurons(),
      ...                    prunable=r"layers/[01]/kernel")
      >>> full = unit_mask(model, neurons)
      >>> [(tuple(m.shape), int(m.sum())) for m in jax.tree.leaves(full)]  # bias, next rows
      [((300,), 150), ((1, 300), 150), ((100,), 50), ((300, 100), 7500), ((), 1), ((100, 1), 50)]

    References:
      Li et al. (2017), Pruning Filters for Efficient ConvNets, ICLR (a filter removed with
      its BatchNorm channel and the next layer's input channel).
    """
    params, groups = _resolve(model_or_params, groups, apply_fn, inputs, "unit_mask")
    keep = keep_sets(groups, params, mask_or_keep, strict=strict)
    removal = group_mask(groups, params, keep)
    if _is_mask(mask_or_keep, params):
        validate_mask(params, mask_or_keep)
        return intersect(mask_or_keep, removal)
    return removal


def _selectable(groups: tuple[Group, ...], prunable: GroupFilter) -> list[Group]:
    """The groups ``prunable`` selects; blocked groups only when named (then an error)."""
    if prunable is None:
        return [g for g in groups if g.blocked is None]
    if isinstance(prunable, str) or (
        isinstance(prunable, Sequence) and not callable(prunable)
    ):
        patterns = [prunable] if isinstance(prunable, str) else list(prunable)
        for p in patterns:
            if not isinstance(p, str):
                raise TypeError(f"prunable patterns must be regex strings, got {p!r}")
            if not any(re.search(p, g.name) for g in groups):
                raise ValueError(
                    f"prunable pattern {p!r} matches no coupled group; groups are "
                    f"{[g.name for g in groups]}"
                )
        chosen = [g for g in groups if any(re.search(p, g.name) for p in patterns)]
    elif callable(prunable):
        chosen = [g for g in groups if prunable(g.name, g)]
    else:
        raise TypeError(f"prunable must be None, a regex, a list of regexes or a predicate, got {prunable!r}")
    blocked = [g for g in chosen if g.blocked is not None]
    if blocked:
        g = blocked[0]
        raise ValueError(f"prunable selects group {g.name!r}, whose units cannot be removed: {g.blocked}")
    if not chosen:
        raise ValueError("prunable selects no coupled group")
    return chosen


def _unit_sums(score: Any, m: Any, size: int) -> tuple[jax.Array, jax.Array, jax.Array, int]:
    """Per-unit ``Σ|s|``, ``Σs²``, ``Σs`` of a member slice, and the entries per unit."""
    s = jnp.moveaxis(jnp.asarray(score, jnp.float32), m.axis, 0).reshape(m.outer, size, m.inner, -1)
    axes = (0, 2, 3)
    return (jnp.sum(jnp.abs(s), axis=axes), jnp.sum(s * s, axis=axes), jnp.sum(s, axis=axes),
            int(np.size(score)) // size)


@functools.partial(jax.jit, static_argnames=("groups", "reduction", "over", "absolute"))
def _all_unit_scores(
    table: dict[str, jax.Array], groups: tuple[Group, ...], reduction: str, over: str,
    absolute: bool,
) -> dict[str, jax.Array]:
    """Unit scores of every group from per-entry scores (``|w|`` when ``absolute``), one jit."""
    if absolute:
        table = {k: jnp.abs(jnp.asarray(v, jnp.float32)) for k, v in table.items()}
    return {g.name: _unit_scores(g, table, reduction, over) for g in groups}


def _unit_scores(g: Group, table: Mapping[str, Any], reduction: str, over: str) -> jax.Array:
    """One float32 score per unit of ``g`` (see :func:`prune_units`)."""
    lead = g.leader
    if over == "leader" and lead.outer == 1 and lead.inner == 1:
        # the same reduction, and floats, as ``sj.prune(..., structure=Neurons(axis=...))``
        return Neurons(axis=lead.axis).reduce(table[lead.path], reduction).reshape(-1)
    members = [lead] if over == "leader" else [m for m in g.members if m.path in table]
    sums = [_unit_sums(table[m.path], m, g.size) for m in members]
    if reduction == "l1":
        return sum(s[0] for s in sums)
    if reduction == "l2":
        return jnp.sqrt(sum(s[1] for s in sums))
    total = sum(s[2] for s in sums)
    return total / sum(s[3] for s in sums) if reduction == "mean" else total


def _unit_tree(
    params: PyTree, scores: Any, chosen: tuple[Group, ...], reduction: str, over: str
) -> dict[str, jax.Array]:
    """``{group name: (size,) float32 unit scores}`` of the chosen groups."""
    if isinstance(scores, Mapping) and any(g.name in scores for g in chosen):
        out = {}
        for g in chosen:
            if g.name not in scores:
                raise ValueError(f"unit scores are given by group name, but not for {g.name!r}")
            value = jnp.asarray(scores[g.name], jnp.float32)
            if value.shape != (g.size,):
                raise ValueError(
                    f"unit scores of group {g.name!r} must have shape ({g.size},), got {value.shape}"
                )
            out[g.name] = value
        return out
    absolute = scores is None
    table = dict(named_leaves(params if absolute else scores))
    paths = {g.leader.path for g in chosen} | (
        {m.path for g in chosen for m in g.members} if over == "group" else set())
    missing = sorted(p for p in {g.leader.path for g in chosen} if p not in table)
    if missing:
        raise ValueError(f"scores have no leaf for the group leaders {missing[:5]}")
    needed = {p: table[p] for p in sorted(paths) if p in table}
    return _all_unit_scores(needed, chosen, reduction, over, absolute)


def prune_units(
    model_or_params: nnx.Module | PyTree,
    sparsity: float | Mapping[str, float] | None,
    *,
    scores: PyTree | Mapping[str, Any] | None = None,
    reduction: str = "l1",
    over: str = "leader",
    prunable: GroupFilter = None,
    scope: str = "layer",
    normalize: str | None = None,
    mask: PyTree | None = None,
    groups: Sequence[Group] | None = None,
    apply_fn: Callable[..., Any] | None = None,
    inputs: Any = None,
) -> PyTree:
    """Structured pruning in one call: units selected per coupled group, masked everywhere.

    Each coupled group (a layer's neurons or filters with their bias, norm channel and the
    next layers' inputs; a residual stream; attention heads) gets one score per unit, the
    reduction of the per-entry ``scores`` over the leader's slice (``over="leader"``: the
    filter's own weights, Li et al. 2017) or over every coupled slice (``over="group"``:
    DepGraph's group importance, Fang et al. 2023). Exactly ``round(s · size)`` units of
    each group (``scope="layer"``) or of all groups together (``"global"``) with the lowest
    scores are removed (:func:`sparsejax.prune`: ties by position), and the returned mask
    prunes every slice they own (:func:`unit_mask`), so ``apply_mask`` equals
    :func:`~sparsejax.shrink.shrink`.

    **The output layer is left alone**: by default only groups that can be removed are
    pruned (a classifier's logits, channels a LayerNorm reduces over or an option-A
    shortcut pads are *blocked*, see :func:`~sparsejax.shrink.coupled_groups`).

    Args:
      model_or_params: an ``nnx.Module``, or a parameter pytree of any layout with
        ``groups=`` or ``apply_fn=`` and ``inputs=`` (Linen, Equinox: see
        :func:`~sparsejax.shrink.coupled_groups`).
      sparsity: fraction of units to remove, in ``[0, 1)`` per group (or overall with
        ``scope="global"``), or ``{group-name regex: fraction}`` (groups no key matches keep
        every unit).
      scores: per-entry scores mirroring the params (default ``|w|``,
        :func:`sparsejax.scores.magnitude`), or ``{group name: (size,) unit scores}``.
      reduction: ``"l1"`` (default, Li et al.), ``"l2"``, ``"sum"`` or ``"mean"``.
      over: ``"leader"`` or ``"group"`` (see above).
      prunable: which groups may be pruned: a regex or list of regexes searched in the
        group names (``"{leader path}:{axis}"``), or ``f(name, group) -> bool``; default
        every group that is not blocked. Naming a blocked group is an error.
      scope: ``"layer"`` or ``"global"`` (use ``normalize="l2"`` across layers of
        different scales, Molchanov et al. 2017).
      normalize: as for :func:`sparsejax.prune`.
      mask: an earlier mask (iterative pruning): units it removed stay removed and count.
      groups, apply_fn, inputs: where the groups come from (see :func:`unit_mask`).

    Returns:
      A mask mirroring the params (``nnx.state(model, nnx.Param)`` for a model).

    Raises:
      ValueError / TypeError: a sparsity outside ``[0, 1)``, a sparsity that removes every
        unit of a group, a bad ``prunable`` / ``over`` / ``reduction``, scores of another
        tree (each naming the group or path).

    Example:
      >>> import sparsejax as sj
      >>> from sparsejax.models import LeNet5
      >>> model = LeNet5(rngs=nnx.Rngs(0))
      >>> mask = prune_units(model, 0.5)        # conv1, conv2, fc1; fc2 (logits) alone
      >>> sj.shrink.shrink(model, mask).fc1.out_features
      250

    References:
      Li et al. (2017), Pruning Filters for Efficient ConvNets, ICLR; Molchanov et al.
      (2017), Pruning CNNs for Resource Efficient Inference, ICLR; Fang et al. (2023),
      DepGraph: Towards Any Structural Pruning, CVPR.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if over not in OVER:
        raise ValueError(f"over must be one of {OVER}, got {over!r}")
    if isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool):
        if not 0.0 <= float(sparsity) < 1.0:
            raise ValueError(
                f"sparsity must be in [0, 1) (a layer of width 0 is not a model), got {sparsity!r}"
            )
    params, groups = _resolve(model_or_params, groups, apply_fn, inputs, "prune_units")
    chosen = _selectable(groups, prunable)
    if mask is not None:
        validate_mask(params, mask)
    leaf_mask = dict(named_leaves(mask)) if mask is not None else {}
    shapes = {p: np.shape(x) for p, x in named_leaves(params)}
    unit_tree = _unit_tree(params, scores, tuple(chosen), reduction, over)
    already = None
    if mask is not None:
        already = {}
        for g in chosen:
            kept = _mask_units(g, g.leader, leaf_mask, shapes)
            already[g.name] = jnp.asarray(np.ones(g.size, bool) if kept is None else kept)
    distribution = "uniform"
    value = sparsity
    if isinstance(sparsity, Mapping):
        distribution, value = dict(sparsity), None
    selected = prune(unit_tree, value, mask=already, prunable=lambda *_: True, scope=scope,
                     structure=Unstructured(), distribution=distribution, normalize=normalize)
    keep = {}
    for g in chosen:
        kept = np.flatnonzero(np.asarray(selected[g.name]))
        if kept.size == 0:
            raise ValueError(
                f"the selection removes every unit of group {g.name!r} ({g.size} units); lower "
                "the sparsity (or exclude the group with prunable=)"
            )
        keep[g.name] = kept.tolist()
    removal = group_mask(groups, params, {**{g.name: range(g.size) for g in groups}, **keep})
    return removal if mask is None else intersect(mask, removal)


def shrink_params(
    params: PyTree,
    mask_or_keep: PyTree | Mapping[Any, Sequence[int]],
    *,
    groups: Sequence[Group] | None = None,
    apply_fn: Callable[..., Any] | None = None,
    inputs: Any = None,
    strict: bool = True,
) -> PyTree:
    """Physical shrinking of a parameter pytree of any layout (Linen, Equinox, plain JAX).

    The removed units' slices of every coupled parameter are cut out (the mask is applied
    first, as :func:`~sparsejax.shrink.shrink` does for NNX models); build the smaller
    module (e.g. Linen ``Dense(features)`` with the new widths) around the result. Running
    statistics outside ``params`` (Linen ``batch_stats``) are cut with the same keep sets:
    pass them in the tree (``{"params": ..., "batch_stats": ...}``) with ``groups`` that
    name them.

    Args:
      params: the parameter pytree.
      mask_or_keep: a mask mirroring ``params`` or keep indices (see :func:`unit_mask`).
      groups, apply_fn, inputs, strict: as for :func:`unit_mask`.

    Returns:
      A pytree like ``params`` with smaller arrays.

    Example:
      >>> import flax.linen as nn
      >>> mlp = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
      >>> x = jnp.ones((2, 5))
      >>> params = mlp.init(jax.random.key(0), x)
      >>> small = shrink_params(params, {"params/layers_0/kernel": [0, 2, 5]},
      ...                       apply_fn=mlp.apply, inputs=x)
      >>> jax.tree.map(jnp.shape, small)["params"]["layers_2"]["kernel"]
      (3, 3)
    """
    if isinstance(params, nnx.Module):
        raise TypeError("shrink_params takes a parameter pytree; use shrink(model, ...) for an nnx.Module")
    params, groups = _resolve(params, groups, apply_fn, inputs, "shrink_params")
    if _is_mask(mask_or_keep, params):
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
    return _take(params, cuts)
