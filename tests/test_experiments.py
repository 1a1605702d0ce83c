"""Smoke runs of the comparison and dense studies, and a user's plug-ins running in them.

The runner's own tests are in tests/runner/, the other studies' beside their packages
(tests/lottery/, tests/dynamic/, tests/sensitivity/), the benchmarks' in tests/benchmarks/.
"""

import json
import pathlib

import numpy as np
import pytest

from sparsejax.runner import cli as sparsejax_cli
from sparsejax.runner.studies import comparison, dense

ROOT = pathlib.Path(__file__).resolve().parents[1]
PLUGIN = str(ROOT / "tests" / "runner" / "plugin_example.py")


def test_weight_sparsity_for_compression_counts_all_params():
    # 1,000 params of which 900 prunable: 10x compression keeps 100 entries in total,
    # i.e. prunes 900 -> every prunable weight.
    assert comparison.weight_sparsity_for(10, 1000, 900) == pytest.approx(1.0)
    assert comparison.weight_sparsity_for(2, 1000, 900) == pytest.approx(500 / 900)
    with pytest.raises(ValueError, match="compression 20 is unreachable"):
        comparison.weight_sparsity_for(20, 1000, 900)


def test_unreachable_compression_is_refused_before_training(tmp_path, capsys):
    # LeNet-300-100 on digits: 50,610 parameters, 410 of them biases: at most 123.4x
    with pytest.raises(SystemExit) as info:
        comparison.main(["--compressions", "2", "200", "--out", str(tmp_path / "r")])
    assert info.value.code == 2
    assert "--compressions 2 200: compression 200 is unreachable: it needs weight sparsity " \
           "1.0031 (50610 params, 50200 prunable); at most 123.4" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.smoke
def test_comparison_smoke(tmp_path):
    out = tmp_path / "sb"
    methods = ("global_magnitude", "global_obd", "random", "gradual_magnitude")
    res = comparison.main(["--smoke", "--out", str(out), "--no-progress", "--methods", *methods])
    rows = res["rows"]
    assert len(rows) == len(methods) * 2 * 2  # methods x compressions (2, 8) x seeds (2)
    for row in rows:
        # the measured whole-model compression hits the target (exact counts, 0.5% slack
        # only for rounding on 50,610 parameters)
        assert row["compression_measured"] == pytest.approx(row["compression"], rel=5e-3)
        assert row["theoretical_speedup"] >= row["compression"] * 0.95
        assert 0.0 <= row["accuracy"] <= 1.0
    for name in ("config.json", "results.json", "results.md", "tradeoff.png", "tradeoff.pdf",
                 "layer_sparsity.png", "layer_sparsity.pdf", "metrics.jsonl"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["dataset"] == "digits" and saved["layer_sparsity"]["compression"] == 8.0
    assert set(saved["layer_sparsity"]["methods"]) == set(methods)
    md = (out / "results.md").read_text()
    assert "| global_magnitude | 8× |" in md
    assert "Command: `sparsejax comparison --smoke --out" in md
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {k.split("/")[0] for row in logged for k in row} >= {"dense", "finetune", "step"}
    # the figures are redrawn from results.json alone
    before = (out / "tradeoff.png").stat().st_mtime_ns
    assert sparsejax_cli(["replot", str(out)]) == 0
    assert (out / "tradeoff.png").stat().st_mtime_ns > before


@pytest.mark.smoke
def test_a_plugin_method_and_dataset_run_in_the_comparison_study(tmp_path):
    """A method (a score, and a function) and a data set defined in a test file."""
    out = tmp_path / "plugin"
    res = comparison.main([
        "--plugin", PLUGIN, "--dataset", "blobs", "--methods", "squared_magnitude",
        "global_magnitude", "hidden_only", "--seeds", "1", "--compressions", "2", "10",
        "--train-epochs", "3", "--finetune-epochs", "1", "--out", str(out), "--no-progress"])
    assert res["dataset"] == "blobs"
    by = {(r["method"], r["compression"]): r for r in res["rows"]}
    assert len(by) == 6
    for (_, c), row in by.items():
        assert row["compression_measured"] == pytest.approx(c, rel=5e-3)
    # w² ranks weights exactly as |w|: the same masks, hence the same fine-tuned models
    for c in (2.0, 10.0):
        assert by[("squared_magnitude", c)]["accuracy_before_ft"] == \
            by[("global_magnitude", c)]["accuracy_before_ft"]
        assert by[("squared_magnitude", c)]["accuracy"] == pytest.approx(
            by[("global_magnitude", c)]["accuracy"], abs=1e-6)
    # the function-form method never prunes the classifier
    layers = res["layer_sparsity"]
    hidden_only = dict(zip(layers["layers"], layers["methods"]["hidden_only"]))
    assert hidden_only["layers/2/kernel"] == 0.0 and hidden_only["layers/0/kernel"] > 0.8
    assert res["dense"]["accuracy"][0] > 0.5  # four separable blobs: far above chance (0.25)
    recorded = json.loads((out / "config.json").read_text())["config"]
    assert recorded["plugin"] == [PLUGIN] and recorded["dataset"] == "blobs"


@pytest.mark.smoke
def test_dense_smoke_on_the_shipped_mnist_test_split(tmp_path):
    rows = dense.main(["--smoke", "--pairs", "mnist10k:lenet300100", "blobs:lenet300100",
                       "--plugin", PLUGIN, "--out", str(tmp_path), "--no-progress"])
    mnist, blobs = rows
    assert mnist["dataset"] == "mnist10k" and mnist["params"] == 266_610
    assert mnist["accuracy_mean"] > 0.5  # 20 Adam steps on real digits already beat chance by far
    assert blobs["dataset"] == "blobs" and blobs["params"] == 16 * 300 + 300 + 30_100 + 404


@pytest.mark.slow
def test_comparison_full_digits_reproduces_committed_shape(tmp_path):
    """The full main job: global magnitude keeps dense accuracy to 8x and beats random at 16x."""
    res = comparison.main(["--out", str(tmp_path), "--no-progress"])
    agg = {(a["method"], a["compression"]): a["accuracy_mean"] for a in res["aggregate"]}
    dense_acc = float(np.mean(res["dense"]["accuracy"]))
    assert agg[("global_magnitude", 8.0)] > dense_acc - 0.02
    assert agg[("global_magnitude", 16.0)] > agg[("random", 16.0)] + 0.1
