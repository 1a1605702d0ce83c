"""Elementwise scores: closed forms, random scores, SNIP."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_dense_case import batch as _batch
from tiny_dense_case import grads as _grads
from tiny_dense_case import mean_loss as _mean_loss
from tiny_dense_case import params as _params

from sparsejax import scores as S

F32 = jnp.float32


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
