"""Activation statistics per channel and neuron scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import scores as S

F32 = jnp.float32


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
