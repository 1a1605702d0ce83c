"""Checkpoints of a training run with orbax: params, masks, optimizer and pruning state.

:func:`save` writes one step of a run (a state pytree such as a
:class:`sparsejax.train.TrainState`, an optional ``extra`` pytree and JSON metadata) with
a manifest of every leaf's path, shape, dtype and checksum, then commits it with a
record of its files' sizes and SHA-256s; :func:`restore` reads it back bit for bit into
the structure of a target, detects incomplete, unreadable or altered steps
(:class:`CorruptCheckpointError`), moves them aside and falls back to the previous step.
A step counts only once committed: an interrupted save is never restored and is moved
to ``<directory>/aside/`` by the next save, so a killed run always resumes. Nothing is
deleted implicitly. :func:`save_snapshot` / :func:`restore_snapshot` keep named rewind
points apart from the rolling steps. Directories may be local paths, ``file://`` URLs or
any path orbax accepts (``gs://bucket/run``). Saving is synchronous and single-process.

Example:
  >>> import optax, tempfile
  >>> from flax import nnx
  >>> from sparsejax import checkpoint, train
  >>> state = train.create_train_state(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), optax.adam(1e-3), key=0)
  >>> run = tempfile.mkdtemp()
  >>> _ = checkpoint.save(run, 0, state, metadata={"lr": 1e-3})
  >>> _ = checkpoint.save_snapshot(run, "init", 0, state.params)
  >>> restored = checkpoint.restore(run, state)            # newest step that restores
  >>> restored.step, restored.metadata
  (0, {'lr': 0.001})

References:
  Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (rewinding to
  initialisation); Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the
  Lottery Ticket Hypothesis", ICML 2020 (rewinding to an early iteration ``k``).
"""

from sparsejax.checkpoint._paths import directory_path
from sparsejax.checkpoint._snapshots import restore_snapshot, save_snapshot, snapshot_names
from sparsejax.checkpoint._steps import (
    CorruptCheckpointError,
    Restored,
    all_steps,
    check_metadata,
    delete,
    latest_step,
    restore,
    save,
)

__all__ = [
    "CorruptCheckpointError",
    "Restored",
    "all_steps",
    "check_metadata",
    "delete",
    "directory_path",
    "latest_step",
    "restore",
    "restore_snapshot",
    "save",
    "save_snapshot",
    "snapshot_names",
]
