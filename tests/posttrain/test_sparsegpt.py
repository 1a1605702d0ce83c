"""SparseGPT on one layer: the NumPy OBS reference, exact counts, λ → ∞, errors.

Every test uses a (40, 12) kernel and the blocks of the reference cases, so the jitted
core compiles once per case (compilation dominates the run time on a CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from obs_reference import obs_prune

import sparsejax as sj
from sparsejax.posttrain import (
    SparseGPT,
    block_counts,
    input_statistics,
    magnitude_mask,
    reconstruction_error,
    sparsegpt,
    wanda_mask,
)


def _problem(d_in=40, d_out=12, n=400, seed=0, correlated=True):
    """Kernel (in, out), inputs X (n, in) with correlated features, Hessian 2XᵀX/n."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d_in, d_in)) * (0.5 if correlated else 0.0) + np.eye(d_in)
    x = (rng.normal(size=(n, d_in)) * rng.uniform(0.2, 3.0, size=d_in)) @ mix
    w = rng.normal(size=(d_in, d_out))
    return w, x, 2.0 * x.T @ x / n


CASES = [  # (block, structure, sparsity, comparison)
    (16, sj.Unstructured(), 0.5, "block"),   # 3 blocks, the last one padded (40 = 16+16+8)
    (16, sj.Unstructured(), 0.6, "row"),
    (40, sj.Unstructured(), 0.7, "block"),   # one block
    (8, sj.NM(2, 4), None, "block"),
    (16, sj.NM(4, 8), None, "block"),
]


@pytest.mark.parametrize(("block", "structure", "sparsity", "comparison"), CASES)
def test_matches_the_numpy_obs_reference(block, structure, sparsity, comparison):
    w, _, h = _problem()
    res = sparsegpt(jnp.asarray(w, jnp.float32), jnp.asarray(h, jnp.float32), sparsity,
                    structure=structure, block_size=block, comparison=comparison)
    nm = (structure.n, structure.m) if isinstance(structure, sj.NM) else None
    counts = None if nm else block_counts(sparsity, 40, block, 1 if comparison == "row" else 12)
    ref_w, ref_keep = obs_prune(w.T, h, counts, block=block, nm=nm, per_row=comparison == "row")
    np.testing.assert_array_equal(np.asarray(res.mask), ref_keep.T)
    np.testing.assert_allclose(np.asarray(res.kernel), ref_w.T, atol=1e-5, rtol=0)
    assert np.all(np.asarray(res.kernel)[~ref_keep.T] == 0.0)  # exactly zero, not ~1e-9


@pytest.mark.parametrize(("block", "structure", "sparsity", "comparison"), CASES[:1] + CASES[3:4])
def test_jit_equals_eager(block, structure, sparsity, comparison):
    w, _, h = _problem(seed=3)
    fn = functools.partial(sparsegpt, sparsity=sparsity, structure=structure, block_size=block,
                           comparison=comparison)
    eager = fn(jnp.asarray(w, jnp.float32), jnp.asarray(h, jnp.float32))
    jitted = jax.jit(fn)(jnp.asarray(w, jnp.float32), jnp.asarray(h, jnp.float32))
    np.testing.assert_array_equal(np.asarray(eager.mask), np.asarray(jitted.mask))
    np.testing.assert_allclose(np.asarray(eager.kernel), np.asarray(jitted.kernel), atol=1e-6)


@pytest.mark.parametrize("structure", [sj.Unstructured(), sj.NM(2, 4)])
def test_reconstruction_error_below_magnitude_and_wanda(structure):
    w, x, h = _problem(n=1000, seed=1)
    stats = input_statistics(jnp.asarray(x, jnp.float32))
    s = 0.5 if isinstance(structure, sj.Unstructured) else None
    kernel = jnp.asarray(w, jnp.float32)
    sg = sparsegpt(kernel, jnp.asarray(h, jnp.float32), s, structure=structure,
                   block_size=16 if s else 8)
    errors = {"sparsegpt": reconstruction_error(kernel, sg.kernel, stats)}
    for name, mask in (("magnitude", magnitude_mask(kernel, s, structure=structure)),
                       ("wanda", wanda_mask(kernel, jnp.sqrt(stats.sum_squares), s,
                                            structure=structure))):
        errors[name] = reconstruction_error(kernel, jnp.where(mask, kernel, 0.0), stats)
    # ‖WX − ŴX‖² directly from the inputs agrees with the Gram-matrix form
    direct = np.sum((x @ w - x @ np.asarray(sg.kernel, np.float64)) ** 2) / np.sum((x @ w) ** 2)
    assert float(errors["sparsegpt"]) == pytest.approx(direct, rel=1e-4)
    # OBS reconstruction: well below both selection-only methods on correlated inputs
    assert float(errors["sparsegpt"]) < 0.8 * min(float(errors["wanda"]),
                                                  float(errors["magnitude"]))


