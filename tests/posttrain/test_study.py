"""The post-training pruning study (``sparsejax posttrain``) end to end at smoke size."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tyro")

from sparsejax import posttrain
from sparsejax.data import contiguous_windows
from sparsejax.runner._study import parse_study
from sparsejax.runner.studies import posttrain as study


@pytest.mark.smoke
def test_train_prune_evaluate_time_end_to_end(tmp_path):
    out, ckpt = tmp_path / "run", tmp_path / "checkpoints"
    res = study.main(["--smoke", "true", "--out", str(out), "--checkpoint-dir", str(ckpt),
                      "--sparsities", "0.5", "--nm", "2:4", "--calibration-seeds", "0", "1",
                      "--no-progress"])
    for name in ("config.json", "corpus.json", "training.json", "results.json", "results.md",
                 "training_curve.png", "training_curve.pdf", "layer_errors.png",
                 "layer_errors.pdf", "metrics.jsonl"):
        assert (out / name).stat().st_size > 0, name
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["files"]["train"] + corpus["files"]["validation"] \
        + corpus["files"]["calibration"] == 150
    training = json.loads((out / "training.json").read_text())
    assert training["steps_done"] == 60 and training["params"] == 35_712
    assert training["pruned_params"] == 2 * 12 * 32 * 32           # 12·dim² per block
    assert training["curve"][-1]["validation_bits_per_byte"] < 8.0  # below uniform bytes
    rows = res["rows"]
    # dense + (magnitude 1 + wanda 2 + sparsegpt 2 + owl 2) at 50% + (1 + 2 + 2) at 2:4
    assert [(r["method"], r["target"]) for r in rows].count(("wanda", "2:4")) == 2
    assert len(rows) == 1 + 7 + 5
    for r in rows[1:]:
        assert r["sparsity"] == pytest.approx(0.5, abs=1e-3 if r["method"] == "wanda_owl" else 0)
        assert np.isfinite(r["bits_per_byte"]) and len(r["layers"]) == 8
    dense = rows[0]["bits_per_byte"]
    assert all(r["bits_per_byte"] >= dense - 1e-3 for r in rows[1:])

    def mean_error(method, target):
        return np.mean([layer["error"] for r in rows if r["method"] == method
                        and r["target"] == target and r["seed"] in (0, None)
                        for layer in r["layers"]])

    for target in ("50%", "2:4"):   # SparseGPT minimises exactly this layer-wise error
        assert mean_error("sparsegpt", target) < mean_error("wanda", target)
        assert mean_error("sparsegpt", target) < mean_error("magnitude", target)
    timing = res["timing"]
    assert {(t["method"], t["target"]) for t in timing["runs"]} == {
        (m, t) for m in ("sparsegpt", "wanda", "magnitude") for t in ("50%", "2:4")}
    text = (out / "results.md").read_text()
    assert "| sparsegpt | 2:4 | 0.5000 |" in text and "Ranking by validation bits" in text
    assert "Command: `sparsejax posttrain --smoke true --out" in text
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 60 and "train/train_bits_per_byte" in logged[-1]

    # a second run finds the checkpoint: no training, the same dense model; prune / evaluate
    # alone are accepted now that it exists
    cfg, _ = parse_study(study.STUDY, ["--smoke", "--checkpoint-dir", str(ckpt),
                                       "--phases", "prune", "evaluate"])
    corpus = study._corpus(cfg.max_files)
    model, curve, info = study.train(cfg, corpus, study._model_record(cfg, corpus.sha256),
                                     log=lambda _: None)
    assert info["steps_this_run"] == 0 and len(curve) == len(training["curve"])
    valid = contiguous_windows(corpus.validation, cfg.seq_len + 1, cfg.eval_windows)
    again = posttrain.evaluate_language_model(model, valid, batch_size=cfg.batch_size)
    assert again.bits_per_token == pytest.approx(dense, abs=1e-6)


@pytest.mark.parametrize(("argv", "message"), [
    (["--methods", "obs"], "invalid choice"),
    (["--phases", "finetune"], "invalid choice"),
    (["--sparsities", "0.5", "1.0"], "--sparsities 0.5 1: 1 is outside (0, 1)"),
    (["--nm", "2-4"], "--nm 2-4: not an N:M pattern like 2:4"),
    (["--eval-every", "300"], "--eval-every 300: must be a multiple of --log-every 250"),
    (["--heads", "7"], "--heads 7: must divide the width 512"),
    (["--calibration-seeds", ""], "--calibration-seeds (empty): give at least one seed"),
    (["--phases", "prune", "--checkpoint-dir", "/no/such/ckpt"],
     "--checkpoint-dir /no/such/ckpt: no trained model in /no/such/ckpt/d512x8_s6000_"),
])
def test_bad_values_exit_2_naming_the_flag(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        study.main([*argv, "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "run").exists()


def test_recorded_command_parses_to_its_values():
    argv = ("--out /tmp/pt_mid2 --checkpoint-dir /tmp/pt_mid_ckpt --dim 128 --depth 4 --heads 4 "
            "--seq-len 128 --steps 1500 --batch-size 16 --log-every 100 --eval-every 500 "
            "--curve-windows 32 --max-files 400 --calibration 32 --calibration-batch 8 "
            "--calibration-seeds 0 1 --eval-windows 512 --sparsities 0.5 0.7 --nm 2:4 "
            "--phases train prune evaluate --max-train-seconds 1800").split()
    cfg, _ = parse_study(study.STUDY, argv)
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.seq_len, cfg.steps) == (128, 4, 4, 128, 1500)
    assert cfg.phases == ("train", "prune", "evaluate") and cfg.nm == ("2:4",)
    assert cfg.calibration_seeds == (0, 1) and cfg.max_train_seconds == 1800.0
    # the checkpoint of a model is named by its record: unchanged by the port
    record = study._model_record(cfg, "0" * 64)
    assert study.checkpoint_path(cfg, record).name.startswith("d128x4_s1500_")
    cfg, _ = parse_study(study.STUDY, ["--phases", "timing"])
    assert cfg.phases == ("timing",) and cfg.timing_dim == 768 and cfg.timing_sequences == 128
