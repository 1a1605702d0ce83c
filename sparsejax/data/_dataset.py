"""The :class:`Dataset` container, pixel normalisation and the seeded stratified split.

Pure numpy: nothing here imports jax, so data loading never touches an accelerator.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence

import numpy as np

__all__ = ["Dataset", "stratified_split"]

# Stream identifier of the split generator (``SeedSequence(seed, spawn_key=(1,))``), so that the
# split of a data set and the batch order of epoch 0 (``SeedSequence((seed, 0))``) are
# independent streams even when they share the same integer seed.
_SPLIT_STREAM = 1


def check_int(name: str, value: object, minimum: int = 0) -> int:
    """Return ``value`` as an ``int`` or raise a ``TypeError``/``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _readonly(a: np.ndarray) -> np.ndarray:
    # A read-only *view*: the caller's own array object keeps its flags (no side effect).
    view = np.ascontiguousarray(a).view()
    view.flags.writeable = False
    return view


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """An in-memory classification data set with a fixed train / test split.

    Arrays are numpy (host memory) and read-only (``flags.writeable == False``), so a
    ``Dataset`` is immutable all the way down and can be shared between runs.

    Attributes:
      name: registry name (``"digits"``, ``"mnist1d"``, ``"mnist10k"``, ``"mnist"``,
        ``"fashion_mnist"``, ``"cifar10"``).
      x_train: ``float32[N_train, *input_shape]`` with ``N_train >= 1``. Images are NHWC,
        scaled to ``[0, 1]`` and then, when the loader's ``normalize=True`` (the default),
        standardised per channel with the *training split's* mean and standard deviation
        (``mean``, ``std``).
      y_train: ``int32[N_train]`` class indices in ``[0, num_classes)``.
      x_test: ``float32[N_test, *input_shape]``, ``N_test >= 1``, normalised with the
        training statistics.
      y_test: ``int32[N_test]``.
      num_classes: number of classes.
      input_shape: shape of one example, e.g. ``(28, 28, 1)`` or ``(40, 1)``.
      class_names: human-readable class names, ``len == num_classes``.
      mean: ``float32[C]`` per-channel mean subtracted from the ``[0, 1]`` pixels, or ``None``
        when the loader did not standardise.
      std: ``float32[C]`` per-channel standard deviation divided out, or ``None``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...] = ()
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "input_shape", tuple(int(d) for d in self.input_shape))
        for split in ("train", "test"):
            x = np.asarray(getattr(self, f"x_{split}"))
            y = np.asarray(getattr(self, f"y_{split}"))
            if x.dtype != np.float32:
                raise TypeError(f"Dataset {self.name!r}: x_{split} must be float32, got {x.dtype}")
            if y.dtype != np.int32:
                raise TypeError(f"Dataset {self.name!r}: y_{split} must be int32, got {y.dtype}")
            if y.ndim != 1 or x.shape[:1] != y.shape:
                raise ValueError(
                    f"Dataset {self.name!r}: x_{split} has shape {x.shape} and y_{split} "
                    f"{y.shape}; expected x[N, ...] and y[N] with the same N"
                )
            if x.shape[0] == 0:
                raise ValueError(
                    f"Dataset {self.name!r}: the {split} split has 0 examples (x_{split} has "
                    f"shape {x.shape}); both splits need at least one example"
                )
            if x.shape[1:] != self.input_shape:
                raise ValueError(
                    f"Dataset {self.name!r}: x_{split} examples have shape {x.shape[1:]}, "
                    f"input_shape is {self.input_shape}"
                )
            if y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"Dataset {self.name!r}: y_{split} has labels in [{y.min()}, {y.max()}], "
                    f"outside [0, {self.num_classes})"
                )
            set_(self, f"x_{split}", _readonly(x))
            set_(self, f"y_{split}", _readonly(y))
        names = tuple(str(c) for c in self.class_names) or tuple(
            str(i) for i in range(self.num_classes)
        )
        if len(names) != self.num_classes:
            raise ValueError(
                f"Dataset {self.name!r}: {len(names)} class names for {self.num_classes} classes"
            )
        set_(self, "class_names", names)
        for stat in ("mean", "std"):
            v = getattr(self, stat)
            if v is not None:
                set_(self, stat, _readonly(np.asarray(v, np.float32)))

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"normalized={self.mean is not None})"
        )


def stratified_split(
    labels: np.ndarray, num_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train / test split of the indices ``0 .. N-1``.

    Each class ``c`` with ``n_c`` examples sends ``floor(num_test * n_c / N)`` of them to the
    test split, and the ``num_test - sum(floors)`` remaining test slots go to the classes with
    the largest remainders (ties: lower class first), so the test split has *exactly*
    ``num_test`` examples and class proportions within one example of the full set's. Which
    examples of a class go to test is drawn with numpy's PCG64 generator seeded with
    ``SeedSequence(seed, spawn_key=(1,))``; no global random state is read or written.

    Args:
      labels: ``int[N]`` class labels.
      num_test: size of the test split, ``0 <= num_test <= N``.
      seed: non-negative integer seed.

    Returns:
      ``(train_indices, test_indices)``: disjoint sorted ``int64`` arrays covering
      ``0 .. N-1``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    n = labels.shape[0]
    num_test = check_int("num_test", num_test)
    seed = check_int("seed", seed)
    if num_test > n:
        raise ValueError(f"num_test={num_test} exceeds the number of examples {n}")
    classes, counts = np.unique(labels, return_counts=True)
    scaled = num_test * counts.astype(np.int64)
    quota, remainder = scaled // n, scaled % n
    extra = num_test - int(quota.sum())
    order = np.lexsort((np.arange(len(classes)), -remainder))
    quota[order[:extra]] += 1
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(_SPLIT_STREAM,))))
    test = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    keep = np.ones(n, bool)
    keep[test_idx] = False
    return np.flatnonzero(keep).astype(np.int64), test_idx.astype(np.int64)


def standardize(
    x_train: np.ndarray, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel (last axis) standardisation with the training split's statistics.

    Returns ``(x_train, x_test, mean, std)`` in float32; statistics are accumulated in float64.
    A constant channel (std 0) is divided by 1 instead.

    Raises:
      ValueError: an empty training split (its statistics would be NaN).
    """
    if x_train.shape[0] == 0:
        raise ValueError(
            f"cannot standardise with an empty training split (x_train has shape "
            f"{x_train.shape}): its mean and std would be NaN"
        )
    axes = tuple(range(x_train.ndim - 1))
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    norm = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    return norm(x_train), norm(x_test), mean.astype(np.float32), std.astype(np.float32)


def image_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    max_value: float,
    num_classes: int,
    class_names: Sequence[str],
    normalize: bool,
) -> Dataset:
    """Scale raw NHWC pixels by ``1 / max_value`` to ``[0, 1]``, optionally standardise, wrap."""
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")
    xtr = (np.asarray(x_train, np.float32) / np.float32(max_value)).astype(np.float32)
    xte = (np.asarray(x_test, np.float32) / np.float32(max_value)).astype(np.float32)
    mean = std = None
    if normalize:
        xtr, xte, mean, std = standardize(xtr, xte)
    return Dataset(
        name=name,
        x_train=xtr,
        y_train=np.asarray(y_train, np.int32),
        x_test=xte,
        y_test=np.asarray(y_test, np.int32),
        num_classes=num_classes,
        input_shape=xtr.shape[1:],
        class_names=tuple(class_names),
        mean=mean,
        std=std,
    )
