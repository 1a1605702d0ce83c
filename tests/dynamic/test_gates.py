"""Density checks, top-k selection and hard-concrete gates (sparsejax.dynamic._gates)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gated_models import mnist1d as _mnist1d
from hypothesis import given
from hypothesis import strategies as st

from sparsejax import dynamic as dy
from sparsejax.dynamic._gates import _gathered_select


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



@pytest.mark.parametrize("gate", dy.GATE_KINDS)
@pytest.mark.parametrize("jit", [False, True])
def test_gathered_selection_matches_topk_mask_with_ties_and_signed_zeros(gate, jit):
    # Ties go to the lower channel index and -0.0 ties with 0.0 on both paths; FBS scores
    # are relu(logits), so every negative logit ties at 0.
    logits = jnp.asarray([0.5, -0.0, 0.0, 2.0, 0.5, -1.0, 0.0, 2.0, -3.0, 0.5], jnp.float32)
    scores = jax.nn.relu(logits) if gate == "fbs" else logits
    select = jax.jit(_gathered_select, static_argnums=(0, 2)) if jit else _gathered_select
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
        dy.sampled_density_forward(min_density=bad)
    with pytest.raises(ValueError, match=text):
        model(x, jnp.asarray([0.5, bad]))  # a per-example array is checked entry by entry


