"""Tests for sparsejax.scores: closed forms, estimators against exact values, jit parity."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax import scores as S

F32 = jnp.float32


def _params():
    """A tiny pytree with a Dense layer and an int step counter."""
    return {
        "dense": {
            "kernel": jnp.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]], F32),
            "bias": jnp.array([0.1, -0.2], F32),
        },
        "step": jnp.array(7, jnp.int32),
    }


def _grads():
    return {
        "dense": {
            "kernel": jnp.array([[0.5, 1.0], [-2.0, -0.5], [4.0, 2.0]], F32),
            "bias": jnp.array([-1.0, 0.5], F32),
        },
        "step": jnp.array(0, jnp.int32),
    }


def _batch():
    x = jnp.array(
        [[0.2, -1.0, 0.5], [1.5, 0.3, -0.7], [-0.4, 0.8, 1.1], [0.9, -0.6, 0.0], [0.1, 0.2, 0.3]],
        F32,
    )
    y = jnp.array([0, 1, 1, 0, 1], jnp.int32)
    return {"x": x, "y": y}


def _logits(params, x):
    return x @ params["dense"]["kernel"] + params["dense"]["bias"]


def _example_loss(params, example):
    logits = _logits(params, example["x"])
    return -jax.nn.log_softmax(logits)[example["y"]]


def _mean_loss(params, batch):
    return jnp.mean(jax.vmap(_example_loss, in_axes=(None, 0))(params, batch))


# ---------------------------------------------------------------------------
# Closed forms of the elementwise scores
# ---------------------------------------------------------------------------


def test_magnitude_closed_form_dtypes_and_int_leaves():
    params = {**_params(), "half": jnp.array([-1.5, 2.0], jnp.bfloat16)}
    s = S.magnitude(params)
    np.testing.assert_array_equal(
        s["dense"]["kernel"], np.array([[1.0, 2.0], [0.5, 3.0], [1.5, 0.25]], np.float32)
    )
    np.testing.assert_array_equal(s["dense"]["bias"], np.array([0.1, 0.2], np.float32))
    np.testing.assert_array_equal(s["half"], np.array([1.5, 2.0], np.float32))
    assert s["half"].dtype == F32 and s["dense"]["kernel"].dtype == F32
    assert s["step"].dtype == F32 and s["step"].shape == () and float(s["step"]) == 0.0


def test_gradient_taylor_movement_closed_form():
    p, g = _params(), _grads()
    w, gw = np.asarray(p["dense"]["kernel"]), np.asarray(g["dense"]["kernel"])
    np.testing.assert_array_equal(S.gradient(g)["dense"]["kernel"], np.abs(gw))
    expected_taylor = np.array([[0.5, 2.0], [1.0, 1.5], [6.0, 0.5]], np.float32)
    np.testing.assert_array_equal(S.taylor(p, g)["dense"]["kernel"], expected_taylor)
    np.testing.assert_array_equal(
        S.taylor(p, g, squared=True)["dense"]["kernel"], np.square(expected_taylor)
    )
    np.testing.assert_array_equal(S.taylor(p, g)["dense"]["bias"], np.array([0.1, 0.1], np.float32))
    mv = S.movement(p, g)["dense"]["kernel"]
    np.testing.assert_array_equal(mv, -(w * gw))
    np.testing.assert_array_equal(mv, np.array([[-0.5, 2.0], [1.0, 1.5], [6.0, -0.5]], np.float32))
    for fn in (S.taylor, S.movement, S.obd):
        out = fn(p, g)
        assert out["step"].shape == () and float(out["step"]) == 0.0


def test_gradient_accepts_float0_from_allow_int():
    p = _params()
    g = jax.grad(lambda q: jnp.sum(q["dense"]["kernel"] ** 2), allow_int=True)(p)
    assert g["step"].dtype == jax.dtypes.float0
    s = S.gradient(g)
    np.testing.assert_array_equal(
        s["dense"]["kernel"], 2 * np.abs(np.asarray(p["dense"]["kernel"]))
    )
    assert s["step"].dtype == F32 and float(s["step"]) == 0.0
    np.testing.assert_array_equal(S.taylor(p, g)["step"], np.float32(0.0))


def test_pairwise_errors_name_the_path():
    p, g = _params(), _grads()
    bad = {**g, "dense": {**g["dense"], "kernel": jnp.ones((2, 3), F32)}}
    with pytest.raises(ValueError, match=r"grads at 'dense/kernel' has shape \(2, 3\).*\(3, 2\)"):
        S.taylor(p, bad)
    with pytest.raises(ValueError, match="paths only in params: \\['step'\\]"):
        S.movement(p, {"dense": g["dense"]})
    int_grad = {**g, "dense": {**g["dense"], "bias": jnp.array([1, 2], jnp.int32)}}
    with pytest.raises(TypeError, match="grads at 'dense/bias' has dtype int32"):
        S.taylor(p, int_grad)
    with pytest.raises(ValueError, match="hessian_diag at 'dense/bias'"):
        S.obd(p, {**g, "dense": {**g["dense"], "bias": jnp.ones(3, F32)}})
    with pytest.raises(TypeError, match="params at 'c' has complex dtype"):
        S.magnitude({"c": jnp.ones((2, 2), jnp.complex64)})


# ---------------------------------------------------------------------------
# Random scores
# ---------------------------------------------------------------------------


def test_random_deterministic_per_key_and_in_unit_interval():
    p = {"a": jnp.zeros((64, 32), F32), "b": jnp.zeros((5,), jnp.bfloat16), "n": jnp.array(3)}
    s1 = S.random(p, jax.random.key(0))
    s2 = S.random(p, jax.random.key(0))
    s3 = S.random(p, jax.random.key(1))
    chex.assert_trees_all_equal(s1, s2)
    a1, a3 = np.asarray(s1["a"]), np.asarray(s3["a"])
    assert a1.dtype == np.float32 and s1["b"].dtype == F32
    assert a1.min() >= 0.0 and a1.max() < 1.0
    assert not np.array_equal(a1, a3)
    assert len(np.unique(a1)) > 2000  # 2048 continuous draws, essentially all distinct
    assert abs(a1.mean() - 0.5) < 0.03  # mean of 2048 U[0,1): std 0.0064
    assert float(s1["n"]) == 0.0
    # Different leaves of one key are not the same stream.
    assert not np.array_equal(np.asarray(s1["b"]), a1.ravel()[:5])


def test_random_leaf_depends_only_on_its_path_not_on_other_leaves():
    key = jax.random.key(3)
    alone = S.random({"a": jnp.zeros((4, 4))}, key)["a"]
    with_more = S.random({"0": jnp.zeros(3), "a": jnp.zeros((4, 4)), "z": jnp.zeros(2)}, key)["a"]
    np.testing.assert_array_equal(alone, with_more)
    # Legacy uint32 keys work and give the same draws as the typed key of the same seed.
    legacy = S.random({"a": jnp.zeros((4, 4))}, jax.random.PRNGKey(3))["a"]
    np.testing.assert_array_equal(alone, legacy)


def test_random_vmaps_over_keys():
    p = {"w": jnp.zeros((3, 2))}
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(jax.vmap(lambda k: S.random(p, k)))(keys)
    for i in range(3):
        np.testing.assert_array_equal(batched["w"][i], S.random(p, keys[i])["w"])


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


# ---------------------------------------------------------------------------
# SNIP
# ---------------------------------------------------------------------------


def test_snip_sums_to_one_and_equals_normalised_taylor():
    p, batch = _params(), _batch()
    s = S.snip(_mean_loss, p, batch)
    g = jax.grad(_mean_loss, allow_int=True)(p, batch)
    t = S.taylor(p, g)
    total = sum(float(jnp.sum(x)) for x in jax.tree.leaves(t))
    assert total > 0
    chex.assert_trees_all_close(s, jax.tree.map(lambda x: x / total, t), rtol=1e-6)
    assert sum(float(jnp.sum(x)) for x in jax.tree.leaves(s)) == pytest.approx(1.0, abs=1e-6)
    assert float(s["step"]) == 0.0


def test_snip_all_zero_sensitivity_gives_zeros_not_nan():
    p = {"w": jnp.zeros((2, 2), F32)}
    s = S.snip(lambda q, b: jnp.sum(q["w"] * b), p, jnp.ones((2, 2), F32))
    np.testing.assert_array_equal(s["w"], np.zeros((2, 2), np.float32))


# ---------------------------------------------------------------------------
# Activation scores and neuron scores
# ---------------------------------------------------------------------------

# (batch=2, positions=2, channels=3) post-ReLU activations.
_ACTS = jnp.array([[[0.0, 1.0, 2.0], [0.0, 0.0, 4.0]], [[3.0, 0.0, 6.0], [0.0, 0.0, 0.5]]], F32)


def test_activation_mean_and_apoz_hand_computed():
    np.testing.assert_allclose(S.activation_mean(_ACTS), [0.75, 0.25, 3.125])
    np.testing.assert_array_equal(S.apoz(_ACTS), np.array([0.75, 0.75, 0.0], np.float32))
    np.testing.assert_array_equal(S.apoz_importance(_ACTS), np.array([0.25, 0.25, 1.0], np.float32))
    np.testing.assert_array_equal(
        S.apoz(_ACTS, threshold=0.5), np.array([0.75, 0.75, 0.25], np.float32)
    )
    # Channel axis 1 (e.g. NCHW): each of the two "channels" reduces over 6 entries.
    np.testing.assert_allclose(S.activation_mean(-_ACTS, axis=1), [12.0 / 6, 4.5 / 6])
    np.testing.assert_allclose(S.apoz(_ACTS, axis=1), [2 / 6, 4 / 6])


def test_activation_scores_on_pytree_of_layers():
    acts = {"layer1": _ACTS, "layer2": jnp.array([[1.0, -1.0], [0.0, 3.0]], F32)}
    m = S.activation_mean(acts)
    assert set(m) == {"layer1", "layer2"}
    np.testing.assert_allclose(m["layer2"], [0.5, 2.0])
    np.testing.assert_array_equal(S.apoz(acts)["layer2"], np.array([0.5, 0.0], np.float32))
    with pytest.raises(ValueError, match=r"axis 2 is out of range.*'layer2' of shape \(2, 2\)"):
        S.activation_mean(acts, axis=2)
    with pytest.raises(ValueError, match=r"activations at 'e' are empty \(shape \(0, 4\)\)"):
        S.apoz({"e": jnp.zeros((0, 4))})
    with pytest.raises(TypeError, match="axis must be an int"):
        S.apoz(_ACTS, axis=1.0)


def test_neuron_scores_shapes_and_values():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 2, 5)), "bias": jnp.zeros(5)},
        "dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)},
        "step": jnp.array(1),
    }
    conv_s = jnp.arange(5, dtype=F32)
    s = S.neuron_scores(
        params,
        {"conv/kernel": conv_s, "dense/kernel": jnp.array([[0.3, 0.1, 0.2]])},
        prunable=r"kernel$",
    )
    assert s["conv"]["kernel"].shape == (1, 1, 1, 5) and s["dense"]["kernel"].shape == (1, 3)
    np.testing.assert_array_equal(s["conv"]["kernel"].ravel(), np.arange(5, dtype=np.float32))
    np.testing.assert_allclose(s["dense"]["kernel"], [[0.3, 0.1, 0.2]])
    for leaf in (s["conv"]["bias"], s["dense"]["bias"], s["step"]):
        assert leaf.shape == () and leaf.dtype == F32 and float(leaf) == 0.0
    assert jax.tree.structure(s) == jax.tree.structure(params)
    # Composes with activation statistics.
    s2 = S.neuron_scores(params, {"dense/kernel": S.apoz_importance(_ACTS)})
    np.testing.assert_array_equal(s2["dense"]["kernel"], np.array([[0.25, 0.25, 1.0]], np.float32))


def test_neuron_scores_errors():
    params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}, "scale": jnp.ones(())}
    with pytest.raises(ValueError, match="'dense/kernal', which is not a parameter path"):
        S.neuron_scores(params, {"dense/kernal": jnp.ones(3)})
    with pytest.raises(
        ValueError, match=r"'dense/kernel' have shape \(4,\).*shape \(4, 3\) with 3 output units"
    ):
        S.neuron_scores(params, {"dense/kernel": jnp.ones(4)})
    with pytest.raises(ValueError, match=r"expected shape \(3,\) or \(1, 3\)"):
        S.neuron_scores(params, {"dense/kernel": jnp.ones((3, 1))})
    with pytest.raises(ValueError, match="'scale' is a scalar"):
        S.neuron_scores(params, {"scale": jnp.ones(1)})
    with pytest.raises(ValueError, match=r"prunable parameter 'dense/kernel' \(shape \(4, 3\)\)"):
        S.neuron_scores(params, {"dense/bias": jnp.ones(3)}, prunable=r"kernel$")
    with pytest.raises(ValueError, match="'dense/bias', which the prunable filter"):
        S.neuron_scores(
            params, {"dense/kernel": jnp.ones(3), "dense/bias": jnp.ones(3)}, prunable=r"kernel$"
        )


# ---------------------------------------------------------------------------
# check_finite
# ---------------------------------------------------------------------------


def test_check_finite_names_first_bad_path_and_counts():
    good = S.magnitude(_params())
    assert S.check_finite(good) is good
    bad = {
        "a": jnp.ones(3),
        "b": {"kernel": jnp.array([[jnp.nan, 1.0], [jnp.nan, jnp.inf]])},
        "c": jnp.array([jnp.nan]),
        "n": jnp.array([1, 2]),
    }
    with pytest.raises(
        ValueError,
        match=r"scores at 'b/kernel' has 2 NaN and 1 inf entries out of 4 \(shape \(2, 2\)\)",
    ):
        S.check_finite(bad)
    with pytest.raises(ValueError, match=r"hessian_diag at '<root>' has 0 NaN and 1 inf"):
        S.check_finite(jnp.array([1.0, -jnp.inf]), name="hessian_diag")
    # Produced scores carry the NaN through: obd of a NaN Hessian is caught.
    h = {"w": jnp.array([1.0, jnp.nan])}
    with pytest.raises(ValueError, match="scores at 'w' has 1 NaN"):
        S.check_finite(S.obd({"w": jnp.ones(2)}, h))


def test_check_finite_under_jit_cannot_raise_and_passes_values_through():
    x = {"w": jnp.array([jnp.nan, 2.0])}
    out = jax.jit(S.check_finite)(x)
    assert np.isnan(out["w"][0]) and float(out["w"][1]) == 2.0


# ---------------------------------------------------------------------------
# jit parity, NNX State, list/tuple pytrees
# ---------------------------------------------------------------------------

_UNIT = jnp.array([0.5, 2.0], F32)

_CASES = {
    "magnitude": lambda p, g, k, b: S.magnitude(p),
    "random": lambda p, g, k, b: S.random(p, k),
    "gradient": lambda p, g, k, b: S.gradient(g),
    "taylor": lambda p, g, k, b: S.taylor(p, g),
    "taylor_squared": lambda p, g, k, b: S.taylor(p, g, squared=True),
    "movement": lambda p, g, k, b: S.movement(p, g),
    "obd": lambda p, g, k, b: S.obd(p, g),
    "snip": lambda p, g, k, b: S.snip(_mean_loss, p, b),
    "hutchinson": lambda p, g, k, b: S.hessian_diag_hutchinson(
        _mean_loss, p, b, k, 12, chunk_size=5
    ),
    "exact_hessian": lambda p, g, k, b: S.exact_hessian_diag(_mean_loss, p, b, chunk_size=4),
    "fisher": lambda p, g, k, b: S.fisher_diag(_example_loss, p, b, chunk_size=2),
    "activation_mean": lambda p, g, k, b: S.activation_mean({"x": b["x"]}),
    "apoz": lambda p, g, k, b: S.apoz(jax.nn.relu(b["x"]), axis=0),
    "apoz_importance": lambda p, g, k, b: S.apoz_importance(jax.nn.relu(b["x"])),
    "neuron_scores": lambda p, g, k, b: S.neuron_scores(p, {"dense/kernel": g["dense"]["bias"]}),
}


@pytest.mark.parametrize("name", sorted(_CASES))
def test_jit_matches_eager(name):
    fn = _CASES[name]
    args = (_params(), _grads(), jax.random.key(4), _batch())
    eager = fn(*args)
    jitted = jax.jit(fn)(*args)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-7)
    assert all(x.dtype == F32 for x in jax.tree.leaves(jitted))
    if name in {"activation_mean", "apoz", "apoz_importance"}:
        return
    assert jax.tree.structure(jitted) == jax.tree.structure(args[0])
    for s, p in zip(jax.tree.leaves(jitted), jax.tree.leaves(args[0])):
        if name == "neuron_scores":
            assert s.shape == () or s.shape == (1, p.shape[-1])
        else:
            assert s.shape == p.shape


def test_nnx_state_of_linear_model():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    graphdef, state, rest = nnx.split(model, nnx.Param, ...)
    x = jnp.array([[1.0, 2.0, -1.0], [0.5, -3.0, 2.0], [0.0, 1.0, 1.0], [2.0, 0.0, -2.0]], F32)
    t = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -0.5]], F32)

    def loss(st, batch):
        y = nnx.merge(graphdef, st, rest)(batch[0])
        return 0.5 * jnp.mean(jnp.sum(jnp.square(y - batch[1]), axis=-1))

    kernel = np.asarray(state["kernel"].value)
    mag = S.magnitude(state)
    assert type(mag) is type(state)
    np.testing.assert_array_equal(mag["kernel"].value, np.abs(kernel))
    # For a linear least-squares loss the Hessian diagonal is mean(x_i^2) for W_ij, 1 for b_j.
    h = jax.jit(lambda st, b: S.exact_hessian_diag(loss, st, b))(state, (x, t))
    expected_kernel = np.repeat(np.mean(np.asarray(x) ** 2, 0)[:, None], 2, axis=1)
    np.testing.assert_allclose(h["kernel"].value, expected_kernel, rtol=1e-6)
    np.testing.assert_allclose(h["bias"].value, np.ones(2), rtol=1e-6)
    o = S.obd(state, h)
    np.testing.assert_allclose(o["kernel"].value, 0.5 * expected_kernel * kernel**2, rtol=1e-6)
    s = S.snip(loss, state, (x, t))
    assert sum(float(jnp.sum(v)) for v in jax.tree.leaves(s)) == pytest.approx(1.0, abs=1e-6)
    f = S.fisher_diag(lambda st, ex: loss(st, (ex[0][None], ex[1][None])), state, (x, t))
    assert f["kernel"].value.shape == (3, 2) and bool(jnp.all(f["kernel"].value >= 0))
    r = S.random(state, jax.random.key(0))
    assert r["kernel"].value.shape == (3, 2)


def test_list_and_tuple_pytrees():
    params = [
        jnp.array([[1.0, -2.0], [3.0, -4.0]], F32),
        (jnp.array([0.5, -0.5], F32), jnp.array(9)),
    ]
    grads = [jnp.array([[1.0, 1.0], [-1.0, 0.5]], F32), (jnp.array([2.0, 2.0], F32), jnp.array(0))]
    m = S.magnitude(params)
    assert isinstance(m, list) and isinstance(m[1], tuple)
    np.testing.assert_array_equal(m[0], np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
    np.testing.assert_array_equal(S.taylor(params, grads)[0], np.array([[1.0, 2.0], [3.0, 2.0]]))
    np.testing.assert_array_equal(S.movement(params, grads)[1][0], np.array([-1.0, 1.0]))
    assert float(S.obd(params, grads)[1][1]) == 0.0

    def loss(p, batch):
        return jnp.sum(batch * jnp.square(p[0])) + jnp.sum(jnp.square(p[1][0])) * p[1][1]

    coef = jnp.array([[1.0, 2.0], [3.0, 4.0]], F32)
    h = S.exact_hessian_diag(loss, params, coef)
    np.testing.assert_array_equal(h[0], 2 * np.asarray(coef))
    np.testing.assert_array_equal(h[1][0], np.full(2, 18.0, np.float32))
    assert float(h[1][1]) == 0.0
    # Diagonal Hessian: Hutchinson is exact with a single probe.
    hh = S.hessian_diag_hutchinson(loss, params, coef, jax.random.key(0), 1)
    chex.assert_trees_all_equal(hh, h)
    r = S.random(params, jax.random.key(1))
    assert isinstance(r, list) and r[0].shape == (2, 2) and float(r[1][1]) == 0.0


def test_sharded_params_and_vmapped_keys_give_the_same_scores(devices8):
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(devices8), ("x",))
    params = {"w": jnp.arange(32, dtype=F32).reshape(8, 4) / 7 - 2, "b": jnp.ones(4, F32)}
    grads = jax.tree.map(lambda x: jnp.cos(x), params)
    sharded = {
        "w": jax.device_put(params["w"], NamedSharding(mesh, PartitionSpec("x"))),
        "b": jax.device_put(params["b"], NamedSharding(mesh, PartitionSpec())),
    }
    key = jax.random.key(8)

    def loss(p, batch):
        return jnp.sum(jnp.square(batch @ p["w"] + p["b"][None, :])) + jnp.sum(p["w"] ** 4)

    batch = jnp.linspace(-1.0, 1.0, 16, dtype=F32).reshape(2, 8)

    def all_scores(p, g, k):
        return {
            "magnitude": S.magnitude(p),
            "random": S.random(p, k),
            "taylor": S.taylor(p, g),
            "hutchinson": S.hessian_diag_hutchinson(loss, p, batch, k, 4),
        }

    ref = jax.jit(all_scores)(params, grads, key)
    got = jax.jit(all_scores)(sharded, grads, key)
    chex.assert_trees_all_close(got, ref, rtol=1e-6)
    assert got["magnitude"]["w"].sharding.is_equivalent_to(sharded["w"].sharding, 2)
    # vmapped over a batch of seeds == one call per seed
    keys = jax.random.split(key, 2)
    batched = jax.vmap(lambda k: S.hessian_diag_hutchinson(loss, params, batch, k, 4))(keys)
    for i in range(2):
        single = S.hessian_diag_hutchinson(loss, params, batch, keys[i], 4)
        chex.assert_trees_all_close(jax.tree.map(lambda x, i=i: x[i], batched), single, rtol=1e-6)
