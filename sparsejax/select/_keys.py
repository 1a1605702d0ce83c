"""Selection keys: float32 scores mapped to ``uint32`` keys that sort like the scores.

Every search (radix, sort, sampled, and the Pallas passes) ranks the same keys, so
all of them select the same groups bit for bit. Keys order the scores as
``numpy.sort`` does: ``-0.0`` ties with ``+0.0`` and NaN ranks above ``+inf``;
groups an existing mask prunes get the lowest key, and N:M non-candidates a key
that is never selected. Ties between equal keys go to the lower *relative position*
(:func:`relative_position`: entry ``i`` of a leaf of ``n`` groups at
``i · ⌊2**32 / n⌋``, about ``i / n`` of the way through it), then to the earlier leaf;
inside one leaf that is the flat index (:func:`flat_index`). Tied leaves therefore
lose the same fraction of their groups: a tie never strips one layer before another.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "KEY_EXCLUDED",
    "KEY_NAN",
    "KEY_PRUNED",
    "flat_index",
    "float_key",
    "nm_candidate_keys",
    "relative_position",
    "relative_scale",
    "selected",
]

_U32 = jnp.uint32

KEY_PRUNED = 0  # already pruned by the existing mask: below every real score
KEY_NAN = 0xFFFFFFFE  # above +inf
KEY_EXCLUDED = 0xFFFFFFFF  # never selectable (N:M non-candidates)


def float_key(
    x: jax.Array, already_pruned: jax.Array | None, zero: jax.Array | None = None
) -> jax.Array:
    """Monotonic uint32 key of float32 scores: a < b  <=>  key(a) < key(b).

    ``-0.0`` maps to the key of ``+0.0``, every NaN to ``KEY_NAN`` (above
    ``+inf``), entries already pruned to ``KEY_PRUNED`` (below ``-inf``).
    ``zero`` (a 0 that XLA cannot constant-fold, loop-variant inside a loop)
    keeps XLA from hoisting the keys out of the counting loop into a
    materialized array: they are recomputed inside each counting fusion. Every
    use of a leaf's keys passes such a ``zero``, so all see identical keys.
    Also traced inside the Pallas kernels, so keys are never written to memory.
    """
    if zero is not None:
        x = x + zero.astype(jnp.float32)  # also turns -0.0 into +0.0
    bits = lax.bitcast_convert_type(x, _U32)
    nan = (bits & _U32(0x7FFFFFFF)) > _U32(0x7F800000)
    bits = jnp.where(bits == _U32(0x80000000), _U32(0), bits)  # -0.0 -> +0.0
    key = jnp.where(bits >= _U32(0x80000000), ~bits, bits | _U32(0x80000000))
    key = jnp.where(nan, _U32(KEY_NAN), key)
    if already_pruned is not None:
        key = jnp.where(already_pruned, _U32(KEY_PRUNED), key)
    return key


def selected(key: jax.Array, index: jax.Array, t: jax.Array, bound: jax.Array) -> jax.Array:
    """The final selection rule: keys below the threshold ``t``, and those equal to it
    at a flat ``index`` (uint32-comparable) below ``bound``."""
    return (key < t) | ((key == t) & (index.astype(_U32) < bound))


def flat_index(shape: tuple[int, ...], zero: jax.Array | None = None) -> jax.Array:
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


def relative_scale(size: int) -> int:
    """``⌊2**32 / size⌋`` (at most ``2**32 - 1``): the step between the relative positions
    of consecutive entries of a leaf of ``size`` groups (a Python int, static)."""
    return min(2**32 // max(int(size), 1), 2**32 - 1)


def relative_position(shape: tuple[int, ...], zero: jax.Array | None = None) -> jax.Array:
    """Relative position (uint32) of every entry of ``shape``: flat index ``i`` times
    :func:`relative_scale` of the size, ``i · ⌊2**32 / n⌋ < 2**32`` (no overflow).

    Strictly increasing in ``i``, so inside a leaf it orders entries as the flat index
    does; across leaves it puts entry ``i`` of ``n`` near ``i / n``. ``zero`` as in
    :func:`flat_index`.
    """
    size = 1
    for d in shape:
        size *= int(d)
    return flat_index(shape, zero) * _U32(relative_scale(size))


def nm_candidate_keys(key: jax.Array, n: int, m: int) -> jax.Array:
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
    return jnp.where(rank < m - n, key, _U32(KEY_EXCLUDED))
