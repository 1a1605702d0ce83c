"""``make_train_loop``: many training steps in one program, pruning updates placed on the host."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.schedules import update_steps
from sparsejax.train._checks import _check_int
from sparsejax.train._state import TrainState
from sparsejax.train._step import (
    Forward,
    LossFn,
    MetricsFn,
    Penalty,
    _call,
    _check_seed_axis_flags,
    _classification,
    _one_step,
)
from sparsejax.transforms import pruning_schedules


def _loop_plan(flags: np.ndarray) -> tuple[tuple[int, tuple[tuple[bool, int], ...]], ...]:
    """Steps of a window → ``((repetitions, ((prune_now, length), ...)), ...)``.

    Consecutive steps of the same kind form a run; a (plain run, update run)
    pair repeated back to back (a periodic schedule) becomes one entry with its
    repetition count, so the program's size grows with the number of distinct
    stretches of the window, not with its number of updates.

    >>> _loop_plan(np.array([0, 0, 1, 0, 0, 1, 0, 0, 1, 0], bool))
    ((3, ((False, 2), (True, 1))), (1, ((False, 1),)))
    """
    runs = [(flag, len(list(group))) for flag, group in itertools.groupby(flags.tolist())]
    plan, i = [], 0
    while i < len(runs):
        pair = tuple(runs[i : i + 2])
        reps = 1
        while len(pair) == 2 and tuple(runs[i + 2 * reps : i + 2 * reps + 2]) == pair:
            reps += 1
        if reps > 1:
            plan.append((reps, pair))
            i += 2 * reps
        else:
            plan.append((1, (runs[i],)))
            i += 1
    return tuple(plan)


def _check_schedule(schedule: Any) -> None:
    if not callable(getattr(schedule, "is_update", None)):
        raise TypeError(
            f"make_train_loop: schedule must have is_update(step), got {schedule!r}; use "
            "sparsejax.schedules (one_shot, constant, periodic, polynomial, iterative)"
        )


def _schedules_of(opt_state: optax.OptState) -> tuple[Any, ...]:
    """The schedules of the pruning states in ``opt_state`` (checked)."""
    found = pruning_schedules(opt_state)
    if any(s is None for s in found):
        raise ValueError(
            "make_train_loop: the optimizer state holds a PruningState without its schedule "
            "(built by hand?); build it with sparsejax.pruning(...)"
        )
    for schedule in found:
        _check_schedule(schedule)
    return found


def make_train_loop(
    schedule: Any = None,
    loss_fn: LossFn = optax.softmax_cross_entropy_with_integer_labels,
    *,
    forward: Forward = _call,
    metrics_fn: MetricsFn = _classification,
    penalty: Penalty | None = None,
    vmap_seeds: bool = False,
    per_seed_batches: bool = False,
    jit: bool = True,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Build ``train_loop(state, batches, start) -> (state, metrics)``: many steps in one program.

    Runs ``n`` consecutive training steps (the steps of :func:`make_train_step`)
    on ``batches`` (the batch pytree with a leading axis of ``n``; with
    ``vmap_seeds`` and ``per_seed_batches``: ``(n, S, B, ...)``) as one jitted
    program, without a ``lax.cond`` for the pruning schedule. ``start`` is the
    step number of the first of them (a Python int, equal to ``state.step``).
    The schedule comes from the optimizer state: every
    :class:`~sparsejax.transforms.PruningState` in ``state.opt_state`` carries
    the schedule of its :func:`~sparsejax.transforms.pruning` (and every
    :class:`~sparsejax.transforms.SparseTrainingState` the drop schedule of its
    SET / RigL / SNFS transform), and the update
    steps in ``[start, start + n)`` are the union of theirs, computed on the
    host (:func:`sparsejax.schedules.update_steps`). The program runs
    ``lax.scan`` over the steps between updates with ``prune_now=False``
    (exactly :func:`sparsejax.transforms.keep_sparse` steps) and one
    ``prune_now=True`` step at each update. The result equals ``n`` calls of
    the ``lax.cond`` step (``make_train_step()``), with no device-to-host read
    of a predicate: on a GPU, a ``lax.cond`` in a training loop stalls the host
    on every step (timings: docs/results.md). Without any pruning state (a
    dense or :func:`~sparsejax.transforms.keep_sparse` optimizer) every step is
    a plain step and ``tx.update`` gets no ``prune_now``.

    One compilation per distinct placement of updates in the window (windows of
    ``n`` steps aligned with a periodic schedule share one), plus one per batch
    shape. A periodic stretch of the window (``k`` plain steps, then an update,
    repeated) is one nested scan, so the program does not grow with the number
    of updates (``every=1`` is a single scan).

    Args:
      schedule: deprecated, leave it out. If given (the 0.1 form
        ``make_train_loop(schedule)``), it *overrides* the schedules of the
        state: its update steps are the ones placed, as before (with several
        pruning transforms, it had to be one whose updates cover all of theirs),
        and a ``DeprecationWarning`` is raised.
      loss_fn, forward, metrics_fn, penalty, vmap_seeds, per_seed_batches: as in
        :func:`make_train_step`.
      jit: wrap the program in ``jax.jit`` (``False`` runs it eagerly).

    Returns:
      ``train_loop(state, batches, start)``: the state after the ``n`` steps and
      the metrics of every step stacked along a leading axis of ``n``.

    Raises:
      TypeError: ``schedule`` (or a state's schedule) has no ``is_update``.
      ValueError: ``start`` is not an int >= 0, ``batches`` has leaves with
        different leading sizes or no steps, or a pruning state has no
        schedule.

    Example:
      >>> import jax.numpy as jnp, optax, sparsejax as sj
      >>> from flax import nnx
      >>> from sparsejax.train import create_train_state
      >>> tx = sj.pruning(optax.adam(1e-2), score=lambda p, g: sj.scores.magnitude(p),
      ...                 schedule=sj.schedules.one_shot(0.5, at=2))
      >>> state = create_train_state(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), tx, key=0)
      >>> batches = (jnp.ones((5, 8, 4)), jnp.zeros((5, 8), jnp.int32))  # 5 steps
      >>> state, metrics = make_train_loop()(state, batches, 0)
      >>> mask = sj.current_mask(state.opt_state)
      >>> int(state.step), metrics["loss"].shape, int(mask["kernel"].sum())
      (5, (5,), 6)
    """
    if schedule is not None:
        _check_schedule(schedule)
        warnings.warn(
            "make_train_loop(schedule) is deprecated: the loop reads the schedules of the "
            "pruning states in state.opt_state; a schedule given here overrides them",
            DeprecationWarning,
            stacklevel=2,
        )
    _check_seed_axis_flags(vmap_seeds, per_seed_batches)
    one = _one_step(loss_fn, forward, metrics_fn, penalty)
    batch_axis = 0 if per_seed_batches else None

    def step(state, batch, prune_now):
        if vmap_seeds:
            vmapped = jax.vmap(lambda s, b: one(s, b, prune_now), in_axes=(0, batch_axis))
            return vmapped(state, batch)
        return one(state, batch, prune_now)

    def steps(state, batches, indices, prune_now):
        """``lax.scan`` of steps on ``batches[indices]`` (indexing: no sliced copy)."""
        return jax.lax.scan(
            lambda st, i: step(st, jax.tree.map(lambda b: b[i], batches), prune_now),
            state,
            indices,
        )

    def run(state, batches, plan, hinted):
        parts, pos = [], 0
        for reps, group in plan:
            period = sum(length for _, length in group)

            def once(state, base, group=group):
                metrics, offset = [], 0
                for prune_now, length in group:
                    hint = prune_now if hinted else None
                    state, m = steps(state, batches, base + offset + jnp.arange(length), hint)
                    metrics.append(m)
                    offset += length
                return state, jax.tree.map(lambda *ms: jnp.concatenate(ms), *metrics)

            if reps == 1:
                state, metrics = once(state, pos)
            else:  # a repeated (plain run, update run) pair: one scan over its repetitions
                state, metrics = jax.lax.scan(
                    lambda st, r, pos=pos, period=period, once=once: once(st, pos + r * period),
                    state,
                    jnp.arange(reps),
                )
                metrics = jax.tree.map(lambda m: m.reshape((-1, *m.shape[2:])), metrics)
            parts.append(metrics)
            pos += reps * period
        return state, jax.tree.map(lambda *ms: jnp.concatenate(ms), *parts)

    program = jax.jit(run, static_argnames=("plan", "hinted")) if jit else run
    # The schedules are static data of the optimizer state: its tree structure fixes them.
    found: dict[Any, tuple[Any, ...]] = {}

    def train_loop(state, batches, start):
        start = _check_int("train_loop: start", start, 0)
        sizes = {np.shape(b)[0] if np.ndim(b) else None for b in jax.tree.leaves(batches)}
        if len(sizes) != 1 or None in sizes or 0 in sizes:
            raise ValueError(
                "train_loop: every leaf of batches needs the same leading (step) axis of size "
                f">= 1, got leading sizes {sorted(map(str, sizes))}"
            )
        (n,) = sizes
        if schedule is not None:
            schedules = (schedule,)
        else:
            treedef = jax.tree.structure(state.opt_state)
            if treedef not in found:
                found[treedef] = _schedules_of(state.opt_state)
            schedules = found[treedef]
        flags = np.zeros(n, bool)
        for s in schedules:
            flags[update_steps(s, start + n, start) - start] = True
        return program(state, batches, plan=_loop_plan(flags), hinted=bool(schedules))

    return train_loop
