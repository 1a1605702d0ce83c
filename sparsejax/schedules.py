"""Sparsity schedules: when to (re)select a mask, and at which sparsity.

A schedule is a frozen dataclass with two pure, jit-safe methods of the
optimizer step ``t`` (the 0-based index of the update being computed, i.e.
the number of updates already applied):

* ``schedule(t)`` -> ``float32`` target sparsity: the sparsity the mask has
  after the update at step ``t``. It is piecewise constant: equal to the value
  chosen at the last update step ``<= t`` (the schedule's initial sparsity
  before the first update step).
* ``schedule.is_update(t)`` -> ``bool``: whether the mask is recomputed at step
  ``t``. The gradual pruning transform (:func:`sparsejax.transforms.pruning`)
  scores the parameters ``params_t`` it receives at that step (the result of
  ``t`` updates) and selects the new mask inside ``jax.lax.cond``.

Both accept a Python ``int`` or an integer ``jax.Array`` of any shape (a traced
scalar under ``jit``, or ``jnp.arange(n)`` to evaluate a whole schedule at once
for a plot) and return arrays of the same shape. They never retrace on a new
step value and never touch the host.

Parameters are static Python numbers checked at construction: a bad one raises
a ``ValueError`` (``TypeError`` for a wrong type) naming the parameter and value.

Example:
  >>> sched = polynomial(0.0, 0.875, begin=100, end=1_000, every=100)
  >>> float(sched(99)), float(sched(1_000))
  (0.0, 0.875)
  >>> bool(sched.is_update(200)), bool(sched.is_update(250))
  (True, False)
"""

from __future__ import annotations

import abc
import dataclasses
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "Constant",
    "Iterative",
    "OneShot",
    "Periodic",
    "Polynomial",
    "Schedule",
    "constant",
    "iterative",
    "one_shot",
    "periodic",
    "polynomial",
    "update_steps",
]


# --------------------------------------------------------------------------- validation


