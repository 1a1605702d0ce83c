"""The Pallas passes of the sampled search compiled by Triton: GPU only (skipped elsewhere).

Off GPU the same kernels run in interpret mode (``tests/select/test_pallas.py`` and
``tests/select/test_sampled.py``); this file checks the Triton versions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.select import _pallas as ks
from sparsejax.select import _plan as plan
from sparsejax.select import prune
from sparsejax.select._keys import float_key

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs an NVIDIA GPU")


@pytest.mark.parametrize("n", [1, 4095, 4096, 1_000_003])
@pytest.mark.parametrize("with_flags", [False, True])
def test_bracket_pass_and_finish_mask(n, with_flags):
    # A second leaf of 5000 scores first fills rows 0..2; the leaf under test follows it
    # in the same compacted buffers (aliased, updated in place).
    rng = np.random.default_rng(n)
    x = jnp.asarray(np.round(rng.standard_normal(n), 3), jnp.float32)
    flags = jnp.asarray(rng.random(n) < 0.3, jnp.int8) if with_flags else None
    other = jnp.asarray(rng.standard_normal(5000), jnp.float32)
    key = np.asarray(float_key(x, None if flags is None else flags != 0))
    srt = np.sort(key)
    base = np.uint32(srt[n // 3])
    row0 = -(-5000 // ks.TILE)
    rows_total = row0 + -(-n // ks.TILE)
    for shift, nbins in ((0, 1024), (4, 1024), (0, 8)):
        first = np.uint32(base >> shift)
        args = (jnp.uint32(base), jnp.uint32(shift), jnp.uint32(first))
        _, bits = ks.bracket_pass(other, None, *args, nbins=nbins, rows_total=rows_total)
        keep, bits = ks.bracket_pass(x, flags, *args, nbins=nbins, into=bits, row0=row0)
        comp = ks.compact(other, None, bits)
        comp = ks.compact(x, flags, bits, row0=row0, into=comp)
        rel = (key >> np.uint32(shift)).astype(np.int64) - int(first)
        inside = (rel >= 0) & (rel < nbins)
        hits = np.add.reduceat(inside.astype(np.int64), np.arange(0, n, ks.TILE))
        below = np.add.reduceat((key < base).astype(np.int64), np.arange(0, n, ks.TILE))
        np.testing.assert_array_equal(np.asarray(comp.hits)[row0:], hits)
        np.testing.assert_array_equal(np.asarray(comp.below)[row0:], below)
        np.testing.assert_array_equal(np.asarray(keep), ~(key < base) & ~inside)
        if hits.max() > ks.SLOTS:
            assert bool(comp.overflow)
            continue
        filled = np.asarray(comp.filled)[row0:]
        positions = np.asarray(comp.positions)[row0:, :-1][filled]
        np.testing.assert_array_equal(positions, np.flatnonzero(inside))
        np.testing.assert_array_equal(np.asarray(comp.keys)[row0:, :-1][filled], key[inside])
        if not inside.any():
            continue
        t = np.uint32(key[inside][inside.sum() // 2])
        bound = np.uint32(np.flatnonzero(key == t)[-1])
        want = ~((key < t) | ((key == t) & (np.arange(n) < bound)))
        for exact in (True, False):
            # finish_mask updates keep in place: give each call its own copy.
            got = ks.finish_mask(
                x,
                flags,
                jnp.array(keep, copy=True),
                comp,
                row0,
                jnp.uint32(t),
                jnp.uint32(bound),
                jnp.asarray(exact),
            )
            np.testing.assert_array_equal(np.asarray(got), want)


def test_sampled_prune_with_kernels_equals_radix():
    assert plan._pallas_passes()
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
