"""``drop_schedule``: when dynamic sparse training rewires its mask, and what fraction it moves."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.schedules import (
    _MAX_TABLE,
    _as_step,
    _bool,
    _check_int,
    _check_real,
    _lookup,
    _on_grid,
)

DECAYS: tuple[str, ...] = ("cosine", "constant", "linear")


def _decayed(fraction: float, decay: str, t, end: int, xp):
    """The drop fraction at step ``t`` (``xp``: NumPy float64 on the host, or ``jax.numpy``)."""
    if decay == "constant":
        return fraction + 0.0 * t
    ratio = xp.minimum(t / end, 1.0) if end > 0 else 1.0 + 0.0 * t
    if decay == "cosine":
        return 0.5 * fraction * (1.0 + xp.cos(math.pi * ratio))
    return fraction * (1.0 - ratio)


@dataclasses.dataclass(frozen=True)
class DropSchedule:
    """When a dynamic sparse transform rewires its mask, and the fraction it moves. See :func:`drop_schedule`.

    Duck-types a :mod:`sparsejax.schedules` schedule (``__call__``, ``is_update``,
    ``last_update``), so ``sparsejax.schedules.update_steps`` and
    ``sparsejax.train.make_train_loop`` place its updates on the host; the
    value it gives is the *drop fraction* of the update, not a sparsity.
    """

    fraction: float = 0.3
    every: int = 100
    end: int = 0
    begin: int = 0
    decay: str = "cosine"

    def __post_init__(self):
        own = "drop_schedule"
        object.__setattr__(self, "fraction", _check_real(own, "fraction", self.fraction, 0, 1))
        object.__setattr__(self, "every", _check_int(own, "every", self.every, 1))
        object.__setattr__(self, "begin", _check_int(own, "begin", self.begin, 0))
        object.__setattr__(self, "end", _check_int(own, "end", self.end, self.begin))
        if self.decay not in DECAYS:
            raise ValueError(f"{own}: decay must be one of {DECAYS}, got {self.decay!r}")

    @property
    def num_updates(self) -> int:
        """How many steps rewire the mask: ``begin, begin + every, ...`` up to ``end``."""
        return (self.end - self.begin) // self.every + 1

    @property
    def last_update(self) -> int:
        """The last step at which ``is_update`` is true."""
        return self.begin + (self.num_updates - 1) * self.every

    def __call__(self, step: int | jax.Array) -> jax.Array:
        """The drop fraction (``float32``, the shape of ``step``) of the last update ``<= step``.

        At an update step, the fraction that update drops; before ``begin`` the
        value of the first update. A NumPy path for concrete steps and the
        ``jax.numpy`` path index one float32 table, so they agree bit for bit.
        """
        xp, step = _as_step(step)
        n = self.num_updates
        index = xp.clip(xp.floor_divide(step - self.begin, self.every), 0, n - 1)
        if n <= _MAX_TABLE:
            steps = self.begin + self.every * np.arange(n, dtype=np.float64)
            return _lookup(xp, _decayed(self.fraction, self.decay, steps, self.end, np), index)
        t = jnp.asarray(self.begin + self.every * jnp.asarray(index), jnp.float32)
        return jnp.asarray(_decayed(self.fraction, self.decay, t, self.end, jnp), jnp.float32)

    def is_update(self, step: int | jax.Array) -> jax.Array:
        """Whether step ``step`` rewires the mask (``bool``; NumPy for a concrete step)."""
        xp, step = _as_step(step)
        return _bool(xp, _on_grid(xp, step, self.begin, self.every) & (step <= self.end))


def drop_schedule(
    fraction: float = 0.3,
    *,
    every: int = 100,
    end: int,
    begin: int = 0,
    decay: str = "cosine",
) -> DropSchedule:
    r"""Mask updates of dynamic sparse training: every ``every`` steps until ``end``.

    The mask is rewired at steps ``begin, begin + every, ...`` (up to ``end``);
    the update at step :math:`t` drops the fraction :math:`f(t)` of each layer's
    active weights and grows as many:

    * ``"cosine"`` (RigL, Evci et al. 2020, Eq. 1; SNFS's prune-rate
      annealing): :math:`f(t) = \frac{\alpha}{2}\left(1 + \cos\frac{\pi t}{T_{end}}\right)`,
    * ``"constant"`` (SET, Mocanu et al. 2018): :math:`f(t) = \alpha`,
    * ``"linear"``: :math:`f(t) = \alpha (1 - t / T_{end})`,

    with :math:`\alpha` = ``fraction`` and :math:`T_{end}` = ``end``. Values
    are computed once in float64 on the host and rounded to float32 (a table of
    at most 65,536 updates; beyond it the closed form in float32), so eager
    and jitted runs see the same fraction.

    Args:
      fraction: :math:`\alpha`, in ``[0, 1]`` (RigL and SET: ``0.3``; SNFS: ``0.5``).
      every: :math:`\Delta T`, steps between updates (RigL: ``100``; SET and
        SNFS update once per epoch: pass the steps per epoch).
      end: :math:`T_{end}`, the last step that may rewire the mask (RigL: 75 %
        of training, ``int(0.75 * num_steps)``), ``>= begin``.
      begin: the first update step (``>= 0``; RigL updates from step 0).
      decay: ``"cosine"``, ``"constant"`` or ``"linear"``.

    Returns:
      A :class:`DropSchedule`.

    Raises:
      ValueError / TypeError: a parameter out of range or of the wrong type
        (naming it and its value).

    References:
      Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All
      Tickets Winners", ICML 2020. https://arxiv.org/abs/1911.11134

    Example:
      >>> import sparsejax
      >>> s = sparsejax.transforms.drop_schedule(0.3, every=100, end=300)
      >>> [round(float(s(t)), 4) for t in (0, 100, 200, 300)]
      [0.3, 0.225, 0.075, 0.0]
      >>> sparsejax.schedules.update_steps(s, 1_000).tolist()
      [0, 100, 200, 300]
    """
    return DropSchedule(fraction, every, end, begin, decay)
