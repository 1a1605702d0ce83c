"""Exact counts beyond ``2**32`` as pairs of ``uint32`` words, with x64 off.

A *wide* count is a ``(hi, lo)`` pair of ``uint32`` arrays of the same shape, the
value ``hi · 2**32 + lo``. Per-leaf counts stay ``uint32`` (fewer than ``2**32``
groups per leaf); their sums over up to ``2**16 - 1`` leaves, and the targets
``round(s·n)`` of segments of any size below ``2**48``, are wide. Every function is
pure and jit-compatible.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "Wide",
    "exclusive_wide_cumsum",
    "round_product",
    "wide_add",
    "wide_from_u32",
    "wide_lt",
    "wide_sub",
    "wide_sum",
    "wide_where",
]

_U32 = jnp.uint32

Wide = tuple[jax.Array, jax.Array]  # (hi, lo) uint32 words of a count < 2**64


def wide_from_u32(c: jax.Array) -> Wide:
    """The wide count of uint32 counts ``c``."""
    return jnp.zeros_like(c), c


def wide_sum(c: jax.Array, axis: int = 0) -> Wide:
    """Exact sum of uint32 counts along ``axis`` (fewer than 2**16 terms)."""
    lo16 = jnp.sum(c & _U32(0xFFFF), axis=axis, dtype=_U32)
    hi16 = jnp.sum(c >> 16, axis=axis, dtype=_U32)
    lo = lo16 + (hi16 << 16)
    return (hi16 >> 16) + (lo < lo16).astype(_U32), lo


def wide_add(a: Wide, b: Wide) -> Wide:
    """``a + b``."""
    lo = a[1] + b[1]
    return a[0] + b[0] + (lo < a[1]).astype(_U32), lo


def wide_sub(a: Wide, b: Wide) -> Wide:
    """``a - b`` for ``a >= b``."""
    return a[0] - b[0] - (a[1] < b[1]).astype(_U32), a[1] - b[1]


def wide_lt(a: Wide, b: Wide) -> jax.Array:
    """``a < b`` (bool)."""
    return (a[0] < b[0]) | ((a[0] == b[0]) & (a[1] < b[1]))


def wide_where(c: jax.Array, a: Wide, b: Wide) -> Wide:
    """``jnp.where(c, a, b)`` word by word."""
    return jnp.where(c, a[0], b[0]), jnp.where(c, a[1], b[1])


def exclusive_wide_cumsum(c: jax.Array) -> Wide:
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


def round_product(s: jax.Array, n: Sequence[int]) -> Wide:
    """Exact round-half-even of ``float32(s[i]) * n[i]`` for ``n[i] < 2**48`` (s clipped to [0, 1]).

    Vectorized over ``i``: ``s`` has shape ``(S,)`` and ``n`` is a static
    sequence of ``S`` Python ints. ``s = M · 2**-shift`` with a 24-bit integer
    ``M``; the product ``M · n`` is formed in 16-bit limbs, then shifted and
    rounded bit by bit. NaN and ``-0.0`` count as ``+0.0``.

    Example:
      >>> hi, lo = round_product(jnp.asarray([0.25, 0.35], jnp.float32), (10, 10))
      >>> lo.tolist()  # 2.5 -> 2; float32(0.35) · 10 = 3.4999998...
      [2, 3]
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
    return wide_add(q, wide_from_u32(inc))
