"""Smoke runs of the study scripts (experiments/*.py).

The runner's own tests are in tests/runner/, the benchmarks' in tests/benchmarks/.
"""

import json

import numpy as np
import pytest
from script_loader import load_script


def _script(name):
    return load_script(f"experiments/{name}.py", name=f"experiments_{name}")


def test_weight_sparsity_for_compression_counts_all_params():
    sb = _script("shrinkbench")
    # 1,000 params of which 900 prunable: 10x compression keeps 100 entries in total,
    # i.e. prunes 900 -> every prunable weight.
    assert sb.weight_sparsity_for(10, 1000, 900) == pytest.approx(1.0)
    assert sb.weight_sparsity_for(2, 1000, 900) == pytest.approx(500 / 900)
    with pytest.raises(ValueError, match="compression 20 is unreachable"):
        sb.weight_sparsity_for(20, 1000, 900)


@pytest.mark.smoke
def test_shrinkbench_smoke(tmp_path):
    sb = _script("shrinkbench")
    out = tmp_path / "sb"
    methods = ("global_magnitude", "global_obd", "random", "gradual_magnitude")
    res = sb.main(
        ["--smoke", "true", "--out", str(out), "--progress", "false", "--methods", *methods]
    )
    rows = res["rows"]
    assert len(rows) == len(methods) * 2 * 2  # methods x compressions (2, 8) x seeds (2)
    for row in rows:
        # the measured whole-model compression hits the target (exact counts, 0.5% slack
        # only for rounding on 50,610 parameters)
        assert row["compression_measured"] == pytest.approx(row["compression"], rel=5e-3)
        assert row["theoretical_speedup"] >= row["compression"] * 0.95
        assert 0.0 <= row["accuracy"] <= 1.0
    for name in ("config.json", "results.json", "results.md", "tradeoff.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["dataset"] == "digits"
    assert "| global_magnitude | 8× |" in (out / "results.md").read_text()


@pytest.mark.smoke
def test_dense_baselines_smoke_on_real_mnist(tmp_path, mnist_dir):
    db = _script("dense_baselines")
    rows = db.main(
        ["--smoke", "true", "--pairs", "mnist10k:lenet300100", "--data-dir", str(mnist_dir),
         "--out", str(tmp_path), "--progress", "false"]
    )
    (row,) = rows
    assert row["dataset"] == "mnist10k" and row["params"] == 266_610
    assert row["accuracy_mean"] > 0.5  # 20 Adam steps on real digits already beat chance by far


@pytest.mark.slow
def test_shrinkbench_full_digits_reproduces_committed_shape(tmp_path):
    """The full main job: global magnitude keeps dense accuracy to 8x and beats random at 16x."""
    sb = _script("shrinkbench")
    res = sb.main(["--out", str(tmp_path), "--progress", "false"])
    agg = {(a["method"], a["compression"]): a["accuracy_mean"] for a in res["aggregate"]}
    dense = float(np.mean(res["dense"]["accuracy"]))
    assert agg[("global_magnitude", 8.0)] > dense - 0.02
    assert agg[("global_magnitude", 16.0)] > agg[("random", 16.0)] + 0.1
