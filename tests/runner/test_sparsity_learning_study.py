"""The sparsity learning study (``sparsejax sparsity_learning``) at smoke size, its checks,
and the summary over seeds (``sparsejax sparsity_learning_summary``)."""

import json
import shutil

import pytest

from sparsejax.runner import cli as sparsejax_cli
from sparsejax.runner import parse_config
from sparsejax.runner._study import parse_study
from sparsejax.runner.studies import sparsity_learning as study


@pytest.mark.smoke
def test_sparsity_learning_smoke(tmp_path):
    res = study.main(["--smoke", "true", "--out", str(tmp_path), "--ssl", "true",
                       "--structured-vd", "true", "--finetune-steps", "10"])
    (vd,) = res["sparse_vd"]
    assert vd["model"] == "lenet300100" and vd["compression"] >= 1.0
    # converting the VD model to the plain LeNet-300-100 keeps its eval accuracy
    assert vd["test_accuracy"] == pytest.approx(vd["vd_eval_test_accuracy"], abs=1e-9)
    assert len(res["group_lasso"]) == 2 and sum(r["selected"] for r in res["group_lasso"]) <= 1
    for row in res["group_lasso"]:
        assert row["neurons"] == 400 and 0 <= row["neurons_removed"] <= 400
    # masked fine-tuning keeps every removed weight at zero
    for row in (vd, *res["group_lasso"]):
        assert row["finetune_steps"] == 10
        assert row["finetuned_pruned_nonzero"] == 0
        assert row["finetuned_compression"] >= row["compression"] * (1 - 1e-3)
    for name in ("config.json", "results.json", "results.md", "group_lasso_tradeoff.png"):
        assert (tmp_path / name).stat().st_size > 0
    # Wen et al. SSL on LeNet-5 and structured VD: the shrunk models compute the trained ones
    (ssl,) = res["ssl_lenet5"]
    assert ssl["max_rel_logit_diff"] <= 1e-5
    assert ssl["units_kept"]["conv2"] == ssl["filters_nonzero"]["conv2"]
    assert ssl["units_kept"]["conv1"] <= min(ssl["filters_nonzero"]["conv1"],
                                             ssl["conv2_channels_nonzero"])
    assert ssl["channels_in"]["conv2"] == ssl["units_kept"]["conv1"]
    assert [r["model"] for r in res["structured_vd"]] == ["lenet300100", "lenet5"]
    for row in res["structured_vd"]:
        assert row["max_rel_logit_diff"] <= 1e-5
        # converting and shrinking keep the VD model's eval predictions
        assert row["test_accuracy"] == pytest.approx(row["vd_eval_test_accuracy"], abs=1e-9)
    text = (tmp_path / "results.md").read_text()
    assert "Wen et al. 2016" in text
    assert "Command: `sparsejax sparsity_learning --smoke true --out" in text
    for name in ("group_lasso_tradeoff.pdf", "metrics.jsonl"):
        assert (tmp_path / name).exists()
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["study"] == "sparsity_learning"
    assert recorded["config"]["vd_dataset"] == "digits" and recorded["config"]["gl_steps"] == 20


def test_smoke_sizes_and_recorded_commands_parse():
    cfg, given = parse_study(study.STUDY, ["--smoke", "true", "--finetune-steps", "10"])
    assert given == {"smoke", "finetune_steps"}
    assert (cfg.dense_steps, cfg.vd_steps, cfg.vd_steps_lenet5, cfg.vd_warmup) == (20, 20, 10, 10)
    assert cfg.gl_lambdas == (0.03, 0.1) and cfg.ssl_lambdas == (0.2,)
    assert cfg.vd_dataset == "digits" and cfg.finetune_steps == 10
    argv = ("--vd false --group-lasso false --ssl true --structured-vd true --data-dir "
            "/data/mnist --out results/sparsity_learning/structured --progress "
            "false").split()
    cfg = parse_config(study.Config, argv)  # parsed only: the folder is not checked
    assert (cfg.vd, cfg.group_lasso, cfg.ssl, cfg.structured_vd, cfg.progress) == (
        False, False, True, True, False)
    assert cfg.vd_dataset == "mnist10k" and cfg.svd_steps == 12000 and cfg.data_dir == "/data/mnist"
    cfg, _ = parse_study(study.STUDY, ["--vd", "false", "--gl-datasets", "mnist10k",
                                       "--gl-lambdas", "0.03", "0.05", "--seed", "3",
                                       "--finetune-steps", "1000"])
    assert (cfg.gl_datasets, cfg.gl_lambdas, cfg.seed, cfg.finetune_steps) == (
        ("mnist10k",), (0.03, 0.05), 3, 1000)
    assert cfg.progress is False and cfg.data_dir is None  # the shipped MNIST test split


@pytest.mark.parametrize(("argv", "message"), [
    (["--val-fraction", "0"], "--val-fraction 0: leaves no training or no validation example"),
    (["--tolerance", "2"], "--tolerance 2: 2 is outside [0, 1]"),
    (["--gl-lambdas", "-0.1"], "--gl-lambdas -0.1: strengths must be >= 0"),
    (["--lr", "0"], "--lr 0: a learning rate must be > 0"),
    (["--gl-datasets", "mnist1d"], "--gl-datasets mnist1d: inputs of shape (40, 1): LeNet needs "
                                   "images"),
    (["--vd-init", "warm"], "invalid choice"),
    (["--data-dir", "/"], "--data-dir /: cannot load it: load_mnist_test_split: missing"),
])
def test_bad_values_exit_2_naming_the_flag(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        study.main([*argv, "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "run").exists()


def test_summary_over_committed_seeds(tmp_path, capsys):
    """The committed per-seed runs summarised again: the same tables as committed."""
    from script_loader import ROOT

    source = ROOT / "results" / "sparsity_learning" / "cpu_seeds_ft"
    root = tmp_path / "seeds"
    for run in sorted(source.glob("*/results.json")):
        (root / run.parent.name).mkdir(parents=True)
        for name in ("results.json", "config.json"):
            shutil.copy(run.parent / name, root / run.parent.name / name)
    assert sparsejax_cli(["sparsity_learning_summary", str(root)]) == 0
    text = (root / "summary.md").read_text()
    committed = (source / "summary.md").read_text()
    # every table is as committed (only the command line names another folder)
    section = "## Sparse variational dropout"
    assert text[text.index(section):] == committed[committed.index(section):]
    assert "| lenet300100 | 5 | +0.31 ± 0.17 | 40.5x ± 1.6 | 5 of 5 |" in text
    assert "| lenet5 | 3 | +0.45 ± 0.22 | 81.0x ± 7.1 | 3 of 3 |" in text
    assert f"Command: `sparsejax sparsity_learning_summary {root}`" in text
    with pytest.raises(SystemExit) as info:
        sparsejax_cli(["sparsity_learning_summary", str(tmp_path / "empty")])
    assert info.value.code == 2
    assert "error: ROOT" in capsys.readouterr().err
