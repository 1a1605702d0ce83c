"""MNIST-10k with no files to fetch: the official MNIST test split ships inside the package.

The two gzip IDX files of the MNIST test split (10,000 digits, 1.6 MB) lie in
``sparsejax/data/mnist_t10k/`` beside their MD5 sums and the data set's attribution
(LeCun, Cortes, Burges; see the README there). :func:`load_mnist10k` checks the MD5 sums
and splits the 10,000 digits 8,000 / 2,000 (:func:`~sparsejax.data.load_mnist_test_split`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import pathlib

from sparsejax.data._dataset import Dataset
from sparsejax.data._idx import load_mnist_test_split

__all__ = ["MNIST10K_MD5", "load_mnist10k", "mnist10k_dir"]

#: MD5 sums of the shipped files (those of the official distribution).
MNIST10K_MD5: dict[str, str] = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def mnist10k_dir() -> pathlib.Path:
    """The folder of the shipped MNIST test split, its MD5 sums checked.

    Raises:
      FileNotFoundError: a file is missing (a broken installation).
      ValueError: a file's MD5 differs from :data:`MNIST10K_MD5` (naming the file).
    """
    folder = pathlib.Path(str(importlib.resources.files("sparsejax.data") / "mnist_t10k"))
    for name, expected in MNIST10K_MD5.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: the MNIST test split shipped with sparsejax is missing; "
                "reinstall sparsejax"
            )
        found = hashlib.md5(path.read_bytes()).hexdigest()
        if found != expected:
            raise ValueError(f"{path}: MD5 {found}, expected {expected}; reinstall sparsejax")
    return folder


def load_mnist10k(train_size: int = 8000, seed: int = 0, normalize: bool = True) -> Dataset:
    """MNIST-10k from the copy of the MNIST test split shipped with sparsejax (no path).

    The same data set as ``load_mnist_test_split(folder)`` on the official files: a seeded
    stratified split of the 10,000 test digits, 8,000 train / 2,000 test by default,
    ``x`` float32 ``[N, 28, 28, 1]`` standardised with the training part's statistics.
    Numbers on MNIST-10k are not comparable with published full-MNIST results.

    Args:
      train_size: training examples, ``1 <= train_size < 10000``.
      seed: split seed (PCG64, no global state).
      normalize: standardise with the training images' mean / std.

    Returns:
      ``Dataset("mnist10k")``.

    Raises:
      ValueError: a shipped file fails its MD5 check, or a bad ``train_size``.

    References:
      LeCun, Bottou, Bengio, Haffner. "Gradient-based learning applied to document
      recognition". Proc. IEEE 1998.

    Example:
      >>> ds = load_mnist10k()
      >>> ds.num_train, ds.num_test, ds.input_shape
      (8000, 2000, (28, 28, 1))
    """
    return load_mnist_test_split(mnist10k_dir(), train_size=train_size, seed=seed,
                                 normalize=normalize)
