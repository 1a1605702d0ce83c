"""Input statistics, Hessian, reconstruction error; per-layer sparsities and OWL."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.posttrain import (
    accumulate,
    hessian,
    input_norms,
    input_statistics,
    outlier_ratio,
    owl_sparsities,
    reconstruction_error,
    sparsity_per_layer,
)


def test_statistics_equal_numpy_and_stream():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 10, 6)).astype(np.float32)      # (batch, seq, in)
    flat = x.reshape(-1, 6).astype(np.float64)
    whole = input_statistics(jnp.asarray(x))
    assert float(whole.count) == 30.0
    np.testing.assert_allclose(np.asarray(whole.sum_squares), (flat**2).sum(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(whole.gram), flat.T @ flat, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(hessian(whole)), 2 * flat.T @ flat / 30, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(input_norms(whole)), np.linalg.norm(flat, axis=0),
                               rtol=1e-5)
    streamed = None
    for chunk in x:
        streamed = accumulate(streamed, jnp.asarray(chunk))
    for a, b in zip(streamed, whole, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    norms_only = accumulate(input_statistics(jnp.asarray(x[0]), gram=False), jnp.asarray(x[1]))
    assert norms_only.gram is None and float(norms_only.count) == 20.0
    with pytest.raises(ValueError, match="no Gram matrix"):
        hessian(norms_only)
    with pytest.raises(ValueError, match="inputs with 4 features added to statistics of 6"):
        accumulate(whole, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="layer inputs must be a float array"):
        input_statistics(jnp.ones((2, 3), jnp.int32))


def test_reconstruction_error_is_the_relative_output_error():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5))
    w = rng.normal(size=(5, 3))
    w_hat = np.where(rng.random(size=w.shape) < 0.5, 0.0, w)
    stats = input_statistics(jnp.asarray(x, jnp.float32))
    expected = np.sum((x @ w - x @ w_hat) ** 2)
    got = reconstruction_error(jnp.asarray(w, jnp.float32), jnp.asarray(w_hat, jnp.float32),
                               stats, relative=False)
    assert float(got) == pytest.approx(expected, rel=1e-4)
    rel = reconstruction_error(jnp.asarray(w, jnp.float32), jnp.asarray(w_hat, jnp.float32), stats)
    assert float(rel) == pytest.approx(expected / np.sum((x @ w) ** 2), rel=1e-4)
    zero = input_statistics(jnp.zeros((4, 5)))
    assert float(reconstruction_error(jnp.ones((5, 3)), jnp.zeros((5, 3)), zero)) == 0.0


def test_sparsity_per_layer_uniform_and_overrides():
    paths = ["blocks/0/qkv/kernel", "blocks/0/fc2/kernel", "blocks/1/qkv/kernel"]
    assert sparsity_per_layer(paths, 0.5) == dict.fromkeys(paths, 0.5)
    got = sparsity_per_layer(paths, 0.5, {"qkv": 0.3, "blocks/0/fc2/kernel": 0.7})
    assert got == {paths[0]: 0.3, paths[1]: 0.7, paths[2]: 0.3}
    assert sparsity_per_layer(paths, None) == dict.fromkeys(paths)
    with pytest.raises(ValueError, match="key 'attn' matches no prunable parameter"):
        sparsity_per_layer(paths, 0.5, {"attn": 0.3})
    with pytest.raises(ValueError, match=r"the sparsity of 'blocks/1/qkv/kernel' \(key '1/'\) must be in \[0, 1\], got 1.3"):
        sparsity_per_layer(paths, 0.5, {"1/": 1.3})
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\], got -0.5"):
        sparsity_per_layer(paths, -0.5)
    with pytest.raises(ValueError, match="need an unstructured target"):
        sparsity_per_layer(paths, None, {"qkv": 0.3})


def test_outlier_ratio():
    assert float(outlier_ratio(jnp.array([1.0, 1.0, 1.0, 9.0]), m=2.0)) == 0.25  # mean 3
    two = [jnp.ones((2, 2)), jnp.array([[30.0, 1.0]])]   # 6 entries, mean 35/6
    assert float(outlier_ratio(two, m=5.0)) == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="m must be a positive number"):
        outlier_ratio(two, m=0)


def test_owl_sparsities_closed_form():
    got = owl_sparsities([0.01, 0.02, 0.03, 0.05], 0.7, lam=0.08)
    # densities 2λ·(D − min)/(max − min) = [0, .04, .08, .16], mean .07, shifted to mean .3
    np.testing.assert_allclose(got, 1 - (np.array([0, 0.04, 0.08, 0.16]) - 0.07 + 0.3))
    assert np.mean(got) == pytest.approx(0.7)
    # more outliers -> lower sparsity; equal ratios -> uniform
    assert np.all(np.diff(got) < 0)
    np.testing.assert_allclose(owl_sparsities([0.2, 0.2], 0.6), [0.6, 0.6])
    # weighted by block size: the parameter-weighted mean is the target
    w = owl_sparsities([0.0, 1.0], 0.5, lam=0.1, sizes=[3, 1])
    assert (3 * w[0] + w[1]) / 4 == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"OWL sparsity outside \[0, 1\] for block\(s\) \[\(1,"):
        owl_sparsities([0.0, 1.0], 0.05, lam=0.2)
    with pytest.raises(ValueError, match="sizes must be 2 positive numbers"):
        owl_sparsities([0.0, 1.0], 0.5, sizes=[1, 0])
    with pytest.raises(ValueError, match="lam must be a number >= 0"):
        owl_sparsities([0.0, 1.0], 0.5, lam=-1)
