"""Pallas (Triton) passes of global selection's sampled search, for NVIDIA GPUs.

:func:`sparsejax.prune` with ``search="sampled"`` reads every score twice:
once to count the keys below a sampled bracket and histogram the keys inside
it, once to write the mask. In XLA the first read is a reduction plus a
scatter whose updates are all the entries (on an H100 the scatter ran at
about a quarter of the memory bandwidth: 4.7 of the 8.6 ms of a 1e9-score
selection). These kernels do each read in one streaming pass:

* :func:`count_and_histogram` — per program of ``TILE`` scores, the number of
  keys below ``base`` and the keys inside the bracket, compacted by a prefix
  sum into ``SLOTS`` slots of the program (no atomics: Pallas' atomic adds are
  acquire-release and were slower than XLA's scatter); XLA histograms the
  compacted keys (under 2% of the entries).
* :func:`keep_mask` — the keep mask ``~((key < t) | (key == t & index < bound))``.

Keys are :func:`sparsejax.select._float_key` of the scores (and of the
``pruned`` flags of an existing mask), computed in the kernel, so they are
never written to memory. Off GPU the kernels run in Pallas interpret mode
(``interpret=None``); ``tests/test_selection_kernels.py`` checks the Triton
versions on a GPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from sparsejax.kernels.block_sparse import _triton_compiler_params

__all__ = ["MAX_ENTRIES", "SLOTS", "TILE", "count_and_histogram", "keep_mask"]

#: Entries per program (one vectorized load of ``TILE`` float32 per program). On an
#: H100, 55M scores: count + compact 118 µs at 2048 (slots 32) or 1024, 167 µs at 4096,
#: 275 µs at 8192; the mask kernel streams at about 3.1 TB/s (90 µs).
TILE = 2048
#: Compacted in-bracket keys per program of :func:`count_and_histogram`. The bins
#: cover at most about 1.2% of the keys (twice the sampled bracket at sparsity 0.5):
#: about 25 of a tile of 2048, so 64 slots overflow with probability ~1e-11 per tile
#: for scores in random order.
SLOTS = 64
#: Largest leaf the kernels take (int32 flat indices).
MAX_ENTRIES = 2**31 - TILE


def _plgpu():
    from jax.experimental.pallas import triton as plgpu

    return plgpu


def _load_keys(x_ref, p_ref, n: int, tile: int):
    """Flat indices, in-range flags and keys of this program's ``tile`` entries."""
    from sparsejax.select import _float_key

    plgpu = _plgpu()
    start = pl.program_id(0) * tile
    offs = start + lax.broadcasted_iota(jnp.int32, (tile,), 0)
    valid = offs < n
    x = plgpu.load(x_ref.at[pl.ds(start, tile)], mask=valid, other=0.0)
    pruned = None
    if p_ref is not None:
        pruned = plgpu.load(p_ref.at[pl.ds(start, tile)], mask=valid, other=0) != 0
    return offs, valid, _float_key(x, pruned)


def _interpret(interpret: bool | None) -> bool:
    return jax.default_backend() != "gpu" if interpret is None else interpret


def _check(x: jax.Array, pruned: jax.Array | None) -> None:
    if x.ndim != 1 or x.dtype != jnp.float32:
        raise ValueError(f"scores must be a flat float32 array, got {x.dtype}{x.shape}")
    if x.shape[0] > MAX_ENTRIES:
        raise ValueError(f"at most {MAX_ENTRIES} entries per call, got {x.shape[0]}")
    if pruned is not None and pruned.shape != x.shape:
        raise ValueError(f"pruned flags of shape {pruned.shape} for scores of shape {x.shape}")


