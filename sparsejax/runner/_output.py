"""Run folders and result files: nothing deleted implicitly, every file written atomically.

A study writes into one output folder (a local path or any path orbax accepts, such as
``gs://bucket/run``, through ``etils.epath``):

* ``config.json`` — the full config plus the environment, written when the run starts in
  a fresh folder (:func:`prepare_output_dir`); a non-empty folder is refused unless the run
  is told to ``resume`` (same config, continue) or to ``overwrite`` (the old run is moved
  aside, never deleted);
* ``results.json`` / ``results.md`` / figures (PNG and PDF) — written only on success.

Every file goes through :func:`atomic_write`: a local file is written to a temporary file
in the same folder and ``os.replace``d, so a kill leaves the old file or the new one, never
a truncated one (an object store publishes an object only once its upload completes).
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sparsejax.checkpoint import directory_path
from sparsejax.runner._config import ConfigError
from sparsejax.runner._environment import environment

__all__ = [
    "as_path",
    "atomic_write",
    "prepare_output_dir",
    "save_figure",
    "write_json",
    "write_report",
    "write_text",
]

# Config fields that may differ between a run and its resumption.
RESUME_IGNORED = ("resume", "overwrite", "progress", "log", "out", "plugin")


def as_path(path: str | os.PathLike) -> Any:
    """A ``pathlib``-like path: local paths as ``pathlib.Path``, URIs (``gs://``, ``s3://``, ...)
    as ``etils.epath.Path`` (the path type orbax uses), path objects as they are."""
    if isinstance(path, pathlib.Path):
        return path
    if isinstance(path, str):
        if "://" in path:  # file://, gs://, ...: the rule of checkpoint directories
            return directory_path(path)
        return pathlib.Path(path)
    if hasattr(path, "write_bytes") and hasattr(path, "parent"):
        return path  # an epath.Path or another pathlib-like object
    return pathlib.Path(os.fspath(path))


def _is_local(path: Any) -> bool:
    return "://" not in str(path)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Any:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    Local: a temporary file in the same folder, flushed and ``fsync``ed, then ``os.replace``d
    over ``path`` (removed if anything fails). Other paths (``epath``): written directly,
    as object stores publish an object only when its upload completes. Parent folders are
    created. Returns the path.
    """
    path = as_path(path)
    raw = data.encode() if isinstance(data, str) else bytes(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not _is_local(path):
        path.write_bytes(raw)
        return path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray) or type(obj).__module__.startswith(("jax", "jaxlib")):
        return _jsonable(np.asarray(obj).tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, pathlib.PurePath) or hasattr(obj, "__fspath__"):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_text(path: str | os.PathLike, text: str) -> Any:
    """Write ``text`` atomically (:func:`atomic_write`). Returns the path."""
    return atomic_write(path, text)


def write_json(path: str | os.PathLike, data: Any) -> Any:
    """Write ``data`` as indented JSON, atomically (numpy/jax scalars and arrays converted,
    paths as strings, NaN and infinities as ``null``). Returns the path."""
    return atomic_write(path, json.dumps(_jsonable(data), indent=2) + "\n")


def write_report(path: str | os.PathLike, data: Any, markdown: str) -> Any:
    """A benchmark's results: ``data`` as JSON at ``path`` (see :func:`write_json`) and
    ``markdown`` beside it, at ``path`` with the suffix ``.md``. Returns the JSON path."""
    path = write_json(path, data)
    write_text(path.with_suffix(".md"), markdown.rstrip("\n") + "\n")
    return path


def save_figure(fig: Any, path: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 200) -> list[Any]:
    """Save a matplotlib Figure in every format of ``formats`` (``path``'s suffix replaced),
    each file written atomically. Returns the paths written."""
    path = as_path(path)
    written = []
    for fmt in formats:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
        written.append(atomic_write(path.with_suffix(f".{fmt}"), buffer.getvalue()))
    return written


def _is_empty(out: Any) -> bool:
    return not out.exists() or (out.is_dir() and not any(True for _ in out.iterdir()))


def _aside(out: Any) -> Any:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        target = out.with_name(f"{out.name}.replaced-{stamp}" + (f"-{i}" if i else ""))
        if not target.exists():
            return target
    raise RuntimeError(f"no free name to move {out} aside")


def _config_changes(recorded: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    keys = sorted((set(recorded) | set(config)) - set(RESUME_IGNORED))
    return [k for k in keys if recorded.get(k) != config.get(k)]


def prepare_output_dir(
    directory: str | os.PathLike,
    config: Mapping[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    study: str | None = None,
    field: str = "out",
) -> Any:
    """Make ``directory`` the folder of a run, deleting nothing.

    * missing or empty: created, and ``config.json`` (``config``, the environment and the
      study's name) written into it;
    * non-empty, ``resume=True``: kept as it is (the run continues there); its
      ``config.json`` must record the same config, up to :data:`RESUME_IGNORED` fields;
    * non-empty, ``overwrite=True``: the old folder is renamed to
      ``<name>.replaced-<UTC time>`` beside it (printed), then a fresh one is made;
    * non-empty otherwise: refused.

    Args:
      directory: a local path, a ``gs://``-style URI or an ``epath.Path``.
      config: the run's config (:func:`config_to_dict`).
      resume: continue the run recorded in the folder.
      overwrite: move an existing run aside and start afresh.
      study: the study's name, recorded in ``config.json``.
      field: the config field the folder came from (named in errors).

    Returns:
      The folder as a path object (``pathlib.Path`` or ``epath.Path``).

    Raises:
      ConfigError: a non-empty folder without ``resume`` / ``overwrite`` (naming both), both
        given, a file in the way, or a resumed folder with another config or none.
    """
    out = as_path(directory)
    if resume and overwrite:
        raise ConfigError(field, str(out), "pass --resume or --overwrite, not both")
    if out.exists() and not out.is_dir():
        raise ConfigError(field, str(out), "is a file, not a folder")
    record = {"config": dict(config), "environment": environment()}
    if study is not None:
        record = {"study": study, **record}
    if not _is_empty(out):
        if resume:
            saved = out / "config.json"
            if not saved.exists():
                raise ConfigError(field, str(out), "holds no config.json: not a run folder to "
                                  "resume; pass --overwrite to move it aside")
            recorded = json.loads(saved.read_text()).get("config", {})
            changed = _config_changes(recorded, record["config"])
            if changed:
                diff = ", ".join(f"{k}: {recorded.get(k)!r} -> {config.get(k)!r}"
                                 for k in changed)
                raise ConfigError(field, str(out), f"--resume needs the recorded config; "
                                  f"changed: {diff}")
            return out
        if not overwrite:
            raise ConfigError(field, str(out), "is not empty (it holds a previous run): pass "
                              "--resume to continue that run or --overwrite to move it aside")
        target = _aside(out)
        out.rename(target)
        print(f"moved the previous run aside: {out} -> {target}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", record)
    return out
