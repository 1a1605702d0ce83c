"""Small gated models for the tests of :mod:`sparsejax.dynamic` (imported by name)."""

import jax
from flax import nnx

from sparsejax import dynamic as dy


def mnist1d(gate="fbs", seed=0):
    return dy.GatedMNIST1DCNN(gate=gate, rngs=nnx.Rngs(seed))


def random_predictors(model, key, scale=1.0):
    """Give the predictors random weights so that the gates depend on the input."""
    for i, name in enumerate(model.gated_layers):
        layer = getattr(model, name)
        k = jax.random.fold_in(key, i)
        layer.gate.kernel[...] = scale * jax.random.normal(k, layer.gate.kernel.shape)
    return model
