"""Iterative magnitude pruning (IMP): prune–train cycles, lottery tickets, weight rewinding.

One driver, :func:`imp`, runs rounds of *train → prune a fraction of the remaining
weights → reset → train again* around the user's own pure ``train_fn`` / ``eval_fn``
(contract: :class:`TrainPlan` in, :class:`TrainOutput` out), so it works with any model
and training loop, including a vmapped batch of seeds. Resets (:data:`RESETS`): back to
initialisation (Frankle & Carbin 2019), to an early step ``k`` (Frankle et al. 2020),
learning-rate rewinding (Renda et al. 2020) or fine-tuning (Han et al. 2015); controls
(:data:`CONTROLS`) train beside the ticket. Rates per round, per layer, or final per-layer
sparsities (``final=``); rounds stop or adapt their rate when the one decision metric
falls more than ``ε`` below dense (:class:`AdaptiveRate`, :func:`search_sparsity`); every
round is checkpointed, and a killed run resumes where it stopped. Quiet by default:
``progress=True`` prints a line per round, ``on_round`` receives each round's records.

The pure rules are exposed on their own: :func:`cumulative_sparsity`,
:func:`should_stop`, :func:`next_rate`.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from sparsejax.lottery import LotteryConfig, TrainOutput, imp
  >>> params = {"w": jnp.arange(1.0, 17.0).reshape(4, 4), "b": jnp.zeros(4)}
  >>> def train_fn(p, mask, key, plan):
  ...     return TrainOutput(params=p, captured=None, history={})
  >>> result = imp(params, train_fn, lambda p: {"val_accuracy": 1.0},
  ...              LotteryConfig(rounds=2, rate=0.5, steps=1), key=jax.random.key(0))
  >>> [r["pruned"] for r in result.records]
  [0, 8, 12]
"""

from sparsejax.lottery._config import (
    CONTROLS,
    RESETS,
    AdaptiveRate,
    LotteryConfig,
    LotteryResult,
    TrainOutput,
    TrainPlan,
)
from sparsejax.lottery._imp import imp, search_sparsity
from sparsejax.lottery._rules import cumulative_sparsity, next_rate, should_stop

__all__ = [
    "CONTROLS",
    "RESETS",
    "AdaptiveRate",
    "LotteryConfig",
    "LotteryResult",
    "TrainOutput",
    "TrainPlan",
    "cumulative_sparsity",
    "imp",
    "next_rate",
    "search_sparsity",
    "should_stop",
]
