"""The lottery study (``sparsejax lottery``) at smoke size, and resuming a killed run."""

import json

import pytest

from sparsejax.runner.studies import lottery as study


def load_experiment():
    return study


@pytest.mark.smoke
def test_lottery_experiment_smoke(tmp_path):
    module = load_experiment()
    out = tmp_path / "run"
    results = module.main(["--smoke", "--out", str(out), "--no-progress"])
    rows = results["rows"]
    tickets = [r for r in rows if r["variant"] == "ticket"]
    assert [r["round"] for r in tickets] == [1, 2]
    assert tickets[-1]["weights_remaining"] == pytest.approx(results["expected_remaining"][-1],
                                                             abs=2e-3)
    assert {r["variant"] for r in rows} >= {"dense", "ticket", "random_mask"}
    for name in ("results.json", "results.md", "accuracy.png", "accuracy.pdf", "early_stop.png",
                 "early_stop.pdf", "metrics.jsonl"):
        assert (out / name).exists()
    # --resume on the finished run: every round is restored from the checkpoints, the
    # records are the same, nothing is deleted
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    again = module.main(["--smoke", "--out", str(out), "--no-progress", "--resume"])
    assert again["rows"] == json.loads(json.dumps(rows))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == checkpoints


@pytest.mark.smoke
def test_lottery_experiment_smoke_lenet_on_real_mnist(tmp_path):
    """Reproduction 2 at smoke size: LeNet-300-100, 20 % per round (output 10 %), reinit,
    on the MNIST test split shipped with sparsejax (no --data-dir)."""
    module = load_experiment()
    results = module.main(["--smoke", "--task", "lenet", "--out", str(tmp_path), "--no-progress"])
    assert results["dataset"] == "mnist10k"
    rows = results["rows"]
    assert {r["variant"] for r in rows} == {"dense", "ticket", "reinit"}
    tickets = [r for r in rows if r["variant"] == "ticket"]
    # hidden layers keep 0.8^r, the output layer 0.9^r: 80.0 % then 64.1 % of all weights
    assert [round(100 * r["weights_remaining"], 1) for r in tickets] == [80.0, 64.1]


@pytest.mark.smoke
def test_lottery_experiment_smoke_cnn_late_rewinding(tmp_path):
    """Reproduction 3 at smoke size: the MNIST-1D CNN rewound to step 20, one-shot control."""
    module = load_experiment()
    results = module.main(["--smoke", "--task", "mnist1d_cnn", "--reset", "rewind",
                           "--rewind-step", "20", "--out", str(tmp_path), "--no-progress"])
    rows = results["rows"]
    assert {r["variant"] for r in rows} == {"dense", "ticket", "one_shot"}
    tickets = [r for r in rows if r["variant"] == "ticket"]
    assert [round(100 * r["weights_remaining"], 1) for r in tickets] == [82.4, 68.2]
    assert results["config"]["reset"] == "rewind" and results["config"]["rewind_step"] == 20
