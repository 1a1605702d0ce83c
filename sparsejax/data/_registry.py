"""Data sets by name: the built-in ones and those a user registers (arrays, ``.npz``, callable).

:func:`load_dataset` is the one entry point of every study; :func:`register_dataset` adds a
user's data set under a name, after which it runs in every study (``--dataset NAME``, with
``--plugin mymodule`` importing the module that registers it).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sparsejax.data._cifar import load_cifar10
from sparsejax.data._dataset import Dataset, check_int
from sparsejax.data._embedded import load_digits, load_mnist1d
from sparsejax.data._idx import load_fashion_mnist, load_mnist, load_mnist_test_split
from sparsejax.data._mnist10k import load_mnist10k

__all__ = ["DATASETS", "dataset_info", "dataset_names", "load_dataset", "register_dataset"]

_SPLITS = ("x_train", "y_train", "x_test", "y_test")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """How a registered data set is loaded.

    Attributes:
      name: the registry name.
      loader: ``loader(**options) -> Dataset`` (a file loader takes the folder first).
      data_dir: ``"none"`` (takes no folder), ``"optional"`` (a folder replaces the
        shipped copy) or ``"required"`` (read from files the user names).
      takes_seed: the loader accepts a data ``seed`` (a split or generation seed).
      description: one line for listings (``sparsejax datasets``).
      builtin: shipped with sparsejax (``False``: registered by a user).
    """

    name: str
    loader: Callable[..., Dataset]
    data_dir: str = "none"
    takes_seed: bool = False
    description: str = ""
    builtin: bool = False


def _mnist10k(data_dir: str | os.PathLike | None = None, **options: Any) -> Dataset:
    if data_dir is None:
        return load_mnist10k(**options)
    return load_mnist_test_split(data_dir, **options)


_REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("digits", load_digits, "none", True,
                    "scikit-learn 8×8 digits, 1,438 / 359 (shipped with scikit-learn)", True),
        DatasetInfo("mnist1d", load_mnist1d, "none", True,
                    "MNIST-1D, 4,000 / 1,000, [N, 40, 1] (generated locally)", True),
        DatasetInfo("mnist10k", _mnist10k, "optional", True,
                    "MNIST test split as 8,000 / 2,000 (shipped with sparsejax)", True),
        DatasetInfo("mnist", load_mnist, "required", False,
                    "full MNIST, 60,000 / 10,000 (IDX files in --data-dir)", True),
        DatasetInfo("fashion_mnist", load_fashion_mnist, "required", False,
                    "Fashion-MNIST, 60,000 / 10,000 (IDX files in --data-dir)", True),
        DatasetInfo("cifar10", load_cifar10, "required", False,
                    "CIFAR-10, 50,000 / 10,000 (python batches in --data-dir)", True),
    )
}

#: The built-in data sets (:func:`dataset_names` also lists the registered ones).
DATASETS: tuple[str, ...] = tuple(_REGISTRY)


def dataset_names() -> tuple[str, ...]:
    """Every data set :func:`load_dataset` knows: built-in first, then registered ones."""
    return tuple(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; ``ValueError`` listing the known names."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _as_dataset(
    name: str, source: Any, num_classes: int | None, class_names: Sequence[str]
) -> Dataset:
    """A :class:`Dataset` from a Dataset, a mapping or a 4-tuple of arrays."""
    if isinstance(source, Dataset):
        return source
    if isinstance(source, Mapping) or hasattr(source, "files"):  # dict or NpzFile
        missing = [k for k in _SPLITS if k not in source]
        if missing:
            raise ValueError(f"data set {name!r}: missing arrays {missing}; expected {_SPLITS}")
        arrays = [np.asarray(source[k]) for k in _SPLITS]
        if not class_names and "class_names" in source:
            class_names = [str(c) for c in np.asarray(source["class_names"]).tolist()]
    elif isinstance(source, (tuple, list)) and len(source) == 4:
        arrays = [np.asarray(a) for a in source]
    else:
        raise TypeError(
            f"data set {name!r}: expected a Dataset, a mapping with {_SPLITS} or a tuple "
            f"(x_train, y_train, x_test, y_test), got {type(source).__name__}"
        )
    x_train, y_train, x_test, y_test = arrays
    for split, y in (("y_train", y_train), ("y_test", y_test)):
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"data set {name!r}: {split} must hold integer labels, got {y.dtype}")
    for split, x in (("train", x_train), ("test", x_test)):
        if x.shape[0] == 0:
            raise ValueError(f"data set {name!r}: the {split} split has 0 examples")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(f"data set {name!r}: x_{split} must be real numbers, got {x.dtype}")
    if num_classes is None:
        num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(
        name=name,
        x_train=x_train.astype(np.float32),
        y_train=y_train.astype(np.int32),
        x_test=x_test.astype(np.float32),
        y_test=y_test.astype(np.int32),
        num_classes=check_int("num_classes", num_classes, 1),
        input_shape=x_train.shape[1:],
        class_names=tuple(class_names),
    )


def register_dataset(
    name: str,
    source: Any,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] = (),
    description: str = "",
    overwrite: bool = False,
) -> None:
    """Register a data set under ``name``; :func:`load_dataset` and every study then load it.

    ``source`` is one of:

    * arrays: a :class:`Dataset`, a mapping with ``x_train``, ``y_train``, ``x_test``,
      ``y_test`` (and optionally ``class_names``), or the tuple ``(x_train, y_train,
      x_test, y_test)``; inputs ``[N, ...]`` (cast to float32), integer labels ``[N]``;
    * a path to an ``.npz`` file with those arrays (read when loaded, without pickle);
    * a callable returning any of the above; it receives the options of
      :func:`load_dataset` (``seed`` only if it has a ``seed`` parameter).

    Args:
      name: the registry name (a valid ``--dataset`` value: letters, digits, ``_``, ``-``).
      source: see above.
      num_classes: default: largest label + 1.
      class_names: default: ``"0"``, ``"1"``, ...
      description: one line shown by ``sparsejax datasets``.
      overwrite: replace an existing registration (never a built-in data set).

    Raises:
      ValueError: a bad or taken name, a missing ``.npz`` file, empty splits.
      TypeError: a source of another kind, non-integer labels.

    Example:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> register_dataset("blobs", (rng.normal(size=(80, 5)), rng.integers(0, 3, 80),
      ...                            rng.normal(size=(20, 5)), rng.integers(0, 3, 20)),
      ...                  num_classes=3, overwrite=True)
      >>> load_dataset("blobs").input_shape
      (5,)
    """
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"register_dataset: name must be letters, digits, '_' or '-', got {name!r}")
    if name in _REGISTRY and (_REGISTRY[name].builtin or not overwrite):
        what = "a built-in data set" if _REGISTRY[name].builtin else "already registered"
        raise ValueError(f"register_dataset: {name!r} is {what}"
                         + ("" if _REGISTRY[name].builtin else "; pass overwrite=True"))
    names = tuple(class_names)
    if isinstance(source, (str, os.PathLike)):
        path = pathlib.Path(source)
        if path.suffix != ".npz" or not path.is_file():
            raise ValueError(f"register_dataset({name!r}): {str(path)!r} is not an .npz file")

        def loader(**options: Any) -> Dataset:
            if options:
                raise ValueError(f"data set {name!r} is read from {path}; options "
                                 f"{sorted(options)} have no effect")
            with np.load(path, allow_pickle=False) as f:
                return _as_dataset(name, f, num_classes, names)

        info = DatasetInfo(name, loader, "none", False, description or f"arrays in {path}")
    elif callable(source):
        takes_seed = "seed" in inspect.signature(source).parameters

        def loader(**options: Any) -> Dataset:
            return _as_dataset(name, source(**options), num_classes, names)

        info = DatasetInfo(name, loader, "none", takes_seed,
                           description or f"from {getattr(source, '__qualname__', source)}")
    else:
        dataset = _as_dataset(name, source, num_classes, names)  # checked now, not at load

        def loader(**options: Any) -> Dataset:
            if options:
                raise ValueError(f"data set {name!r} holds fixed arrays; options "
                                 f"{sorted(options)} have no effect")
            return dataset

        info = DatasetInfo(name, loader, "none", False, description or
                           f"arrays, {dataset.num_train} / {dataset.num_test}, "
                           f"input {dataset.input_shape}")
    _REGISTRY[name] = info


def unregister_dataset(name: str) -> None:
    """Remove a data set registered with :func:`register_dataset` (not a built-in one)."""
    info = dataset_info(name)
    if info.builtin:
        raise ValueError(f"unregister_dataset: {name!r} is a built-in data set")
    del _REGISTRY[name]


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, seed: int | None = None, **options: Any
) -> Dataset:
    """Load a data set by name.

    ============== ======================================= ============ ===================
    name           what                                    ``data_dir`` ``seed`` means
    ============== ======================================= ============ ===================
    digits         scikit-learn 8×8 digits, 1,438 / 359    ignored      split seed (0)
    mnist1d        MNIST-1D, 4,000 / 1,000, ``[N, 40, 1]`` ignored      generation seed (42)
    mnist10k       MNIST test split, 8,000 / 2,000         optional     split seed (0)
    mnist          full MNIST, 60,000 / 10,000             IDX files    — (official split)
    fashion_mnist  Fashion-MNIST, 60,000 / 10,000          IDX files    — (official split)
    cifar10        CIFAR-10, 50,000 / 10,000               pickles      — (official split)
    ============== ======================================= ============ ===================

    ``mnist10k`` reads the copy of the MNIST test split shipped with sparsejax, or the
    t10k files in ``data_dir`` when one is given. Data sets added with
    :func:`register_dataset` load by their name too (:func:`dataset_names`).

    Args:
      name: one of :func:`dataset_names`.
      data_dir: folder with the files of a file-based data set (never downloaded).
      seed: ``None`` for the loader's default (in brackets above); an integer for the data
        sets that are split or generated by sparsejax. It is the *data* seed, distinct from
        the training seed: keep it fixed across training seeds to compare runs on one split.
      **options: passed on to the loader (e.g. ``normalize=False``, ``test_fraction=0.3``,
        ``train_size=5000``, ``cache_dir=...``).

    Raises:
      ValueError: unknown name (listing the known ones), a missing ``data_dir``, a
        ``data_dir`` for a data set that takes none, or a ``seed`` for a data set with a
        fixed split.

    Example:
      >>> load_dataset("mnist10k").num_train
      8000
    """
    info = dataset_info(name)
    if seed is not None:
        if not info.takes_seed:
            raise ValueError(
                f"data set {name!r} has a fixed train/test split; seed={seed} would "
                "have no effect (use the seed for training, e.g. in batches())"
            )
        options["seed"] = check_int("seed", seed)
    if info.data_dir == "required":
        if data_dir is None:
            raise ValueError(f"data set {name!r} is read from files: pass data_dir=<folder>")
        return info.loader(data_dir, **options)
    if info.data_dir == "optional":
        return info.loader(data_dir, **options)
    if data_dir is not None and not info.builtin:
        raise ValueError(f"data set {name!r} takes no data_dir, got {os.fspath(data_dir)!r}")
    return info.loader(**options)
