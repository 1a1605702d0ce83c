"""Byte corpora split by file, the Python standard library corpus, token windows."""

from __future__ import annotations

import hashlib
import platform

import numpy as np
import pytest

from sparsejax.data import (
    ByteCorpus,
    contiguous_windows,
    load_byte_corpus,
    load_python_stdlib,
    random_windows,
)


@pytest.fixture
def folder(tmp_path):
    for i in range(60):
        sub = tmp_path / f"pkg{i % 3}"
        sub.mkdir(exist_ok=True)
        (sub / f"m{i:02d}.py").write_bytes(f"x = {i}\n".encode() * (i + 1))
    (tmp_path / "notes.txt").write_text("not python")
    skipped = tmp_path / "site-packages" / "third"
    skipped.mkdir(parents=True)
    (skipped / "party.py").write_text("skipped = True\n")
    return tmp_path


def test_split_by_file_is_deterministic_and_complete(folder):
    corpus = load_byte_corpus(folder, validation_fraction=0.2, calibration_fraction=0.2)
    again = load_byte_corpus(folder, validation_fraction=0.2, calibration_fraction=0.2)
    assert isinstance(corpus, ByteCorpus) and corpus.name == folder.name
    files = [f for split in ("train", "validation", "calibration") for f in corpus.files[split]]
    assert sorted(files) == sorted(f"pkg{i % 3}/m{i:02d}.py" for i in range(60))  # no .txt,
    assert all(len(corpus.files[s]) > 0 for s in ("train", "validation", "calibration"))
    for split in ("train", "validation", "calibration"):
        np.testing.assert_array_equal(corpus.split(split), again.split(split))
        # the stream: every file of the split in path order, each after a 0 byte
        expected = b"".join(b"\0" + (folder / f).read_bytes() for f in corpus.files[split])
        assert corpus.split(split).tobytes() == expected
        assert corpus.split(split).dtype == np.uint8 and not corpus.split(split).flags.writeable
    digest = hashlib.sha256()
    for rel in sorted(files):
        data = (folder / rel).read_bytes()
        digest.update(rel.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    assert corpus.sha256 == digest.hexdigest()
    summary = corpus.summary()
    assert summary["python_version"] == platform.python_version()
    assert sum(summary["files"].values()) == 60
    assert summary["bytes"]["train"] == corpus.train.size
    # another seed, another split of the same files
    other = load_byte_corpus(folder, validation_fraction=0.2, calibration_fraction=0.2, seed=1)
    assert other.files["validation"] != corpus.files["validation"]
    assert other.sha256 == corpus.sha256


def test_corpus_errors(folder, tmp_path_factory):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_byte_corpus(folder / "missing")
    with pytest.raises(FileNotFoundError, match=r"no file ending in \('.rs',\)"):
        load_byte_corpus(folder, suffixes=(".rs",))
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        load_byte_corpus(folder, validation_fraction=1.5)
    with pytest.raises(ValueError, match=r"validation_fraction \+ calibration_fraction must be"):
        load_byte_corpus(folder, validation_fraction=0.5, calibration_fraction=0.5)
    with pytest.raises(ValueError, match="split.* got no file of 2"):
        load_byte_corpus(folder, max_files=2, validation_fraction=0.01,
                         calibration_fraction=0.01)
    with pytest.raises(ValueError, match="split must be one of"):
        load_byte_corpus(folder, validation_fraction=0.2, calibration_fraction=0.2).split("test")


def test_python_stdlib_corpus():
    corpus = load_python_stdlib(max_files=120, validation_fraction=0.2, calibration_fraction=0.2)
    assert corpus.name == "python{}.{}-stdlib".format(*platform.python_version_tuple()[:2])
    assert sum(len(f) for f in corpus.files.values()) == 120
    assert not any("site-packages" in f for fs in corpus.files.values() for f in fs)
    assert corpus.train.size > 10_000


def test_windows():
    stream = np.arange(100, dtype=np.uint8)
    w = random_windows(stream, 7, 10, seed=3)
    assert w.shape == (7, 10) and w.dtype == np.int32
    assert np.all(np.diff(w, axis=1) == 1) and w.min() >= 0 and w.max() <= 99
    np.testing.assert_array_equal(w, random_windows(stream, 7, 10, seed=3))
    assert not np.array_equal(w, random_windows(stream, 7, 10, seed=4))
    c = contiguous_windows(stream, 30)
    np.testing.assert_array_equal(c, np.arange(90).reshape(3, 30))
    # a subset is spread over the whole stream: windows 0 and 2 of 3
    np.testing.assert_array_equal(contiguous_windows(stream, 30, max_windows=2),
                                  [np.arange(30), np.arange(60, 90)])
    assert contiguous_windows(stream, 30, max_windows=5).shape == (3, 30)
    with pytest.raises(ValueError, match="stream of 100 tokens is shorter than one window of 101"):
        random_windows(stream, 1, 101, seed=0)
    with pytest.raises(ValueError, match="stream must be a 1-d integer array"):
        contiguous_windows(np.zeros((3, 3)), 2)
    with pytest.raises(ValueError, match="length must be >= 1"):
        contiguous_windows(stream, 0)
