"""Reference masks and counting helpers shared by the selection tests (``tests/select/``)."""

import jax
import jax.numpy as jnp
import numpy as np


def reference_mask(leaves, k):
    """Keep-mask from a stable sort of the concatenation: the k lowest pruned, ties by index."""
    flat = np.concatenate([np.asarray(x, np.float32).ravel() for x in leaves])
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[:k]] = False
    out, start = [], 0
    for x in leaves:
        out.append(keep[start : start + np.size(x)].reshape(np.shape(x)))
        start += np.size(x)
    return out


def npt(tree):
    """Masks as numpy arrays: assertions then cost no extra XLA compilations."""
    return jax.tree.map(np.asarray, tree)


def kept(mask, params):
    """Entries kept among the ndim >= 2 leaves (broadcast masks counted in full)."""
    return sum(
        int(np.broadcast_to(np.asarray(m), np.shape(p)).sum())
        for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params))
        if np.ndim(p) >= 2
    )


def pruned_count(mask_leaf, shape):
    return int(np.prod(shape)) - int(np.broadcast_to(np.asarray(mask_leaf), shape).sum())


def random_tree(rng, shapes, decimals=1):
    # Few decimals: many ties, which exercises the tie-breaking path.
    return [
        jnp.asarray(np.round(rng.standard_normal(sh), decimals).astype(np.float32)) for sh in shapes
    ]
