"""Tests of sparsejax.runner's timing loop (time_calls, time_run, time_round_robin) and
jit_flat_state."""

from __future__ import annotations

import gc
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.runner import (
    KernelTimes,
    Timing,
    jit_flat_state,
    time_calls,
    time_round_robin,
    time_run,
)


def _fake_clock(readings):
    """A clock that returns ``readings`` one per call (and fails when asked for more)."""
    it = iter(readings)
    return lambda: next(it)


@pytest.fixture
def blocked(monkeypatch):
    """Every value ``jax.block_until_ready`` is called with, in order."""
    log = []
    real = jax.block_until_ready

    def spy(x):
        log.append(x)
        return real(x)

    monkeypatch.setattr(jax, "block_until_ready", spy)
    return log


def test_time_calls_calls_first_warmup_and_samples_and_blocks_on_every_output(blocked):
    calls = []

    def fn(a, b):
        calls.append((a, b))
        return f"out{len(calls)}"

    t = time_calls(fn, 1, 2, repeats=4, calls=5, warmup=2, clock=_fake_clock(range(100)))
    assert len(calls) == 1 + 2 + 4 * 5 and set(calls) == {(1, 2)}
    # first call and 2 warm-up calls blocked one by one; each sample blocked once on all
    # of its 5 outputs (not only the last one)
    assert blocked[:3] == ["out1", "out2", "out3"]
    assert blocked[3:] == [[f"out{i}" for i in range(4 + 5 * s, 9 + 5 * s)] for s in range(4)]
    assert t.calls == 5 and len(t.times_s) == 4


def test_time_calls_block_each_blocks_after_every_call(blocked):
    outs = itertools.count()
    t = time_calls(lambda: next(outs), repeats=2, calls=3, warmup=0, block_each=True,
                   clock=_fake_clock([0, 1, 10, 16, 20, 23]))
    assert blocked == [0, 1, 2, 3, None, 4, 5, 6, None]
    assert t.times_s == (2.0, 1.0) and t.compile_s == 1


def test_timing_statistics_on_a_fake_clock():
    # first call 0 -> 7; samples of 2 calls: 2, 6, 1, 4 seconds -> 1, 3, 0.5, 2 per call
    clock = _fake_clock([0, 7, 10, 12, 20, 26, 30, 31, 40, 44])
    t = time_calls(lambda: 0, repeats=4, calls=2, warmup=3, clock=clock)
    assert t.compile_s == 7
    assert t.times_s == (1.0, 3.0, 0.5, 2.0)
    assert t.median_s == 1.5 and t.min_s == 0.5 and t.max_s == 3.0
    # quartiles of (0.5, 1, 2, 3) by linear interpolation: 0.875 and 2.25
    assert t.iqr_s == pytest.approx(2.25 - 0.875)
    assert t.to_dict() == {"compile_s": 7, "median_s": 1.5, "min_s": 0.5,
                           "iqr_s": pytest.approx(1.375), "times_s": [1.0, 3.0, 0.5, 2.0],
                           "calls": 2}
    one = Timing(compile_s=1.0, times_s=(0.25,))
    assert (one.median_s, one.min_s, one.iqr_s) == (0.25, 0.25, 0.0)
    assert Timing(0.0, (3.0, 1.0, 2.0)).median_s == 2.0


def test_time_round_robin_order_first_warmup_and_rounds():
    log = []

    def run(name):
        return lambda: log.append(name)

    timings = time_round_robin(
        [run("a"), run("b")], repeats=2, warmup=1, calls=10,
        first=[run("compile a"), None], clock=_fake_clock([0, 1, 2, 4, 10, 20, 30, 50, 60, 61,
                                                           70, 75]))
    assert log == ["compile a", "a", "b", "b", "a", "b", "a", "b"]
    a, b = timings
    assert (a.compile_s, b.compile_s) == (1, 2)
    assert a.times_s == pytest.approx((1.0, 0.1)) and b.times_s == pytest.approx((2.0, 0.5))
    assert a.calls == b.calls == 10


def test_time_run_uses_first_for_compilation_and_divides_by_calls():
    log = []
    t = time_run(lambda: log.append("window"), repeats=3, calls=4,
                 first=lambda: log.append("step"), clock=_fake_clock([0, 5, 0, 8, 0, 4, 0, 12]))
    assert log == ["step", "window", "window", "window"]
    assert t.compile_s == 5 and t.times_s == (2.0, 1.0, 3.0) and t.median_s == 2.0
    t = time_run(lambda: log.append("run"), repeats=1, clock=_fake_clock([0, 9, 0, 3]))
    assert log[-2:] == ["run", "run"] and (t.compile_s, t.times_s) == (9, (3.0,))


def test_samples_run_with_the_garbage_collector_off():
    states = []
    time_run(lambda: states.append(gc.isenabled()), repeats=2, warmup=1)
    assert states == [True, True, False, False]  # first, warm-up, then the two samples
    assert gc.isenabled()


def test_time_calls_on_a_jitted_function_and_device_time():
    f = jax.jit(lambda x: jnp.sin(x) @ x)
    x = jnp.ones((64, 64))
    t = time_calls(f, x, repeats=3, calls=2, device_calls=2)
    assert len(t.times_s) == 3 and all(s > 0 for s in t.times_s) and t.compile_s > 0
    assert t.min_s <= t.median_s <= t.max_s
    assert isinstance(t.device, KernelTimes) and t.device.calls == 2
    assert t.to_dict()["device"]["calls"] == 2
    assert time_calls(f, x, repeats=1).device is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"repeats": 0}, "repeats must be an int >= 1"),
     ({"calls": 0}, "calls must be an int >= 1"),
     ({"calls": 1.5}, "calls must be an int >= 1"),
     ({"warmup": -1}, "warmup must be an int >= 0"),
     ({"repeats": True}, "repeats must be an int >= 1"),
     ({"device_calls": -2}, "device_calls must be an int >= 0")],
)
def test_time_calls_rejects_bad_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_calls(lambda: 0, **kwargs)


def test_time_round_robin_rejects_mismatched_first():
    with pytest.raises(ValueError, match="first has 1 entries for 2 runs"):
        time_round_robin([lambda: 0, lambda: 1], first=[None])


def test_jit_flat_state_calls_fn_on_the_rebuilt_state():
    state = {"w": jnp.arange(6.0).reshape(2, 3), "b": {"c": jnp.asarray([1.0, 2.0, 3.0])}}
    traces = []

    def fn(s, x, scale):
        traces.append(1)  # once per trace
        return (x @ s["w"].T) * scale + s["b"]["c"].sum()

    g, leaves = jit_flat_state(fn, state)
    assert isinstance(leaves, list) and len(leaves) == 2
    x = jnp.asarray([[1.0, 0.0, 2.0]])
    np.testing.assert_allclose(g(leaves, x, 2.0), [[14.0, 32.0]])  # (4, 13)·2 + 6
    g(leaves, x + 1.0, 3.0)
    assert len(traces) == 1
