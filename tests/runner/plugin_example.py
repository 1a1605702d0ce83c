"""A user's plug-in module, as ``--plugin tests/runner/plugin_example.py`` imports it.

It registers two pruning methods (a score with a selection, and a function returning the
mask) and a data set (a callable returning arrays); the studies then run them by name.
"""

import jax
import jax.numpy as jnp
import numpy as np

import sparsejax as sj
from sparsejax.data import register_dataset
from sparsejax.runner import register_method


def squared_magnitude(inputs):
    """w², ranked over all layers: same order as |w|, so the masks equal global_magnitude's."""
    return jax.tree.map(jnp.square, inputs.params)


HIDDEN = ("layers/0/kernel$", "layers/1/kernel$")


def hidden_only(inputs, sparsity):
    """A method given as a function: global magnitude over the hidden layers only (the
    classifier kept dense), pruning as many weights as ``sparsity`` of all kernels."""
    leaves = dict(sj.tree.named_leaves(inputs.params))
    kernels = sum(v.size for k, v in leaves.items() if k.endswith("kernel"))
    hidden = sum(v.size for k, v in leaves.items() if k.endswith(("0/kernel", "1/kernel")))
    return sj.prune(sj.scores.magnitude(inputs.params), sparsity * kernels / hidden,
                    params=inputs.params, prunable=list(HIDDEN), scope="global")


def blobs(seed=0):
    """Four Gaussian blobs in 16 dimensions: 400 training / 200 test points."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(4, 16))
    y = rng.integers(0, 4, 600)
    x = centers[y] + rng.normal(size=(600, 16))
    return {"x_train": x[:400], "y_train": y[:400], "x_test": x[400:], "y_test": y[400:]}


register_method("squared_magnitude", squared_magnitude, scope="global", overwrite=True,
                reference="test plug-in", description="w², global ranking")
register_method("hidden_only", prune=hidden_only, overwrite=True,
                description="global |w| over the hidden layers only")
register_dataset("blobs", blobs, num_classes=4, overwrite=True,
                 description="four Gaussian blobs (test plug-in)")
