"""Wanda and magnitude masks of one layer: the formula, exact counts, N:M, jit == eager."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sparsejax as sj
from sparsejax.posttrain import (
    Magnitude,
    Wanda,
    input_statistics,
    kernel_mask,
    magnitude_mask,
    wanda_mask,
    wanda_scores,
)


def _layer(d_in=32, d_out=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, d_in)) * rng.uniform(0.1, 4.0, size=d_in)
    return rng.normal(size=(d_in, d_out)).astype(np.float32), x.astype(np.float32)


def _lowest_per_column(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep mask: the k lowest of every column pruned (ties to the lower index)."""
    ranks = np.argsort(np.argsort(scores, axis=0, kind="stable"), axis=0, kind="stable")
    return ranks >= k


def test_wanda_scores_equal_the_formula():
    w, x = _layer()
    norms = np.sqrt((x.astype(np.float64) ** 2).sum(axis=0))          # ‖X_j‖₂ over tokens
    stats = input_statistics(jnp.asarray(x))
    got = wanda_scores(jnp.asarray(w), jnp.sqrt(stats.sum_squares))
    np.testing.assert_allclose(np.asarray(got), np.abs(w) * norms[:, None], rtol=1e-5)
    mask = wanda_mask(jnp.asarray(w), jnp.asarray(norms, jnp.float32), 0.5)
    np.testing.assert_array_equal(np.asarray(mask),
                                  _lowest_per_column(np.abs(w) * norms[:, None], 16))


def test_wanda_differs_from_magnitude_where_inputs_are_scaled():
    w = jnp.array([[1.0], [2.0], [3.0], [4.0]])
    norms = jnp.array([10.0, 1.0, 1.0, 1.0])     # input 0 is loud: its small weight matters
    assert np.asarray(wanda_mask(w, norms, 0.5))[:, 0].tolist() == [True, False, False, True]
    assert np.asarray(magnitude_mask(w, 0.5))[:, 0].tolist() == [False, False, True, True]


@given(sparsity=st.floats(0.0, 1.0), seed=st.integers(0, 3))
def test_per_row_and_per_layer_counts_are_exact(sparsity, seed):
    w, x = _layer(d_in=20, d_out=6, seed=seed)
    norms = jnp.asarray(np.sqrt((x**2).sum(0)))
    row = ~np.asarray(wanda_mask(jnp.asarray(w), norms, sparsity))
    assert set(row.sum(axis=0)) == {round(sparsity * 20)}
    layer = ~np.asarray(magnitude_mask(jnp.asarray(w), sparsity, comparison="layer"))
    assert layer.sum() == round(sparsity * 120)
    np.testing.assert_array_equal(
        ~np.asarray(magnitude_mask(jnp.asarray(w), sparsity, comparison="row")),
        ~_lowest_per_column(np.abs(w), round(sparsity * 20)))


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_nm_keeps_exactly_n_of_every_m_along_the_input_axis(n, m, method):
    w, x = _layer(d_in=32, d_out=8, seed=1)
    norms = jnp.asarray(np.sqrt((x**2).sum(0)))
    if method == "wanda":
        mask = wanda_mask(jnp.asarray(w), norms, structure=sj.NM(n, m))
        scores = np.abs(w) * np.asarray(norms)[:, None]
    else:
        mask = magnitude_mask(jnp.asarray(w), structure=sj.NM(n, m))
        scores = np.abs(w)
    groups = np.asarray(mask).reshape(32 // m, m, 8)
    assert np.all(groups.sum(axis=1) == n)
    # the kept ones are the n highest scores of each group
    s = scores.reshape(32 // m, m, 8)
    kept_min = np.where(groups, s, np.inf).min(axis=1)
    pruned_max = np.where(groups, -np.inf, s).max(axis=1)
    assert np.all(kept_min >= pruned_max)


@pytest.mark.parametrize("structure", [sj.Unstructured(), sj.NM(2, 4)])
def test_jit_equals_eager(structure):
    w, x = _layer(seed=2)
    norms = jnp.asarray(np.sqrt((x**2).sum(0)))
    s = 0.6 if isinstance(structure, sj.Unstructured) else None
    eager = wanda_mask(jnp.asarray(w), norms, s, structure=structure)
    jitted = jax.jit(lambda k, nrm: wanda_mask(k, nrm, s, structure=structure))(w, norms)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))
    eager = magnitude_mask(jnp.asarray(w), s, structure=structure)
    jitted = jax.jit(lambda k: magnitude_mask(k, s, structure=structure))(w)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))


def test_method_configs_zero_the_pruned_weights():
    w, x = _layer(seed=3)
    stats = input_statistics(jnp.asarray(x), gram=False)
    for method in (Wanda(), Magnitude(), Magnitude(comparison="row")):
        res = method.prune_layer(jnp.asarray(w), stats, 0.5, sj.Unstructured(), "fc")
        np.testing.assert_array_equal(np.asarray(res.kernel), np.where(res.mask, w, 0.0))
        assert int((~res.mask).sum()) == 128 and res.loss is None
    assert Wanda().statistics == "norms" and Magnitude().statistics == "none"


def test_errors_name_the_layer():
    w = jnp.ones((8, 4))
    with pytest.raises(ValueError, match=r"'fc': input norms of shape \(4,\) for a kernel with 8"):
        wanda_scores(w, jnp.ones(4), "fc")
    with pytest.raises(ValueError, match="'fc': Wanda needs the statistics"):
        Wanda().prune_layer(w, None, 0.5, sj.Unstructured(), "fc")
    with pytest.raises(ValueError, match="'fc': input statistics of 3 features for a kernel"):
        Wanda().prune_layer(w, input_statistics(jnp.ones((2, 3))), 0.5, sj.Unstructured(), "fc")
    with pytest.raises(ValueError, match="'fc': sparsity must be in"):
        magnitude_mask(w, -0.1, path="fc")
    with pytest.raises(TypeError, match="'fc': sparsity must be a float"):
        magnitude_mask(w, "half", path="fc")
    with pytest.raises(ValueError, match="comparison must be one of"):
        kernel_mask(w, 0.5, comparison="global")
    with pytest.raises(ValueError, match="Wanda.comparison must be one of"):
        Wanda(comparison="block")
    with pytest.raises(ValueError, match="not divisible by 8"):
        magnitude_mask(jnp.ones((12, 4)), structure=sj.NM(4, 8), path="fc")
    with pytest.raises(ValueError, match="input axis"):
        magnitude_mask(w, structure=sj.NM(2, 4, axis=-1))