def _check_real(owner: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                hi_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    v = float(value)
    below = v <= lo if lo_open else v < lo
    above = v >= hi if hi_open else v > hi
    if math.isnan(v) or below or above:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{owner}: {name} must be in {interval}, got {value!r}")
    return v


def _check_int(owner: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value!r}")
    return int(value)


def _as_step(step: Any) -> tuple[Any, Any]:
    """``(xp, step)``: NumPy for a concrete Python / NumPy step (no XLA op), else ``jax.numpy``.

    Both paths run the same code and index the same float32 table, so they
    agree bit for bit; the NumPy path only avoids compiling tiny XLA programs
    when a schedule is evaluated eagerly (logging, plotting, tests).
    """
    xp = np if isinstance(step, (int, np.integer, np.ndarray)) else jnp
    step = xp.asarray(step)
    if not np.issubdtype(step.dtype, np.integer):
        raise TypeError(f"a schedule's step must be an integer scalar or array, got dtype {step.dtype}")
    return xp, step


def _f32(x: Any) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _bool(xp: Any, x: Any) -> Any:
    """A bool array of ``xp``: NumPy for a NumPy step, so that a host-side schedule
    (:func:`update_steps`) never round-trips through the device."""
    return xp.asarray(x, bool)


# Largest value table a schedule embeds (256 KiB of float32) before falling
# back to evaluating its closed form in float32.
_MAX_TABLE = 1 << 16


def _lookup(xp: Any, table: np.ndarray, index: Any) -> jax.Array:
    """``table[index]`` for a host float64 table, rounded once to float32."""
    return _f32(xp.asarray(table.astype(np.float32))[index])


def _on_grid(xp: Any, step: Any, begin: int, every: int) -> Any:
    """``step >= begin`` and ``step - begin`` a multiple of ``every``."""
    return (step >= begin) & (xp.remainder(step - begin, every) == 0)


# --------------------------------------------------------------------------- base


class Schedule(abc.ABC):
    """Interface of a sparsity schedule (see the module docstring for the step convention).

    Any object with these two methods can drive :func:`sparsejax.transforms.pruning`.

    The schedules of this module compute their values once, in float64 on the
    host, and round them once to ``float32``; a step only indexes that table
    (for more than 65 536 distinct values the closed form is evaluated in
    ``float32`` instead). A schedule therefore gives bit-identical values
    eagerly, under ``jit`` and on any backend: ``round(s * n)`` never flips
    between a jitted and an eager run.
    """

    @abc.abstractmethod
    def __call__(self, step: int | jax.Array) -> jax.Array:
        """Target sparsity (``float32``, same shape as ``step``) of the mask after step ``step``."""

    @abc.abstractmethod
    def is_update(self, step: int | jax.Array) -> jax.Array:
        """Whether the mask is recomputed at step ``step`` (``bool``, same shape as ``step``;
        a NumPy array for a Python or NumPy step, evaluated without XLA)."""

    @property
    @abc.abstractmethod
    def last_update(self) -> int | None:
        """The last step at which ``is_update`` is true (``None``: updates never stop)."""


# --------------------------------------------------------------------------- one-shot / constant


@dataclasses.dataclass(frozen=True)
class OneShot(Schedule):
    """Prune once, at step ``at``, to ``sparsity``; ``0.0`` before. See :func:`one_shot`."""

    sparsity: float
    at: int = 0

    def __post_init__(self):
        object.__setattr__(self, "sparsity", _check_real("one_shot", "sparsity", self.sparsity, 0, 1))
        object.__setattr__(self, "at", _check_int("one_shot", "at", self.at, 0))

    def __call__(self, step: int | jax.Array) -> jax.Array:
        xp, step = _as_step(step)
        return _f32(xp.where(step >= self.at, self.sparsity, 0.0))

    def is_update(self, step: int | jax.Array) -> jax.Array:
        xp, step = _as_step(step)
        return _bool(xp, step == self.at)

    @property
    def last_update(self) -> int:
        return self.at


def one_shot(sparsity: float, at: int = 0) -> OneShot:
    """Prune once to ``sparsity`` at step ``at`` (``at=0``: pruning at initialisation).

    Args:
      sparsity: target fraction of pruned entries, in ``[0, 1]``.
      at: the step at which the mask is selected (``>= 0``).

    Returns:
      A :class:`OneShot` schedule: ``s(t) = sparsity`` for ``t >= at``, else
      ``0``; ``is_update(t) = (t == at)``.

    Example:
      >>> s = one_shot(0.8, at=10)
      >>> float(s(9)), float(s(10)), bool(s.is_update(10))
      (0.0, 0.800000011920929, True)
    """
    return OneShot(sparsity, at)


@dataclasses.dataclass(frozen=True)
class Constant(Schedule):
    """Re-select at a fixed sparsity every ``every`` steps from ``begin``. See :func:`constant`."""

    sparsity: float
    every: int
    begin: int = 0
    end: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "sparsity", _check_real("constant", "sparsity", self.sparsity, 0, 1))
        object.__setattr__(self, "every", _check_int("constant", "every", self.every, 1))
        object.__setattr__(self, "begin", _check_int("constant", "begin", self.begin, 0))
        if self.end is not None:
            object.__setattr__(self, "end", _check_int("constant", "end", self.end, self.begin))

    def __call__(self, step: int | jax.Array) -> jax.Array:
        xp, step = _as_step(step)
        return _f32(xp.where(step >= self.begin, self.sparsity, 0.0))

    def is_update(self, step: int | jax.Array) -> jax.Array:
        xp, step = _as_step(step)
        on = _on_grid(xp, step, self.begin, self.every)
        return _bool(xp, on if self.end is None else on & (step <= self.end))

    @property
    def last_update(self) -> int | None:
        if self.end is None:
            return None
        return self.begin + (self.end - self.begin) // self.every * self.every


def constant(sparsity: float, every: int, begin: int = 0, end: int | None = None) -> Constant:
    """Select the mask at a fixed ``sparsity`` at steps ``begin, begin + every, ...`` (``<= end``).

    Each update re-scores the parameters and selects ``sparsity`` of them
    again. Under the cumulative :func:`sparsejax.transforms.pruning` transform
    (masks only shrink) the first update reaches the target and later ones
    only prune what is needed to get back to it, e.g. when training started
    from a denser mask given with ``mask=``; methods that regrow on purpose
    (RigL, SET) use the same schedule to re-rank at a fixed sparsity.

    Args:
      sparsity: target fraction of pruned entries, in ``[0, 1]``.
      every: period of the updates in steps (``>= 1``).
      begin: first update step (``>= 0``).
      end: last step at which an update may happen (``>= begin``), or ``None``
        for no end.

    Returns:
      A :class:`Constant` schedule: ``s(t) = sparsity`` for ``t >= begin``, else
      ``0``.
    """
    return Constant(sparsity, every, begin, end)


