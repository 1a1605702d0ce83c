"""Dynamic gating (FBS, hard-concrete L0), adaptive density and the gathered fast path."""

import importlib.util
import math
import pathlib
import re
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from sparsejax import dynamic as dy
from sparsejax import metrics
from sparsejax.models import MNIST1DCNN, LeNet5
from sparsejax.train import create_train_state

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _mnist1d(gate="fbs", seed=0):
    return dy.GatedMNIST1DCNN(gate=gate, rngs=nnx.Rngs(seed))


def _random_predictors(model, key, scale=1.0):
    """Give the predictors random weights so that the gates depend on the input."""
    for i, name in enumerate(model.gated_layers):
        layer = getattr(model, name)
        k = jax.random.fold_in(key, i)
        layer.gate.kernel[...] = scale * jax.random.normal(k, layer.gate.kernel.shape)
    return model


# --------------------------------------------------------------------------- density and top-k


def test_num_active_closed_form_and_traced_agree():
    assert dy.num_active(0.25, 20) == 5
    assert dy.num_active(0.5, 25) == 13  # floor(12.5 + 0.5)
    assert dy.num_active(0.3, 25) == 8  # floor(7.5 + 0.5)
    assert dy.num_active(0.01, 20) == 1  # at least one channel
    assert dy.num_active(1.0, 500) == 500
    ds = np.linspace(0.005, 1.0, 200)
    for c in (1, 20, 25, 50, 500):
        traced = jax.jit(dy.active_count, static_argnums=1)(jnp.asarray(ds, jnp.float32), c)
        assert traced.tolist() == [dy.num_active(float(np.float32(d)), c) for d in ds]


@pytest.mark.parametrize("jit", [False, True])
@given(
    scores=st.lists(st.integers(-3, 3), min_size=6, max_size=6).map(np.float32),
    k=st.integers(1, 6),
)
def test_topk_mask_exactly_k_ties_to_lower_index(jit, scores, k):
    f = jax.jit(dy.topk_mask) if jit else dy.topk_mask
    mask = np.asarray(f(jnp.asarray(scores), k))
    assert mask.sum() == k
    # reference: stable descending order
    order = sorted(range(6), key=lambda i: (-scores[i], i))
    assert set(np.flatnonzero(mask)) == set(order[:k])


