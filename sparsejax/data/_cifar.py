"""CIFAR-10 from the "python version" pickle batches (Krizhevsky 2009).

The archive ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` with
``data_batch_1`` … ``data_batch_5`` (10,000 images each), ``test_batch`` (10,000) and
``batches.meta``. Each batch is a pickled dict with ``data``: ``uint8[N, 3072]`` — per row the
1,024 red, then 1,024 green, then 1,024 blue values of a 32×32 image, each plane row-major —
and ``labels``: a list of N ints in ``[0, 10)``.

Unpickling is restricted to the handful of globals those files need (numpy array
reconstruction), so a malicious file cannot run code. Nothing is ever downloaded.
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
from typing import Any

import numpy as np

from sparsejax.data._dataset import Dataset, image_dataset

__all__ = ["CIFAR10_FILES", "load_cifar10"]

CIFAR10_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
    "batches.meta",
)

_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR-10 batch only holds numpy "
                "arrays, lists, strings and numbers"
            )
        return super().find_class(module, name)


def _unpickle(path: pathlib.Path) -> dict[str, Any]:
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as err:  # any failure of the pickle stream is a corrupt file
        raise ValueError(f"{path}: not a valid CIFAR-10 pickle ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    # Python 2 pickles give bytes keys (``encoding="bytes"``), Python 3 pickles str keys.
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _read_batch(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise ValueError(f"{path}: no {key!r} entry (keys: {sorted(batch)})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype}{list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' must be uint8[N, 3072], found {desc}")
    if data.shape[0] == 0:
        raise ValueError(f"{path}: 'data' holds 0 images (an empty batch)")
    labels = np.asarray(batch["labels"])
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: 'labels' must hold {data.shape[0]} integers, found {labels.dtype}{list(labels.shape)}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise ValueError(f"{path}: labels in [{labels.min()}, {labels.max()}], outside [0, 10)")
    # Channel-first rows (3 planes of 32×32, row-major) → NHWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels


def load_cifar10(directory: str | os.PathLike, normalize: bool = True) -> Dataset:
    """CIFAR-10: 50,000 train / 10,000 test colour images, 32×32×3, 10 classes.

    Args:
      directory: the unpacked ``cifar-10-batches-py`` folder, or a folder containing it,
        holding :data:`CIFAR10_FILES`.
      normalize: standardise each RGB channel with the training split's mean / std
        (CIFAR-10: ≈ (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616)) after scaling to
        ``[0, 1]``; ``False`` keeps ``[0, 1]``.

    Returns:
      ``Dataset("cifar10")``: ``x`` float32 ``[N, 32, 32, 3]`` (NHWC) with
      ``x[n, h, w, c] = data[n, 1024 c + 32 h + w] / 255`` before normalisation; the training
      examples in batch order 1..5; class names from ``batches.meta``.

    Raises:
      FileNotFoundError: listing the missing files and the directory.
      ValueError: naming a corrupt, truncated or malformed file.

    References:
      Krizhevsky. "Learning Multiple Layers of Features from Tiny Images". Tech. report, 2009.
    """
    directory = pathlib.Path(directory)
    nested = directory / "cifar-10-batches-py"
    if not (directory / "test_batch").is_file() and nested.is_dir():
        directory = nested
    missing = [f for f in CIFAR10_FILES if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"load_cifar10: missing {', '.join(missing)} in directory {str(directory)!r} "
            f"(expected files: {', '.join(CIFAR10_FILES)}). Nothing is downloaded: unpack "
            "cifar-10-python.tar.gz there."
        )
    meta_path = directory / "batches.meta"
    meta = _unpickle(meta_path)
    names = meta.get("label_names")
    if not isinstance(names, list | tuple) or len(names) != 10:
        raise ValueError(f"{meta_path}: 'label_names' must be a list of 10 class names, got {names!r}")
    class_names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    train = [_read_batch(directory / f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = _read_batch(directory / "test_batch")
    return image_dataset(
        "cifar10",
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        x_test,
        y_test,
        max_value=255.0,
        num_classes=10,
        class_names=class_names,
        normalize=normalize,
    )
