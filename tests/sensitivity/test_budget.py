"""Budget allocation: greedy on hand-computed curves, exact parameter and FLOPs budgets."""


import jax
import jax.numpy as jnp
import pytest
from sensitivity_table import two_layer_table as _table

import sparsejax as sj
from sparsejax import metrics, scores
from sparsejax.sensitivity import (
    allocate_budget,
    layer_flops,
    layer_sensitivity,
)


def test_allocate_budget_greedy_hand_computed():
    sens = _table()
    # B→2 (ratio 0), A→2 (5e-4), A→5 (3.3e-4), B→5 (1.1e-3): 50 + 150 = 200 of 400
    assert allocate_budget(sens, 0.5) == {"A": 0.5, "B": 0.5}
    # then B→10 overshoots; trimmed back to the least count reaching 220: 6 groups (230)
    assert allocate_budget(sens, 0.55) == {"A": 0.5, "B": 0.6}
    assert allocate_budget(sens, 0.0) == {"A": 0.0, "B": 0.0}
    with pytest.raises(ValueError, match="unreachable.*at most 0.500000"):
        allocate_budget(sens, 0.55, max_drop=0.15)
    # per-layer bounds: A may not pass 0.01 → only B moves
    assert allocate_budget(sens, 0.5, max_drop={"A": 0.015}) == {"A": 0.2, "B": 0.6}


def test_allocate_budget_flops_costs():
    sens = _table()
    # A group of A costs 100, of B 10; goal 550 of 1100: B→2 (ratio 0), A→2 (5e-5),
    # A→5 (3.3e-5), A→10 (9.6e-4 < B's 3.3e-3) overshoots, trimmed to 6 groups: 600 + 20
    alloc = allocate_budget(sens, 0.5, costs={"A": 1000.0, "B": 100.0})
    assert alloc == {"A": 0.6, "B": 0.2}
    with pytest.raises(ValueError, match="costs has no entry for layer 'B'"):
        allocate_budget(sens, 0.5, costs={"A": 1.0})
    with pytest.raises(ValueError, match="costs names 'C'"):
        allocate_budget(sens, 0.5, costs={"A": 1.0, "B": 1.0, "C": 1.0})
    with pytest.raises(ValueError, match="cost of layer 'A' must be finite and >= 0, got -1"):
        allocate_budget(sens, 0.5, costs={"A": -1, "B": 1.0})
    with pytest.raises(ValueError, match="target must be in \\[0, 1\\], got 1.5"):
        allocate_budget(sens, 1.5)
    with pytest.raises(ValueError, match="max_drop names 'Z'"):
        allocate_budget(sens, 0.5, max_drop={"Z": 0.1})


def test_allocation_prunes_exact_param_count():
    k = jax.random.split(jax.random.key(0), 3)
    params = {"l1": {"kernel": jax.random.normal(k[0], (6, 10))},
              "l2": {"kernel": jax.random.normal(k[1], (10, 8))},
              "l3": {"kernel": jax.random.normal(k[2], (8, 4))}}
    x = jax.random.normal(jax.random.key(1), (16, 6))

    def forward(p, xb):
        h = jax.nn.relu(xb @ p["l1"]["kernel"])
        h = jax.nn.relu(h @ p["l2"]["kernel"])
        return h @ p["l3"]["kernel"]

    ref = forward(params, x)

    def neg_err(p):
        return -jnp.mean(jnp.square(forward(p, x) - ref))

    unit = scores.filter_norm(params)
    sens = layer_sensitivity(neg_err, params, unit, (0.25, 0.5, 0.75, 1.0), structure=sj.Neurons())
    total = 60 + 80 + 32
    groups = dict(zip(sens.layers, sens.groups))
    per_unit = {"l1/kernel": 6, "l2/kernel": 10, "l3/kernel": 8}
    costs = layer_flops(forward, params, x[:1])
    assert costs == {"l1/kernel": 60, "l2/kernel": 80, "l3/kernel": 32}
    for target in (0.3, 0.8):
        alloc = allocate_budget(sens, target)
        mask = sj.prune(unit, 0.0, params=params, structure=sj.Neurons(), distribution=alloc)
        removed = total - int(sj.count_kept(mask, params, prunable=None))
        counts = {n: round(alloc[n] * groups[n]) for n in alloc}
        assert all(alloc[n] == counts[n] / groups[n] for n in alloc)
        assert removed == sum(counts[n] * per_unit[n] for n in alloc)
        # the budget is met, and only by the last unit of the trimmed layer
        assert target * total <= removed < target * total + max(per_unit.values())
        # FLOPs budget through metrics.flops: masked nonzero FLOPs fall by at least the target
        alloc_f = allocate_budget(sens, target, costs=costs)
        mask_f = sj.prune(unit, 0.0, params=params, structure=sj.Neurons(), distribution=alloc_f)
        report = metrics.flops(forward, params, x[:1], mask=mask_f)
        assert 1.0 - report.nonzero_flops / report.total_flops >= target - 1e-9
