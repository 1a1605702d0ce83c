"""One drop-and-grow update of a mask: exact counts, deterministic ties, SNFS redistribution.

Pure functions on the prunable leaves of a mask (full-shape ``bool`` arrays): drop the
``k`` active entries of lowest magnitude, grow ``k`` (or, with SNFS redistribution, a
reallocated number) of the entries that were inactive *before* the update, ranked by a
growth score. Both selections run the :func:`sparsejax.prune` searches (radix passes,
or one sort on a single accelerator; the lowering platform's choice) on ``uint32`` keys,
so ties go to the lower flat index and the same mask comes out eagerly, under ``jit``
and ``vmap``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from sparsejax._platform import by_platform
from sparsejax.select._keys import KEY_EXCLUDED, float_key
from sparsejax.select._plan import _sorting_pays
from sparsejax.select._radix import default_bits_per_pass, select_lowest
from sparsejax.select._sort import select_lowest_sorted

_U32 = jnp.uint32
_I32 = jnp.int32


def lowest(keys: Sequence[jax.Array], counts: Sequence[jax.Array]) -> list[jax.Array]:
    """Per leaf, the ``bool`` mask of its ``counts[i]`` lowest ``uint32`` keys.

    Ties go to the lower flat index. ``counts[i]`` (an int scalar, possibly traced)
    must not exceed the number of keys below ``KEY_EXCLUDED`` in leaf ``i``.
    """
    if not keys:
        return []
    target = (
        jnp.zeros(len(keys), _U32),
        jnp.stack([jnp.asarray(c).astype(_U32) for c in counts]),
    )
    total = sum(k.size for k in keys)

    def search(sort: bool, keys, target) -> list[jax.Array]:
        if sort:
            return select_lowest_sorted(list(keys), False, target)
        key_fns = [lambda zero=None, k=k: k for k in keys]
        return select_lowest(key_fns, False, target, default_bits_per_pass())

    # One sort or the radix passes, as planned for the platform this is lowered for.
    return by_platform(lambda: _sorting_pays(total), search, list(keys), target)


def drop_counts(masks: Sequence[jax.Array], fraction: jax.Array) -> list[jax.Array]:
    """Per leaf ``k = min(floor(fraction · active), inactive)`` (``int32``).

    ``floor`` as RigL's reference code (``int(n_ones * drop_fraction)``); the cap keeps
    the growth within the entries that were inactive before the update.
    """
    fraction = jnp.asarray(fraction, jnp.float32)
    out = []
    for m in masks:
        active = jnp.sum(m, dtype=_I32)
        k = jnp.floor(fraction * active.astype(jnp.float32)).astype(_I32)
        out.append(jnp.clip(k, 0, jnp.minimum(active, m.size - active)))
    return out


def magnitude_drop(
    masks: Sequence[jax.Array], params: Sequence[jax.Array], counts: Sequence[jax.Array]
) -> list[jax.Array]:
    """Per leaf, the ``counts[i]`` active entries of lowest ``|w|`` (``True`` = dropped)."""
    keys = [
        jnp.where(m, float_key(jnp.abs(jnp.asarray(p, jnp.float32)), None), _U32(KEY_EXCLUDED))
        for m, p in zip(masks, params, strict=True)
    ]
    return lowest(keys, counts)


def score_grow(
    masks: Sequence[jax.Array], scores: Sequence[jax.Array], counts: Sequence[jax.Array]
) -> list[jax.Array]:
    """Per leaf, the ``counts[i]`` inactive entries of highest score (``True`` = grown).

    Scores are compared as float32 (``-0.0`` ties with ``+0.0``; a NaN score is grown
    after every number). Entries active before the update, including those dropped
    by it, are never candidates.
    """
    keys = [
        jnp.where(m, _U32(KEY_EXCLUDED), float_key(-jnp.asarray(s, jnp.float32), None))
        for m, s in zip(masks, scores, strict=True)
    ]
    return lowest(keys, counts)


def random_grow(
    masks: Sequence[jax.Array], key: jax.Array, counts: Sequence[jax.Array]
) -> list[jax.Array]:
    """Per leaf, ``counts[i]`` inactive entries chosen uniformly at random (SET).

    Leaf ``i`` draws 31 random bits per entry from ``fold_in(key, i)`` and grows
    the candidates with the lowest draws (ties to the lower index): a function of
    the key only, the same eagerly, jitted and vmapped.
    """
    keys = []
    for i, m in enumerate(masks):
        bits = jax.random.bits(jax.random.fold_in(key, i), m.shape, _U32) >> _U32(1)
        keys.append(jnp.where(m, _U32(KEY_EXCLUDED), bits))
    return lowest(keys, counts)


def redistribute(
    total: jax.Array, weights: jax.Array, capacity: jax.Array
) -> jax.Array:
    """Integer growth counts ``g`` (``int32[L]``) with ``sum(g) == total`` and ``g <= capacity``.

    SNFS (Dettmers & Zettlemoyer 2019): layer ``l`` regrows the share
    ``weights[l] / sum(weights)`` of the ``total`` weights removed from all layers
    (its mean momentum magnitude). A layer whose share exceeds its ``capacity``
    (its inactive entries) gets exactly its capacity, and the excess is shared among
    the others in proportion again (water-filling, at most ``L`` rounds). The real
    shares are rounded down and the remainder handed out one by one in the order of
    their fractional parts (ties to the earlier layer), then any float32 shortfall or
    excess is settled in that order within the capacities, so the sum is exact
    whenever ``total <= sum(capacity)``. Zero weights everywhere: shares in
    proportion to the capacities.
    """
    total = jnp.asarray(total, _I32)
    capacity = jnp.asarray(capacity, _I32)
    cap_f = capacity.astype(jnp.float32)
    w = jnp.maximum(jnp.asarray(weights, jnp.float32), 0.0)
    w = jnp.where(jnp.isfinite(w), w, 0.0)
    w = jnp.where(jnp.sum(w) > 0, w, cap_f)
    w = jnp.where(capacity > 0, w, 0.0)
    num = capacity.shape[0]
    capped = capacity <= 0
    share = jnp.zeros(num, jnp.float32)
    for _ in range(num):
        rest = total.astype(jnp.float32) - jnp.sum(jnp.where(capped, cap_f, 0.0))
        free = jnp.sum(jnp.where(capped, 0.0, w))
        prop = jnp.where(free > 0, rest * w / jnp.where(free > 0, free, 1.0), 0.0)
        share = jnp.where(capped, cap_f, prop)
        capped = capped | (share >= cap_f)
    share = jnp.clip(share, 0.0, cap_f)
    base = jnp.minimum(jnp.floor(share).astype(_I32), capacity)
    # hand out (or take back) what rounding left, in the order of the fractional parts
    order = jnp.argsort(-(share - jnp.floor(share)), stable=True)
    rank = jnp.zeros(num, _I32).at[order].set(jnp.arange(num, dtype=_I32))
    missing = total - jnp.sum(base)
    spare = (capacity - base)[order]
    before = jnp.cumsum(spare) - spare
    add_sorted = jnp.clip(missing - before, 0, spare)
    taken = base[order[::-1]]
    before_take = jnp.cumsum(taken) - taken
    remove_sorted = jnp.clip(-missing - before_take, 0, taken)
    add = add_sorted[rank]
    remove = remove_sorted[num - 1 - rank]
    return base + jnp.where(missing > 0, add, 0) - jnp.where(missing < 0, remove, 0)


def mean_active_magnitude(masks: Sequence[jax.Array], values: Sequence[jax.Array]) -> jax.Array:
    """``float32[L]``: the mean ``|v|`` over each leaf's active entries (0 if none)."""
    out = []
    for m, v in zip(masks, values, strict=True):
        total = jnp.sum(jnp.where(m, jnp.abs(jnp.asarray(v, jnp.float32)), 0.0))
        out.append(total / jnp.maximum(jnp.sum(m, dtype=_I32), 1).astype(jnp.float32))
    return jnp.stack(out) if out else jnp.zeros(0, jnp.float32)


