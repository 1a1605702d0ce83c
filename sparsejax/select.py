"""Scores → mask: layerwise or global selection with exact counts and any structure.

:func:`prune` turns an importance-score pytree into a mask pytree (see
:mod:`sparsejax.masks` for the mask convention). Low scores are pruned.

**What "sparsity" counts.** For every structure and scope, sparsity is a
fraction of *groups* (:mod:`sparsejax.structures`): single entries for
``Unstructured``/``NM``, output units for ``Neurons``, tiles for ``Blocks``,
whole leaves for ``Layers``. With ``scope="layer"`` a layer with ``n`` groups
loses exactly ``round(s·n)`` of them; with ``scope="global"`` exactly
``round(s·n)`` of the ``n`` groups of all prunable leaves together are pruned,
every group counting once whatever its size (global ``Neurons`` pruning at
``s=0.5`` removes half of all neurons; global ``Layers`` pruning removes half
of the prunable leaves). Groups are ranked by their (reduced) score; ties are
broken by position: the group with the lower flat index inside its leaf, and
for equal positions the leaf that comes first in ``jax.tree.leaves`` order, is
pruned first. NaN scores rank *above* every number (never pruned before a real
score; the order of ``numpy.sort``), and ``-0.0`` ties with ``+0.0``.

**Rounding.** ``round`` is round-half-to-even, evaluated exactly for the value
given: a Python ``float`` sparsity gives ``round(s * n)`` exactly as Python
computes it; a jax/numpy array sparsity (possibly traced under ``jit``) gives
the exact round-half-even of ``float32(s) · n``, equal to Python's
``round(float(s) * n)`` (for ``n < 2**29``, where that product is exact). So
``jit(prune)`` with a traced sparsity and eager ``prune`` with the same array
agree bit for bit.

**Cumulative pruning.** With an existing ``mask``, groups it prunes completely
get the lowest possible rank: they stay pruned and count toward the target.
If they already exceed the target, the mask is returned unchanged (masks
only shrink). Entries the existing mask prunes inside groups that are not
completely pruned stay pruned too, on top of the count (the result is always
``new_mask & mask``).

**No sort of all parameters.** Global (and layerwise) selection finds the
``k``-th smallest score by a radix search on the float32 bit pattern mapped to
a monotonic ``uint32`` key: each pass counts, leaf by leaf, how many keys lie
below ``2**b - 1`` candidate thresholds (``b = bits_per_pass``), fixing ``b``
bits of the threshold; when entries equal to the threshold must be split,
further passes of the same loop fix the flat index of the last pruned one in
the leaf that holds the split. Nothing is concatenated, sorted or gathered;
only per-leaf counts (a few integers) cross devices, so sharded parameters
stay sharded. Counts are exact beyond ``2**32`` (two ``uint32`` words), while
x64 stays off. Compile time grows with the number of prunable leaves (a few
reductions each); run time with the number of entries times ``32 / b``.

**Small models on an accelerator** (``search="sort"``, the default for at most
``2**20`` groups on a single accelerator): the keys are stably sorted with
their positions, one sort per target, and the ``k`` first are selected: one
kernel instead of 16 counting passes over every leaf. On an H100 a mask-update
step of a 318k-parameter MLP (65 µs without the update) took 0.335 / 0.384 ms
with the passes and 0.214 / 0.169 ms with the sort (layer / global). With more
than two leaves, layer scope sorts all leaves twice (by key, then stably by
leaf) instead of once per leaf: a ResNet-20 update step went from 3.39 to
2.58 ms (2.31 ms without the update). The keys are the radix search's, so the
masks are the same bit for bit.

**Sampled search** (``search="sampled"``, the default for global selection
over ``2**22`` or more groups on an accelerator): a sorted strided sample of
about ``2**20`` keys brackets the threshold; one pass per leaf counts the keys
below the bracket and scatters the keys inside it (about 0.4% of them) into a
``2**18``-bin histogram, which usually fixes all 32 bits of the threshold; the
mask is the second and last pass. On a single NVIDIA GPU the scores are read
only once (:mod:`sparsejax.kernels.selection`): the pass also writes a
provisional mask, right outside the bracket, and compacts the in-bracket
entries with their positions, so the threshold, the ties and the final mask
come from those few entries (with several devices the XLA passes run: they
shard). A bracket the sample misses is detected exactly and the radix passes
take over (on a GPU the kernel then rewrites the whole mask), so the mask is
the same bit for bit. Only the sample, per-leaf counts and the histograms
cross devices. When entries tied with the threshold must be split, the
sampled search finds the last one taken with two histogram reads (by flat
position) of the leaf that holds the split (or from the compacted entries);
the radix search's index passes for one global target also read only that
leaf. The sampled search's control flow is one ``lax.switch`` (one predicate
read by the host on GPU) in the common case.

References:
  Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All Tickets
  Winners", ICML 2020 (ERK distribution).
  Zhu & Gupta. "To prune, or not to prune", 2017 (layerwise magnitude pruning).
  Frankle & Carbin. "The Lottery Ticket Hypothesis", ICLR 2019 (global pruning).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsejax._platform import target_device_count, target_platform
from sparsejax.masks import validate_mask
from sparsejax.structures import NM, REDUCTIONS, Structure, Unstructured
from sparsejax.tree import (
    Prunable,
    PyTree,
    check_same_structure,
    named_leaves,
    prunable_tree,
)

__all__ = [
    "DISTRIBUTIONS",
    "SCOPES",
    "SEARCHES",
    "default_bits_per_pass",
    "erk_sparsities",
    "prune",
]

SCOPES: tuple[str, ...] = ("layer", "global")
DISTRIBUTIONS: tuple[str, ...] = ("uniform", "erk")
NORMALIZATIONS: tuple[str, ...] = ("l1", "l2", "max", "mean")

_U32 = jnp.uint32
_KEY_PRUNED = 0  # already pruned by the existing mask: below every real score
_KEY_NAN = 0xFFFFFFFE  # above +inf
_KEY_EXCLUDED = 0xFFFFFFFF  # never selectable (N:M non-candidates)
_MAX_GROUPS_PER_LEAF = 2**32 - 2  # per-leaf counts and flat indices are uint32
_MAX_LEAVES = 2**16 - 1  # 16-bit halves of uint32 counts summed in uint32
_NM_TOLERANCE = 1e-6  # float32 slack when comparing a sparsity with 1 - n/m
SEARCHES: tuple[str, ...] = ("auto", "radix", "sampled", "sort")
_SAMPLE_LOG2 = 20  # about 2**20 keys sampled by the sampled search
_SAMPLE_Z = 6.0  # bracket half-width in binomial standard deviations of the sample rank
_HIST_LOG2 = 18  # bins of the sampled search's histogram pass
_SORT_MAX = 2**20  # search="auto" sorts up to this many groups on one accelerator
_SAMPLED_MIN = 2**22  # search="auto" samples from this many selectable groups on

Wide = tuple[jax.Array, jax.Array]  # (hi, lo) uint32 words of a count < 2**64


def _sampling_pays() -> bool:
    """Whether ``search="auto"`` may sample: not on XLA:CPU, where the scatter of the
    histogram pass materializes its indices and the radix passes are faster (10M
    scores on 2 cores: 97 ms sampled, 40 ms radix)."""
    return target_platform() != "cpu"


def _sorting_pays(total_groups: int) -> bool:
    """Whether ``search="auto"`` sorts: at most ``_SORT_MAX`` groups on a single
    accelerator, where one sort of so few keys costs less than the radix search's 16
    counting passes (see the module docstring). Not on XLA:CPU, where the passes are
    cheaper than a sort, and not with several devices, where a sort would gather
    sharded scores."""
    return total_groups <= _SORT_MAX and _sampling_pays() and target_device_count() == 1


def _pallas_passes() -> bool:
    """Whether the sampled search reads the scores once with the Pallas kernels of
    :mod:`sparsejax.kernels.selection`: on a single NVIDIA GPU. With several
    devices the XLA passes run instead: XLA cannot partition a Pallas call, so
    a sharded leaf would be gathered onto one device."""
    from sparsejax.kernels.block_sparse import default_backend

    return default_backend() == "pallas" and target_device_count() == 1


Source = tuple[jax.Array, "jax.Array | None"]  # float32 group scores, already-pruned flags


def _kernel_input(source: Source | None, pallas: bool) -> tuple[jax.Array, Any] | None:
    """Flat ``(scores, int8 flags or None)`` for the Pallas passes, or None (XLA path)."""
    from sparsejax.kernels.selection import MAX_ENTRIES

    if not pallas or source is None or not 0 < source[0].size <= MAX_ENTRIES:
        return None
    g, already = source
    flags = None if already is None else already.reshape(-1).astype(jnp.int8)
    return g.reshape(-1), flags


def default_bits_per_pass() -> int:
    """Threshold bits fixed per counting pass: ``2**b - 1`` counts per leaf and pass.

    2 on every backend: 16 passes, each one variadic reduction per leaf that
    yields 3 counts from one read of the scores. (With ``b = 1`` XLA:CPU
    lowers the single count to a plain reduction that materializes its
    predicate and runs about 3x slower; ``b = 4`` halves the reads again at
    five times the compares per entry.) Only speed depends on it;
    ``benchmarks/global_selection.py --bits-per-pass 1 2 4``
    measures the alternatives on a device.
    """
    return 2


# --------------------------------------------------------------------------- #
# Exact wide counts in uint32 pairs (x64 is off).
# --------------------------------------------------------------------------- #


def _wide(v: int) -> Wide:
    return jnp.asarray(v >> 32, _U32), jnp.asarray(v & 0xFFFFFFFF, _U32)


def _wide_u32(c: jax.Array) -> Wide:
    return jnp.zeros_like(c), c


def _wide_sum(c: jax.Array, axis: int = 0) -> Wide:
    """Exact sum of uint32 counts along ``axis`` (fewer than 2**16 terms)."""
    lo16 = jnp.sum(c & _U32(0xFFFF), axis=axis, dtype=_U32)
    hi16 = jnp.sum(c >> 16, axis=axis, dtype=_U32)
    lo = lo16 + (hi16 << 16)
    return (hi16 >> 16) + (lo < lo16).astype(_U32), lo


def _wide_add(a: Wide, b: Wide) -> Wide:
    lo = a[1] + b[1]
    return a[0] + b[0] + (lo < a[1]).astype(_U32), lo


def _wide_sub(a: Wide, b: Wide) -> Wide:
    """``a - b`` for ``a >= b``."""
    return a[0] - b[0] - (a[1] < b[1]).astype(_U32), a[1] - b[1]


def _wide_lt(a: Wide, b: Wide) -> jax.Array:
    return (a[0] < b[0]) | ((a[0] == b[0]) & (a[1] < b[1]))


def _wide_where(c: jax.Array, a: Wide, b: Wide) -> Wide:
    return jnp.where(c, a[0], b[0]), jnp.where(c, a[1], b[1])


def _round_mul(s: jax.Array, n: Sequence[int]) -> Wide:
    """Exact round-half-even of ``float32(s[i]) * n[i]`` for ``n[i] < 2**48`` (s clipped to [0, 1]).

    Vectorized over ``i``: ``s`` has shape ``(S,)`` and ``n`` is a static
    sequence of ``S`` Python ints. ``s = M · 2**-shift`` with a 24-bit integer
    ``M``; the product ``M · n`` is formed in 16-bit limbs, then shifted and
    rounded bit by bit.
    """
    s = jnp.asarray(s, jnp.float32)
    s = jnp.where(s > 0, jnp.minimum(s, 1.0), 0.0)  # NaN and -0.0 -> +0.0
    bits = lax.bitcast_convert_type(s, _U32)
    e = (bits >> 23).astype(jnp.int32)
    f = bits & _U32(0x7FFFFF)
    m = jnp.where(e == 0, f, f | _U32(0x800000))
    shift = jnp.where(e == 0, 149, 150 - e)
    num_limbs = max(1, -(-max(n).bit_length() // 16))
    n_limbs = jnp.asarray([[(v >> (16 * j)) & 0xFFFF for j in range(num_limbs)] for v in n], _U32)
    m_limbs = [m & _U32(0xFFFF), m >> 16]
    acc = [jnp.zeros(s.shape, _U32) for _ in range(num_limbs + 2)]
    for i, mi in enumerate(m_limbs):
        for j in range(num_limbs):
            prod = mi * n_limbs[:, j]
            acc[i + j] = acc[i + j] + (prod & _U32(0xFFFF))
            acc[i + j + 1] = acc[i + j + 1] + (prod >> 16)
    for t in range(len(acc) - 1):
        acc[t + 1] = acc[t + 1] + (acc[t] >> 16)
        acc[t] = acc[t] & _U32(0xFFFF)
    limbs = jnp.stack(acc, axis=1)  # (S, A) 16-bit limbs, least significant first
    nbits = 16 * len(acc)
    shifts = jnp.arange(16, dtype=_U32).reshape(1, 1, 16)
    pbits = ((limbs[:, :, None] >> shifts) & _U32(1)).reshape(s.shape[0], nbits)
    rel = jnp.arange(nbits, dtype=jnp.int32)[None, :] - shift[:, None]

    def gather_bits(lo: int) -> jax.Array:
        inside = (rel >= lo) & (rel < lo + 32)
        sh = jnp.clip(rel - lo, 0, 31).astype(_U32)
        return jnp.sum(jnp.where(inside, pbits << sh, _U32(0)), axis=1, dtype=_U32)

    q = (gather_bits(32), gather_bits(0))
    half = jnp.sum(jnp.where(rel == -1, pbits, _U32(0)), axis=1, dtype=_U32)
    sticky = jnp.any((rel < -1) & (pbits == 1), axis=1).astype(_U32)
    inc = half & (sticky | (q[1] & _U32(1)))
    return _wide_add(q, _wide_u32(inc))


# --------------------------------------------------------------------------- #
# Keys and counting passes.
# --------------------------------------------------------------------------- #


def _float_key(
    x: jax.Array, already_pruned: jax.Array | None, zero: jax.Array | None = None
) -> jax.Array:
    """Monotonic uint32 key of float32 scores: a < b  <=>  key(a) < key(b).

    ``-0.0`` maps to the key of ``+0.0``, every NaN to ``_KEY_NAN`` (above
    ``+inf``), entries already pruned to ``_KEY_PRUNED`` (below ``-inf``).
    ``zero`` (a 0 that XLA cannot constant-fold, loop-variant inside a loop)
    keeps XLA from hoisting the keys out of the counting loop into a
    materialized array: they are recomputed inside each counting fusion. Every
    use of a leaf's keys passes such a ``zero``, so all see identical keys.
    """
    if zero is not None:
        x = x + zero.astype(jnp.float32)  # also turns -0.0 into +0.0
    bits = lax.bitcast_convert_type(x, _U32)
    nan = (bits & _U32(0x7FFFFFFF)) > _U32(0x7F800000)
    bits = jnp.where(bits == _U32(0x80000000), _U32(0), bits)  # -0.0 -> +0.0
    key = jnp.where(bits >= _U32(0x80000000), ~bits, bits | _U32(0x80000000))
    key = jnp.where(nan, _U32(_KEY_NAN), key)
    if already_pruned is not None:
        key = jnp.where(already_pruned, _U32(_KEY_PRUNED), key)
    return key


def _selected(key: jax.Array, index: jax.Array, t: jax.Array, bound: jax.Array) -> jax.Array:
    """The final selection rule: keys below the threshold ``t``, and those equal to it
    at a flat ``index`` (uint32-comparable) below ``bound``."""
    return (key < t) | ((key == t) & (index.astype(_U32) < bound))


def _flat_index(shape: tuple[int, ...], zero: jax.Array | None = None) -> jax.Array:
    """Row-major flat index of every entry of ``shape`` (uint32).

    Built from one small ``arange`` per axis broadcast together, so it shards
    like any elementwise op. ``zero`` (a loop-variant 0) keeps XLA from hoisting
    the full-size index out of a loop and materializing it.
    """
    ndim = len(shape)
    idx = jnp.zeros((1,) * ndim, _U32)
    stride = 1
    for d in reversed(range(ndim)):
        axis = jnp.arange(shape[d], dtype=_U32)
        if zero is not None:
            axis = axis + zero
        axis = axis * _U32(stride)
        idx = idx + axis.reshape((1,) * d + (shape[d],) + (1,) * (ndim - d - 1))
        stride *= shape[d]
    return jnp.broadcast_to(idx, shape)


def _count_below(
    key: jax.Array,
    key_cands: jax.Array,
    idx_cands: jax.Array,
    take_equal: jax.Array,
    split_equal: jax.Array,
    zero: jax.Array,
) -> jax.Array:
    """Per candidate ``j``, how many entries precede ``(key_cands[j], idx_cands[j])``.

    An entry precedes a candidate if its key is smaller, or its key is equal and
    ``take_equal`` (a scalar: all equal entries of this leaf come first), or its
    key is equal, ``split_equal`` and its flat index is smaller. All ``C``
    counts come from one variadic reduction, so the leaf is read once per pass
    whatever ``C`` (separate sibling reductions may each re-read it; a
    ``(..., C)`` broadcast is materialized by XLA:CPU). ``zero`` is a
    loop-variant 0. Returns ``(C,)`` uint32.
    """
    idx = _flat_index(key.shape, zero)
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


def _exclusive_wide_cumsum(c: jax.Array) -> Wide:
    """Exact exclusive prefix sums of a (L,) uint32 vector (L < 2**16).

    A masked (L, L) sum rather than ``cumsum``: one small fusion, where XLA
    lowers a cumsum to a tree of reduce-windows that is slow to compile.
    """
    n = c.shape[0]
    earlier = np.tril(np.ones((n, n), bool), -1)
    lo16 = jnp.sum(jnp.where(earlier, (c & _U32(0xFFFF))[None, :], _U32(0)), axis=1, dtype=_U32)
    hi16 = jnp.sum(jnp.where(earlier, (c >> 16)[None, :], _U32(0)), axis=1, dtype=_U32)
    lo = lo16 + (hi16 << 16)
    return (hi16 >> 16) + (lo < lo16).astype(_U32), lo


def _histogram(rel: jax.Array, hit: jax.Array, nbins: int) -> jax.Array:
    """``(nbins,)`` uint32 counts of the uint32 bin indices ``rel`` where ``hit``.

    One scatter-add whose misses go out of range and are dropped, so only the
    hits touch the histogram (XLA fuses the index computation into it on GPU).
    """
    idx = jnp.where(hit & (rel < _U32(nbins)), rel, _U32(nbins)).astype(jnp.int32)
    return jnp.zeros(nbins, _U32).at[idx].add(_U32(1), mode="drop")


def _sample_bracket(
    key_fns: Sequence[Callable[..., jax.Array]], sizes: Sequence[int], k: jax.Array, b: int
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
    key_fns: Sequence[Callable[..., jax.Array]],
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
    key_fns: Sequence[Callable[..., jax.Array]],
    sizes: Sequence[int],
    k: jax.Array,
    b: int,
) -> tuple[list[jax.Array], Any, np.ndarray, tuple[jax.Array, ...]]:
    """:func:`_sampled_start` with one Pallas :func:`~sparsejax.kernels.selection.bracket_pass`
    per leaf (flat scores and flags ``inputs[i]``).

    The passes write provisional masks and flag the in-bracket entries; one
    :func:`~sparsejax.kernels.selection.compact` per leaf gathers their keys
    and positions. The buffers hold all leaves, so the histogram and the per-leaf counts
    are a few XLA ops whatever the number of leaves. Returns the provisional
    masks, the compacted buffers, the first row of each leaf (and the total)
    and the radix state.
    """
    from sparsejax.kernels.selection import TILE, bracket_pass, compact

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
    (:class:`~sparsejax.kernels.selection.Compacted`, leaf ``i`` in rows ``rows[i]`` to
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


def _bin_of_kth(hist: jax.Array, start: jax.Array, k: jax.Array) -> jax.Array:
    """The bin ``d`` of the ``k``-th smallest entry: ``#{d' >= 1 : start + Σ hist[:d'] < k}``.

    ``hist`` is a ``(2**_HIST_LOG2,)`` uint32 histogram (total below ``2**32``),
    ``start`` the entries below bin 0. Two levels of masked sums (rows of
    ``2**9`` bins), not a cumsum over all bins.
    """
    side = 2 ** (_HIST_LOG2 // 2)
    rows = hist.reshape(hist.shape[0] // side, side)
    earlier = np.tril(np.ones((side, side), bool), -1)  # [i, j]: j before i
    row_sums = jnp.sum(rows, 1, dtype=_U32)
    row_before = start + jnp.sum(jnp.where(earlier, row_sums[None, :], _U32(0)), 1, dtype=_U32)
    r = jnp.sum(row_before[1:] < k, dtype=jnp.int32)
    row = lax.dynamic_index_in_dim(rows, r, keepdims=False)
    in_row = jnp.sum(jnp.where(earlier, row[None, :], _U32(0)), axis=1, dtype=_U32)
    return r * side + jnp.sum(row_before[r] + in_row[1:] < k, dtype=jnp.int32)


def _tie_index(key_fn: Callable[..., jax.Array], size: int, t: jax.Array, n: jax.Array):
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
    pos = _flat_index((size,), zero)
    hist = _histogram(pos >> _U32(s), key == t, nbins)
    j = _bin_of_kth(hist, _U32(0), n)
    before = jnp.sum(jnp.where(jnp.arange(nbins) < j, hist, _U32(0)), dtype=_U32)
    first = j.astype(_U32) << _U32(s)
    zero = lax.optimization_barrier(zero)
    key = key_fn(zero).reshape(-1)
    rel = _flat_index((size,), zero) - first  # wraps around below the bin
    ties = jnp.cumsum(_histogram(rel, key == t, width), dtype=_U32)
    return first + jnp.sum(ties < n - before, dtype=_U32)


def _select_lowest_sorted(keys: Sequence[jax.Array], joint: bool, target: Wide) -> list[jax.Array]:
    """:func:`_select_lowest` by one stable sort per target: same masks, bit for bit.

    ``keys``: each leaf's uint32 keys (the key's shape is the mask's). The keys of a
    target's leaves (all leaves when ``joint``, else each leaf on
    its own) are concatenated in leaf order and stably sorted with their
    positions, so ties go to the earlier leaf and then the lower flat index, the
    composite order of the radix search; an entry is selected when its rank is
    below the target. For at most ``_SORT_MAX`` groups on one accelerator
    (:func:`_sorting_pays`), or ``search="sort"`` (fewer than ``2**31`` groups). With
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


