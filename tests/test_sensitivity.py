"""Layer / parameter sensitivity and budget allocation: closed-form curves, exact budgets."""

import importlib.util
import json
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax import criteria, metrics, scores
from sparsejax.sensitivity import (
    LayerSensitivity,
    allocate_budget,
    format_parameter_sensitivity,
    layer_flops,
    layer_sensitivity,
    parameter_sensitivity,
    plot_sensitivity_curves,
    plot_sensitivity_heatmap,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _params():
    # distinct magnitudes: layer "a" holds 1..8, layer "b" holds 9..20 (negated half)
    a = jnp.arange(1.0, 9.0).reshape(2, 4)
    b = (jnp.arange(9.0, 21.0) * jnp.where(jnp.arange(12) % 2 == 0, 1.0, -1.0)).reshape(3, 4)
    return {"a": {"kernel": a, "bias": jnp.ones(4)}, "b": {"kernel": b, "bias": jnp.ones(4)}}


def _abs_sum(p):  # the eval metric: Σ|w| over the kernels (a known function of the mask)
    return jnp.sum(jnp.abs(p["a"]["kernel"])) + jnp.sum(jnp.abs(p["b"]["kernel"]))


GRID = (0.0, 0.25, 0.5, 1.0)


def _expected_unstructured():
    p = _params()
    total = float(_abs_sum(p))
    rows = []
    for name in ("a", "b"):
        mags = np.sort(np.abs(np.asarray(p[name]["kernel"])).ravel())
        rows.append([total - mags[: round(s * mags.size)].sum() for s in GRID])
    return total, np.asarray(rows)


@pytest.mark.parametrize(("vectorize", "chunk_size"), [(None, None), (True, 3), (False, None)])
def test_layer_sensitivity_unstructured_closed_form(vectorize, chunk_size):
    p = _params()
    sens = layer_sensitivity(_abs_sum, p, scores.magnitude(p), GRID, vectorize=vectorize,
                             chunk_size=chunk_size)
    total, expect = _expected_unstructured()
    assert sens.layers == ("a/kernel", "b/kernel")
    assert sens.baseline == total == 210.0
    np.testing.assert_allclose(sens.values, expect)
    assert sens.pruned.tolist() == [[0, 2, 4, 8], [0, 3, 6, 12]]
    assert sens.groups == (8, 12) and sens.sizes == (8, 12)
    np.testing.assert_allclose(sens.drops, total - expect)
    np.testing.assert_allclose(sens.curve("b/kernel"), expect[1])
    with pytest.raises(ValueError, match="layer 'c' is not in the sensitivity table"):
        sens.curve("c")
    assert json.loads(json.dumps(sens.to_dict()))["pruned"] == [[0, 2, 4, 8], [0, 3, 6, 12]]


def test_layer_sensitivity_loop_fallback_for_untraceable_eval():
    p = _params()
    calls = []

    def host_metric(q):  # float() of a tracer fails: must fall back to the loop
        calls.append(1)
        return float(_abs_sum(q))

    sens = layer_sensitivity(host_metric, p, scores.magnitude(p), (0.25, 1.0))
    _, expect = _expected_unstructured()
    np.testing.assert_allclose(sens.values, expect[:, [1, 3]])
    # baseline + 1 failed trace + 2 layers x 2 sparsities in the loop
    assert len(calls) == 1 + 1 + 4
    with pytest.raises(jax.errors.ConcretizationTypeError):
        layer_sensitivity(host_metric, p, scores.magnitude(p), GRID, vectorize=True)


def test_layer_sensitivity_neurons_counts_and_loss_direction():
    p = _params()
    unit = criteria.filter_norm(p)

    def nonzero(q):  # pruned entries of the kernels, counted from the params
        return jnp.sum(q["a"]["kernel"] == 0) + jnp.sum(q["b"]["kernel"] == 0)

    sens = layer_sensitivity(nonzero, p, unit, (0.25, 0.5, 0.75), structure=sj.Neurons(),
                             higher_is_better=False)
    assert sens.groups == (4, 4)
    assert sens.pruned.tolist() == [[1, 2, 3], [1, 2, 3]]
    # a unit of "a" has 2 entries, of "b" 3
    np.testing.assert_allclose(sens.values, [[2, 4, 6], [3, 6, 9]])
    np.testing.assert_allclose(sens.drops, sens.values)  # lower is better, baseline 0
    # an existing mask is kept on every layer
    base = sj.prune(scores.magnitude(p), 0.5, prunable="a/kernel")
    sens2 = layer_sensitivity(nonzero, p, unit, (0.5,), structure=sj.Neurons(), mask=base,
                              higher_is_better=False)
    assert sens2.baseline == 4.0
    # a/kernel: the two lowest-L1 columns (0, 1) hold 1, 5, 2, 6 of which 1, 2 already pruned
    np.testing.assert_allclose(sens2.values[:, 0], [6.0, 4.0 + 6.0])


@pytest.mark.parametrize(
    ("grid", "match"),
    [((0.5, 1.5), "in \\[0, 1\\], got 1.5"), ((0.5, 0.25), "strictly increasing"),
     ((), "sparsities is empty")],
)
def test_layer_sensitivity_bad_grid(grid, match):
    p = _params()
    with pytest.raises(ValueError, match=match):
        layer_sensitivity(_abs_sum, p, scores.magnitude(p), grid)


def test_layer_sensitivity_bad_inputs_name_paths():
    p = _params()
    bad_scores = {"a": {"kernel": jnp.ones((2, 4)), "bias": jnp.ones(4)}}
    with pytest.raises(ValueError, match="paths only in params: \\['b/"):
        layer_sensitivity(_abs_sum, p, bad_scores, GRID)
    shaped = {**scores.magnitude(p), "b": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(4)}}
    with pytest.raises(ValueError, match="'b/kernel' have shape \\(4, 3\\)"):
        layer_sensitivity(_abs_sum, p, shaped, GRID)
    with pytest.raises(ValueError, match="scalar metric"):
        layer_sensitivity(lambda q: q["a"]["kernel"], p, scores.magnitude(p), GRID)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        layer_sensitivity(_abs_sum, p, scores.magnitude(p), GRID, chunk_size=0)


