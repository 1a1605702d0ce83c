"""Helpers of the shrink tests: NumPy initialisers, randomised norms and biases, eval-mode runs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ATOL = 1e-5


def numpy_init(seed: int):
    """N(0, 1/fan_in) from NumPy: avoids compiling one random op per shape in every test."""
    gen = np.random.default_rng(seed)

    def init(key, shape, dtype=jnp.float32):
        del key
        fan_in = math.prod(shape[:-1]) if len(shape) > 1 else 1
        return jnp.asarray(gen.standard_normal(shape) / np.sqrt(fan_in), dtype)

    return init


INIT = {"kernel_init": numpy_init(0)}


def count(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def randomize(model: nnx.Module, seed: int = 0) -> nnx.Module:
    """Random biases, norm scales/shifts and running statistics (defaults would hide BN bugs)."""
    model = nnx.clone(model)
    rng = np.random.default_rng(seed)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            n = node.mean[...].shape
            node.mean[...] = jnp.asarray(rng.normal(size=n), jnp.float32)
            node.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, size=n), jnp.float32)
            node.scale[...] = jnp.asarray(rng.normal(size=n), jnp.float32)
            node.bias[...] = jnp.asarray(rng.normal(size=n), jnp.float32)
        elif isinstance(node, (nnx.Linear, nnx.Conv, nnx.LinearGeneral)) and node.bias is not None:
            b = node.bias[...]
            node.bias[...] = jnp.asarray(0.1 * rng.normal(size=b.shape), jnp.float32)
    return model


def run(model: nnx.Module, x: jax.Array, jit: bool = True) -> jax.Array:
    """The model's eval-mode logits; jitted: one compilation instead of one per eager op
    (eager is faster for deep ResNets, whose repeated layers hit the op cache)."""
    model = nnx.clone(model)
    model.eval()
    if not jit:
        return model(x)
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, x)


def batch(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)
