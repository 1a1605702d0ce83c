"""Layer sensitivity: closed-form curves, structured groups, bad inputs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax import scores
from sparsejax.sensitivity import (
    layer_sensitivity,
)


def _params():
    # distinct magnitudes: layer "a" holds 1..8, layer "b" holds 9..20 (negated half)
    a = jnp.arange(1.0, 9.0).reshape(2, 4)
    b = (jnp.arange(9.0, 21.0) * jnp.where(jnp.arange(12) % 2 == 0, 1.0, -1.0)).reshape(3, 4)
    return {"a": {"kernel": a, "bias": jnp.ones(4)}, "b": {"kernel": b, "bias": jnp.ones(4)}}


def _abs_sum(p):  # the eval metric: Σ|w| over the kernels (a known function of the mask)
    return jnp.sum(jnp.abs(p["a"]["kernel"])) + jnp.sum(jnp.abs(p["b"]["kernel"]))


GRID = (0.0, 0.25, 0.5, 1.0)


def _expected_unstructured():
    p = _params()
    total = float(_abs_sum(p))
    rows = []
    for name in ("a", "b"):
        mags = np.sort(np.abs(np.asarray(p[name]["kernel"])).ravel())
        rows.append([total - mags[: round(s * mags.size)].sum() for s in GRID])
    return total, np.asarray(rows)


@pytest.mark.parametrize(("vectorize", "chunk_size"), [(None, None), (True, 3), (False, None)])
def test_layer_sensitivity_unstructured_closed_form(vectorize, chunk_size):
    p = _params()
    sens = layer_sensitivity(_abs_sum, p, scores.magnitude(p), GRID, vectorize=vectorize,
                             chunk_size=chunk_size)
    total, expect = _expected_unstructured()
    assert sens.layers == ("a/kernel", "b/kernel")
    assert sens.baseline == total == 210.0
    np.testing.assert_allclose(sens.values, expect)
    assert sens.pruned.tolist() == [[0, 2, 4, 8], [0, 3, 6, 12]]
    assert sens.groups == (8, 12) and sens.sizes == (8, 12)
    np.testing.assert_allclose(sens.drops, total - expect)
    np.testing.assert_allclose(sens.curve("b/kernel"), expect[1])
    with pytest.raises(ValueError, match="layer 'c' is not in the sensitivity table"):
        sens.curve("c")
    assert json.loads(json.dumps(sens.to_dict()))["pruned"] == [[0, 2, 4, 8], [0, 3, 6, 12]]


def test_layer_sensitivity_loop_fallback_for_untraceable_eval():
    p = _params()
    calls = []

    def host_metric(q):  # float() of a tracer fails: must fall back to the loop
        calls.append(1)
        return float(_abs_sum(q))

    sens = layer_sensitivity(host_metric, p, scores.magnitude(p), (0.25, 1.0))
    _, expect = _expected_unstructured()
    np.testing.assert_allclose(sens.values, expect[:, [1, 3]])
    # baseline + 1 failed trace + 2 layers x 2 sparsities in the loop
    assert len(calls) == 1 + 1 + 4
    with pytest.raises(jax.errors.ConcretizationTypeError):
        layer_sensitivity(host_metric, p, scores.magnitude(p), GRID, vectorize=True)


def test_layer_sensitivity_neurons_counts_and_loss_direction():
    p = _params()
    unit = scores.filter_norm(p)

    def nonzero(q):  # pruned entries of the kernels, counted from the params
        return jnp.sum(q["a"]["kernel"] == 0) + jnp.sum(q["b"]["kernel"] == 0)

    sens = layer_sensitivity(nonzero, p, unit, (0.25, 0.5, 0.75), structure=sj.Neurons(),
                             higher_is_better=False)
    assert sens.groups == (4, 4)
    assert sens.pruned.tolist() == [[1, 2, 3], [1, 2, 3]]
    # a unit of "a" has 2 entries, of "b" 3
    np.testing.assert_allclose(sens.values, [[2, 4, 6], [3, 6, 9]])
    np.testing.assert_allclose(sens.drops, sens.values)  # lower is better, baseline 0
    # an existing mask is kept on every layer
    base = sj.prune(scores.magnitude(p), 0.5, prunable="a/kernel")
    sens2 = layer_sensitivity(nonzero, p, unit, (0.5,), structure=sj.Neurons(), mask=base,
                              higher_is_better=False)
    assert sens2.baseline == 4.0
    # a/kernel: the two lowest-L1 columns (0, 1) hold 1, 5, 2, 6 of which 1, 2 already pruned
    np.testing.assert_allclose(sens2.values[:, 0], [6.0, 4.0 + 6.0])


@pytest.mark.parametrize(
    ("grid", "match"),
    [((0.5, 1.5), "in \\[0, 1\\], got 1.5"), ((0.5, 0.25), "strictly increasing"),
     ((), "sparsities is empty")],
)
def test_layer_sensitivity_bad_grid(grid, match):
    p = _params()
    with pytest.raises(ValueError, match=match):
        layer_sensitivity(_abs_sum, p, scores.magnitude(p), grid)


def test_layer_sensitivity_bad_inputs_name_paths():
    p = _params()
    bad_scores = {"a": {"kernel": jnp.ones((2, 4)), "bias": jnp.ones(4)}}
    with pytest.raises(ValueError, match="paths only in params: \\['b/"):
        layer_sensitivity(_abs_sum, p, bad_scores, GRID)
    shaped = {**scores.magnitude(p), "b": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(4)}}
    with pytest.raises(ValueError, match="'b/kernel' have shape \\(4, 3\\)"):
        layer_sensitivity(_abs_sum, p, shaped, GRID)
    with pytest.raises(ValueError, match="scalar metric"):
        layer_sensitivity(lambda q: q["a"]["kernel"], p, scores.magnitude(p), GRID)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        layer_sensitivity(_abs_sum, p, scores.magnitude(p), GRID, chunk_size=0)