# --------------------------------------------------------------------------- budget


def _table(**kw):
    drops = np.asarray([[0.01, 0.02, 0.5], [0.0, 0.1, 0.2]])
    base = dict(
        layers=("A", "B"), sparsities=(0.2, 0.5, 1.0), values=1.0 - drops, baseline=1.0,
        groups=(10, 10), sizes=(100, 300), pruned=np.asarray([[2, 5, 10], [2, 5, 10]]),
        structure=sj.Neurons(),
    )
    base.update(kw)
    return LayerSensitivity(**base)


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

    unit = criteria.filter_norm(params)
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


# --------------------------------------------------------------------------- parameters


def test_parameter_sensitivity_obd_closed_form():
    w1 = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])
    w2 = jnp.asarray([[1.0, 2.0], [4.0, 8.0]])
    params = {"l1": w1, "l2": w2}
    h = {"l1": jnp.full((2, 2), 2.0), "l2": 1.0 / w2**3}

    def loss(p, batch):  # L = ½ Σ h w²: exact Hessian diagonal h
        del batch
        return 0.5 * sum(jnp.sum(h[k] * p[k] ** 2) for k in p)

    hd = scores.exact_hessian_diag(loss, params, None)
    sal = scores.obd(params, hd)  # l1: w², l2: ½ / w (reversed order of magnitude)
    rows = parameter_sensitivity(sal, params, top_fraction=0.25)
    r1, r2 = rows
    assert (r1.path, r1.size, r2.path) == ("l1", 4, "l2")
    assert r1.total == pytest.approx(30.0) and r1.mean == pytest.approx(7.5)
    assert r2.total == pytest.approx(0.5 * (1 + 0.5 + 0.25 + 0.125))
    assert r1.fraction == pytest.approx(30.0 / (30.0 + 0.9375))
    assert r1.rank_correlation == pytest.approx(1.0) and r1.top_overlap == 1.0
    assert r2.rank_correlation == pytest.approx(-1.0) and r2.top_overlap == 0.0
    table = format_parameter_sensitivity(rows)
    assert "| l2 | 4 |" in table and "-1.000" in table
    with pytest.raises(ValueError, match="top_fraction must be in \\(0, 1\\], got 0"):
        parameter_sensitivity(sal, params, top_fraction=0)
    with pytest.raises(ValueError, match="saliency at 'l2' has 1 NaN"):
        parameter_sensitivity({"l1": sal["l1"], "l2": sal["l2"].at[0, 0].set(jnp.nan)}, params)


