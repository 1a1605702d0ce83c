"""Size and compression: parameter counts, ShrinkBench's compression ratio."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from sparsejax import metrics
from sparsejax.masks import init_mask


def toy_params():
    return {
        "dense": {"kernel": jnp.arange(1.0, 13.0).reshape(3, 4), "bias": jnp.array([0.0, 1.0, 0.0, 2.0])},
        "conv": {"kernel": jnp.ones((3, 3, 2, 5))},
    }


def test_size_and_compression():
    params = toy_params()
    assert metrics.num_params(params) == 12 + 4 + 90
    # Biases with exact zeros count as zeros (ShrinkBench counts values).
    assert metrics.num_nonzero(params) == 12 + 2 + 90
    mask = init_mask(params)
    mask["dense"]["kernel"] = jnp.arange(12).reshape(3, 4) < 3  # keep 3 of 12
    mask["conv"]["kernel"] = jnp.array([True, False, False, False, True]).reshape(1, 1, 1, 5)  # 2 filters
    assert metrics.num_nonzero(params, mask) == 3 + 2 + 2 * 18
    assert metrics.compression_ratio(params, mask) == pytest.approx(106 / 41)
    assert metrics.compression_ratio(params) == pytest.approx(106 / 104)
    # Restricted to the kernels.
    assert metrics.num_params(params, prunable=r"kernel") == 102
    assert metrics.compression_ratio(params, mask, prunable=r"kernel") == pytest.approx(102 / 39)
    zero = jax.tree.map(lambda m: jnp.zeros_like(m, bool), mask)
    assert metrics.compression_ratio(params, zero) == float("inf")
    with pytest.raises(ValueError, match="prunable pattern 'kernal' matches no parameter path"):
        metrics.num_params(params, prunable="kernal")