def test_topk_mask_per_row_k_is_traced():
    scores = jnp.asarray([[0.0, 3.0, 1.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    f = jax.jit(dy.topk_mask)
    assert f(scores, jnp.asarray([1, 3])).tolist() == [
        [False, True, False, False],
        [True, True, True, False],
    ]
    assert f(scores, 2).sum(-1).tolist() == [2, 2]


# --------------------------------------------------------------------------- gates


@pytest.mark.parametrize("gate", dy.GATE_KINDS)
def test_gate_selects_exactly_k_channels_per_input(gate):
    model = _mnist1d(gate)
    x = jax.random.normal(jax.random.key(1), (5, 40))
    graphdef, state = nnx.split(model)

    def counts(state, x, d):
        _, gates = nnx.merge(graphdef, state).with_gates(x, d)
        return dy.active_counts(gates)

    f = jax.jit(counts)
    for d, k in ((1.0, 25), (0.5, 13), (0.25, 6), (0.04, 1)):
        for layer, c in f(state, x, d).items():
            assert c.tolist() == [k] * 5, (layer, d)
    # per-example densities: one k per example
    d = jnp.asarray([0.04, 0.25, 0.5, 0.75, 1.0])
    assert f(state, x, d)["conv2"].tolist() == [1, 6, 13, 19, 25]
    # the selected channels depend on the input
    _random_predictors(model, jax.random.key(2))
    _, gates = jax.jit(lambda s, x: nnx.merge(graphdef, s).with_gates(x, 0.25))(
        nnx.state(model), x)
    chosen = {tuple(np.flatnonzero(row)) for row in np.asarray(gates["conv3"].values)}
    assert len(chosen) > 1


def test_skipped_channels_output_exactly_zero():
    graphdef, state = nnx.split(dy.GatedConv(3, 8, (3, 3), rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 3))
    y, gate = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, 0.5))(state, x)
    off = np.asarray(gate.values) == 0
    assert off.sum() == 2 * 4
    assert np.all(np.asarray(y).transpose(0, 3, 1, 2)[off] == 0.0)


# --------------------------------------------------------------------------- hard concrete


def test_hard_concrete_constants_are_the_papers():
    assert (dy.BETA, dy.GAMMA, dy.ZETA) == (2.0 / 3.0, -0.1, 1.1)


@pytest.mark.parametrize("jit", [False, True])
def test_expected_l0_closed_form_and_monte_carlo(jit):
    la = jnp.asarray([-3.0, -1.0, 0.0, 0.5, 2.0])
    f = jax.jit(dy.expected_l0) if jit else dy.expected_l0
    closed = 1.0 / (1.0 + np.exp(-(np.asarray(la) - (2 / 3) * np.log(0.1 / 1.1))))
    np.testing.assert_allclose(f(la), closed, rtol=1e-6)
    assert float(f(jnp.float32(0.0))) == pytest.approx(1 / (1 + 11 ** (-2 / 3)), rel=1e-6)
    # P(z != 0) of the sampler matches the closed form (200k draws: std < 0.0012)
    sample = jax.jit(dy.hard_concrete_sample) if jit else dy.hard_concrete_sample
    z = sample(jnp.broadcast_to(la, (200_000, 5)), jax.random.key(0))
    assert float(z.min()) == 0.0 and float(z.max()) == 1.0  # hard: exact 0 and 1 occur
    np.testing.assert_allclose(np.mean(np.asarray(z) > 0, axis=0), closed, atol=0.005)
    # test-time gate: clip(sigmoid(log a) * 1.2 - 0.1, 0, 1)
    np.testing.assert_allclose(
        dy.hard_concrete_mean(jnp.asarray([-10.0, 0.0, 10.0])), [0.0, 0.5, 1.0], atol=1e-6
    )


@pytest.mark.parametrize("jit", [False, True])
def test_gate_penalty_equals_closed_form(jit):
    model = _random_predictors(_mnist1d("hard_concrete"), jax.random.key(3))
    x = jax.random.normal(jax.random.key(1), (4, 40))
    _, gates = model.with_gates(x, 0.5)
    f = jax.jit(dy.gate_penalty, static_argnums=1) if jit else dy.gate_penalty
    expected = np.mean([
        np.mean(1 / (1 + np.exp(-(np.asarray(g.logits) - (2 / 3) * np.log(1 / 11)))))
        for g in gates.values()
    ])
    assert float(f(gates, "hard_concrete")) == pytest.approx(expected, rel=1e-5)
    expected_l1 = np.mean([np.mean(np.maximum(np.asarray(g.logits), 0)) for g in gates.values()])
    assert float(f(gates, "fbs")) == pytest.approx(expected_l1, rel=1e-5)


# --------------------------------------------------------------------------- gathered path


@pytest.fixture(autouse=True)
def _full_float32():
    # Gathered and masked paths agree to 1e-5 in float32; on GPUs JAX's default precision
    # lets convolutions run in TF32 (~1e-4 apart), so every comparison here is float32.
    with jax.default_matmul_precision("highest"):
        yield


def _masked(graphdef):
    return jax.jit(lambda s, x, d: nnx.merge(graphdef, s)(x, d))


@pytest.mark.parametrize("gate", dy.GATE_KINDS)
def test_gathered_equals_masked_mnist1d(gate):
    model = _random_predictors(_mnist1d(gate), jax.random.key(4), scale=0.5)
    graphdef, state = nnx.split(model)
    masked = _masked(graphdef)
    for batch, densities in ((1, (0.25,)), (3, (1.0, 0.6, 0.04))):
        x = jax.random.normal(jax.random.key(5), (batch, 40))
        for d in densities:
            fast = dy.apply_gathered(graphdef, state, x, model.active_k(d))
            chex.assert_trees_all_close(fast, masked(state, x, d), atol=1e-5, rtol=1e-5)
    if gate == "fbs":  # not jitted: the masked path eagerly gives the same logits
        x = jax.random.normal(jax.random.key(5), (1, 40))
        chex.assert_trees_all_close(
            model(x, 0.25), dy.apply_gathered(graphdef, state, x, model.active_k(0.25)),
            atol=1e-5,
        )


@pytest.mark.parametrize("gate", dy.GATE_KINDS)
@pytest.mark.parametrize("jit", [False, True])
def test_gathered_selection_matches_topk_mask_with_ties_and_signed_zeros(gate, jit):
    # Ties go to the lower channel index and -0.0 ties with 0.0 on both paths; FBS scores
    # are relu(logits), so every negative logit ties at 0.
    logits = jnp.asarray([0.5, -0.0, 0.0, 2.0, 0.5, -1.0, 0.0, 2.0, -3.0, 0.5], jnp.float32)
    scores = jax.nn.relu(logits) if gate == "fbs" else logits
    select = jax.jit(dy._gathered_select, static_argnums=(0, 2)) if jit else dy._gathered_select
    for k in range(1, logits.size + 1):
        idx, values = select(gate, logits, k)
        expected = np.flatnonzero(np.asarray(dy.topk_mask(scores, k)))
        np.testing.assert_array_equal(np.asarray(idx), expected)
        assert idx.shape == (k,) and values.shape == (k,)
    # By hand: the two 2.0s and the first 0.5s, then the zeros from the lowest index; FBS's
    # relu ties channels 5 and 8 (negative logits) with the zeros.
    np.testing.assert_array_equal(np.asarray(select(gate, logits, 6)[0]), [0, 1, 3, 4, 7, 9])
    want = [0, 1, 2, 3, 4, 5, 7, 9] if gate == "fbs" else [0, 1, 2, 3, 4, 6, 7, 9]
    np.testing.assert_array_equal(np.asarray(select(gate, logits, 8)[0]), want)


def test_gathered_equals_masked_lenet5_and_fc1_is_gated():
    model = _random_predictors(dy.GatedLeNet5(rngs=nnx.Rngs(0)), jax.random.key(6), scale=0.2)
    x = jax.random.normal(jax.random.key(7), (2, 28, 28, 1))
    graphdef, state = nnx.split(model)
    logits, gates = jax.jit(lambda s, x: nnx.merge(graphdef, s).with_gates(x, 0.3))(state, x)
    assert logits.shape == (2, 10)
    assert {n: c.tolist() for n, c in dy.active_counts(gates).items()} == {
        "conv1": [6, 6], "conv2": [15, 15], "fc1": [150, 150]
    }
    frac = dy.active_fraction(gates)
    np.testing.assert_allclose(frac["fc1"], [0.3, 0.3], rtol=1e-6)
    np.testing.assert_allclose(frac["conv1"], [0.3, 0.3], rtol=1e-6)
    fast = dy.apply_gathered(graphdef, state, x, model.active_k(0.3))
    chex.assert_trees_all_close(fast, logits, atol=1e-5, rtol=1e-5)


TRACES = {"gathered": 0, "masked": 0}


class _CountingCNN(dy.GatedMNIST1DCNN):
    def gathered_one(self, x, ks):
        TRACES["gathered"] += 1  # Python side effect: runs once per trace
        return super().gathered_one(x, ks)

    def with_gates(self, x, density=1.0, *, key=None):
        TRACES["masked"] += 1
        return super().with_gates(x, density, key=key)


def test_density_changes_retrace_only_per_distinct_k():
    model = _CountingCNN(rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    x = jnp.ones((1, 40))
    TRACES.update(gathered=0, masked=0)
    # 0.5, 0.51, 0.52 all give k = 13 on 25 channels: one compilation
    for d in (0.5, 0.51, 0.52, 0.5):
        assert model.active_k(d) == (13, 13, 13)
        dy.apply_gathered(graphdef, state, x, model.active_k(d))
    assert TRACES["gathered"] == 1
    dy.apply_gathered(graphdef, state, x, model.active_k(0.3))  # k = 8: second compilation
    dy.apply_gathered(graphdef, state, x, model.active_k(0.31))  # k = 8 again
    assert TRACES["gathered"] == 2
    # the masked path takes the density as a traced argument: one trace for any density
    masked = jax.jit(lambda s, x, d: nnx.merge(graphdef, s)(x, d))
    for d in (0.1, 0.5, 0.77, 1.0):
        masked(state, x, jnp.float32(d))
    assert TRACES["masked"] == 1



def test_make_gathered_equals_apply_gathered_and_traces_once():
    model = _CountingCNN(rngs=nnx.Rngs(0))
    _random_predictors(model, jax.random.key(8), scale=0.5)
    graphdef, state = nnx.split(model)
    x = jax.random.normal(jax.random.key(9), (3, 40))
    ks = model.active_k(0.4)
    f = dy.make_gathered(graphdef, list(ks))  # any sequence of ints
    TRACES.update(gathered=0)
    out = f(state, x)
    for _ in range(3):
        f(state, x + 1.0)
    assert TRACES["gathered"] == 1
    chex.assert_trees_all_close(out, dy.apply_gathered(graphdef, state, x, ks), atol=1e-6)
    masked = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, 0.4))(state, x)
    chex.assert_trees_all_close(out, masked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ks, bad", [((3, 0, 3), "ks[1]"), ((3, 2.5, 3), "ks[1]"),
                                     ((True, 3, 3), "ks[0]")])
