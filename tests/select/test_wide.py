"""Exact wide counts (uint32 pairs) and the exact rounding of ``float32(s) · n``."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.select._wide import round_product, wide_sum


def test_exact_rounding_of_float32_sparsity_times_large_counts():
    rng = np.random.default_rng(0)
    ns = [1, 3, 5, 1000, 2**24 + 1, 10**9, 3 * 10**9, 2**40 - 3]
    ss = [0.0, 1.0, 0.1, 0.5, 0.9, 2 / 3, 1e-30, 1e-45, *rng.random(6)]
    pairs = [(np.float32(s), n) for n in ns for s in ss]
    hi, lo = jax.jit(round_product, static_argnums=1)(
        jnp.asarray([s for s, _ in pairs]), tuple(n for _, n in pairs)
    )
    for (s, n), h, lo_ in zip(pairs, np.asarray(hi), np.asarray(lo)):
        want = round(Fraction(float(s)) * n)
        assert (int(h) << 32) | int(lo_) == want, (s, n)
        if n < 2**29:
            assert want == round(float(s) * n)


def test_wide_counts_sum_beyond_uint32():
    c = jnp.asarray([2**32 - 1, 2**32 - 1, 5, 2**31], jnp.uint32)
    hi, lo = wide_sum(c)
    assert (int(hi) << 32) | int(lo) == 2 * (2**32 - 1) + 5 + 2**31