@pytest.mark.parametrize(("structure", "sparsity", "comparison", "reference"), [
    (sj.Unstructured(), 0.5, "row", dict(comparison="row")),
    (sj.Unstructured(), 0.7, "block", dict(comparison="layer")),
    (sj.NM(2, 4), None, "block", dict(structure=sj.NM(2, 4))),
])
def test_infinite_dampening_is_magnitude_pruning(structure, sparsity, comparison, reference):
    # λ → ∞: H ≈ λI, so the scores are w² and the error feedback vanishes. With one block
    # of all columns, "row" is per-output-unit magnitude and "block" per-layer magnitude.
    w, _, h = _problem(seed=2)
    kernel = jnp.asarray(w, jnp.float32)
    res = sparsegpt(kernel, jnp.asarray(h, jnp.float32), sparsity, structure=structure,
                    block_size=40 if sparsity else 8, damp=1e9, comparison=comparison)
    mask = magnitude_mask(kernel, sparsity, **reference)
    np.testing.assert_array_equal(np.asarray(res.mask), np.asarray(mask))
    np.testing.assert_allclose(np.asarray(res.kernel), np.where(mask, w, 0.0), rtol=1e-5,
                               atol=1e-6)


@given(sparsity=st.floats(0.0, 1.0), comparison=st.sampled_from(["block", "row"]))
def test_exact_counts(sparsity, comparison):
    w, _, h = _problem(n=100, seed=4)
    res = sparsegpt(jnp.asarray(w, jnp.float32), jnp.asarray(h, jnp.float32), sparsity,
                    block_size=16, comparison=comparison)
    pruned = ~np.asarray(res.mask)
    if comparison == "row":
        assert set(pruned.sum(axis=0)) == {round(sparsity * 40)}
    else:
        assert pruned.sum() == round(sparsity * 40 * 12)
    assert np.all(np.asarray(res.kernel)[pruned] == 0.0)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_nm_keeps_exactly_n_of_every_m_inputs(n, m):
    w, _, h = _problem(seed=5)
    res = sparsegpt(jnp.asarray(w, jnp.float32), jnp.asarray(h, jnp.float32),
                    structure=sj.NM(n, m), block_size=2 * m)
    kept = np.asarray(res.mask).reshape(40 // m, m, 12).sum(axis=1)
    assert np.all(kept == n)


def test_block_counts_sum_to_the_layer_count():
    np.testing.assert_array_equal(block_counts(0.5, 40, 16, 12), [96, 96, 48])
    counts = block_counts(0.6, 1000, 128, 7)
    assert counts.sum() == round(0.6 * 7000) and len(counts) == 8
    assert np.all(np.abs(counts - 0.6 * 7 * np.diff(np.minimum(np.arange(0, 1025, 128), 1000)))
                  <= 1)


def test_dead_inputs_get_zero_weights():
    w, x, _ = _problem(seed=6)
    x[:, 3] = 0.0  # feature 3 never fires
    h = 2 * x.T @ x / x.shape[0]
    res = sparsegpt(jnp.asarray(w, jnp.float32), jnp.asarray(h, jnp.float32), 0.25,
                    block_size=16)
    assert np.all(np.isfinite(np.asarray(res.kernel))) and np.isfinite(float(res.loss))
    assert np.all(np.asarray(res.kernel)[3] == 0.0)


def test_method_config_and_dtype():
    w, x, _ = _problem(seed=7)
    stats = input_statistics(jnp.asarray(x, jnp.float32))
    res = SparseGPT(block_size=16).prune_layer(jnp.asarray(w, jnp.bfloat16), stats, 0.5,
                                               sj.Unstructured())
    assert res.kernel.dtype == jnp.bfloat16 and int((~res.mask).sum()) == 240
    with pytest.raises(ValueError, match="block_size must be a positive integer, got 0"):
        SparseGPT(block_size=0)
    with pytest.raises(ValueError, match="damp must be a finite number >= 0, got -1"):
        SparseGPT(damp=-1)
    with pytest.raises(ValueError, match="comparison must be one of"):
        SparseGPT(comparison="layer")
    with pytest.raises(ValueError, match="'fc1': SparseGPT needs the Gram matrix"):
        SparseGPT().prune_layer(jnp.ones((4, 2)), None, 0.5, sj.Unstructured(), "fc1")


def test_errors_name_the_layer():
    w = jnp.ones((8, 4))
    h = jnp.eye(8)
    with pytest.raises(ValueError, match=r"'l1': Hessian of shape \(4, 4\) for a kernel with 8"):
        sparsegpt(w, jnp.eye(4), 0.5, path="l1")
    with pytest.raises(ValueError, match="'l1': the Hessian holds NaN or inf"):
        sparsegpt(w, h.at[0, 1].set(jnp.nan), 0.5, path="l1")
    with pytest.raises(ValueError, match="'l1': the damped Hessian is not positive definite"):
        sparsegpt(w, -jnp.eye(8), 0.5, damp=0.0, path="l1")
    with pytest.raises(ValueError, match="'l1': sparsity must be in"):
        sparsegpt(w, h, 1.5, path="l1")
    with pytest.raises(ValueError, match="'l1': sparsity is required"):
        sparsegpt(w, h, path="l1")
    with pytest.raises(ValueError, match="'l1': 2:4 sparsity is 0.5; got sparsity=0.3"):
        sparsegpt(w, h, 0.3, structure=sj.NM(2, 4), path="l1")
    with pytest.raises(ValueError, match="'kernel': block_size=6 must be a multiple of m=4"):
        sparsegpt(jnp.ones((16, 4)), jnp.eye(16), structure=sj.NM(2, 4), block_size=6)
    with pytest.raises(ValueError, match=r"'l1': post-training pruning needs a float \(in, out\)"):
        sparsegpt(jnp.ones((2, 8, 4)), h, 0.5, path="l1")
    with pytest.raises(ValueError, match="Unstructured"):
        sparsegpt(w, h, 0.5, structure=sj.Neurons())
