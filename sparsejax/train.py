"""Reference training core for Flax NNX models on the functional path.

Usable as is or copied into a research script. A model is split once into a
static :class:`~flax.nnx.GraphDef`, its trainable ``nnx.Param`` state and the
``rest`` (BatchNorm statistics, RNG streams, masks stored as non-``Param``
variables, ...). Everything that changes during training lives in one pytree,
:class:`TrainState`, and a step is a pure function ``(state, batch) ->
(state, metrics)``:

* gradients are taken with respect to ``params`` only;
* the optimizer is called as ``tx.update(grads, opt_state, params)``, so the
  sparsejax transforms (:func:`sparsejax.transforms.pruning`,
  :func:`sparsejax.transforms.keep_sparse`), which need ``params``, work with
  no extra call;
* the model runs in training mode (``model.train()``: dropout on, BatchNorm
  with batch statistics) and the updated ``rest`` is kept;
* every RNG stream of the model (dropout, ...) is reseeded at step ``t`` with
  ``fold_in(fold_in(state.key, t), crc32(stream_tag))``: randomness is a pure
  function of the state's key and step, so a run resumed from a checkpoint
  draws exactly the dropout masks of the uninterrupted run.

The data position ``(epoch, batch)`` of the next batch is part of the state,
so :mod:`sparsejax.checkpoint` saves it with everything else and
:func:`train` resumes mid-epoch on the same example order
(:func:`sparsejax.data.batches`).

Many seeds at once: :func:`create_train_states` stacks ``S`` independent
states along a leading seed axis (models are built inside ``jax.vmap``) and
:func:`train_many_seeds` runs them with one ``jax.vmap``-ed step on the same
batches (or on per-seed batch orders). On one H100, 8 vmapped LeNet-300-100
seeds train 6.7-8.3x faster than 8 sequential runs; on a 2-core CPU they are
no faster (``benchmarks/vmap_seeds.py``).

References:
  Flax NNX functional API (``nnx.split`` / ``nnx.merge``),
  https://flax.readthedocs.io/en/latest/nnx_basics.html

Example:
  >>> import optax, numpy as np
  >>> from flax import nnx
  >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
  >>> state = create_train_state(model, optax.sgd(0.1), key=jax.random.key(1))
  >>> x = np.ones((8, 4), np.float32); y = np.zeros(8, np.int32)
  >>> state, history = train(state, x, y, batch_size=4, seed=0, steps=3, progress=False)
  >>> int(state.step), (int(state.epoch), int(state.batch))
  (3, (1, 1))
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from sparsejax import checkpoint as _checkpoint
from sparsejax.data import batches as _batches
from sparsejax.data import num_batches as _num_batches
from sparsejax.metrics import accuracy as _accuracy
from sparsejax.metrics import confusion_matrix, metrics_from_confusion
from sparsejax.schedules import update_steps

__all__ = [
    "TrainState",
    "create_train_state",
    "create_train_states",
    "evaluate",
    "make_eval_step",
    "make_train_loop",
    "make_train_step",
    "train",
    "train_many_seeds",
]

Batch: TypeAlias = tuple[Any, Any]
LossFn: TypeAlias = Callable[[jax.Array, jax.Array], jax.Array]
Forward: TypeAlias = Callable[..., Any]
MetricsFn: TypeAlias = Callable[[jax.Array, jax.Array], Mapping[str, jax.Array]]
Penalty: TypeAlias = Callable[[nnx.Module, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]
StepFn: TypeAlias = Callable[["TrainState", Batch], tuple["TrainState", dict[str, jax.Array]]]


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree.

    Under :func:`create_train_states` every array field gets a leading seed
    axis ``S`` (``step: int32[S]``, each params leaf ``[S, *shape]``, ...).

    Attributes:
      step: ``int32[]`` number of optimizer steps taken.
      params: the model's ``nnx.Param`` state (what is differentiated).
      rest: every other variable of the model (``nnx.BatchStat`` running
        statistics, ``nnx.RngKey``/``nnx.RngCount`` of dropout streams,
        non-trainable masks, ...); empty for a plain MLP.
      opt_state: the optax state of ``tx`` (holds the sparsejax mask and
        pruning step when ``tx`` is a sparsejax transform).
      key: typed PRNG key (``jax.random.key``); step ``t`` reseeds the model's
        RNG streams from ``fold_in(key, t)``.
      epoch: ``int32[]`` epoch of the next batch to train on.
      batch: ``int32[]`` index within that epoch of the next batch.
      graphdef: static structure of the model (not a pytree leaf).
      tx: the optimizer (static, not a pytree leaf).
    """

    step: jax.Array
    params: nnx.State
    rest: nnx.State
    opt_state: optax.OptState
    key: jax.Array
    epoch: jax.Array
    batch: jax.Array
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def model(self) -> nnx.Module:
        """A new ``nnx.Module`` holding copies of this state's variables (single-seed states).

        Running it (even in training mode) never changes the state.
        """
        return nnx.merge(self.graphdef, self.params, self.rest, copy=True)


