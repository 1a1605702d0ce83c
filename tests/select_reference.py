"""Reference masks and counting helpers shared by the selection tests (``tests/select/``)."""

import jax
import jax.numpy as jnp
import numpy as np


def reference_mask(leaves, k):
    """Keep-mask of the k lowest scores over all leaves, with prune's documented tie rule.

    numpy's lexicographic sort by (score, relative position, leaf): ``-0.0`` equals
    ``+0.0`` and NaN ranks last (numpy's order); entry ``i`` of a leaf of ``n`` entries has
    the relative position ``i * floor(2**32 / n)`` (about ``i / n``), so ties go to the
    lower relative position, then to the earlier leaf; inside one leaf that is the flat
    index (a single leaf: a stable sort).
    """
    flats = [np.asarray(x, np.float32).ravel().astype(np.float64) + 0.0 for x in leaves]
    score = np.concatenate(flats) if flats else np.zeros(0)
    rel = np.concatenate(
        [np.arange(f.size, dtype=np.int64) * min(2**32 // max(f.size, 1), 2**32 - 1) for f in flats]
    )
    leaf = np.concatenate([np.full(f.size, i) for i, f in enumerate(flats)])
    keep = np.ones(score.size, bool)
    keep[np.lexsort((leaf, rel, score))[:k]] = False
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
