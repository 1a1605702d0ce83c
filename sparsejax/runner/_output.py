"""Run directories and results files.

Every study writes into one output directory:

* ``config.json`` — the full frozen config plus the environment (jax version,
  device kind, git commit, command line, date), see :func:`prepare_output_dir`;
* ``results.json`` — per-seed rows and the mean ± std aggregate (:func:`write_json`);
* ``results.md`` — the aggregate as a markdown table;
* plots (PNG), see :func:`sparsejax.runner.tradeoff_curve`.

Every benchmark writes one JSON file and its markdown table beside it
(:func:`write_report`).
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from sparsejax.runner._environment import environment

__all__ = ["prepare_output_dir", "write_json", "write_report"]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic, jax.Array)):
        return _jsonable(np.asarray(obj).tolist())
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | pathlib.Path, data: Any) -> pathlib.Path:
    """Write ``data`` as indented JSON (numpy/jax scalars converted, paths as strings,
    NaN and infinities → null); creates the parent directories. Returns the path."""
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
