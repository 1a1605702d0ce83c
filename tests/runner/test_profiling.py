"""Tests of sparsejax.runner.kernel_times (kernel times from a jax.profiler trace)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from sparsejax.runner import KernelTimes, kernel_times


def test_kernel_times_sums_events_by_name():
    f = jax.jit(lambda x: jnp.sin(x) @ x)
    x = jnp.ones((128, 128))
    # The host plane exists on every backend: its lines hold the runtime's events.
    prof = kernel_times(f, x, calls=3, plane_prefix="/host:CPU", line_prefix="")
    assert isinstance(prof, KernelTimes) and prof.calls == 3
    assert prof.kernels > 0 and prof.busy_us > 0 and prof.span_us > 0
    assert sum(us for _, us, _ in prof.by_name) == pytest.approx(prof.busy_us)
    assert sum(n for _, _, n in prof.by_name) == pytest.approx(prof.kernels)
    times = [us for _, us, _ in prof.by_name]
    assert times == sorted(times, reverse=True)
    table = prof.table(top=2).splitlines()
    assert len(table) == 4 and table[0].startswith("| kernel |")
    assert prof.to_dict(top=1)["top"][0]["us"] == pytest.approx(times[0])
    if jax.default_backend() == "cpu":  # no GPU plane: nothing counted
        empty = kernel_times(f, x, calls=2)
        assert empty.kernels == 0 and empty.busy_us == 0 and empty.by_name == ()


@pytest.mark.parametrize("calls", [0, -1, 1.5, True])
def test_kernel_times_rejects_bad_calls(calls):
    with pytest.raises(ValueError, match=r"calls must be an int >= 1, got"):
        kernel_times(lambda: 0, calls=calls)