def _as_key(key: Any, name: str = "key") -> jax.Array:
    """A typed PRNG key from a typed key, a raw ``uint32[2]`` key or a Python int."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, (jax.Array, np.ndarray)):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            return key
        if key.dtype == np.uint32 and key.shape[-1:] == (2,):
            return jax.random.wrap_key_data(key)
    raise TypeError(
        f"{name} must be a jax.random.key(...), a raw uint32[..., 2] PRNGKey or an int, got {key!r}"
    )


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _plain(tree: Any) -> Any:
    """The same pytree (e.g. an ``nnx.State``) with every ``nnx.Variable`` replaced by its value."""

    def value(v):
        return v.get_value() if hasattr(v, "get_value") else v.value  # flax < 0.12.1: .value

    return jax.tree.map(lambda x: value(x) if _is_variable(x) else x, tree, is_leaf=_is_variable)


def _holds_variables(tree: Any) -> bool:
    return any(_is_variable(x) for x in jax.tree.leaves(tree, is_leaf=_is_variable))


def create_train_state(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    *,
    key: jax.Array | int,
    plain_arrays: bool = False,
) -> TrainState:
    """Split ``model`` and initialise the optimizer: step 0, data position ``(0, 0)``.

    Args:
      model: any ``nnx.Module`` (its ``nnx.Param`` variables are trained; all
        other variables go to ``rest``).
      tx: an optax transformation, e.g. ``optax.adam(1e-3)`` or
        ``sparsejax.transforms.pruning(optax.adam(1e-3), ...)``.
      key: PRNG key (typed, raw or an int seed) for the model's stochastic
        layers during training. Parameter initialisation is the model's own
        business (its ``nnx.Rngs``).
      plain_arrays: store ``params`` and ``rest`` as ``nnx.State`` trees of
        plain arrays instead of ``nnx.Variable`` objects (and so the optimizer
        state too). Same paths (without ``.value``), same training; a jitted
        step no longer rebuilds a Python ``Variable`` object per parameter on
        every call, which is most of the host time of a small model's step
        (``benchmarks/pruning_overhead.py``). Build masks from
        ``state.params`` so that they mirror it.

    Returns:
      A :class:`TrainState`. Pure: ``model`` is not modified.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    key = _as_key(key)
    if key.shape != ():
        raise ValueError(
            f"key must be a single key, got a batch of shape {key.shape}; for a batch of seeds "
            "use create_train_states"
        )
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if plain_arrays:
        params, rest = _plain(params), _plain(rest)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=tx.init(params),
        key=key,
        epoch=jnp.zeros((), jnp.int32),
        batch=jnp.zeros((), jnp.int32),
        graphdef=graphdef,
        tx=tx,
    )


def create_train_states(
    make_model: Callable[[jax.Array], nnx.Module],
    tx: optax.GradientTransformation,
    keys: jax.Array,
    *,
    plain_arrays: bool = False,
) -> TrainState:
    """``S`` independent train states stacked on a leading seed axis, built inside ``jax.vmap``.

    Seed ``i`` is exactly
    ``create_train_state(make_model(k0), tx, key=k1)`` with
    ``k0, k1 = jax.random.split(keys[i])``: the first half of the split
    initialises the model, the second drives its dropout.

    Args:
      make_model: ``key -> nnx.Module``, e.g.
        ``lambda k: LeNet300100(rngs=nnx.Rngs(k))``; traced under ``vmap`` so
        it must be a pure function of the key.
      tx: the optimizer shared by all seeds.
      keys: ``S`` typed keys (``key<impl>[S]``) or raw keys ``uint32[S, 2]``.
      plain_arrays: plain arrays instead of ``nnx.Variable`` objects, as in
        :func:`create_train_state`.

    Returns:
      A :class:`TrainState` whose array leaves have a leading axis ``S``.
    """
    keys = _as_key(keys, "keys")
    if keys.ndim != 1 or keys.shape[0] < 1:
        raise ValueError(f"keys must be a 1-D batch of S >= 1 keys, got shape {keys.shape}")
    model0 = nnx.eval_shape(lambda: make_model(jax.random.split(keys[0])[0]))
    if not isinstance(model0, nnx.Module):
        raise TypeError(f"make_model must return an nnx.Module, got {type(model0).__name__}")
    graphdef = nnx.split(model0, nnx.Param, ...)[0]

    def init_one(k):
        model_key, dropout_key = jax.random.split(k)
        _, params, rest = nnx.split(make_model(model_key), nnx.Param, ...)
        if plain_arrays:
            params, rest = _plain(params), _plain(rest)
        return params, rest, tx.init(params), dropout_key

    params, rest, opt_state, dropout_keys = jax.jit(jax.vmap(init_one))(keys)
    zeros = jnp.zeros(keys.shape, jnp.int32)
    return TrainState(
        step=zeros,
        params=params,
        rest=rest,
        opt_state=opt_state,
        key=dropout_keys,
        epoch=zeros,
        batch=zeros,
        graphdef=graphdef,
        tx=tx,
    )


# --------------------------------------------------------------------------- steps


