"""Every test of :mod:`sparsejax.dynamic` runs in full float32 matmul precision."""

import jax
import pytest


@pytest.fixture(autouse=True)
def _full_float32():
    # Gathered and masked paths agree to 1e-5 in float32; on GPUs JAX's default precision
    # lets convolutions run in TF32 (~1e-4 apart), so every comparison here is float32.
    with jax.default_matmul_precision("highest"):
        yield
