"""Guarding selection against non-finite scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.scores._leaves import _display, _is_float
from sparsejax.tree import PyTree, named_leaves


def check_finite(scores: PyTree, name: str = "scores") -> PyTree:
    """Raise if any float leaf of ``scores`` holds a NaN or an infinity.

    The score functions never inspect values (that would break ``jit``), so a
    NaN or inf in their inputs flows into the scores. :func:`sparsejax.prune`
    then follows one rule, eagerly and under ``jit`` alike: NaN ranks above
    every number (pruned last), ``+inf`` just below it, ``-inf`` below every
    finite score. Where a non-finite score should be an error instead, call
    this on the scores before selecting.

    Eager only: under ``jit`` (when any leaf is a tracer) values are unknown
    and the check is skipped, returning ``scores`` unchanged; call it outside
    the compiled function (or use ``jax.experimental.checkify``) to guard a
    traced computation. The counts are reduced on device, so only two
    integers per leaf reach the host.

    Args:
      scores: any pytree of arrays.
      name: what ``scores`` is called in the error message.

    Returns:
      ``scores`` itself, so calls can be chained.

    Raises:
      ValueError: naming the first leaf (in ``jax.tree.leaves`` order) with a
        non-finite entry, its NaN and inf counts, its size and shape.
    """
    named = named_leaves(scores)
    if any(isinstance(x, jax.core.Tracer) for _, x in named):
        return scores
    floats = [(n, x) for n, x in named if _is_float(n, x, name)]
    counts = jax.device_get(
        [(jnp.count_nonzero(jnp.isnan(x)), jnp.count_nonzero(jnp.isinf(x))) for _, x in floats]
    )
    for (leaf_name, x), (nans, infs) in zip(floats, counts):
        if nans or infs:
            raise ValueError(
                f"{name} at {_display(leaf_name)!r} has {int(nans)} NaN and {int(infs)} inf "
                f"entries out of {int(np.size(x))} (shape {np.shape(x)}); non-finite scores "
                "would decide arbitrarily what is pruned"
            )
    return scores
