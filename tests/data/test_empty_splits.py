"""Empty data splits raise (issue #25, item 7): no Dataset with 0 examples, no NaN statistics."""

import pickle

import numpy as np
import pytest

from sparsejax import data
from sparsejax.data._dataset import image_dataset, standardize


def arrays(n_train, n_test):
    rng = np.random.default_rng(0)
    return (
        rng.random((n_train, 2, 2, 1), dtype=np.float32),
        rng.integers(0, 3, n_train).astype(np.int32),
        rng.random((n_test, 2, 2, 1), dtype=np.float32),
        rng.integers(0, 3, n_test).astype(np.int32),
    )


@pytest.mark.parametrize("split, sizes", [("train", (0, 4)), ("test", (4, 0))])
def test_a_dataset_with_an_empty_split_raises(split, sizes):
    with pytest.raises(ValueError, match=rf"Dataset 'toy': the {split} split has 0 examples"):
        data.Dataset("toy", *arrays(*sizes), num_classes=3, input_shape=(2, 2, 1))
    assert data.Dataset("toy", *arrays(1, 1), num_classes=3, input_shape=(2, 2, 1)).num_train == 1


def test_an_empty_training_split_is_not_standardised_into_nan():
    x_train, y_train, x_test, y_test = arrays(0, 4)
    with pytest.raises(ValueError, match=r"empty training split .* would be NaN"):
        standardize(x_train, x_test)  # before: x_test came back all NaN
    with pytest.raises(ValueError, match=r"empty training split"):
        image_dataset("toy", x_train, y_train, x_test, y_test, max_value=1.0, num_classes=3,
                      class_names=("a", "b", "c"), normalize=True)
    with pytest.raises(ValueError, match=r"the train split has 0 examples"):
        image_dataset("toy", x_train, y_train, x_test, y_test, max_value=1.0, num_classes=3,
                      class_names=("a", "b", "c"), normalize=False)


def write_idx(path, array):
    array = np.asarray(array, np.uint8)
    header = (0x0800 | array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def test_idx_files_with_no_examples_are_named(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((0, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((0,)))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((3,)))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte and .*train-labels-idx1-ubyte "
                                         r"hold 0 examples: the train split would be empty"):
        data.load_mnist(tmp_path)


def test_an_empty_cifar_batch_is_named(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(1, 6):
        n = 0 if i == 3 else 2
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=4))
    test = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 2]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    names = [f"c{i}".encode() for i in range(10)]
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_3: 'data' holds 0 images"):
        data.load_cifar10(tmp_path)
