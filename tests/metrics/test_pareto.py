"""The Pareto front of a trade-off curve."""

from __future__ import annotations

import pytest

from sparsejax import metrics


def test_pareto_front():
    # (compression, accuracy): point 3 is dominated by 1, point 4 duplicates 0, 5 ties 2 in x.
    xs = [1.0, 2.0, 10.0, 2.0, 1.0, 10.0, 50.0]
    ys = [0.99, 0.98, 0.90, 0.97, 0.99, 0.85, 0.10]
    assert metrics.pareto_front(xs, ys) == [0, 1, 2, 6]
    assert metrics.pareto_front([], []) == []
    with pytest.raises(ValueError, match="NaN coordinate at index 1"):
        metrics.pareto_front([1.0, float("nan")], [0.5, 0.4])
    with pytest.raises(ValueError, match="equal length"):
        metrics.pareto_front([1.0, 2.0], [0.5])
