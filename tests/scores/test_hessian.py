"""Second-order scores: exact and Hutchinson Hessian diagonals, OBD, empirical Fisher."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import scores as S

F32 = jnp.float32


# ---------------------------------------------------------------------------
# Second order: exact Hessian diagonal, OBD, Hutchinson
# ---------------------------------------------------------------------------

# Leaves in jax.tree.leaves order: "b" (2,) then "w" (2, 3): theta has n = 8 entries.
_QP = {"b": jnp.array([0.5, -1.0], F32), "w": jnp.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.5]], F32)}


def _theta(params):
    return jnp.concatenate([params["b"].ravel(), params["w"].ravel()])


def _dense_a():
    rng = np.random.default_rng(0)
    m = rng.integers(-2, 3, size=(8, 8))
    return (m @ m.T + 8 * np.eye(8)).astype(np.float32)  # symmetric, integer, positive definite


def _quadratic(a, c):
    a, c = jnp.asarray(a), jnp.asarray(c)

    def loss(params, batch):
        del batch
        t = _theta(params)
        return 0.5 * t @ (a @ t) + c @ t

    return loss


# Shared loss functions: the estimators cache their compilation on the loss function.
_DENSE_LOSS = _quadratic(_dense_a(), np.arange(8, dtype=np.float32))


def _split_theta(v):
    v = np.asarray(v)
    return {"b": v[:2], "w": v[2:].reshape(2, 3)}


def test_exact_hessian_diag_of_quadratic_is_diag_a_exactly():
    a = _dense_a()
    params = {**_QP, "count": jnp.array(2, jnp.int32)}
    expected = _split_theta(np.diag(a))
    for chunk in (None, 3):
        h = S.exact_hessian_diag(_DENSE_LOSS, params, None, chunk_size=chunk)
        np.testing.assert_array_equal(h["b"], expected["b"])
        np.testing.assert_array_equal(h["w"], expected["w"])
        assert h["count"].dtype == F32 and float(h["count"]) == 0.0
    # Cross-check against jax.hessian of the flat function.
    full = jax.hessian(lambda t: 0.5 * t @ (jnp.asarray(a) @ t))(_theta(_QP))
    np.testing.assert_array_equal(np.diag(np.asarray(full)), np.diag(a))


def test_obd_on_quadratic_is_half_diag_a_w_squared():
    a = _dense_a()
    h = S.exact_hessian_diag(_DENSE_LOSS, _QP, None)
    s = S.obd(_QP, h)
    theta = np.asarray(_theta(_QP))
    expected = _split_theta(0.5 * np.diag(a) * theta**2)
    np.testing.assert_allclose(s["b"], expected["b"], rtol=1e-7)
    np.testing.assert_allclose(s["w"], expected["w"], rtol=1e-7)
    # Hand check of one entry: w[1, 0] = 3 is theta[5]; 0.5 * A[5, 5] * 9.
    assert float(s["w"][1, 0]) == pytest.approx(4.5 * float(a[5, 5]))


@pytest.mark.parametrize("num_samples", [1, 3])
def test_hutchinson_exact_for_diagonal_hessian_with_any_probe_count(num_samples):
    d = np.array([2.0, 3.0, 5.0, 0.5, 7.0, 1.0, 4.0, 6.0], np.float32)
    loss = _quadratic(np.diag(d), np.ones(8, np.float32))
    h = S.hessian_diag_hutchinson(loss, _QP, None, jax.random.key(11), num_samples)
    expected = _split_theta(d)
    np.testing.assert_array_equal(h["b"], expected["b"])
    np.testing.assert_array_equal(h["w"], expected["w"])


def test_hutchinson_converges_to_diag_a():
    a = _dense_a()
    diag = np.diag(a)
    key = jax.random.key(5)

    def err(n):
        h = S.hessian_diag_hutchinson(_DENSE_LOSS, _QP, None, key, n, chunk_size=500)
        return np.abs(np.asarray(_theta(h)) - diag)

    e20, e2000 = err(20), err(2000)
    # Per-probe variance of z_i (Az)_i for Rademacher z is sum_{j != i} A_ij^2.
    std2000 = np.sqrt(((a**2).sum(1) - diag**2) / 2000)
    assert np.all(e2000 <= 4 * std2000), (e2000, std2000)
    assert np.all(e2000 <= 0.05 * diag)  # within 5% of every diagonal entry
    assert e2000.mean() < e20.mean() / 3  # ~1/sqrt(100) = 10x smaller in expectation


def test_hutchinson_chunking_does_not_change_the_probes():
    key = jax.random.key(2)
    # 20 probes: all vmapped at once, or 500 per chunk (one chunk), or 3 per chunk
    # (7 chunks, the last padded with one discarded probe).
    ref = S.hessian_diag_hutchinson(_DENSE_LOSS, _QP, None, key, 20, chunk_size=500)
    for chunk in (None, 3):
        got = S.hessian_diag_hutchinson(_DENSE_LOSS, _QP, None, key, 20, chunk_size=chunk)
        chex.assert_trees_all_close(got, ref, rtol=1e-6)


def test_second_order_argument_validation():
    loss = _quadratic(np.eye(8, dtype=np.float32), np.zeros(8, np.float32))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_samples must be a positive int, got 0"):
        S.hessian_diag_hutchinson(loss, _QP, None, key, 0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int or None, got 0"):
        S.hessian_diag_hutchinson(loss, _QP, None, key, 4, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int or None, got 2.5"):
        S.exact_hessian_diag(loss, _QP, None, chunk_size=2.5)


# ---------------------------------------------------------------------------
# Empirical Fisher
# ---------------------------------------------------------------------------


def _logreg_params():
    return {"w": jnp.array([0.3, -0.7, 1.2], F32), "b": jnp.array(0.1, F32), "seen": jnp.array(4)}


def _logreg_batch():
    rng = np.random.default_rng(1)
    return {
        "x": jnp.asarray(rng.normal(size=(7, 3)), F32),
        "y": jnp.asarray([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0], F32),
    }


def _logreg_loss(params, example):
    z = example["x"] @ params["w"] + params["b"]
    return jax.nn.softplus(z) - example["y"] * z  # binary cross-entropy with logits


def test_fisher_equals_python_loop_and_closed_form():
    params, batch = _logreg_params(), _logreg_batch()
    floats = {"w": params["w"], "b": params["b"]}
    acc = {"w": np.zeros(3), "b": 0.0}
    for i in range(7):
        ex = {"x": batch["x"][i], "y": batch["y"][i]}
        g = jax.grad(lambda f, ex=ex: _logreg_loss({**f, "seen": params["seen"]}, ex))(floats)
        acc = {"w": acc["w"] + np.asarray(g["w"]) ** 2, "b": acc["b"] + float(g["b"]) ** 2}
    loop = {"w": acc["w"] / 7, "b": acc["b"] / 7}
    # Closed form: d/dw = (sigmoid(z) - y) x, d/db = sigmoid(z) - y.
    x, y = np.asarray(batch["x"], np.float64), np.asarray(batch["y"], np.float64)
    r = 1 / (1 + np.exp(-(x @ np.asarray(params["w"], np.float64) + 0.1))) - y
    for chunk in (None, 3):
        f = S.fisher_diag(_logreg_loss, params, batch, chunk_size=chunk)
        np.testing.assert_allclose(f["w"], loop["w"], rtol=1e-5)
        np.testing.assert_allclose(f["b"], loop["b"], rtol=1e-5)
        np.testing.assert_allclose(f["w"], np.mean(r[:, None] ** 2 * x**2, 0), rtol=1e-5)
        np.testing.assert_allclose(f["b"], np.mean(r**2), rtol=1e-5)
        assert f["seen"].dtype == F32 and float(f["seen"]) == 0.0


def test_fisher_tuple_batch_and_batch_errors():
    params, batch = _logreg_params(), _logreg_batch()
    f_dict = S.fisher_diag(_logreg_loss, params, batch)
    f_tuple = S.fisher_diag(
        lambda p, ex: _logreg_loss(p, {"x": ex[0], "y": ex[1]}), params, (batch["x"], batch["y"])
    )
    chex.assert_trees_all_close(f_dict, f_tuple, rtol=1e-6)
    with pytest.raises(ValueError, match=r"different leading.*'x': \(7, 3\).*'y': \(6,\)"):
        S.fisher_diag(_logreg_loss, params, {"x": batch["x"], "y": batch["y"][:6]})
    with pytest.raises(ValueError, match="batch leaf 'y' is a scalar"):
        S.fisher_diag(_logreg_loss, params, {"x": batch["x"], "y": jnp.array(1.0)})
    with pytest.raises(ValueError, match="batch has no array leaves"):
        S.fisher_diag(_logreg_loss, params, {})
    with pytest.raises(ValueError, match="batch has 0 examples"):
        S.fisher_diag(_logreg_loss, params, {"x": batch["x"][:0], "y": batch["y"][:0]})