# --------------------------------------------------------------------------- periodic


@dataclasses.dataclass(frozen=True)
class Periodic(Schedule):
    """Add ``increment`` of sparsity every ``every`` steps until ``final``. See :func:`periodic`."""

    increment: float
    every: int
    final: float
    begin: int = 0
    initial: float = 0.0

    def __post_init__(self):
        object.__setattr__(
            self, "increment",
            _check_real("periodic", "increment", self.increment, 0, 1, lo_open=True))
        object.__setattr__(self, "every", _check_int("periodic", "every", self.every, 1))
        object.__setattr__(self, "final", _check_real("periodic", "final", self.final, 0, 1))
        object.__setattr__(self, "begin", _check_int("periodic", "begin", self.begin, 0))
        object.__setattr__(
            self, "initial",
            _check_real("periodic", "initial", self.initial, 0, self.final, hi_open=True))

    @property
    def num_updates(self) -> int:
        """``K = ceil((final - initial) / increment)``, robust to float rounding (1e-9)."""
        return max(1, math.ceil((self.final - self.initial) / self.increment - 1e-9))

    def __call__(self, step: int | jax.Array) -> jax.Array:
        xp, step = _as_step(step)
        num = self.num_updates
        k = xp.clip(xp.floor_divide(step - self.begin, self.every), 0, num - 1)
        if num <= _MAX_TABLE:
            table = np.minimum(self.initial + np.arange(1, num + 1) * self.increment, self.final)
            table[-1] = self.final
            value = _lookup(xp, table, k)
        else:
            k = jnp.asarray(k)
            value = jnp.where(
                k + 1 >= num, self.final, self.initial + (k + 1).astype(jnp.float32) * self.increment
            )
        return _f32(jnp.where(jnp.asarray(step) >= self.begin, value, self.initial))

    def is_update(self, step: int | jax.Array) -> jax.Array:
        xp, step = _as_step(step)
        return _bool(xp, _on_grid(xp, step, self.begin, self.every) & (step <= self.last_update))

    @property
    def last_update(self) -> int:
        return self.begin + (self.num_updates - 1) * self.every


def periodic(increment: float, every: int, final: float, begin: int = 0,
             initial: float = 0.0) -> Periodic:
    """Prune by a fixed ``increment`` of sparsity every ``every`` steps until ``final``.

    With ``K = ceil((final - initial) / increment)`` updates at steps
    ``t_k = begin + k * every`` for ``k = 0, ..., K - 1``, the target after
    update ``k`` is ``min(initial + (k + 1) * increment, final)``; the last
    update lands on ``final`` exactly (a last increment smaller than
    ``increment`` if ``final - initial`` is not a multiple of it). Before
    ``begin`` the value is ``initial``; after ``t_{K-1}`` it stays ``final``.

    Args:
      increment: sparsity added per update, in ``(0, 1]``.
      every: period of the updates in steps (``>= 1``).
      final: final sparsity, in ``[0, 1]``.
      begin: first update step (``>= 0``).
      initial: sparsity before ``begin``, in ``[0, final)`` (the mask given to
        the transform, dense by default).

    Returns:
      A :class:`Periodic` schedule.

    Example:
      >>> s = periodic(0.25, every=10, final=0.9)
      >>> [round(float(s(t)), 2) for t in (0, 10, 20, 30, 40)]
      [0.25, 0.5, 0.75, 0.9, 0.9]
      >>> s.last_update
      30
    """
    return Periodic(increment, every, final, begin, initial)


# --------------------------------------------------------------------------- polynomial


