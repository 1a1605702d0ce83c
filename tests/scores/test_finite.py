"""check_finite: the guard against NaN and inf scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_dense_case import params as _params

from sparsejax import scores as S

# ---------------------------------------------------------------------------
# check_finite
# ---------------------------------------------------------------------------


def test_check_finite_names_first_bad_path_and_counts():
    good = S.magnitude(_params())
    assert S.check_finite(good) is good
    bad = {
        "a": jnp.ones(3),
        "b": {"kernel": jnp.array([[jnp.nan, 1.0], [jnp.nan, jnp.inf]])},
        "c": jnp.array([jnp.nan]),
        "n": jnp.array([1, 2]),
    }
    with pytest.raises(
        ValueError,
        match=r"scores at 'b/kernel' has 2 NaN and 1 inf entries out of 4 \(shape \(2, 2\)\)",
    ):
        S.check_finite(bad)
    with pytest.raises(ValueError, match=r"hessian_diag at '<root>' has 0 NaN and 1 inf"):
        S.check_finite(jnp.array([1.0, -jnp.inf]), name="hessian_diag")
    # Produced scores carry the NaN through: obd of a NaN Hessian is caught.
    h = {"w": jnp.array([1.0, jnp.nan])}
    with pytest.raises(ValueError, match="scores at 'w' has 1 NaN"):
        S.check_finite(S.obd({"w": jnp.ones(2)}, h))


def test_check_finite_under_jit_cannot_raise_and_passes_values_through():
    x = {"w": jnp.array([jnp.nan, 2.0])}
    out = jax.jit(S.check_finite)(x)
    assert np.isnan(out["w"][0]) and float(out["w"][1]) == 2.0
