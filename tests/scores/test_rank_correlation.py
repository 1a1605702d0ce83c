"""Spearman's ρ and the per-layer rank correlation with the oracle."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import scores


def test_spearman_closed_forms():
    a = jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0])
    assert float(scores.spearman(a, a)) == pytest.approx(1.0)
    assert float(scores.spearman(a, -a)) == pytest.approx(-1.0)
    # no ties: ρ = 1 − 6Σd²/(n(n²−1)) = 1 − 24/120
    assert float(scores.spearman(a, jnp.asarray([2.0, 1.0, 4.0, 3.0, 5.0]))) == pytest.approx(0.8)
    # ties get average ranks [1, 2.5, 2.5, 4]: ρ = 4.5 / √(4.5·5)
    rho = jax.jit(scores.spearman)(jnp.asarray([1.0, 2.0, 2.0, 3.0]), jnp.arange(4.0))
    assert float(rho) == pytest.approx(4.5 / math.sqrt(22.5), rel=1e-6)
    assert math.isnan(float(scores.spearman(jnp.ones(4), jnp.arange(4.0))))
    with pytest.raises(ValueError, match="equal size"):
        scores.spearman(jnp.ones(3), jnp.ones(4))


def test_spearman_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=40).astype(np.float32)  # many ties
    b = (a + rng.integers(0, 3, size=40)).astype(np.float32)
    assert float(scores.spearman(a, b)) == pytest.approx(stats.spearmanr(a, b)[0], rel=1e-5)


def test_rank_correlation_per_layer_and_errors():
    crit = {"l1": {"kernel": jnp.asarray([[1.0, 2.0, 3.0]])}, "l2": {"kernel": jnp.asarray([[3.0, 2.0, 1.0]])},
            "bias": jnp.zeros(())}
    orac = {"l1": {"kernel": jnp.asarray([[0.1, 0.2, 0.3]])}, "l2": {"kernel": jnp.asarray([[0.1, 0.2, 0.3]])},
            "bias": jnp.zeros(())}
    out = scores.rank_correlation(crit, orac)
    assert list(out) == ["l1/kernel", "l2/kernel"]
    assert float(out["l1/kernel"]) == pytest.approx(1.0)
    assert float(out["l2/kernel"]) == pytest.approx(-1.0)
    bad = {**orac, "l2": {"kernel": jnp.ones((1, 4))}}
    with pytest.raises(ValueError, match="'l2/kernel' have shape \\(1, 3\\).*\\(1, 4\\)"):
        scores.rank_correlation(crit, bad)
