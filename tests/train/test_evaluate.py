"""evaluate and make_eval_step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_models import (
    CLASSES,
    STEP,
    net_state,
)

from sparsejax import train as sj_train


def test_evaluate_matches_sklearn_and_eval_mode_forward(data):
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

    x, y = data
    state, _ = sj_train.train(
        net_state(), x, y, batch_size=8, seed=0, steps=6, train_step=STEP, progress=False
    )
    # batch_size 16 does not divide 40: the last batch is padded and masked.
    result = sj_train.evaluate(state, x, y, batch_size=16)

    model = state.model()
    model.eval()
    logits = np.asarray(model(jnp.asarray(x)))
    preds = logits.argmax(-1)
    p, r, f, s = precision_recall_fscore_support(y, preds, labels=range(CLASSES), zero_division=0)
    np.testing.assert_allclose(result["precision"], p, rtol=1e-6)
    np.testing.assert_allclose(result["recall"], r, rtol=1e-6)
    np.testing.assert_allclose(result["f1"], f, rtol=1e-6)
    assert result["support"] == s.tolist() and sum(result["support"]) == 40
    np.testing.assert_allclose(result["macro_f1"], f.mean(), rtol=1e-6)
    np.testing.assert_allclose(result["macro_precision"], p.mean(), rtol=1e-6)
    np.testing.assert_allclose(result["macro_recall"], r.mean(), rtol=1e-6)
    assert result["accuracy"] == np.sum(preds == y) / 40
    probs = np.asarray(jax.nn.softmax(logits.astype(np.float64)))
    np.testing.assert_allclose(result["loss"], log_loss(y, probs, labels=range(3)), rtol=1e-5)
    np.testing.assert_array_equal(result["confusion"], confusion_matrix(y, preds, labels=range(3)))


def test_evaluate_rejects_bad_labels_and_shapes(data):
    x, y = data
    state = net_state()
    bad = y.copy()
    bad[[3, 17]] = [5, -1]
    with pytest.raises(ValueError, match=r"only 38 of the 40 labels lie in \[0, num_classes=3\)"):
        sj_train.evaluate(state, x, bad)
    with pytest.raises(ValueError, match=r"same N, got \(40, 6\) and \(39,\)"):
        sj_train.evaluate(state, x, y[:39])
