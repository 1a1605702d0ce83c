"""Named snapshots: rewind points kept apart from the rolling checkpoints.

Lottery-ticket rewind points such as ``"init"`` or ``"rewind_500"`` live in
``<directory>/snapshots/<name>/<step>/``, with the items and checks of a rolling step,
untouched by the ``keep`` of :func:`~sparsejax.checkpoint.save`.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
from collections.abc import Mapping
from typing import Any

from sparsejax.checkpoint._steps import (
    Restored,
    all_steps,
    directory_path,
    restore_step,
    save,
)
from sparsejax.tree import PyTree

__all__ = ["restore_snapshot", "save_snapshot", "snapshot_names"]

_SNAPSHOTS = "snapshots"
_SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _snapshot_dir(directory: str | os.PathLike, name: str) -> pathlib.Path:
    if not isinstance(name, str) or not _SNAPSHOT_NAME.fullmatch(name):
        raise ValueError(
            f"snapshot name must match {_SNAPSHOT_NAME.pattern} (letters, digits, _ . -), "
            f"got {name!r}"
        )
    return directory_path(directory) / _SNAPSHOTS / name


def save_snapshot(
    directory: str | os.PathLike,
    name: str,
    step: int,
    state: PyTree,
    *,
    extra: PyTree | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Save a named rewind point (``"init"``, ``"rewind_500"``) apart from rolling checkpoints.

    Stored in ``<directory>/snapshots/<name>/<step>/`` with the same items
    and guarantees as :func:`save`; ``keep`` of the rolling checkpoints never
    removes it.

    Args:
      directory: the run's checkpoint directory.
      name: snapshot name (letters, digits, ``_``, ``.``, ``-``).
      step: the training step the snapshot was taken at.
      state: pytree of arrays (a train state, or just its params).
      extra: optional second pytree.
      metadata: JSON-serialisable dict.
      overwrite: replace an existing snapshot of that name (else ValueError).

    Returns:
      The snapshot's step directory.

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (rewinding to
      initialisation); Frankle, Dziugaite, Roy & Carbin, "Linear Mode
      Connectivity and the Lottery Ticket Hypothesis", ICML 2020 (rewinding to
      an early iteration ``k``).

    Example:
      >>> import tempfile, jax.numpy as jnp
      >>> from sparsejax import checkpoint
      >>> run = tempfile.mkdtemp()
      >>> _ = checkpoint.save_snapshot(run, "init", 0, {"w": jnp.ones(3)})
      >>> checkpoint.snapshot_names(run), checkpoint.all_steps(run)
      (['init'], [])
    """
    path = _snapshot_dir(directory, name)
    if path.exists():
        if not overwrite:
            raise ValueError(
                f"snapshot {name!r} already exists in {os.fspath(path.parent)!r}; pass "
                "overwrite=True to replace it"
            )
        shutil.rmtree(path)
    return save(path, step, state, extra=extra, metadata=metadata)


def restore_snapshot(
    directory: str | os.PathLike,
    name: str,
    target: PyTree,
    *,
    extra_target: PyTree | None = None,
) -> Restored:
    """Restore the named snapshot into ``target``'s structure (see :func:`restore`).

    Raises:
      ValueError: no snapshot of that name (the existing names are listed).
      CorruptCheckpointError: the snapshot is incomplete or damaged.
    """
    path = _snapshot_dir(directory, name)
    steps = all_steps(path)
    if not steps:
        raise ValueError(
            f"no snapshot {name!r} in {os.fspath(path.parent)!r}; snapshots: "
            f"{snapshot_names(directory)}"
        )
    return restore_step(path, steps[-1], target, extra_target)


def snapshot_names(directory: str | os.PathLike) -> list[str]:
    """Names of the snapshots saved in ``directory``, sorted."""
    path = directory_path(directory) / _SNAPSHOTS
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and all_steps(p))
