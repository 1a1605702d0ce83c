"""Tests for sparsejax.schedules: exact endpoints, closed forms, update grids, jit-safety."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsejax import schedules

STEPS = np.arange(0, 130)

ALL = [
    schedules.one_shot(0.7, at=5),
    schedules.constant(0.5, every=7, begin=3, end=40),
    schedules.periodic(0.2, every=9, final=0.9, begin=4),
    schedules.polynomial(0.1, 0.95, begin=10, end=100, every=15),
    schedules.iterative(0.2, rounds=4, steps_per_round=25, begin=2),
]


def _values(sched, steps=STEPS):
    """The schedule evaluated on a vector of steps (one call)."""
    return np.asarray(sched(jnp.asarray(np.asarray(steps), jnp.int32)))


def _updates(sched, steps=STEPS):
    steps = np.asarray(steps)
    return [int(t) for t in steps[np.asarray(sched.is_update(jnp.asarray(steps, jnp.int32)))]]


# --------------------------------------------------------------------------- one_shot / constant


def test_one_shot_values_and_single_update():
    s = schedules.one_shot(0.7, at=5)
    assert _updates(s) == [5]
    np.testing.assert_array_equal(_values(s), np.where(STEPS >= 5, np.float32(0.7), 0).astype(np.float32))
    assert s.last_update == 5
    assert s(10).dtype == jnp.float32 and s.is_update(10).dtype == jnp.bool_


def test_one_shot_at_initialisation():
    s = schedules.one_shot(0.9)
    assert _updates(s) == [0]
    assert float(s(0)) == np.float32(0.9)


def test_constant_grid_begin_end():
    s = schedules.constant(0.5, every=7, begin=3, end=40)
    assert _updates(s) == [3, 10, 17, 24, 31, 38]
    assert s.last_update == 38
    np.testing.assert_array_equal(_values(s), np.where(STEPS >= 3, 0.5, 0.0).astype(np.float32))


def test_constant_without_end_updates_forever():
    s = schedules.constant(0.25, every=10)
    assert _updates(s, range(0, 1_000_001, 50_000)) == list(range(0, 1_000_001, 50_000))
    assert s.last_update is None


# --------------------------------------------------------------------------- periodic


def test_periodic_increments_until_final_exactly():
    s = schedules.periodic(0.25, every=10, final=0.9, begin=5)
    assert s.num_updates == 4
    assert _updates(s) == [5, 15, 25, 35]
    got = _values(s, [0, 4, 5, 14, 15, 25, 34, 35, 36, 129])
    want = np.float32([0, 0, 0.25, 0.25, 0.5, 0.75, 0.75, 0.9, 0.9, 0.9])
    np.testing.assert_array_equal(got, want)
    assert float(s(35)) == np.float32(0.9)


def test_periodic_float_rounding_does_not_add_an_update():
    # 0.9 / 0.1 == 9.000000000000002 in float64: still exactly 9 updates.
    s = schedules.periodic(0.1, every=1, final=0.9)
    assert s.num_updates == 9
    assert _updates(s, range(20)) == list(range(9))
    np.testing.assert_allclose(_values(s, range(9)), np.arange(1, 10) / 10, rtol=1e-6)
    assert float(s(8)) == np.float32(0.9)


def test_periodic_from_initial():
    s = schedules.periodic(0.3, every=2, final=0.8, initial=0.5)
    assert s.num_updates == 1
    assert _updates(s, range(10)) == [0]
    assert float(s(0)) == np.float32(0.8)


# --------------------------------------------------------------------------- polynomial


def _zhu_gupta(t, s_i, s_f, t0, n, dt, power=3):
    """Zhu & Gupta (2017), eq. (1), evaluated at the last update step <= t (float64)."""
    t = np.asarray(t, np.float64)
    k = np.clip(np.floor((t - t0) / dt), 0, n)
    return s_f + (s_i - s_f) * (1.0 - k * dt / (n * dt)) ** power


def test_polynomial_closed_form_at_several_steps():
    s = schedules.polynomial(0.0, 0.9, begin=100, end=1_100, every=100)
    steps = np.array([0, 99, 100, 150, 199, 200, 300, 450, 500, 777, 1_000, 1_099, 1_100, 5_000])
    got = _values(s, steps)
    want = _zhu_gupta(steps, 0.0, 0.9, 100, 10, 100)
    # The float64 closed form rounded once to float32, bit for bit.
    np.testing.assert_array_equal(got, want.astype(np.float32))
    # Hand-computed: at t = 300 (k = 2 of n = 10), 0.9 * (1 - 0.8**3) = 0.4392.
    np.testing.assert_allclose(float(s(300)), 0.4392, rtol=1e-6)
    assert _updates(s, range(0, 1_300)) == list(range(100, 1_101, 100))
    assert s.num_intervals == 10 and s.last_update == 1_100


def test_polynomial_exact_dyadic_values():
    s = schedules.polynomial(0.0, 0.875, begin=0, end=40, every=10)
    got = _values(s, [0, 9, 10, 19, 20, 30, 39, 40, 1_000])
    want = np.float32([0.0, 0.0, 0.505859375, 0.505859375, 0.765625, 0.861328125, 0.861328125,
                       0.875, 0.875])
    np.testing.assert_array_equal(got, want)


def test_polynomial_power_one_is_linear():
    s = schedules.polynomial(0.2, 0.6, begin=0, end=8, every=2, power=1)
    np.testing.assert_allclose(_values(s, [0, 2, 4, 6, 8]), [0.2, 0.3, 0.4, 0.5, 0.6], rtol=1e-6)


@given(
    s_i=st.floats(0.0, 1.0),
    delta=st.floats(0.0, 1.0),
    begin=st.integers(0, 10_000),
    n=st.integers(1, 50),
    every=st.integers(1, 1_000),
    power=st.sampled_from([1, 2, 3, 0.5]),
)
def test_polynomial_endpoints_exact_and_monotone(s_i, delta, begin, n, every, power):
    s_f = s_i + (1.0 - s_i) * delta
    end = begin + n * every
    s = schedules.polynomial(s_i, s_f, begin=begin, end=end, every=every, power=power)
    assert float(s(begin)) == np.float32(s_i)
    assert float(s(end)) == np.float32(s_f)
    assert float(s(max(begin - 1, 0))) == np.float32(s_i)
    assert float(s(end + every + 3)) == np.float32(s_f)
    # Vectorised evaluation over every update step: non-decreasing, and each
    # value is held until the next update.
    # Fixed-shape vectorised evaluation at every update step (padded with the
    # last one): non-decreasing, held until the next update, closed form.
    k = np.minimum(np.arange(51), n)
    ts = begin + every * k
    vals = _values(s, ts)
    assert np.all(np.diff(vals) >= 0)
    np.testing.assert_array_equal(_values(s, ts + every - 1), vals)
    np.testing.assert_array_equal(vals, _zhu_gupta(ts, s_i, s_f, begin, n, every, power).astype(np.float32))
    assert _updates(s, ts) == list(ts)
    off = np.array([begin - 1, begin + 1, end + 1, end + every])
    assert _updates(s, off[off >= 0]) == ([begin + 1] if every == 1 else [])


def test_polynomial_rejects_end_off_the_grid():
    with pytest.raises(ValueError, match=r"end - begin \(95\) must be a multiple of every \(10\)"):
        schedules.polynomial(0.0, 0.9, begin=5, end=100, every=10)


# --------------------------------------------------------------------------- iterative


def test_iterative_compound_rate():
    s = schedules.iterative(0.2, rounds=4, steps_per_round=25, begin=2)
    assert _updates(s) == [27, 52, 77, 102]
    got = _values(s, [0, 26, 27, 51, 52, 77, 102, 129])
    want = np.float32([0.0, 0.0, 0.2, 0.2, 0.36, 0.488, 0.5904, 0.5904])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Kept fraction after round k is exactly (1 - p)^k rounded once to float32.
    for k in range(5):
        assert float(s(2 + 25 * k)) == np.float32(1.0 - 0.8**k)
    assert s.last_update == 102


def test_iterative_lottery_ticket_20_rounds():
    # Frankle & Carbin prune 20% per round: after 20 rounds 1.15% of weights remain.
    s = schedules.iterative(0.2, rounds=20, steps_per_round=1)
    np.testing.assert_allclose(1.0 - float(s(20)), 0.8**20, rtol=1e-5)
    np.testing.assert_allclose(1.0 - float(s(20)), 0.011529215, rtol=1e-5)


# --------------------------------------------------------------------------- jit / vmap safety


@pytest.mark.parametrize("sched", ALL, ids=lambda s: type(s).__name__)
def test_python_int_and_array_steps_agree(sched):
    for t in (0, 4, 5, 27, 52, 100, 129):
        assert float(sched(t)) == _values(sched)[t]
        assert bool(sched.is_update(t)) == (t in _updates(sched))
        assert float(sched(jnp.int32(t))) == _values(sched)[t]


@pytest.mark.parametrize("sched", ALL, ids=lambda s: type(s).__name__)
def test_jit_equals_eager_and_vectorised(sched):
    steps = jnp.arange(130, dtype=jnp.int32)
    jitted = jax.jit(lambda t: (sched(t), sched.is_update(t)))
    val_j, upd_j = jax.vmap(jitted)(steps)
    val_v, upd_v = sched(steps), sched.is_update(steps)
    eager = np.float32([float(sched(int(t))) for t in range(0, 130, 13)])
    np.testing.assert_array_equal(np.asarray(val_j), np.asarray(val_v))
    np.testing.assert_array_equal(np.asarray(val_j)[::13], eager)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(upd_j)), _updates(sched))
    np.testing.assert_array_equal(np.asarray(upd_v), np.asarray(upd_j))
    # A NumPy step array takes the host path: same float32 values, bit for bit.
    np.testing.assert_array_equal(np.asarray(sched(np.arange(130))), np.asarray(val_v))
    np.testing.assert_array_equal(np.asarray(sched.is_update(np.arange(130))), np.asarray(upd_v))
    assert val_j.dtype == jnp.float32 and upd_j.dtype == jnp.bool_


@pytest.mark.parametrize("sched", ALL, ids=lambda s: type(s).__name__)
def test_schedules_are_frozen_hashable_and_monotone(sched):
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.every = 3
    assert hash(sched) == hash(dataclasses.replace(sched))
    assert np.all(np.diff(_values(sched)) >= 0)
    assert _updates(sched)[-1] == sched.last_update


def test_float_step_is_rejected():
    with pytest.raises(TypeError, match="integer"):
        schedules.one_shot(0.5)(1.5)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "make, exc, message",
    [
        (lambda: schedules.one_shot(1.5), ValueError, r"one_shot: sparsity must be in \[0, 1\], got 1.5"),
        (lambda: schedules.one_shot(-0.1), ValueError, r"sparsity .* got -0.1"),
        (lambda: schedules.one_shot(float("nan")), ValueError, r"sparsity .* got nan"),
        (lambda: schedules.one_shot(0.5, at=-1), ValueError, r"at must be >= 0, got -1"),
        (lambda: schedules.one_shot("0.5"), TypeError, r"sparsity must be a real number, got '0.5'"),
        (lambda: schedules.constant(0.5, every=0), ValueError, r"constant: every must be >= 1, got 0"),
        (lambda: schedules.constant(0.5, every=2.0), TypeError, r"every must be an int, got 2.0"),
        (lambda: schedules.constant(0.5, 2, begin=10, end=5), ValueError, r"end must be >= 10, got 5"),
        (lambda: schedules.periodic(0.0, 1, 0.5), ValueError, r"increment must be in \(0, 1\], got 0.0"),
        (lambda: schedules.periodic(0.1, 1, 0.5, initial=0.5), ValueError, r"initial .* got 0.5"),
        (lambda: schedules.polynomial(0.0, 1.2, 0, 10, 1), ValueError, r"final must be in \[0, 1\], got 1.2"),
        (lambda: schedules.polynomial(0.5, 0.2, 0, 10, 1), ValueError, r"final \(0.2\) must be >= initial \(0.5\)"),
        (lambda: schedules.polynomial(0.0, 0.5, 10, 10, 1), ValueError, r"end must be >= 11, got 10"),
        (lambda: schedules.polynomial(0.0, 0.5, 0, 10, 0), ValueError, r"every must be >= 1, got 0"),
        (lambda: schedules.polynomial(0.0, 0.5, 0, 10, 1, power=0), ValueError, r"power .* got 0"),
        (lambda: schedules.polynomial(0.0, 0.5, True, 10, 1), TypeError, r"begin must be an int, got True"),
        (lambda: schedules.iterative(1.0, 3, 10), ValueError, r"rate must be in \(0, 1\), got 1.0"),
        (lambda: schedules.iterative(0.2, 0, 10), ValueError, r"rounds must be >= 1, got 0"),
        (lambda: schedules.iterative(0.2, 3, 0), ValueError, r"steps_per_round must be >= 1, got 0"),
        (lambda: schedules.Polynomial(0.0, 0.5, 0, 10, 3), ValueError, r"multiple of every \(3\)"),
    ],
)
def test_bad_parameters_name_parameter_and_value(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_update_steps_on_the_host():
    sched = schedules.polynomial(0.0, 0.9, begin=10, end=40, every=10)
    steps = schedules.update_steps(sched, 100)
    assert steps.dtype == np.int64 and steps.tolist() == [10, 20, 30, 40]
    assert schedules.update_steps(sched, 31, start=15).tolist() == [20, 30]
    assert schedules.update_steps(schedules.iterative(0.2, 3, 5), 100).tolist() == [5, 10, 15]
    assert schedules.update_steps(schedules.one_shot(0.5, at=0), 1).tolist() == [0]
    assert schedules.update_steps(sched, 10).tolist() == []
    # evaluated in NumPy: no device array (and no device round trip) on the host path
    for s in (sched, schedules.iterative(0.2, 3, 5), schedules.one_shot(0.5, at=3),
              schedules.constant(0.5, every=4), schedules.periodic(0.1, 5, 0.5)):
        flags = s.is_update(np.arange(12))
        assert type(flags) is np.ndarray and flags.dtype == bool, type(flags)
        assert type(s.is_update(7)) in (np.ndarray, np.bool_)
    with pytest.raises(ValueError, match=r"update_steps: stop must be >= 5, got 4"):
        schedules.update_steps(sched, 4, start=5)
    with pytest.raises(TypeError, match=r"update_steps: stop must be an int, got 1.5"):
        schedules.update_steps(sched, 1.5)
