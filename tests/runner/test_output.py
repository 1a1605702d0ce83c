"""Tests of sparsejax.runner's environment record and results files."""

import json
import pathlib

import jax
import numpy as np

from sparsejax.runner import environment, prepare_output_dir, write_report


def test_write_report_and_environment(tmp_path, monkeypatch):
    # The backend is initialised first, so XLA never reads this value (a real dump flag
    # would otherwise make the worker dump every later program into the working tree).
    jax.devices()
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nonexistent/never-read")
    env = environment()
    assert env["xla_flags"] == "--xla_dump_to=/nonexistent/never-read" and env["backend"] == jax.default_backend()
    assert env["device_count"] == jax.device_count() and env["cpu_count"] >= 1
    assert "load_average_1m" not in env
    load = environment(2.5)["load_average_1m"]
    assert load["start"] == 2.5 and load["end"] >= 0
    path = write_report(tmp_path / "sub" / "bench_t.json",
                        {"rows": [{"ms": np.float32(1.5), "nan": float("nan")}]}, "# t\n\n| a |\n")
    assert path == tmp_path / "sub" / "bench_t.json"
    assert json.loads(path.read_text()) == {"rows": [{"ms": 1.5, "nan": None}]}
    assert (tmp_path / "sub" / "bench_t.md").read_text() == "# t\n\n| a |\n"


def test_write_report_paths_and_infinities_and_output_dir(tmp_path):
    path = write_report(tmp_path / "r.json", {"out": pathlib.Path("a/b"), "x": float("inf"),
                                              "t": (1, 2)}, "table")
    assert json.loads(path.read_text()) == {"out": "a/b", "x": None, "t": [1, 2]}
    assert (tmp_path / "r.md").read_text() == "table\n"
    out = prepare_output_dir(tmp_path / "run", {"seeds": 2})
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"] == {"seeds": 2}
    assert saved["environment"]["backend"] == jax.default_backend()
