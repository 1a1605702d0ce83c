"""Tests of sparsejax.runner's seed aggregation and markdown tables."""

import numpy as np

from sparsejax.runner import aggregate, markdown_table


def test_aggregate_mean_std_and_table():
    rows = [
        {"m": "a", "c": 2, "acc": 0.5},
        {"m": "a", "c": 2, "acc": 0.7},
        {"m": "b", "c": 2, "acc": 0.9},
    ]
    agg = aggregate(rows, ("m", "c"), ("acc",))
    assert [(a["m"], a["n"]) for a in agg] == [("a", 2), ("b", 1)]
    np.testing.assert_allclose([agg[0]["acc_mean"], agg[0]["acc_std"]], [0.6, 0.1])
    table = markdown_table(agg, [("method", "{m}"), ("acc", "{acc_mean:.1%} ± {acc_std:.1%}")])
    assert table.splitlines() == [
        "| method | acc |",
        "|---|---|",
        "| a | 60.0% ± 10.0% |",
        "| b | 90.0% ± 0.0% |",
    ]
