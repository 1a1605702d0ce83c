"""``train``: the loop over epochs and batches, with evaluation, checkpoints and resumption.

Progress goes to stderr: a tqdm bar on a terminal, a few plain lines otherwise (a log file
gets no carriage-return updates); metrics go to an optional metric writer.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import checkpoint as _checkpoint
from sparsejax.data import batches as _batches
from sparsejax.data import num_batches as _num_batches
from sparsejax.train._checks import _check_int, _check_xy
from sparsejax.train._evaluate import _default_eval_step, evaluate
from sparsejax.train._state import TrainState
from sparsejax.train._step import StepFn, make_train_step

History = dict[str, list[dict[str, Any]]]


@functools.cache
def _default_train_step(vmap_seeds: bool, per_seed_batches: bool) -> StepFn:
    # One jitted function per configuration, so repeated train() calls reuse its compilations.
    return make_train_step(vmap_seeds=vmap_seeds, per_seed_batches=per_seed_batches)


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


def _fmt(value: Any) -> str:
    return f"{float(np.mean(value)):.4g}"


class _Progress:
    """Training progress: a tqdm bar (``"bar"``), plain lines (``"lines"``) or nothing.

    The metrics shown are those of the training step: means over the last logging window
    of *mini-batch* values (``loss``, ``accuracy`` on the batches being trained on), named
    as such; the evaluation metrics of ``eval_data`` are shown as ``eval ...``.
    """

    def __init__(self, mode: str, total: int, start: int, log_every: int):
        self.mode, self.total, self.start = mode, total, start
        self.bar = None
        self.t0 = time.perf_counter()
        # about ten lines per call in line mode, at logging-window boundaries
        self.every = max(log_every, -(-max(total - start, 1) // 10))
        if mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=min(start, total), unit="step",
                            dynamic_ncols=True, desc="train")

    def logged(self, step: int, metrics: Mapping[str, Any], window: int) -> None:
        shown = {f"mini-batch {k} (mean of {window})": _fmt(v) for k, v in metrics.items()}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
        elif self.mode == "lines" and (step % self.every == 0 or step >= self.total):
            rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
            text = ", ".join(f"{k} {v}" for k, v in shown.items())
            print(f"train step {step}/{self.total} ({rate:.1f} steps/s): {text}",
                  file=sys.stderr, flush=True)

    def evaluated(self, step: int, result: Mapping[str, Any]) -> None:
        text = ", ".join(f"eval {k} {_fmt(v)}" for k, v in result.items()
                         if k in ("accuracy", "loss", "macro_f1"))
        if self.bar is not None:
            self.bar.write(f"step {step}: {text}", file=sys.stderr)
        elif self.mode == "lines":
            print(f"train step {step}/{self.total}: {text}", file=sys.stderr, flush=True)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_mode(progress: bool | str) -> str:
    if progress is True:
        return "bar" if sys.stderr.isatty() else "lines"
    if progress is False:
        return "off"
    if progress in ("bar", "lines", "off"):
        return progress
    raise ValueError(f"progress must be True, False, 'bar', 'lines' or 'off', got {progress!r}")


def _is_scalar(value: Any, per_seed: bool) -> bool:
    """A number (a list of one number per seed with ``per_seed``): what a writer records."""
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        return False
    return array.ndim == (1 if per_seed else 0)


def _data_seeds(seed: int | Sequence[int], num_seeds: int | None) -> list[int]:
    """``[seed]`` (every model sees the same batches) or one data seed per stacked seed."""
    if isinstance(seed, (int, np.integer)):
        return [_check_int("seed", seed, 0)]
    if num_seeds is None:
        raise ValueError(f"seed must be an int, got {seed!r}")
    seeds = [_check_int(f"seed[{i}]", s, 0) for i, s in enumerate(seed)]
    if len(seeds) != num_seeds:
        raise ValueError(f"got {len(seeds)} data seeds for a state of {num_seeds} seeds")
    return seeds


def _check_seed_axis(state: TrainState, vmap_seeds: bool) -> int | None:
    """The number of stacked seeds (``None`` for a single-seed state), checked against the flag."""
    ndim = np.ndim(state.step)
    if vmap_seeds and ndim != 1:
        raise ValueError(
            "train(vmap_seeds=True) needs a state with a leading seed axis "
            f"(create_train_states); state.step has shape {np.shape(state.step)}"
        )
    if not vmap_seeds and ndim != 0:
        raise ValueError(
            f"train needs a single-seed state, state.step has shape {np.shape(state.step)}; "
            "for stacked seeds pass vmap_seeds=True (before 0.2: use train_many_seeds)"
        )
    return int(np.shape(state.step)[0]) if vmap_seeds else None


def train(
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
    progress: bool | str = True,
    vmap_seeds: bool = False,
    writer: Any = None,
) -> tuple[TrainState, History]:
    """Train from the state's position until ``steps`` steps or ``epochs`` epochs in total.

    Batches are :func:`sparsejax.data.batches` of epoch ``e``: a permutation
    that depends only on ``(seed, e)``, incomplete last batch dropped. The
    loop starts at ``(state.epoch, state.batch)`` and ``steps``/``epochs`` are
    *totals*, so ``train(restored_state, ..., steps=N)`` with the arguments of
    the interrupted call finishes exactly where the uninterrupted run does
    (bit for bit on a deterministic backend such as the CPU).

    **Many seeds at once** (``vmap_seeds=True``): a state of ``S`` stacked
    seeds (:func:`create_train_states`, ``TrainState.create`` with ``S`` keys)
    trains with one ``jax.vmap``-ed step. With an int ``seed`` every model sees
    the same batches (the seed axis is the only source of variation:
    initialisation and dropout); with a sequence of ``S`` data seeds, model
    ``i`` sees the batch order of ``seed[i]``. Seed ``i`` ends where
    ``train(state_i, ..., seed=seed or seed[i])`` ends, up to floating-point
    reassociation in the batched kernels. Metrics in the history and the
    evaluation results are then lists over the seeds.

    Args:
      state: a single-seed :class:`TrainState` (with ``vmap_seeds``: stacked seeds).
      x: ``[N, ...]`` training inputs (host numpy arrays).
      y: ``int[N]`` labels.
      batch_size: examples per step.
      seed: data-order seed (independent of ``state.key``); with
        ``vmap_seeds``, an int or one data seed per stacked seed.
      steps: stop when ``state.step == steps``.
      epochs: stop when ``state.epoch == epochs`` (give ``steps`` or ``epochs``).
      train_step: from :func:`make_train_step` (default: cross-entropy, jitted;
        with ``vmap_seeds``, vmapped, and with per-seed batches when ``seed`` is
        a sequence).
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
      progress: ``True``: a tqdm bar when stderr is a terminal, else a few plain
        lines on stderr (about ten per call, no carriage returns); ``"bar"``,
        ``"lines"``; ``False`` / ``"off"``: nothing. The metrics shown are the
        means of the last logging window's training *mini-batch* metrics, named so.
      vmap_seeds: ``state`` holds stacked seeds: train them all with one
        vmapped step.
      writer: a metric writer (:class:`sparsejax.runner.MetricWriter`, or any
        object with ``write_scalars(step, {name: value})``): each logging window
        writes ``train/minibatch_<metric>`` (means over the window's mini-batches),
        each evaluation ``eval/<metric>``; per-seed lists with ``vmap_seeds``.

    Returns:
      ``(state, history)``. ``history["train"]``: dicts with ``step``,
      ``epoch`` and the mean step metrics (``loss``, ``accuracy``) of each
      logging window; ``history["eval"]``: dicts with ``step``, ``epoch`` and
      the :func:`evaluate` results.

    Raises:
      ValueError: bad sizes or periods, a batch size larger than the data, a
        state position beyond the epoch, a state whose seed axis does not
        match ``vmap_seeds``, or a ``checkpoint_dir`` holding steps newer than
        the state (another run's).

    Example:
      >>> import jax, optax, numpy as np
      >>> from flax import nnx
      >>> from sparsejax.train import create_train_state
      >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
      >>> state = create_train_state(model, optax.sgd(0.1), key=jax.random.key(1))
      >>> x = np.ones((8, 4), np.float32); y = np.zeros(8, np.int32)
      >>> state, history = train(state, x, y, batch_size=4, seed=0, steps=3, progress=False)
      >>> int(state.step), (int(state.epoch), int(state.batch))
      (3, (1, 1))
    """
    x, y = _check_xy(x, y, "train")
    mode = _progress_mode(progress)
    if writer is not None and not callable(getattr(writer, "write_scalars", None)):
        raise TypeError(f"writer needs a write_scalars(step, scalars) method, got {writer!r}")
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
    seeds = _data_seeds(seed, _check_seed_axis(state, vmap_seeds))
    per_seed_batches = not isinstance(seed, (int, np.integer))

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
        "seed": seeds[0] if not per_seed_batches else list(seeds),
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
        shown.evaluated(step, result)
        if writer is not None:
            writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items()
                                        if _is_scalar(v, vmap_seeds)})

    history: History = {"train": [], "eval": []}
    buffer: list[dict[str, jax.Array]] = []
    shown = _Progress(mode, total, step, log_every)
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
                    window = len(buffer)
                    logged = _mean_metrics(buffer)
                    buffer = []
                    history["train"].append({"step": step, "epoch": epoch, **logged})
                    shown.logged(step, logged, window)
                    if writer is not None:
                        writer.write_scalars(step, {f"train/minibatch_{k}": v
                                                    for k, v in logged.items()})
                if eval_every is not None and step % eval_every == 0:
                    run_eval()
                if checkpoint_every is not None and step % checkpoint_every == 0:
                    save()
                if callback is not None:
                    callback(state, metrics)
                shown.update()
                if last:
                    break
    finally:
        shown.close()
        if writer is not None and hasattr(writer, "flush"):
            writer.flush()
    if eval_data is not None and (not history["eval"] or history["eval"][-1]["step"] != step):
        run_eval()
    if checkpoint_dir is not None and step not in _checkpoint.all_steps(checkpoint_dir):
        save()
    return state, history


def train_many_seeds(
    state: TrainState, x: Any, y: Any, **options: Any
) -> tuple[TrainState, History]:
    """Deprecated: ``train(state, x, y, vmap_seeds=True, **options)``.

    :func:`train` runs stacked seeds (:func:`create_train_states`) with one
    vmapped step when given ``vmap_seeds=True``; the options are those of
    :func:`train`.
    """
    warnings.warn(
        "train_many_seeds(...) is deprecated: use train(..., vmap_seeds=True)",
        DeprecationWarning,
        stacklevel=2,
    )
    return train(state, x, y, vmap_seeds=True, **options)