def count_and_histogram(
    x: jax.Array,
    pruned: jax.Array | None,
    base: jax.Array,
    shift: jax.Array,
    first_bin: jax.Array,
    *,
    nbins: int,
    tile: int = TILE,
    slots: int = SLOTS,
    num_warps: int = 4,
    interpret: bool | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Keys below ``base`` and the histogram of the keys in the bracket, in one read.

    Each program reads ``tile`` scores, counts its keys below ``base`` and
    compacts its keys inside the bracket (``first_bin <= key >> shift <
    first_bin + nbins``) into its own ``slots`` output slots (a prefix sum of
    the hits; no atomics). XLA then histograms the few compacted keys. A
    program with more than ``slots`` hits (scores concentrated in the
    bracket: heavy ties, sorted data) sets ``overflow``; the histogram then
    misses keys, and the caller must not use it.

    Args:
      x: ``(n,)`` float32 scores.
      pruned: ``(n,)`` int8 flags (nonzero: already pruned, key 0) or ``None``.
      base, shift, first_bin: uint32 scalars; bin ``j`` holds the keys with
        ``key >> shift == first_bin + j``.
      nbins: number of bins (static).
      slots: compacted keys kept per program (static).
      interpret: run in Pallas interpret mode (default: off GPU).

    Returns:
      ``(below, hist, overflow)``: uint32 ``()``, uint32 ``(nbins,)``, bool ``()``.
    """
    _check(x, pruned)
    plgpu = _plgpu()
    n = x.shape[0]
    grid = pl.cdiv(n, tile)
    params = jnp.stack([base, shift, first_bin]).astype(jnp.uint32)
    has_pruned = pruned is not None

    def kernel(params_ref, x_ref, *refs):
        p_ref = refs[0] if has_pruned else None
        keys_ref, hits_ref, below_ref = refs[-3:]
        i = pl.program_id(0)
        _, valid, key = _load_keys(x_ref, p_ref, n, tile)
        below_ref[i] = jnp.sum((valid & (key < params_ref[0])).astype(jnp.int32))
        hit = valid & ((key >> params_ref[1]) - params_ref[2] < jnp.uint32(nbins))
        hits = hit.astype(jnp.int32)
        pos = jnp.cumsum(hits) - 1
        keep = hit & (pos < slots)
        # Misses aim at a spare slot: masked off on GPU, but interpret mode's masked
        # store writes every lane back, which must not overwrite a kept key.
        dst = i * (slots + 1) + jnp.where(keep, pos, slots)
        plgpu.store(keys_ref.at[dst], key, mask=keep)
        hits_ref[i] = jnp.sum(hits)

    inputs = (params, x, *((pruned,) if has_pruned else ()))
    keys, hits, below = pl.pallas_call(
        kernel,
        grid=(grid,),
        out_shape=(
            jax.ShapeDtypeStruct((grid * (slots + 1),), jnp.uint32),
            jax.ShapeDtypeStruct((grid,), jnp.int32),
            jax.ShapeDtypeStruct((grid,), jnp.int32),
        ),
        interpret=_interpret(interpret),
        compiler_params=_triton_compiler_params(num_warps, 1),
        name="selection_count_and_compact",
    )(*inputs)
    u32 = jnp.uint32
    filled = lax.broadcasted_iota(jnp.int32, (grid, slots), 1) < hits[:, None]
    rel = (keys.reshape(grid, slots + 1)[:, :slots] >> params[1]) - params[2]
    from sparsejax.select import _histogram  # select imports this module lazily

    hist = _histogram(rel.reshape(-1), filled.reshape(-1), nbins)
    return jnp.sum(below.astype(u32), dtype=u32), hist, jnp.any(hits > slots)


def keep_mask(
    x: jax.Array,
    pruned: jax.Array | None,
    threshold: jax.Array,
    bound: jax.Array,
    *,
    tile: int = TILE,
    num_warps: int = 4,
    interpret: bool | None = None,
    out_dtype=jnp.bool_,
) -> jax.Array:
    """``~((key < threshold) | ((key == threshold) & (index < bound)))`` as ``(n,)`` bool.

    ``threshold`` and ``bound`` are uint32 scalars (``bound`` compares with the
    flat index of the entry). ``out_dtype``: the kernel's store type (bool, or
    int8 compared with 0 afterwards).
    """
    _check(x, pruned)
    plgpu = _plgpu()
    n = x.shape[0]
    params = jnp.stack([threshold, bound]).astype(jnp.uint32)
    has_pruned = pruned is not None

    def kernel(params_ref, x_ref, *refs):
        p_ref = refs[0] if has_pruned else None
        o_ref = refs[-1]
        offs, valid, key = _load_keys(x_ref, p_ref, n, tile)
        t = params_ref[0]
        selected = (key < t) | ((key == t) & (offs.astype(jnp.uint32) < params_ref[1]))
        start = pl.program_id(0) * tile
        plgpu.store(o_ref.at[pl.ds(start, tile)], (~selected).astype(out_dtype), mask=valid)

    inputs = (params, x, *((pruned,) if has_pruned else ()))
    out = pl.pallas_call(
        kernel,
        grid=(pl.cdiv(n, tile),),
        out_shape=jax.ShapeDtypeStruct((n,), out_dtype),
        interpret=_interpret(interpret),
        compiler_params=_triton_compiler_params(num_warps, 1),
        name="selection_keep_mask",
    )(*inputs)
    return out if out.dtype == jnp.bool_ else out != 0
