"""The ``sparsejax`` command: help, bad invocations, run folders of every study, plug-ins.

None of these tests trains a model: every check runs before any work.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import resource
import shlex
import subprocess
import sys
import time

import pytest

import sparsejax.train
from sparsejax import lottery
from sparsejax.runner import STUDIES, get_study, method_names, parse_config, register_method
from sparsejax.runner import cli as sparsejax_cli
from sparsejax.runner._config import field_docs
from sparsejax.runner._study import parse_study

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLUGIN = str(ROOT / "tests" / "runner" / "plugin_example.py")


def _run_cli(*argv: str) -> tuple[subprocess.CompletedProcess, float, float]:
    """``python -m sparsejax.runner argv`` in a fresh process: (result, wall s, CPU s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sparsejax.runner", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu


def test_top_level_help_lists_every_study_and_command(capsys):
    assert sparsejax_cli(["--help"]) == 0
    text = capsys.readouterr().out
    for name in (*STUDIES, "methods", "datasets", "replot"):
        assert f"\n  {name} " in text
    assert sparsejax_cli(["nonsense"]) == 2
    assert "unknown study or command 'nonsense'" in capsys.readouterr().err


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_every_study_has_help_defaults_and_choices(study, capsys):
    cls = get_study(study).config
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert missing == [], f"fields of {study} without help: {missing}"
    with pytest.raises(SystemExit) as info:
        sparsejax_cli([study, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"usage: sparsejax {study}" in text
    assert text.count("(default:") == len(dataclasses.fields(cls))
    assert "--resume, --no-resume" in text and "--overwrite, --no-overwrite" in text
    assert "{jsonl,tensorboard}" in text  # choices
    for word in ("issue", "DESIGN.md", "../" + "shared", "shared/" + "data"):
        assert word not in text


@pytest.mark.parametrize(("argv", "message"), [
    (["structured", "--sparsities", "2"], "--sparsities 2: 2 is outside [0, 1)"),
    (["comparison", "--compressions", "0.5"], "--compressions 0.5: must be >= 1"),
    (["comparison", "--dataset", "mnist"], "--data-dir None: data set 'mnist' is read from "
                                           "files: give --data-dir FOLDER"),
    (["comparison", "--smoke", "--seeds", "0"], "--seeds 0: must be >= 1"),
    (["lottery", "--rate", "1.5"], "--rate 1.5: must be in (0, 1)"),
    (["comparison", "--methods", "l1_layer"], "invalid choice"),
])
def test_bad_invocations_exit_2_at_once_with_one_line(argv, message, tmp_path):
    proc, wall, cpu = _run_cli(*argv, "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split())
    if message != "invalid choice":  # our checks: one line naming the flag, no traceback
        assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"sparsejax {argv[0]}: error: --")
    assert not (tmp_path / "run").exists()  # nothing written
    assert cpu < 5.0
    if os.getloadavg()[0] < (os.cpu_count() or 1):  # wall time only on an unloaded machine
        assert wall < 5.0


def test_smoke_changes_only_the_fields_not_given():
    study = get_study("structured")
    cfg, given = parse_study(study, ["--smoke", "--sparsities", "0.3", "--seeds", "2"])
    assert given == {"smoke", "sparsities", "seeds"}
    assert cfg.sparsities == (0.3,) and cfg.seeds == 2  # kept
    assert cfg.finetune_epochs == 2 and cfg.max_train == 512  # smoke values
    assert cfg.train_epochs == 1  # smoke wins over the data set's recipe, not over flags
    cfg, _ = parse_study(study, ["--train-epochs", "7"])
    assert (cfg.train_epochs, cfg.batch_size, cfg.lr) == (7, 100, 1e-2)  # mnist1d recipe
    cfg, _ = parse_study(get_study("lottery"), ["--task", "lenet", "--steps", "200"])
    assert (cfg.rate, cfg.steps, cfg.dataset, cfg.controls) == (0.2, 200, "mnist10k", ("reinit",))


# -------------------------------------------------------------- run folders of every study
def _previous_run(folder: pathlib.Path) -> dict[str, float]:
    folder.mkdir(parents=True)
    for name, text in (("config.json", '{"config": {"seeds": 5}}'),
                       ("results.json", '{"rows": []}'), ("results.md", "# old\n")):
        (folder / name).write_text(text)
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _files(folder: pathlib.Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


class _Stop(Exception):
    pass


def _stop(*args, **kwargs):
    raise _Stop("training failed")


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_rerun_on_a_previous_run_is_refused_and_deletes_nothing(study, tmp_path, capsys):
    out = tmp_path / "run"
    before = _previous_run(out)
    (out / "checkpoints").mkdir()
    with pytest.raises(SystemExit) as info:
        sparsejax_cli([study, "--smoke", "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--resume to continue that run or --overwrite to move it aside" in err
    assert {k: v for k, v in _files(out).items() if k != "checkpoints"} == before
    assert (out / "checkpoints").is_dir()  # the lottery's checkpoints stay
    # a run that fails at once (a bad value) on the previous run touches nothing either
    with pytest.raises(SystemExit):
        sparsejax_cli([study, "--smoke", "--seeds", "0", "--out", str(out), "--resume"])
    assert {k: v for k, v in _files(out).items() if k != "checkpoints"} == before
    # --resume with another config is refused, naming what changed
    with pytest.raises(SystemExit):
        sparsejax_cli([study, "--smoke", "--out", str(out), "--resume"])
    assert "--resume needs the recorded config; changed:" in capsys.readouterr().err


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_a_failed_run_leaves_its_config_and_no_results(study, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sparsejax.train, "train", _stop)
    monkeypatch.setattr(sparsejax.train, "make_train_loop", _stop)     # sparse_training
    monkeypatch.setattr(sparsejax.train, "make_train_step", _stop)     # posttrain
    monkeypatch.setattr(lottery, "imp", _stop)
    out = tmp_path / "run"
    argv = [study, "--smoke", "--out", str(out), "--no-progress"]
    if study == "dense":
        argv += ["--pairs", "digits:lenet300100"]
    if study == "posttrain":  # never into the default folder, whatever happens
        argv += ["--checkpoint-dir", str(tmp_path / "checkpoints")]
    with pytest.raises(_Stop):
        sparsejax_cli(argv)
    assert sorted(_files(out)) == ["config.json"]  # written at the start; no results
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["study"] == study and recorded["config"]["smoke"] is True
    # the same command again is refused; with --resume it starts (and fails the same way)
    with pytest.raises(SystemExit):
        sparsejax_cli(argv)
    with pytest.raises(_Stop):
        sparsejax_cli([*argv, "--resume"])
    # --overwrite moves the failed run aside
    with pytest.raises(_Stop):
        sparsejax_cli([*argv, "--overwrite"])
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]) == 1
    assert "moved the previous run aside" in capsys.readouterr().out


# -------------------------------------------------------------- plug-ins and listings
def test_plugins_register_methods_and_datasets(capsys):
    assert sparsejax_cli(["methods", "--plugin", PLUGIN]) == 0
    text = capsys.readouterr().out
    assert "squared_magnitude  unstructured, global, one_shot  w², global ranking" in text
    assert "hidden_only" in text
    assert sparsejax_cli(["datasets", "--plugin", PLUGIN]) == 0
    assert "blobs          registered  four Gaussian blobs (test plug-in)" in \
        capsys.readouterr().out
    assert {"squared_magnitude", "hidden_only"} <= set(method_names("unstructured"))
    cfg, _ = parse_study(get_study("comparison"), ["--plugin", PLUGIN, "--dataset", "blobs",
                                                   "--methods", "squared_magnitude"])
    assert cfg.dataset == "blobs" and cfg.methods == ("squared_magnitude",)
    with pytest.raises(SystemExit) as info:
        parse_study(get_study("comparison"), ["--plugin", "no_such_module_here"])
    assert info.value.code == 2
    assert "--plugin no_such_module_here: cannot import it: ModuleNotFoundError" in \
        capsys.readouterr().err


def test_register_method_checks():
    with pytest.raises(ValueError, match="'global_magnitude' is a built-in method"):
        register_method("global_magnitude", lambda i: i.params, overwrite=True)
    with pytest.raises(ValueError, match="give exactly one of score and prune"):
        register_method("neither")
    with pytest.raises(ValueError, match="a gradual method needs a score"):
        register_method("g", prune=lambda i, s: None, schedule="gradual")
    with pytest.raises(ValueError, match="scope must be 'layer' or 'global'"):
        register_method("s", lambda i: i.params, scope="all")
    assert "neither" not in method_names()


# -------------------------------------------------------------- recorded commands
SCRIPTS = {"shrinkbench": "comparison", "lottery": "lottery", "dense_baselines": "dense",
           "structured_pruning": "structured", "dynamic_gating": "dynamic",
           "sparsity_learning": "sparsity_learning", "sparse_training": "sparse_training",
           "posttrain": "posttrain"}
# scripts whose recorded commands all pass --progress false
QUIET = {"shrinkbench", "lottery", "dense_baselines", "structured_pruning", "dynamic_gating"}


def _recorded_commands() -> list[str]:
    pattern = re.compile(r"`python experiments/(" + "|".join(SCRIPTS) + r")\.py([^`]*)`")
    found = {m.group(0).strip("`") for path in (ROOT / "results").rglob("*.md")
             for m in pattern.finditer(path.read_text())}
    # commands recorded in config.json (runs whose results.md is still to be written)
    for path in (ROOT / "results").rglob("config.json"):
        recorded = json.loads(path.read_text()).get("environment", {}).get("command", "")
        if recorded.split(" ")[0].removesuffix(".py") in SCRIPTS:
            found.add(f"python experiments/{recorded}")
    return sorted(c for c in found if "<" not in c)  # not a template (--seed S)


@pytest.mark.parametrize("command", _recorded_commands())
def test_commands_recorded_in_committed_results_still_parse(command):
    """Every study command in results/ parses to the same values with today's flags."""
    script, *argv = shlex.split(command)[1:]
    study = get_study(SCRIPTS[pathlib.Path(script).stem])
    cfg = parse_config(study.config, argv, choices=study.choices() if study.choices else None)
    if pathlib.Path(script).stem in QUIET or study.name == "sparsity_learning":
        assert cfg.progress is False
    if "--out" in argv:
        assert cfg.out == argv[argv.index("--out") + 1]
    if "--seeds" in argv:
        assert cfg.seeds == int(argv[argv.index("--seeds") + 1])
    if "--controls" in argv:
        assert cfg.controls == ()


def test_there_are_recorded_commands_of_every_study_script():
    assert {shlex.split(c)[1].split("/")[1][:-3] for c in _recorded_commands()} == set(SCRIPTS)
