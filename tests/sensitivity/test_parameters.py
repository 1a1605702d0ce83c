"""Parameter sensitivity: OBD closed form, Fisher reference."""


import jax.numpy as jnp
import pytest

from sparsejax import scores
from sparsejax.sensitivity import (
    format_parameter_sensitivity,
    parameter_sensitivity,
)


def test_parameter_sensitivity_obd_closed_form():
    w1 = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])
    w2 = jnp.asarray([[1.0, 2.0], [4.0, 8.0]])
    params = {"l1": w1, "l2": w2}
    h = {"l1": jnp.full((2, 2), 2.0), "l2": 1.0 / w2**3}

    def loss(p, batch):  # L = ½ Σ h w²: exact Hessian diagonal h
        del batch
        return 0.5 * sum(jnp.sum(h[k] * p[k] ** 2) for k in p)

    hd = scores.exact_hessian_diag(loss, params, None)
    sal = scores.obd(params, hd)  # l1: w², l2: ½ / w (reversed order of magnitude)
    rows = parameter_sensitivity(sal, params, top_fraction=0.25)
    r1, r2 = rows
    assert (r1.path, r1.size, r2.path) == ("l1", 4, "l2")
    assert r1.total == pytest.approx(30.0) and r1.mean == pytest.approx(7.5)
    assert r2.total == pytest.approx(0.5 * (1 + 0.5 + 0.25 + 0.125))
    assert r1.fraction == pytest.approx(30.0 / (30.0 + 0.9375))
    assert r1.rank_correlation == pytest.approx(1.0) and r1.top_overlap == 1.0
    assert r2.rank_correlation == pytest.approx(-1.0) and r2.top_overlap == 0.0
    table = format_parameter_sensitivity(rows)
    assert "| l2 | 4 |" in table and "-1.000" in table
    with pytest.raises(ValueError, match="top_fraction must be in \\(0, 1\\], got 0"):
        parameter_sensitivity(sal, params, top_fraction=0)
    with pytest.raises(ValueError, match="saliency at 'l2' has 1 NaN"):
        parameter_sensitivity({"l1": sal["l1"], "l2": sal["l2"].at[0, 0].set(jnp.nan)}, params)


def test_parameter_sensitivity_fisher_reference():
    params = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.1]])}
    x = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

    def per_example(p, ex):
        return 0.5 * jnp.sum(jnp.square(ex @ p["w"]))

    fisher = scores.fisher_diag(per_example, params, x)
    sal = scores.obd(params, fisher)
    (row,) = parameter_sensitivity(sal, params, reference=sal)
    assert row.rank_correlation == pytest.approx(1.0) and row.top_overlap == 1.0
    assert row.total == pytest.approx(float(jnp.sum(sal["w"])), rel=1e-6)
