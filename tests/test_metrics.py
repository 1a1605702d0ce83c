"""Tests of sparsejax.metrics: size, compression, traced FLOPs, classification metrics."""

from __future__ import annotations

import itertools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from sklearn import metrics as skm

from sparsejax import metrics
from sparsejax.masks import init_mask

# ----------------------------------------------------------------------------- size


def toy_params():
    return {
        "dense": {"kernel": jnp.arange(1.0, 13.0).reshape(3, 4), "bias": jnp.array([0.0, 1.0, 0.0, 2.0])},
        "conv": {"kernel": jnp.ones((3, 3, 2, 5))},
    }


def test_size_and_compression():
    params = toy_params()
    assert metrics.num_params(params) == 12 + 4 + 90
    # Biases with exact zeros count as zeros (ShrinkBench counts values).
    assert metrics.num_nonzero(params) == 12 + 2 + 90
    mask = init_mask(params)
    mask["dense"]["kernel"] = jnp.arange(12).reshape(3, 4) < 3  # keep 3 of 12
    mask["conv"]["kernel"] = jnp.array([True, False, False, False, True]).reshape(1, 1, 1, 5)  # 2 filters
    assert metrics.num_nonzero(params, mask) == 3 + 2 + 2 * 18
    assert metrics.compression_ratio(params, mask) == pytest.approx(106 / 41)
    assert metrics.compression_ratio(params) == pytest.approx(106 / 104)
    # Restricted to the kernels.
    assert metrics.num_params(params, prunable=r"kernel") == 102
    assert metrics.compression_ratio(params, mask, prunable=r"kernel") == pytest.approx(102 / 39)
    zero = jax.tree.map(lambda m: jnp.zeros_like(m, bool), mask)
    assert metrics.compression_ratio(params, zero) == float("inf")
    with pytest.raises(ValueError, match="prunable pattern 'kernal' matches no parameter path"):
        metrics.num_params(params, prunable="kernal")


# ----------------------------------------------------------------------------- FLOPs


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
    carries = metrics._scan_num_carry(scan_eqn.outvars, scan_eqn.params["jaxpr"].jaxpr.outvars)
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


# ----------------------------------------------------------------------------- classification


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


# ----------------------------------------------------------------------------- trade-off


def test_pareto_front():
    # (compression, accuracy): point 3 is dominated by 1, point 4 duplicates 0, 5 ties 2 in x.
    xs = [1.0, 2.0, 10.0, 2.0, 1.0, 10.0, 50.0]
    ys = [0.99, 0.98, 0.90, 0.97, 0.99, 0.85, 0.10]
    assert metrics.pareto_front(xs, ys) == [0, 1, 2, 6]
    assert metrics.pareto_front([], []) == []
    with pytest.raises(ValueError, match="NaN coordinate at index 1"):
        metrics.pareto_front([1.0, float("nan")], [0.5, 0.4])
    with pytest.raises(ValueError, match="equal length"):
        metrics.pareto_front([1.0, 2.0], [0.5])