def test_make_gathered_rejects_bad_ks(ks, bad):
    graphdef, _ = nnx.split(dy.GatedMNIST1DCNN(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=re.escape(bad) + " must be a positive int"):
        dy.make_gathered(graphdef, ks)


# --------------------------------------------------------------------------- FLOPs


def test_dense_flops_match_metrics_flops_of_zoo_models():
    cnn = MNIST1DCNN(rngs=nnx.Rngs(0))
    lenet = LeNet5(rngs=nnx.Rngs(0))
    for zoo, gated, x in (
        (cnn, _mnist1d(), jnp.ones((1, 40))),
        (lenet, dy.GatedLeNet5(rngs=nnx.Rngs(0)), jnp.ones((1, 28, 28, 1))),
    ):
        graphdef = nnx.graphdef(zoo)
        report = metrics.flops(lambda p, x, g=graphdef: nnx.merge(g, p)(x), nnx.state(zoo), x)
        assert dy.dense_flops(gated.costs) == report.total_flops
    assert dy.dense_flops(_mnist1d().costs) == 31_750
    assert dy.dense_flops(dy.GatedLeNet5(rngs=nnx.Rngs(0)).costs) == 2_293_000


def test_effective_flops_closed_form():
    model = _mnist1d()
    _, gates = model.with_gates(jnp.ones((2, 40)), 0.5)  # k = 13 in every layer
    flops = dy.effective_flops(model.costs, dy.active_counts(gates))
    # conv1 19*5*1*13 + conv2 10*3*13*13 + conv3 5*3*13*13 + linear 5*13*10
    layers = 1235 + 5070 + 2535 + 650
    predictors = 1 * 25 + 13 * 25 + 13 * 25
    assert flops.tolist() == [layers + predictors] * 2
    no_pred = dy.effective_flops(model.costs, dy.active_counts(gates), include_predictor=False)
    assert no_pred.tolist() == [layers] * 2
    with pytest.raises(ValueError, match="'conv2'"):
        dy.effective_flops(model.costs, {"conv1": 3, "conv3": 3})


# --------------------------------------------------------------------------- adaptive policy


def test_adaptive_select_escalates_below_threshold():
    sure = jnp.asarray([10.0, 0.0, 0.0])  # max softmax ~ 1
    unsure = jnp.asarray([0.1, 0.0, 0.0])  # max softmax ~ 0.35
    logits = jnp.stack([
        jnp.stack([sure, unsure, unsure]),  # level 0
        jnp.stack([sure, sure, unsure]),  # level 1
        jnp.stack([sure, sure, sure * 2]),  # level 2
    ])
    flops = jnp.asarray([10.0, 30.0, 100.0])
    res = jax.jit(dy.adaptive_select)(logits, flops, 0.9)
    assert res.level.tolist() == [0, 1, 2]
    assert res.flops.tolist() == [10.0, 40.0, 140.0]  # failed runs are paid for
    chex.assert_trees_all_close(res.logits[2], sure * 2)
    assert dy.adaptive_select(logits, flops, 0.0).flops.tolist() == [10.0] * 3
    assert dy.adaptive_select(logits, flops, 1.0).level.tolist() == [2, 2, 2]
    # a saturated float32 softmax (exactly 1.0) still escalates at threshold 1, jitted too
    saturated = jnp.asarray([[[20.0, 0.0]], [[0.0, 1.0]]])
    assert float(jnp.max(jax.nn.softmax(saturated[0]))) == 1.0
    for select in (dy.adaptive_select, jax.jit(dy.adaptive_select)):
        assert select(saturated, jnp.asarray([1.0, 2.0]), 1.0).level.tolist() == [1]
        assert select(saturated, jnp.asarray([1.0, 2.0]), 0.99).level.tolist() == [0]
    with pytest.raises(ValueError, match="1.5"):
        dy.adaptive_select(logits, flops, 1.5)


def test_adaptive_predict_matches_runs_at_each_density():
    model = _random_predictors(_mnist1d(), jax.random.key(8))
    x = jax.random.normal(jax.random.key(9), (6, 40))
    res = dy.adaptive_predict(model, x, (0.25, 1.0), threshold=0.5)
    graphdef = nnx.graphdef(model)

    @jax.jit
    def run(state, d):
        logits, gates = nnx.merge(graphdef, state).with_gates(x, d)
        return logits, dy.effective_flops(model.costs, dy.active_counts(gates))

    (lo, f_lo), (hi, f_hi) = run(nnx.state(model), 0.25), run(nnx.state(model), 1.0)
    conf = np.max(np.asarray(jax.nn.softmax(lo)), -1)
    expect_level = (conf < 0.5).astype(int)
    assert res.level.tolist() == expect_level.tolist()
    np.testing.assert_allclose(res.flops, f_lo + expect_level * f_hi)
    np.testing.assert_allclose(res.logits, np.where(expect_level[:, None], hi, lo), atol=1e-6)
    with pytest.raises(ValueError, match="increasing"):
        dy.adaptive_predict(model, x, (0.5, 0.25), 0.5)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.25, float("nan")])
