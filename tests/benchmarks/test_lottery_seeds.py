"""Smoke test of benchmarks/lottery_seeds.py: vmapped IMP == sequential IMP per seed."""

import jax
import numpy as np
import pytest
from script_loader import load_script


def _module():
    return load_script("benchmarks/lottery_seeds.py")


@pytest.mark.smoke
def test_vmapped_imp_matches_sequential_per_seed():
    bench = _module()
    rng = np.random.default_rng(0)

    def split(n):
        return (jax.numpy.asarray(rng.normal(size=(n, 40)).astype(np.float32)),
                jax.numpy.asarray(rng.integers(0, 10, size=n).astype(np.int32)))

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = split(200), split(50), split(50)
    data = {"x_tr": x_tr, "y_tr": y_tr, "x_va": x_va, "y_va": y_va, "x_te": x_te, "y_te": y_te}
    cfg = bench.BenchConfig(seeds=2, rounds=1, steps=20, eval_every=10, batch_size=20,
                            hidden=(16, 16))
    res = bench.benchmark(cfg, data=data, verbose=False)

    checks = res["checks"]
    assert checks["mask_mismatches"] == 0
    assert checks["pruned_mismatches"] == 0
    for name, diff in checks["max_metric_diff"].items():
        assert diff <= 1e-5, (name, diff)
    assert checks["max_param_diff"] <= 1e-5
    # layerwise 30%: round(0.3·640) + round(0.3·256) + round(0.3·160) = 192 + 77 + 48 of 1056
    assert res["final_sparsity"] == pytest.approx(317 / 1056)
    assert [r["mode"] for r in res["rows"]] == ["sequential", "vmap"]
    for row in res["rows"]:
        assert row["seed_rounds_per_s"] == pytest.approx(4 / row["time_s"])
        assert row["seed_steps_per_s"] == pytest.approx(80 / row["time_s"])
    assert res["rows"][0]["speedup_vs_sequential"] == 1.0
    assert len(res["final_val_accuracy_per_seed"]) == 2
