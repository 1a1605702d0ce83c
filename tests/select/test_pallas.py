"""The Pallas passes of the sampled search in interpret mode (any device) against numpy.

``tests/select/test_pallas_gpu.py`` checks the Triton versions on a GPU.
"""


import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.select import _pallas as selection_kernels
from sparsejax.select._keys import float_key


def _interpreted_bracket(x, flags, base, shift, nbins, **kw):
    first = np.uint32(base >> np.uint32(shift))
    return selection_kernels.bracket_pass(
        jnp.asarray(x),
        flags,
        jnp.uint32(base),
        jnp.uint32(shift),
        jnp.uint32(first),
        nbins=nbins,
        interpret=True,
        **kw,
    )


@pytest.mark.parametrize("with_flags", [False, True])
def test_interpreted_bracket_pass_and_finish_mask_equal_numpy(with_flags):
    # Two leaves share the compacted buffers (the second updates the first's in place).
    # Interpret mode writes masked-off lanes of a store back: they must not clobber kept
    # keys, and finish_mask's spare lanes repeat a kept entry.
    rng = np.random.default_rng(6)
    tile, slots = selection_kernels.TILE, selection_kernels.SLOTS
    sizes = (10_000, 3_000)
    rows = np.concatenate([[0], np.cumsum([-(-n // tile) for n in sizes])])
    xs = [jnp.asarray(np.round(rng.standard_normal(n), 3), jnp.float32) for n in sizes]
    flags = [jnp.asarray(rng.random(n) < 0.2, jnp.int8) if with_flags else None for n in sizes]
    keys = [
        np.asarray(float_key(x, None if f is None else f != 0)) for x, f in zip(xs, flags)
    ]
    srt = np.sort(keys[0])
    for base, shift, nbins in ((srt[5000], 0, 64), (srt[9000], 0, 32), (srt[3000], 4, 8)):
        bits, comp, provisional, inside = None, None, [], []
        for i, (x, f, key) in enumerate(zip(xs, flags, keys)):
            keep, bits = _interpreted_bracket(
                x, f, base, shift, nbins, into=bits, row0=int(rows[i]), rows_total=int(rows[-1])
            )
            rel = (key >> np.uint32(shift)).astype(np.int64) - int(base >> np.uint32(shift))
            inside.append((rel >= 0) & (rel < nbins))
            np.testing.assert_array_equal(np.asarray(keep), ~(key < base) & ~inside[-1])
            provisional.append(keep)
        for i, (x, f, ins) in enumerate(zip(xs, flags, inside)):
            want_bits = np.zeros(int(rows[i + 1] - rows[i]) * tile, bool)
            want_bits[: ins.size] = ins
            got_bits = np.asarray(bits.bits)[rows[i] : rows[i + 1]].reshape(-1, 1)
            got_bits = (got_bits >> np.arange(32, dtype=np.uint32)) & 1
            np.testing.assert_array_equal(got_bits.reshape(-1).astype(bool), want_bits)
            comp = selection_kernels.compact(
                x, f, bits, row0=int(rows[i]), into=comp, rows=2, interpret=True
            )
        filled = np.asarray(comp.filled)
        assert not bool(comp.overflow)
        for i, (key, ins) in enumerate(zip(keys, inside)):
            r = slice(rows[i], rows[i + 1])
            hits = np.add.reduceat(ins.astype(np.int64), np.arange(0, key.size, tile))
            np.testing.assert_array_equal(np.asarray(comp.hits)[r], hits)
            below = np.add.reduceat((key < base).astype(np.int64), np.arange(0, key.size, tile))
            np.testing.assert_array_equal(np.asarray(comp.below)[r], below)
            assert hits.max() <= slots
            got_pos = np.asarray(comp.positions)[r, :-1][filled[r]]
            np.testing.assert_array_equal(got_pos, np.flatnonzero(ins))
            np.testing.assert_array_equal(np.asarray(comp.keys)[r, :-1][filled[r]], key[ins])
        # The threshold inside the bracket: exact mode fixes only the compacted entries.
        t = np.uint32(keys[0][inside[0]][inside[0].sum() // 2])
        for i, (x, f, key) in enumerate(zip(xs, flags, keys)):
            ties = np.flatnonzero(key == t)
            bound = np.uint32(ties[-1] if ties.size else key.size // 2)
            want = ~((key < t) | ((key == t) & (np.arange(key.size) < bound)))
            for exact in (True, False):
                got = selection_kernels.finish_mask(
                    x,
                    f,
                    provisional[i],
                    comp,
                    int(rows[i]),
                    jnp.uint32(t),
                    jnp.uint32(bound),
                    jnp.asarray(exact),
                    interpret=True,
                )
                np.testing.assert_array_equal(np.asarray(got), want)
    # A threshold outside the bracket: only the recomputing mode is right.
    t = np.uint32(srt[100])

    def recompute(row0):
        args = (jnp.uint32(t), jnp.uint32(0), jnp.asarray(False))
        return selection_kernels.finish_mask(
            xs[0], flags[0], provisional[0], comp, row0, *args, interpret=True
        )

    np.testing.assert_array_equal(np.asarray(recompute(0)), ~(keys[0] < t))
    with pytest.raises(ValueError, match=r"rows 4\.\.9 of 7 do not match"):
        recompute(4)
    with pytest.raises(ValueError, match=r"rows 6\.\.11 of a leaf outside the 7 rows"):
        _interpreted_bracket(xs[0], flags[0], srt[10], 0, 8, into=bits, row0=6)
    with pytest.raises(ValueError, match=r"rows 6\.\.11 of a leaf outside the 7 rows"):
        selection_kernels.compact(xs[0], flags[0], bits, row0=6, interpret=True)
    with pytest.raises(ValueError, match="tile must be a multiple of 32, got 1000"):
        _interpreted_bracket(xs[0], flags[0], srt[10], 0, 8, tile=1000)
