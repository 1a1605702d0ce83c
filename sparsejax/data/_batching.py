"""Deterministic, resumable shuffling and batching from an explicit seed.

The order of epoch ``e`` is a permutation drawn from numpy's PCG64 generator seeded with
``SeedSequence((seed, epoch))``: it depends on nothing but ``(seed, epoch)`` — no global
random state, no hidden iterator state. A training position is therefore fully described by
the pair ``(epoch, batch_index)``; a checkpoint stores it and
``batches(..., epoch=epoch, start_batch=batch_index)`` resumes exactly where the interrupted
run was.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sparsejax.data._dataset import check_int

__all__ = ["batches", "epoch_permutation", "num_batches"]


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch.

    Args:
      num_examples: ``N >= 0``.
      seed: non-negative integer.
      epoch: non-negative integer.

    Returns:
      ``int64[N]``: a permutation of ``0 .. N-1``, a pure function of ``(N, seed, epoch)``
      (PCG64 seeded with ``SeedSequence((seed, epoch))``).
    """
    num_examples = check_int("num_examples", num_examples)
    seed = check_int("seed", seed)
    epoch = check_int("epoch", epoch)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, epoch))))
    return rng.permutation(num_examples).astype(np.int64)


def num_batches(num_examples: int, batch_size: int, drop_last: bool = True) -> int:
    """Batches per epoch: ``N // B`` with ``drop_last``, else ``ceil(N / B)``."""
    num_examples = check_int("num_examples", num_examples)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if drop_last:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int | None,
    epoch: int = 0,
    drop_last: bool = True,
    start_batch: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate over the batches of one epoch, optionally starting in the middle.

    Batch ``k`` of epoch ``e`` holds the examples
    ``epoch_permutation(N, seed, e)[k * B:(k + 1) * B]`` (with ``seed=None``: the examples
    ``k * B .. (k + 1) * B - 1`` in stored order, for evaluation). With ``drop_last`` the last
    ``N % B`` examples of the permutation are skipped this epoch (a different subset each
    epoch); without it the last batch is smaller.

    Arguments are validated when this function is called, not at the first ``next()``.

    Args:
      x: ``[N, ...]`` inputs.
      y: ``[N, ...]`` targets.
      batch_size: ``B >= 1``.
      seed: non-negative shuffling seed, or ``None`` for no shuffling.
      epoch: epoch index (selects the permutation).
      drop_last: drop the incomplete last batch.
      start_batch: index of the first batch to yield, ``0 <= start_batch <=
        num_batches(N, B, drop_last)``: resuming at ``(epoch, start_batch)`` yields exactly
        the tail of the full epoch.

    Returns:
      An iterator of ``(x_batch, y_batch)`` numpy arrays of leading size ``B`` (or less for a
      last batch kept with ``drop_last=False``).

    Raises:
      ValueError: mismatched leading sizes, ``start_batch`` out of range, or ``drop_last`` with
        fewer than ``B`` examples (an epoch without batches would loop forever).
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y need the same leading (example) dimension, got {x.shape} and {y.shape}"
        )
    n = int(x.shape[0])
    count = num_batches(n, batch_size, drop_last)
    epoch = check_int("epoch", epoch)
    start_batch = check_int("start_batch", start_batch)
    if count == 0 and n > 0:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {n} examples with drop_last=True: "
            "the epoch would have no batch"
        )
    if start_batch > count:
        raise ValueError(f"start_batch={start_batch} exceeds the {count} batches of an epoch")
    order = None if seed is None else epoch_permutation(n, seed, epoch)
    return _iterate(x, y, batch_size, order, start_batch, count, n)


def _iterate(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    order: np.ndarray | None,
    start: int,
    count: int,
    n: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for k in range(start, count):
        lo, hi = k * batch_size, min((k + 1) * batch_size, n)
        if order is None:
            yield x[lo:hi], y[lo:hi]
        else:
            idx = order[lo:hi]
            yield x[idx], y[idx]
