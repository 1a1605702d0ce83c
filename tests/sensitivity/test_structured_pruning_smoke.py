"""Smoke run of the structured study (``sparsejax structured``, sensitivity-guided pruning)."""

import math

import pytest

from sparsejax.runner.studies import structured as sp


@pytest.mark.smoke
def test_structured_pruning_smoke(tmp_path):
    out = tmp_path / "sp"
    res = sp.main(["--smoke", "--out", str(out), "--no-progress"])
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
                 "sensitivity_heatmap.png", "tradeoff.png", "tradeoff.pdf"):
        assert (out / name).stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "| one_shot | l1_layer | 0.5 | conv1 12/25, conv2 12/25, conv3 12/25 |" in md
    assert "Spearman ρ of each criterion with the oracle" in md
