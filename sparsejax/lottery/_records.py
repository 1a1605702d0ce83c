"""What a round's record holds: exact pruned counts, per-seed summaries, history statistics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from sparsejax.tree import Prunable, PyTree, named_leaves, prunable_tree

HISTORY_KEYS = ("step", "val_loss", "val_accuracy", "test_accuracy")


def pruned_counts(mask1: PyTree, params1: PyTree, prunable: Prunable) -> dict[str, tuple[int, int]]:
    """``{path: (pruned, total)}`` of the prunable leaves of one seed's mask."""
    which = jax.tree.leaves(prunable_tree(params1, prunable))
    out = {}
    for (name, p), m, w in zip(named_leaves(params1), jax.tree.leaves(mask1), which, strict=True):
        if w:
            kept = int(np.sum(np.broadcast_to(np.asarray(m), np.shape(p))))
            total = int(np.prod(np.shape(p), dtype=np.int64))
            out[name] = (total - kept, total)
    return out


def mean_and_per_seed(values: Any) -> tuple[float, list[float]]:
    """The mean of a scalar or ``[S]`` value and its per-seed list (plain floats)."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(arr.mean()), [float(v) for v in arr]


def history_stats(history: Mapping[str, Any]) -> dict[str, Any]:
    """Early-stop step, max test accuracy and validation-selected test accuracy (means).

    Reads the :data:`HISTORY_KEYS` of a ``TrainOutput.history`` (see
    :class:`~sparsejax.lottery.TrainOutput`); other keys are ignored.

    Raises:
      ValueError: the history arrays differ in length along the last axis.
    """
    h = {k: np.asarray(v, dtype=np.float64) for k, v in history.items() if k in HISTORY_KEYS}
    out: dict[str, Any] = {}
    if not h:
        return out
    lengths = {k: v.shape[-1] for k, v in h.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"TrainOutput.history arrays differ in length (last axis): {lengths}")
    if "step" in h and "val_loss" in h:
        steps = np.broadcast_to(h["step"], h["val_loss"].shape)
        idx = np.argmin(h["val_loss"], axis=-1)
        es = np.take_along_axis(steps, idx[..., None], axis=-1)[..., 0]
        out["early_stop_step"], out["early_stop_step_per_seed"] = mean_and_per_seed(es)
    if "test_accuracy" in h:
        out["max_test_accuracy"], out["max_test_accuracy_per_seed"] = mean_and_per_seed(
            h["test_accuracy"].max(axis=-1)
        )
        if "val_accuracy" in h:
            val = np.broadcast_to(h["val_accuracy"], h["test_accuracy"].shape)
            idx = np.argmax(val, axis=-1)
            sel = np.take_along_axis(h["test_accuracy"], idx[..., None], axis=-1)[..., 0]
            out["val_selected_test_accuracy"], out["val_selected_test_accuracy_per_seed"] = (
                mean_and_per_seed(sel)
            )
    return out
