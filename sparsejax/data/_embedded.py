"""Data sets that need no files: scikit-learn's digits and the generated MNIST-1D.

Neither touches the network: digits ships inside scikit-learn, MNIST-1D is *generated*
locally with the official ``mnist1d`` package (``make_dataset``, never ``get_dataset``,
which would try to download a pickle).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import random
import tempfile
from typing import Any

import numpy as np

from sparsejax.data._dataset import Dataset, check_int, image_dataset, stratified_split

__all__ = ["MNIST1D_PAPER_SEED", "load_digits", "load_mnist1d"]

# ``get_dataset_args()["seed"]`` of the mnist1d package: the seed of the paper's data set.
MNIST1D_PAPER_SEED = 42
_MNIST1D_CACHE_FORMAT = 1


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is needed for this data set: pip install 'sparsejax[experiments]'"
        ) from err


def load_digits(test_fraction: float = 0.2, seed: int = 0, normalize: bool = True) -> Dataset:
    """scikit-learn's handwritten digits: 1,797 grey 8×8 images, 10 classes (no download).

    The images hold integers 0..16 (UCI "Optical Recognition of Handwritten Digits", 4×4
    block counts of 32×32 bitmaps); they are divided by 16 into ``[0, 1]``.

    Args:
      test_fraction: fraction of the 1,797 images in the test split, in ``(0, 1)``; the test
        split has ``round(test_fraction * 1797)`` images (default 359 test / 1,438 train).
      seed: split seed: :func:`~sparsejax.data.stratified_split` (PCG64, no global state).
      normalize: standardise with the training split's mean / std.

    Returns:
      ``Dataset("digits")``: ``x`` float32 ``[N, 8, 8, 1]`` (NHWC), ``y`` int32 ``[N]``.

    References:
      Alpaydin, Kaynak. "Optical Recognition of Handwritten Digits". UCI ML Repository, 1998.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float):
        raise TypeError(f"test_fraction must be a float, got {test_fraction!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    datasets = _require("sklearn.datasets")
    flat, target = datasets.load_digits(return_X_y=True)
    images = np.asarray(flat).reshape(-1, 8, 8, 1)
    target = np.asarray(target)
    n = target.shape[0]
    num_test = round(test_fraction * n)
    if not 0 < num_test < n:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split of the {n} images")
    train_idx, test_idx = stratified_split(target, num_test, seed)
    return image_dataset(
        "digits", images[train_idx], target[train_idx], images[test_idx], target[test_idx],
        max_value=16.0, num_classes=10, class_names=tuple(str(i) for i in range(10)),
        normalize=normalize,
    )


def _generate_mnist1d(seed: int) -> dict[str, np.ndarray]:
    data = _require("mnist1d.data")
    args = data.get_dataset_args()
    args.seed = seed
    # make_dataset seeds and draws from numpy's and Python's *global* generators; restore
    # them so that loading MNIST-1D has no side effect on the caller's random state.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        raw = data.make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    return {"x": raw["x"], "y": raw["y"], "x_test": raw["x_test"], "y_test": raw["y_test"]}


def _cache_file(cache_dir: str | os.PathLike, seed: int) -> pathlib.Path:
    return pathlib.Path(cache_dir) / f"mnist1d_seed{seed}_v{_MNIST1D_CACHE_FORMAT}.npz"


def _read_cache(path: pathlib.Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: corrupt MNIST-1D cache file ({err}); delete it") from err
    shapes = {k: v.shape for k, v in arrays.items()}
    if shapes != {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}:
        raise ValueError(f"{path}: MNIST-1D cache has shapes {shapes}; delete it")
    return arrays


def load_mnist1d(
    seed: int = MNIST1D_PAPER_SEED, cache_dir: str | os.PathLike | None = None
) -> Dataset:
    """MNIST-1D (Greydanus & Kobak 2024), generated locally with the official package.

    Calls ``mnist1d.data.make_dataset(get_dataset_args())`` with the paper's default
    arguments (5,000 signals, 80 % train: **4,000 train / 1,000 test**, length 40, 10
    classes) and generation seed ``seed`` (the paper's is 42). No network access: the
    package's downloading ``get_dataset`` is never called. Generation takes a few seconds;
    the global numpy / Python random states that ``mnist1d`` reseeds are restored afterwards.

    Normalisation is mnist1d's own (the whole 5,000-signal set centred to mean 0 and scaled
    to std 1, as in the paper); this loader adds none, so ``mean`` and ``std`` are ``None``.

    A channel axis is added: ``x`` is float32 ``[N, 40, 1]`` (length, channels — the layout
    of a 1-D convolution); flatten it for an MLP.

    Args:
      seed: mnist1d generation seed (non-negative).
      cache_dir: optional folder in which to keep the generated arrays as
        ``mnist1d_seed{seed}_v1.npz`` (written atomically, read back without pickle). ``None``
        (default) writes nothing.

    Returns:
      ``Dataset("mnist1d")``.

    References:
      Greydanus, Kobak. "Scaling Down Deep Learning with MNIST-1D". ICML 2024.
    """
    seed = check_int("seed", seed)
    arrays = None
    path = None
    if cache_dir is not None:
        path = _cache_file(cache_dir, seed)
        arrays = _read_cache(path)
    if arrays is None:
        arrays = _generate_mnist1d(seed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, **arrays)
                os.replace(tmp, path)
            except BaseException:
                pathlib.Path(tmp).unlink(missing_ok=True)
                raise
    return Dataset(
        name="mnist1d",
        x_train=np.asarray(arrays["x"], np.float32)[..., None],
        y_train=np.asarray(arrays["y"], np.int32),
        x_test=np.asarray(arrays["x_test"], np.float32)[..., None],
        y_test=np.asarray(arrays["y_test"], np.int32),
        num_classes=10,
        input_shape=(40, 1),
        class_names=tuple(str(i) for i in range(10)),
    )
