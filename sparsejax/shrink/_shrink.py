"""Physical shrinking: a new, smaller ``nnx.Module`` with the removed units (or blocks) gone."""

from __future__ import annotations

import re
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
from sparsejax.shrink._trace import coupled_groups, example_input
from sparsejax.tree import PyTree, named_leaves, path_str

__all__ = ["block_mask", "removable_blocks", "remove_blocks", "shrink"]


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(np.shape(v[...]))


def _sync_attributes(model: nnx.Module) -> None:
    """Make size attributes (``in_features``, ``num_features``, ``num_heads``, ...) match the arrays."""
    from sparsejax.models.mlp import MLP
    from sparsejax.models.resnet import BasicBlock
    from sparsejax.models.transformer import MultiHeadSelfAttention

    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Linear):
            node.in_features, node.out_features = _shape(node.kernel)
        elif isinstance(node, nnx.Conv):
            shape = _shape(node.kernel)
            node.in_features = shape[-2] * node.feature_group_count
            node.out_features = shape[-1]
        elif isinstance(node, nnx.LinearGeneral):
            shape = _shape(node.kernel)
            nb, ni = len(node.batch_axis), len(node.in_features)
            node.in_features = shape[nb : nb + ni]
            node.out_features = shape[nb + ni :]
        elif isinstance(node, nnx.Embed):
            node.num_embeddings, node.features = _shape(node.embedding)
        elif isinstance(node, (nnx.BatchNorm, nnx.LayerNorm, nnx.RMSNorm, nnx.GroupNorm)):
            for name in ("scale", "bias", "mean"):
                var = getattr(node, name, None)
                if isinstance(var, nnx.Variable):
                    node.num_features = _shape(var)[-1]
                    break
        elif isinstance(node, MultiHeadSelfAttention):
            _, node.num_heads, node.head_dim = _shape(node.query.kernel)
        elif isinstance(node, MLP):
            widths = [_shape(layer.kernel)[1] for layer in node.layers]
            node.features = (node.features[0], *widths)
        elif isinstance(node, BasicBlock):
            node.out_channels = _shape(node.bn2.scale)[0]


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
    ``num_features``, ``num_heads``, ``MLP.features``, ...) follow. ``model`` is untouched;
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
    _sync_attributes(new)
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


# ----------------------------------------------------------------------------- blocks


def _block_list(model: nnx.Module, attr: str) -> list[nnx.Module]:
    blocks = getattr(model, attr, None)
    if blocks is None or not isinstance(blocks, (nnx.List, list, tuple)):
        raise ValueError(
            f"{type(model).__name__} has no list of blocks at attribute {attr!r} "
            "(expected an nnx.List of residual blocks)"
        )
    return list(blocks)


def _why_not_identity(block: nnx.Module) -> str | None:
    from sparsejax.models.resnet import BasicBlock
    from sparsejax.models.transformer import TransformerBlock

    if isinstance(block, TransformerBlock):
        return None
    if isinstance(block, BasicBlock):
        in_ch = _shape(block.conv1.kernel)[-2]
        if block.stride != 1 or block.projection or in_ch != block.out_channels:
            return (
                f"it changes the shape (stride {block.stride}, {in_ch} -> "
                f"{block.out_channels} channels), so it is not a residual identity"
            )
        return None
    return f"{type(block).__name__} is not a known residual block (BasicBlock, TransformerBlock)"


def removable_blocks(model: nnx.Module, *, attr: str = "blocks") -> tuple[int, ...]:
    """Indices of blocks whose removal leaves a valid model (their output can be the input).

    ResNet :class:`~sparsejax.models.BasicBlock` with stride 1 and as many input as output
    channels (every block but the first of stages 2 and 3), and every
    :class:`~sparsejax.models.TransformerBlock`.
    """
    return tuple(i for i, b in enumerate(_block_list(model, attr)) if _why_not_identity(b) is None)


