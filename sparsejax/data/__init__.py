"""Data sets for pruning experiments, as host-memory numpy arrays.

* Embedded (no files, no network): :func:`load_digits` (scikit-learn's 8×8 digits),
  :func:`load_mnist1d` (MNIST-1D, generated locally by the official ``mnist1d`` package) and
  :func:`load_mnist10k` (the MNIST test split, shipped with sparsejax, MD5-checked).
* File loaders (nothing is ever downloaded): :func:`load_mnist`, :func:`load_fashion_mnist`
  (IDX, gzip or raw), :func:`load_mnist_test_split` ("MNIST-10k", a split of the official
  test split when only it is available) and :func:`load_cifar10` (python pickle batches).
* :func:`load_dataset` picks one by name; :func:`register_dataset` adds a user's own
  (arrays, an ``.npz`` file or a callable), which every study can then use.
* Byte-level text (no download): :func:`load_python_stdlib` (the Python standard library's
  sources) and :func:`load_byte_corpus`, split by file; :func:`random_windows` and
  :func:`contiguous_windows` cut token windows for language models.
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
from sparsejax.data._mnist10k import MNIST10K_MD5, load_mnist10k, mnist10k_dir
from sparsejax.data._registry import (
    DATASETS,
    DatasetInfo,
    dataset_info,
    dataset_names,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
from sparsejax.data._text import (
    CORPUS_SPLITS,
    ByteCorpus,
    contiguous_windows,
    load_byte_corpus,
    load_python_stdlib,
    random_windows,
)

__all__ = [
    "CIFAR10_FILES",
    "CORPUS_SPLITS",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "MNIST1D_PAPER_SEED",
    "MNIST10K_MD5",
    "MNIST_FILES",
    "ByteCorpus",
    "Dataset",
    "DatasetInfo",
    "batches",
    "contiguous_windows",
    "dataset_info",
    "dataset_names",
    "epoch_permutation",
    "load_byte_corpus",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist1d",
    "load_mnist10k",
    "load_mnist_test_split",
    "load_python_stdlib",
    "mnist10k_dir",
    "num_batches",
    "random_windows",
    "read_idx",
    "register_dataset",
    "stratified_split",
    "unregister_dataset",
]
