"""The Pallas passes of the sampled search with real atomics: GPU only (skipped elsewhere).

Off GPU the same kernels run in interpret mode with a scatter-add histogram
(``tests/test_select_sampled.py``); this file checks the Triton version.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import select
from sparsejax.kernels import selection as ks
from sparsejax.select import _float_key, prune

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs an NVIDIA GPU")


@pytest.mark.parametrize("n", [1, 4095, 4096, 1_000_003])
@pytest.mark.parametrize("with_flags", [False, True])
def test_count_and_histogram_with_atomics(n, with_flags):
    rng = np.random.default_rng(n)
    x = jnp.asarray(np.round(rng.standard_normal(n), 3), jnp.float32)
    flags = jnp.asarray(rng.random(n) < 0.3, jnp.int8) if with_flags else None
    key = np.asarray(_float_key(x, None if flags is None else flags != 0))
    srt = np.sort(key)
    base = np.uint32(srt[n // 3])
    for shift, nbins in ((0, 1024), (4, 1024), (0, 8)):
        first = np.uint32(base >> shift)
        below, hist, overflow = ks.count_and_histogram(
            x, flags, jnp.uint32(base), jnp.uint32(shift), jnp.uint32(first), nbins=nbins
        )
        rel = (key >> np.uint32(shift)).astype(np.int64) - int(first)
        inside = (rel >= 0) & (rel < nbins)
        want = np.bincount(rel[inside], minlength=nbins)
        hits = np.add.reduceat(inside, np.arange(0, n, ks.TILE))
        assert int(below) == int((key < base).sum())
        assert bool(overflow) == bool((hits > ks.SLOTS).any())
        if not overflow:
            np.testing.assert_array_equal(np.asarray(hist), want)


@pytest.mark.parametrize("out_dtype", [jnp.bool_, jnp.int8])
def test_keep_mask(out_dtype):
    rng = np.random.default_rng(1)
    n = 100_001
    x = jnp.asarray(np.round(rng.standard_normal(n), 2), jnp.float32)
    key = np.asarray(_float_key(x, None))
    t = np.uint32(np.sort(key)[n // 2])
    got = ks.keep_mask(x, None, jnp.uint32(t), jnp.uint32(5000), out_dtype=out_dtype)
    want = ~((key < t) | ((key == t) & (np.arange(n) < 5000)))
    assert got.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(got), want)


def test_sampled_prune_with_kernels_equals_radix():
    assert select._pallas_passes()
    rng = np.random.default_rng(2)
    scores = [
        jnp.asarray(np.round(rng.standard_normal(sh), 2), jnp.float32)
        for sh in [(2048, 1024), (1024, 4096), (333, 77)]
    ]
    mask = [jnp.asarray(rng.random(s.shape) > 0.2) for s in scores]
    for s in (0.1, 0.5, 0.9):
        for kw in ({}, {"mask": mask}):
            a = prune(scores, s, scope="global", search="sampled", **kw)
            b = prune(scores, s, scope="global", search="radix", **kw)
            for x, y in zip(a, b):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
