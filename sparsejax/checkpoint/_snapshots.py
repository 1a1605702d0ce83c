"""Named snapshots: rewind points kept apart from the rolling checkpoints.

Lottery-ticket rewind points such as ``"init"`` or ``"rewind_500"`` live in
``<directory>/snapshots/<name>/<step>/``, with the items and checks of a rolling step,
untouched by the ``keep`` of :func:`~sparsejax.checkpoint.save`. Replacing one is
atomic: the new snapshot is committed under ``<name>+new`` first, then swapped in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from etils import epath

from sparsejax.checkpoint._aside import set_aside
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
_NEW, _OLD = "+new", "+old"  # "+" is never part of a name: staging and replaced copies


def _snapshot_dir(directory: str | os.PathLike, name: str) -> epath.Path:
    if not isinstance(name, str) or not _SNAPSHOT_NAME.fullmatch(name):
        raise ValueError(
            f"snapshot name must match {_SNAPSHOT_NAME.pattern} (letters, digits, _ . -), "
            f"got {name!r}"
        )
    return directory_path(directory) / _SNAPSHOTS / name


def _sibling(path: epath.Path, suffix: str) -> epath.Path:
    return path.parent / (path.name + suffix)


def _current(path: epath.Path) -> epath.Path | None:
    """Where the snapshot is: its own folder once committed; during a replacement killed
    between its two renames, the committed new copy (else the replaced one)."""
    for candidate in (path, _sibling(path, _NEW), _sibling(path, _OLD)):
        if all_steps(candidate):
            return candidate
    return None


def _settle(path: epath.Path) -> None:
    """Finish a replacement that a kill interrupted, so that ``path`` holds the snapshot
    (if any) and no staging or replaced copy is left."""
    new, old = _sibling(path, _NEW), _sibling(path, _OLD)
    run = path.parent.parent  # leftovers go to the run's aside/ folder
    if not all_steps(path):
        if path.exists():  # a first save killed half-way: never committed
            set_aside(run, path, "incomplete")
        for candidate in (new, old):
            if all_steps(candidate):
                candidate.rename(path)
                break
    if new.exists():  # staging of a replacement that never swapped in
        set_aside(run, new, "incomplete")
    if old.exists():  # the snapshot a finished replacement replaced
        old.rmtree()


def save_snapshot(
    directory: str | os.PathLike,
    name: str,
    step: int,
    state: PyTree,
    *,
    extra: PyTree | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> epath.Path:
    """Save a named rewind point (``"init"``, ``"rewind_500"``) apart from rolling checkpoints.

    Stored in ``<directory>/snapshots/<name>/<step>/`` with the same items
    and guarantees as :func:`save`; ``keep`` of the rolling checkpoints never
    removes it. With ``overwrite`` the new snapshot is saved and committed
    beside the old one, then swapped in by two renames: a kill at any point
    leaves the old snapshot or the new one, never none.

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
    _settle(path)
    if not all_steps(path):
        return save(path, step, state, extra=extra, metadata=metadata)
    if not overwrite:
        raise ValueError(
            f"snapshot {name!r} already exists in {os.fspath(path.parent)!r}; pass "
            "overwrite=True to replace it"
        )
    new, old = _sibling(path, _NEW), _sibling(path, _OLD)
    save(new, step, state, extra=extra, metadata=metadata)
    path.rename(old)
    new.rename(path)
    old.rmtree()
    return path / str(step)


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
    found = _current(path)
    if found is None:
        raise ValueError(
            f"no snapshot {name!r} in {os.fspath(path.parent)!r}; snapshots: "
            f"{snapshot_names(directory)}"
        )
    return restore_step(found, all_steps(found)[-1], target, extra_target)


def snapshot_names(directory: str | os.PathLike) -> list[str]:
    """Names of the snapshots saved in ``directory``, sorted."""
    path = directory_path(directory) / _SNAPSHOTS
    if not path.is_dir():
        return []
    names = {p.name.split("+")[0] for p in path.iterdir() if p.is_dir()}
    return sorted(n for n in names if _SNAPSHOT_NAME.fullmatch(n) and _current(path / n))
