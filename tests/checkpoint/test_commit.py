"""Commit semantics of sparsejax.checkpoint: kills at every point, damaged records, paths.

A step counts only once its commit record is written (after orbax's commit); interrupted
saves are never restored and are moved aside by the next save; metadata, manifest and
record are checksummed; directories go through ``etils.epath`` (``file://``, ``gs://``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath

from sparsejax import checkpoint as ckpt
from sparsejax.checkpoint import _record, _steps

TREE = {"w": jnp.arange(12.0).reshape(3, 4), "m": jnp.arange(12).reshape(3, 4) % 2 == 0}


def at(step: int):
    """The tree of step ``step`` (distinct values per step)."""
    return {"w": TREE["w"] + step, "m": TREE["m"]}


class Killed(Exception):
    pass


def kill_record_of(monkeypatch, step: int) -> None:
    """Make the commit record of ``step`` fail: orbax has committed, sparsejax has not."""
    write = _record.write_record

    def killed(step_dir, s):
        if s == step:
            raise Killed(f"killed before the record of step {s}")
        write(step_dir, s)

    monkeypatch.setattr(_steps, "write_record", killed)


def aside(directory: pathlib.Path) -> list[list[str]]:
    """``[name, reason]`` of every entry moved aside, sorted."""
    folder = directory / "aside"
    return sorted(p.name.split(".")[:2] for p in folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- kills


def test_kill_between_orbax_commit_and_record_resumes(tmp_path, monkeypatch):
    for step in (0, 2):
        ckpt.save(tmp_path, step, at(step))
    kill_record_of(monkeypatch, 4)
    with pytest.raises(Killed):
        ckpt.save(tmp_path, 4, at(4))
    monkeypatch.undo()
    assert (tmp_path / "4").is_dir() and not (tmp_path / "4" / "sparsejax_commit.json").exists()
    # Step 4 is not a step: listing, latest and a train-style "newer steps" check skip it.
    assert ckpt.all_steps(tmp_path) == [0, 2] and ckpt.latest_step(tmp_path) == 2
    with pytest.warns(RuntimeWarning, match=r"ignoring '.*/4': an interrupted save"):
        out = ckpt.restore(tmp_path, TREE)  # no "falling back": step 2 is the newest step
    assert out.step == 2
    np.testing.assert_array_equal(out.state["w"], at(2)["w"])
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"incomplete: no sparsejax_commit"):
        ckpt.restore(tmp_path, TREE, step=4)
    # The resumed run saves step 4 again (the lottery driver's "already holds steps [4]"):
    # the interrupted one is moved aside, with a warning, not deleted.
    with pytest.warns(RuntimeWarning, match=r"'.*/4' \(incomplete\) moved aside to '.*/aside/4"):
        ckpt.save(tmp_path, 4, at(4))
    assert ckpt.all_steps(tmp_path) == [0, 2, 4] and aside(tmp_path) == [["4", "incomplete"]]
    np.testing.assert_array_equal(ckpt.restore(tmp_path, TREE).state["w"], at(4)["w"])


def test_kill_during_the_first_save_restarts(tmp_path, monkeypatch):
    # (a) killed before orbax's commit: only orbax's tmp directory.
    def killed_in_orbax(self, step, args=None, **kw):
        (pathlib.Path(os.fspath(self.directory)) / f"{step}.orbax-checkpoint-tmp-17").mkdir()
        raise Killed

    monkeypatch.setattr(_steps.ocp.CheckpointManager, "save", killed_in_orbax)
    with pytest.raises(Killed):
        ckpt.save(tmp_path, 0, at(0))
    monkeypatch.undo()
    # (b) a restart killed between orbax's commit of step 0 and the record.
    kill_record_of(monkeypatch, 0)
    with pytest.warns(RuntimeWarning, match=r"0.orbax-checkpoint-tmp-17' \(incomplete\) moved"):
        with pytest.raises(Killed):
            ckpt.save(tmp_path, 0, at(0))
    monkeypatch.undo()
    assert ckpt.all_steps(tmp_path) == [] and ckpt.latest_step(tmp_path) is None
    with pytest.raises(FileNotFoundError, match=r"only interrupted saves: \['0'\]"):
        ckpt.restore(tmp_path, TREE)
    # (c) the next restart starts from scratch and saves step 0.
    with pytest.warns(RuntimeWarning, match=r"'.*/0' \(incomplete\) moved aside"):
        ckpt.save(tmp_path, 0, at(0))
    assert ckpt.all_steps(tmp_path) == [0]
    assert aside(tmp_path) == [["0", "incomplete"], ["0", "orbax-checkpoint-tmp-17"]]
    assert ckpt.restore(tmp_path, TREE).step == 0


def test_keep_removes_old_steps_only_after_the_new_one_is_committed(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        ckpt.save(tmp_path, step, at(step), keep=1)
    assert ckpt.all_steps(tmp_path) == [3]
    kill_record_of(monkeypatch, 4)
    with pytest.raises(Killed):
        ckpt.save(tmp_path, 4, at(4), keep=1)
    monkeypatch.undo()
    assert ckpt.all_steps(tmp_path) == [3]  # orbax's max_to_keep would have removed it
    with pytest.warns(RuntimeWarning, match="interrupted save"):
        assert ckpt.restore(tmp_path, TREE).step == 3


def test_a_real_kill_after_orbax_commit_in_a_subprocess_resumes(tmp_path):
    # os._exit inside the record writer: no exception handler, no cleanup, as with kill -9.
    script = textwrap.dedent(
        f"""
        import os, jax.numpy as jnp
        from sparsejax import checkpoint
        from sparsejax.checkpoint import _record, _steps
        write = _record.write_record
        def killed(step_dir, step):
            if step == 4:
                os._exit(9)
            write(step_dir, step)
        _steps.write_record = killed
        tree = {{"w": jnp.arange(12.0).reshape(3, 4), "m": jnp.arange(12).reshape(3, 4) % 2 == 0}}
        for step in (2, 4):
            checkpoint.save({str(tmp_path)!r}, step, {{"w": tree["w"] + step, "m": tree["m"]}})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert done.returncode == 9, done.stderr.decode()[-2000:]
    assert ckpt.all_steps(tmp_path) == [2]
    with pytest.warns(RuntimeWarning, match="interrupted save"):
        assert ckpt.restore(tmp_path, TREE).step == 2
    with pytest.warns(RuntimeWarning, match="moved aside"):
        ckpt.save(tmp_path, 4, at(4))
    assert ckpt.restore(tmp_path, TREE).step == 4


