"""Argument checks shared by the loops and the evaluation of :mod:`sparsejax.train`."""

from __future__ import annotations

from typing import Any

import numpy as np


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_xy(x: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{what}: inputs need shape (N, ...) and labels shape (N,) with the same N, got "
            f"{x.shape} and {y.shape}"
        )
    return x, y
