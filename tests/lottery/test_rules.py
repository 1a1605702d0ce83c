"""Pure rules of the pruning cycle: cumulative sparsity, stopping, adaptive rates."""

import numpy as np
import pytest

from sparsejax import lottery as lt


def test_cumulative_sparsity_closed_form():
    assert lt.cumulative_sparsity([0.2] * 3) == pytest.approx(1 - 0.8**3, abs=1e-15)
    assert lt.cumulative_sparsity([]) == 0.0
    with pytest.raises(ValueError, match=r"rates\[1\]"):
        lt.cumulative_sparsity([0.1, 1.5])


def test_should_stop():
    assert not lt.should_stop(0.75, 0.5, 0.25)  # drop = epsilon exactly: still within
    assert lt.should_stop(0.75, 0.4999, 0.25)
    assert not lt.should_stop(0.90, 0.10, None)
    with pytest.raises(ValueError, match="epsilon"):
        lt.should_stop(0.9, 0.9, -0.1)


def test_next_rate_scripted():
    a = lt.AdaptiveRate(grow=1.5, shrink=0.5, hold=0.002, min_rate=0.05, max_rate=0.5)
    rate, rates = 0.2, []
    for value in (0.900, 0.899, 0.897, 0.890, 0.899, 0.5):  # dense = 0.900
        rate = lt.next_rate(rate, 0.900, value, a)
        rates.append(rate)
    np.testing.assert_allclose(rates, [0.3, 0.45, 0.225, 0.1125, 0.16875, 0.084375])
    assert lt.next_rate(0.4, 0.9, 0.95, a) == 0.5  # clipped at max_rate
    assert lt.next_rate(0.06, 0.9, 0.0, a) == 0.05  # clipped at min_rate