def rewire(
    masks: Sequence[jax.Array],
    params: Sequence[jax.Array],
    fraction: jax.Array,
    *,
    grow_scores: Sequence[jax.Array] | None = None,
    grow_key: jax.Array | None = None,
    redistribution: jax.Array | None = None,
) -> list[jax.Array]:
    """The masks after one update: drop by magnitude, grow by score or at random.

    Args:
      masks: the prunable leaves' current masks (full-shape ``bool``).
      params: their parameters (the drop ranks ``|w|``).
      fraction: the drop fraction of this update (``float32`` scalar).
      grow_scores: per leaf, the growth score (higher = grown first); or
      grow_key: a PRNG key for random growth (exactly one of the two).
      redistribution: ``float32[L]`` SNFS layer weights: the total dropped is
        regrown in proportion to them (:func:`redistribute`); ``None``: each
        layer regrows what it dropped.

    Returns:
      The new masks. Each layer keeps ``active - k`` of its active entries and
      grows ``k`` (or its redistributed count) among the inactive ones; the two
      sets never overlap.
    """
    if not masks:
        return []
    dropped_counts = drop_counts(masks, fraction)
    if redistribution is None:
        grow_counts = dropped_counts
    else:
        capacity = jnp.stack([m.size - jnp.sum(m, dtype=_I32) for m in masks])
        grow_counts = list(redistribute(sum(dropped_counts), redistribution, capacity))
    dropped = magnitude_drop(masks, params, dropped_counts)
    if grow_key is not None:
        grown = random_grow(masks, grow_key, grow_counts)
    else:
        grown = score_grow(masks, grow_scores, grow_counts)
    return [
        jnp.logical_or(jnp.logical_and(m, ~d), g) for m, d, g in zip(masks, dropped, grown, strict=True)
    ]
