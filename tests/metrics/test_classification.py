"""Classification metrics against scikit-learn."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from sparsejax import metrics


def random_case(seed, n=200, c=5, never=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n).astype(np.int32)
    preds = rng.integers(0, c, n).astype(np.int32)
    preds[preds == never] = (never + 1) % c  # class `never` is never predicted
    return labels, preds


@pytest.mark.parametrize("jit", [False, True])
def test_classification_matches_sklearn(jit):
    c = 5
    labels, preds = random_case(0, c=c)
    fn = jax.jit(metrics.classification_metrics, static_argnames="num_classes") if jit else metrics.classification_metrics
    m = fn(preds, labels, num_classes=c)
    p, r, f, s = skm.precision_recall_fscore_support(labels, preds, labels=np.arange(c), zero_division=0)
    np.testing.assert_allclose(m.precision, p, rtol=1e-6)
    np.testing.assert_allclose(m.recall, r, rtol=1e-6)
    np.testing.assert_allclose(m.f1, f, rtol=1e-6)
    np.testing.assert_array_equal(m.support, s)
    assert float(m.precision[3]) == 0.0 and float(m.f1[3]) == 0.0
    np.testing.assert_array_equal(m.confusion, skm.confusion_matrix(labels, preds, labels=np.arange(c)))
    macro = skm.precision_recall_fscore_support(labels, preds, labels=np.arange(c), average="macro", zero_division=0)
    np.testing.assert_allclose([m.macro_precision, m.macro_recall, m.macro_f1], macro[:3], rtol=1e-6)
    np.testing.assert_allclose(m.accuracy, skm.accuracy_score(labels, preds), rtol=1e-6)
    assert m.confusion.dtype == jnp.int32 and m.f1.dtype == jnp.float32


def test_class_absent_everywhere_and_logits():
    # Class 2 of 3 never occurs: all its metrics are 0 and it still counts in the macro mean.
    labels = jnp.array([0, 0, 1, 1], jnp.int32)
    logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0], [0.0, 1.0, 0.5], [1.0, 1.0, 0.0]])
    m = metrics.classification_metrics(logits, labels, num_classes=3)  # argmax: 0, 1, 1, 0 (tie → first)
    chex.assert_trees_all_close(m.precision, jnp.array([0.5, 0.5, 0.0]))
    chex.assert_trees_all_close(m.f1, jnp.array([0.5, 0.5, 0.0]))
    assert float(m.macro_f1) == pytest.approx(1 / 3)
    assert float(metrics.accuracy(logits, labels)) == 0.5
    assert float(jax.jit(metrics.accuracy)(logits, labels)) == 0.5


def test_where_and_batch_accumulation():
    labels, preds = random_case(1, n=64, c=4, never=0)
    where = np.arange(64) < 50  # e.g. a padded last batch
    sub = metrics.classification_metrics(preds[:50], labels[:50], num_classes=4)
    masked = jax.jit(metrics.classification_metrics, static_argnames="num_classes")(
        preds, labels, num_classes=4, where=where
    )
    chex.assert_trees_all_close(masked, sub)
    assert float(metrics.accuracy(preds, labels, where=where)) == pytest.approx(float(sub.accuracy))
    # Confusion matrices of batches add up to the whole.
    total = sum(metrics.confusion_matrix(preds[i : i + 16], labels[i : i + 16], 4) for i in range(0, 64, 16))
    chex.assert_trees_all_equal(total, metrics.confusion_matrix(preds, labels, 4))
    chex.assert_trees_all_close(metrics.metrics_from_confusion(total), metrics.classification_metrics(preds, labels, 4))
    assert float(metrics.accuracy(preds, labels, where=np.zeros(64, bool))) == 0.0


def test_classification_errors():
    labels = jnp.array([0, 1, 2], jnp.int32)
    with pytest.raises(TypeError, match="must be integer class indices, got dtype float32"):
        metrics.accuracy(jnp.array([0.0, 1.0, 2.0]), labels)
    with pytest.raises(TypeError, match="labels must be integer"):
        metrics.accuracy(labels, labels.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"logits_or_predictions has shape \(4,\)"):
        metrics.accuracy(jnp.array([0, 1, 2, 0]), labels)
    with pytest.raises(ValueError, match=r"labels take values in \[0, 2\], outside \[0, num_classes=2\)"):
        metrics.confusion_matrix(jnp.array([0, 1, 1]), labels, 2)
    with pytest.raises(ValueError, match="logits have 4 classes, num_classes=3"):
        metrics.confusion_matrix(jnp.zeros((3, 4)), labels, 3)
    with pytest.raises(ValueError, match="num_classes must be a positive Python int"):
        metrics.confusion_matrix(labels, labels, 0)
    with pytest.raises(ValueError, match="where must be a bool array"):
        metrics.accuracy(labels, labels, where=jnp.ones(2, bool))
    # Under jit, out-of-range values cannot raise: they are left out of the counts.
    cm = jax.jit(metrics.confusion_matrix, static_argnames="num_classes")(jnp.array([0, 1, 5]), labels, num_classes=3)
    assert int(cm.sum()) == 2
