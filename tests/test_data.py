"""Tests of sparsejax.data: real MNIST test split, embedded sets, file loaders, batching."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import pathlib
import pickle
import random
import socket

import numpy as np
import pytest

from sparsejax import data
from sparsejax.data import _embedded

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
DIGITS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


# ----------------------------------------------------------------------------- helpers


def write_idx(path: pathlib.Path, array: np.ndarray, magic: int | None = None) -> pathlib.Path:
    """Write a uint8 IDX file (gzip when the name ends in .gz)."""
    array = np.asarray(array, np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_mnist_like(directory: pathlib.Path, n_train: int, n_test: int, gz: bool, seed: int):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        write_idx(directory / (name + (".gz" if gz else "")), a)
    return arrays


def write_cifar_like(directory: pathlib.Path, per_batch: int = 3, n_test: int = 4):
    """Five data batches + test batch + meta in the original layout (bytes keys, protocol 2)."""
    rng = np.random.default_rng(7)
    directory.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i in range(1, 6):
        batches[f"data_batch_{i}"] = (
            rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            [int(v) for v in rng.integers(0, 10, per_batch)],
        )
    batches["test_batch"] = (
        rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
        [int(v) for v in rng.integers(0, 10, n_test)],
    )
    for name, (d, labels) in batches.items():
        content = {b"batch_label": name.encode(), b"data": d, b"labels": labels}
        (directory / name).write_bytes(pickle.dumps(content, protocol=2))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    (directory / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2)
    )
    return batches


# ----------------------------------------------------------------------------- real MNIST


def test_read_idx_real_mnist_test_split(mnist_dir):
    images = data.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", 2051)
    labels = data.read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", 2049)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    # The famous first ten test digits.
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(labels).tolist() == MNIST_TEST_COUNTS
    assert images.min() == 0 and images.max() == 255
    assert images[:, 0, :].max() == 0  # the top row of every MNIST digit is blank


def test_mnist10k_split(mnist_dir):
    raw_x = data.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    raw_y = data.read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    ds = data.load_mnist_test_split(mnist_dir, normalize=False)
    assert ds.name == "mnist10k" and ds.num_classes == 10
    assert (ds.num_train, ds.num_test) == (8000, 2000)
    assert ds.x_train.shape == (8000, 28, 28, 1) and ds.input_shape == (28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    # Largest-remainder stratification of 2000 = 20 % of each class, computed by hand.
    assert np.bincount(ds.y_test).tolist() == [196, 227, 206, 202, 196, 178, 192, 206, 195, 202]
    assert (np.bincount(ds.y_train) + np.bincount(ds.y_test)).tolist() == MNIST_TEST_COUNTS
    # Disjoint and complete, and the arrays are exactly those examples.
    train_idx, test_idx = data.stratified_split(raw_y, 2000, seed=0)
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert np.array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(10000))
    np.testing.assert_array_equal(ds.x_train[..., 0] * 255, raw_x[train_idx].astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, raw_y[test_idx])
    # Deterministic in the seed.
    again = data.load_mnist_test_split(mnist_dir, normalize=False)
    np.testing.assert_array_equal(again.y_train, ds.y_train)
    other_idx, _ = data.stratified_split(raw_y, 2000, seed=1)
    assert not np.array_equal(other_idx, train_idx)


def test_mnist10k_normalisation(mnist_dir):
    ds = data.load_mnist_test_split(mnist_dir, train_size=8000, seed=3)
    assert ds.mean.shape == (1,) and ds.std.shape == (1,)
    np.testing.assert_allclose(ds.x_train.mean(dtype=np.float64), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(dtype=np.float64), 1.0, atol=1e-5)
    # MNIST pixel statistics (≈ 0.13 / 0.31, cf. the usual 0.1307 / 0.3081 of full MNIST).
    assert 0.12 < float(ds.mean[0]) < 0.14 and 0.29 < float(ds.std[0]) < 0.32
    # The test split is normalised with the *training* statistics.
    x01 = ds.x_test * ds.std + ds.mean
    assert x01.min() > -1e-5 and x01.max() < 1 + 1e-5


def test_full_mnist_needs_train_files(mnist_dir):
    with pytest.raises(FileNotFoundError) as info:
        data.load_mnist(mnist_dir)
    msg = str(info.value)
    assert "train-images-idx3-ubyte(.gz)" in msg and "train-labels-idx1-ubyte(.gz)" in msg
    assert str(mnist_dir) in msg
    assert "missing t10k" not in msg


def test_dataset_arrays_are_read_only(mnist_dir):
    ds = data.load_mnist_test_split(mnist_dir)
    with pytest.raises(ValueError, match="read-only"):
        ds.x_train[0, 0, 0, 0] = 1.0
    with pytest.raises(AttributeError):
        ds.name = "other"  # frozen dataclass


# ----------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_and_fashion_from_files(tmp_path, gz):
    arrays = write_mnist_like(tmp_path, n_train=12, n_test=5, gz=gz, seed=0)
    ds = data.load_mnist(tmp_path, normalize=False)
    assert (ds.name, ds.num_train, ds.num_test) == ("mnist", 12, 5)
    np.testing.assert_array_equal(
        ds.x_train[..., 0] * 255, arrays["train-images-idx3-ubyte"].astype(np.float32)
    )
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    fashion = data.load_fashion_mnist(tmp_path)
    assert fashion.name == "fashion_mnist"
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    np.testing.assert_allclose(fashion.x_train.mean(dtype=np.float64), 0.0, atol=1e-5)


def test_corrupt_idx_files(tmp_path):
    arrays = write_mnist_like(tmp_path, n_train=4, n_test=3, gz=True, seed=1)
    # Truncated gzip stream.
    path = tmp_path / "train-images-idx3-ubyte.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        data.load_mnist(tmp_path)
    # Not gzip at all.
    path.write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        data.load_mnist(tmp_path)
    # Wrong magic: a label file where an image file is expected.
    write_idx(path, arrays["train-labels-idx1-ubyte"])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: bad IDX magic number 2049, expected 2051"):
        data.load_mnist(tmp_path)
    # Garbage magic (not an unsigned-byte IDX file).
    write_idx(path, arrays["train-images-idx3-ubyte"], magic=0x12345678)
    with pytest.raises(ValueError, match="bad IDX magic number 305419896"):
        data.load_mnist(tmp_path)
    # Data shorter than the header says.
    raw = tmp_path / "raw-images"
    write_idx(raw, arrays["train-images-idx3-ubyte"])
    raw.write_bytes(raw.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"header says shape \(4, 28, 28\).*truncated"):
        data.read_idx(raw)
    # Image / label counts disagree.
    write_idx(path, arrays["train-images-idx3-ubyte"][:3])
    with pytest.raises(ValueError, match="holds 3 images but .* holds 4 labels"):
        data.load_mnist(tmp_path)
    # Label out of range.
    write_idx(path, arrays["train-images-idx3-ubyte"])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"label 10 outside \[0, 10\)"):
        data.load_mnist(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        data.load_mnist_test_split(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- embedded


def test_digits():
    ds = data.load_digits(normalize=False)
    assert ds.name == "digits" and ds.input_shape == (8, 8, 1)
    assert (ds.num_train, ds.num_test) == (1438, 359)  # round(0.2 * 1797) = 359
    assert ds.num_train + ds.num_test == 1797
    assert (np.bincount(ds.y_train) + np.bincount(ds.y_test)).tolist() == DIGITS_COUNTS
    # Values are k / 16 for k in 0..16.
    k = ds.x_train * 16
    np.testing.assert_array_equal(k, np.round(k))
    assert k.min() == 0 and k.max() == 16
    same = data.load_digits(normalize=False)
    np.testing.assert_array_equal(same.x_test, ds.x_test)
    other = data.load_digits(seed=1, normalize=False)
    assert not np.array_equal(other.y_test, ds.y_test)
    assert other.num_test == 359
    assert data.load_digits(test_fraction=0.5).num_test == 898  # round(898.5) = 898 (even)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.0"):
        data.load_digits(test_fraction=1.0)


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory):
    """Generate MNIST-1D once (≈ 4 s) with the network blocked; return (dataset, cache dir)."""
    cache = tmp_path_factory.mktemp("mnist1d")

    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-1D generation tried to open a network connection")

    np_before = np.random.get_state()[1].copy()  # noqa: NPY002
    py_before = random.getstate()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "create_connection", no_network)
        ds = data.load_mnist1d(cache_dir=cache)
    assert np.array_equal(np.random.get_state()[1], np_before)  # noqa: NPY002
    assert random.getstate() == py_before
    return ds, cache


def test_mnist1d(mnist1d_cache):
    ds, _ = mnist1d_cache
    assert ds.name == "mnist1d" and ds.input_shape == (40, 1)
    assert ds.x_train.shape == (4000, 40, 1) and ds.x_test.shape == (1000, 40, 1)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    # mnist1d draws 500 signals per class, then standardises the whole set.
    assert (np.bincount(ds.y_train) + np.bincount(ds.y_test)).tolist() == [500] * 10
    x = np.concatenate([ds.x_train, ds.x_test]).astype(np.float64)
    np.testing.assert_allclose(x.mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(x.std(), 1.0, atol=1e-6)
    # Train label counts of the paper's seed-42 data set (numpy's legacy MT19937 stream).
    assert np.bincount(ds.y_train).tolist() == [398, 396, 411, 394, 394, 402, 401, 404, 402, 398]
    assert ds.mean is None and ds.std is None


def test_mnist1d_cache_is_read_back(mnist1d_cache, monkeypatch):
    ds, cache = mnist1d_cache
    assert (cache / "mnist1d_seed42_v1.npz").is_file()

    def fail(seed):
        raise AssertionError("regenerated although the cache exists")

    monkeypatch.setattr(_embedded, "_generate_mnist1d", fail)
    again = data.load_mnist1d(cache_dir=cache)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    (cache / "mnist1d_seed7_v1.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt MNIST-1D cache"):
        data.load_mnist1d(seed=7, cache_dir=cache)


# ----------------------------------------------------------------------------- CIFAR-10


def test_cifar10_layout(tmp_path):
    batches = write_cifar_like(tmp_path / "cifar-10-batches-py")
    ds = data.load_cifar10(tmp_path, normalize=False)  # the parent folder also works
    assert ds.name == "cifar10" and ds.input_shape == (32, 32, 3)
    assert (ds.num_train, ds.num_test) == (15, 4)
    assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"
    train_data = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][1]]
    assert ds.y_train.tolist() == train_labels
    # Exact layout: row = 1024 red, 1024 green, 1024 blue values, each plane row-major.
    pixels = ds.x_train * 255
    for c in range(3):
        for h in (0, 1, 17, 31):
            for w in (0, 5, 31):
                np.testing.assert_array_equal(pixels[:, h, w, c], train_data[:, 1024 * c + 32 * h + w])
    expected = np.empty((15, 32, 32, 3), np.float32)
    for j in range(3072):
        c, rem = divmod(j, 1024)
        h, w = divmod(rem, 32)
        expected[:, h, w, c] = train_data[:, j]
    np.testing.assert_array_equal(pixels, expected)
    normalized = data.load_cifar10(tmp_path / "cifar-10-batches-py")
    assert normalized.mean.shape == (3,)
    np.testing.assert_allclose(normalized.mean, train_data.reshape(15, 3, 1024).mean(axis=(0, 2)) / 255, rtol=1e-5)
    np.testing.assert_allclose(normalized.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)


def test_cifar10_accepts_python3_pickles(tmp_path):
    write_cifar_like(tmp_path)
    rng = np.random.default_rng(1)
    test = {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [3, 9]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(test, protocol=5))
    ds = data.load_cifar10(tmp_path, normalize=False)
    assert ds.y_test.tolist() == [3, 9]
    np.testing.assert_array_equal(ds.x_test[1, 2, 3, 1] * 255, test["data"][1, 1024 + 64 + 3])


def test_cifar10_errors(tmp_path):
    write_cifar_like(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as info:
        data.load_cifar10(tmp_path)
    assert "missing data_batch_3 in directory" in str(info.value)
    assert str(tmp_path) in str(info.value) and "test_batch, batches.meta" in str(info.value)

    write_cifar_like(tmp_path)
    blob = (tmp_path / "data_batch_2").read_bytes()
    (tmp_path / "data_batch_2").write_bytes(blob[:500])
    with pytest.raises(ValueError, match=r"data_batch_2: not a valid CIFAR-10 pickle"):
        data.load_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "data_batch_2").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load global (__builtin__|builtins)\.print"):
        data.load_cifar10(tmp_path)

    bad = {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_2: 'data' must be uint8\[N, 3072\], found uint8\[2, 1024\]"):
        data.load_cifar10(tmp_path)

    bad = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match=r"labels in \[0, 10\], outside \[0, 10\)"):
        data.load_cifar10(tmp_path)


# ----------------------------------------------------------------------------- batching


def test_epoch_permutation_is_a_pure_function_of_seed_and_epoch():
    p = data.epoch_permutation(100, seed=5, epoch=2)
    assert p.dtype == np.int64 and np.array_equal(np.sort(p), np.arange(100))
    np.random.seed(123)  # noqa: NPY002 - the global generator must play no part
    np.testing.assert_array_equal(data.epoch_permutation(100, seed=5, epoch=2), p)
    assert not np.array_equal(data.epoch_permutation(100, seed=5, epoch=3), p)
    assert not np.array_equal(data.epoch_permutation(100, seed=6, epoch=2), p)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        data.epoch_permutation(10, seed=-1, epoch=0)
    with pytest.raises(TypeError, match="epoch must be an integer, got True"):
        data.epoch_permutation(10, seed=0, epoch=True)


def test_num_batches():
    assert data.num_batches(103, 10) == 10
    assert data.num_batches(103, 10, drop_last=False) == 11
    assert data.num_batches(100, 10, drop_last=False) == 10
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        data.num_batches(10, 0)


def test_batches_cover_each_example_once():
    x = np.arange(103, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    y = np.arange(103, dtype=np.int32)
    full = list(data.batches(x, y, 10, seed=0, epoch=4, drop_last=False))
    assert [len(b[1]) for b in full] == [10] * 10 + [3]
    seen = np.concatenate([b[1] for b in full])
    np.testing.assert_array_equal(np.sort(seen), np.arange(103))
    np.testing.assert_array_equal(seen, data.epoch_permutation(103, 0, 4))
    for xb, yb in full:
        np.testing.assert_array_equal(xb[:, 0], yb.astype(np.float32))  # x and y stay paired
    dropped = list(data.batches(x, y, 10, seed=0, epoch=4))
    kept = np.concatenate([b[1] for b in dropped])
    assert len(dropped) == 10 and len(np.unique(kept)) == 100
    np.testing.assert_array_equal(kept, seen[:100])
    ordered = np.concatenate([b[1] for b in data.batches(x, y, 10, seed=None, drop_last=False)])
    np.testing.assert_array_equal(ordered, y)


def test_batches_resume_equals_tail():
    x = np.random.default_rng(0).normal(size=(57, 3)).astype(np.float32)
    y = np.arange(57, dtype=np.int32)
    full = list(data.batches(x, y, 8, seed=11, epoch=1))
    assert len(full) == 7
    for start in (0, 3, 6, 7):
        tail = list(data.batches(x, y, 8, seed=11, epoch=1, start_batch=start))
        assert len(tail) == 7 - start
        for (xa, ya), (xb, yb) in zip(tail, full[start:], strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)


def test_batches_errors_are_eager():
    x, y = np.zeros((5, 2)), np.zeros(5, np.int32)
    with pytest.raises(ValueError, match="start_batch=3 exceeds the 2 batches"):
        data.batches(x, y, 2, seed=0, start_batch=3)
    with pytest.raises(ValueError, match="batch_size=6 exceeds the 5 examples"):
        data.batches(x, y, 6, seed=0)
    with pytest.raises(ValueError, match="same leading"):
        data.batches(x, y[:4], 2, seed=0)
    assert len(list(data.batches(x, y, 6, seed=0, drop_last=False))) == 1


# ----------------------------------------------------------------------------- registry, Dataset


def test_load_dataset(mnist_dir):
    with pytest.raises(ValueError, match="unknown data set 'mnist2'; known data sets: digits, mnist1d, mnist10k, mnist, fashion_mnist, cifar10"):
        data.load_dataset("mnist2")
    with pytest.raises(ValueError, match="'mnist' is read from files: pass data_dir"):
        data.load_dataset("mnist")
    with pytest.raises(ValueError, match="'cifar10' has a fixed train/test split"):
        data.load_dataset("cifar10", "/nonexistent", seed=1)
    ds = data.load_dataset("mnist10k", mnist_dir, seed=2, train_size=9000)
    ref = data.load_mnist_test_split(mnist_dir, train_size=9000, seed=2)
    assert ds.num_test == 1000
    np.testing.assert_array_equal(ds.x_train, ref.x_train)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_dataset("fashion_mnist", mnist_dir)
    assert data.DATASETS == ("digits", "mnist1d", "mnist10k", "mnist", "fashion_mnist", "cifar10")


# ----------------------------------------------------------------------------- shipped MNIST


def test_mnist10k_ships_with_the_package_and_needs_no_path():
    folder = data.mnist10k_dir()
    assert folder.parent == pathlib.Path(data.__file__).parent
    # the official files, byte for byte
    for name, md5 in data.MNIST10K_MD5.items():
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() == md5
    sums = dict(line.split()[::-1] for line in (folder / "MD5SUMS").read_text().splitlines())
    assert sums == data.MNIST10K_MD5
    assert "LeCun" in (folder / "README.md").read_text()  # the data set's attribution
    ds = data.load_dataset("mnist10k")  # no data_dir
    ref = data.load_mnist_test_split(folder)
    assert (ds.num_train, ds.num_test, ds.input_shape) == (8000, 2000, (28, 28, 1))
    np.testing.assert_array_equal(ds.x_train, ref.x_train)
    np.testing.assert_array_equal(data.load_mnist10k(seed=3, train_size=5000).y_test,
                                  data.load_mnist_test_split(folder, 5000, seed=3).y_test)
    assert data.dataset_info("mnist10k").data_dir == "optional"


def test_mnist10k_md5_mismatch_is_named(tmp_path, monkeypatch):
    fake = tmp_path / "mnist_t10k"
    fake.mkdir()
    for name in data.MNIST10K_MD5:
        (fake / name).write_bytes(b"not mnist")
    monkeypatch.setattr(importlib.resources, "files", lambda pkg: tmp_path)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: MD5 [0-9a-f]{32}, expected 9fb6"):
        data.load_mnist10k()


def test_nothing_reads_outside_the_repository():
    """A clone with nothing beside it runs everything: no code reads the folder of data
    that once lay beside the repository."""
    root = pathlib.Path(__file__).resolve().parents[1]
    beside = ("../" + "shared", "/" + "shared/data")
    offenders = [str(p.relative_to(root)) for folder in ("sparsejax", "tests", "experiments",
                                                        "benchmarks", "notebooks", ".ci")
                 for p in (root / folder).rglob("*") if p.is_file() and p.suffix in
                 (".py", "", ".md", ".toml") and any(b in p.read_text(errors="ignore")
                                                      for b in beside)]
    assert offenders == []


# ----------------------------------------------------------------------------- user data sets


def _arrays(n_train=30, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n_train, 6)), rng.integers(0, 3, n_train),
            rng.normal(size=(n_test, 6)), rng.integers(0, 3, n_test))


def test_register_dataset_from_arrays_npz_and_callable(tmp_path):
    x_tr, y_tr, x_te, y_te = _arrays()
    try:
        data.register_dataset("toy_arrays", (x_tr, y_tr, x_te, y_te), class_names="abc")
        ds = data.load_dataset("toy_arrays")
        assert (ds.num_train, ds.num_test, ds.input_shape, ds.num_classes) == (30, 10, (6,), 3)
        assert ds.x_train.dtype == np.float32 and ds.class_names == ("a", "b", "c")
        np.testing.assert_array_equal(ds.x_train, x_tr.astype(np.float32))
        np.savez(tmp_path / "toy.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
        data.register_dataset("toy_npz", tmp_path / "toy.npz")
        np.testing.assert_array_equal(data.load_dataset("toy_npz").y_test, y_te)
        calls = []

        def make(seed=0, n=12):
            calls.append((seed, n))
            return dict(zip(("x_train", "y_train", "x_test", "y_test"), _arrays(n, 4, seed)))

        data.register_dataset("toy_fn", make, num_classes=5)
        ds = data.load_dataset("toy_fn", seed=7, n=20)
        assert calls == [(7, 20)] and ds.num_train == 20 and ds.num_classes == 5
        assert data.dataset_names()[-3:] == ("toy_arrays", "toy_npz", "toy_fn")
        assert not data.dataset_info("toy_fn").builtin and data.dataset_info("toy_fn").takes_seed
        with pytest.raises(ValueError, match="'toy_arrays' is already registered; pass overwrite"):
            data.register_dataset("toy_arrays", (x_tr, y_tr, x_te, y_te))
        with pytest.raises(ValueError, match="'toy_npz' has a fixed train/test split; seed=1"):
            data.load_dataset("toy_npz", seed=1)
    finally:
        for name in ("toy_arrays", "toy_npz", "toy_fn"):
            if name in data.dataset_names():
                data.unregister_dataset(name)
    assert "toy_fn" not in data.dataset_names()


def test_register_dataset_errors(tmp_path):
    x_tr, y_tr, x_te, y_te = _arrays()
    with pytest.raises(ValueError, match="'digits' is a built-in data set"):
        data.register_dataset("digits", (x_tr, y_tr, x_te, y_te), overwrite=True)
    with pytest.raises(ValueError, match="name must be letters"):
        data.register_dataset("my data", (x_tr, y_tr, x_te, y_te))
    with pytest.raises(ValueError, match="the train split has 0 examples"):
        data.register_dataset("empty", (x_tr[:0], y_tr[:0], x_te, y_te))
    with pytest.raises(TypeError, match="y_train must hold integer labels, got float64"):
        data.register_dataset("floaty", (x_tr, y_tr.astype(float), x_te, y_te))
    with pytest.raises(ValueError, match="missing arrays"):
        data.register_dataset("partial", {"x_train": x_tr})
    with pytest.raises(ValueError, match="is not an .npz file"):
        data.register_dataset("nofile", tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="built-in data set"):
        data.unregister_dataset("mnist10k")
    assert "empty" not in data.dataset_names()


def test_dataset_validation():
    x = np.zeros((4, 2, 2, 1), np.float32)
    y = np.array([0, 1, 2, 1], np.int32)
    ok = data.Dataset("toy", x, y, x, y, num_classes=3, input_shape=(2, 2, 1))
    assert ok.class_names == ("0", "1", "2")
    assert "train=4" in repr(ok)
    with pytest.raises(TypeError, match="x_train must be float32, got float64"):
        data.Dataset("toy", x.astype(np.float64), y, x, y, 3, (2, 2, 1))
    with pytest.raises(ValueError, match=r"y_train has labels in \[0, 2\], outside \[0, 2\)"):
        data.Dataset("toy", x, y, x, y, 2, (2, 2, 1))
    with pytest.raises(ValueError, match="same N"):
        data.Dataset("toy", x, y[:3], x, y, 3, (2, 2, 1))
    with pytest.raises(ValueError, match=r"examples have shape \(2, 2, 1\), input_shape is \(4,\)"):
        data.Dataset("toy", x, y, x, y, 3, (4,))
    assert x.flags.writeable  # the caller's arrays are not frozen behind its back
