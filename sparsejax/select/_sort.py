"""The sort search: the ``k`` lowest keys by one stable sort, for small models on one accelerator.

``search="sort"`` (the default for at most ``2**20`` groups on a single accelerator)
stably sorts the keys with their (relative) positions, one sort per target, and selects
the ``k`` first: one kernel instead of the radix search's 16 counting passes over every
leaf. With more than two leaves, layer scope sorts all leaves twice (by key, then
stably by leaf) instead of once per leaf. The keys are the radix search's, so the
masks are the same bit for bit (timings: docs/results.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsejax.select._keys import relative_position
from sparsejax.select._wide import Wide

__all__ = ["select_lowest_sorted"]

_U32 = jnp.uint32


def select_lowest_sorted(keys: Sequence[jax.Array], joint: bool, target: Wide) -> list[jax.Array]:
    """:func:`~sparsejax.select._radix.select_lowest` by one stable sort per target: same masks.

    ``keys``: each leaf's uint32 keys (the key's shape is the mask's). The keys of a
    target's leaves (all leaves when ``joint``, else each leaf on its own) are
    concatenated in leaf order and stably sorted with their positions -- for several
    leaves by key and then relative position
    (:func:`~sparsejax.select._keys.relative_position`), so ties go to the lower
    relative position and then the earlier leaf; inside one leaf to the lower flat
    index: the composite order of the radix search. An entry is selected when its rank
    is below the target. For at most ``2**20`` groups on one accelerator
    (``search="auto"``), or ``search="sort"`` (fewer than ``2**31`` groups). With
    more than two separate targets (layer scope) the leaves share two sorts
    (:func:`_select_lowest_segmented`).
    """
    shapes = [tuple(k.shape) for k in keys]
    keys = [k.ravel() for k in keys]
    if not joint and len(keys) > 2:
        return _select_lowest_segmented(keys, shapes, target[1])
    blocks = [list(range(len(keys)))] if joint else [[i] for i in range(len(keys))]
    out: list[jax.Array] = [None] * len(keys)  # type: ignore[list-item]
    for t, members in enumerate(blocks):
        flat = jnp.concatenate([keys[i] for i in members]) if len(members) > 1 else keys[members[0]]
        n = flat.shape[0]
        pos = lax.iota(jnp.int32, n)
        if len(members) > 1:
            rel = jnp.concatenate([relative_position((keys[i].shape[0],)) for i in members])
            order = lax.sort((flat, rel, pos), num_keys=2, is_stable=True)[2]
        else:
            order = lax.sort((flat, pos), num_keys=1, is_stable=True)[1]
        # the first k in sorted order, scattered back (k < 2**31: the low word is k)
        first_k = pos.astype(_U32) < target[1][t]
        selected = jnp.zeros(n, bool).at[order].set(first_k, unique_indices=True)
        start = 0
        for i in members:
            size = keys[i].shape[0]
            out[i] = selected[start : start + size].reshape(shapes[i])
            start += size
    return out


def _select_lowest_segmented(
    keys: Sequence[jax.Array], shapes: Sequence[tuple[int, ...]], k_lo: jax.Array
) -> list[jax.Array]:
    """Per-leaf targets (layer scope) with two sorts of all leaves instead of one per leaf.

    All keys are concatenated and stably sorted by key, then stably by leaf id (a least-
    significant-digit radix order): each leaf's entries land in its own index range,
    ordered by key and then flat index, exactly as a sort of the leaf alone. An entry is
    selected when its offset in that range is below its leaf's target ``k_lo[leaf]``
    (targets below ``2**31``). Twenty ResNet-20 leaves cost two sorts instead of twenty.
    """
    sizes = [k.shape[0] for k in keys]
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    flat = jnp.concatenate(keys)
    n = flat.shape[0]
    pos = lax.iota(jnp.int32, n)
    # Leaf of every flat position: a handful of fused compares, no n-sized constant.
    leaf = sum((pos >= jnp.int32(b)).astype(jnp.int32) for b in starts[1:])
    by_key = lax.sort((flat, pos), num_keys=1, is_stable=True)[1]
    leaf_dtype = jnp.uint8 if len(keys) <= 256 else jnp.int32
    order = lax.sort((leaf.astype(leaf_dtype)[by_key], by_key), num_keys=1, is_stable=True)[1]
    # Sorted position j belongs to the same leaf as flat position j (the ranges coincide).
    rank = pos - jnp.asarray(starts, jnp.int32)[leaf]
    first_k = rank.astype(_U32) < k_lo[leaf]
    selected = jnp.zeros(n, bool).at[order].set(first_k, unique_indices=True)
    return [selected[b : b + size].reshape(shape) for b, size, shape in zip(starts, sizes, shapes)]
