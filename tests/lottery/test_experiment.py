"""The lottery experiment script (experiments/lottery.py) at smoke size."""

import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_experiment():
    spec = importlib.util.spec_from_file_location("experiments_lottery",
                                                  ROOT / "experiments" / "lottery.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.smoke
def test_lottery_experiment_smoke(tmp_path):
    module = load_experiment()
    results = module.main(["--smoke", "true", "--out", str(tmp_path), "--progress", "false"])
    rows = results["rows"]
    tickets = [r for r in rows if r["variant"] == "ticket"]
    assert [r["round"] for r in tickets] == [1, 2]
    assert tickets[-1]["weights_remaining"] == pytest.approx(results["expected_remaining"][-1],
                                                             abs=2e-3)
    assert {r["variant"] for r in rows} >= {"dense", "ticket", "random_mask"}
    for name in ("results.json", "results.md", "accuracy.png", "early_stop.png"):
        assert (tmp_path / name).exists()


@pytest.mark.smoke
def test_lottery_experiment_smoke_lenet_on_real_mnist(tmp_path, mnist_dir):
    """Reproduction 2 at smoke size: LeNet-300-100, 20 % per round (output 10 %), reinit."""
    module = load_experiment()
    results = module.main(["--smoke", "true", "--task", "lenet", "--data-dir", str(mnist_dir),
                           "--out", str(tmp_path), "--progress", "false"])
    rows = results["rows"]
    assert {r["variant"] for r in rows} == {"dense", "ticket", "reinit"}
    tickets = [r for r in rows if r["variant"] == "ticket"]
    # hidden layers keep 0.8^r, the output layer 0.9^r: 80.0 % then 64.1 % of all weights
    assert [round(100 * r["weights_remaining"], 1) for r in tickets] == [80.0, 64.1]


@pytest.mark.smoke
def test_lottery_experiment_smoke_cnn_late_rewinding(tmp_path):
    """Reproduction 3 at smoke size: the MNIST-1D CNN rewound to step 20, one-shot control."""
    module = load_experiment()
    results = module.main(["--smoke", "true", "--task", "mnist1d_cnn", "--reset", "rewind",
                           "--rewind-step", "20", "--out", str(tmp_path), "--progress", "false"])
    rows = results["rows"]
    assert {r["variant"] for r in rows} == {"dense", "ticket", "one_shot"}
    tickets = [r for r in rows if r["variant"] == "ticket"]
    assert [round(100 * r["weights_remaining"], 1) for r in tickets] == [82.4, 68.2]
    assert results["config"]["reset"] == "rewind" and results["config"]["rewind_step"] == 20
