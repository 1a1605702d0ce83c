"""Iterative magnitude pruning (:func:`imp`) and the ε-of-dense search (:func:`search_sparsity`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from sparsejax.lottery._config import (
    AdaptiveRate,
    LotteryConfig,
    LotteryResult,
    TrainOutput,
    TrainPlan,
)
from sparsejax.lottery._rounds import IMPRun
from sparsejax.tree import PyTree

__all__ = ["imp", "search_sparsity"]

_DEFAULT_ADAPTIVE = AdaptiveRate()  # frozen: one shared default is safe


def imp(
    params: PyTree,
    train_fn: Callable[[PyTree, PyTree, jax.Array, TrainPlan], TrainOutput],
    eval_fn: Callable[[PyTree], Mapping[str, Any]],
    config: LotteryConfig,
    *,
    key: jax.Array,
    init_fn: Callable[[jax.Array], PyTree] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    on_round: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: bool = False,
) -> LotteryResult:
    """Iterative magnitude pruning with resets, controls, stopping and adaptive rates.

    Runs ``R = config.rounds`` rounds of *train → prune a fraction of the remaining
    weights → reset → train again* around the user's own pure ``train_fn`` /
    ``eval_fn``, so it works with any model and training loop (a jitted ``lax.scan``,
    :func:`sparsejax.train.train`, a vmapped batch of seeds).

    Round ``0`` trains the dense network from ``params`` (``θ₀``). Round ``r ≥ 1``
    prunes, by weight magnitude of the last accepted round's trained weights, so that
    each layer (``scope="layer"``) or all prunable weights together (``scope="global"``)
    reach the cumulative sparsity ``1 − Π_i (1 − p_i)`` — with a constant rate ``p``
    exactly ``round((1 − (1 − p)^r) · n)`` of the ``n`` weights of a layer are pruned
    (:func:`sparsejax.prune` with the previous mask, so masks only shrink); with
    ``config.final`` a layer reaches exactly ``round(final · n)`` after round ``R``. The
    surviving weights are then *reset* (:data:`RESETS`):

    ================  ==================================================  ===========================
    reset             start of round ``r``                                reference
    ================  ==================================================  ===========================
    ``"init"``        ``where(mask, θ₀, 0)``, train steps ``0 … T``       Frankle & Carbin 2019
    ``"rewind"``      ``where(mask, θ_k, 0)``, train steps ``k … T``      Frankle et al. 2020
    ``"lr_rewind"``   ``where(mask, θ_T^{(r−1)}, 0)``, steps ``k … T``    Renda et al. 2020
    ``"finetune"``    ``where(mask, θ_T^{(r−1)}, 0)``, steps ``k … T``,   Han et al. 2015
                      learning rate × ``finetune_lr_scale``
    ================  ==================================================  ===========================

    ``θ_k`` is the dense run's weights after ``k = rewind_step`` steps (returned by
    ``train_fn`` as ``TrainOutput.captured``). Controls (:data:`CONTROLS`) are
    trained in every round beside the ticket, with the same plan:

    * ``"reinit"``: the ticket's mask, fresh weights ``init_fn(key)`` (Frankle &
      Carbin 2019, "random reinitialization");
    * ``"random_mask"``: a uniformly random mask with exactly the ticket's
      per-layer pruned counts, weights from the rewind point ("random pruning",
      Frankle & Carbin 2019; Greydanus & Kobak 2024);
    * ``"one_shot"``: magnitude pruning of the *dense* trained weights straight to
      the ticket's per-layer counts, then the ticket's reset.

    The decision metric is named in one place, ``config.metric`` (default
    ``"val_accuracy"``, or ``eval_fn``'s only key); ``eval_fn(θ₀)`` is called once
    before any training to check that it returns it. Stopping and adapting
    (``config.epsilon``, ``config.adaptive``): after each round the mean over seeds of
    that metric is compared with the dense round's (lower is better with
    ``config.maximize=False``). A drop larger than ``epsilon`` stops the cycle; with an
    :class:`AdaptiveRate` the next rate grows while the drop stays within
    ``adaptive.hold`` and shrinks otherwise, and a round that breaks ``epsilon`` is
    rejected and retried from the last accepted round at a smaller rate, until the
    rate would fall below ``adaptive.min_rate``. :func:`search_sparsity` packages
    this as the "highest sparsity within ε of dense" search.

    Every round is checkpointed with :mod:`sparsejax.checkpoint` (the rewind point
    as the snapshot ``"rewind"``); ``imp(..., checkpoint_dir=d)`` on a directory of
    a killed run resumes after its last finished round and, with deterministic
    ``train_fn`` / ``eval_fn``, returns exactly the records of the uninterrupted run.

    The ``train_fn`` contract (pure; may be jitted, e.g. with ``plan`` static)::

        train_fn(params, mask, key, plan: TrainPlan) -> TrainOutput

    trains from ``params`` (pruned entries are 0) keeping the ``mask``'s zeros at
    zero (e.g. with :func:`sparsejax.keep_sparse`), from step ``plan.start_step``
    to ``plan.end_step`` of the learning-rate schedule, with the learning rate
    scaled by ``plan.lr_scale``; returns the final params, the params after
    ``plan.capture_step`` steps when that is not ``None`` (the late-rewinding
    point), an optional ``history`` of periodic evaluations (see
    :class:`TrainOutput`) and the ``lr_scale`` it applied (required when it is not
    1: a ``train_fn`` that ignores ``plan.lr_scale`` would silently turn fine-tuning
    into another method, so the driver refuses the round). ``eval_fn(params) ->
    {name: scalar or [S]}`` evaluates the final params.

    Quiet by default: ``progress=True`` prints one line per round (sparsity, the
    metric against dense, the controls, seconds), and ``on_round(records)`` is
    called after every round (once its checkpoint is written) with that round's
    records (the dense or ticket record first, then the controls).

    Seeds in parallel: with ``config.seed_axis=True`` every params / mask leaf
    and the key carry a leading seed axis ``S``; pruning and scores are
    ``jax.vmap``-ed over it and ``train_fn`` / ``init_fn`` receive the stacked
    trees (vmap inside them). Decisions use the mean over seeds.

    Keys: round ``r`` uses ``fold_in(key, r)``; the ticket ``fold_in(·, 0)``,
    control ``i`` (1-based, in ``config.controls`` order) ``fold_in(·, i)``.

    Args:
      params: ``θ₀``, the initial params (leading seed axis ``S`` on every leaf
        with ``config.seed_axis``).
      train_fn: ``(params, mask, key, plan) -> TrainOutput`` (pure; see above).
      eval_fn: ``params -> {name: scalar or f32[S]}``; must contain ``config.metric``.
      config: a :class:`LotteryConfig`.
      key: PRNG key (``key[S]`` with ``config.seed_axis``).
      init_fn: ``key -> params`` for the ``"reinit"`` control.
      checkpoint_dir: checkpoint every round here (orbax) and resume from it.
      on_round: called with each round's records (a list of dicts) as it ends.
      progress: print one line per round (the runner turns it on).

    Returns:
      A :class:`LotteryResult`. Pure apart from the checkpoint files.

    Raises:
      ValueError / TypeError: bad config (a ``layer_rates`` / ``final`` key matching no
      layer, a layer without a rate), ``eval_fn`` without the metric or with
      non-numeric values (raised before any training), ``train_fn`` output of another
      tree or ignoring ``plan.lr_scale``, missing ``captured`` params for
      ``"rewind"``, a checkpoint of another config.

    References:
      Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient
      Neural Networks", NeurIPS 2015.
      Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable
      Neural Networks", ICLR 2019.
      Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery
      Ticket Hypothesis", ICML 2020.
      Renda, Frankle & Carbin, "Comparing Rewinding and Fine-tuning in Neural
      Network Pruning", ICLR 2020.
      Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", ICML 2024.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> params = {"w": jnp.arange(1.0, 17.0).reshape(4, 4), "b": jnp.zeros(4)}
      >>> def train_fn(p, mask, key, plan):
      ...     return TrainOutput(params=p, captured=None, history={})
      >>> def eval_fn(p):
      ...     return {"val_accuracy": 1.0}
      >>> result = imp(params, train_fn, eval_fn, LotteryConfig(rounds=2, rate=0.5, steps=1),
      ...              key=jax.random.key(0))
      >>> [r["pruned"] for r in result.records]
      [0, 8, 12]
    """
    if not isinstance(config, LotteryConfig):
        raise TypeError(f"config must be a LotteryConfig, got {type(config).__name__}")
    if config.seed_axis:
        sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(params)}
        if len(sizes) != 1 or None in sizes or np.shape(key)[:1] != (sizes.pop(),):
            raise ValueError(
                "seed_axis=True needs a common leading seed axis S on every params leaf and "
                f"key of shape (S,), got key shape {np.shape(key)}"
            )
    if on_round is not None and not callable(on_round):
        raise TypeError(f"on_round must be callable, got {on_round!r}")
    return IMPRun(params, train_fn, eval_fn, config, key, init_fn, checkpoint_dir,
                  on_round=on_round, progress=bool(progress)).run()


def search_sparsity(
    params: PyTree,
    train_fn: Callable[[PyTree, PyTree, jax.Array, TrainPlan], TrainOutput],
    eval_fn: Callable[[PyTree], Mapping[str, Any]],
    *,
    epsilon: float,
    key: jax.Array,
    rate: float = 0.2,
    max_rounds: int = 20,
    adaptive: AdaptiveRate = _DEFAULT_ADAPTIVE,
    checkpoint_dir: str | os.PathLike | None = None,
    on_round: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: bool = False,
    **config: Any,
) -> tuple[float, LotteryResult]:
    """Highest sparsity whose ``config.metric`` stays within ``epsilon`` of dense, in one call.

    Runs :func:`imp` with ``epsilon`` and an adaptive rate: rates grow while
    the accuracy holds, a round that breaks ``epsilon`` is rejected and
    retried at a smaller rate from the last accepted round, until the rate
    falls below ``adaptive.min_rate`` or ``max_rounds`` attempts are used.

    Args:
      params, train_fn, eval_fn, key, checkpoint_dir, on_round, progress: as for :func:`imp`.
      epsilon: tolerated drop of the metric (e.g. 0.005 = 0.5 pp).
      rate: first pruning rate.
      max_rounds: pruning attempts.
      adaptive: the rate rule.
      **config: further :class:`LotteryConfig` fields (``steps``, ``reset``, ...).

    Returns:
      ``(sparsity, result)``: the sparsity of ``result.best_round`` and the run.
    """
    cfg = LotteryConfig(rounds=max_rounds, rate=rate, epsilon=epsilon, adaptive=adaptive, **config)
    result = imp(params, train_fn, eval_fn, cfg, key=key, checkpoint_dir=checkpoint_dir,
                 on_round=on_round, progress=progress)
    best = next(r for r in result.records
                if r["round"] == result.best_round and r["variant"] in ("dense", "ticket"))
    return float(best["sparsity"]), result
