"""Per-kernel device time of a jitted call, read from a ``jax.profiler`` trace.

Wall-clock timing says *how much* faster a pruned or shrunk model is; the
kernel breakdown says *why not more*: whether the smaller model launches the
same number of kernels, which kernels did not get faster, and how much of the
wall time the device is busy at all. :func:`kernel_times` runs a function
under ``jax.profiler.trace`` and sums the events of the device's stream lines
(on NVIDIA GPUs, one event per kernel or memory copy) by name, with
``jax.profiler.ProfileData`` (no TensorFlow or TensorBoard needed).

Example (GPU)::

    f = jax.jit(model_forward)
    prof = kernel_times(f, params, x, calls=20)
    print(prof.busy_us, prof.kernels)     # device-busy µs and kernels per call
    print(prof.table(top=10))             # the ten longest kernels
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

import jax

__all__ = ["KernelTimes", "kernel_times"]


@dataclasses.dataclass(frozen=True)
class KernelTimes:
    """Device time of one call, averaged over the traced calls.

    Attributes:
      calls: number of traced calls.
      busy_us: summed duration of all events per call (µs): the device's busy time.
      span_us: first event start to last event end, divided by ``calls`` (µs).
      kernels: events (kernel launches, copies) per call.
      by_name: ``(name, µs per call, launches per call)``, longest total first.
    """

    calls: int
    busy_us: float
    span_us: float
    kernels: float
    by_name: tuple[tuple[str, float, float], ...]

    def table(self, top: int = 10, width: int = 80) -> str:
        """Markdown table of the ``top`` longest kernels (names cut to ``width`` characters)."""
        rows = ["| kernel | µs / call | launches / call | share of busy |", "|---|---|---|---|"]
        for name, us, n in self.by_name[:top]:
            share = us / self.busy_us if self.busy_us else 0.0
            rows.append(f"| `{name[:width]}` | {us:.1f} | {n:g} | {share:.1%} |")
        return "\n".join(rows)

    def to_dict(self, top: int = 25) -> dict[str, Any]:
        """JSON-ready summary with the ``top`` longest kernels."""
        return {
            "calls": self.calls,
            "busy_us": self.busy_us,
            "span_us": self.span_us,
            "kernels": self.kernels,
            "top": [{"name": n, "us": us, "launches": c} for n, us, c in self.by_name[:top]],
        }


def _profile_data_class():
    cls = getattr(jax.profiler, "ProfileData", None)
    if cls is None:  # pragma: no cover - jax releases before ProfileData
        raise RuntimeError(
            f"kernel_times needs jax.profiler.ProfileData, which jax {jax.__version__} lacks; "
            "upgrade jax"
        )
    return cls


def kernel_times(
    fn: Callable[..., Any],
    *args: Any,
    calls: int = 10,
    plane_prefix: str = "/device:GPU",
    line_prefix: str = "Stream",
) -> KernelTimes:
    """Trace ``calls`` calls of ``fn(*args)`` and sum the device events by name.

    ``fn`` is called once before tracing (compilation, warm-up); the traced
    calls are dispatched back to back and blocked on once, as a throughput
    loop would. Events are taken from the planes whose name starts with
    ``plane_prefix`` and, in them, from the lines whose name starts with
    ``line_prefix`` (XLA:GPU's ``Stream #…`` lines hold one event per kernel or
    copy). On a backend without such planes (CPU) the result is empty: zero
    busy time and no kernels.

    Args:
      fn: the function to profile, usually jitted.
      *args: its arguments.
      calls: traced calls (>= 1).
      plane_prefix: which trace planes count.
      line_prefix: which lines of those planes count.

    Returns:
      :class:`KernelTimes`, per call.

    Raises:
      ValueError: ``calls`` is not a positive int.
    """
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
        raise ValueError(f"kernel_times: calls must be an int >= 1, got {calls!r}")
    jax.block_until_ready(fn(*args))
    profile_data = _profile_data_class()
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            out = [fn(*args) for _ in range(calls)]
            jax.block_until_ready(out)
        files = sorted(pathlib.Path(tmp).rglob("*.xplane.pb"))
        if not files:
            raise RuntimeError(f"kernel_times: jax.profiler.trace wrote no .xplane.pb under {tmp}")
        data = profile_data.from_file(str(files[-1]))
        total: collections.Counter[str] = collections.Counter()
        count: collections.Counter[str] = collections.Counter()
        first = last = None
        for plane in data.planes:
            if not plane.name.startswith(plane_prefix):
                continue
            for line in plane.lines:
                if not line.name.startswith(line_prefix):
                    continue
                for event in line.events:
                    start, duration = event.start_ns, event.duration_ns
                    total[event.name] += duration
                    count[event.name] += 1
                    first = start if first is None else min(first, start)
                    last = start + duration if last is None else max(last, start + duration)
    by_name = tuple(
        (name, ns / calls / 1e3, count[name] / calls) for name, ns in total.most_common()
    )
    return KernelTimes(
        calls=calls,
        busy_us=sum(total.values()) / calls / 1e3,
        span_us=0.0 if first is None else (last - first) / calls / 1e3,
        kernels=sum(count.values()) / calls,
        by_name=by_name,
    )
