"""Metric writers: one interface, a JSON-lines file by default, TensorBoard as an extra.

:class:`MetricWriter` is what :func:`sparsejax.train.train` and the studies write to:
``write_scalars(step, {name: value})``, where a value is a number or one number per
vmapped seed. :class:`JsonlWriter` appends one JSON object per call to ``metrics.jsonl``;
:class:`TensorBoardWriter` writes TensorBoard event files with TensorBoard's own
``tensorboard.summary.Writer`` (``pip install 'sparsejax[tensorboard]'``);
:func:`create_writer` builds the writers a study's ``--log`` names, and
:meth:`MetricWriter.scoped` prefixes names (``dense/train/minibatch_loss``).
"""

from __future__ import annotations

import abc
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sparsejax.runner._output import as_path, atomic_write

__all__ = [
    "WRITERS",
    "JsonlWriter",
    "MetricWriter",
    "MultiWriter",
    "TensorBoardWriter",
    "create_writer",
]

#: The writer kinds :func:`create_writer` (and a study's ``--log``) accepts.
WRITERS: tuple[str, ...] = ("jsonl", "tensorboard")


def _values(value: Any) -> float | list[float]:
    array = np.asarray(value, np.float64)
    if array.ndim == 0:
        return float(array)
    return [float(v) for v in array.reshape(-1)]


class MetricWriter(abc.ABC):
    """Where scalar metrics go. Subclasses implement :meth:`_write` (and may override
    :meth:`flush` / :meth:`close`); every writer is a context manager."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Record ``scalars`` (name -> number, or a sequence of one number per seed) at
        ``step`` (a non-negative int)."""
        if isinstance(step, bool) or int(step) != step or step < 0:
            raise ValueError(f"write_scalars: step must be an int >= 0, got {step!r}")
        self._write(int(step), {str(k): _values(v) for k, v in scalars.items()})

    @abc.abstractmethod
    def _write(self, step: int, scalars: dict[str, float | list[float]]) -> None:
        """Record already validated ``scalars`` at ``step``: what a writer does."""

    def flush(self) -> None:  # noqa: B027 - optional: a writer without a buffer has nothing to do
        """Make everything written so far durable."""

    def close(self) -> None:
        """Flush and release the writer."""
        self.flush()

    def scoped(self, prefix: str) -> MetricWriter:
        """This writer with every name prefixed by ``prefix/``."""
        return _Prefixed(self, prefix.strip("/"))

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Prefixed(MetricWriter):
    def __init__(self, inner: MetricWriter, prefix: str):
        self.inner, self.prefix = inner, prefix

    def _write(self, step: int, scalars: dict[str, float | list[float]]) -> None:
        self.inner._write(step, {f"{self.prefix}/{k}": v for k, v in scalars.items()})

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:  # the scope does not own the inner writer
        self.inner.flush()


class JsonlWriter(MetricWriter):
    """One JSON object per :meth:`write_scalars` call, appended to ``path``:
    ``{"step": 100, "time": <unix seconds>, "<name>": value or [per seed], ...}``
    (NaN and infinities as ``null``). A resumed run appends to the same file. On a
    ``gs://``-style path the lines are kept and the whole file rewritten at each flush."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._remote = "://" in self.path
        self._lines: list[str] = []
        if self._remote:
            existing = as_path(self.path)
            if existing.exists():
                self._lines = existing.read_text().splitlines(keepends=True)
        self._file = None  # opened at the first write: a run that logs nothing leaves no file

    def _write(self, step: int, scalars: dict[str, float | list[float]]) -> None:
        def clean(v):
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v if math.isfinite(v) else None

        row = {"step": step, "time": round(time.time(), 3)}
        row.update({k: clean(v) for k, v in scalars.items()})
        if self._remote:
            self._lines.append(json.dumps(row) + "\n")
            return
        if self._file is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        if self._remote:
            if self._lines:
                atomic_write(self.path, "".join(self._lines))
        elif self._file is not None and not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        self.flush()
        if self._file is not None and not self._file.closed:
            self._file.close()


class TensorBoardWriter(MetricWriter):
    """TensorBoard event files in ``logdir``, written by ``tensorboard.summary.Writer``
    (TensorBoard's own numpy-only writer). A per-seed value is written as ``<name>/seed_<i>``
    plus its mean as ``<name>``.

    Raises:
      ImportError: naming the extra to install, when ``tensorboard`` is missing.
    """

    def __init__(self, logdir: str | os.PathLike):
        try:
            from tensorboard.summary import Writer
        except ImportError as err:
            raise ImportError(
                "TensorBoard logging needs the tensorboard package: "
                "pip install 'sparsejax[tensorboard]'"
            ) from err
        self.logdir = os.fspath(logdir)
        self._writer = Writer(self.logdir)

    def _write(self, step: int, scalars: dict[str, float | list[float]]) -> None:
        for name, value in scalars.items():
            if isinstance(value, list):
                for i, v in enumerate(value):
                    self._writer.add_scalar(f"{name}/seed_{i}", v, step)
                value = float(np.mean(value)) if value else math.nan
            self._writer.add_scalar(name, value, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MultiWriter(MetricWriter):
    """Every call forwarded to each of ``writers`` (none: metrics are dropped)."""

    def __init__(self, writers: Sequence[MetricWriter] = ()):
        self.writers = tuple(writers)

    def _write(self, step: int, scalars: dict[str, float | list[float]]) -> None:
        for w in self.writers:
            w._write(step, scalars)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()


def create_writer(kinds: Sequence[str], folder: str | os.PathLike) -> MultiWriter:
    """The writers named in ``kinds`` (:data:`WRITERS`) for a run folder: ``jsonl`` writes
    ``<folder>/metrics.jsonl``, ``tensorboard`` event files in ``<folder>/tensorboard/``.

    Raises:
      ValueError: an unknown kind. ImportError: ``tensorboard`` without the package.

    Example:
      >>> with create_writer(["jsonl"], "/tmp/run") as writer:      # doctest: +SKIP
      ...     writer.scoped("dense").write_scalars(100, {"train/minibatch_loss": 0.25})
    """
    unknown = [k for k in kinds if k not in WRITERS]
    if unknown:
        raise ValueError(f"unknown metric writers {unknown}; known: {list(WRITERS)}")
    folder = os.fspath(folder)
    writers: list[MetricWriter] = []
    for kind in dict.fromkeys(kinds):
        if kind == "jsonl":
            writers.append(JsonlWriter(os.path.join(folder, "metrics.jsonl")))
        else:
            writers.append(TensorBoardWriter(os.path.join(folder, "tensorboard")))
    return MultiWriter(writers)
