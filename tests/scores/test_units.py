"""Unit criteria from the weights: closed-form values, the exact oracle."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax import scores

X = np.asarray(
    [[1.0, 2.0, 0.0], [0.5, -1.0, 2.0], [-1.0, 0.0, 1.0], [2.0, 1.0, -1.0]], np.float32
)  # (B=4, in=3)
Y = np.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]], np.float32)  # (4, out=2)
W = np.asarray([[0.5, -1.0], [2.0, 0.25], [-0.5, 1.5]], np.float32)  # (3, 2)
B = np.asarray([0.25, -0.5], np.float32)


def _params():
    return {"dense": {"kernel": jnp.asarray(W), "bias": jnp.asarray(B)}}


def _loss(p, batch):
    x, y = batch
    pred = x @ p["dense"]["kernel"] + p["dense"]["bias"][None, :]
    return 0.5 * jnp.mean(jnp.sum(jnp.square(pred - y), axis=1))


def _closed_form_delta(remove_bias: bool) -> np.ndarray:
    """Exact loss change of zeroing output column i (and its bias) of a linear least-squares model."""
    x, y, w, b = (a.astype(np.float64) for a in (X, Y, W, B))
    r = x @ w + b - y  # residuals (B, out)
    deltas = []
    for i in range(w.shape[1]):
        new_ri = (b[i] if not remove_bias else 0.0) - y[:, i]
        deltas.append(0.5 * np.mean(new_ri**2 - r[:, i] ** 2))
    return np.asarray(deltas)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("remove_bias", [True, False])
def test_oracle_matches_closed_form(jit, remove_bias):
    def run(p):
        return scores.oracle(_loss, p, (X, Y), absolute=False, remove_bias=remove_bias)

    out = (jax.jit(run) if jit else run)(_params())
    assert out["dense"]["kernel"].shape == (1, 2)
    assert out["dense"]["bias"].shape == ()
    np.testing.assert_allclose(out["dense"]["kernel"][0], _closed_form_delta(remove_bias), rtol=1e-5)


def test_oracle_absolute_chunked_and_taylor_relation():
    p = _params()
    full = scores.oracle(_loss, p, (X, Y), remove_bias=False)
    chunked = scores.oracle(_loss, p, (X, Y), remove_bias=False, chunk_size=1)
    chex.assert_trees_all_close(full, chunked, rtol=1e-6)
    np.testing.assert_allclose(full["dense"]["kernel"][0], np.abs(_closed_form_delta(False)), rtol=1e-5)
    # Quadratic loss: ΔL_i = −Σ_j g_ji w_ji + ½ w_iᵀ (xᵀx/B) w_i exactly, so the group sum
    # inside group Taylor is the first-order part of the oracle.
    g = jax.grad(_loss)(p, (X, Y))
    first = -np.sum(np.asarray(g["dense"]["kernel"]) * W, axis=0)
    second = 0.5 * np.einsum("ji,jk,ki->i", W, X.T @ X / len(X), W)
    signed = scores.oracle(_loss, p, (X, Y), remove_bias=False, absolute=False)
    np.testing.assert_allclose(signed["dense"]["kernel"][0], first + second, rtol=1e-5)
    taylor = scores.group_taylor(p, g)
    np.testing.assert_allclose(taylor["dense"]["kernel"][0], first**2, rtol=1e-5)


def test_oracle_conv_units_and_bad_chunk():
    params = {"conv": {"kernel": jnp.arange(1.0, 1.0 + 2 * 2 * 1 * 3).reshape(2, 2, 1, 3)}}

    def loss(p, x):  # loss = Σ_units (unit index + 1) · Σ|w_unit| (linear in each filter)
        k = p["conv"]["kernel"]
        return jnp.sum(jnp.abs(k) * jnp.arange(1.0, 4.0)[None, None, None, :]) + 0.0 * x

    out = scores.oracle(loss, params, jnp.zeros(()))
    k = np.asarray(params["conv"]["kernel"])
    expect = np.abs(k).sum(axis=(0, 1, 2)) * np.arange(1.0, 4.0)
    np.testing.assert_allclose(out["conv"]["kernel"].reshape(-1), expect, rtol=1e-6)
    assert out["conv"]["kernel"].shape == (1, 1, 1, 3)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        scores.oracle(loss, params, jnp.zeros(()), chunk_size=0)


@pytest.mark.parametrize("jit", [False, True])
def test_filter_norm_l1_l2(jit):
    params = {"conv": {"kernel": jnp.asarray([[3.0, -1.0], [-4.0, 0.0]]).reshape(1, 1, 2, 2)},
              "b": jnp.ones(2)}
    fn = (lambda p, o: jax.jit(scores.filter_norm, static_argnums=1)(p, o)) if jit else (
        scores.filter_norm)
    np.testing.assert_allclose(fn(params, 1)["conv"]["kernel"].reshape(-1), [7.0, 1.0])
    np.testing.assert_allclose(fn(params, 2)["conv"]["kernel"].reshape(-1), [5.0, 1.0])
    assert fn(params, 1)["b"].shape == ()
    with pytest.raises(ValueError, match="ord must be 1 or 2, got 3"):
        scores.filter_norm(params, 3)


def test_filter_norm_feeds_prune_neurons_exact_count():
    k = jnp.asarray([[1.0, 5.0, 2.0, 4.0], [1.0, 5.0, 2.0, 4.0]])
    params = {"fc": {"kernel": k, "bias": jnp.zeros(4)}}
    mask = sj.prune(scores.filter_norm(params), 0.5, params=params, structure=sj.Neurons())
    assert mask["fc"]["kernel"].tolist() == [[False, True, False, True]]


def test_mean_group_taylor_is_mean_of_per_batch_squares():
    p = _params()
    batches = (np.stack([X[:2], X[2:]]), np.stack([Y[:2], Y[2:]]))
    got = scores.mean_group_taylor(_loss, p, batches)
    per = []
    for i in range(2):
        g = jax.grad(_loss)(p, (X[2 * i : 2 * i + 2], Y[2 * i : 2 * i + 2]))
        per.append(np.sum(np.asarray(g["dense"]["kernel"]) * W, axis=0) ** 2)
    np.testing.assert_allclose(got["dense"]["kernel"][0], np.mean(per, axis=0), rtol=1e-5)
    jitted = jax.jit(lambda q: scores.mean_group_taylor(_loss, q, batches))(p)
    chex.assert_trees_all_close(got, jitted, rtol=1e-6)
    with pytest.raises(ValueError, match="same leading"):
        scores.mean_group_taylor(_loss, p, (np.zeros((2, 2, 3)), np.zeros((3, 2, 2))))


def test_group_taylor_shape_mismatch_names_path():
    p = _params()
    g = {"dense": {"kernel": jnp.zeros((3, 3)), "bias": jnp.zeros(2)}}
    with pytest.raises(ValueError, match="'dense/kernel'.*\\(3, 3\\)"):
        scores.group_taylor(p, g)


def test_random_units_shapes_determinism_and_jit():
    params = {"a": {"kernel": jnp.zeros((3, 5))}, "c": {"kernel": jnp.zeros((2, 2, 3, 4))},
              "a_bias": jnp.zeros(5)}
    r1 = scores.random_units(params, jax.random.key(0))
    r2 = jax.jit(scores.random_units)(params, jax.random.key(0))
    r3 = scores.random_units(params, jax.random.key(1))
    chex.assert_trees_all_equal(r1, r2)
    assert r1["a"]["kernel"].shape == (1, 5) and r1["c"]["kernel"].shape == (1, 1, 1, 4)
    assert float(r1["a_bias"]) == 0.0
    v = np.asarray(r1["a"]["kernel"])
    assert ((v >= 0) & (v < 1)).all() and len(np.unique(v)) == 5
    assert not np.array_equal(v, np.asarray(r3["a"]["kernel"]))


def test_criteria_on_nnx_state_paths():
    """NNX ``State`` leaves: paths without ``.value``, scores usable by ``prune``."""
    from flax import nnx

    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    _, state = nnx.split(model, nnx.Param)
    kernel = np.asarray(state["kernel"][...])

    def loss(st, batch):
        x, y = batch
        pred = x @ st["kernel"][...] + st["bias"][...][None, :]
        return 0.5 * jnp.mean(jnp.sum(jnp.square(pred - y), axis=1))

    norms = scores.filter_norm(state)
    np.testing.assert_allclose(norms["kernel"][...].reshape(-1), np.abs(kernel).sum(0), rtol=1e-6)
    orc = scores.oracle(loss, state, (X, Y), absolute=False)
    x, y, w, b = (a.astype(np.float64) for a in (X, Y, kernel, np.asarray(state["bias"][...])))
    r = x @ w + b - y
    expect = [0.5 * np.mean(y[:, i] ** 2 - r[:, i] ** 2) for i in range(2)]
    np.testing.assert_allclose(orc["kernel"][...].reshape(-1), expect, rtol=1e-5)
    rho = scores.rank_correlation(orc, orc)
    assert list(rho) == ["kernel"] and float(rho["kernel"]) == pytest.approx(1.0)