def _call(model: nnx.Module, inputs: jax.Array, key: jax.Array | None = None) -> jax.Array:
    return model(inputs)


def _takes_key(forward: Forward) -> bool:
    """Whether ``forward`` takes ``(model, inputs, key)`` (else ``(model, inputs)``)."""
    try:
        params = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: the two-argument form
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _run_forward(
    forward: Forward, model: nnx.Module, inputs: jax.Array, key: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(logits, extra_losses)`` from a forward returning ``logits`` or ``(logits, losses)``."""
    out = forward(model, inputs, key) if _takes_key(forward) else forward(model, inputs)
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], Mapping):
            raise TypeError(
                "forward must return logits or (logits, {name: scalar loss term}), got a tuple "
                f"of {len(out)} items"
            )
        return out[0], dict(out[1])
    return out, {}


def _classification(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    return {"accuracy": _accuracy(logits, labels)}


def _reseed(model: nnx.Module, key: jax.Array) -> None:
    """Reseed every RNG stream of ``model``: tag ``t`` gets ``fold_in(key, crc32(t))``."""
    tags = sorted({s.key.tag for _, s in nnx.iter_graph(model) if isinstance(s, nnx.RngStream)})
    if tags:
        stream_keys = {t: jax.random.fold_in(key, np.uint32(zlib.crc32(t.encode()))) for t in tags}
        nnx.reseed(model, policy="match_shape", **stream_keys)


def _per_example_loss(loss_fn: LossFn, logits: jax.Array, labels: jax.Array) -> jax.Array:
    losses = loss_fn(logits, labels)
    if jnp.ndim(losses) != 1 or jnp.shape(losses)[0] != jnp.shape(logits)[0]:
        raise ValueError(
            "loss_fn(logits, labels) must return per-example losses of shape (batch,) = "
            f"({jnp.shape(logits)[0]},), got shape {jnp.shape(losses)}"
        )
    return losses


def _check_seed_axis_flags(vmap_seeds: bool, per_seed_batches: bool) -> None:
    if per_seed_batches and not vmap_seeds:
        raise ValueError("per_seed_batches=True needs vmap_seeds=True")


def make_train_step(
    loss_fn: LossFn = optax.softmax_cross_entropy_with_integer_labels,
    *,
    forward: Forward = _call,
    metrics_fn: MetricsFn = _classification,
    penalty: Penalty | None = None,
    vmap_seeds: bool = False,
    per_seed_batches: bool = False,
    host_schedule: bool = False,
    jit: bool = True,
) -> StepFn:
    """Build ``train_step(state, batch) -> (state, metrics)``.

    One step: merge ``(graphdef, params, rest)``, switch to training mode,
    reseed the RNG streams from ``fold_in(state.key, state.step)``, compute
    ``mean(loss_fn(forward(model, x), y))`` and its gradient with respect to
    ``params`` only, ``updates, opt_state = tx.update(grads, opt_state,
    params)``, ``params = optax.apply_updates(params, updates)``; ``rest``
    takes the values the forward pass left (new BatchNorm statistics).

    Args:
      loss_fn: ``(logits[B, C], labels[B]) -> losses[B]`` per-example loss
        (default: softmax cross-entropy with integer labels).
      forward: ``(model, inputs, key) -> logits`` (or ``(model, inputs)``); default
        ``model(inputs)``. ``key`` is a typed PRNG key of the step, independent of
        the keys that reseed the model's RNG streams, for stochastic forwards (sampled
        widths, gate noise). It may return ``(logits, {name: scalar})``: each extra
        term is added to the objective and logged under its name.
      metrics_fn: ``(logits, labels) -> {name: scalar}`` logged besides
        ``"loss"``; default ``{"accuracy": ...}``.
      penalty: optional ``(model, step) -> (value, {name: scalar})`` added to
        the objective, evaluated on the model after its forward pass (so it
        sees the training-mode model: e.g. the KL term of variational dropout,
        a group-lasso or L0 penalty). With a penalty the metrics hold
        ``"loss"`` (the whole objective), ``"data_loss"`` (the mean of
        ``loss_fn``) and the penalty's own entries.
      vmap_seeds: ``jax.vmap`` the step over a leading seed axis of the state
        (see :func:`create_train_states`).
      per_seed_batches: with ``vmap_seeds``, the batch also has a leading seed
        axis (``x[S, B, ...]``); otherwise all seeds see the same batch.
      host_schedule: the step becomes ``train_step(state, batch, prune_now)``
        with ``prune_now`` a static Python bool passed to ``tx.update`` (see
        :func:`sparsejax.transforms.pruning`): the loop says on the host
        whether this step updates the mask, e.g.
        ``prune_now=t in set(sparsejax.schedules.update_steps(schedule, n))``.
        Two compilations (``True``/``False``) and no ``lax.cond``, whose
        predicate XLA:GPU reads back to the host on every step.
      jit: wrap in ``jax.jit`` (``False`` gives the eager reference).

    Returns:
      A pure function. ``batch`` is ``(inputs[B, ...], labels[B])``; the
      metrics are ``float32`` scalars (``[S]`` with ``vmap_seeds``).
    """
    _check_seed_axis_flags(vmap_seeds, per_seed_batches)

    def train_step(
        state: TrainState, batch: Batch, prune_now: bool | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        inputs, labels = batch
        step_key = jax.random.fold_in(state.key, state.step)
        # A key of its own for the forward: streams are reseeded from step_key itself.
        forward_key = jax.random.fold_in(step_key, np.uint32(zlib.crc32(b"forward")))
        plain = not (_holds_variables(state.params) or _holds_variables(state.rest))

        def objective(params):
            # copy=True: fresh variables of the grad trace, which BatchNorm and the RNG
            # streams may then update (the state's own variables belong to the outer trace).
            model = nnx.merge(state.graphdef, params, state.rest, copy=True)
            model.train()
            _reseed(model, step_key)
            logits, terms = _run_forward(forward, model, inputs, forward_key)
            loss = jnp.mean(_per_example_loss(loss_fn, logits, labels))
            extra = {}
            if terms:
                extra = {"data_loss": loss, **terms}
                loss = loss + sum(terms.values())
            if penalty is not None:
                value, penalty_metrics = penalty(model, state.step)
                extra = {"data_loss": extra.get("data_loss", loss), **extra, **penalty_metrics}
                loss = loss + value
            _, _, rest = nnx.split(model, nnx.Param, ...)
            if plain:
                rest = _plain(rest)
            return loss, (logits, rest, extra)

        (loss, (logits, rest, extra)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params
        )
        hint = {} if prune_now is None else {"prune_now": prune_now}
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params, **hint)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **extra, **metrics_fn(logits, labels)}
        new_state = state.replace(
            step=state.step + 1, params=params, rest=rest, opt_state=opt_state
        )
        return new_state, metrics

    batch_axis = 0 if per_seed_batches else None
    if not host_schedule:
        step = train_step
        if vmap_seeds:
            step = jax.vmap(train_step, in_axes=(0, batch_axis))
        return jax.jit(step) if jit else step

    def hinted_step(state, batch, prune_now):
        if not isinstance(prune_now, (bool, np.bool_)):
            raise TypeError(
                "train_step(state, batch, prune_now): prune_now must be a Python bool "
                f"(host_schedule=True), got {prune_now!r} of type {type(prune_now).__name__}"
            )
        one = functools.partial(train_step, prune_now=bool(prune_now))
        return (jax.vmap(one, in_axes=(0, batch_axis)) if vmap_seeds else one)(state, batch)

    return jax.jit(hinted_step, static_argnames="prune_now") if jit else hinted_step


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


def make_train_loop(
    schedule: Any,
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
    step number of the first of them (a Python int, equal to ``state.step``);
    the update steps of ``schedule`` in ``[start, start + n)`` are computed on
    the host (:func:`sparsejax.schedules.update_steps`), and the program runs
    ``lax.scan`` over the steps between them with ``prune_now=False`` (exactly
    :func:`sparsejax.transforms.keep_sparse` steps) and one ``prune_now=True``
    step at each update. The result equals ``n`` calls of the ``lax.cond`` step
    (``make_train_step()``), with no device-to-host read of a predicate: on a
    GPU, a ``lax.cond`` in a training loop stalls the host on every step: in a
    device loop, a non-update step took 1.11x the dense step for ResNet-20 at
    batch 128 (H200) and 1.62x for a 318k-parameter MLP (H100), against 1.00x
    and 1.10x for the same step without the conditional (``keep_sparse``;
    ``benchmarks/pruning_overhead.py``).

    One compilation per distinct placement of updates in the window (windows of
    ``n`` steps aligned with a periodic schedule share one), plus one per batch
    shape. A periodic stretch of the window (``k`` plain steps, then an update,
    repeated) is one nested scan, so the program does not grow with the number
    of updates (``every=1`` is a single scan).

    Args:
      schedule: the pruning schedule of the optimizer's
        :func:`sparsejax.transforms.pruning` (anything with ``is_update``).
        With several pruning transforms, pass one whose updates cover all of
        theirs.
      loss_fn, forward, metrics_fn, penalty, vmap_seeds, per_seed_batches: as in
        :func:`make_train_step`.
      jit: wrap the program in ``jax.jit`` (``False`` runs it eagerly).

    Returns:
      ``train_loop(state, batches, start)``: the state after the ``n`` steps and
      the metrics of every step stacked along a leading axis of ``n``.

    Raises:
      ValueError: ``start`` is not an int >= 0, or ``batches`` has leaves with
        different leading sizes or no steps.
    """
    if not callable(getattr(schedule, "is_update", None)):
        raise TypeError(
            f"make_train_loop: schedule must have is_update(step), got {schedule!r}; use "
            "sparsejax.schedules (one_shot, constant, periodic, polynomial, iterative)"
        )
    step = make_train_step(
        loss_fn, forward=forward, metrics_fn=metrics_fn, penalty=penalty, vmap_seeds=vmap_seeds,
        per_seed_batches=per_seed_batches, host_schedule=True, jit=False,
    )

    def steps(state, batches, indices, prune_now):
        """``lax.scan`` of steps on ``batches[indices]`` (indexing: no sliced copy)."""
        return jax.lax.scan(
            lambda st, i: step(st, jax.tree.map(lambda b: b[i], batches), prune_now),
            state,
            indices,
        )

    def run(state, batches, plan):
        parts, pos = [], 0
        for reps, group in plan:
            period = sum(length for _, length in group)

            def once(state, base, group=group):
                metrics, offset = [], 0
                for prune_now, length in group:
                    state, m = steps(state, batches, base + offset + jnp.arange(length), prune_now)
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

    program = jax.jit(run, static_argnames="plan") if jit else run

    def train_loop(state, batches, start):
        start = _check_int("train_loop: start", start, 0)
        sizes = {np.shape(b)[0] if np.ndim(b) else None for b in jax.tree.leaves(batches)}
        if len(sizes) != 1 or None in sizes or 0 in sizes:
            raise ValueError(
                "train_loop: every leaf of batches needs the same leading (step) axis of size "
                f">= 1, got leading sizes {sorted(map(str, sizes))}"
            )
        (n,) = sizes
        flags = np.zeros(n, bool)
        flags[update_steps(schedule, start + n, start) - start] = True
        return program(state, batches, plan=_loop_plan(flags))

    return train_loop


