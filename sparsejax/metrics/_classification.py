"""Classification metrics: accuracy, confusion matrix, per-class and macro precision / recall / F1.

Pure, ``jit``-compatible (``num_classes`` static), following scikit-learn's definitions
with ``zero_division=0``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class ClassificationMetrics(NamedTuple):
    """Classification metrics (a pytree: returnable from ``jit``).

    Attributes:
      accuracy: ``f32[]`` fraction of correct predictions (= micro-averaged P = R = F1).
      precision: ``f32[C]`` ``tp / (tp + fp)``, 0 for a class never predicted.
      recall: ``f32[C]`` ``tp / (tp + fn)``, 0 for a class absent from the labels.
      f1: ``f32[C]`` ``2 tp / (2 tp + fp + fn)``, 0 when the denominator is 0.
      support: ``i32[C]`` number of examples of each true class.
      macro_precision: ``f32[]`` unweighted mean of ``precision`` over all ``C`` classes.
      macro_recall: ``f32[]``.
      macro_f1: ``f32[]`` mean of the per-class F1 (scikit-learn's ``average="macro"``).
      confusion: ``i32[C, C]``, rows = true class, columns = predicted class.
    """

    accuracy: jax.Array
    precision: jax.Array
    recall: jax.Array
    f1: jax.Array
    support: jax.Array
    macro_precision: jax.Array
    macro_recall: jax.Array
    macro_f1: jax.Array
    confusion: jax.Array


def _as_predictions(logits_or_predictions: Any, labels: Any) -> tuple[jax.Array, jax.Array, bool]:
    """Validate shapes / dtypes; return ``(outputs, labels, outputs_are_logits)``."""
    out = jnp.asarray(logits_or_predictions)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if out.shape == labels.shape:
        if not jnp.issubdtype(out.dtype, jnp.integer):
            raise TypeError(
                f"predictions with the labels' shape {labels.shape} must be integer class "
                f"indices, got dtype {out.dtype}; pass logits with a trailing class axis"
            )
        return out, labels, False
    if out.shape[:-1] == labels.shape:
        return out, labels, True
    raise ValueError(
        f"logits_or_predictions has shape {out.shape}; expected the labels' shape "
        f"{labels.shape} (predictions) or {(*labels.shape, 'C')} (logits)"
    )


def _check_where(where: Any, labels: jax.Array) -> jax.Array:
    if where is None:
        return jnp.ones(labels.shape, bool)
    where = jnp.asarray(where)
    if where.shape != labels.shape or where.dtype != jnp.bool_:
        raise ValueError(
            f"where must be a bool array of the labels' shape {labels.shape}, "
            f"got {where.dtype}{list(where.shape)}"
        )
    return where


def _check_range(arr: jax.Array, what: str, num_classes: int) -> None:
    """Eagerly (never under a trace) reject class indices outside ``[0, num_classes)``."""
    if isinstance(arr, jax.core.Tracer) or arr.size == 0:
        return
    host = np.asarray(arr)
    lo, hi = int(host.min()), int(host.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{what} take values in [{lo}, {hi}], outside [0, num_classes={num_classes})"
        )


# The array work is jitted as a whole (one compilation per shape) so that eager calls do not
# dispatch and compile a dozen small ops; under an outer ``jit`` these inline.
@functools.partial(jax.jit, static_argnames=("logits",))
def _accuracy(out: jax.Array, labels: jax.Array, where: jax.Array, logits: bool) -> jax.Array:
    preds = jnp.argmax(out, axis=-1) if logits else out
    correct = jnp.sum((preds == labels) & where, dtype=jnp.int32)
    count = jnp.sum(where, dtype=jnp.int32)
    return jnp.where(count > 0, correct / jnp.maximum(count, 1), 0.0).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("num_classes", "logits"))
def _confusion(
    out: jax.Array, labels: jax.Array, where: jax.Array, num_classes: int, logits: bool
) -> jax.Array:
    preds = jnp.argmax(out, axis=-1) if logits else out
    preds, labels, where = preds.reshape(-1), labels.reshape(-1), where.reshape(-1)
    valid = where & (labels >= 0) & (labels < num_classes) & (preds >= 0) & (preds < num_classes)
    index = jnp.where(valid, labels * num_classes + preds, 0)
    counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index].add(valid.astype(jnp.int32))
    return counts.reshape(num_classes, num_classes)


def accuracy(logits_or_predictions: Any, labels: Any, where: Any | None = None) -> jax.Array:
    """Fraction of correct predictions (``f32[]``; 0 when ``where`` selects nothing).

    Args:
      logits_or_predictions: ``float[..., C]`` logits (argmax taken, first maximum on ties)
        or ``int[...]`` predicted classes.
      labels: ``int[...]`` true classes.
      where: optional ``bool[...]``: examples to count (e.g. to ignore padding of a last
        evaluation batch).

    Pure and ``jit``-compatible.
    """
    out, labels, logits = _as_predictions(logits_or_predictions, labels)
    return _accuracy(out, labels, _check_where(where, labels), logits)


def confusion_matrix(
    logits_or_predictions: Any, labels: Any, num_classes: int, where: Any | None = None
) -> jax.Array:
    """Confusion counts ``i32[C, C]``: entry ``[i, j]`` = examples of true class ``i``
    predicted as ``j`` (scikit-learn's layout).

    Confusion matrices of several batches add up; :func:`metrics_from_confusion` turns the
    sum into metrics. Pure and ``jit``-compatible with ``num_classes`` static. Eagerly, labels
    or predictions outside ``[0, num_classes)`` raise a ``ValueError``; under ``jit`` they are
    not counted.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive Python int (static), got {num_classes!r}")
    out, labels, logits = _as_predictions(logits_or_predictions, labels)
    where = _check_where(where, labels)
    if logits and out.shape[-1] != num_classes:
        raise ValueError(f"logits have {out.shape[-1]} classes, num_classes={num_classes}")
    _check_range(labels, "labels", num_classes)
    if not logits:
        _check_range(out, "predictions", num_classes)
    return _confusion(out, labels, where, num_classes, logits)


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    num, den = num.astype(jnp.float32), den.astype(jnp.float32)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


@jax.jit
def _from_confusion(cm: jax.Array) -> ClassificationMetrics:
    cm = cm.astype(jnp.int32)
    tp = jnp.diagonal(cm)
    predicted = jnp.sum(cm, axis=0)
    support = jnp.sum(cm, axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, predicted + support)
    return ClassificationMetrics(
        accuracy=_safe_div(jnp.sum(tp), jnp.sum(cm)),
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        macro_precision=jnp.mean(precision),
        macro_recall=jnp.mean(recall),
        macro_f1=jnp.mean(f1),
        confusion=cm,
    )


def metrics_from_confusion(confusion: Any) -> ClassificationMetrics:
    """:class:`ClassificationMetrics` from a confusion matrix ``int[C, C]`` (rows = true).

    Zero-division convention: a ratio with a zero denominator is 0 (scikit-learn's
    ``zero_division=0``); macro averages include every one of the ``C`` classes (like
    scikit-learn with ``labels=range(C)``). Pure and ``jit``-compatible.
    """
    cm = jnp.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be a square [C, C] matrix, got shape {cm.shape}")
    return _from_confusion(cm)


def classification_metrics(
    logits_or_predictions: Any, labels: Any, num_classes: int, where: Any | None = None
) -> ClassificationMetrics:
    """Accuracy, per-class and macro precision / recall / F1, support and confusion matrix.

    ``metrics_from_confusion(confusion_matrix(...))``; see :func:`confusion_matrix` for the
    arguments. Matches ``sklearn.metrics.precision_recall_fscore_support(labels, preds,
    labels=range(C), zero_division=0)``. Pure and ``jit``-compatible (``num_classes``
    static: ``jax.jit(classification_metrics, static_argnames="num_classes")``).
    """
    return metrics_from_confusion(confusion_matrix(logits_or_predictions, labels, num_classes, where))
