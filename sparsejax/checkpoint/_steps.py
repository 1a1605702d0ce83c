"""Rolling checkpoint steps: listing, the orbax manager, save and restore.

A checkpoint is one orbax ``CheckpointManager`` step directory ``<directory>/<step>/``,
committed by its record (:mod:`~sparsejax.checkpoint._record`); :func:`save` lists its
items, :func:`restore` how a damaged step is detected and set aside.
"""

from __future__ import annotations

import datetime
import json
import os
import traceback
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from sparsejax.checkpoint._aside import incomplete_entries, set_aside
from sparsejax.checkpoint._leaves import (
    abstract,
    check_target,
    checksums,
    from_savable,
    inventory,
    to_savable,
)
from sparsejax.checkpoint._paths import directory_path
from sparsejax.checkpoint._record import (
    CorruptCheckpointError,
    check_record,
    has_record,
    remove_record,
    write_record,
)
from sparsejax.tree import PyTree

__all__ = [
    "CorruptCheckpointError",
    "Restored",
    "all_steps",
    "check_metadata",
    "delete",
    "directory_path",
    "latest_step",
    "restore",
    "save",
]

_FORMAT = "sparsejax.checkpoint/1"


class Restored(NamedTuple):
    """What :func:`restore` returns.

    Attributes:
      step: the checkpoint's step.
      state: the state pytree, with the target's structure.
      extra: the ``extra`` pytree (``None`` unless ``extra_target`` was given).
      metadata: the JSON metadata dict given to :func:`save` (``{}`` if none).
    """

    step: int
    state: PyTree
    extra: PyTree | None
    metadata: dict[str, Any]


# --------------------------------------------------------------------------- directories


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    return int(step)


def _manager(directory: epath.Path) -> ocp.CheckpointManager:
    # Retention (``keep``) is applied by :func:`save` after the commit record: orbax's
    # ``max_to_keep`` would remove old steps before the new one counts as committed.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(directory, options=options)


