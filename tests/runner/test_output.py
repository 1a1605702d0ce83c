"""Tests of sparsejax.runner's results files: atomic writes, run folders, epath URIs."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from sparsejax.runner import (
    ConfigError,
    as_path,
    atomic_write,
    environment,
    prepare_output_dir,
    write_json,
    write_report,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


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


def test_write_report_paths_infinities_and_arrays(tmp_path):
    path = write_report(tmp_path / "r.json", {"out": pathlib.Path("a/b"), "x": float("inf"),
                                              "t": (1, 2), "a": jax.numpy.arange(3)}, "table")
    assert json.loads(path.read_text()) == {"out": "a/b", "x": None, "t": [1, 2],
                                            "a": [0, 1, 2]}
    assert (tmp_path / "r.md").read_text() == "table\n"


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = write_json(tmp_path / "results.json", {"old": 1})

    def interrupted(fd):
        raise KeyboardInterrupt  # a kill between writing the temporary file and the replace

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_json(target, {"new": list(range(10_000))})
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temp file left


def test_a_killed_write_never_leaves_a_truncated_file(tmp_path):
    """SIGKILL during the write of a large results.json: the previous file is intact."""
    target = tmp_path / "results.json"
    target.write_text('{"old": 1}\n')
    script = textwrap.dedent(f"""
        import os, sys, time
        from sparsejax.runner import write_json
        real = os.fsync
        def slow(fd):
            print("writing", flush=True)
            time.sleep(60)
        os.fsync = slow
        write_json({str(target)!r}, {{"new": list(range(200_000))}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"old": 1}


def test_prepare_output_dir_refuses_a_previous_run(tmp_path):
    out = prepare_output_dir(tmp_path / "run", {"seeds": 2}, study="comparison")
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"] == {"seeds": 2} and saved["study"] == "comparison"
    assert saved["environment"]["backend"] == jax.default_backend()
    (out / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="--resume to continue that run or --overwrite to move "
                                          "it aside") as info:
        prepare_output_dir(out, {"seeds": 3})
    assert info.value.field == "out"
    assert json.loads((out / "config.json").read_text())["config"] == {"seeds": 2}  # untouched
    # --resume: the same config (up to progress / log / resume flags) keeps the folder
    assert prepare_output_dir(out, {"seeds": 2, "progress": False}, resume=True) == out
    assert (out / "results.json").exists()
    with pytest.raises(ConfigError, match=r"changed: seeds: 2 -> 3"):
        prepare_output_dir(out, {"seeds": 3}, resume=True)
    with pytest.raises(ConfigError, match="not both"):
        prepare_output_dir(out, {"seeds": 2}, resume=True, overwrite=True)
    # --overwrite: the old run is moved aside, never deleted
    prepare_output_dir(out, {"seeds": 3}, overwrite=True)
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert sorted(p.name for p in aside.iterdir()) == ["config.json", "results.json"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert json.loads((out / "config.json").read_text())["config"] == {"seeds": 3}
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        prepare_output_dir(tmp_path / "file", {})
    (tmp_path / "empty").mkdir()
    assert (prepare_output_dir(tmp_path / "empty", {}) / "config.json").exists()
    with pytest.raises(ConfigError, match="holds no config.json"):
        prepare_output_dir(aside / "..", {}, resume=True)


class _LocalBucket:
    """An etils backend that keeps ``gs://`` paths under a local folder (a fake bucket)."""

    def __init__(self, root, inner):
        self.root, self.inner, self.calls = str(root), inner, []

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def mapped(*args, **kwargs):
            self.calls.append(name)
            args = [a.replace("gs://", self.root + "/") if isinstance(a, str) else a
                    for a in args]
            return method(*args, **kwargs)

        return mapped


def test_output_paths_go_through_epath(tmp_path, monkeypatch):
    from etils.epath import backend, gpath

    bucket = _LocalBucket(tmp_path / "bucket", backend.os_backend)
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", bucket)
    monkeypatch.chdir(tmp_path)
    out = prepare_output_dir("gs://bucket-a/run1", {"seeds": 1})
    assert str(out) == "gs://bucket-a/run1" and not isinstance(out, pathlib.Path)
    write_json(out / "results.json", {"ok": True})
    atomic_write(out / "fig.png", b"\x89PNG")
    stored = tmp_path / "bucket" / "bucket-a" / "run1"
    assert json.loads((stored / "results.json").read_text()) == {"ok": True}
    assert (stored / "fig.png").read_bytes() == b"\x89PNG"
    assert json.loads((stored / "config.json").read_text())["config"] == {"seeds": 1}
    assert not (tmp_path / "gs:").exists()  # no local ./gs:/bucket folder
    with pytest.raises(ConfigError, match="is not empty"):
        prepare_output_dir("gs://bucket-a/run1", {"seeds": 1})
    assert {"open", "exists"} <= set(bucket.calls)
    assert isinstance(as_path("runs/x"), pathlib.Path)
