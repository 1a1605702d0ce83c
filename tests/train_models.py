"""Shared model, optimizer, jitted step and data of the train tests (tests/train/).

The optimizer is a static field of the state and jit caches per function object: sharing
one optimizer, one step function and one batch size (8) shares the compilations across
the test files.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sparsejax import train as sj_train

IN, HIDDEN, CLASSES = 6, 8, 3


class Net(nnx.Module):
    """Linear -> ReLU -> BatchNorm -> Dropout -> Linear: every kind of state the step handles."""

    def __init__(self, rngs: nnx.Rngs, rate: float = 0.25):
        self.fc1 = nnx.Linear(IN, HIDDEN, rngs=rngs)
        self.bn = nnx.BatchNorm(HIDDEN, momentum=0.9, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.fc2 = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.fc2(self.drop(self.bn(nnx.relu(self.fc1(x)))))


def make_net(key):
    return Net(nnx.Rngs(key))


# The optimizer is a static field of the state and jit caches per function object: sharing
# one optimizer, one step function and one batch size (8) shares the compilations.
ADAM = optax.adam(1e-2)
STEP = sj_train.make_train_step()


def plain(tree):
    """Typed PRNG keys -> key data, so that chex.assert_trees_all_close can compare them."""
    is_key = lambda a: jnp.issubdtype(a.dtype, jax.dtypes.prng_key)  # noqa: E731
    return jax.tree.map(lambda a: jax.random.key_data(a) if is_key(a) else a, tree)


def classification_data():
    """40 examples of IN features and CLASSES labels (the tests' training and test set)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=40).astype(np.int32)
    return x, y


def net_state(tx=None, seed=0):
    tx = ADAM if tx is None else tx
    return sj_train.create_train_state(make_net(jax.random.key(seed)), tx, key=jax.random.key(7))
