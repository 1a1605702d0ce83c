"""The Pareto front of a trade-off curve (compression or speedup against accuracy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points when *both* coordinates are to be maximised.

    For trade-off curves such as (compression ratio, accuracy) or (theoretical speedup,
    accuracy) over a sweep of sparsities and methods (ShrinkBench, Blalock et al. 2020, Fig.
    5). Point ``i`` is dominated when some ``j`` has ``x_j >= x_i`` and ``y_j >= y_i`` with
    one inequality strict; of exactly equal points only the first is kept. Pure.

    Returns:
      The indices of the front, ordered by increasing ``x`` (hence decreasing ``y``).

    Example:
      >>> pareto_front([1, 2, 3, 2], [0.9, 0.8, 0.5, 0.7])
      [0, 1, 2]
    """
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"xs and ys must be 1-D of equal length, got {x.shape} and {y.shape}")
    bad = np.flatnonzero(np.isnan(x) | np.isnan(y))
    if bad.size:
        raise ValueError(f"pareto_front: NaN coordinate at index {int(bad[0])}")
    order = np.lexsort((np.arange(x.size), -y, -x))  # x desc, then y desc, then index asc
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(int(i))
            best = y[i]
    return front[::-1]
