"""The radix search: the ``k`` lowest keys by counting passes, with no sort of all parameters.

Global (and layerwise) selection finds the ``k``-th smallest score by a radix search
on the float32 bit pattern mapped to a monotonic ``uint32`` key
(:func:`~sparsejax.select._keys.float_key`): each pass counts, leaf by leaf, how many
keys lie below ``2**b - 1`` candidate thresholds (``b = bits_per_pass``), fixing ``b``
bits of the threshold; when entries equal to the threshold must be split, further
passes of the same loop fix the position of the last pruned one: its flat index in
each leaf (layer scope) or its relative position over all leaves (global scope,
:func:`~sparsejax.select._keys.relative_position`). Nothing is concatenated, sorted or
gathered; only per-leaf counts (a few integers) cross devices, so sharded parameters
stay sharded. Counts are exact beyond ``2**32`` (two ``uint32`` words,
:mod:`~sparsejax.select._wide`), while x64 stays off. Compile time grows with the
number of prunable leaves (a few reductions each); run time with the number of entries
times ``32 / b``, plus the index passes when tied entries must be split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsejax.select._keys import (
    KEY_EXCLUDED,
    KEY_PRUNED,
    flat_index,
    relative_position,
    relative_scale,
    selected,
)
from sparsejax.select._wide import (
    Wide,
    exclusive_wide_cumsum,
    wide_from_u32,
    wide_lt,
    wide_sub,
    wide_sum,
    wide_where,
)

__all__ = ["RadixSearch", "RadixState", "count_below", "default_bits_per_pass", "select_lowest"]

_U32 = jnp.uint32

KeyFn = Callable[..., jax.Array]  # (zero=None) -> a leaf's uint32 keys


def default_bits_per_pass() -> int:
    """Threshold bits fixed per counting pass: ``2**b - 1`` counts per leaf and pass.

    2 on every backend: 16 passes, each one variadic reduction per leaf that
    yields 3 counts from one read of the scores. (With ``b = 1`` XLA:CPU
    lowers the single count to a plain reduction that materializes its
    predicate, which is slower; ``b = 4`` halves the reads again at
    five times the compares per entry.) Only speed depends on it;
    ``benchmarks/global_selection.py --bits-per-pass 1 2 4``
    measures the alternatives on a device.

    Example:
      >>> default_bits_per_pass()
      2
    """
    return 2


def count_below(
    key: jax.Array,
    key_cands: jax.Array,
    idx_cands: jax.Array,
    take_equal: jax.Array,
    split_equal: jax.Array,
    zero: jax.Array,
    relative: bool = False,
) -> jax.Array:
    """Per candidate ``j``, how many entries precede ``(key_cands[j], idx_cands[j])``.

    An entry precedes a candidate if its key is smaller, or its key is equal and
    ``take_equal`` (a scalar: all equal entries of this leaf come first), or its
    key is equal, ``split_equal`` and its flat index (with ``relative``: its
    relative position, :func:`~sparsejax.select._keys.relative_position`) is
    smaller. All ``C`` counts come from one variadic reduction, so the leaf is
    read once per pass whatever ``C`` (separate sibling reductions may each
    re-read it; a ``(..., C)`` broadcast is materialized by XLA:CPU). ``zero`` is a
    loop-variant 0. Returns ``(C,)`` uint32.
    """
    idx = relative_position(key.shape, zero) if relative else flat_index(key.shape, zero)
    preds = []
    for j in range(key_cands.shape[0]):
        kc, ic = key_cands[j], idx_cands[j]
        before = (key < kc) | ((key == kc) & (take_equal | (split_equal & (idx < ic))))
        preds.append(before.astype(_U32))
    counts = lax.reduce(
        tuple(preds),
        tuple(_U32(0) for _ in preds),
        lambda a, b: tuple(x + y for x, y in zip(a, b)),
        tuple(range(key.ndim)),
    )
    return jnp.stack(counts)


class RadixState(NamedTuple):
    """Loop state of the radix search over ``L`` leaves and ``T`` targets (1 joint or ``L``).

    Attributes:
      passes: ``()`` int32, passes done (the ``32 / b`` key passes, then index passes).
      key_base: ``(T,)`` uint32, the threshold key with the bits fixed so far.
      below: ``(L,)`` uint32, per leaf, the keys below the threshold.
      upto: ``(L,)`` uint32, per leaf, the keys up to and including the threshold.
      index_base: ``(L,)`` uint32, the flat index bits of the last entry taken at the
        threshold fixed so far (index passes).
      need: ``(L,)`` uint32, per leaf, the entries to take at the threshold.
      partial: ``(L,)`` bool, ``0 < need < upto - below``: the leaf holds a split.
    """

    passes: jax.Array
    key_base: jax.Array
    below: jax.Array
    upto: jax.Array
    index_base: jax.Array
    need: jax.Array
    partial: jax.Array


class RadixSearch:
    """The passes of the radix search for the ``target`` lowest keys of some leaves.

    The search finds the ``k``-th smallest of the composite order ``(key, relative
    position, leaf)`` (one leaf: ``(key, flat index)``) and only counts. Passes
    1..32/b fix the threshold key ``T``, ``b`` bits at a time: each pass counts, per
    leaf, the keys below ``2**b - 1`` candidate thresholds. If the entries with key
    ``T`` must be split (some pruned, some kept), further passes fix, ``b`` bits at a
    time, the flat index of the last pruned entry of each leaf (one target per leaf)
    or, for one target over several leaves, the relative position ``Q`` of the last
    pruned entry over all of them (:func:`~sparsejax.select._keys.relative_position`;
    at ``Q`` itself, at most one entry per leaf, the earlier leaves go first). Every
    pass is one variadic reduction per leaf (:func:`count_below`: ``2**b - 1`` counts
    from one read of the scores).

    Built while tracing; :func:`select_lowest` runs all passes, the sampled search
    (:mod:`~sparsejax.select._sampled`) starts them from a later state.

    Args:
      key_fns: per leaf, a function ``(zero=None) -> uint32 keys`` (see
        :func:`~sparsejax.select._keys.float_key` for ``zero``).
      joint: one target over all leaves (``target`` of shape ``(1,)``; ties across
        leaves go to the lower relative position, then to the earlier leaf) or one
        target per leaf (``(L,)``).
      target: wide count(s) ``k``, at most the number of selectable keys.
      bits_per_pass: ``b``, a divisor of 32.
    """

    def __init__(
        self, key_fns: Sequence[KeyFn], joint: bool, target: Wide, bits_per_pass: int
    ) -> None:
        self.key_fns = list(key_fns)
        self.joint = joint
        self.target = target
        self.bits = bits_per_pass
        self.num_leaves = len(self.key_fns)
        self.shapes = [tuple(fn().shape) for fn in self.key_fns]
        self.sizes = [math.prod(sh) for sh in self.shapes]
        self.key_passes = 32 // bits_per_pass
        # One target over several leaves splits ties by relative position (32 bits);
        # otherwise each leaf by its flat index.
        self.relative = joint and self.num_leaves > 1
        if self.relative:
            self.index_passes = 32 // bits_per_pass
        else:
            self.index_passes = -(-max(max(self.sizes) - 1, 0).bit_length() // bits_per_pass)
        self._steps = jnp.arange(1, 2**bits_per_pass, dtype=_U32)

    def per_leaf(self, v: jax.Array) -> jax.Array:
        """A per-target vector as a per-leaf vector."""
        return jnp.broadcast_to(v, (self.num_leaves,)) if self.joint else v

    def split(self, kbase: jax.Array, below: jax.Array, upto: jax.Array):
        """Entries to take at the threshold, per leaf: ``(need, partial)``."""
        k_hi, k_lo = self.target
        equal = upto - below
        if self.joint:
            remaining = wide_sub((k_hi[0], k_lo[0]), wide_sum(below))
            offset = exclusive_wide_cumsum(equal)
        else:
            remaining = wide_sub(self.target, wide_from_u32(below))
            offset = wide_from_u32(jnp.zeros_like(equal))
        short = wide_lt(remaining, offset)
        left = wide_sub(remaining, wide_where(short, remaining, offset))
        need = jnp.where(wide_lt(left, wide_from_u32(equal)), left[1], equal)
        # Threshold 0 is the class of groups the existing mask prunes: all stay pruned.
        need = jnp.where(self.per_leaf(kbase) == _U32(KEY_PRUNED), equal, need)
        partial = (need > 0) & (need < equal)
        return need, partial

    def initial_state(self) -> RadixState:
        """The state before the first pass: nothing fixed, every key below the top."""
        n = self.num_leaves
        return RadixState(
            jnp.zeros((), jnp.int32),
            jnp.zeros(self.target[1].shape, _U32),
            jnp.zeros(n, _U32),
            jnp.asarray(np.asarray(self.sizes, np.uint32)),
            jnp.zeros(n, _U32),
            jnp.zeros(n, _U32),
            jnp.zeros(n, bool),
        )

    def _count_pass(self, state: RadixState) -> RadixState:
        b, num_leaves, joint = self.bits, self.num_leaves, self.joint
        k_hi, k_lo = self.target
        idx_top = self.index_passes * b
        p, kbase, below, upto, ibase, need, partial = state
        in_key = p < self.key_passes
        take_all = (need == upto - below) & (need > 0)
        krem = jnp.clip(32 - b * (p + 1), 0, 31).astype(_U32)
        irem = jnp.clip(idx_top - b * (p - self.key_passes + 1), 0, 31).astype(_U32)
        steps = self._steps
        kc = jnp.where(in_key, kbase[:, None] + (steps[None, :] << krem), kbase[:, None])
        ic = ibase[:, None] + (steps[None, :] << irem)  # (L, C)
        if self.relative:
            # Index passes of one target over several leaves: every leaf counts its entries
            # at the threshold key below each candidate relative position.
            take_equal = jnp.zeros(num_leaves, bool)
            split_equal = jnp.broadcast_to(~in_key, (num_leaves,))
        else:
            take_equal = ~in_key & take_all & ~partial
            split_equal = ~in_key & partial
        # A loop-variant zero that XLA cannot fold: keeps the flat index inside the counting
        # fusion instead of hoisting it into a materialized (4 bytes per entry) array.
        pu = p.astype(_U32)
        zero = lax.optimization_barrier(pu) ^ pu

        def count(i):
            return count_below(
                self.key_fns[i](zero),
                kc[0 if joint else i],
                ic[i],
                take_equal[i],
                split_equal[i],
                zero,
                relative=self.relative,
            )

        counts = jnp.stack([count(i) for i in range(num_leaves)])
        if joint:
            tot_hi, tot_lo = wide_sum(counts, axis=0)
            tot = (tot_hi[None, :], tot_lo[None, :])
        else:
            tot = wide_from_u32(counts)
        digit = jnp.sum(wide_lt(tot, (k_hi[:, None], k_lo[:, None])), axis=1, dtype=jnp.int32)
        # Key passes: refine the threshold key and the per-leaf counts below / up to it.
        d = self.per_leaf(digit)[:, None]
        ext = jnp.concatenate([below[:, None], counts, upto[:, None]], axis=1)
        new_below = jnp.take_along_axis(ext, d, axis=1)[:, 0]
        new_upto = jnp.take_along_axis(ext, d + 1, axis=1)[:, 0]
        kbase = jnp.where(in_key, kbase + (digit.astype(_U32) << krem), kbase)
        # Relative index passes also narrow the per-leaf counts to the position bracket.
        refine = in_key | self.relative
        below = jnp.where(refine, new_below, below)
        upto = jnp.where(refine, new_upto, upto)
        # Index passes: refine the flat index (relative position) of the last entry taken
        # at the threshold.
        ibase = jnp.where(in_key, ibase, ibase + (self.per_leaf(digit).astype(_U32) << irem))
        return RadixState(p + 1, kbase, below, upto, ibase, *self.split(kbase, below, upto))

    def key_pass(self, state: RadixState) -> RadixState:
        """One pass that fixes ``b`` more bits of the threshold key."""
        return self._count_pass(state)

    def index_pass(self, state: RadixState) -> RadixState:
        """One pass that fixes ``b`` more bits of the flat index (relative position) of
        the split."""
        return self._count_pass(state)

    def split_pending(self, state: RadixState) -> jax.Array:
        """Whether the entries at the threshold (inside the current position bracket) are
        partly taken: for one target over several leaves, ``0 < remaining < tied``; else
        whether some leaf holds a split."""
        if not self.relative:
            return jnp.any(state.partial)
        k_hi, k_lo = self.target
        remaining = wide_sub((k_hi[0], k_lo[0]), wide_sum(state.below))
        tied = wide_sum(state.upto - state.below)
        nothing = (jnp.zeros((), _U32), jnp.zeros((), _U32))
        return (
            (state.key_base[0] != _U32(KEY_PRUNED))
            & wide_lt(nothing, remaining)
            & wide_lt(remaining, tied)
        )

    def more_index_passes(self, state: RadixState) -> jax.Array:
        """Whether a split is left to resolve (the ``while_loop`` predicate)."""
        more = state.passes < self.key_passes + self.index_passes
        return more & self.split_pending(state)

    def run(self) -> RadixState:
        """All passes from :meth:`initial_state`.

        The key passes always run: a loop with a static trip count, which XLA:GPU runs
        without reading a predicate back to the host (a ``while_loop`` stalls the host
        once per pass: 16 syncs per selection, most of the cost of a mask update on a
        small model). The index passes run in a ``while_loop`` only when a split is
        needed: one predicate read when none is.
        """
        state = lax.fori_loop(
            0, self.key_passes, lambda _, st: self.key_pass(st), self.initial_state()
        )
        return lax.while_loop(self.more_index_passes, self.index_pass, state)

    def resume(self, state: RadixState) -> RadixState:
        """The passes left after ``state`` (``while_loop`` s: the start is traced)."""
        state = lax.while_loop(lambda st: st.passes < self.key_passes, self.key_pass, state)
        return lax.while_loop(self.more_index_passes, self.index_pass, state)

    def threshold_and_bound(self, state: RadixState) -> tuple[jax.Array, jax.Array]:
        """Per leaf, the threshold key and the flat-index bound of :func:`~sparsejax.select._keys.selected`."""
        if self.relative:
            return self.per_leaf(state.key_base), self._relative_bound(state)
        bound = jnp.where(
            state.partial,
            state.index_base + _U32(1),
            jnp.where(state.need == 0, _U32(0), _U32(KEY_EXCLUDED)),
        )
        return self.per_leaf(state.key_base), bound

    def _relative_bound(self, state: RadixState) -> jax.Array:
        """Flat-index bounds from the relative-position bracket ``[Q, Q + w)`` the index
        passes stopped at (``w = 2**(32 - b·passes)``): a leaf that takes its tied entries
        inside the bracket takes those at positions below ``Q + w``, the others those
        below ``Q``. Entry ``i`` is at ``i·s < B`` exactly when ``i < ceil(B / s)``."""
        q = state.index_base  # (L,), the same for every leaf
        rem = 32 - self.bits * (state.passes - self.key_passes)  # bits left unfixed
        width = jnp.where(rem >= 32, _U32(0), _U32(1) << jnp.clip(rem, 0, 31).astype(_U32))
        take = state.need > 0
        full = take & ((rem >= 32) | (q >= _U32(0) - width))  # Q + w reaches 2**32
        upper = jnp.where(take, q + width, q)
        scale = jnp.asarray([relative_scale(n) for n in self.sizes], _U32)
        ceil = upper // scale + (upper % scale != 0).astype(_U32)
        return jnp.where(full, _U32(KEY_EXCLUDED), ceil)

    def masks(self, threshold: jax.Array, bound: jax.Array) -> list[jax.Array]:
        """Per leaf, the bool array of the selected keys (the key's shape)."""
        zero = lax.optimization_barrier(jnp.zeros((), _U32))
        out = []
        for i, fn in enumerate(self.key_fns):
            key = fn(zero)
            out.append(selected(key, flat_index(key.shape), threshold[i], bound[i]))
        return out


def select_lowest(
    key_fns: Sequence[KeyFn], joint: bool, target: Wide, bits_per_pass: int
) -> list[jax.Array]:
    """Per leaf, a bool array marking the ``target`` lowest keys; ties go to lower
    (relative) positions.

    The ``32 / b`` key passes run in a ``fori_loop`` of static trip count, the index
    passes in a ``while_loop`` only when a split is needed (:meth:`RadixSearch.run`).

    Args:
      key_fns: per leaf, a function ``(zero=None) -> uint32 keys``.
      joint: one target over all leaves (``target`` of shape ``(1,)``; ties go to the
        lower relative position, then the earlier leaf) or one target per leaf (``(L,)``).
      target: wide count(s) ``k``, at most the number of selectable keys.
      bits_per_pass: ``b``, a divisor of 32.

    Returns:
      One bool array per leaf (the key's shape): ``True`` where selected.
    """
    search = RadixSearch(key_fns, joint, target, bits_per_pass)
    return search.masks(*search.threshold_and_bound(search.run()))