def test_parameter_sensitivity_fisher_reference():
    params = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.1]])}
    x = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

    def per_example(p, ex):
        return 0.5 * jnp.sum(jnp.square(ex @ p["w"]))

    fisher = scores.fisher_diag(per_example, params, x)
    sal = scores.obd(params, fisher)
    (row,) = parameter_sensitivity(sal, params, reference=sal)
    assert row.rank_correlation == pytest.approx(1.0) and row.top_overlap == 1.0
    assert row.total == pytest.approx(float(jnp.sum(sal["w"])), rel=1e-6)


def test_plots_write_pngs(tmp_path):
    sens = _table()
    for fn, name in ((plot_sensitivity_curves, "c.png"), (plot_sensitivity_heatmap, "h.png")):
        out = fn(tmp_path / name, sens, title="t")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- experiment smoke


def _script(name):
    spec = importlib.util.spec_from_file_location(
        f"experiments_{name}", ROOT / "experiments" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"experiments_{name}"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.smoke
def test_structured_pruning_smoke(tmp_path):
    sp = _script("structured_pruning")
    out = tmp_path / "sp"
    res = sp.main(["--smoke", "true", "--out", str(out), "--progress", "false"])
    rows = res["rows"]
    assert {(r["schedule"], r["method"]) for r in rows} == {
        (sch, m) for sch in ("one_shot", "iterative")
        for m in ("l1_layer", "taylor_global", "l1_global_l2", "random_layer", "sensitivity")
    }
    units = res["units"]
    flops = res["layer_flops"]
    layers = ("conv1/kernel", "conv2/kernel", "conv3/kernel")
    assert all(units[p] == 25 for p in layers)
    for r in rows:
        removed = r["filters_removed"]
        assert set(removed) == set(layers)
        if r["method"] in ("l1_layer", "random_layer"):
            # uniform layerwise: exactly round(s·units) filters of every pruned layer
            assert all(removed[p] == round(r["sparsity"] * 25) for p in layers)
        elif r["method"] in ("taylor_global", "l1_global_l2"):
            assert sum(removed.values()) == round(r["sparsity"] * 75)
        else:  # sensitivity-guided: the pruned layers lose at least the FLOPs target
            assert r["flops_reduction_mask"] >= r["sparsity"] - 1e-9
        # mask FLOPs of the pruned layers fall by exactly Σ F_l · removed_l / 25
        expect = sum(flops[p] * removed[p] / 25 for p in layers) / sum(flops[p] for p in layers)
        assert r["flops_reduction_mask"] == pytest.approx(expect, abs=1e-9)
        # once shrunk, a removed filter also removes the next layer's input channel
        kept = [1.0] + [1 - removed[p] / 25 for p in layers]  # conv1 input, then outputs
        chain = [*layers, "linear/kernel"]
        outs = [*kept[1:], 1.0]  # the classifier keeps its 10 outputs
        saved = sum(flops[p] * (1 - o * i) for p, o, i in zip(chain, outs, kept))
        assert r["flops_reduction_shrunk"] == pytest.approx(
            saved / sum(flops[p] for p in chain), abs=1e-9)
        assert 0.0 <= r["accuracy_after_ft"] <= 1.0
    corr = res["rank_correlation"]
    assert set(corr) == {"l1", "l2", "taylor", "activation", "apoz", "random"}
    assert all(math.isnan(v) or -1.0 <= v <= 1.0 for per in corr.values() for v in per.values())
    assert res["sensitivity"]["layers"] == list(layers)
    for name in ("config.json", "results.json", "results.md", "sensitivity_curves.png",
                 "sensitivity_heatmap.png", "tradeoff.png"):
        assert (out / name).stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "| one_shot | l1_layer | 0.5 | conv1 12/25, conv2 12/25, conv3 12/25 |" in md
    assert "Spearman ρ of each criterion with the oracle" in md