def test_delete_uncommits_before_removing(tmp_path, monkeypatch):
    for step in (1, 2):
        ckpt.save(tmp_path, step, at(step))

    def killed_rmtree(self, *a, **k):
        raise Killed

    monkeypatch.setattr(gpath.PosixGPath, "rmtree", killed_rmtree)
    with pytest.raises(Killed):
        ckpt.delete(tmp_path, 2)
    monkeypatch.undo()
    assert ckpt.all_steps(tmp_path) == [1]  # half-removed: not a (damaged) committed step


# --------------------------------------------------------------------------- damaged record


def flip_bit(path: pathlib.Path, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def test_a_flipped_metadata_bit_falls_back(tmp_path):
    # The lottery driver keeps its state in the metadata: 0.3 -> 0.2 is a one-bit flip.
    ckpt.save(tmp_path, 1, at(1), metadata={"rate": 0.3, "records": [1, 2]})
    ckpt.save(tmp_path, 2, at(2), metadata={"rate": 0.3, "records": [1, 2, 3]})
    meta = tmp_path / "2" / "metadata" / "metadata"
    text = meta.read_bytes()
    flip_bit(meta, 8 * text.index(b"0.3") + 16)  # '3' (0x33) -> '2' (0x32)
    assert b'"rate": 0.2' in meta.read_bytes()
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"metadata/metadata fails its SHA-256"):
        ckpt.restore(tmp_path, TREE, step=2)
    with pytest.warns(RuntimeWarning, match=r"step 2\).*SHA-256.*falling back"):
        out = ckpt.restore(tmp_path, TREE)
    assert out.step == 1 and out.metadata == {"rate": 0.3, "records": [1, 2]}


