"""Versions, device and provenance recorded next to every result."""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import subprocess
import sys
from typing import Any

import jax

__all__ = ["environment"]


def environment(load_at_start: float | None = None) -> dict[str, Any]:
    """Versions, device and provenance recorded next to every result.

    Args:
      load_at_start: the host's 1-minute load average when the measurement
        began (``os.getloadavg()[0]``); with it the result also records the
        load now, as ``load_average_1m = {"start", "end"}`` (timings taken on a
        shared host are read against it).

    Returns:
      A JSON-serialisable dict: date, command line, git commit, Python, jax /
      flax / optax versions, backend, device kind and count, machine, CPU
      count and ``XLA_FLAGS``.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=pathlib.Path(__file__).resolve().parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    import flax
    import optax

    dev = jax.devices()[0]
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_commit": commit or None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    if load_at_start is not None:
        env["load_average_1m"] = {"start": load_at_start, "end": os.getloadavg()[0]}
    return env
