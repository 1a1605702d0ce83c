"""Sparse variational dropout: KL values, thresholding, keyed layers, warm start, conversion."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import sparsejax as sj
from sparsejax.metrics import compression_ratio
from sparsejax.models import LeNet5, LeNet300100
from sparsejax.train import create_train_state, make_train_step
from sparsejax.variational import (
    K1,
    K2,
    K3,
    WARM_START_LOG_SIGMA2,
    VDConv,
    VDLeNet5,
    VDLeNet300100,
    VDLinear,
    from_dense,
    kl_divergence,
    kl_penalty,
    kl_warmup,
    log_alpha,
    make_vd_train_step,
    model_kl,
    neg_kl_approx,
    noisy_forward,
    to_plain,
)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_paper_constants():
    assert (K1, K2, K3) == (0.63576, 1.87320, 1.48695)


@pytest.mark.parametrize("la", [-8.0, -2.0, 0.0, 1.0, 3.0, 8.0])
def test_neg_kl_closed_form(la):
    expected = K1 * _sigmoid(K2 + K3 * la) - 0.5 * math.log1p(math.exp(-la)) - K1
    assert float(neg_kl_approx(jnp.float32(la))) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_neg_kl_limits():
    # log α = 0: k1·σ(k2) − ½·log 2 − k1
    assert float(neg_kl_approx(0.0)) == pytest.approx(
        K1 * _sigmoid(K2) - 0.5 * math.log(2.0) - K1, rel=1e-6)
    # log α → +∞: −KL → 0 (the log-uniform prior's optimum: the weight is pure noise)
    assert abs(float(neg_kl_approx(60.0))) < 1e-6
    # log α → −∞: −KL ≈ ½·log α − k1 (σ(k2 + k3·log α) → 0, log1p(e^{−log α}) ≈ −log α)
    assert float(neg_kl_approx(-40.0)) == pytest.approx(-20.0 - K1, rel=1e-6)
    # KL decreases with log α, and sums over entries
    grid = jnp.linspace(-8.0, 8.0, 33)
    assert bool(jnp.all(jnp.diff(-neg_kl_approx(grid)) < 0))
    assert float(kl_divergence(grid)) == pytest.approx(-float(jnp.sum(neg_kl_approx(grid))))
    jitted = jax.jit(kl_divergence)(grid)
    assert float(jitted) == pytest.approx(float(kl_divergence(grid)), rel=1e-6)


def test_log_alpha_and_clipping():
    theta = jnp.array([1.0, 2.0, 1e-6, 1e6])
    ls2 = jnp.array([2.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(log_alpha(theta, ls2), [2.0, -math.log(4.0), 8.0, -8.0], rtol=1e-6)
    with pytest.raises(ValueError, match="rank"):
        log_alpha(jnp.ones((2, 3)), jnp.ones(3))


def test_kl_gradient_finite_even_at_zero_theta():
    layer = VDLinear(3, 2, rngs=nnx.Rngs(0))
    layer.kernel.set_value(layer.kernel.get_value().at[0, 0].set(0.0))
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    grads = jax.grad(lambda p: model_kl(nnx.merge(graphdef, p, rest)))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def _layer_with_log_alpha(values):
    layer = VDLinear(1, len(values), rngs=nnx.Rngs(0))
    layer.kernel.set_value(jnp.ones((1, len(values))))  # θ = 1: log α = log σ² exactly
    layer.log_sigma2.set_value(jnp.asarray([values], jnp.float32))
    layer.bias.set_value(jnp.arange(len(values), dtype=jnp.float32))
    return layer


def test_threshold_mask_and_deterministic_output():
    layer = _layer_with_log_alpha([-1.0, 2.9, 3.0, 3.5])
    np.testing.assert_array_equal(layer.keep(), [[True, True, False, False]])
    layer.eval()
    y = layer(jnp.full((2, 1), 5.0))
    np.testing.assert_array_equal(y, [[5.0, 6.0, 2.0, 3.0], [5.0, 6.0, 2.0, 3.0]])
    assert float(layer.kl()) == pytest.approx(
        -sum(float(neg_kl_approx(v)) for v in (-1.0, 2.9, 3.0, 3.5)), rel=1e-6)


def test_local_reparameterization_moments():
    layer = VDLinear(2, 1, rngs=nnx.Rngs(0))
    layer.kernel.set_value(jnp.array([[1.0], [-2.0]]))
    layer.log_sigma2.set_value(jnp.log(jnp.array([[0.25], [1.0]])))  # σ² = (0.25, 1)
    layer.bias.set_value(jnp.array([0.5]))
    x = jnp.broadcast_to(jnp.array([2.0, 1.0]), (20_000, 2))
    y = layer(x, key=jax.random.key(1))[:, 0]
    # mean x·θ + b = 2 − 2 + 0.5; variance x²·σ² = 4·0.25 + 1·1 = 2
    assert float(jnp.mean(y)) == pytest.approx(0.5, abs=0.03)
    assert float(jnp.var(y)) == pytest.approx(2.0, rel=0.05)


def test_training_mode_needs_a_key_and_holds_no_rng_state():
    layer = VDLinear(3, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"VDLinear in training mode draws its noise from a PRNG "
                                         r"key: call it as layer\(x, key=.*noisy_forward"):
        layer(jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="VDLeNet300100|VDLinear in training mode"):
        VDLeNet300100(16, 3, rngs=nnx.Rngs(0))(jnp.ones((1, 16)))
    _, params = nnx.split(layer, nnx.Param)  # parameters only: the two-way split is exhaustive
    assert sorted(k[0] for k, _ in nnx.to_flat_state(params)) == ["bias", "kernel", "log_sigma2"]
    key = jax.random.key(4)
    np.testing.assert_array_equal(layer(jnp.ones((1, 3)), key=key), layer(jnp.ones((1, 3)), key=key))
    layer.eval()  # deterministic: the key is not needed, and ignored
    np.testing.assert_array_equal(layer(jnp.ones((1, 3))), layer(jnp.ones((1, 3)), key=key))


def test_layers_jit_and_vmap_over_keys():
    layer = VDConv(2, 3, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(layer, nnx.Param)
    x = jax.random.normal(jax.random.key(2), (2, 5, 5, 2))

    def forward(key, state):
        return nnx.merge(graphdef, state)(x, key=key)

    keys = jax.random.split(jax.random.key(3), 4)
    batched = jax.vmap(forward, in_axes=(0, None))(keys, state)
    assert batched.shape == (4, 2, 5, 5, 3)
    jit_forward = jax.jit(forward)
    for i in (0, 3):
        np.testing.assert_allclose(batched[i], jit_forward(keys[i], state), rtol=1e-5, atol=1e-5)
    assert float(jnp.std(batched[0] - batched[1])) > 0  # different keys, different noise
    layer.eval()
    eager = layer(x)
    jitted = nnx.jit(lambda m, v: m(v))(layer, x)
    np.testing.assert_allclose(eager, jitted, rtol=1e-6, atol=1e-6)
    # eval mode of a fresh layer (log α ≈ −8 everywhere): the plain convolution
    ref = jax.lax.conv_general_dilated(x, layer.kernel[...], (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(eager, ref + layer.bias[...].reshape(1, 1, 1, 3), rtol=1e-6,
                               atol=1e-6)


def test_structured_removes_whole_units():
    layer = VDLinear(3, 4, structured=True, rngs=nnx.Rngs(0))
    assert layer.log_sigma2.shape == (1, 4) and layer.scale.shape == (1, 4)
    layer.log_sigma2.set_value(jnp.array([[-10.0, 4.0, -10.0, 5.0]]))  # scale 1: log α = log σ²
    layer.bias.set_value(jnp.ones(4))
    _, _, kmask, bmask = layer.deterministic_params()
    np.testing.assert_array_equal(kmask, [[True, False, True, False]])
    np.testing.assert_array_equal(bmask, [True, False, True, False])
    layer.eval()
    y = layer(jnp.ones((2, 3)))
    np.testing.assert_array_equal(y[:, 1], [0.0, 0.0])
    np.testing.assert_array_equal(y[:, 3], [0.0, 0.0])
    # KL counts one variable per unit
    assert float(layer.kl()) == pytest.approx(float(kl_divergence(jnp.array([-8.0, 4, -8, 5]))))


@pytest.mark.parametrize("structured", [False, True])
def test_conversion_lenet300100_identical_outputs(structured):
    vd = VDLeNet300100(64, 10, structured=structured, rngs=nnx.Rngs(0))
    # push some weights / units over the threshold
    for layer in vd.layers:
        ls2 = layer.log_sigma2.get_value()
        noise = jax.random.uniform(jax.random.key(ls2.size), ls2.shape, minval=-12.0, maxval=8.0)
        layer.log_sigma2.set_value(noise)
    vd.eval()
    x = jax.random.normal(jax.random.key(5), (7, 8, 8, 1))
    plain = LeNet300100(64, 10, rngs=nnx.Rngs(1))
    params, mask = to_plain(vd, plain)
    sj.validate_mask(params, mask)
    nnx.update(plain, sj.apply_mask(params, mask))
    np.testing.assert_allclose(plain(x), vd(x), rtol=1e-6, atol=1e-6)
    kept = int(sum(int(jnp.sum(jnp.broadcast_to(layer.keep(), layer.kernel.shape)))
                   for layer in vd.layers))
    if structured:
        assert mask["layers"][0]["kernel"].shape == (1, 300)
        assert mask["layers"][0]["bias"].shape == (300,)
    else:
        assert mask["layers"][0]["kernel"].shape == (64, 300)
    total = 64 * 300 + 300 * 100 + 100 * 10
    assert int(sj.count_kept(mask, params, prunable=r"kernel")) == kept
    assert 1.0 < compression_ratio(params, mask) <= (total + 410) / max(kept, 1) * 1.01


def test_conversion_lenet5_identical_outputs_and_errors():
    vd = VDLeNet5((8, 8, 1), 10, padding="SAME", rngs=nnx.Rngs(0))
    vd.conv2.log_sigma2.set_value(vd.conv2.log_sigma2.get_value().at[..., :10].set(8.0))
    vd.eval()
    plain = LeNet5((8, 8, 1), 10, padding="SAME", rngs=nnx.Rngs(3))
    params, mask = to_plain(vd, plain)
    nnx.update(plain, sj.apply_mask(params, mask))
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
    np.testing.assert_allclose(plain(x), vd(x), rtol=1e-5, atol=1e-5)
    assert int(jnp.sum(~mask["conv2"]["kernel"])) >= 5 * 5 * 20 * 10
    with pytest.raises(ValueError, match="fc1/kernel"):
        to_plain(vd, LeNet5((16, 16, 1), 10, padding="SAME", rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="no counterpart in plain_model"):
        to_plain(VDLeNet300100(64, 10, rngs=nnx.Rngs(0)), LeNet5((8, 8, 1), 10, padding="SAME",
                                                                  rngs=nnx.Rngs(0)))


def test_kl_warmup_schedule():
    sched = kl_warmup(100, begin=10)
    assert [float(sched(t)) for t in (0, 10, 60, 110, 500)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="steps"):
        kl_warmup(0)


def test_vd_train_step_jit_matches_eager_and_uses_kl():
    model = VDLeNet300100(16, 3, rngs=nnx.Rngs(0))
    state = create_train_state(model, optax.sgd(0.1), key=0)
    x = jax.random.normal(jax.random.key(1), (8, 16))
    y = jnp.arange(8, dtype=jnp.int32) % 3
    penalty = kl_penalty(100, kl_warmup(10, begin=0))
    step_eager = make_train_step(forward=noisy_forward, penalty=penalty, jit=False)
    step_jit = make_train_step(forward=noisy_forward, penalty=penalty)
    s1, m1 = step_eager(state, (x, y))
    s2, _ = step_jit(state, (x, y))
    chex.assert_trees_all_close(s1.params, s2.params, rtol=1e-5, atol=1e-6)
    assert float(m1["kl_weight"]) == 0.0 and float(m1["loss"]) == pytest.approx(float(m1["data_loss"]))
    assert float(m1["kl"]) == pytest.approx(float(model_kl(model)), rel=1e-6)
    # β = 1: the objective adds KL / N
    s3, m3 = make_train_step(forward=noisy_forward, penalty=kl_penalty(100, 1.0))(s2, (x, y))
    assert float(m3["loss"]) == pytest.approx(float(m3["data_loss"]) + float(m3["kl"]) / 100, rel=1e-5)
    assert int(s3.step) == 2


def test_make_vd_train_step_is_a_deprecated_alias():
    model = VDLeNet300100(16, 3, rngs=nnx.Rngs(0))
    state = create_train_state(model, optax.sgd(0.1), key=0)
    x = jax.random.normal(jax.random.key(1), (8, 16))
    y = jnp.arange(8, dtype=jnp.int32) % 3
    with pytest.warns(DeprecationWarning, match="kl_penalty"):
        old = make_vd_train_step(100, kl_warmup(10, begin=0))
    new = make_train_step(forward=noisy_forward, penalty=kl_penalty(100, kl_warmup(10, begin=0)))
    for _ in range(2):
        s_old, m_old = old(state, (x, y))
        s_new, m_new = new(state, (x, y))
        assert sorted(m_old) == ["accuracy", "data_loss", "kl", "kl_weight", "loss"]
        chex.assert_trees_all_close(m_old, m_new)
        chex.assert_trees_all_close(s_old.params, s_new.params)
        state = s_new
    with pytest.raises(ValueError, match="num_examples"):
        make_vd_train_step(0)


def test_training_step_without_the_noisy_forward_is_a_clear_error():
    state = create_train_state(VDLeNet300100(16, 3, rngs=nnx.Rngs(0)), optax.sgd(0.1), key=0)
    step = make_train_step(penalty=kl_penalty(100), jit=False)
    with pytest.raises(ValueError, match="forward=sparsejax.variational.noisy_forward"):
        step(state, (jnp.ones((2, 16)), jnp.zeros(2, jnp.int32)))


# ---------------------------------------------------------------------------------------------
# masks are plain arrays, never nnx.Param
# ---------------------------------------------------------------------------------------------


def _variables(tree):
    return [x for x in jax.tree.leaves(tree, is_leaf=lambda v: isinstance(v, nnx.Variable))
            if isinstance(x, nnx.Variable)]


def test_to_plain_gives_plain_arrays_and_a_masked_finetune_keeps_zeros():
    vd = VDLeNet300100(64, 10, rngs=nnx.Rngs(0))
    for layer in vd.layers:  # log α = −8 everywhere: nothing removed ...
        layer.log_sigma2.set_value(jnp.full(layer.log_sigma2.shape, -40.0))
    layer = vd.layers[0]  # ... but the first 32 input rows of the first layer
    layer.log_sigma2.set_value(layer.log_sigma2.get_value().at[:32].set(8.0))
    plain = LeNet300100(64, 10, rngs=nnx.Rngs(1))
    params, mask = to_plain(vd, plain)
    assert _variables(params) == [] and _variables(mask) == []
    reference = nnx.as_pure(nnx.state(plain, nnx.Param))
    assert jax.tree.structure(params) == jax.tree.structure(reference)
    assert jax.tree.structure(mask) == jax.tree.structure(reference)
    assert mask["layers"][0]["kernel"].dtype == jnp.bool_
    assert int(jnp.sum(~mask["layers"][0]["kernel"])) == 32 * 300
    # a masked fine-tune on the plain-array train state: removed weights stay exactly 0
    nnx.update(plain, params)
    state = create_train_state(plain, sj.keep_sparse(optax.adam(1e-2), mask), key=0,
                               plain_arrays=True)
    step = make_train_step()
    x = jax.random.normal(jax.random.key(2), (16, 64))
    y = jnp.arange(16, dtype=jnp.int32) % 10
    for _ in range(3):
        state, _ = step(state, (x, y))
    kernel = state.params["layers"][0]["kernel"]
    assert float(jnp.max(jnp.abs(kernel[:32]))) == 0.0
    assert bool(jnp.all(kernel[32:] != params["layers"][0]["kernel"][32:]))  # trained
    assert int(sj.count_kept(mask, state.params, prunable="kernel")) == (
        64 * 300 - 32 * 300 + 300 * 100 + 100 * 10)


# ---------------------------------------------------------------------------------------------
# warm start from a dense model
# ---------------------------------------------------------------------------------------------


def _pairs(structured):
    return [
        (VDLeNet300100(64, 10, structured=structured, rngs=nnx.Rngs(0)),
         LeNet300100(64, 10, rngs=nnx.Rngs(1)), (5, 8, 8, 1)),
        (VDLeNet5((8, 8, 1), 10, padding="SAME", structured=structured, rngs=nnx.Rngs(0)),
         LeNet5((8, 8, 1), 10, padding="SAME", rngs=nnx.Rngs(1)), (3, 8, 8, 1)),
    ]


@pytest.mark.parametrize("structured", [False, True])
def test_from_dense_equals_the_dense_model_as_log_sigma2_goes_to_minus_infinity(structured):
    for vd, dense, shape in _pairs(structured):
        before = jax.tree.map(np.asarray, nnx.state(vd, nnx.Param))
        x = jax.random.normal(jax.random.key(3), shape)
        for ls2 in (-30.0, -1e4):
            warm = from_dense(vd, dense, log_sigma2=ls2)
            for path, layer in [(p, m) for p, m in nnx.iter_graph(warm) if hasattr(m, "log_sigma2")]:
                src = dense
                for k in path:
                    src = src[k] if isinstance(k, int) else getattr(src, k)
                np.testing.assert_array_equal(layer.kernel[...], src.kernel[...])
                np.testing.assert_array_equal(layer.bias[...], src.bias[...])
                assert bool(jnp.all(layer.log_sigma2[...] == ls2))
                assert bool(jnp.all(layer.log_alpha() == -8.0))  # the clip: far below 3
                if layer.structured:
                    assert bool(jnp.all(layer.scale[...] == 1.0))
            warm.eval()
            np.testing.assert_allclose(warm(x), dense(x), rtol=1e-6, atol=1e-6)
        # the inputs are not modified
        chex.assert_trees_all_equal(jax.tree.map(np.asarray, nnx.state(vd, nnx.Param)), before)


def test_from_dense_training_noise_closed_form():
    dense = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    warm = from_dense(VDLinear(3, 2, rngs=nnx.Rngs(1)), dense, log_sigma2=-40.0)
    x = jnp.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    key = jax.random.key(7)
    theta = dense.kernel[...]
    # log α = −8 (clipped): y = x θ + b + √(x²·e⁻⁸·θ² + 1e-8) · ε, ε from the same key
    var = jnp.square(x) @ (math.exp(-8.0) * jnp.square(theta))
    eps = jax.random.normal(key, (2, 2))
    np.testing.assert_allclose(warm(x, key=key), dense(x) + jnp.sqrt(var + 1e-8) * eps,
                               rtol=1e-5, atol=1e-6)


def test_from_dense_default_is_the_papers_log_sigma2():
    vd, dense, _ = _pairs(False)[0]
    warm = from_dense(vd, dense)
    assert WARM_START_LOG_SIGMA2 == -10.0
    for layer, src in zip(warm.layers, dense.layers, strict=True):
        assert bool(jnp.all(layer.log_sigma2[...] == -10.0))
        theta = src.kernel[...]
        expected = jnp.clip(-10.0 - jnp.log(jnp.square(theta) + 1e-8), -8.0, 8.0) < 3.0
        np.testing.assert_array_equal(layer.keep(), expected)


def test_from_dense_errors_name_the_problem():
    vd = VDLeNet300100(64, 10, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"parameter 'layers/0/kernel': dense_model has shape "
                                         r"\(784, 300\), vd_model \(64, 300\)"):
        from_dense(vd, LeNet300100(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="have no counterpart in dense_model"):
        from_dense(vd, LeNet5((8, 8, 1), 10, padding="SAME", rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="has no VD layer"):
        from_dense(LeNet300100(64, 10, rngs=nnx.Rngs(0)), LeNet300100(64, 10, rngs=nnx.Rngs(0)))
    for bad in (float("nan"), float("-inf"), True, "−10"):
        with pytest.raises(ValueError, match="log_sigma2 must be a finite float"):
            from_dense(vd, LeNet300100(64, 10, rngs=nnx.Rngs(0)), log_sigma2=bad)