@pytest.mark.parametrize(
    "target",
    ["sparsejax_commit.json", "metadata/metadata", "manifest/metadata", "_CHECKPOINT_METADATA"],
)
def test_every_sampled_one_bit_flip_is_caught(tmp_path, target):
    ckpt.save(tmp_path, 3, at(3), metadata={"rate": 0.3})
    path = tmp_path / "3" / target
    original = path.read_bytes()
    bits = np.random.default_rng(len(target)).choice(8 * len(original), 48, replace=False)
    for bit in bits:
        flip_bit(path, int(bit))
        with pytest.raises(ckpt.CorruptCheckpointError, match=r"step 3"):
            ckpt.restore(tmp_path, TREE, step=3)
        path.write_bytes(original)
    assert ckpt.restore(tmp_path, TREE, step=3).metadata == {"rate": 0.3}


def sealed(record: dict) -> dict:
    """``record`` with a valid self-checksum, so only its shape is wrong."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return {**body, "sha256": hashlib.sha256(text.encode()).hexdigest()}


V2 = "sparsejax.checkpoint.commit/2"


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"files": []}, r"unknown format None"),
        ([], r"is a list, not a JSON object"),
        ("not json", r"is not valid JSON"),
        (sealed({"format": V2, "step": 2, "files": []}), r"lists no files"),
        (sealed({"format": V2, "step": 9, "files": {"a": {"bytes": 1}}}), r"belongs to step 9"),
        (
            sealed({"format": V2, "step": True, "files": {"a": {"bytes": 1}}}),
            r"belongs to step True",
        ),
        (sealed({"format": V2, "step": 2, "files": {"a": {"bytes": -1}}}), r"malformed entry"),
        (sealed({"format": V2, "step": 2, "files": {"a": 5}}), r"malformed entry for 'a'"),
        (
            sealed({"format": V2, "step": 2, "files": {"a": {"bytes": 1, "sha256": "x"}}}),
            r"malformed",
        ),
        (
            sealed({"format": V2, "step": 2, "files": {"../../x": {"bytes": 1}}}),
            r"invalid file name",
        ),
        (
            sealed({"format": V2, "step": 2, "files": {"a": {"bytes": 1}}, "extra": 1}),
            r"has the keys",
        ),
        (
            {"format": V2, "step": 2, "files": {"a": {"bytes": 1}}, "sha256": "0" * 64},
            r"own checksum",
        ),
        ({"format": "sparsejax.checkpoint/1", "step": 2, "files": []}, r"lists no files"),
        ({"format": "sparsejax.checkpoint/1", "step": 2, "files": {"a": "5"}}, r"malformed entry"),
    ],
)
def test_a_malformed_record_falls_back(tmp_path, record, reason):
    ckpt.save(tmp_path, 1, at(1))
    ckpt.save(tmp_path, 2, at(2))
    text = record if isinstance(record, str) else json.dumps(record)
    (tmp_path / "2" / "sparsejax_commit.json").write_text(text)
    with pytest.raises(
        ckpt.CorruptCheckpointError, match=rf"step 2\): sparsejax_commit.json .*{reason}"
    ):
        ckpt.restore(tmp_path, TREE, step=2)
    with pytest.warns(RuntimeWarning, match=rf"{reason}.*falling back"):
        assert ckpt.restore(tmp_path, TREE).step == 1
    assert ckpt.all_steps(tmp_path) == [1] and aside(tmp_path) == [["2", "damaged"]]


def test_a_legacy_record_of_sizes_still_restores(tmp_path):
    ckpt.save(tmp_path, 1, at(1))
    step_dir = tmp_path / "1"
    files = {
        p.relative_to(step_dir).as_posix(): p.stat().st_size
        for p in sorted(step_dir.rglob("*"))
        if p.is_file() and p.name != "sparsejax_commit.json"
    }
    legacy = {"format": "sparsejax.checkpoint/1", "step": 1, "files": files}
    (step_dir / "sparsejax_commit.json").write_text(json.dumps(legacy))
    np.testing.assert_array_equal(ckpt.restore(tmp_path, TREE).state["w"], at(1)["w"])


def test_restore_can_leave_the_directory_untouched(tmp_path):
    ckpt.save(tmp_path, 1, at(1))
    ckpt.save(tmp_path, 2, at(2))
    (tmp_path / "2" / "sparsejax_commit.json").write_text("{}")
    with pytest.warns(RuntimeWarning, match=r"unknown format None; falling back"):
        assert ckpt.restore(tmp_path, TREE, move_damaged_aside=False).step == 1
    assert (tmp_path / "2").is_dir() and aside(tmp_path) == []


# --------------------------------------------------------------------------- snapshots


def test_replacing_a_snapshot_is_atomic(tmp_path, monkeypatch):
    ckpt.save_snapshot(tmp_path, "rewind", 5, at(5))
    snaps = tmp_path / "snapshots"
    # Killed after the new copy is committed, before the swap: the old snapshot stands.
    ckpt.save(snaps / "rewind+new", 7, at(7))
    assert ckpt.restore_snapshot(tmp_path, "rewind", TREE).step == 5
    # Killed between the two renames: the committed new copy is the snapshot.
    (snaps / "rewind").rename(snaps / "rewind+old")
    assert ckpt.snapshot_names(tmp_path) == ["rewind"]
    assert ckpt.restore_snapshot(tmp_path, "rewind", TREE).step == 7
    # The next save settles the leftovers (the replaced copy goes: overwrite was asked).
    ckpt.save_snapshot(tmp_path, "rewind", 9, at(9), overwrite=True)
    assert sorted(p.name for p in snaps.iterdir()) == ["rewind"]
    out = ckpt.restore_snapshot(tmp_path, "rewind", TREE)
    assert out.step == 9
    np.testing.assert_array_equal(out.state["w"], at(9)["w"])
    # Killed while saving the replacement: the old snapshot stands; the staging copy is
    # moved aside by the next save.
    kill_record_of(monkeypatch, 11)
    with pytest.raises(Killed):
        ckpt.save_snapshot(tmp_path, "rewind", 11, at(11), overwrite=True)
    monkeypatch.undo()
    assert ckpt.restore_snapshot(tmp_path, "rewind", TREE).step == 9
    with pytest.warns(RuntimeWarning, match=r"rewind\+new' \(incomplete\) moved aside"):
        ckpt.save_snapshot(tmp_path, "rewind", 11, at(11), overwrite=True)
    assert ckpt.restore_snapshot(tmp_path, "rewind", TREE).step == 11
    # The same step saved again (the lottery driver re-saves its rewind point).
    ckpt.save_snapshot(tmp_path, "rewind", 11, at(12), overwrite=True)
    np.testing.assert_array_equal(
        ckpt.restore_snapshot(tmp_path, "rewind", TREE).state["w"], at(12)["w"]
    )


def test_a_first_snapshot_killed_half_way_can_be_saved_again(tmp_path, monkeypatch):
    kill_record_of(monkeypatch, 0)
    with pytest.raises(Killed):
        ckpt.save_snapshot(tmp_path, "init", 0, at(0))
    monkeypatch.undo()
    assert ckpt.snapshot_names(tmp_path) == []
    with pytest.raises(ValueError, match="no snapshot 'init'"):
        ckpt.restore_snapshot(tmp_path, "init", TREE)
    with pytest.warns(RuntimeWarning, match=r"snapshots/init' \(incomplete\) moved aside"):
        ckpt.save_snapshot(tmp_path, "init", 0, at(0))  # no overwrite needed
    assert ckpt.restore_snapshot(tmp_path, "init", TREE).step == 0


# --------------------------------------------------------------------------- paths (#26)


def test_file_url_directories(tmp_path):
    url = "file://" + str(tmp_path / "run 1").replace(" ", "%20")
    path = ckpt.save(url, 3, at(3), metadata={"a": 1})
    assert os.fspath(path) == str(tmp_path / "run 1" / "3")
    assert ckpt.all_steps(url) == [3] == ckpt.all_steps(tmp_path / "run 1")
    assert ckpt.restore(url, TREE).metadata == {"a": 1}
    assert not pathlib.Path("file:").exists()


class LocalBucket:
    """An epath backend that keeps ``gs://`` paths in a local folder (a stand-in for GCS)."""

    def __init__(self, root: pathlib.Path):
        self.root = str(root)
        self.calls: list[str] = []

    def local(self, p):
        p = os.fspath(p)
        return os.path.join(self.root, p[len("gs://") :]) if p.startswith("gs://") else p

    def remote(self, p):
        p = os.fspath(p)
        return "gs://" + os.path.relpath(p, self.root) if p.startswith(self.root) else p

    def __getattr__(self, name):
        fn = getattr(epath_backend.os_backend, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            out = fn(*[self.local(a) if isinstance(a, str) else a for a in args], **kwargs)
            if name == "walk":
                return ((self.remote(d), ds, fs) for d, ds, fs in out)
            if name == "glob":
                return [self.remote(x) for x in out]
            return out

        return call


def test_gs_paths_go_through_epath_to_orbax(tmp_path, monkeypatch):
    bucket = LocalBucket(tmp_path)  # gs://bucket/run1 -> <tmp_path>/bucket/run1
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", bucket)
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False, raising=False)
    managers = []
    real_manager = _steps._manager

    def manager(directory):  # orbax itself writes the bucket's local folder
        managers.append(directory)
        return real_manager(epath.Path(bucket.local(directory)))

    monkeypatch.setattr(_steps, "_manager", manager)
    monkeypatch.chdir(tmp_path)
    run = "gs://bucket/run1"
    ckpt.save(run, 1, at(1))
    ckpt.save(run, 2, at(2), metadata={"lr": 0.1})
    assert all(isinstance(d, epath.Path) and os.fspath(d) == run for d in managers)
    assert not (tmp_path / "gs:").exists()  # never a local ./gs:/bucket/run1
    assert (tmp_path / "bucket" / "run1" / "2" / "sparsejax_commit.json").is_file()
    assert ckpt.all_steps(run) == [1, 2] and ckpt.latest_step(run) == 2
    out = ckpt.restore(run, TREE)
    assert out.step == 2 and out.metadata == {"lr": 0.1}
    np.testing.assert_array_equal(out.state["w"], at(2)["w"])
    # Damage and interrupted saves are handled through epath too (rename = move aside).
    (tmp_path / "bucket" / "run1" / "2" / "sparsejax_commit.json").write_text("[]")
    with pytest.warns(
        RuntimeWarning,
        match=r"gs://bucket/run1/2 \(step 2\).*moved to 'gs://bucket/run1/aside/2.damaged",
    ):
        assert ckpt.restore(run, TREE).step == 1
    ckpt.save_snapshot(run, "init", 0, at(0))
    assert ckpt.snapshot_names(run) == ["init"]
    assert {"listdir", "rename", "open", "walk", "stat"} <= set(bucket.calls)


def test_bad_directories_are_named():
    with pytest.raises(ValueError, match=r"unknown scheme 'nope://'"):
        ckpt.all_steps("nope://x/y")
    with pytest.raises(TypeError, match="directory must be a str or os.PathLike"):
        ckpt.save(3, 0, at(0))
    with pytest.raises(ValueError, match="file:// URL must name a local path"):
        ckpt.all_steps("file://host/x")
