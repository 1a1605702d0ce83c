"""Run directories, results files, seed aggregation and markdown tables.

Every experiment writes into one output directory:

* ``config.json`` — the full frozen config plus the environment (jax version,
  device kind, git commit, command line, date);
* ``results.json`` — per-seed rows and the mean ± std aggregate;
* ``results.md`` — the aggregate as a markdown table;
* plots (PNG), see :mod:`sparsejax.runner.plots`.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

__all__ = [
    "aggregate",
    "environment",
    "markdown_table",
    "prepare_output_dir",
    "write_json",
    "write_report",
]


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


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic, jax.Array)):
        return _jsonable(np.asarray(obj).tolist())
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | pathlib.Path, data: Any) -> pathlib.Path:
    """Write ``data`` as indented JSON (numpy/jax scalars converted, NaN → null)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
    return path


def write_report(path: str | pathlib.Path, data: Any, markdown: str) -> pathlib.Path:
    """A benchmark's results: ``data`` as JSON at ``path`` (see :func:`write_json`) and
    ``markdown`` beside it, at ``path`` with the suffix ``.md``. Returns the JSON path."""
    path = write_json(path, data)
    path.with_suffix(".md").write_text(markdown.rstrip("\n") + "\n")
    return path


def prepare_output_dir(directory: str | pathlib.Path, config: Mapping[str, Any]) -> pathlib.Path:
    """Create ``directory`` and write ``config.json`` (config + environment) into it."""
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"config": dict(config), "environment": environment()})
    return out


def aggregate(
    rows: Iterable[Mapping[str, Any]], keys: Sequence[str], values: Sequence[str]
) -> list[dict[str, Any]]:
    """Group ``rows`` by ``keys`` and give mean, std (ddof=0) and n of each of ``values``.

    Returns one dict per group, in first-seen order, with ``<value>_mean``,
    ``<value>_std`` and ``n``.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, members in groups.items():
        agg: dict[str, Any] = dict(zip(keys, key, strict=True))
        agg["n"] = len(members)
        for v in values:
            xs = np.asarray([m[v] for m in members], dtype=np.float64)
            agg[f"{v}_mean"] = float(xs.mean())
            agg[f"{v}_std"] = float(xs.std())
        out.append(agg)
    return out


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Render rows as a markdown table; ``columns`` are ``(header, format)`` pairs.

    A format is a ``str.format`` template over the row's keys, e.g.
    ``("accuracy", "{accuracy_mean:.2%} ± {accuracy_std:.2%}")``.
    """
    head = "| " + " | ".join(h for h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt.format(**row) for _, fmt in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])
