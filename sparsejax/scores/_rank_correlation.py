"""How well a criterion ranks units like the oracle: Spearman's ρ, per layer.

:func:`rank_correlation` is the evaluation of Molchanov et al. (2017, Table 1): it
compares any unit criterion with :func:`~sparsejax.scores.oracle`, layer by layer,
with :func:`spearman`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.tree import Prunable, PyTree, check_same_structure, named_leaves, prunable_tree


def _average_ranks(x: jax.Array) -> jax.Array:
    """1-based ranks of a vector, ties getting the mean of their ranks (float32)."""
    s = jnp.sort(x)
    lo = jnp.searchsorted(s, x, side="left")
    hi = jnp.searchsorted(s, x, side="right")
    return (lo + hi + 1).astype(jnp.float32) / 2.0


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman's rank correlation of two equally long vectors (average ranks for ties).

    The Pearson correlation of the average ranks, so ties follow
    ``scipy.stats.spearmanr``. ``NaN`` when either input is constant (the
    correlation is undefined). Pure; works under ``jit``; ``O(n log n)``.
    """
    a = jnp.ravel(jnp.asarray(a, jnp.float32))
    b = jnp.ravel(jnp.asarray(b, jnp.float32))
    if a.shape != b.shape:
        raise ValueError(f"spearman needs two vectors of equal size, got {a.shape} and {b.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"spearman needs at least 2 entries, got {a.shape[0]}")
    return _spearman_impl(a, b)


@jax.jit
def _spearman_impl(a: jax.Array, b: jax.Array) -> jax.Array:
    ra = _average_ranks(a)
    rb = _average_ranks(b)
    ra = ra - jnp.mean(ra)
    rb = rb - jnp.mean(rb)
    den = jnp.sqrt(jnp.sum(ra * ra) * jnp.sum(rb * rb))
    return jnp.where(den > 0, jnp.sum(ra * rb) / jnp.where(den > 0, den, 1.0), jnp.nan)


def rank_correlation(
    criterion_scores: PyTree, oracle_scores: PyTree, *, prunable: Prunable = None
) -> dict[str, jax.Array]:
    """Spearman's ρ between a criterion and the oracle, layer by layer.

    The evaluation of Molchanov et al. (2017, Table 1): how well a cheap
    criterion ranks the units of each layer like the exact loss change
    (:func:`oracle`). Both pytrees must have the same structure and, on every
    prunable leaf, the same shape (typically the unit shape ``(1, …, 1, out)``).

    Args:
      criterion_scores: unit scores of a criterion.
      oracle_scores: :func:`oracle` scores (same structure).
      prunable: which leaves are compared (default ``ndim >= 2``; note that
        unit-score leaves ``(1, out)`` have ``ndim >= 2``).

    Returns:
      ``{path: ρ}`` (float32 scalars, ``NaN`` for a constant layer), in
      ``jax.tree.leaves`` order.

    Raises:
      ValueError: different trees, or a leaf whose shapes differ (path and shapes named).
    """
    check_same_structure(criterion_scores, oracle_scores, "criterion_scores", "oracle_scores")
    which = jax.tree.leaves(prunable_tree(criterion_scores, prunable))
    out: dict[str, jax.Array] = {}
    for (name, c), (_, o), w in zip(
        named_leaves(criterion_scores), named_leaves(oracle_scores), which, strict=True
    ):
        if not w:
            continue
        if np.shape(c) != np.shape(o):
            raise ValueError(
                f"criterion_scores at {name!r} have shape {np.shape(c)} but oracle_scores "
                f"shape {np.shape(o)}"
            )
        out[name] = spearman(c, o)
    if not out:
        raise ValueError(f"no prunable leaf to compare: the filter {prunable!r} matched none")
    return out
