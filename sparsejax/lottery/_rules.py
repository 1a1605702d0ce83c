"""Pure rules of the pruning cycle: cumulative sparsity, when to stop, the next rate."""

from __future__ import annotations

import math
from collections.abc import Sequence

from sparsejax.lottery._config import AdaptiveRate

__all__ = ["cumulative_sparsity", "next_rate", "should_stop"]


def cumulative_sparsity(rates: Sequence[float]) -> float:
    """Sparsity after pruning the fractions ``rates`` of the remaining weights in turn.

    ``1 − Π (1 − p_i)``; for a constant rate ``p`` over ``k`` rounds
    ``1 − (1 − p)^k`` (Frankle & Carbin 2019, iterative pruning).

    Example:
      >>> round(cumulative_sparsity([0.2, 0.2]), 6)
      0.36
    """
    for i, r in enumerate(rates):
        if not 0.0 <= float(r) <= 1.0:
            raise ValueError(f"rates[{i}] must be in [0, 1], got {r!r}")
    return 1.0 - math.prod(1.0 - float(r) for r in rates)


def should_stop(dense_value: float, value: float, epsilon: float | None) -> bool:
    """``True`` when ``value`` fell more than ``epsilon`` below ``dense_value``.

    Example:
      >>> should_stop(0.98, 0.975, 0.01), should_stop(0.98, 0.969, 0.01)
      (False, True)
    """
    if epsilon is None:
        return False
    if not epsilon >= 0.0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    return bool(float(dense_value) - float(value) > float(epsilon))


def next_rate(rate: float, dense_value: float, value: float, adaptive: AdaptiveRate) -> float:
    """Next round's pruning rate from the last round's validation result (pure).

    ``rate · grow`` if ``dense_value − value ≤ adaptive.hold`` else
    ``rate · shrink``, clipped to ``[adaptive.min_rate, adaptive.max_rate]``.

    Example:
      >>> a = AdaptiveRate(grow=2.0, shrink=0.5, hold=0.01, min_rate=0.05, max_rate=0.6)
      >>> next_rate(0.2, 0.90, 0.895, a), next_rate(0.2, 0.90, 0.88, a), next_rate(0.4, 0.9, 0.9, a)
      (0.4, 0.1, 0.6)
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate!r}")
    drop = float(dense_value) - float(value)
    factor = adaptive.grow if drop <= adaptive.hold else adaptive.shrink
    return float(min(adaptive.max_rate, max(adaptive.min_rate, rate * factor)))