def make_eval_step(
    loss_fn: LossFn = optax.softmax_cross_entropy_with_integer_labels,
    *,
    forward: Forward = _call,
    vmap_seeds: bool = False,
    jit: bool = True,
) -> Callable[[TrainState, Batch, jax.Array], dict[str, jax.Array]]:
    """Build ``eval_step(state, batch, where) -> {"loss_sum", "confusion"}``.

    The model runs in evaluation mode (``model.eval()``: dropout off,
    BatchNorm running statistics); nothing is updated. ``where: bool[B]``
    marks the real examples of a padded last batch. The outputs add up over
    batches: ``loss_sum`` (``f32[]``, sum of per-example losses) and
    ``confusion`` (``int32[C, C]``, rows = true class,
    :func:`sparsejax.metrics.confusion_matrix`). With ``vmap_seeds`` both get
    a leading seed axis and the batch is shared by all seeds.
    """

    def eval_step(state: TrainState, batch: Batch, where: jax.Array) -> dict[str, jax.Array]:
        inputs, labels = batch
        model = nnx.merge(state.graphdef, state.params, state.rest)
        model.eval()
        key = jax.random.fold_in(state.key, np.uint32(zlib.crc32(b"eval")))
        logits, _ = _run_forward(forward, model, inputs, key)
        losses = _per_example_loss(loss_fn, logits, labels)
        return {
            "loss_sum": jnp.sum(jnp.where(where, losses, 0.0), dtype=jnp.float32),
            "confusion": confusion_matrix(logits, labels, int(logits.shape[-1]), where),
        }

    step = jax.vmap(eval_step, in_axes=(0, None, None)) if vmap_seeds else eval_step
    return jax.jit(step) if jit else step