def test_bad_density_raises_naming_the_value(bad):
    model = _mnist1d()
    x = jnp.ones((2, 40))
    text = "nan" if math.isnan(bad) else str(bad)
    with pytest.raises(ValueError, match=rf"density must be in \(0, 1\], got {text}"):
        model(x, bad)
    with pytest.raises(ValueError, match=text):
        dy.num_active(bad, 10)
    with pytest.raises(ValueError, match=text):
        model.active_k(bad)
    with pytest.raises(ValueError, match=text):
        dy.gated_predictions(model, x, bad)
    with pytest.raises(ValueError, match=f"min_density.*{text}"):
        dy.make_gated_train_step(min_density=bad)
    with pytest.raises(ValueError, match=text):
        model(x, jnp.asarray([0.5, bad]))  # a per-example array is checked entry by entry


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(TypeError, match="True"):
        dy.check_density(True)
    with pytest.raises(ValueError, match="'l1'"):
        dy.GatedConv(2, 4, (3,), gate="l1", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="in_channels=7 must divide in_features=20"):
        dy.GatedLinear(20, 4, in_channels=7, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch,\) = \(2,\)"):
        _mnist1d()(jnp.ones((2, 40)), jnp.asarray([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="penalty"):
        dy.make_gated_train_step(penalty=-1.0)
    gated = dy.GatedLeNet5(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="shape mismatch at 'conv1/kernel'"):
        dy.load_dense_params(gated, nnx.state(LeNet5((28, 28, 3), rngs=nnx.Rngs(0)), nnx.Param))


# --------------------------------------------------------------------------- zoo compatibility


@pytest.mark.parametrize("which", ["lenet5", "mnist1d"])
def test_dense_weights_load_and_reproduce_the_zoo_model(which):
    if which == "lenet5":
        zoo, gated = LeNet5(rngs=nnx.Rngs(5)), dy.GatedLeNet5(rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    else:
        zoo, gated = MNIST1DCNN(rngs=nnx.Rngs(5)), _mnist1d()
        x = jax.random.normal(jax.random.key(1), (2, 40))
    dy.load_dense_params(gated, nnx.state(zoo, nnx.Param))
    for name in gated.gated_layers:  # FBS saliency = relu(0 + 1) = 1: every gate open at 1.0
        layer = getattr(gated, name)
        layer.gate.kernel[...] = jnp.zeros_like(layer.gate.kernel[...])
    gd, zd = nnx.graphdef(gated), nnx.graphdef(zoo)
    out_gated = jax.jit(lambda s, x: nnx.merge(gd, s)(x, 1.0))(nnx.state(gated), x)
    out_zoo = jax.jit(lambda s, x: nnx.merge(zd, s)(x))(nnx.state(zoo), x)
    chex.assert_trees_all_close(out_gated, out_zoo, atol=1e-6)


@pytest.mark.parametrize("gate", ["hard_concrete", "fbs"])
def test_gates_from_filters_start_at_static_l1_filter_pruning(gate):
    # After init_gates_from_filters every input selects, at every density, the channels
    # that L1-norm filter pruning keeps; hard-concrete gates are then exactly 1, so the
    # gated model computes the statically pruned zoo model.
    zoo, gated = LeNet5(rngs=nnx.Rngs(5)), dy.GatedLeNet5(gate=gate, rngs=nnx.Rngs(0))
    dy.load_dense_params(gated, nnx.state(zoo, nnx.Param))
    dy.init_gates_from_filters(gated)
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
    for d in (0.25, 0.5, 0.9):
        pruned = nnx.clone(zoo)
        keep = {}
        for name, k in zip(gated.gated_layers, gated.active_k(d), strict=True):
            layer = getattr(pruned, name)
            w = np.asarray(layer.kernel[...])
            norms = np.abs(w.reshape(-1, w.shape[-1])).sum(0)
            keep[name] = np.sort(np.argsort(norms, kind="stable")[-k:])
            off = np.setdiff1d(np.arange(w.shape[-1]), keep[name])
            layer.kernel[...] = layer.kernel[...].at[..., off].set(0.0)
            layer.bias[...] = layer.bias[...].at[off].set(0.0)
        logits, gates = gated.with_gates(x, d)
        for name in gated.gated_layers:
            for row in np.asarray(gates[name].values):
                np.testing.assert_array_equal(np.flatnonzero(row), keep[name])
        if gate == "hard_concrete":
            chex.assert_trees_all_close(logits, pruned(x), atol=1e-5)
    with pytest.raises(ValueError, match="spread must be a number > 0, got 0"):
        dy.init_gates_from_filters(gated, 0)


def test_train_step_penalty_and_learning():
    state = create_train_state(_mnist1d("hard_concrete"), optax.adam(1e-2),
                               key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 40))
    y = jnp.arange(16, dtype=jnp.int32) % 10
    jitted = dy.make_gated_train_step(min_density=0.2, penalty=0.1)
    s1, m1 = jitted(state, (x, y))
    assert int(s1.step) == 1
    # the expected-L0 penalty starts near P(z != 0) at log a = 3: sigmoid(3 + 2/3 log 11)
    assert float(m1["penalty"]) == pytest.approx(1 / (1 + math.exp(-3 - 2 / 3 * math.log(11))),
                                                 abs=0.01)
    first = float(m1["loss"])
    for _ in range(30):
        s1, m1 = jitted(s1, (x, y))
    assert float(m1["loss"]) < first


# --------------------------------------------------------------------------- experiment


@pytest.mark.smoke
def test_dynamic_gating_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "experiments_dynamic_gating", ROOT / "experiments" / "dynamic_gating.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["experiments_dynamic_gating"] = module
    spec.loader.exec_module(module)
    res = module.main(["--smoke", "true", "--out", str(tmp_path), "--progress", "false"])
    assert res["dense_macs"] == 31_750
    static = {r["density"]: r["macs"] for r in res["rows"] if r["method"] == "static_l1"}
    # exactly k = 6, 13, 19 filters kept per layer: closed-form MACs, no predictor
    assert static == {0.25: 2_490.0, 0.5: 9_490.0, 0.75: 19_000.0}
    fbs = {r["density"]: r for r in res["rows"] if r["method"] == "fbs"}
    assert set(fbs) == {0.25, 0.5, 0.75, 1.0}
    assert fbs[0.5]["active_conv2"] == pytest.approx(13 / 25)
    # one gated model per density, trained at that density: exactly k channels active
    fixed = {r["density"]: r for r in res["rows"] if r["method"] == "fbs_fixed"}
    assert set(fixed) == {0.25, 0.5, 0.75}
    assert fixed[0.5]["active_conv2"] == pytest.approx(13 / 25)
    assert fixed[0.5]["macs"] == pytest.approx(fbs[0.5]["macs"])
    for r in res["rows"]:
        assert 0.0 <= r["accuracy"] <= 1.0
    assert [r["threshold"] for r in res["adaptive"]] == [0.0, 0.9, 1.0]
    assert res["adaptive"][0]["macs"] == pytest.approx(fbs[0.25]["macs"])
    for name in ("config.json", "results.json", "results.md", "tradeoff.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "Command: `python experiments/" in (tmp_path / "results.md").read_text()
