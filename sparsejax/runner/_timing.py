"""Wall-clock timing of jitted calls and workloads: the one timing loop of every benchmark.

Every measurement has the same shape. The first call (compilation plus one run) is
timed on its own; untimed warm-up calls follow; then ``repeats`` samples are taken.
A sample dispatches ``calls`` calls back to back and blocks once on all their outputs
(``jax.block_until_ready``), so asynchronous dispatch overlaps the host's launch cost
with the device's work, as in a training or inference loop; the sample's time divided
by ``calls`` is one per-call time. Python's garbage collector runs before each sample,
never inside one. :class:`Timing` summarises the samples robustly (median, min,
interquartile range) and may carry the device-side time of the same call
(:func:`sparsejax.runner.kernel_times`).

* :func:`time_calls` — a function and its arguments (``fn(*args)``);
* :func:`time_run` — a workload that runs one whole sample itself (a training window,
  a loop over seeds);
* :func:`time_round_robin` — several workloads, one sample of each per round, so that
  a drift of the machine (clocks, temperature, other processes) hits them alike;
* :func:`jit_flat_state` — a model's state passed as a flat list of arrays, so a timed
  call does no host-side pytree flattening.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from sparsejax.runner._profiling import KernelTimes, kernel_times

__all__ = ["Timing", "jit_flat_state", "time_calls", "time_round_robin", "time_run"]

Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of one measured call or workload.

    Attributes:
      compile_s: seconds of the first call (compilation plus one run), blocked on.
      times_s: seconds per call of every sample (the sample's time over ``calls``), in
        the order taken.
      calls: calls dispatched back to back in each sample.
      device: the device-side time per call (:class:`KernelTimes`), when requested.
    """

    compile_s: float
    times_s: tuple[float, ...]
    calls: int = 1
    device: KernelTimes | None = None

    @property
    def median_s(self) -> float:
        """Median seconds per call over the samples (the figure the tables report)."""
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        """Fastest sample, seconds per call."""
        return min(self.times_s)

    @property
    def max_s(self) -> float:
        """Slowest sample, seconds per call."""
        return max(self.times_s)

    @property
    def iqr_s(self) -> float:
        """Interquartile range of the samples (75th minus 25th percentile, linear
        interpolation), seconds per call; 0 for a single sample."""
        q1, q3 = np.percentile(np.asarray(self.times_s, np.float64), [25, 75])
        return float(q3 - q1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: compile, median, min, IQR and every sample (seconds)."""
        out: dict[str, Any] = {
            "compile_s": self.compile_s,
            "median_s": self.median_s,
            "min_s": self.min_s,
            "iqr_s": self.iqr_s,
            "times_s": list(self.times_s),
            "calls": self.calls,
        }
        if self.device is not None:
            out["device"] = self.device.to_dict()
        return out


@dataclasses.dataclass(frozen=True)
class _Measured:
    """One measured thing: how to compile it, warm it up and take one sample."""

    first: Callable[[], Any]
    warm: Callable[[], Any]
    warmup: int
    sample: Callable[[], Any]
    calls: int


def _count(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"timing: {name} must be an int >= {low}, got {value!r}")
    return int(value)


def _timed(run: Callable[[], Any], clock: Clock) -> float:
    """Seconds of ``run()`` until its outputs are ready, with the garbage collector off."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = clock()
        jax.block_until_ready(run())
        return clock() - t0
    finally:
        if enabled:
            gc.enable()


def _measure(items: Sequence[_Measured], repeats: int, clock: Clock) -> list[Timing]:
    """Compile and warm up each item in turn, then ``repeats`` rounds of one sample each."""
    compile_s = []
    for item in items:
        t0 = clock()
        jax.block_until_ready(item.first())
        compile_s.append(clock() - t0)
        for _ in range(item.warmup):
            jax.block_until_ready(item.warm())
    samples: list[list[float]] = [[] for _ in items]
    for _ in range(repeats):
        for item, times in zip(items, samples, strict=True):
            times.append(_timed(item.sample, clock) / item.calls)
    return [
        Timing(compile_s=c, times_s=tuple(t), calls=item.calls)
        for c, t, item in zip(compile_s, samples, items, strict=True)
    ]


def time_calls(
    fn: Callable[..., Any],
    *args: Any,
    repeats: int = 5,
    calls: int = 1,
    warmup: int = 2,
    block_each: bool = False,
    device_calls: int = 0,
    clock: Clock = time.perf_counter,
) -> Timing:
    """Time ``fn(*args)``: first call, ``warmup`` calls, ``repeats`` samples of ``calls`` calls.

    Every call's output is blocked on: the first and the warm-up calls one by one, a
    sample's calls together at its end (all of them, not only the last), or one by one
    with ``block_each=True`` (the latency of a lone call, host dispatch included).

    Args:
      fn: the function, usually jitted (its first call then compiles it).
      *args: its arguments (the same objects in every call).
      repeats: samples (>= 1).
      calls: calls per sample, dispatched back to back (>= 1).
      warmup: untimed calls after the first one (>= 0).
      block_each: block after every call of a sample instead of once at its end.
      device_calls: if > 0, also trace that many calls with :func:`kernel_times` and
        attach the device time per call as :attr:`Timing.device`.
      clock: seconds now (``time.perf_counter``; a fake clock in tests).

    Returns:
      :class:`Timing` (seconds per call).

    Raises:
      ValueError: a count is not an int in range.

    Example:
      >>> f = jax.jit(lambda x: x @ x)
      >>> t = time_calls(f, jnp.ones((256, 256)), repeats=5, calls=10)
      >>> t.median_s, t.iqr_s, len(t.times_s)   # doctest: +SKIP
    """
    repeats = _count(repeats, "repeats", 1)
    calls = _count(calls, "calls", 1)
    warmup = _count(warmup, "warmup", 0)
    device_calls = _count(device_calls, "device_calls", 0)

    def one():
        return fn(*args)

    if block_each:

        def sample():
            for _ in range(calls):
                jax.block_until_ready(fn(*args))

    else:

        def sample():
            return [fn(*args) for _ in range(calls)]

    (timing,) = _measure([_Measured(one, one, warmup, sample, calls)], repeats, clock)
    if device_calls:
        timing = dataclasses.replace(timing, device=kernel_times(fn, *args, calls=device_calls))
    return timing


def time_round_robin(
    runs: Sequence[Callable[[], Any]],
    *,
    repeats: int = 5,
    warmup: int = 0,
    calls: int = 1,
    first: Sequence[Callable[[], Any] | None] | None = None,
    clock: Clock = time.perf_counter,
) -> list[Timing]:
    """Time several workloads, interleaved: one sample of each per round.

    Each ``run()`` performs one whole sample (e.g. a window of training steps) and
    returns what to block on (or blocks itself and returns ``None``). In turn, each
    workload is compiled (``first[i]()``, default ``runs[i]()``: timed as
    ``compile_s``) and warmed up (``warmup`` untimed runs); then ``repeats`` rounds
    take one sample of every workload, in order.

    Args:
      runs: the workloads.
      repeats: rounds (>= 1).
      warmup: untimed runs of each workload after its first call (>= 0).
      calls: calls (steps) a run performs; times are divided by it (>= 1).
      first: per workload, the call that compiles it (e.g. one training step that
        also advances the state the runs start from), or ``None`` for the run itself.
      clock: seconds now.

    Returns:
      One :class:`Timing` per workload, in the order of ``runs``.

    Raises:
      ValueError: a count is not an int in range, or ``first`` has the wrong length.
    """
    repeats = _count(repeats, "repeats", 1)
    calls = _count(calls, "calls", 1)
    warmup = _count(warmup, "warmup", 0)
    firsts = [None] * len(runs) if first is None else list(first)
    if len(firsts) != len(runs):
        raise ValueError(f"timing: first has {len(firsts)} entries for {len(runs)} runs")
    items = [
        _Measured(f or run, run, warmup, run, calls) for run, f in zip(runs, firsts, strict=True)
    ]
    return _measure(items, repeats, clock)


def time_run(
    run: Callable[[], Any],
    *,
    repeats: int = 5,
    warmup: int = 0,
    calls: int = 1,
    first: Callable[[], Any] | None = None,
    clock: Clock = time.perf_counter,
) -> Timing:
    """Time one workload: :func:`time_round_robin` of ``[run]``.

    Example:
      >>> def window():                      # 50 training steps from the same state
      ...     s = state
      ...     for b in batches:
      ...         s, _ = step(s, b)
      ...     return s
      >>> t = time_run(window, repeats=3, warmup=1, calls=50)   # doctest: +SKIP
      >>> t.median_s                          # seconds per step    # doctest: +SKIP
    """
    return time_round_robin(
        [run], repeats=repeats, warmup=warmup, calls=calls, first=[first], clock=clock
    )[0]


def jit_flat_state(fn: Callable[..., Any], state: Any) -> tuple[Callable[..., Any], list]:
    """``(g, leaves)`` with ``g(leaves, *args) == fn(state, *args)``, jitted.

    The state (e.g. an ``nnx.State``) is flattened once here; a call of ``g`` then takes
    a plain list of arrays, so timing it measures no host-side pytree flattening.

    Args:
      fn: ``fn(state, *args)``, traceable.
      state: any pytree.

    Returns:
      The jitted ``g`` and ``state``'s leaves (pass them as the first argument).
    """
    leaves, treedef = jax.tree.flatten(state)

    def g(leaves, *args):
        return fn(jax.tree.unflatten(treedef, leaves), *args)

    return jax.jit(g), leaves
