"""Pallas (Triton) passes of global selection's sampled search, for NVIDIA GPUs.

:func:`sparsejax.prune` with ``search="sampled"`` brackets the threshold key
from a sorted sample of the scores (:mod:`~sparsejax.select._sampled`). On a
single NVIDIA GPU it then reads every score **once**:

* :func:`bracket_pass` — per program of ``TILE`` scores: the number of keys
  below the bracket and inside it, a bit per entry flagging those inside, and
  a provisional keep mask, right for every entry outside the bracket (kept
  above it, pruned below it). Streaming work only: the kernel runs at the
  memory bandwidth, where compacting by a prefix sum of 2048 flags made it
  instruction-bound.
* :func:`compact` — from the bits alone (1/32 of the scores' bytes), the keys
  and flat positions of the flagged entries (about 0.6% of them at sparsity
  0.9), compacted into ``SLOTS`` slots per program; it gathers just those
  scores. XLA histograms the compacted keys to find the exact threshold.
* :func:`finish_mask` — writes the final value of the compacted entries into
  the provisional mask in place. If the bracket missed the threshold, or a
  program had more in-bracket keys than slots, it instead recomputes the
  whole mask from the scores: the flag is read on the device, so neither case
  costs a host round trip or a copy of the mask.

No atomics: Pallas' atomic adds are acquire-release and were slower than
XLA's scatter. Keys are :func:`~sparsejax.select._keys.float_key` of the scores
(and of the ``pruned`` flags of an existing mask), computed in the kernels,
so they are never written to memory. Off GPU the kernels run in Pallas
interpret mode (``interpret=None``); ``tests/select/test_pallas_gpu.py``
checks the Triton versions on a GPU. Imported only when the kernels launch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from sparsejax._gpu_kernels import default_backend, triton_compiler_params
from sparsejax.select._keys import float_key, selected

__all__ = [
    "MAX_ENTRIES",
    "ROWS",
    "SLOTS",
    "TILE",
    "Compacted",
    "HitBits",
    "bracket_pass",
    "compact",
    "finish_mask",
]

#: Entries per program of :func:`bracket_pass` (one vectorized load of ``TILE`` float32
#: per program; timings of other tiles and warps: docs/results.md).
TILE = 2048
#: Compacted in-bracket keys per program of :func:`bracket_pass` (slots of :func:`compact`
#: and :func:`finish_mask`). The bracket holds at
#: most about 1.2% of the keys (at sparsity 0.5): about 25 of a tile of 2048, so 64
#: slots overflow with probability ~1e-11 per tile for scores in random order.
SLOTS = 64
#: Bracket programs per program of :func:`compact` and :func:`finish_mask` (with one program
#: per bracket program, launching programs that each store a few bytes dominated).
ROWS = 16
#: Largest leaf the kernels take (int32 flat indices).
MAX_ENTRIES = 2**31 - TILE

_U32 = jnp.uint32


class Compacted(NamedTuple):
    """The in-bracket entries that :func:`compact` gathers, for all leaves in one
    set of buffers: ``G`` rows, one per program, leaf after leaf (a leaf of ``n`` scores
    has ``cdiv(n, tile)`` rows from its ``row0``); slot ``slots`` of each row is scratch.

    Attributes:
      keys: ``(G, slots + 1)`` uint32, row ``g``: the in-bracket keys of program ``g``
        in position order (the first ``min(hits[g], slots)`` are written).
      positions: ``(G, slots + 1)`` int32 flat indices (in their leaf) of those keys.
      hits: ``(G,)`` int32 in-bracket keys per program (more than ``slots``: overflow).
      below: ``(G,)`` int32 keys below the bracket per program.
    """

    keys: jax.Array
    positions: jax.Array
    hits: jax.Array
    below: jax.Array

    @property
    def slots(self) -> int:
        return self.keys.shape[1] - 1

    @property
    def filled(self) -> jax.Array:
        """``(G, slots)`` bool: which slots hold a key."""
        g, s = self.hits.shape[0], self.slots
        return lax.broadcasted_iota(jnp.int32, (g, s), 1) < self.hits[:, None]

    @property
    def overflow(self) -> jax.Array:
        """``()`` bool: some program had more in-bracket keys than slots."""
        return jnp.any(self.hits > self.slots)


def _plgpu():
    from jax.experimental.pallas import triton as plgpu

    return plgpu


def _load_keys(x_ref, p_ref, n: int, tile: int, start):
    """Flat indices, in-range flags and keys of the ``tile`` entries from ``start``.

    ``start`` comes from the caller: interpret mode resolves ``pl.program_id`` only
    outside ``pl.when`` branches.
    """
    plgpu = _plgpu()
    offs = start + lax.broadcasted_iota(jnp.int32, (tile,), 0)
    valid = offs < n
    x = plgpu.load(x_ref.at[pl.ds(start, tile)], mask=valid, other=0.0)
    pruned = None
    if p_ref is not None:
        pruned = plgpu.load(p_ref.at[pl.ds(start, tile)], mask=valid, other=0) != 0
    return offs, valid, float_key(x, pruned)


def _popcount(w: jax.Array) -> jax.Array:
    """Set bits of uint32 ``w`` as int32 (Triton lowers only the int32 popcount)."""
    return lax.population_count(lax.bitcast_convert_type(w, jnp.int32))


def _interpret(interpret: bool | None) -> bool:
    """Interpret mode unless asked: off NVIDIA GPUs (where Pallas lowers through Triton)."""
    return default_backend() != "pallas" if interpret is None else interpret


def _check(x: jax.Array, pruned: jax.Array | None) -> None:
    if x.ndim != 1 or x.dtype != jnp.float32:
        raise ValueError(f"scores must be a flat float32 array, got {x.dtype}{x.shape}")
    if not 0 < x.shape[0] <= MAX_ENTRIES:
        raise ValueError(f"between 1 and {MAX_ENTRIES} entries per call, got {x.shape[0]}")
    if pruned is not None and pruned.shape != x.shape:
        raise ValueError(f"pruned flags of shape {pruned.shape} for scores of shape {x.shape}")


class HitBits(NamedTuple):
    """What :func:`bracket_pass` leaves for :func:`compact`, for all leaves in one set of
    buffers: ``G`` rows, one per program, leaf after leaf (a leaf of ``n`` scores has
    ``cdiv(n, tile)`` rows from its ``row0``).

    Attributes:
      bits: ``(G, tile // 32)`` uint32: bit ``b`` of word ``w`` of row ``g`` is set
        when entry ``32 w + b`` of program ``g``'s tile is inside the bracket.
      hits: ``(G,)`` int32 in-bracket keys per program.
      below: ``(G,)`` int32 keys below the bracket per program.
    """

    bits: jax.Array
    hits: jax.Array
    below: jax.Array


def _rows(into_rows: int | None, rows_total: int | None, grid: int, row0: int) -> int:
    total = into_rows if into_rows is not None else (grid if rows_total is None else rows_total)
    if not 0 <= row0 <= total - grid:
        raise ValueError(f"rows {row0}..{row0 + grid} of a leaf outside the {total} rows")
    return total


def _with_aliases(kernel, inputs: tuple, buffers: tuple | None, first_output: int):
    """Inputs and aliases for ``pallas_call`` when ``buffers`` (earlier leaves' outputs
    ``first_output``, ``first_output + 1``, ...) are updated in place; the kernel is
    called without the aliased input refs (it writes the outputs)."""
    if buffers is None:
        return kernel, inputs, {}
    aliases = {len(inputs) + j: first_output + j for j in range(len(buffers))}
    num_in, num_alias = len(inputs), len(buffers)

    def call(*refs):
        return kernel(*refs[:num_in], *refs[num_in + num_alias :])

    return call, (*inputs, *buffers), aliases


def bracket_pass(
    x: jax.Array,
    pruned: jax.Array | None,
    base: jax.Array,
    shift: jax.Array,
    first_bin: jax.Array,
    *,
    nbins: int,
    into: HitBits | None = None,
    row0: int = 0,
    rows_total: int | None = None,
    tile: int = TILE,
    num_warps: int = 8,
    interpret: bool | None = None,
) -> tuple[jax.Array, HitBits]:
    """Count, flag and provisionally mask a leaf against a key bracket, in one read.

    The bracket holds the keys with ``first_bin <= key >> shift < first_bin +
    nbins``; ``base = first_bin << shift``. Program ``g`` reads ``tile``
    scores, writes their provisional keep mask (True above the bracket, False
    below and inside it), and into row ``row0 + g`` of the :class:`HitBits`
    its count of keys below ``base``, its count of keys inside the bracket
    and a bit per entry marking them. No prefix sum, no scattered store: the
    few flagged entries are compacted by :func:`compact` from the bits.

    Args:
      x: ``(n,)`` float32 scores.
      pruned: ``(n,)`` int8 flags (nonzero: already pruned, key 0) or ``None``.
      base, shift, first_bin: uint32 scalars.
      nbins: bins of the bracket (static).
      into: the buffers of earlier leaves, updated in place (aliased); ``None``
        makes new ones of ``rows_total`` rows (default: this leaf's).
      row0: this leaf's first row (static).
      tile: entries per program (static, a multiple of 32).
      interpret: run in Pallas interpret mode (default: off GPU).

    Returns:
      ``(keep, bits)``: the ``(n,)`` bool provisional mask and the buffers.
    """
    _check(x, pruned)
    if tile % 32:
        raise ValueError(f"tile must be a multiple of 32, got {tile}")
    plgpu = _plgpu()
    n = x.shape[0]
    grid = pl.cdiv(n, tile)
    words = tile // 32
    total = _rows(None if into is None else into.hits.shape[0], rows_total, grid, row0)
    params = jnp.stack([base, shift, first_bin]).astype(_U32)
    has_pruned = pruned is not None

    def kernel(params_ref, x_ref, *refs):
        p_ref = refs[0] if has_pruned else None
        keep_ref, bits_ref, hits_ref, below_ref = refs[-4:]
        i = pl.program_id(0)
        row = row0 + i
        offs, valid, key = _load_keys(x_ref, p_ref, n, tile, i * tile)
        below = key < params_ref[0]
        hit = (key >> params_ref[1]) - params_ref[2] < _U32(nbins)
        plgpu.store(keep_ref.at[pl.ds(i * tile, tile)], ~(below | hit), mask=valid)
        below_ref[row] = jnp.sum((valid & below).astype(jnp.int32))
        flag = jnp.where(valid & hit, _U32(1) << (offs & 31).astype(_U32), _U32(0))
        bits = jnp.sum(flag.reshape(words, 32), axis=1, dtype=_U32)  # distinct bits: an OR
        bits_ref[pl.ds(row * words, words)] = bits
        hits_ref[row] = jnp.sum(_popcount(bits))

    buffers = None if into is None else (into.bits.reshape(-1), into.hits, into.below)
    inputs = (params, x, *((pruned,) if has_pruned else ()))
    call, inputs, aliases = _with_aliases(kernel, inputs, buffers, 1)
    keep, bits, hits, below = pl.pallas_call(
        call,
        grid=(grid,),
        out_shape=(
            jax.ShapeDtypeStruct((n,), jnp.bool_),
            jax.ShapeDtypeStruct((total * words,), _U32),
            jax.ShapeDtypeStruct((total,), jnp.int32),
            jax.ShapeDtypeStruct((total,), jnp.int32),
        ),
        input_output_aliases=aliases,
        interpret=_interpret(interpret),
        compiler_params=triton_compiler_params(num_warps, 1),
        name="selection_bracket_pass",
    )(*inputs)
    return keep, HitBits(bits=bits.reshape(total, words), hits=hits, below=below)


def compact(
    x: jax.Array,
    pruned: jax.Array | None,
    flags: HitBits,
    *,
    row0: int = 0,
    into: Compacted | None = None,
    slots: int = SLOTS,
    rows: int = ROWS,
    num_warps: int = 4,
    interpret: bool | None = None,
) -> Compacted:
    """The keys and flat indices of a leaf's flagged entries, compacted per program.

    ``flags`` comes from :func:`bracket_pass` on the same leaf (rows from
    ``row0``). Each program handles ``rows`` rows: a prefix sum of the
    popcounts of a row's words gives each word its first slot, then every
    word hands out its set bits lowest first, one per step, for as many steps
    as the fullest word has bits (about 2 at sparsity 0.9), gathering the
    scores of just those entries. Row ``row0 + g`` of the result holds the
    first ``min(hits, slots)`` flagged entries of program ``g`` in position
    order; ``into`` (earlier leaves' rows) is updated in place.
    """
    _check(x, pruned)
    plgpu = _plgpu()
    n = x.shape[0]
    total, words = flags.bits.shape
    tile = 32 * words
    grid = pl.cdiv(n, tile)
    _rows(total, None, grid, row0)
    if into is not None and (into.hits.shape[0] != total or into.slots != slots):
        raise ValueError(
            f"compacted buffers of {into.hits.shape[0]} rows and {into.slots} slots, "
            f"expected {total} and {slots}"
        )
    has_pruned = pruned is not None

    def kernel(x_ref, *refs):
        p_ref = refs[0] if has_pruned else None
        bits_ref, keys_ref, pos_ref = refs[-3:]
        lane = lax.broadcasted_iota(jnp.int32, (rows * words,), 0)
        prog = jnp.minimum(pl.program_id(0) * rows + lane // words, grid - 1)
        word = lane % words
        w = plgpu.load(bits_ref.at[(row0 + prog) * words + word])
        count = _popcount(w)
        inclusive = jnp.cumsum(count.reshape(rows, words), axis=1).reshape(rows * words)
        first_slot = inclusive - count
        steps = jnp.max(count)

        def step(it, w):
            slot = first_slot + it
            kept = (w != 0) & (slot < slots)
            low = w & (~w + _U32(1))
            index = prog * tile + word * 32 + _popcount(low - _U32(1))
            index = jnp.where(kept, index, prog * tile)
            xv = plgpu.load(x_ref.at[index], mask=kept, other=0.0)
            gone = None
            if p_ref is not None:
                gone = plgpu.load(p_ref.at[index], mask=kept, other=0) != 0
            # Misses aim at the row's spare slot: masked off on GPU, but interpret mode's
            # masked store writes every lane back, which must not overwrite a kept key.
            dst = (row0 + prog) * (slots + 1) + jnp.where(kept, slot, slots)
            plgpu.store(keys_ref.at[dst], float_key(xv, gone), mask=kept)
            plgpu.store(pos_ref.at[dst], index, mask=kept)
            return w & (w - _U32(1))

        lax.fori_loop(0, steps, step, w)

    inputs = (x, *((pruned,) if has_pruned else ()), flags.bits.reshape(-1))
    buffers = None if into is None else (into.keys.reshape(-1), into.positions.reshape(-1))
    call, inputs, aliases = _with_aliases(kernel, inputs, buffers, 0)
    keys, positions = pl.pallas_call(
        call,
        grid=(pl.cdiv(grid, rows),),
        out_shape=(
            jax.ShapeDtypeStruct((total * (slots + 1),), _U32),
            jax.ShapeDtypeStruct((total * (slots + 1),), jnp.int32),
        ),
        input_output_aliases=aliases,
        interpret=_interpret(interpret),
        compiler_params=triton_compiler_params(num_warps, 1),
        name="selection_compact",
    )(*inputs)
    return Compacted(
        keys=keys.reshape(total, slots + 1),
        positions=positions.reshape(total, slots + 1),
        hits=flags.hits,
        below=flags.below,
    )


def finish_mask(
    x: jax.Array,
    pruned: jax.Array | None,
    keep: jax.Array,
    compacted: Compacted,
    row0: int,
    threshold: jax.Array,
    bound: jax.Array,
    exact: jax.Array,
    *,
    tile: int = TILE,
    rows: int = ROWS,
    num_warps: int = 4,
    interpret: bool | None = None,
) -> jax.Array:
    """The keep mask ``~((key < threshold) | ((key == threshold) & (index < bound)))``.

    ``keep`` and the rows of ``compacted`` from ``row0`` come from
    :func:`bracket_pass` on the same leaf (and the same ``tile``). With
    ``exact`` (the threshold lies inside the bracket and no program overflowed
    its slots) each program rewrites only the compacted entries of ``rows``
    bracket programs in ``keep``, in place: every other entry is already right.
    Otherwise each program recomputes those ``rows`` tiles from the scores.
    ``threshold``, ``bound`` (compared with the flat index) and ``exact`` are
    scalars read on the device. Returns ``(n,)`` bool (the buffer of ``keep``).
    """
    _check(x, pruned)
    plgpu = _plgpu()
    n = x.shape[0]
    grid = pl.cdiv(n, tile)
    total, width = compacted.keys.shape
    if keep.shape != (n,) or not 0 <= row0 <= total - grid:
        raise ValueError(
            f"keep{keep.shape} and rows {row0}..{row0 + grid} of {total} do not match {n} "
            f"scores in tiles of {tile}"
        )
    slots = width - 1
    params = jnp.stack([threshold, bound, exact]).astype(_U32)
    has_pruned = pruned is not None

    def chosen(key, index, params_ref):
        return selected(key, index, params_ref[0], params_ref[1])

    def kernel(params_ref, x_ref, *refs):
        p_ref = refs[0] if has_pruned else None
        keys_ref, pos_ref, hits_ref, o_ref = refs[-4:]
        first = pl.program_id(0) * rows
        fix = params_ref[2] != 0

        @pl.when(fix)
        def _():
            # Lane (r, j): slot j of program first + r of the leaf (programs past the end
            # repeat the last). Spare lanes of a program repeat its slot 0, and the lanes of
            # a program without hits rewrite the first entry of its tile with its current
            # (final) value: every lane may store, and equal indices carry equal values.
            lane = lax.broadcasted_iota(jnp.int32, (rows * slots,), 0)
            prog = jnp.minimum(first + lane // slots, grid - 1)
            hits = jnp.minimum(plgpu.load(hits_ref.at[row0 + prog]), slots)
            j = lane % slots
            src = (row0 + prog) * (slots + 1) + jnp.where(j < hits, j, 0)
            key = plgpu.load(keys_ref.at[src])
            index = jnp.where(hits > 0, plgpu.load(pos_ref.at[src]), prog * tile)
            value = ~chosen(key, index, params_ref)
            value = jnp.where(hits > 0, value, plgpu.load(o_ref.at[index]))
            plgpu.store(o_ref.at[index], value)

        @pl.when(~fix)
        def _():
            def tile_body(r, carry):
                start = (first + r) * tile
                offs, valid, key = _load_keys(x_ref, p_ref, n, tile, start)
                value = ~chosen(key, offs, params_ref)
                plgpu.store(o_ref.at[pl.ds(start, tile)], value, mask=valid)
                return carry

            lax.fori_loop(0, rows, tile_body, 0)

    inputs = (
        params,
        x,
        *((pruned,) if has_pruned else ()),
        compacted.keys.reshape(-1),
        compacted.positions.reshape(-1),
        compacted.hits,
    )
    call, inputs, aliases = _with_aliases(kernel, inputs, (keep,), 0)
    return pl.pallas_call(
        call,
        grid=(pl.cdiv(grid, rows),),
        out_shape=jax.ShapeDtypeStruct((n,), jnp.bool_),
        input_output_aliases=aliases,
        interpret=_interpret(interpret),
        compiler_params=triton_compiler_params(num_warps, 1),
        name="selection_finish_mask",
    )(*inputs)
