"""Flax's deprecated API is an error in the whole suite (pyproject ``filterwarnings``).

Every test runs with Flax's ``DeprecationWarning`` raised as an error, so no deprecated
Flax call (``variable.value``, ``State.flat_state()``, ...) can hide in the package, the
notebooks' code paths or the tests: the suite itself is the check.
"""

import jax.numpy as jnp
import pytest
from flax import nnx


def test_value_access_is_an_error():
    variable = nnx.Param(jnp.ones(2))
    with pytest.raises(DeprecationWarning, match=r"'\.value' access is now deprecated"):
        _ = variable.value
    with pytest.raises(DeprecationWarning, match=r"'\.value' setter is now deprecated"):
        variable.value = jnp.zeros(2)
    assert float(variable[...].sum()) == 2.0  # the current API: variable[...]


def test_warnings_raised_inside_flax_are_errors():
    state = nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.Param)
    with pytest.raises(DeprecationWarning, match="nnx.State` will be deprecated"):
        state.flat_state()
    assert sorted(nnx.to_flat_state(state).to_nested_state()) == ["bias", "kernel"]
