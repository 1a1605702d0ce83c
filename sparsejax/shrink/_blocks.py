"""Layer pruning: remove whole residual blocks (and the mask that equals their removal)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.masks import validate_mask
from sparsejax.shrink._layer_handlers import why_not_removable
from sparsejax.tree import PyTree, named_leaves, path_str

__all__ = ["block_mask", "removable_blocks", "remove_blocks"]


def _block_list(model: nnx.Module, attr: str) -> list[nnx.Module]:
    blocks = getattr(model, attr, None)
    if blocks is None or not isinstance(blocks, (nnx.List, list, tuple)):
        raise ValueError(
            f"{type(model).__name__} has no list of blocks at attribute {attr!r} "
            "(expected an nnx.List of residual blocks)"
        )
    return list(blocks)


def removable_blocks(model: nnx.Module, *, attr: str = "blocks") -> tuple[int, ...]:
    """Indices of blocks whose removal leaves a valid model (their output can be the input).

    ResNet :class:`~sparsejax.models.BasicBlock` with stride 1 and as many input as output
    channels (every block but the first of stages 2 and 3), and every
    :class:`~sparsejax.models.TransformerBlock`; blocks of other types as their handler
    registered with :func:`register_residual_block` says.
    """
    return tuple(i for i, b in enumerate(_block_list(model, attr)) if why_not_removable(b) is None)


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
        why = why_not_removable(items[b])
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
