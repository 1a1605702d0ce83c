"""IDX files (MNIST, Fashion-MNIST): parsing with header validation, and the loaders.

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/) is a big-endian header
``0x00 0x00 <type> <ndim>`` followed by ``ndim`` uint32 dimension sizes and the raw data.
MNIST and Fashion-MNIST use type ``0x08`` (unsigned byte): magic number **2051**
(``0x00000803``) for ``[N, rows, cols]`` image files and **2049** (``0x00000801``) for ``[N]``
label files. Files may be gzip-compressed (``*.gz``, as distributed) or raw.

Nothing is ever downloaded: the loaders read the files from a directory the caller names.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import zlib

import numpy as np

from sparsejax.data._dataset import Dataset, check_int, image_dataset, stratified_split

__all__ = [
    "FASHION_MNIST_CLASSES",
    "MNIST_FILES",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_test_split",
    "read_idx",
]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read one unsigned-byte IDX file (gzip-compressed when the name ends in ``.gz``).

    Args:
      path: the file.
      expected_magic: ``2051`` (images), ``2049`` (labels) or ``None`` (any ubyte IDX file).

    Returns:
      A read-only ``uint8`` array (a view of the file's bytes) whose shape is the header's
      dimensions.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: naming the file, for a bad gzip stream, a truncated header, a wrong magic
        number or a data length that does not match the header's dimensions.
    """
    path = pathlib.Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip file ({err})") from err
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an IDX header (4 bytes)")
    magic = int.from_bytes(raw[:4], "big")
    ndim = raw[3]
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or ndim == 0:
        raise ValueError(
            f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected an unsigned-byte "
            f"IDX file (magic {IMAGES_MAGIC} for images, {LABELS_MAGIC} for labels)"
        )
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"{path}: bad IDX magic number {magic}, expected {expected_magic}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(raw) - header
    if found != expected:
        raise ValueError(
            f"{path}: header says shape {dims} ({expected} bytes of data) but the file has "
            f"{found} bytes after the header ({'truncated' if found < expected else 'trailing data'})"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _locate(directory: str | os.PathLike, keys: tuple[str, ...], loader: str) -> dict[str, pathlib.Path]:
    """Find ``<name>.gz`` or ``<name>`` for each key of :data:`MNIST_FILES`, or raise."""
    directory = pathlib.Path(directory)
    found, missing = {}, []
    for key in keys:
        stem = MNIST_FILES[key]
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(f"{stem}(.gz)")
    if missing:
        expected = ", ".join(f"{MNIST_FILES[k]}(.gz)" for k in keys)
        raise FileNotFoundError(
            f"{loader}: missing {', '.join(missing)} in directory {str(directory)!r} "
            f"(expected files: {expected}). Nothing is downloaded: place the IDX files there."
        )
    return found


def _read_split(files: dict[str, pathlib.Path], split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(files[f"{split}_images"], IMAGES_MAGIC)
    labels = read_idx(files[f"{split}_labels"], LABELS_MAGIC)
    if images.ndim != 3:
        raise ValueError(f"{files[f'{split}_images']}: expected [N, rows, cols], got {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{files[f'{split}_labels']}: expected [N] labels, got {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{files[f'{split}_images']} holds {images.shape[0]} images but "
            f"{files[f'{split}_labels']} holds {labels.shape[0]} labels"
        )
    if images.shape[0] == 0:
        raise ValueError(
            f"{files[f'{split}_images']} and {files[f'{split}_labels']} hold 0 examples: the "
            f"{split} split would be empty"
        )
    if labels.size and labels.max() >= num_classes:
        raise ValueError(
            f"{files[f'{split}_labels']}: label {int(labels.max())} outside [0, {num_classes})"
        )
    return images[..., None], labels


def _load_full(directory: str | os.PathLike, name: str, class_names: tuple[str, ...], normalize: bool) -> Dataset:
    files = _locate(directory, tuple(MNIST_FILES), f"load_{name}")
    x_train, y_train = _read_split(files, "train", len(class_names))
    x_test, y_test = _read_split(files, "test", len(class_names))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{name}: train images are {x_train.shape[1:3]} but test images {x_test.shape[1:3]}"
        )
    return image_dataset(
        name, x_train, y_train, x_test, y_test,
        max_value=255.0, num_classes=len(class_names), class_names=class_names, normalize=normalize,
    )


def load_mnist(directory: str | os.PathLike, normalize: bool = True) -> Dataset:
    """Full MNIST (LeCun et al. 1998): 60,000 train / 10,000 test images, 28×28×1.

    Args:
      directory: folder holding the four standard IDX files, gzip-compressed or raw:
        ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
        ``t10k-labels-idx1-ubyte`` (each optionally with ``.gz``).
      normalize: standardise with the training split's pixel mean / std (MNIST:
        ≈ 0.1307 / 0.3081) after scaling to ``[0, 1]``; ``False`` keeps ``[0, 1]``.

    Returns:
      ``Dataset("mnist")``: ``x`` float32 ``[N, 28, 28, 1]``, ``y`` int32 ``[N]``.

    Raises:
      FileNotFoundError: listing the missing files and the directory (with only the test
        split at hand, use :func:`load_mnist_test_split`).
      ValueError: naming a corrupt or truncated file.

    References:
      LeCun, Bottou, Bengio, Haffner. "Gradient-based learning applied to document
      recognition". Proc. IEEE 1998.
    """
    return _load_full(directory, "mnist", tuple(str(i) for i in range(10)), normalize)


def load_fashion_mnist(directory: str | os.PathLike, normalize: bool = True) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 / 10,000 grey 28×28×1 images of 10 garments.

    Same file names and format as MNIST (see :func:`load_mnist`); class names are
    :data:`FASHION_MNIST_CLASSES`.

    Args:
      directory: folder holding the four IDX files (``train-images-idx3-ubyte(.gz)``, ...).
      normalize: standardise with the training split's mean / std after scaling to ``[0, 1]``.

    Returns:
      ``Dataset("fashion_mnist")``: ``x`` float32 ``[N, 28, 28, 1]``, ``y`` int32 ``[N]``.

    References:
      Xiao, Rasul, Vollgraf. "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
      Learning Algorithms". arXiv:1708.07747, 2017.
    """
    return _load_full(directory, "fashion_mnist", FASHION_MNIST_CLASSES, normalize)


def load_mnist_test_split(
    directory: str | os.PathLike, train_size: int = 8000, seed: int = 0, normalize: bool = True
) -> Dataset:
    """"MNIST-10k": a seeded stratified train / test split of the official MNIST *test* split.

    Only ``t10k-images-idx3-ubyte(.gz)`` and ``t10k-labels-idx1-ubyte(.gz)`` are read (10,000
    digits, 28×28). The default gives 8,000 train / 2,000 test examples with class
    proportions preserved (:func:`~sparsejax.data.stratified_split`).

    **Numbers obtained on MNIST-10k are not comparable with published full-MNIST results**
    (60,000 training images): models see 7.5× less data and the test set is a different,
    smaller sample. Report it as "MNIST-10k".

    Args:
      directory: folder holding the t10k IDX files.
      train_size: number of training examples, ``1 <= train_size < 10000``.
      seed: split seed (PCG64, no global state).
      normalize: standardise with the 8,000 training images' mean / std.

    Returns:
      ``Dataset("mnist10k")`` with ``x`` float32 ``[N, 28, 28, 1]``; examples keep their
      original relative order inside each split.
    """
    files = _locate(directory, ("test_images", "test_labels"), "load_mnist_test_split")
    images, labels = _read_split(files, "test", 10)
    n = labels.shape[0]
    train_size = check_int("train_size", train_size, minimum=1)
    if train_size >= n:
        raise ValueError(f"train_size={train_size} must be smaller than the {n} examples")
    train_idx, test_idx = stratified_split(labels, n - train_size, seed)
    return image_dataset(
        "mnist10k", images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
        max_value=255.0, num_classes=10, class_names=tuple(str(i) for i in range(10)),
        normalize=normalize,
    )
