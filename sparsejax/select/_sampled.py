"""The sampled search: a sorted sample brackets the threshold, one pass usually fixes it.

``search="sampled"`` (the default for global selection over ``2**22`` or more groups
on an accelerator): a sorted strided sample of about ``2**20`` keys brackets the
threshold; one pass per leaf counts the keys below the bracket and scatters the keys
inside it (about 0.4% of them) into a ``2**18``-bin histogram, which usually
fixes all 32 bits of the threshold; the mask is the second and last pass. On a single
NVIDIA GPU the scores are read only once (:mod:`~sparsejax.select._pallas`): the pass
also writes a provisional mask, right outside the bracket, and compacts the
in-bracket entries with their positions, so the threshold, the ties and the final
mask come from those few entries (with several devices the XLA passes run: they
shard). A bracket the sample misses is detected exactly and the radix passes take
over (on a GPU the kernel then rewrites the whole mask), so the mask is the same bit
for bit. Only the sample, per-leaf counts and the histograms cross devices. When
entries tied with the threshold must be split, the sampled search finds the last one
taken by its relative position over all leaves (one leaf: its flat position) with two
histogram reads (or from the compacted entries). The control flow is one
``lax.switch`` (one predicate read by the host on GPU) in the common case.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsejax.select._keys import flat_index, relative_position, relative_scale
from sparsejax.select._radix import KeyFn, RadixSearch, RadixState
from sparsejax.select._wide import Wide

__all__ = ["Source", "select_lowest_sampled"]

_U32 = jnp.uint32
_SAMPLE_LOG2 = 20  # about 2**20 keys sampled by the sampled search
_SAMPLE_Z = 6.0  # bracket half-width in binomial standard deviations of the sample rank
_HIST_LOG2 = 18  # bins of the sampled search's histogram pass
_FINE_LOG2 = 32 - _HIST_LOG2  # bins of the second histogram of a relative-position split

Source = tuple[jax.Array, "jax.Array | None"]  # float32 group scores, already-pruned flags


def _kernel_input(source: Source | None, pallas: bool) -> tuple[jax.Array, Any] | None:
    """Flat ``(scores, int8 flags or None)`` for the Pallas passes, or None (XLA path)."""
    from sparsejax.select._pallas import MAX_ENTRIES

    if not pallas or source is None or not 0 < source[0].size <= MAX_ENTRIES:
        return None
    g, already = source
    flags = None if already is None else already.reshape(-1).astype(jnp.int8)
    return g.reshape(-1), flags


def _histogram(rel: jax.Array, hit: jax.Array, nbins: int) -> jax.Array:
    """``(nbins,)`` uint32 counts of the uint32 bin indices ``rel`` where ``hit``.

    One scatter-add whose misses go out of range and are dropped, so only the
    hits touch the histogram (XLA fuses the index computation into it on GPU).
    """
    idx = jnp.where(hit & (rel < _U32(nbins)), rel, _U32(nbins)).astype(jnp.int32)
    return jnp.zeros(nbins, _U32).at[idx].add(_U32(1), mode="drop")


def _sample_bracket(
    key_fns: Sequence[KeyFn], sizes: Sequence[int], k: jax.Array, b: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Key bracket of the ``k``-th smallest key from a sorted strided sample.

    About ``2**20`` keys (every leaf with the same stride) are sorted; the
    bracket spans the sample ranks within ``_SAMPLE_Z`` binomial standard
    deviations of ``k``'s. It is given as ``2**_HIST_LOG2`` bins of width
    ``2**shift`` (``shift`` a multiple of ``b``, the smallest that covers the
    bracket) starting at bin ``first_bin``: the keys with ``first_bin <= key >>
    shift < first_bin + 2**_HIST_LOG2``. Returns uint32 ``(base, shift,
    first_bin)`` with ``base = first_bin << shift``.
    """
    n = sum(sizes)
    nbins = 2**_HIST_LOG2
    stride = max(1, n >> _SAMPLE_LOG2)
    zero = lax.optimization_barrier(jnp.zeros((), _U32))
    sample = jnp.sort(
        jnp.concatenate([fn(zero).reshape(-1)[stride // 2 :: stride] for fn in key_fns])
    )
    s = sample.shape[0]
    q = k.astype(jnp.float32) / n
    center = q * s
    margin = _SAMPLE_Z * jnp.sqrt(s * q * (1.0 - q)) + 2.0
    lo_rank = jnp.floor(center - margin).astype(jnp.int32)
    hi_rank = jnp.ceil(center + margin).astype(jnp.int32)
    lo = jnp.where(lo_rank < 0, _U32(0), sample[jnp.clip(lo_rank, 0, s - 1)])
    hi = jnp.where(hi_rank >= s, _U32(0xFFFFFFFF), sample[jnp.clip(hi_rank, 0, s - 1)])
    shifts = np.arange(0, 32, b, dtype=np.uint32)
    fits = jnp.stack([(hi >> _U32(sh)) - (lo >> _U32(sh)) < _U32(nbins) for sh in shifts])
    shift = jnp.min(jnp.where(fits, jnp.asarray(shifts), _U32(32 - b)))
    first_bin = lo >> shift
    return first_bin << shift, shift, first_bin


def _bin_of_kth(hist: jax.Array, start: jax.Array, k: jax.Array) -> jax.Array:
    """The bin ``d`` of the ``k``-th smallest entry: ``#{d' >= 1 : start + Σ hist[:d'] < k}``.

    ``hist`` is a ``(4**m,)`` uint32 histogram (total below ``2**32``; ``2**_HIST_LOG2``
    or ``2**_FINE_LOG2`` bins), ``start`` the entries below bin 0. Two levels of masked
    sums (rows of ``2**m`` bins), not a cumsum over all bins.
    """
    side = 2 ** ((hist.shape[0].bit_length() - 1) // 2)
    rows = hist.reshape(hist.shape[0] // side, side)
    earlier = np.tril(np.ones((side, side), bool), -1)  # [i, j]: j before i
    row_sums = jnp.sum(rows, 1, dtype=_U32)
    row_before = start + jnp.sum(jnp.where(earlier, row_sums[None, :], _U32(0)), 1, dtype=_U32)
    r = jnp.sum(row_before[1:] < k, dtype=jnp.int32)
    row = lax.dynamic_index_in_dim(rows, r, keepdims=False)
    in_row = jnp.sum(jnp.where(earlier, row[None, :], _U32(0)), axis=1, dtype=_U32)
    return r * side + jnp.sum(row_before[r] + in_row[1:] < k, dtype=jnp.int32)


def _bracket_state(
    start: jax.Array,
    total: jax.Array,
    per_leaf: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    overflow: jax.Array,
    k: jax.Array,
    base: jax.Array,
    shift: jax.Array,
    b: int,
) -> tuple[jax.Array, ...]:
    """Radix state from the counts below a bracket and inside its bins.

    ``start``: keys below ``base``; ``total``: ``(nbins,)`` histogram of the
    keys inside the bracket; ``per_leaf(d)``: per leaf, the keys below bin
    ``d`` and up to it; ``overflow``: the histograms miss keys. Prefix sums of
    the bins locate the bin ``d`` of the ``k``-th key: its top ``32 - shift``
    bits. That is the state the radix loop reaches after ``(32 - shift) / b``
    passes.

    Returns ``(valid, p, kbase, below, upto)``; ``valid`` is False when the
    bracket missed the ``k``-th key or the histograms are incomplete (the
    caller then starts the radix search from pass 0), so the result is exact
    whatever the sample.
    """
    d = _bin_of_kth(total, start, k)
    leaf_below, leaf_upto = per_leaf(d)
    valid = ((start < k) | (base == 0)) & (start + jnp.sum(total, dtype=_U32) >= k) & ~overflow
    kbase = base + (d.astype(_U32) << shift)
    p = ((32 - shift) // b).astype(jnp.int32)
    return valid, p, kbase, leaf_below, leaf_upto


def _sampled_start(
    key_fns: Sequence[KeyFn],
    sizes: Sequence[int],
    k: jax.Array,
    bits_per_pass: int,
) -> tuple[jax.Array, ...]:
    """Radix state after a sampled bracket and one XLA pass (one target, ``n < 2**32``).

    :func:`_sample_bracket`, then one pass over every leaf counts its keys
    below the bracket (a reduction) and scatters the keys inside it into the
    bracket's bins (only those keys touch the histogram), then
    :func:`_bracket_state`. Every op shards with the leaf: only the sample
    and the histograms cross devices.
    """
    b = bits_per_pass
    nbins = 2**_HIST_LOG2
    base, shift, first_bin = _sample_bracket(key_fns, sizes, k, b)
    below, hists = [], []
    zero = lax.optimization_barrier(jnp.ones((), _U32)) ^ _U32(1)
    for fn in key_fns:
        key = fn(zero).reshape(-1)
        below.append(jnp.sum(key < base, dtype=_U32))
        rel = (key >> shift) - first_bin  # wraps around below the bracket
        hists.append(_histogram(rel, jnp.ones((), bool), nbins))
    below = jnp.stack(below)
    hist = jnp.stack(hists)  # (L, nbins)

    def per_leaf(d):
        bins = lax.broadcasted_iota(jnp.int32, (1, nbins), 1)
        leaf_below = below + jnp.sum(jnp.where(bins < d, hist, _U32(0)), axis=1, dtype=_U32)
        return leaf_below, leaf_below + lax.dynamic_index_in_dim(hist, d, 1, keepdims=False)

    total = jnp.sum(hist, axis=0, dtype=_U32)
    start = jnp.sum(below, dtype=_U32)
    return _bracket_state(start, total, per_leaf, jnp.zeros((), bool), k, base, shift, b)


def _leaf_sums(values: Sequence[jax.Array], rows: np.ndarray) -> list[jax.Array]:
    """Per leaf, the uint32 sums of per-row ``(G,)`` values over its rows
    ``rows[i] <= g < rows[i + 1]``: one fusion of masked ``(L, G)`` sums."""
    g = lax.broadcasted_iota(jnp.int32, (rows.size - 1, values[0].shape[0]), 1)
    lo, hi = jnp.asarray(rows[:-1, None]), jnp.asarray(rows[1:, None])
    inside = (g >= lo) & (g < hi)
    return [jnp.sum(jnp.where(inside, v[None, :], _U32(0)), axis=1, dtype=_U32) for v in values]


def _bracket_passes(
    inputs: Sequence[tuple[jax.Array, Any]],
    key_fns: Sequence[KeyFn],
    sizes: Sequence[int],
    k: jax.Array,
    b: int,
) -> tuple[list[jax.Array], Any, np.ndarray, tuple[jax.Array, ...]]:
    """:func:`_sampled_start` with one Pallas :func:`~sparsejax.select._pallas.bracket_pass`
    per leaf (flat scores and flags ``inputs[i]``).

    The passes write provisional masks and flag the in-bracket entries; one
    :func:`~sparsejax.select._pallas.compact` per leaf gathers their keys
    and positions. The buffers hold all leaves, so the histogram and the per-leaf counts
    are a few XLA ops whatever the number of leaves. Returns the provisional
    masks, the compacted buffers, the first row of each leaf (and the total)
    and the radix state.
    """
    from sparsejax.select._pallas import TILE, bracket_pass, compact

    nbins = 2**_HIST_LOG2
    base, shift, first_bin = _sample_bracket(key_fns, sizes, k, b)
    rows = np.concatenate([[0], np.cumsum([-(-n // TILE) for n in sizes])])
    keeps, bits, comp = [], None, None
    for i, inp in enumerate(inputs):
        keep, bits = bracket_pass(
            *inp, base, shift, first_bin, nbins=nbins, into=bits, row0=int(rows[i]),
            rows_total=int(rows[-1]),
        )
        keeps.append(keep)
    for i, inp in enumerate(inputs):
        comp = compact(*inp, bits, row0=int(rows[i]), into=comp)
    filled = comp.filled
    rel = (comp.keys[:, :-1] >> shift) - first_bin
    total = _histogram(rel, filled, nbins)
    below = comp.below.astype(_U32)

    def per_leaf(d):
        d = d.astype(_U32)
        lt = jnp.sum(filled & (rel < d), axis=1, dtype=_U32)
        eq = jnp.sum(filled & (rel == d), axis=1, dtype=_U32)
        leaf_below, leaf_lt, leaf_eq = _leaf_sums([below, lt, eq], rows)
        return leaf_below + leaf_lt, leaf_below + leaf_lt + leaf_eq

    start = jnp.sum(below, dtype=_U32)
    state = _bracket_state(start, total, per_leaf, comp.overflow, k, base, shift, b)
    return keeps, comp, rows, state


def _compacted_tie_index(
    comp: Any, rows: np.ndarray, leaf: jax.Array, t: jax.Array, n: jax.Array
) -> jax.Array:
    """Flat index (uint32) of the ``n``-th entry (n >= 1) of leaf ``leaf`` whose key equals
    ``t``, from the compacted in-bracket entries of all leaves
    (:class:`~sparsejax.select._pallas.Compacted`, leaf ``i`` in rows ``rows[i]`` to
    ``rows[i + 1]``): all ties are there when ``t`` lies inside the bracket and no
    program overflowed."""
    g = lax.broadcasted_iota(jnp.int32, (comp.hits.shape[0], 1), 0)
    lo, hi = jnp.asarray(rows[:-1])[leaf], jnp.asarray(rows[1:])[leaf]
    ties = comp.filled & (comp.keys[:, :-1] == t) & (g >= lo) & (g < hi)
    before = jnp.cumsum(jnp.sum(ties, axis=1, dtype=_U32), dtype=_U32)  # ties up to row g
    r = jnp.sum(before < n, dtype=jnp.int32)
    done = jnp.where(r > 0, before[jnp.maximum(r - 1, 0)], _U32(0))
    row = lax.dynamic_index_in_dim(ties, r, keepdims=False)
    slot = jnp.sum(jnp.cumsum(row, dtype=_U32) < n - done, dtype=jnp.int32)
    return comp.positions[r, slot].astype(_U32)


def _tie_index(key_fn: KeyFn, size: int, t: jax.Array, n: jax.Array) -> jax.Array:
    """Flat index (uint32) of the ``n``-th entry of a leaf whose key equals ``t`` (n >= 1).

    Replaces the index passes of one global target, whose split lies in one
    leaf. One read histograms the flat positions of the leaf's tied entries
    into ``2**18`` bins of ``2**s`` positions; a second read histograms the
    ties of the bin holding the ``n``-th one by position (``2**s <= 2**14``
    bins). Scatters, not a slice of the leaf: a sharded leaf stays sharded
    and only histograms cross devices.
    """
    nbins = 2**_HIST_LOG2
    s = max(0, (size - 1).bit_length() - _HIST_LOG2)
    width = min(2**s, size)
    zero = lax.optimization_barrier(jnp.zeros((), _U32))
    key = key_fn(zero).reshape(-1)
    pos = flat_index((size,), zero)
    hist = _histogram(pos >> _U32(s), key == t, nbins)
    j = _bin_of_kth(hist, _U32(0), n)
    before = jnp.sum(jnp.where(jnp.arange(nbins) < j, hist, _U32(0)), dtype=_U32)
    first = j.astype(_U32) << _U32(s)
    zero = lax.optimization_barrier(zero)
    key = key_fn(zero).reshape(-1)
    rel = flat_index((size,), zero) - first  # wraps around below the bin
    ties = jnp.cumsum(_histogram(rel, key == t, width), dtype=_U32)
    return first + jnp.sum(ties < n - before, dtype=_U32)


def _relative_split(
    parts: Sequence[Callable[[jax.Array], tuple[jax.Array, jax.Array]]], r: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The relative position ``Q`` of the ``r``-th lowest hit (``r >= 1``), and the number
    of hits below ``Q``.

    ``parts``: functions ``zero -> (relative positions, hits)`` (uint32 and bool arrays of
    one shape), each read twice: a ``2**18``-bin histogram of the top 18 bits of the hits'
    positions finds the bin of the ``r``-th, a ``2**14``-bin histogram of the hits inside
    that bin its low 14 bits. Scatters of the hits only; fewer than ``2**32`` hits.
    """
    nbins, fine = 2**_HIST_LOG2, 2**_FINE_LOG2
    zero = lax.optimization_barrier(jnp.zeros((), _U32))
    hist = jnp.zeros(nbins, _U32)
    for part in parts:
        rel, hit = part(zero)
        hist = hist + _histogram((rel >> _U32(_FINE_LOG2)).reshape(-1), hit.reshape(-1), nbins)
    j = _bin_of_kth(hist, _U32(0), r)
    before = jnp.sum(jnp.where(jnp.arange(nbins) < j, hist, _U32(0)), dtype=_U32)
    first = j.astype(_U32) << _U32(_FINE_LOG2)
    zero = lax.optimization_barrier(zero)
    hist = jnp.zeros(fine, _U32)
    for part in parts:
        rel, hit = part(zero)
        hist = hist + _histogram((rel - first).reshape(-1), hit.reshape(-1), fine)  # wraps below
    d = _bin_of_kth(hist, before, r)
    below = before + jnp.sum(jnp.where(jnp.arange(fine) < d, hist, _U32(0)), dtype=_U32)
    return first + d.astype(_U32), below


def _relative_bounds(
    q: jax.Array, at_q: jax.Array, left: jax.Array, sizes: Sequence[int]
) -> jax.Array:
    """Per leaf, the flat-index bound of :func:`~sparsejax.select._keys.selected` that
    takes the tied entries at relative positions below ``q``, and at ``q`` itself those
    of the first ``left`` leaves that hold one there (``at_q``: ``(L,)`` bool)."""
    earlier = jnp.sum(
        jnp.where(np.tril(np.ones((len(sizes),) * 2, bool), -1), at_q[None, :], False),
        axis=1,
        dtype=_U32,
    )
    take = at_q & (earlier < left)
    scale = jnp.asarray([relative_scale(n) for n in sizes], _U32)
    ceil = q // scale + (q % scale != 0).astype(_U32)  # entry i is below q iff i < ceil(q/s)
    return jnp.where(take, q // scale + _U32(1), ceil)


def _relative_tie(
    key_fns: Sequence[KeyFn], sizes: Sequence[int], t: jax.Array, r: jax.Array
) -> jax.Array:
    """Flat-index bounds that take the ``r`` first entries of key ``t`` in (relative
    position, leaf) order, over all leaves: two histogram reads of every leaf
    (:func:`_relative_split`) and a third that finds the leaves with an entry at ``Q``
    itself. Scatters and reductions: sharded leaves stay sharded."""

    def part(i):
        def read(zero):
            key = key_fns[i](zero).reshape(-1)
            return relative_position((sizes[i],), zero), key == t

        return read

    parts = [part(i) for i in range(len(sizes))]
    q, below = _relative_split(parts, r)
    zero = lax.optimization_barrier(jnp.zeros((), _U32))
    at_q = []
    for read in parts:  # a reduction per leaf, not a gather: a sharded leaf stays sharded
        rel, hit = read(zero)
        at_q.append(jnp.any(hit & (rel == q)))
    return _relative_bounds(q, jnp.stack(at_q), r - below, sizes)


def _compacted_relative_tie(
    comp: Any, rows: np.ndarray, sizes: Sequence[int], t: jax.Array, r: jax.Array
) -> jax.Array:
    """:func:`_relative_tie` from the compacted in-bracket entries of the Pallas passes
    (all ties are there when ``t`` lies inside the bracket and no program overflowed):
    the scores are not read again."""
    row_leaf = np.repeat(np.arange(len(sizes)), np.diff(rows))
    row_scale = np.asarray([relative_scale(n) for n in sizes], np.uint32)[row_leaf]
    tied = comp.filled & (comp.keys[:, :-1] == t)
    rel = comp.positions[:, :-1].astype(_U32) * jnp.asarray(row_scale)[:, None]
    q, below = _relative_split([lambda zero: (rel + zero, tied)], r)
    per_row = jnp.sum(tied & (rel == q), axis=1, dtype=_U32)
    return _relative_bounds(q, _leaf_sums([per_row], rows)[0] > 0, r - below, sizes)


def select_lowest_sampled(
    key_fns: Sequence[KeyFn],
    target: Wide,
    bits_per_pass: int,
    sources: Sequence[Source | None] | None = None,
    pallas: bool = False,
) -> list[jax.Array]:
    """:func:`~sparsejax.select._radix.select_lowest` for one joint target, from a sample.

    Starts the radix search from :func:`_sampled_start` (fewer than ``2**32`` keys);
    one ``lax.switch`` then finishes: nothing left, ties split (by relative position
    over several leaves, :func:`_relative_tie`; by flat index in one leaf,
    :func:`_tie_index`), or the remaining radix passes (a missed bracket, or bins wider
    than one key). The masks are the radix search's, bit for bit.

    Args:
      key_fns: per leaf, a function ``(zero=None) -> uint32 keys``.
      target: the wide count ``k`` (shape ``(1,)``), at most the selectable keys.
      bits_per_pass: ``b``, a divisor of 32.
      sources: per leaf, the float32 group scores and already-pruned flags its
        keys come from (``None``: keys only through ``key_fns``).
      pallas: with a source for every leaf, read the scores once
        (NVIDIA GPUs): :func:`_bracket_passes` writes provisional masks, the
        ties come from its compacted entries (:func:`_compacted_relative_tie`,
        :func:`_compacted_tie_index`) and
        :func:`~sparsejax.select._pallas.finish_mask` fixes the masks.

    Returns:
      One bool array per leaf (the key's shape): ``True`` where selected.
    """
    search = RadixSearch(key_fns, True, target, bits_per_pass)
    num_leaves, b, k = search.num_leaves, bits_per_pass, target[1][0]
    init = search.initial_state()
    inputs = [_kernel_input(src, pallas) for src in (sources or [None] * num_leaves)]
    keeps = comp = rows = None
    if all(inp is not None for inp in inputs):
        keeps, comp, rows, first = _bracket_passes(inputs, key_fns, search.sizes, k, b)
    else:
        first = _sampled_start(key_fns, search.sizes, k, b)
    valid, p0, kbase0, below0, upto0 = first
    pick = functools.partial(jnp.where, valid)
    kb, bl, up = pick(kbase0, init.key_base), pick(below0, init.below), pick(upto0, init.upto)
    start = RadixState(pick(p0, 0), kb, bl, up, init.index_base, *search.split(kb, bl, up))
    done = valid & (p0 >= search.key_passes)
    if search.relative:
        # Several leaves: ties are split by relative position over all of them. One
        # switch: the threshold is fixed with nothing to split (branch 0), or with ties
        # to split (branch 1: two histogram reads, or the compacted entries), or radix
        # passes remain (a missed bracket, or bins wider than one key).
        t = kb[0]
        r = k - jnp.sum(start.below, dtype=_U32)

        def relative_tie():
            if keeps is None:
                bound = _relative_tie(key_fns, search.sizes, t, r)
            else:
                bound = _compacted_relative_tie(comp, rows, search.sizes, t, r)
            return search.per_leaf(kb), bound

        case = jnp.where(done, jnp.where(search.split_pending(start), 1, 0), 2)
        threshold, bound = lax.switch(
            case.astype(jnp.int32),
            [
                lambda: search.threshold_and_bound(start),
                relative_tie,
                lambda: search.threshold_and_bound(search.resume(start)),
            ],
        )
        return _finish(search, threshold, bound, keeps, inputs, comp, rows, valid)
    # One leaf. One switch, so one predicate read by the host: the threshold is fixed
    # (branch 0), or fixed with ties to split (the tie branch), or radix passes remain
    # (a missed bracket, or bins wider than one key: the last branch).
    j = jnp.argmax(start.partial).astype(jnp.int32)

    def tie(i):
        # The split leaf i: static for the XLA passes, which re-read it; dynamic (one
        # branch) for the compacted entries of the Pallas passes.
        t = search.per_leaf(kb)[i]
        if keeps is None:
            at = _tie_index(key_fns[i], search.sizes[i], t, start.need[i])
        else:
            at = _compacted_tie_index(comp, rows, i, t, start.need[i])
        return start._replace(index_base=jnp.where(jnp.arange(num_leaves) == i, at, _U32(0)))

    if keeps is None:
        ties = [functools.partial(tie, i) for i in range(num_leaves)]
        tied = 1 + j
    else:
        ties = [functools.partial(tie, j)]
        tied = jnp.int32(1)
    case = jnp.where(done, jnp.where(jnp.any(start.partial), tied, 0), len(ties) + 1)
    state = lax.switch(case, [lambda: start, *ties, lambda: search.resume(start)])
    threshold, bound = search.threshold_and_bound(state)
    return _finish(search, threshold, bound, keeps, inputs, comp, rows, valid)


def _finish(
    search: RadixSearch,
    threshold: jax.Array,
    bound: jax.Array,
    keeps: list[jax.Array] | None,
    inputs: Sequence[Any],
    comp: Any,
    rows: np.ndarray | None,
    valid: jax.Array,
) -> list[jax.Array]:
    """The masks from the per-leaf threshold keys and flat-index bounds: by the XLA
    masks pass, or (Pallas passes) by fixing the provisional masks."""
    if keeps is None:
        return search.masks(threshold, bound)
    from sparsejax.select._pallas import finish_mask

    # The provisional masks need only their in-bracket entries fixed when the bracket
    # held the threshold (``valid``); otherwise the kernels recompute them. Returned
    # negated: the caller's ``~`` cancels it (XLA folds the double not).
    return [
        ~finish_mask(*inputs[i], keeps[i], comp, int(rows[i]), threshold[i], bound[i], valid)
        .reshape(search.shapes[i])
        for i in range(search.num_leaves)
    ]