def all_steps(directory: str | os.PathLike) -> list[int]:
    """Committed checkpoint steps in ``directory``, ascending (``[]`` if it does not exist).

    A step is committed when its directory holds the commit record that
    :func:`save` writes last. Interrupted saves are not steps: orbax's
    ``<step>.orbax-checkpoint-tmp-*`` directories and step directories
    without a record (killed between orbax's commit and the record); the next
    :func:`save` moves them aside. A step's content is checked only by
    :func:`restore`.
    """
    path = directory_path(directory)
    if not path.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in path.iterdir()
        if p.name.isdigit() and p.is_dir() and has_record(p)
    )


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest committed step in ``directory``, or ``None``.

    It may still turn out corrupt: ``restore(directory, target)`` (with
    ``step=None``) falls back to the newest step that restores.
    """
    steps = all_steps(directory)
    return steps[-1] if steps else None


def delete(directory: str | os.PathLike, step: int) -> None:
    """Remove the checkpoint of ``step`` (e.g. a corrupt one, or another run's newer steps).

    The commit record goes first: a removal killed half-way leaves an
    incomplete step, which is never listed or restored.
    """
    path = directory_path(directory)
    step_dir = path / str(_check_step(step))
    if not step_dir.is_dir():
        raise ValueError(f"no checkpoint of step {step} in {os.fspath(path)!r}")
    remove_record(step_dir)
    step_dir.rmtree()


# --------------------------------------------------------------------------- save


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a metadata dict; return its JSON round trip (what :func:`restore` gives back).

    Raises:
      TypeError: not a dict, or not JSON-serialisable (the message names the culprit).
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as err:
        raise TypeError(f"metadata must be JSON-serialisable: {err}") from err


def save(
    directory: str | os.PathLike,
    step: int,
    state: PyTree,
    *,
    extra: PyTree | None = None,
    metadata: Mapping[str, Any] | None = None,
    keep: int | None = None,
    overwrite: bool = False,
) -> epath.Path:
    """Save ``state`` (and ``extra``, ``metadata``) as checkpoint ``step`` of ``directory``.

    Synchronous: when this returns, the step is committed. Pure with respect
    to its inputs; writes only under ``directory``: a local path, a
    ``file://`` URL or any path orbax accepts (``gs://bucket/run``, through
    ``etils.epath``). Saving is single-process.

    The step directory ``<directory>/<step>/`` holds a ``Composite`` of items:

    ============  ================================================================
    item          content
    ============  ================================================================
    ``state``     the state pytree (``StandardSave``): for a
                  :class:`sparsejax.train.TrainState` the params, BatchNorm
                  statistics, optimizer state -- including the mask and step of
                  the sparsejax pruning transforms, which live there -- the step,
                  the PRNG key and the data position ``(epoch, batch)``
    ``extra``     optional second pytree, e.g. a standalone mask or a lottery
                  ticket's original weights
    ``metadata``  the caller's JSON dict (config, metrics, data seed, ...)
    ``manifest``  JSON written by this module: every leaf's path, shape, dtype
                  and a ``uint32`` checksum of its bytes
    ============  ================================================================

    After orbax's commit, ``sparsejax_commit.json`` is written last
    (atomically): the size of every file of the step, a SHA-256 of the small
    ones (metadata, manifest, orbax's metadata) and of the record itself. The
    step counts only from then on. Before writing, interrupted saves (see
    :func:`all_steps`) are moved to ``<directory>/aside/`` with a
    ``RuntimeWarning`` naming them: nothing is deleted implicitly, and a run
    killed at any point -- also during its first save -- saves again.

    Args:
      directory: the run's checkpoint directory (created if needed).
      step: the checkpoint's step, larger than every step already there.
      state: pytree of arrays, e.g. a :class:`sparsejax.train.TrainState`
        (static fields such as the graphdef and optimizer are not saved; the
        target given to :func:`restore` provides them).
      extra: optional second pytree of arrays (a standalone mask, ...).
      metadata: JSON-serialisable dict stored beside the arrays.
      keep: keep only the newest ``keep`` steps (``None``: keep all), removed
        once the new step is committed. Snapshots are never removed.
      overwrite: first delete existing steps ``>= step`` (checkpoints of an
        abandoned continuation of the run). Without it they raise.

    Returns:
      The step directory.

    Raises:
      ValueError: ``step`` not larger than an existing step (without
        ``overwrite``), bad ``keep``.
      TypeError: non-JSON ``metadata``.

    Example:
      >>> import optax, tempfile
      >>> from flax import nnx
      >>> from sparsejax import checkpoint, train
      >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
      >>> state = train.create_train_state(model, optax.adam(1e-3), key=0)
      >>> run = tempfile.mkdtemp()
      >>> _ = checkpoint.save(run, 0, state, metadata={"lr": 1e-3})
      >>> checkpoint.all_steps(run)
      [0]
    """
    path = directory_path(directory)
    step = _check_step(step)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be None or an int >= 1, got {keep!r}")
    user_metadata = check_metadata(metadata)
    clash = [s for s in all_steps(path) if s >= step]
    if clash and not overwrite:
        raise ValueError(
            f"cannot save step {step} in {os.fspath(path)!r}: it already holds steps {clash}; "
            "pass overwrite=True to replace them or delete them"
        )
    manifest = {
        "format": _FORMAT,
        "step": step,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "versions": {
            "jax": jax.__version__,
            "orbax-checkpoint": getattr(ocp, "__version__", "unknown"),
        },
        "state": inventory(state),
        "extra": None if extra is None else inventory(extra),
    }
    items = {
        "state": ocp.args.StandardSave(to_savable(state)),
        "metadata": ocp.args.JsonSave(user_metadata),
        "manifest": ocp.args.JsonSave(manifest),
    }
    if extra is not None:
        items["extra"] = ocp.args.StandardSave(to_savable(extra))
    for entry in incomplete_entries(path):
        set_aside(path, entry, "incomplete", stacklevel=3)
    for s in clash:
        delete(path, s)
    with _manager(path) as manager:
        saved = manager.save(step, args=ocp.args.Composite(**items))
        manager.wait_until_finished()
    if not saved:
        raise RuntimeError(f"orbax declined to save step {step} in {os.fspath(path)!r}")
    step_dir = path / str(step)
    write_record(step_dir, step)
    if keep is not None:
        for s in all_steps(path)[:-keep]:
            delete(path, s)
    return step_dir


# --------------------------------------------------------------------------- restore


def _read_manifest(manager: ocp.CheckpointManager, step: int, where: str) -> dict[str, Any]:
    try:
        manifest = manager.restore(
            step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore())
        ).manifest
    except Exception as err:
        raise CorruptCheckpointError(
            f"checkpoint {where} (step {step}): unreadable manifest ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise CorruptCheckpointError(
            f"checkpoint {where} (step {step}): the manifest is not a {_FORMAT} manifest"
        )
    for what in ("state", "extra"):
        leaves = manifest.get(what)
        if what == "extra" and leaves is None:
            continue
        if not isinstance(leaves, list) or not all(
            isinstance(e, dict)
            and isinstance(e.get("path"), str)
            and isinstance(e.get("shape"), list)
            and isinstance(e.get("dtype"), str)
            and isinstance(e.get("checksum"), int)
            for e in leaves
        ):
            raise CorruptCheckpointError(
                f"checkpoint {where} (step {step}): the manifest's {what!r} inventory is malformed"
            )
    return manifest


def _verify(what: str, tree: PyTree, saved: list[dict[str, Any]], where: str, step: int) -> None:
    sums = jax.device_get(checksums(to_savable(tree)))
    for entry, s in zip(saved, sums, strict=True):
        if int(s) != entry["checksum"]:
            raise CorruptCheckpointError(
                f"checkpoint {where} (step {step}): {what} leaf {entry['path']!r} fails its "
                f"checksum (read {int(s)}, saved {entry['checksum']})"
            )


def restore_step(
    directory: epath.Path, step: int, target: PyTree, extra_target: PyTree | None
) -> Restored:
    """Restore step ``step`` of ``directory`` (an absolute path), with every damage check."""
    where = os.fspath(directory / str(step))
    if not (directory / str(step)).is_dir():
        raise ValueError(
            f"no checkpoint of step {step} in {os.fspath(directory)!r}; steps: "
            f"{all_steps(directory)}"
        )
    check_record(directory / str(step), step)
    with _manager(directory) as manager:
        manifest = _read_manifest(manager, step, where)
        check_target("state", target, manifest["state"], where)
        items = {
            "state": ocp.args.StandardRestore(abstract(target)),
            "metadata": ocp.args.JsonRestore(),
        }
        if extra_target is not None:
            if manifest["extra"] is None:
                raise ValueError(f"extra_target given, but checkpoint {where} has no extra item")
            check_target("extra", extra_target, manifest["extra"], where)
            items["extra"] = ocp.args.StandardRestore(abstract(extra_target))
        try:
            out = manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as err:
            # Free the locals of orbax's failed asyncio frames now (the traceback text stays):
            # kept alive, their pending coroutines would be finalised at some later garbage
            # collection, after orbax closed their event loop.
            traceback.clear_frames(err.__traceback__)
            raise CorruptCheckpointError(
                f"checkpoint {where} (step {step}) cannot be read: {type(err).__name__}: {err}"
            ) from err
    state = from_savable(out.state, target)
    _verify("state", state, manifest["state"], where, step)
    extra = None
    if extra_target is not None:
        extra = from_savable(out.extra, extra_target)
        _verify("extra", extra, manifest["extra"], where, step)
    if not isinstance(out.metadata, dict):
        raise CorruptCheckpointError(
            f"checkpoint {where} (step {step}): the metadata is a "
            f"{type(out.metadata).__name__}, not the dict that was saved"
        )
    return Restored(step=step, state=state, extra=extra, metadata=out.metadata)


def restore(
    directory: str | os.PathLike,
    target: PyTree,
    step: int | None = None,
    *,
    extra_target: PyTree | None = None,
    move_damaged_aside: bool = True,
) -> Restored:
    """Restore a checkpoint into the structure of ``target``.

    Restoring always goes through a *target*: orbax rebuilds the target's own
    tree, so NamedTuple optimizer states (``ScaleByAdamState``,
    ``PruningState``), ``nnx.State`` and other custom nodes come back as they
    were, and the values come back bit for bit. Typed PRNG keys
    (``jax.random.key``) are stored as their ``uint32`` key data and rewrapped.

    How a damaged checkpoint is detected:

    1. *Uncommitted*: orbax writes into ``<step>.orbax-checkpoint-tmp-*`` and
       renames it to ``<step>`` when every item is written; then :func:`save`
       writes ``sparsejax_commit.json``, last. A save killed before either
       leaves no committed step: it is never listed or restored (a
       ``RuntimeWarning`` names it) and the next :func:`save` moves it aside.
    2. *Damaged record or files*: the record must be intact (its own SHA-256,
       its shape, its step); every file it lists must exist with its size, and
       the small ones -- the metadata (where drivers keep their state), the
       manifest, orbax's metadata -- with their SHA-256. Checked before orbax
       reads anything; the error names the file.
    3. *Unreadable*: errors of orbax / tensorstore while reading (e.g. an array
       file overwritten with noise) are caught.
    4. *Silently altered*: every restored leaf's checksum is compared with the
       manifest.

    Any of these raises :class:`CorruptCheckpointError`, naming the step
    directory. With ``step=None`` this then warns, moves the damaged step to
    ``<directory>/aside/`` (so a resumed run does not meet it again as a
    "newer step"; it is kept, not deleted) and falls back to the previous
    step.

    Args:
      directory: the run's checkpoint directory (a local path, ``file://`` URL
        or any path orbax accepts, e.g. ``gs://bucket/run``).
      target: pytree with the saved structure whose leaves are arrays or
        ``jax.ShapeDtypeStruct`` (e.g. a freshly created train state, or
        ``jax.eval_shape`` of its constructor). Restored arrays take the
        target leaves' sharding (default: the first device).
      step: the step to restore; ``None``: the newest step that restores,
        falling back over damaged ones (each with a ``RuntimeWarning`` that
        names it).
      extra_target: target of the ``extra`` pytree, if it should be restored.
      move_damaged_aside: with ``step=None``, move each damaged step it falls
        back over to ``<directory>/aside/`` (``False``: leave the directory
        untouched, e.g. when another process owns it).

    Returns:
      :class:`Restored` ``(step, state, extra, metadata)``; values bit for
      bit as saved.

    Raises:
      FileNotFoundError: ``step=None`` and the directory holds no committed
        checkpoint.
      ValueError: ``step`` does not exist, or a target's paths, shapes or
        dtypes differ from the checkpoint's (naming the first leaf).
      CorruptCheckpointError: the requested ``step`` (or, with ``step=None``,
        every step) is incomplete, unreadable or fails its checksums; the
        message names the step directory.

    Example:
      >>> import optax, tempfile
      >>> from flax import nnx
      >>> from sparsejax import checkpoint, train
      >>> state = train.create_train_state(nnx.Linear(3, 2, rngs=nnx.Rngs(0)),
      ...                                  optax.adam(1e-3), key=0)
      >>> run = tempfile.mkdtemp()
      >>> _ = checkpoint.save(run, 0, state, metadata={"lr": 1e-3})
      >>> restored = checkpoint.restore(run, state)     # newest step that restores
      >>> restored.step, restored.metadata
      (0, {'lr': 0.001})
    """
    path = directory_path(directory)
    if step is not None:
        return restore_step(path, _check_step(step), target, extra_target)
    steps = all_steps(path)
    pending = incomplete_entries(path)
    if not steps:
        note = (
            f" (only interrupted saves: {[p.name for p in pending]}; the next save moves them "
            "aside)"
            if pending
            else ""
        )
        raise FileNotFoundError(f"no checkpoint in {os.fspath(path)!r}{note}")
    for entry in pending:
        warnings.warn(
            f"ignoring {os.fspath(entry)!r}: an interrupted save, not a committed step (the "
            "next save moves it aside)",
            RuntimeWarning,
            stacklevel=2,
        )
    failures = []
    for s in reversed(steps):
        try:
            return restore_step(path, s, target, extra_target)
        except CorruptCheckpointError as err:
            failures.append(str(err))
            note = ""
            if move_damaged_aside:
                try:
                    moved = set_aside(path, path / str(s), "damaged", warn=False)
                    note = f"; moved to {os.fspath(moved)!r}"
                except OSError as move_err:
                    note = f"; it could not be moved aside ({move_err})"
            warnings.warn(
                f"{err}{note}; falling back to an earlier step", RuntimeWarning, stacklevel=2
            )
    raise CorruptCheckpointError(
        f"no checkpoint in {os.fspath(path)!r} restores:\n" + "\n".join(failures)
    )