@functools.cache
def _default_train_step(vmap_seeds: bool, per_seed_batches: bool) -> StepFn:
    # One jitted function per configuration, so repeated train() calls reuse its compilations.
    return make_train_step(vmap_seeds=vmap_seeds, per_seed_batches=per_seed_batches)


@functools.cache
def _default_eval_step(vmap_seeds: bool) -> Callable[..., dict[str, jax.Array]]:
    return make_eval_step(vmap_seeds=vmap_seeds)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_xy(x: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{what}: inputs need shape (N, ...) and labels shape (N,) with the same N, got "
            f"{x.shape} and {y.shape}"
        )
    return x, y


def _padded_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Stored-order batches of exactly ``batch_size`` examples; the last one zero-padded."""
    for xb, yb in _batches(x, y, batch_size, seed=None, drop_last=False):
        n = xb.shape[0]
        where = np.arange(batch_size) < n
        if n < batch_size:
            pad = batch_size - n
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
        yield xb, yb, where


def _finish_eval(loss_sum: np.ndarray, confusion: np.ndarray, n: int) -> dict[str, Any]:
    if confusion.ndim == 3:  # a leading seed axis
        per_seed = [_finish_eval(ls, cm, n) for ls, cm in zip(loss_sum, confusion)]
        return {k: [r[k] for r in per_seed] for k in per_seed[0]}
    counted = int(confusion.sum())
    if counted != n:
        raise ValueError(
            f"evaluate: only {counted} of the {n} labels lie in [0, num_classes="
            f"{confusion.shape[0]}); labels must be class indices below the model's output size"
        )
    m = jax.device_get(metrics_from_confusion(confusion))
    return {
        "accuracy": float(np.trace(confusion)) / n,  # exact, whatever the device's division
        "loss": float(loss_sum) / n,
        "precision": [float(v) for v in m.precision],
        "recall": [float(v) for v in m.recall],
        "f1": [float(v) for v in m.f1],
        "support": [int(v) for v in m.support],
        "macro_precision": float(m.macro_precision),
        "macro_recall": float(m.macro_recall),
        "macro_f1": float(m.macro_f1),
        "confusion": confusion.astype(int).tolist(),
    }


def evaluate(
    state: TrainState,
    x: Any,
    y: Any,
    *,
    batch_size: int = 1024,
    eval_step: Callable[[TrainState, Batch, jax.Array], dict[str, jax.Array]] | None = None,
    vmap_seeds: bool = False,
) -> dict[str, Any]:
    """Accuracy, mean loss and per-class / macro precision, recall and F1 on ``(x, y)``.

    All ``N`` examples are used: the last batch is zero-padded to
    ``batch_size`` and the padding masked out, so one compilation serves every
    batch. Metrics come from the summed confusion matrix through
    :func:`sparsejax.metrics.metrics_from_confusion` (scikit-learn's
    ``zero_division=0``, macro averages over all ``C`` classes).

    Args:
      state: a :class:`TrainState` (with ``vmap_seeds``: stacked seeds).
      x: ``[N, ...]`` inputs.
      y: ``int[N]`` class labels in ``[0, C)``.
      batch_size: evaluation batch size (at most ``N`` is used).
      eval_step: from :func:`make_eval_step` (default: cross-entropy loss,
        ``model(x)`` forward, jitted).
      vmap_seeds: evaluate all seeds of a stacked state in one vmapped pass.

    Returns:
      A JSON-friendly dict: ``accuracy``, ``loss``, ``macro_precision``,
      ``macro_recall``, ``macro_f1`` (floats), ``precision``, ``recall``,
      ``f1`` (lists of ``C`` floats), ``support`` and ``confusion`` (ints).
      With ``vmap_seeds`` every value is a list over the seeds.
    """
    x, y = _check_xy(x, y, "evaluate")
    batch_size = _check_int("batch_size", batch_size, 1)
    if x.shape[0] == 0:
        raise ValueError("evaluate: no examples (x has leading size 0)")
    step = eval_step if eval_step is not None else _default_eval_step(vmap_seeds)
    batch_size = min(batch_size, x.shape[0])  # no padding beyond the data
    totals = None
    for xb, yb, where in _padded_batches(x, y, batch_size):
        out = step(state, (xb, yb), where)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    return _finish_eval(np.asarray(totals["loss_sum"]), np.asarray(totals["confusion"]), x.shape[0])


# --------------------------------------------------------------------------- loops


def _scalar(value: Any, name: str) -> int:
    """The common value of a scalar or per-seed ``int32`` state field."""
    flat = np.asarray(jax.device_get(value)).reshape(-1)
    if flat.size == 0 or np.any(flat != flat[0]):
        raise ValueError(f"state.{name} differs across seeds: {flat.tolist()}")
    return int(flat[0])


def _with_position(state: TrainState, epoch: int, batch: int) -> TrainState:
    shape = jnp.shape(state.epoch)
    return state.replace(
        epoch=jnp.full(shape, epoch, jnp.int32), batch=jnp.full(shape, batch, jnp.int32)
    )


def _mean_metrics(buffer: list[dict[str, jax.Array]]) -> dict[str, Any]:
    host = jax.device_get(buffer)
    out = {}
    for name in host[0]:
        mean = np.mean(np.stack([np.asarray(m[name], np.float64) for m in host]), axis=0)
        out[name] = mean.tolist() if mean.ndim else float(mean)
    return out


def _fit(
    state: TrainState,
    x: Any,
    y: Any,
    *,
    batch_size: int,
    seed: int | Sequence[int],
    steps: int | None,
    epochs: int | None,
    train_step: StepFn | None,
    eval_data: tuple[Any, Any] | None,
    eval_every: int | None,
    eval_batch_size: int,
    eval_step: Callable[..., dict[str, jax.Array]] | None,
    checkpoint_dir: str | os.PathLike | None,
    checkpoint_every: int | None,
    keep: int | None,
    metadata: Mapping[str, Any] | None,
    log_every: int,
    callback: Callable[[TrainState, dict[str, jax.Array]], None] | None,
    progress: bool,
    vmap_seeds: bool,
) -> tuple[TrainState, dict[str, list[dict[str, Any]]]]:
    x, y = _check_xy(x, y, "train")
    batch_size = _check_int("batch_size", batch_size, 1)
    log_every = _check_int("log_every", log_every, 1)
    if (steps is None) == (epochs is None):
        raise ValueError(
            f"pass exactly one of steps and epochs, got steps={steps!r}, epochs={epochs!r}"
        )
    if steps is not None:
        steps = _check_int("steps", steps, 0)
    if epochs is not None:
        epochs = _check_int("epochs", epochs, 0)
    if eval_every is not None:
        eval_every = _check_int("eval_every", eval_every, 1)
        if eval_data is None:
            raise ValueError("eval_every needs eval_data=(x_eval, y_eval)")
    if eval_data is not None:
        eval_data = _check_xy(*eval_data, "eval_data")
    if checkpoint_every is not None:
        checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
        if checkpoint_dir is None:
            raise ValueError("checkpoint_every needs checkpoint_dir")

    if vmap_seeds and np.ndim(state.step) != 1:
        raise ValueError(
            f"train_many_seeds needs a state with a leading seed axis (create_train_states); "
            f"state.step has shape {np.shape(state.step)}"
        )
    if not vmap_seeds and np.ndim(state.step) != 0:
        raise ValueError(
            f"train needs a single-seed state, state.step has shape {np.shape(state.step)}; "
            "use train_many_seeds for stacked seeds"
        )
    num_seeds = int(np.shape(state.step)[0]) if vmap_seeds else None
    per_seed_batches = not isinstance(seed, (int, np.integer))
    if per_seed_batches:
        if not vmap_seeds:
            raise ValueError(f"seed must be an int, got {seed!r}")
        seeds = [_check_int(f"seed[{i}]", s, 0) for i, s in enumerate(seed)]
        if len(seeds) != num_seeds:
            raise ValueError(f"got {len(seeds)} data seeds for a state of {num_seeds} seeds")
    else:
        seeds = [_check_int("seed", seed, 0)]

    per_epoch = _num_batches(x.shape[0], batch_size)
    if per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} exceeds the {x.shape[0]} training examples")
    if train_step is None:
        train_step = _default_train_step(vmap_seeds, per_seed_batches)
    if eval_data is not None and eval_step is None:
        eval_step = _default_eval_step(vmap_seeds)

    step = _scalar(state.step, "step")
    epoch = _scalar(state.epoch, "epoch")
    batch = _scalar(state.batch, "batch")
    if batch > per_epoch:
        raise ValueError(
            f"state.batch={batch} exceeds the {per_epoch} batches per epoch of batch_size="
            f"{batch_size}; resume with the batch size of the interrupted run"
        )
    total = steps if steps is not None else step + (epochs - epoch) * per_epoch - batch

    def done() -> bool:
        return step >= steps if steps is not None else epoch >= epochs

    if checkpoint_dir is not None:
        newer = [s for s in _checkpoint.all_steps(checkpoint_dir) if s > step]
        if newer:
            raise ValueError(
                f"checkpoint directory {os.fspath(checkpoint_dir)!r} holds steps {newer} newer "
                f"than the state's step {step}: they belong to another run. Delete them "
                "(sparsejax.checkpoint.delete) or use a new directory"
            )
    run_info = {
        "seed": int(seed) if isinstance(seed, (int, np.integer)) else list(seeds),
        "batch_size": batch_size,
        "num_examples": int(x.shape[0]),
        **(dict(metadata) if metadata else {}),
    }
    if checkpoint_dir is not None:
        _checkpoint.check_metadata(run_info)  # fail now, not at the first checkpoint

    def save() -> None:
        _checkpoint.save(
            checkpoint_dir,
            step,
            state,
            keep=keep,
            metadata={**run_info, "epoch": epoch, "batch": batch},
        )

    def run_eval() -> None:
        result = evaluate(
            state,
            *eval_data,
            batch_size=eval_batch_size,
            eval_step=eval_step,
            vmap_seeds=vmap_seeds,
        )
        history["eval"].append({"step": step, "epoch": epoch, **result})

    history: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    buffer: list[dict[str, jax.Array]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=min(step, total), unit="step", dynamic_ncols=True)
    try:
        while not done():
            iterators = [_batches(x, y, batch_size, s, epoch, start_batch=batch) for s in seeds]
            for parts in zip(*iterators):
                if per_seed_batches:
                    batch_arrays = (
                        np.stack([p[0] for p in parts]),
                        np.stack([p[1] for p in parts]),
                    )
                else:
                    batch_arrays = parts[0]
                state, metrics = train_step(state, batch_arrays)
                step, batch = step + 1, batch + 1
                if batch == per_epoch:
                    epoch, batch = epoch + 1, 0
                state = _with_position(state, epoch, batch)
                buffer.append(metrics)
                last = done()
                if step % log_every == 0 or last:
                    logged = _mean_metrics(buffer)
                    buffer = []
                    history["train"].append({"step": step, "epoch": epoch, **logged})
                    if bar is not None:
                        bar.set_postfix({k: np.mean(v) for k, v in logged.items()}, refresh=False)
                if eval_every is not None and step % eval_every == 0:
                    run_eval()
                if checkpoint_every is not None and step % checkpoint_every == 0:
                    save()
                if callback is not None:
                    callback(state, metrics)
                if bar is not None:
                    bar.update(1)
                if last:
                    break
    finally:
        if bar is not None:
            bar.close()
    if eval_data is not None and (not history["eval"] or history["eval"][-1]["step"] != step):
        run_eval()
    if checkpoint_dir is not None and step not in _checkpoint.all_steps(checkpoint_dir):
        save()
    return state, history


def train(
    state: TrainState,
    x: Any,
    y: Any,
    *,
    batch_size: int,
    seed: int,
    steps: int | None = None,
    epochs: int | None = None,
    train_step: StepFn | None = None,
    eval_data: tuple[Any, Any] | None = None,
    eval_every: int | None = None,
    eval_batch_size: int = 1024,
    eval_step: Callable[..., dict[str, jax.Array]] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    keep: int | None = 3,
    metadata: Mapping[str, Any] | None = None,
    log_every: int = 100,
    callback: Callable[[TrainState, dict[str, jax.Array]], None] | None = None,
    progress: bool = True,
) -> tuple[TrainState, dict[str, list[dict[str, Any]]]]:
    """Train from the state's position until ``steps`` steps or ``epochs`` epochs in total.

    Batches are :func:`sparsejax.data.batches` of epoch ``e``: a permutation
    that depends only on ``(seed, e)``, incomplete last batch dropped. The
    loop starts at ``(state.epoch, state.batch)`` and ``steps``/``epochs`` are
    *totals*, so ``train(restored_state, ..., steps=N)`` with the arguments of
    the interrupted call finishes exactly where the uninterrupted run does
    (bit for bit on a deterministic backend such as the CPU).

    Args:
      state: a single-seed :class:`TrainState`.
      x: ``[N, ...]`` training inputs (host numpy arrays).
      y: ``int[N]`` labels.
      batch_size: examples per step.
      seed: data-order seed (independent of ``state.key``).
      steps: stop when ``state.step == steps``.
      epochs: stop when ``state.epoch == epochs`` (give ``steps`` or ``epochs``).
      train_step: from :func:`make_train_step` (default: cross-entropy, jitted).
      eval_data: ``(x_eval, y_eval)``, evaluated every ``eval_every`` steps
        and at the end with :func:`evaluate`.
      eval_every: evaluation period in steps.
      eval_batch_size: batch size of the evaluation.
      eval_step: from :func:`make_eval_step`.
      checkpoint_dir: save :mod:`sparsejax.checkpoint` checkpoints here every
        ``checkpoint_every`` steps and at the end (the metadata records the
        seed, batch size and data position).
      checkpoint_every: checkpoint period in steps.
      keep: how many rolling checkpoints to keep (``None``: all).
      metadata: JSON-serialisable dict added to every checkpoint's metadata.
      log_every: training metrics are averaged over this many steps.
      callback: ``callback(state, metrics)`` after every step (on the host;
        raising an exception stops training).
      progress: show a tqdm progress bar.

    Returns:
      ``(state, history)``. ``history["train"]``: dicts with ``step``,
      ``epoch`` and the mean step metrics (``loss``, ``accuracy``) of each
      logging window; ``history["eval"]``: dicts with ``step``, ``epoch`` and
      the :func:`evaluate` results.

    Raises:
      ValueError: bad sizes or periods, a batch size larger than the data, a
        state position beyond the epoch, or a ``checkpoint_dir`` holding
        steps newer than the state (another run's).
    """
    return _fit(
        state,
        x,
        y,
        batch_size=batch_size,
        seed=seed,
        steps=steps,
        epochs=epochs,
        train_step=train_step,
        eval_data=eval_data,
        eval_every=eval_every,
        eval_batch_size=eval_batch_size,
        eval_step=eval_step,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        keep=keep,
        metadata=metadata,
        log_every=log_every,
        callback=callback,
        progress=progress,
        vmap_seeds=False,
    )


def train_many_seeds(
    state: TrainState,
    x: Any,
    y: Any,
    *,
    batch_size: int,
    seed: int | Sequence[int],
    steps: int | None = None,
    epochs: int | None = None,
    train_step: StepFn | None = None,
    eval_data: tuple[Any, Any] | None = None,
    eval_every: int | None = None,
    eval_batch_size: int = 1024,
    eval_step: Callable[..., dict[str, jax.Array]] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    keep: int | None = 3,
    metadata: Mapping[str, Any] | None = None,
    log_every: int = 100,
    callback: Callable[[TrainState, dict[str, jax.Array]], None] | None = None,
    progress: bool = True,
) -> tuple[TrainState, dict[str, list[dict[str, Any]]]]:
    """:func:`train` for ``S`` stacked seeds (:func:`create_train_states`) with one vmapped step.

    With an int ``seed`` every model sees the same batches (the seed axis is
    the only source of variation: initialisation and dropout); with a
    sequence of ``S`` data seeds, model ``i`` sees the batch order of
    ``seed[i]``. Seed ``i`` ends where
    ``train(state_i, ..., seed=seed or seed[i])`` ends, up to floating-point
    reassociation in the batched kernels. Arguments as in :func:`train`;
    metrics in the history and evaluation results are lists over the seeds.
    """
    return _fit(
        state,
        x,
        y,
        batch_size=batch_size,
        seed=seed,
        steps=steps,
        epochs=epochs,
        train_step=train_step,
        eval_data=eval_data,
        eval_every=eval_every,
        eval_batch_size=eval_batch_size,
        eval_step=eval_step,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        keep=keep,
        metadata=metadata,
        log_every=log_every,
        callback=callback,
        progress=progress,
        vmap_seeds=True,
    )