def _select_lowest(
    key_fns: Sequence[Callable[[], jax.Array]],
    joint: bool,
    target: Wide,
    bits_per_pass: int,
    sampled: bool = False,
    sources: Sequence[Source | None] | None = None,
    pallas: bool = False,
) -> list[jax.Array]:
    """Per leaf, a bool array marking the ``target`` lowest keys; ties go to lower positions.

    A radix search for the ``k``-th smallest of the composite order
    ``(key, leaf, flat index)`` that only counts. Passes 1..32/b fix the
    threshold key ``T``, ``b`` bits at a time: each pass counts, per leaf, the
    keys below ``2**b - 1`` candidate thresholds. If the entries with key
    ``T`` must be split (some pruned, some kept), the leaf holding the split
    follows from the per-leaf counts, and further passes fix the flat index of
    the last pruned entry in that leaf, ``b`` bits at a time. Every pass is
    one variadic reduction per leaf (``2**b - 1`` counts from one read of the
    scores); the ``32 / b`` key passes run in a ``fori_loop`` of static trip
    count, the index passes in a ``while_loop`` only when a split is needed.

    Args:
      key_fns: thunks returning each leaf's uint32 keys.
      joint: one target over all leaves (``target`` of shape ``(1,)``; ties
        across leaves go to the earlier leaf) or one target per leaf (``(L,)``).
      target: wide count(s) ``k``, at most the number of selectable keys.
      bits_per_pass: ``b``, a divisor of 32.
      sampled: start from :func:`_sampled_start` (``joint``, fewer than
        ``2**32`` keys); one ``lax.switch`` then finishes: nothing left, ties
        split by :func:`_tie_index` in one leaf, or the remaining radix passes.
      sources: per leaf, the float32 group scores and already-pruned flags its
        keys come from (``None``: keys only through ``key_fns``).
      pallas: with ``sampled`` and a source for every leaf, read the scores once
        (NVIDIA GPUs): :func:`_bracket_passes` writes provisional masks, the
        ties come from its compacted entries (:func:`_compacted_tie_index`) and
        :func:`~sparsejax.kernels.selection.finish_mask` fixes the masks.

    Returns:
      One bool array per leaf (the key's shape): ``True`` where selected.
    """
    b = bits_per_pass
    num_leaves = len(key_fns)
    shapes = [tuple(fn().shape) for fn in key_fns]
    sizes = [math.prod(sh) for sh in shapes]
    key_passes = 32 // b
    idx_passes = -(-max(max(sizes) - 1, 0).bit_length() // b)
    idx_top = idx_passes * b
    steps = jnp.arange(1, 2**b, dtype=_U32)
    k_hi, k_lo = target

    def per_leaf(v):  # per-segment vector -> per-leaf vector
        return jnp.broadcast_to(v, (num_leaves,)) if joint else v

    def split(kbase, below, upto):
        """Entries to take at the threshold, per leaf: (need, partial)."""
        equal = upto - below
        if joint:
            remaining = _wide_sub((k_hi[0], k_lo[0]), _wide_sum(below))
            offset = _exclusive_wide_cumsum(equal)
        else:
            remaining = _wide_sub(target, _wide_u32(below))
            offset = _wide_u32(jnp.zeros_like(equal))
        short = _wide_lt(remaining, offset)
        left = _wide_sub(remaining, _wide_where(short, remaining, offset))
        need = jnp.where(_wide_lt(left, _wide_u32(equal)), left[1], equal)
        # Threshold 0 is the class of groups the existing mask prunes: all stay pruned.
        need = jnp.where(per_leaf(kbase) == _U32(_KEY_PRUNED), equal, need)
        partial = (need > 0) & (need < equal)
        return need, partial

    def body(state, index_passes: bool):
        p, kbase, below, upto, ibase, need, partial = state
        in_key = p < key_passes
        take_all = (need == upto - below) & (need > 0)
        krem = jnp.clip(32 - b * (p + 1), 0, 31).astype(_U32)
        irem = jnp.clip(idx_top - b * (p - key_passes + 1), 0, 31).astype(_U32)
        kc = jnp.where(in_key, kbase[:, None] + (steps[None, :] << krem), kbase[:, None])
        ic = ibase[:, None] + (steps[None, :] << irem)  # (L, C)
        take_equal = ~in_key & take_all & ~partial
        split_equal = ~in_key & partial
        # A loop-variant zero that XLA cannot fold: keeps the flat index inside the counting
        # fusion instead of hoisting it into a materialized (4 bytes per entry) array.
        pu = p.astype(_U32)
        zero = lax.optimization_barrier(pu) ^ pu

        def count(i):
            return _count_below(
                key_fns[i](zero), kc[0 if joint else i], ic[i], take_equal[i], split_equal[i], zero
            )

        def all_leaves():
            return jnp.stack([count(i) for i in range(num_leaves)])

        def split_leaf_only():
            # Index passes of one joint target: only the leaf holding the split (at most one)
            # changes its counts; every other leaf counts its entries below the threshold, or
            # up to it when it takes them all. One leaf is read instead of all of them.
            j = jnp.argmax(partial)
            c = lax.switch(j, [functools.partial(count, i) for i in range(num_leaves)])
            fixed = jnp.where(take_equal, upto, below)
            this = (jnp.arange(num_leaves) == j)[:, None]
            return jnp.where(this, c[None, :], fixed[:, None])

        counts = split_leaf_only() if index_passes and joint and num_leaves > 1 else all_leaves()
        if joint:
            tot_hi, tot_lo = _wide_sum(counts, axis=0)
            tot = (tot_hi[None, :], tot_lo[None, :])
        else:
            tot = _wide_u32(counts)
        digit = jnp.sum(_wide_lt(tot, (k_hi[:, None], k_lo[:, None])), axis=1, dtype=jnp.int32)
        # Key passes: refine the threshold key and the per-leaf counts below / up to it.
        d = per_leaf(digit)[:, None]
        ext = jnp.concatenate([below[:, None], counts, upto[:, None]], axis=1)
        new_below = jnp.take_along_axis(ext, d, axis=1)[:, 0]
        new_upto = jnp.take_along_axis(ext, d + 1, axis=1)[:, 0]
        kbase = jnp.where(in_key, kbase + (digit.astype(_U32) << krem), kbase)
        below = jnp.where(in_key, new_below, below)
        upto = jnp.where(in_key, new_upto, upto)
        # Index passes: refine the flat index of the last entry taken at the threshold.
        ibase = jnp.where(in_key, ibase, ibase + (per_leaf(digit).astype(_U32) << irem))
        return (p + 1, kbase, below, upto, ibase, *split(kbase, below, upto))

    key_pass = functools.partial(body, index_passes=False)
    index_pass = functools.partial(body, index_passes=True)

    def more_index_passes(state):
        p, partial = state[0], state[-1]
        return (p < key_passes + idx_passes) & jnp.any(partial)

    init = (
        jnp.zeros((), jnp.int32),
        jnp.zeros(k_lo.shape, _U32),
        jnp.zeros(num_leaves, _U32),
        jnp.asarray(np.asarray(sizes, np.uint32)),
        jnp.zeros(num_leaves, _U32),
        jnp.zeros(num_leaves, _U32),
        jnp.zeros(num_leaves, bool),
    )
    # The key passes always run: a loop with a static trip count, which XLA:GPU runs without
    # reading a predicate back to the host (a while_loop stalls the host once per pass: 16
    # syncs per selection, most of the cost of a mask update on a small model). The index
    # passes run only when a split is needed: one predicate read when none is.
    keeps = None
    if sampled:
        inputs = [_kernel_input(src, pallas) for src in (sources or [None] * num_leaves)]
        if all(inp is not None for inp in inputs):
            keeps, comp, rows, first = _bracket_passes(inputs, key_fns, sizes, k_lo[0], b)
        else:
            first = _sampled_start(key_fns, sizes, k_lo[0], b)
        valid, p0, kbase0, below0, upto0 = first
        pick = functools.partial(jnp.where, valid)
        kb, bl, up = pick(kbase0, init[1]), pick(below0, init[2]), pick(upto0, init[3])
        start = (pick(p0, 0), kb, bl, up, init[4], *split(kb, bl, up))
        need0, partial0 = start[5], start[6]
        # One switch, so one predicate read by the host: the threshold is fixed (branch 0),
        # or fixed with ties to split in one leaf (the tie branches), or radix passes remain
        # (a missed bracket, or bins wider than one key: the last branch).
        j = jnp.argmax(partial0).astype(jnp.int32)

        def tie(i):
            # The split leaf i: static for the XLA passes, which re-read it; dynamic (one
            # branch) for the compacted entries of the Pallas passes.
            if keeps is None:
                at = _tie_index(key_fns[i], sizes[i], per_leaf(kb)[i], need0[i])
            else:
                at = _compacted_tie_index(comp, rows, i, per_leaf(kb)[i], need0[i])
            return (*start[:4], jnp.where(jnp.arange(num_leaves) == i, at, _U32(0)), *start[5:])

        def rest():
            state = lax.while_loop(lambda st: st[0] < key_passes, key_pass, start)
            return lax.while_loop(more_index_passes, index_pass, state)

        if keeps is None:
            ties = [functools.partial(tie, i) for i in range(num_leaves)]
            tied = 1 + j
        else:
            ties = [functools.partial(tie, j)]
            tied = jnp.int32(1)
        done = valid & (p0 >= key_passes)
        case = jnp.where(done, jnp.where(jnp.any(partial0), tied, 0), len(ties) + 1)
        state = lax.switch(case, [lambda: start, *ties, rest])
    else:
        state = lax.fori_loop(0, key_passes, lambda _, st: key_pass(st), init)
        state = lax.while_loop(more_index_passes, index_pass, state)
    _, kbase, _, _, ibase, need, partial = state
    bound = jnp.where(partial, ibase + _U32(1), jnp.where(need == 0, _U32(0), _U32(_KEY_EXCLUDED)))
    threshold = per_leaf(kbase)
    if keeps is not None:
        from sparsejax.kernels.selection import finish_mask

        # The provisional masks need only their in-bracket entries fixed when the bracket
        # held the threshold (``valid``); otherwise the kernels recompute them. Returned
        # negated: the caller's ``~`` cancels it (XLA folds the double not).
        return [
            ~finish_mask(*inputs[i], keeps[i], comp, int(rows[i]), threshold[i], bound[i], valid)
            .reshape(shapes[i])
            for i in range(num_leaves)
        ]
    zero = lax.optimization_barrier(jnp.zeros((), _U32))
    out = []
    for i, fn in enumerate(key_fns):
        key = fn(zero)
        out.append(_selected(key, _flat_index(key.shape), threshold[i], bound[i]))
    return out


def _nm_candidate_keys(key: jax.Array, n: int, m: int) -> jax.Array:
    """Keys with all but the ``m - n`` lowest of every run of ``m`` along axis -2 excluded."""
    *lead, din, dout = key.shape
    g = din // m
    a = key.reshape((*lead, g, m, 1, dout))  # entry i on axis -3
    b = key.reshape((*lead, g, 1, m, dout))  # entry j on axis -2
    earlier = lax.broadcasted_iota(jnp.int32, (m, m), 1) < lax.broadcasted_iota(
        jnp.int32, (m, m), 0
    )
    earlier = earlier.reshape((1,) * (len(lead) + 1) + (m, m, 1))
    before = (b < a) | ((b == a) & earlier)
    rank = jnp.sum(before, axis=-2, dtype=jnp.int32).reshape(key.shape)
    return jnp.where(rank < m - n, key, _U32(_KEY_EXCLUDED))


# --------------------------------------------------------------------------- #
# The jitted core.
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class _LeafPlan:
    param_shape: tuple[int, ...]
    reduce: bool  # the score has the param's shape and is reduced to groups


@dataclasses.dataclass(frozen=True)
class _SegmentPlan:
    leaves: tuple[int, ...]
    kind: str  # "none": prune nothing new; "all": every selectable group; "select": a target
    n: int  # groups in the segment
    cap: int  # selectable groups (n, or the N:M candidates)


@dataclasses.dataclass(frozen=True)
class _Plan:
    leaves: tuple[_LeafPlan, ...]
    segments: tuple[_SegmentPlan, ...]
    structure: Structure
    reduction: str
    bits_per_pass: int
    joint: bool  # scope="global": one segment holding every leaf
    fractions: bool  # some target is a float32 array (else all are exact Python counts)
    normalize: str | None = None  # per-leaf rescaling of the group scores
    sampled: bool = False  # joint search starts from a sampled bracket and a histogram
    pallas: bool = False  # ... with the one-read Pallas kernels (a single NVIDIA GPU)
    sort: bool = False  # one stable sort per segment instead of the radix passes


def _left_pad(x: jax.Array, ndim: int) -> jax.Array:
    x = jnp.asarray(x)
    return x.reshape((1,) * (ndim - x.ndim) + x.shape)


def _normalize_groups(g, already, how: str) -> jax.Array:
    """Group scores divided by their layer's L1 / L2 norm, max or mean over the groups
    still alive (not ``already`` pruned; the score unchanged if that statistic is 0)."""
    alive = jnp.ones(g.shape, bool) if already is None else jnp.broadcast_to(~already, g.shape)
    a = jnp.where(alive, jnp.abs(g), 0.0)
    if how == "l1":
        scale = jnp.sum(a)
    elif how == "l2":
        scale = jnp.sqrt(jnp.sum(a * a))
    elif how == "max":
        scale = jnp.max(a)
    else:
        scale = jnp.sum(a) / jnp.maximum(jnp.sum(alive), 1)
    return jnp.where(scale > 0, g / jnp.where(scale > 0, scale, 1.0), g)


@functools.partial(jax.jit, static_argnames=("plan",))
def _prune_core(scores, masks, counts_hi, counts_lo, fractions, use_fraction, *, plan: _Plan):
    structure = plan.structure
    key_fns: list[Callable[[], jax.Array]] = []
    sources: list[Source | None] = []
    for lp, score, m in zip(plan.leaves, scores, masks):
        g = structure.reduce(score, plan.reduction) if lp.reduce else score
        g = jnp.asarray(g, jnp.float32)
        already = None
        if m is not None:
            full = jnp.broadcast_to(_left_pad(m, len(lp.param_shape)), lp.param_shape)
            already = ~structure._group_any(full)
        if plan.normalize is not None:
            g = _normalize_groups(g, already, plan.normalize)
        if lp.reduce or plan.normalize is not None:
            # Materialise the group scores once. Every radix pass and the final comparison
            # must see the same floats; XLA:GPU otherwise may fuse a copy of the reduction
            # into several consumers, whose sums can round differently (seen on an H100 for
            # a (5, 1, 25) kernel: a wrong count).
            g = lax.optimization_barrier(g)
        if isinstance(structure, NM):
            key = _nm_candidate_keys(_float_key(g, already), structure.n, structure.m)
            key_fns.append(lambda zero=None, key=key: key)
            sources.append(None)
        else:
            key_fns.append(lambda zero=None, g=g, already=already: _float_key(g, already, zero))
            sources.append((g, already))

    pruned: list[jax.Array | None] = [None] * len(plan.leaves)
    radix_leaves: list[int] = []
    selecting = [seg for seg in plan.segments if seg.kind == "select"]
    for seg in plan.segments:
        if seg.kind == "select":
            radix_leaves.extend(seg.leaves)
            continue
        for i in seg.leaves:
            key = key_fns[i]()
            if seg.kind == "none":
                pruned[i] = key == _U32(_KEY_PRUNED)
            else:
                pruned[i] = key != _U32(_KEY_EXCLUDED)
    if selecting:
        # Python floats arrive as exact counts, arrays as float32 fractions.
        k = (counts_hi, counts_lo)
        if plan.fractions:
            k = _wide_where(use_fraction, _round_mul(fractions, [seg.n for seg in selecting]), k)
        cap = (
            jnp.asarray([seg.cap >> 32 for seg in selecting], _U32),
            jnp.asarray([seg.cap & 0xFFFFFFFF for seg in selecting], _U32),
        )
        target = _wide_where(_wide_lt(cap, k), cap, k)
        if plan.sort:
            selected = _select_lowest_sorted(
                [key_fns[i]() for i in radix_leaves], plan.joint, target
            )
        else:
            selected = _select_lowest(
                [key_fns[i] for i in radix_leaves],
                plan.joint,
                target,
                plan.bits_per_pass,
                plan.sampled,
                [sources[i] for i in radix_leaves],
                plan.pallas,
            )
        for i, sel in zip(radix_leaves, selected):
            pruned[i] = sel

    out = []
    for lp, p, m in zip(plan.leaves, pruned, masks):
        keep = structure.expand(~p, lp.param_shape)
        if m is not None:
            keep = jnp.logical_and(
                _left_pad(keep, len(lp.param_shape)), _left_pad(m, len(lp.param_shape))
            )
        out.append(keep)
    # NaN counts of the raw scores, for the eager error (dead code under an outer jit).
    nans = [
        jnp.sum(jnp.isnan(x), dtype=_U32) if jnp.issubdtype(x.dtype, jnp.inexact) else _U32(0)
        for x in scores
    ]
    return out, nans


# --------------------------------------------------------------------------- #
# Sparsity values, distributions.
# --------------------------------------------------------------------------- #


def _parse_sparsity(value: Any, what: str) -> float | jax.Array | None:
    """A Python float (exact Python rounding) or a float32 0-d array (possibly traced)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a number in [0, 1], got the bool {value!r}")
    if isinstance(value, (int, float)):
        f = float(value)
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"{what} must be in [0, 1], got {value!r}")
        return f
    if not hasattr(value, "shape") and not isinstance(value, np.generic):
        raise TypeError(f"{what} must be a float or a 0-d array, got {value!r}")
    if np.ndim(value) != 0:
        raise ValueError(f"{what} must be a scalar, got an array of shape {np.shape(value)}")
    if not isinstance(value, jax.core.Tracer):
        f = float(np.asarray(value))
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"{what} must be in [0, 1], got {f!r}")
    return jnp.asarray(value, jnp.float32)


def _erk_densities(shapes: Sequence[tuple[int, ...]], s, power: float, xp) -> Any:
    """RigL's iterative ERK densities (fixed number of rounds so that it also runs traced)."""
    sizes = np.array([math.prod(sh) for sh in shapes], np.float64)
    raw_np = np.array(
        [(sum(sh) / math.prod(sh)) ** power if math.prod(sh) else 0.0 for sh in shapes], np.float64
    )
    dtype = np.float64 if xp is np else jnp.float32
    n = xp.asarray(sizes, dtype)
    raw = xp.asarray(raw_np, dtype)
    dense = xp.zeros(len(shapes), bool)

    def epsilon(dense):
        rhs = xp.sum(xp.where(dense, -n * s, n * (1 - s)))
        divisor = xp.sum(xp.where(dense, 0.0, raw * n))
        return rhs / xp.where(divisor > 0, divisor, 1.0)

    for _ in range(len(shapes)):
        eps = epsilon(dense)
        max_prob = xp.max(xp.where(dense, -np.inf, raw))
        dense = dense | ((~dense) & (raw == max_prob) & (max_prob * eps > 1))
    return xp.where(dense, 1.0, epsilon(dense) * raw)


def _erk_python(shapes: Sequence[tuple[int, ...]], s: float, power: float) -> list[float]:
    """ERK sparsities as Python floats (float64 arithmetic)."""
    if s == 0.0:
        return [0.0] * len(shapes)
    dens = _erk_densities(shapes, s, power, np)
    return [float(min(max(1.0 - d, 0.0), 1.0)) for d in dens]


def erk_sparsities(
    params: PyTree,
    sparsity: float,
    prunable: Prunable = None,
    erk_power_scale: float = 1.0,
) -> dict[str, float]:
    """Per-layer sparsities of the Erdős–Rényi-Kernel distribution (Evci et al. 2020).

    A layer's density is proportional to ``(sum of its dims / product of its
    dims) ** erk_power_scale`` (Dense ``(in, out)``: ``(in + out) / (in·out)``;
    Conv ``(kh, kw, in, out)``: ``(kh + kw + in + out) / (kh·kw·in·out)``),
    scaled so that the prunable parameters have overall sparsity ``sparsity``.
    Layers whose density would exceed 1 are made dense and the scale is solved
    again for the others, as in the RigL code.

    Args:
      params: parameter pytree (only shapes are read).
      sparsity: overall sparsity in [0, 1] (Python number or concrete array).
      prunable: which leaves count (default ``ndim >= 2``).
      erk_power_scale: exponent of the raw probabilities (1.0: ERK; 0.0: uniform).

    Returns:
      ``{path: sparsity}`` for the prunable leaves, in ``jax.tree.leaves`` order.

    Raises:
      ValueError: sparsity outside [0, 1] or no prunable leaf.

    References:
      Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All Tickets
      Winners", ICML 2020. google-research/rigl, ``sparse_utils.get_sparsities_erdos_renyi``.
    """
    s = _parse_sparsity(sparsity, "sparsity")
    if s is None:
        raise ValueError("erk_sparsities needs a sparsity, got None")
    if not isinstance(s, float):
        s = float(np.asarray(s))
    which = prunable_tree(params, prunable)
    named = [
        (name, tuple(int(d) for d in np.shape(leaf)))
        for (name, leaf), w in zip(named_leaves(params), jax.tree.leaves(which))
        if w
    ]
    if not named:
        raise ValueError("no prunable parameter: the prunable filter matched no leaf")
    values = _erk_python([sh for _, sh in named], s, float(erk_power_scale))
    return {name: v for (name, _), v in zip(named, values)}


def _map_values(dist: Mapping[str, Any], names: Sequence[str]) -> dict[str, tuple[str, Any]]:
    """``{path: (key, value)}`` for the prunable paths matched by a per-layer map."""
    compiled = {}
    for key in dist:
        if not isinstance(key, str):
            raise TypeError(f"distribution keys must be path strings or regexes, got {key!r}")
        try:
            compiled[key] = re.compile(key)
        except re.error as err:
            raise ValueError(
                f"distribution key {key!r} is not a valid regular expression: {err}"
            ) from err
    found: dict[str, tuple[str, Any]] = {}
    for name in names:
        if name in dist:
            found[name] = (name, dist[name])
            continue
        hits = [k for k, pat in compiled.items() if pat.search(name)]
        if len(hits) > 1:
            raise ValueError(
                f"parameter {name!r} is matched by several distribution keys {hits}; "
                "use its exact path as a key to choose"
            )
        if hits:
            found[name] = (hits[0], dist[hits[0]])
    for key, pat in compiled.items():
        if key not in names and not any(pat.search(n) for n in names):
            raise ValueError(
                f"distribution key {key!r} matches no prunable parameter; prunable paths are "
                f"{list(names)}"
            )
    return found


# --------------------------------------------------------------------------- #
# Public API.
# --------------------------------------------------------------------------- #


def prune(
    scores: PyTree,
    sparsity: float | jax.Array | None = None,
    *,
    params: PyTree | None = None,
    mask: PyTree | None = None,
    prunable: Prunable = None,
    scope: str = "layer",
    structure: Structure = Unstructured(),  # noqa: B008 (frozen, immutable)
    distribution: str | Mapping[str, float | jax.Array] = "uniform",
    reduction: str = "l1",
    erk_power_scale: float = 1.0,
    bits_per_pass: int | None = None,
    normalize: str | None = None,
    search: str = "auto",
) -> PyTree:
    """Mask that prunes the lowest-scoring groups: exactly ``round(s·n)`` of ``n``.

    Pure; works eagerly, under ``jax.jit`` (sparsity may be traced, e.g. a
    schedule value inside ``lax.cond``), under ``jax.vmap`` and on sharded
    arrays (mask leaves follow the scores' sharding; only counts are
    all-reduced). Mask leaf shapes never depend on the sparsity value.

    Args:
      scores: importance pytree mirroring the params; low = pruned first. A
        prunable leaf has the param's full shape (reduced to the structure's
        groups with ``reduction``) or already the group shape
        ``structure.group_shape(param.shape)`` (then ``params`` is required
        to know the param shapes; where both shapes coincide the score counts
        as full-shape). Cast to float32 (bf16 etc. exactly).
      sparsity: fraction of groups to prune, in [0, 1]: Python float or 0-d
        array (may be traced; a traced value outside [0, 1] is clipped, NaN
        counts as 0). ``None``: ``1 - n/m`` for ``NM(n, m)``; required
        otherwise, except with a per-layer map (unmatched layers then keep all).
      params: parameter pytree (shapes only); default: shapes of ``scores``.
      mask: existing mask (cumulative pruning): pruned groups stay pruned and
        count toward the target; the result is ``new & mask``, so masks only
        shrink. Output leaf shape: broadcast of ``mask``'s leaf and the
        structure's mask shape.
      prunable: which leaves may be pruned (default ``ndim >= 2``); the others
        get the scalar ``True`` (or their leaf of ``mask``).
      scope: ``"layer"`` (every leaf separately) or ``"global"`` (all prunable
        leaves ranked together; only with ``distribution="uniform"``).
      structure: granularity (:mod:`sparsejax.structures`). For ``NM(n, m)`` a
        sparsity ``s < 1 - n/m`` prunes ``round(s·N)`` entries chosen only among
        the ``m - n`` lowest of every run of ``m`` (gradual N:M); ``s > 1 - n/m``
        is an error (a traced one is clamped to ``1 - n/m``). The exact count assumes an existing mask that is itself
        N:M-compatible (≤ ``m - n`` pruned per run); extra entries it prunes
        stay pruned on top.
      distribution: per-layer sparsities for ``scope="layer"``: ``"uniform"``
        (every layer ``sparsity``), ``"erk"`` (Evci et al. 2020, overall
        ``sparsity`` over the prunable entries, see :func:`erk_sparsities`) or a
        mapping ``{path_or_regex: sparsity}``: a key equal to a path applies to
        it, otherwise keys are regexes searched in the path (like
        ``prunable``); layers no key matches get ``sparsity``. With a traced
        sparsity the ERK solve runs in float32 (float64 for a Python float), so
        a layer's count can differ by one at a rounding boundary.
      reduction: group reduction, ``"l1"``, ``"l2"``, ``"mean"`` or ``"sum"``
        (see :func:`sparsejax.structures.reduce_scores`).
      erk_power_scale: exponent of ERK's raw densities.
      bits_per_pass: threshold bits fixed per counting pass (1, 2 or 4);
        default :func:`default_bits_per_pass`. Changes speed only.
      normalize: ``None`` or ``"l1"``, ``"l2"``, ``"max"``, ``"mean"``: divide
        each leaf's group scores (after ``reduction``) by that statistic of
        the leaf's groups still alive in ``mask``, before ranking. With
        ``scope="global"`` this puts layers of different scale on one footing
        (``"l2"``: the layer-wise normalisation of Molchanov et al. 2017,
        Pruning CNNs for Resource Efficient Inference, Eq. 9); without it,
        unnormalised global filter norms can remove a whole layer (layer
        collapse). Within one leaf the ranking is unchanged, so layerwise
        results do not change.
      search: how the threshold is found; the mask is the same bit for bit.
        ``"radix"``: ``32 / bits_per_pass`` counting passes.
        ``"sampled"``: a sorted strided sample of about ``2**20`` scores
        brackets the threshold, and one pass (a count below the bracket plus a
        ``2**18``-bin histogram of the entries inside it, scattered) usually
        fixes it; a bracket that misses falls back to the radix passes. On a
        single NVIDIA GPU, Pallas kernels read the scores only once.
        Needs ``scope="global"`` and fewer than ``2**32`` groups. ``"sort"``:
        one stable sort of the group keys per target (all leaves together for
        ``scope="global"``, each leaf for ``"layer"``); fewer than ``2**31``
        groups. ``"auto"``: ``"sort"`` for at most ``2**20`` groups on a single
        accelerator (one sort costs less there than the 16 radix passes);
        ``"sampled"``
        for global selection over at least ``2**22`` groups on an accelerator;
        else ``"radix"``.

    Returns:
      A mask pytree with the structure of ``scores``.

    Raises:
      ValueError / TypeError: unknown scope, distribution or reduction; a
        sparsity outside [0, 1] (naming the path for per-layer values);
        mismatched trees; NaN scores in eager mode (naming the path and count;
        under ``jit`` NaN ranks above every score and is never pruned first);
        a structure that does not fit a leaf; a map key matching no layer.

    Example:
      >>> scores = {"w": jnp.array([[0.3, 0.1], [0.2, 0.4]]), "b": jnp.ones(2)}
      >>> prune(scores, 0.5)["w"]
      Array([[ True, False],
             [False,  True]], dtype=bool)
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not isinstance(structure, Structure):
        raise TypeError(f"structure must be a sparsejax Structure, got {structure!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if normalize is not None and normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be None or one of {NORMALIZATIONS}, got {normalize!r}")
    if isinstance(distribution, str):
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {DISTRIBUTIONS} or a mapping {{path: sparsity}}, "
                f"got {distribution!r}"
            )
    elif not isinstance(distribution, Mapping):
        raise TypeError(f"distribution must be a string or a mapping, got {distribution!r}")
    if scope == "global" and not (isinstance(distribution, str) and distribution == "uniform"):
        raise ValueError(
            f"scope='global' ranks all layers together; distribution={distribution!r} sets "
            "per-layer sparsities and needs scope='layer'"
        )
    bits = default_bits_per_pass() if bits_per_pass is None else bits_per_pass
    if bits not in (1, 2, 4):
        raise ValueError(f"bits_per_pass must be 1, 2 or 4, got {bits_per_pass!r}")
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    if search == "sampled" and scope != "global":
        raise ValueError(f"search='sampled' needs scope='global', got scope={scope!r}")

    ref_name = "scores" if params is None else "params"
    ref = scores if params is None else params
    if params is not None:
        check_same_structure(params, scores, "params", "scores")
    if mask is not None:
        check_same_structure(ref, mask, ref_name, "mask")
        validate_mask(ref, mask)
    which = jax.tree.leaves(prunable_tree(ref, prunable))
    named = named_leaves(ref)
    score_leaves = jax.tree.leaves(scores)
    mask_leaves = jax.tree.leaves(mask) if mask is not None else [None] * len(named)

    leaf_plans, names, idx = [], [], []
    for i, ((name, p), s, w) in enumerate(zip(named, score_leaves, which)):
        if not w:
            continue
        pshape = tuple(int(d) for d in np.shape(p))
        gshape = structure.group_shape(pshape, name)
        sshape = tuple(int(d) for d in np.shape(s))
        if sshape == pshape:
            reduce = True
        elif sshape == gshape:
            reduce = False
        else:
            raise ValueError(
                f"scores at {name!r} have shape {sshape}; expected the parameter's shape {pshape} "
                f"or the group shape {gshape} of {structure!r}"
            )
        if math.prod(gshape) > _MAX_GROUPS_PER_LEAF:
            raise ValueError(
                f"parameter at {name!r} has {math.prod(gshape)} groups; at most "
                f"{_MAX_GROUPS_PER_LEAF} per leaf are supported (split the leaf)"
            )
        leaf_plans.append(_LeafPlan(pshape, reduce))
        names.append(name)
        idx.append(i)
    if not leaf_plans:
        raise ValueError(f"no prunable parameter: the prunable filter {prunable!r} matched no leaf")
    if len(leaf_plans) > _MAX_LEAVES:
        raise ValueError(
            f"at most {_MAX_LEAVES} prunable leaves are supported, got {len(leaf_plans)}"
        )

    groups = [structure.num_groups(lp.param_shape) for lp in leaf_plans]
    is_nm = isinstance(structure, NM)
    caps = [g * (structure.m - structure.n) // structure.m if is_nm else g for g in groups]

    # Per-segment sparsity values (Python float, float32 array or None = structure default).
    if scope == "global":
        seg_leaves = [tuple(range(len(leaf_plans)))]
        values = [_parse_sparsity(sparsity, "sparsity")]
        wheres = [""]
    else:
        seg_leaves = [(i,) for i in range(len(leaf_plans))]
        default = _parse_sparsity(sparsity, "sparsity")
        if isinstance(distribution, Mapping):
            found = _map_values(distribution, names)
            values, wheres = [], []
            for name in names:
                if name in found:
                    key, v = found[name]
                    via = "" if key == name else f" (from distribution key {key!r})"
                    values.append(_parse_sparsity(v, f"sparsity for {name!r}{via}"))
                    wheres.append(f" for {name!r}{via}")
                else:
                    values.append(default if default is not None else (None if is_nm else 0.0))
                    wheres.append(f" for {name!r}")
        elif distribution == "erk":
            if default is None:
                raise ValueError("distribution='erk' needs a sparsity, got None")
            shapes = [lp.param_shape for lp in leaf_plans]
            if isinstance(default, float):
                values = list(_erk_python(shapes, default, float(erk_power_scale)))
            else:
                dens = _erk_densities(shapes, default, float(erk_power_scale), jnp)
                values = list(jnp.where(default > 0, jnp.clip(1.0 - dens, 0.0, 1.0), 0.0))
            wheres = [f" for {name!r} (ERK)" for name in names]
        else:
            values = [default] * len(leaf_plans)
            wheres = [f" for {name!r}" for name in names]

    segments, counts, fractions = [], [], []  # counts: Python ints; fractions: float32 arrays
    for leaves, v, where in zip(seg_leaves, values, wheres):
        n = sum(groups[i] for i in leaves)
        cap = sum(caps[i] for i in leaves)
        if v is None:
            if not is_nm:
                raise ValueError(f"sparsity is required for {structure!r}, got None")
            kind = "all"
        else:
            if is_nm and not isinstance(v, jax.core.Tracer):
                f = float(np.asarray(v))
                if f > structure.max_sparsity + _NM_TOLERANCE:
                    raise ValueError(
                        f"sparsity{where} is {f!r}, above 1 - n/m = {structure.max_sparsity!r} "
                        f"for {structure.n}:{structure.m} sparsity"
                    )
            if isinstance(v, float) and v == 0.0:
                kind = "none"
            else:
                kind = "select"
                if isinstance(v, float):
                    counts.append(min(round(v * n), cap))
                    fractions.append(None)
                else:
                    counts.append(0)
                    fractions.append(v)
        segments.append(_SegmentPlan(tuple(leaves), kind, n, cap))

    total_groups = sum(groups)
    if search == "sampled" and total_groups >= 2**32:
        raise ValueError(
            f"search='sampled' needs fewer than 2**32 groups, got {total_groups}; "
            "use search='radix'"
        )
    if search == "sort" and total_groups >= 2**31:
        raise ValueError(
            f"search='sort' needs fewer than 2**31 groups, got {total_groups}; use search='radix'"
        )
    sort = search == "sort" or (search == "auto" and _sorting_pays(total_groups))
    sampled = not sort and scope == "global" and (
        search == "sampled"
        or (search == "auto" and _SAMPLED_MIN <= total_groups < 2**32 and _sampling_pays())
    )
    # Single-entry structures ignore the reduction: one compiled plan for all of them.
    plan_reduction = "l1" if isinstance(structure, (Unstructured, NM)) else reduction
    plan = _Plan(
        tuple(leaf_plans),
        tuple(segments),
        structure,
        plan_reduction,
        bits,
        scope == "global",
        any(f is not None for f in fractions),
        normalize,
        sampled,
        sampled and _pallas_passes(),
        sort,
    )
    counts_hi = np.asarray([k >> 32 for k in counts] or [0], np.uint32)
    counts_lo = np.asarray([k & 0xFFFFFFFF for k in counts] or [0], np.uint32)
    if any(f is not None for f in fractions):
        zero = jnp.zeros((), jnp.float32)
        fracs = jnp.stack([zero if f is None else f for f in fractions])
    else:
        fracs = np.zeros(max(len(fractions), 1), np.float32)
    use_fraction = np.asarray([f is not None for f in fractions] or [False])
    new, nans = _prune_core(
        [score_leaves[i] for i in idx],
        [mask_leaves[i] for i in idx],
        counts_hi,
        counts_lo,
        fracs,
        use_fraction,
        plan=plan,
    )

    for name, nan, x in zip(names, nans, (score_leaves[i] for i in idx)):
        if not isinstance(nan, jax.core.Tracer) and int(nan):
            raise ValueError(
                f"scores at {name!r} contain {int(nan)} NaN value(s) of {np.size(x)}; "
                "a NaN score would rank above every number and never be pruned"
            )
    out = []
    it = iter(new)
    for i, w in enumerate(which):
        if w:
            out.append(next(it))
        elif mask is not None:
            out.append(jnp.asarray(mask_leaves[i], bool))
        else:
            out.append(jnp.ones((), bool))
    return jax.tree.unflatten(jax.tree.structure(ref), out)
