"""Data sets for pruning experiments, as host-memory numpy arrays.

* Embedded (no files, no network): :func:`load_digits` (scikit-learn's 8×8 digits) and
  :func:`load_mnist1d` (MNIST-1D, generated locally by the official ``mnist1d`` package).
* File loaders (nothing is ever downloaded): :func:`load_mnist`, :func:`load_fashion_mnist`
  (IDX, gzip or raw), :func:`load_mnist_test_split` ("MNIST-10k", a split of the official
  test split when only it is available) and :func:`load_cifar10` (python pickle batches).
* :func:`load_dataset` picks one by name.
* Deterministic, resumable batching: :func:`epoch_permutation`, :func:`batches`,
  :func:`num_batches`.

Every loader returns a frozen :class:`Dataset` of read-only arrays: images NHWC ``float32``
scaled to ``[0, 1]`` and (by default) standardised per channel with the training split's
statistics, labels ``int32``. Missing files raise ``FileNotFoundError`` naming the expected
files and the folder; corrupt files raise ``ValueError`` naming the file and the problem.
"""

from sparsejax.data._batching import batches, epoch_permutation, num_batches
from sparsejax.data._cifar import CIFAR10_FILES, load_cifar10
from sparsejax.data._dataset import Dataset, stratified_split
from sparsejax.data._embedded import MNIST1D_PAPER_SEED, load_digits, load_mnist1d
from sparsejax.data._idx import (
    FASHION_MNIST_CLASSES,
    MNIST_FILES,
    load_fashion_mnist,
    load_mnist,
    load_mnist_test_split,
    read_idx,
)
from sparsejax.data._registry import DATASETS, load_dataset

__all__ = [
    "CIFAR10_FILES",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "MNIST1D_PAPER_SEED",
    "MNIST_FILES",
    "Dataset",
    "batches",
    "epoch_permutation",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist1d",
    "load_mnist_test_split",
    "num_batches",
    "read_idx",
    "stratified_split",
]