@dataclasses.dataclass(frozen=True)
class Polynomial(Schedule):
    """Zhu & Gupta (2017) gradual pruning. See :func:`polynomial`."""

    initial: float
    final: float
    begin: int
    end: int
    every: int
    power: float = 3

    def __post_init__(self):
        own = "polynomial"
        object.__setattr__(self, "initial", _check_real(own, "initial", self.initial, 0, 1))
        object.__setattr__(self, "final", _check_real(own, "final", self.final, 0, 1))
        if self.final < self.initial:
            raise ValueError(
                f"{own}: final ({self.final!r}) must be >= initial ({self.initial!r}); masks only "
                "shrink, so a decreasing sparsity schedule cannot be followed"
            )
        object.__setattr__(self, "begin", _check_int(own, "begin", self.begin, 0))
        object.__setattr__(self, "end", _check_int(own, "end", self.end, self.begin + 1))
        object.__setattr__(self, "every", _check_int(own, "every", self.every, 1))
        span = self.end - self.begin
        if span % self.every:
            lo = self.begin + span // self.every * self.every
            raise ValueError(
                f"{own}: end - begin ({span}) must be a multiple of every ({self.every}) so that "
                f"the final sparsity is reached at an update step; use end={lo} or "
                f"end={lo + self.every}"
            )
        if isinstance(self.power, bool) or not isinstance(self.power, numbers.Real) or not (
            math.isfinite(self.power) and self.power > 0
        ):
            raise ValueError(f"{own}: power must be a finite number > 0, got {self.power!r}")

    @property
    def num_intervals(self) -> int:
        """``n = (end - begin) / every``: the schedule updates ``n + 1`` times."""
        return (self.end - self.begin) // self.every

    def __call__(self, step: int | jax.Array) -> jax.Array:
        xp, step = _as_step(step)
        n = self.num_intervals
        # Number of whole intervals elapsed: the value is held between updates.
        k = xp.clip(xp.floor_divide(step - self.begin, self.every), 0, n)
        if n < _MAX_TABLE:
            ks = np.arange(n + 1, dtype=np.float64)
            table = self.final + (self.initial - self.final) * (1.0 - ks / n) ** self.power
            table[0], table[-1] = self.initial, self.final
            return _lookup(xp, table, k)
        k = jnp.asarray(k)
        # optax gives (s_i - s_f) (1 - k / n)^power + s_f in float32; both ends
        # are pinned so that s(begin) == initial and s(end) == final exactly.
        curve = optax.polynomial_schedule(
            init_value=self.initial, end_value=self.final, power=self.power, transition_steps=n
        )(k)
        return _f32(jnp.where(k <= 0, self.initial, jnp.where(k >= n, self.final, curve)))

    def is_update(self, step: int | jax.Array) -> jax.Array:
        xp, step = _as_step(step)
        return _bool(xp, _on_grid(xp, step, self.begin, self.every) & (step <= self.end))

    @property
    def last_update(self) -> int:
        return self.end


def polynomial(initial: float, final: float, begin: int, end: int, every: int,
               power: float = 3) -> Polynomial:
    r"""Gradual pruning with the polynomial schedule of Zhu & Gupta (2017).

    With :math:`t_0` = ``begin``, :math:`\Delta t` = ``every`` and
    :math:`n = (\text{end} - t_0) / \Delta t`, the mask is updated at
    :math:`t_0, t_0 + \Delta t, \dots, t_0 + n \Delta t` = ``end`` to

    .. math::
      s_t = s_f + (s_i - s_f) \left(1 - \frac{t - t_0}{n \Delta t}\right)^{3},

    (exponent ``power``), held constant between updates (``t`` rounded down to
    the last update step), ``s_i`` before ``t_0`` and ``s_f`` after ``end``.
    ``s(begin) == initial`` and ``s(end) == final`` hold exactly (``float32``);
    the values between are the float64 closed form rounded to ``float32``.
    The pruning rate is high early, when redundant weights are plentiful, and
    tapers off as fewer weights remain.

    Args:
      initial: :math:`s_i`, in ``[0, 1]``.
      final: :math:`s_f`, in ``[initial, 1]``.
      begin: :math:`t_0`, the first update step (``>= 0``).
      end: the last update step, ``> begin``; ``end - begin`` must be a
        multiple of ``every`` (otherwise ``ValueError``: the last update would
        not land on ``final``).
      every: :math:`\Delta t`, steps between updates (``>= 1``).
      power: exponent of the polynomial (``3`` in the paper).

    Returns:
      A :class:`Polynomial` schedule.

    References:
      Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of
      pruning for model compression", 2017. https://arxiv.org/abs/1710.01878

    Example:
      >>> s = polynomial(0.0, 0.875, begin=0, end=40, every=10)
      >>> [float(s(t)) for t in (0, 9, 10, 20, 39, 40, 99)]
      [0.0, 0.0, 0.505859375, 0.765625, 0.861328125, 0.875, 0.875]
    """
    return Polynomial(initial, final, begin, end, every, power)


# --------------------------------------------------------------------------- iterative