def block_mask(model: nnx.Module, blocks: Sequence[int], *, attr: str = "blocks") -> PyTree:
    """The mask under which the listed blocks compute the identity (the "masked model").

    Every parameter of each listed block is pruned (scalar ``False``), others kept (scalar
    ``True``). A ResNet block then outputs ``relu(0 + x) = x`` (its input is a ReLU output,
    hence non-negative); a pre-LN transformer block ``x + 0 + 0`` (its LayerNorms output 0,
    so attention and MLP output their zeroed biases). :func:`remove_blocks` equals this mask.

    Returns:
      A mask mirroring ``nnx.state(model, nnx.Param)``.
    """
    chosen = _check_block_ids(model, blocks, attr)
    params = nnx.state(model, nnx.Param)
    pattern = re.compile(rf"^{re.escape(attr)}/(\d+)/")

    def leaf(kp, _):
        m = pattern.match(path_str(kp) + "/")
        return jnp.asarray(not (m and int(m.group(1)) in chosen))

    return jax.tree_util.tree_map_with_path(leaf, params)


def _check_block_ids(model: nnx.Module, blocks: Sequence[int], attr: str) -> set[int]:
    items = _block_list(model, attr)
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence):
        raise TypeError(f"blocks must be a sequence of block indices, got {blocks!r}")
    chosen = set()
    for b in blocks:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise TypeError(f"block indices must be ints, got {b!r}")
        if not 0 <= b < len(items):
            raise ValueError(f"block index {b} out of range: {attr} has {len(items)} blocks")
        why = _why_not_identity(items[b])
        if why is not None:
            raise ValueError(f"{attr}/{b} cannot be removed: {why}")
        chosen.add(int(b))
    return chosen


def remove_blocks(
    model: nnx.Module, blocks_or_mask: Sequence[int] | PyTree, *, attr: str = "blocks"
) -> tuple[nnx.Module, tuple[int, ...]]:
    """Layer pruning: a new model without whole residual blocks.

    Args:
      model: a model with an ``nnx.List`` of residual blocks at ``attr`` (ResNet,
        TransformerClassifier).
      blocks_or_mask: block indices, or a mask mirroring ``nnx.state(model, nnx.Param)``:
        then block ``i`` is removed iff the mask prunes every entry of each of its weight
        matrices / kernels (leaves with ``ndim >= 2``), e.g. a ``sparsejax.Layers()`` mask.

    Returns:
      ``(new_model, removed)``: the model without those blocks (later blocks are renumbered:
      paths ``blocks/{j}`` refer to the new list) and the sorted original indices removed.
      The new model equals the model masked with :func:`block_mask` (whole blocks zeroed),
      which makes each removed block the identity. Masking only the kernels is *not* the
      same for BatchNorm blocks (a zeroed conv followed by BN outputs the BN shift).

    Raises:
      ValueError: a block that is not a residual identity (stride 2, channel change,
        projection shortcut) or an unknown block type, named ``blocks/{i}``.

    References:
      Veit, Wilber & Belongie (2016), Residual Networks Behave Like Ensembles of Relatively
      Shallow Networks, NeurIPS (deleting residual blocks); Fan, Grave & Joulin (2020),
      Reducing Transformer Depth on Demand with Structured Dropout, ICLR.
    """
    items = _block_list(model, attr)
    params = nnx.state(model, nnx.Param)
    if isinstance(blocks_or_mask, Sequence) and not isinstance(blocks_or_mask, (str, bytes)):
        ids = blocks_or_mask
    else:
        validate_mask(params, blocks_or_mask)
        shapes = dict(named_leaves(params))
        pattern = re.compile(rf"^{re.escape(attr)}/(\d+)/")
        pruned = {i: None for i in range(len(items))}
        for path, m in named_leaves(blocks_or_mask):
            match = pattern.match(path)
            if not match or np.ndim(shapes[path]) < 2:
                continue
            i = int(match.group(1))
            whole = not np.any(np.asarray(m))
            pruned[i] = whole if pruned[i] is None else pruned[i] and whole
        ids = [i for i, p in pruned.items() if p]
    chosen = _check_block_ids(model, ids, attr)
    new = nnx.clone(model)
    kept = [b for i, b in enumerate(_block_list(new, attr)) if i not in chosen]
    setattr(new, attr, nnx.List(kept))
    return new, tuple(sorted(chosen))
