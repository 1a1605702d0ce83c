"""FLOPs counted by tracing: MLP, conv nets, Linen, loops, remat, tied weights."""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from sparsejax import metrics
from sparsejax.masks import init_mask
from sparsejax.metrics._flops import _scan_num_carry


class MLP(nnx.Module):
    def __init__(self, sizes, rngs):
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)]
        )

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = nnx.relu(x)
        return x


class ConvNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), padding="SAME", rngs=rngs)
        self.head = nnx.Linear(8 * 8 * 4, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv(x))
        return self.head(x.reshape(x.shape[0], -1))


def nnx_apply(model):
    graphdef, state = nnx.split(model, nnx.Param)
    return (lambda st, x: nnx.merge(graphdef, st)(x)), state


@pytest.fixture(scope="module")
def mlp():
    """NNX MLP 784-300-10 as (apply_fn, params state); initialised once (init compiles)."""
    return nnx_apply(MLP([784, 300, 10], nnx.Rngs(0)))


@pytest.fixture(scope="module")
def convnet():
    return nnx_apply(ConvNet(nnx.Rngs(0)))


def half_mask(params):
    """Unstructured mask keeping the first half (row-major) of every kernel."""
    def leaf(p):
        if p.ndim < 2:
            return jnp.ones((), bool)
        return (jnp.arange(p.size) < p.size // 2).reshape(p.shape)
    return jax.tree.map(leaf, params)


def test_flops_mlp_784_300_10(mlp):
    apply, state = mlp
    report = metrics.flops(apply, state, jnp.ones((1, 784)))
    rows = report.by_path()
    assert list(rows) == ["layers/0/kernel", "layers/1/kernel"]
    assert rows["layers/0/kernel"].flops == 784 * 300
    assert rows["layers/1/kernel"].flops == 300 * 10
    assert report.total_flops == 238_200
    assert report.nonzero_flops == 238_200.0 and report.theoretical_speedup == 1.0
    # The FLOPs of a batch scale with it.
    assert metrics.flops(apply, state, jnp.ones((4, 784))).total_flops == 4 * 238_200
    # A 50 % mask halves every layer's nonzero FLOPs: speedup 2.
    masked = metrics.flops(apply, state, jnp.ones((1, 784)), mask=half_mask(state))
    assert masked.total_flops == 238_200
    assert masked.nonzero_flops == 119_100.0
    assert masked.theoretical_speedup == 2.0
    assert masked.by_path()["layers/0/kernel"].density == 0.5
    # Masking only the first layer (90 %): 0.1 · 235,200 + 3,000.
    mask = init_mask(state)
    kernel_mask = mask["layers"][0]["kernel"]  # an nnx.Param leaf: replace its value
    mask["layers"][0]["kernel"] = kernel_mask.replace(jnp.arange(784 * 300).reshape(784, 300) < 23_520)
    one = metrics.flops(apply, state, jnp.ones((1, 784)), mask=mask)
    assert one.nonzero_flops == pytest.approx(23_520 + 3_000)
    table = metrics.format_flops(one)
    assert "| layers/0/kernel | 235,200 | 10.00% | 23,520 |" in table
    assert "| **total** | 238,200 | | 26,520 |" in table


def test_flops_without_mask_use_nonzero_weights(mlp):
    apply, state = mlp
    zeroed = jax.tree.map(lambda p: p, state)  # a new State; the fixture's stays intact
    kernel = zeroed["layers"][0]["kernel"]
    zeroed["layers"][0]["kernel"] = kernel.replace(kernel[...].at[:392].set(0.0))
    report = metrics.flops(apply, zeroed, jnp.ones((1, 784)))
    assert report.total_flops == 238_200 and report.nonzero_flops == 117_600 + 3_000
    assert metrics.flops(apply, state, jnp.ones((1, 784))).nonzero_flops == 238_200


def test_flops_conv_net(convnet):
    apply, state = convnet
    report = metrics.flops(apply, state, jnp.ones((1, 8, 8, 1)))
    rows = report.by_path()
    assert rows["conv/kernel"].flops == 8 * 8 * 9 * 1 * 4  # 2,304: SAME padding taps counted
    assert rows["head/kernel"].flops == 256 * 10
    masked = metrics.flops(apply, state, jnp.ones((1, 8, 8, 1)), mask=half_mask(state))
    assert masked.nonzero_flops == (2304 + 2560) / 2
    # Filter (structured) mask: 1 of 4 filters kept → a quarter of the conv FLOPs.
    mask = init_mask(state)
    mask["conv"]["kernel"] = mask["conv"]["kernel"].replace(
        jnp.array([False, True, False, False]).reshape(1, 1, 1, 4)
    )
    filt = metrics.flops(apply, state, jnp.ones((1, 8, 8, 1)), mask=mask)
    assert filt.by_path()["conv/kernel"].nonzero_flops == 2304 / 4


def test_flops_conv_variants():
    x = jnp.ones((2, 8, 8, 4))

    def strided(p, x):
        return jax.lax.conv_general_dilated(x, p["w"], (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    w = {"w": jnp.ones((3, 3, 4, 6))}
    # Output 2 × 3 × 3 × 6, each a 3·3·4 window.
    assert metrics.flops(strided, w, x).total_flops == 2 * 3 * 3 * 6 * 36

    def grouped(p, x):
        return jax.lax.conv_general_dilated(
            x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2
        )

    g = {"w": jnp.ones((3, 3, 2, 8))}  # 4 inputs in 2 groups of 2 → 8 outputs
    assert metrics.flops(grouped, g, x).total_flops == 2 * 8 * 8 * 8 * (3 * 3 * 2)


def test_flops_linen_and_plain_jax():
    model = nn.Sequential([nn.Dense(5), nn.relu, nn.Dense(3)])
    variables = model.init(jax.random.key(0), jnp.ones((1, 7)))
    report = metrics.flops(model.apply, variables, jnp.ones((1, 7)))
    assert {r.path: r.flops for r in report.rows} == {
        "params/layers_0/kernel": 35,
        "params/layers_2/kernel": 15,
    }

    # Weights reached through transpose / cast / where(mask) / jit, kernel on the left.
    const_mask = jnp.arange(12).reshape(4, 3) % 2 == 0

    @jax.jit
    def f(p, x):
        h = x @ p["a"].T.astype(jnp.bfloat16).astype(jnp.float32)  # (2,3) @ (3,4)
        h = h @ jnp.where(const_mask, p["b"], 0.0)  # (2,4) @ (4,3)
        return (p["c"] @ h.T).sum()  # (5,3) @ (3,2): kernel on the left

    p = {"a": jnp.ones((4, 3)), "b": jnp.ones((4, 3)), "c": jnp.ones((5, 3))}
    rows = metrics.flops(f, p, jnp.ones((2, 3))).by_path()
    assert {k: r.flops for k, r in rows.items()} == {"a": 24, "b": 24, "c": 30}


def test_flops_loops_remat_and_activation_products():
    def f(p, x):
        body = jax.checkpoint(lambda h: jnp.tanh(h @ p["w"]))
        h = jax.lax.fori_loop(0, 5, lambda i, h: body(h), x)  # static bounds → scan
        attn = h @ h.T  # no parameter operand
        return jax.lax.cond(attn.sum() > 0, lambda a: a @ p["v"], lambda a: a, attn)  # (3,3)@(3,3)

    p = {"w": jnp.ones((4, 4)), "v": jnp.ones((3, 3))}
    report = metrics.flops(f, p, jnp.ones((3, 4)))
    rows = report.by_path()
    assert rows["w"].flops == 5 * 3 * 4 * 4
    assert rows["v"].flops == 3 * 3 * 3  # the costlier cond branch
    assert rows[metrics.NO_PARAMETER].flops == 3 * 3 * 4
    assert [r.path for r in report.rows][-1] == metrics.NO_PARAMETER

    def scanned(p, x):  # stacked layer weights scanned over
        return jax.lax.scan(lambda h, w: (h @ w, None), x, p["stack"])[0]

    stacked = {"stack": jnp.ones((6, 4, 4))}
    assert metrics.flops(scanned, stacked, jnp.ones((2, 4))).by_path()["stack"].flops == 6 * 2 * 16

    def carried(p, x):  # the weight rides the carry; the products are stacked ys
        w, ys = jax.lax.scan(lambda w, xi: (w.T.T, xi @ w), p["w"], x)
        return ys.sum() + (x[0] @ w).sum()  # w after the loop is still p["w"]

    rows = metrics.flops(carried, {"w": jnp.ones((4, 4))}, jnp.ones((5, 3, 4))).by_path()
    assert rows["w"].flops == 5 * 48 + 48 and metrics.NO_PARAMETER not in rows
    eqns = jax.make_jaxpr(carried)({"w": jnp.ones((4, 4))}, jnp.ones((5, 3, 4))).eqns
    scan_eqn = next(e for e in eqns if e.primitive.name == "scan")
    carries = _scan_num_carry(scan_eqn.outvars, scan_eqn.params["jaxpr"].jaxpr.outvars)
    assert carries == scan_eqn.params.get("num_carry", 1) == 1  # jax >= 0.11 drops num_carry

    def dynamic(p, x):
        return jax.lax.while_loop(lambda h: h.sum() < 100, lambda h: h @ p["w"], x)

    with pytest.raises(ValueError, match="while_loop contains matrix products"):
        metrics.flops(dynamic, p, jnp.ones((3, 4)))


def test_flops_tied_weights_aggregate():
    def f(p, tokens):
        h = p["embed"][tokens]  # gather: no FLOPs
        return h @ p["embed"].T  # tied output projection (vocab 11, dim 4)

    rows = metrics.flops(f, {"embed": jnp.ones((11, 4))}, jnp.zeros((2,), jnp.int32)).rows
    assert [(r.path, r.flops) for r in rows] == [("embed", 2 * 4 * 11)]


def test_flops_of_an_nnx_model_directly(mlp):
    """flops(model, x) for NNX, without split/merge lambdas; the mask mirrors its Params."""
    model = MLP([784, 300, 10], nnx.Rngs(0))
    report = metrics.flops(model, jnp.ones((1, 784)))
    apply, state = mlp
    assert report == metrics.flops(apply, state, jnp.ones((1, 784)))
    assert report.total_flops == 238_200
    params = nnx.state(model, nnx.Param)
    masked = metrics.flops(model, jnp.ones((1, 784)), mask=half_mask(params))
    assert masked.nonzero_flops == 119_100.0
    bn = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)),
                        nnx.BatchNorm(8, rngs=nnx.Rngs(0)), nnx.Linear(8, 2, rngs=nnx.Rngs(0)))
    assert metrics.flops(bn, jnp.ones((3, 4))).total_flops == 3 * (4 * 8 + 8 * 2)
    with pytest.raises(TypeError, match="params is required"):
        metrics.flops(lambda p, x: x)
