"""The sparse training study (``sparsejax sparse_training``): smoke size (CI), resuming, the
committed reproduction."""

import json
import pathlib

import jax
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax.runner.studies import sparse_training as study

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_method_builds_the_transform_it_names():
    params = {"w": np.zeros((8, 8), np.float32)}
    states = {m: study.build_optimizer(m, 0.75, 1000, 1e-3, 100).init(params)
              for m in study.METHODS}
    assert isinstance(states["dense"], tuple)  # plain optax.adam
    assert isinstance(states["gradual"], sj.PruningState)
    assert states["gradual"].schedule == sj.schedules.polynomial(0.0, 0.75, begin=100, end=700,
                                                                 every=100)
    assert isinstance(states["static"], sj.KeepSparseState)
    for method, grow_end in (("set", 1000), ("rigl", 750), ("snfs", 1000)):
        assert isinstance(states[method], sj.transforms.SparseTrainingState)
        assert states[method].schedule.end == grow_end
    assert len(states["snfs"].momentum) == 1 and states["rigl"].momentum == ()
    for method in ("srste", "srste_2:4", "srste_1:4"):
        assert isinstance(states[method], sj.transforms.StraightThroughState)
    kept = {m: int(np.asarray(sj.current_mask(states[m])["w"]).sum())
            for m in ("srste", "srste_2:4", "srste_1:4")}
    assert kept == {"srste": 16, "srste_2:4": 32, "srste_1:4": 16}
    assert not study._applies("srste_2:4", {"k": np.zeros((25, 10))})
    assert study._applies("srste_2:4", {"k": np.zeros((24, 10)), "b": np.zeros(10)})


@pytest.mark.smoke
def test_smoke_run_trains_every_method_at_its_sparsity(tmp_path):
    out = tmp_path / "run"
    args = ["--smoke", "--pairs", "mnist1d:mnist1d_cnn", "--methods", "static", "rigl", "srste",
            "srste_2:4", "--sparsities", "0.9", "--out", str(out)]
    rows = study.main([*args, "--no-progress"])["rows"]
    # srste_2:4 is skipped: no kernel of the MNIST-1D CNN has an input axis divisible by 4
    assert [(r["method"], r["sparsity"]) for r in rows] == [
        ("static", 0.9), ("rigl", 0.9), ("srste", 0.9)]
    for row in rows:
        assert len(row["accuracy"]) == 2 and all(0.0 <= a <= 1.0 for a in row["accuracy"])
        # every seed's mask holds exactly the ERK counts: the overall sparsity within rounding
        assert np.allclose(row["mask_sparsity"], row["sparsity"], atol=2e-4)
        assert all(n >= m for n, m in zip(row["nonzero_sparsity"], row["mask_sparsity"]))
    rigl = [r for r in rows if r["method"] == "rigl"]
    # updates at 0, 10, 20, 30 (end = 75 % of 40): the cosine moves fewer and fewer
    moved = np.asarray(rigl[0]["moved_per_update"])[:, 0]
    assert moved[0] > moved[1] > moved[2] > 0 and moved[3] >= 0
    for name in ("results.md", "results.json", "config.json", "rows.jsonl",
                 "accuracy_mnist1d_mnist1d_cnn.png", "accuracy_mnist1d_mnist1d_cnn.pdf"):
        assert (out / name).stat().st_size > 0
    text = (out / "results.md").read_text()
    assert "| mnist1d:mnist1d_cnn | rigl | 0.900 |" in text
    assert "Command: `sparsejax sparse_training --smoke --pairs" in text
    # --resume runs nothing that is already done
    again = study.main([*args, "--no-progress", "--resume"])["rows"]
    assert [r["seconds"] for r in again] == [r["seconds"] for r in rows]


COMMITTED = ROOT / "results" / "sparse_training" / "cpu_3seeds" / "results.json"


@pytest.mark.slow
def test_committed_reproduction_is_complete_and_exact():
    """The committed run: every method at every sparsity on both models, 3 seeds, exact
    sparsities (rerun it with the command in its results.md)."""
    rows = json.loads(COMMITTED.read_text())["rows"]
    for pair, nm in (("mnist10k:lenet300100", True), ("mnist1d:mnist1d_cnn", False)):
        mine = {(r["method"], r["sparsity"]): r for r in rows if r["pair"] == pair}
        for method in ("gradual", "static", "set", "rigl", "snfs", "srste"):
            for s in (0.8, 0.9, 0.95, 0.98):
                row = mine[(method, s)]
                assert len(row["accuracy"]) == 3
                assert np.allclose(row["mask_sparsity"], s, atol=2e-4)
        assert (("srste_2:4", 0.5) in mine) == nm and ("dense", 0.0) in mine
    assert jax.__version__  # the environment is recorded beside the rows
    assert optax.__version__


@pytest.mark.parametrize(("argv", "message"), [
    (["--pairs", "mnist:lenet5"], "--pairs mnist:lenet5: unknown pair 'mnist:lenet5'; known: "
                                  "mnist10k:lenet300100, mnist1d:mnist1d_cnn"),
    (["--sparsities", "0.5", "1"], "--sparsities 0.5 1: 1 is outside (0, 1)"),
    (["--every", "0"], "--every 0: must be >= 1"),
    (["--data-dir", "/no/such/folder"], "--data-dir /no/such/folder: is not a folder"),
])
def test_bad_values_exit_2_naming_the_flag_before_any_work(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        study.main([*argv, "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == f"sparsejax sparse_training: error: {message}"
    assert not (tmp_path / "run").exists()


def test_smoke_sizes_and_recorded_flags():
    from sparsejax.runner._study import parse_study

    cfg, _ = parse_study(study.STUDY, ["--smoke"])
    assert (cfg.steps, cfg.seeds, cfg.every, cfg.sparsities) == (40, 2, 10, (0.9, 0.98))
    cfg, _ = parse_study(study.STUDY, ["--smoke", "--sparsities", "0.8", "--seeds", "3"])
    assert (cfg.sparsities, cfg.seeds) == ((0.8,), 3)  # given flags are kept
    # the committed run's command
    cfg, _ = parse_study(study.STUDY, ["--out", "results/sparse_training/cpu_3seeds",
                                       "--resume"])
    assert cfg.data_dir is None and cfg.steps is None and cfg.methods == study.METHODS
    assert cfg.sparsities == (0.8, 0.9, 0.95, 0.98) and (cfg.seeds, cfg.every) == (3, 100)