@dataclasses.dataclass(frozen=True)
class Iterative(Schedule):
    """Compound-rate rounds of iterative magnitude pruning. See :func:`iterative`."""

    rate: float
    rounds: int
    steps_per_round: int
    begin: int = 0

    def __post_init__(self):
        own = "iterative"
        object.__setattr__(
            self, "rate", _check_real(own, "rate", self.rate, 0, 1, lo_open=True, hi_open=True))
        object.__setattr__(self, "rounds", _check_int(own, "rounds", self.rounds, 1))
        object.__setattr__(
            self, "steps_per_round", _check_int(own, "steps_per_round", self.steps_per_round, 1))
        object.__setattr__(self, "begin", _check_int(own, "begin", self.begin, 0))

    @property
    def sparsities(self) -> np.ndarray:
        """``float32`` array ``[1 - (1 - rate)^k for k = 0..rounds]`` (computed in float64)."""
        k = np.arange(self.rounds + 1, dtype=np.float64)
        return (1.0 - (1.0 - self.rate) ** k).astype(np.float32)

    def __call__(self, step: int | jax.Array) -> jax.Array:
        xp, step = _as_step(step)
        k = xp.clip(xp.floor_divide(step - self.begin, self.steps_per_round), 0, self.rounds)
        return _lookup(xp, self.sparsities, k)

    def is_update(self, step: int | jax.Array) -> jax.Array:
        xp, step = _as_step(step)
        return _bool(
            xp,
            _on_grid(xp, step, self.begin + self.steps_per_round, self.steps_per_round)
            & (step <= self.last_update)
        )

    @property
    def last_update(self) -> int:
        return self.begin + self.rounds * self.steps_per_round


def iterative(rate: float, rounds: int, steps_per_round: int, begin: int = 0) -> Iterative:
    """Iterative pruning at a compound rate: prune ``rate`` of the surviving weights per round.

    Round ``k`` (``k = 1..rounds``) trains for ``steps_per_round`` steps,
    ``begin + (k-1) * steps_per_round .. begin + k * steps_per_round - 1``; the
    mask is then updated at step ``begin + k * steps_per_round`` to keep
    ``(1 - rate)^k`` of the weights, i.e. sparsity ``1 - (1 - rate)^k`` (e.g.
    ``rate=0.2``: 20 %, 36 %, 48.8 %, 59.04 %, ...). Values are computed in
    float64 and rounded once to float32.

    This is the pruning schedule of iterative magnitude pruning (lottery
    tickets) without the rewinding, which :mod:`sparsejax.lottery` adds.

    Args:
      rate: fraction of the remaining weights pruned per round, in ``(0, 1)``.
      rounds: number of pruning rounds (``>= 1``).
      steps_per_round: training steps per round (``>= 1``).
      begin: the step at which round 1 starts (``>= 0``).

    Returns:
      An :class:`Iterative` schedule.

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse,
      Trainable Neural Networks", ICLR 2019. https://arxiv.org/abs/1803.03635
      Han et al., "Learning both Weights and Connections for Efficient Neural
      Networks", NeurIPS 2015. https://arxiv.org/abs/1506.02626
    """
    return Iterative(rate, rounds, steps_per_round, begin)


# --------------------------------------------------------------------------- host side


def update_steps(schedule: Any, stop: int, start: int = 0) -> np.ndarray:
    """The steps ``t`` in ``[start, stop)`` at which ``schedule.is_update(t)`` is true.

    Evaluated once, on the host, for a training loop that tells the pruning
    transform on the host whether a step updates the mask
    (``prune_now=t in steps``; see :func:`sparsejax.transforms.pruning` and
    ``sparsejax.train.make_train_step(host_schedule=True)``), so the jitted step
    needs no ``lax.cond``.

    Args:
      schedule: a schedule of this module, or any object with
        ``is_update(steps: int array) -> bool array``.
      stop: one past the last step (``>= start``).
      start: the first step (``>= 0``).

    Returns:
      ``int64[K]`` sorted update steps.

    Example:
      >>> update_steps(polynomial(0.0, 0.9, begin=10, end=40, every=10), 100).tolist()
      [10, 20, 30, 40]
    """
    start = _check_int("update_steps", "start", start, 0)
    stop = _check_int("update_steps", "stop", stop, start)
    steps = np.arange(start, stop, dtype=np.int64)
    flags = np.asarray(schedule.is_update(steps), dtype=bool)
    if flags.shape != steps.shape:
        raise ValueError(
            f"update_steps: schedule.is_update(steps) must return one bool per step, got shape "
            f"{flags.shape} for {steps.shape[0]} steps"
        )
    return steps[flags]
