"""Every score jitted and eager, on NNX State, list / tuple pytrees and sharded params."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny_dense_case import batch as _batch
from tiny_dense_case import example_loss as _example_loss
from tiny_dense_case import grads as _grads
from tiny_dense_case import mean_loss as _mean_loss
from tiny_dense_case import params as _params

from sparsejax import scores as S

F32 = jnp.float32


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

    kernel = np.asarray(state["kernel"][...])
    mag = S.magnitude(state)
    assert type(mag) is type(state)
    np.testing.assert_array_equal(mag["kernel"][...], np.abs(kernel))
    # For a linear least-squares loss the Hessian diagonal is mean(x_i^2) for W_ij, 1 for b_j.
    h = jax.jit(lambda st, b: S.exact_hessian_diag(loss, st, b))(state, (x, t))
    expected_kernel = np.repeat(np.mean(np.asarray(x) ** 2, 0)[:, None], 2, axis=1)
    np.testing.assert_allclose(h["kernel"][...], expected_kernel, rtol=1e-6)
    np.testing.assert_allclose(h["bias"][...], np.ones(2), rtol=1e-6)
    o = S.obd(state, h)
    np.testing.assert_allclose(o["kernel"][...], 0.5 * expected_kernel * kernel**2, rtol=1e-6)
    s = S.snip(loss, state, (x, t))
    assert sum(float(jnp.sum(v)) for v in jax.tree.leaves(s)) == pytest.approx(1.0, abs=1e-6)
    f = S.fisher_diag(lambda st, ex: loss(st, (ex[0][None], ex[1][None])), state, (x, t))
    assert f["kernel"][...].shape == (3, 2) and bool(jnp.all(f["kernel"][...] >= 0))
    r = S.random(state, jax.random.key(0))
    assert r["kernel"][...].shape == (3, 2)


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
