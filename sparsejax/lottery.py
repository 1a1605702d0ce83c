"""Iterative magnitude pruning (IMP): prune–train cycles, lottery tickets, weight rewinding.

One driver, :func:`imp`, runs ``R`` rounds of *train → prune a fraction of the
remaining weights → reset → train again* around the user's own pure
``train_fn`` / ``eval_fn``, so it works with any model and training loop (a
jitted ``lax.scan``, :func:`sparsejax.train.train`, a vmapped batch of seeds).

Round ``0`` trains the dense network from ``params`` (``θ₀``). Round ``r ≥ 1``
prunes, by weight magnitude of the last accepted round's trained weights, so
that each layer (``scope="layer"``) or all prunable weights together
(``scope="global"``) reach the cumulative sparsity
``1 − Π_i (1 − p_i)`` — with a constant rate ``p`` exactly
``round((1 − (1 − p)^r) · n)`` of the ``n`` weights of a layer are pruned
(:func:`sparsejax.prune` with the previous mask, so masks only shrink). The
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

Stopping and adapting (``config.epsilon``, ``config.adaptive``): after each
round the mean over seeds of ``eval_fn(params)[config.metric]`` is compared
with the dense round's. A drop larger than ``epsilon`` stops the cycle; with an
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
point), and an optional ``history`` of periodic evaluations: arrays (last axis
= evaluation index) named ``"step"``, ``"val_loss"``, ``"val_accuracy"``,
``"test_accuracy"`` (any subset), from which the record takes the early-stop
step (``argmin val_loss``), the maximal test accuracy and the
validation-selected test accuracy (test accuracy at ``argmax val_accuracy``,
first on ties). ``eval_fn(params) -> {name: scalar or [S]}`` evaluates the
final params.

Seeds in parallel: with ``config.seed_axis=True`` every params / mask leaf
and the key carry a leading seed axis ``S``; pruning and scores are
``jax.vmap``-ed over it and ``train_fn`` / ``init_fn`` receive the stacked
trees (vmap inside them). Decisions use the mean over seeds.

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

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import checkpoint as _checkpoint
from sparsejax import scores as _scores
from sparsejax.masks import apply_mask, init_mask
from sparsejax.select import prune
from sparsejax.tree import Prunable, PyTree, check_same_structure, named_leaves, prunable_tree

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

RESETS: tuple[str, ...] = ("init", "rewind", "lr_rewind", "finetune")
CONTROLS: tuple[str, ...] = ("reinit", "random_mask", "one_shot")
_HISTORY_KEYS = ("step", "val_loss", "val_accuracy", "test_accuracy")


class TrainPlan(NamedTuple):
    """What the driver asks ``train_fn`` to do in one round (hashable: usable as a static arg).

    Attributes:
      start_step: first step of the learning-rate schedule / data order.
      end_step: train until this step (``end_step − start_step`` steps).
      lr_scale: multiply the learning rate by this (``finetune`` reset).
      capture_step: absolute step whose params to return as
        ``TrainOutput.captured`` (the late-rewinding point), or ``None``.
    """

    start_step: int
    end_step: int
    lr_scale: float = 1.0
    capture_step: int | None = None


class TrainOutput(NamedTuple):
    """What ``train_fn`` returns.

    Attributes:
      params: the trained params (same tree as the input params).
      captured: the params after ``plan.capture_step`` steps, or ``None``.
      history: ``{name: array[..., E]}`` periodic evaluations (see module doc);
        ``{}`` if none.
    """

    params: PyTree
    captured: PyTree | None
    history: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class AdaptiveRate:
    """Adaptive per-round pruning rate: prune faster while accuracy holds, back off when not.

    After a round with accuracy drop ``d = dense − value``: ``d ≤ hold`` →
    ``rate · grow``, else ``rate · shrink``; clipped to ``[min_rate,
    max_rate]``. A round with ``d > epsilon`` is rejected (and retried at the
    shrunk rate from the last accepted round) while the shrunk rate is still at
    least ``min_rate``; otherwise the cycle stops.

    Attributes:
      grow: factor (> 1) applied while the accuracy holds.
      shrink: factor in (0, 1) applied when it drops.
      hold: largest drop (accuracy units, e.g. 0.002) that counts as holding.
      min_rate: smallest rate worth trying, in (0, 1).
      max_rate: largest rate, in (min_rate, 1].
    """

    grow: float = 1.5
    shrink: float = 0.5
    hold: float = 0.0
    min_rate: float = 0.02
    max_rate: float = 0.8

    def __post_init__(self) -> None:
        if not self.grow >= 1.0:
            raise ValueError(f"AdaptiveRate.grow must be >= 1, got {self.grow!r}")
        if not 0.0 < self.shrink < 1.0:
            raise ValueError(f"AdaptiveRate.shrink must be in (0, 1), got {self.shrink!r}")
        if not self.hold >= 0.0:
            raise ValueError(f"AdaptiveRate.hold must be >= 0, got {self.hold!r}")
        if not 0.0 < self.min_rate < 1.0:
            raise ValueError(f"AdaptiveRate.min_rate must be in (0, 1), got {self.min_rate!r}")
        if not self.min_rate <= self.max_rate <= 1.0:
            raise ValueError(
                f"AdaptiveRate.max_rate must be in [min_rate={self.min_rate}, 1], "
                f"got {self.max_rate!r}"
            )


@dataclasses.dataclass(frozen=True)
class LotteryConfig:
    """Configuration of :func:`imp` (frozen; JSON-serialisable through ``dataclasses.asdict``).

    Attributes:
      rounds: pruning rounds after the dense round 0 (attempts, rejected ones
        included).
      rate: fraction of the *remaining* weights pruned per round, in (0, 1).
      layer_rates: per-layer rates ``((path_or_regex, rate), ...)`` (a mapping
        is accepted) for ``scope="layer"``, e.g. ``{"layers/2/kernel": 0.1}``
        for the output layer (Frankle & Carbin 2019: 20% dense, 10% conv and
        output). An exact path wins; otherwise the first key whose regex is
        found in the path. Under an adaptive rate every layer rate is scaled by
        ``current_rate / rate``.
      scope: ``"layer"`` or ``"global"`` magnitude ranking.
      reset: one of :data:`RESETS`.
      rewind_step: ``k``: the rewind point for ``"rewind"`` (must be ``> 0``
        there, and 0 for ``"init"``) and the first step of later rounds for
        every reset but ``"init"``.
      steps: ``T``, the training length (``TrainPlan.end_step``).
      finetune_lr_scale: learning-rate factor of the ``"finetune"`` reset.
      controls: subset of :data:`CONTROLS` trained beside the ticket.
      metric: key of ``eval_fn``'s result used to stop / adapt.
      epsilon: stop (or reject) when ``dense − value > epsilon``; ``None``: never.
      adaptive: an :class:`AdaptiveRate`, or ``None`` for a constant rate.
      prunable: which leaves may be pruned (``Prunable`` spec; ``None``: ndim ≥ 2).
      seed_axis: params, masks and key carry a leading seed axis.
    """

    rounds: int
    rate: float = 0.2
    layer_rates: tuple[tuple[str, float], ...] = ()
    scope: str = "layer"
    reset: str = "init"
    rewind_step: int = 0
    steps: int = 1
    finetune_lr_scale: float = 0.1
    controls: tuple[str, ...] = ()
    metric: str = "val_accuracy"
    epsilon: float | None = None
    adaptive: AdaptiveRate | None = None
    prunable: Prunable = None
    seed_axis: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if isinstance(self.layer_rates, Mapping):
            set_(self, "layer_rates", tuple(self.layer_rates.items()))
        set_(self, "layer_rates", tuple((str(k), float(v)) for k, v in self.layer_rates))
        set_(self, "controls", tuple(self.controls))
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 0:
            raise ValueError(f"LotteryConfig.rounds must be an int >= 0, got {self.rounds!r}")
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"LotteryConfig.rate must be in (0, 1), got {self.rate!r}")
        for path, r in self.layer_rates:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"LotteryConfig.layer_rates[{path!r}] must be in [0, 1), got {r}")
        if self.scope not in ("layer", "global"):
            raise ValueError(f"LotteryConfig.scope must be 'layer' or 'global', got {self.scope!r}")
        if self.layer_rates and self.scope != "layer":
            raise ValueError("LotteryConfig.layer_rates needs scope='layer'")
        if self.reset not in RESETS:
            raise ValueError(f"LotteryConfig.reset must be one of {RESETS}, got {self.reset!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"LotteryConfig.steps must be an int >= 1, got {self.steps!r}")
        if (
            isinstance(self.rewind_step, bool)
            or not isinstance(self.rewind_step, int)
            or not 0 <= self.rewind_step < self.steps
        ):
            raise ValueError(
                f"LotteryConfig.rewind_step must be an int in [0, steps={self.steps}), "
                f"got {self.rewind_step!r}"
            )
        if self.reset == "rewind" and self.rewind_step == 0:
            raise ValueError("LotteryConfig.reset='rewind' needs rewind_step > 0 (k=0 is 'init')")
        if self.reset == "init" and self.rewind_step != 0:
            raise ValueError(
                f"LotteryConfig.reset='init' rewinds to step 0, got rewind_step="
                f"{self.rewind_step}; use reset='rewind'"
            )
        if not self.finetune_lr_scale > 0.0:
            raise ValueError(
                f"LotteryConfig.finetune_lr_scale must be > 0, got {self.finetune_lr_scale!r}"
            )
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown or len(set(self.controls)) != len(self.controls):
            raise ValueError(
                f"LotteryConfig.controls must be distinct names from {CONTROLS}, "
                f"got {self.controls!r}"
            )
        if self.epsilon is not None and not self.epsilon >= 0.0:
            raise ValueError(f"LotteryConfig.epsilon must be >= 0 or None, got {self.epsilon!r}")
        if self.adaptive is not None and not isinstance(self.adaptive, AdaptiveRate):
            raise TypeError(f"LotteryConfig.adaptive must be an AdaptiveRate, got {self.adaptive!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (stored in every checkpoint to refuse resuming another config)."""
        d = dataclasses.asdict(self)
        d["layer_rates"] = [list(kv) for kv in self.layer_rates]
        d["controls"] = list(self.controls)
        p = self.prunable
        # callables by name (a repr with a memory address would differ in a resumed process)
        d["prunable"] = (f"{getattr(p, '__module__', '')}.{getattr(p, '__qualname__', '')}"
                         if callable(p) else repr(p))
        return d


class LotteryResult(NamedTuple):
    """What :func:`imp` returns.

    Attributes:
      records: one dict per (round, variant): ``round``, ``variant``
        (``"dense"``, ``"ticket"`` or a control), ``accepted``, ``rate``,
        ``sparsity`` and ``weights_remaining`` (fractions of the prunable
        weights), ``pruned`` / ``prunable`` (exact counts), ``layer_sparsity``
        ``{path: fraction}``, every ``eval_fn`` metric (mean over seeds, and
        ``<name>_per_seed``), and from the history ``early_stop_step``,
        ``max_test_accuracy``, ``val_selected_test_accuracy`` (means).
      mask: the last accepted ticket mask.
      params: the last accepted ticket's trained params.
      best_round: the accepted round of highest sparsity whose decision metric
        is within ``epsilon`` of dense (the last accepted round if
        ``epsilon`` is ``None``).
      stopped: why the cycle ended: ``"rounds"``, ``"epsilon"`` or ``"min_rate"``.
    """

    records: list[dict[str, Any]]
    mask: PyTree
    params: PyTree
    best_round: int
    stopped: str


# --------------------------------------------------------------------------- pure rules


def cumulative_sparsity(rates: Sequence[float]) -> float:
    """Sparsity after pruning the fractions ``rates`` of the remaining weights in turn.

    ``1 − Π (1 − p_i)``; for a constant rate ``p`` over ``k`` rounds
    ``1 − (1 − p)^k`` (Frankle & Carbin 2019, iterative pruning).

    Example:
      >>> round(cumulative_sparsity([0.2, 0.2]), 6)
      0.36
    """
    for i, r in enumerate(rates):
        if not 0.0 <= float(r) <= 1.0:
            raise ValueError(f"rates[{i}] must be in [0, 1], got {r!r}")
    return 1.0 - math.prod(1.0 - float(r) for r in rates)


def should_stop(dense_value: float, value: float, epsilon: float | None) -> bool:
    """``True`` when ``value`` fell more than ``epsilon`` below ``dense_value``.

    Example:
      >>> should_stop(0.98, 0.975, 0.01), should_stop(0.98, 0.969, 0.01)
      (False, True)
    """
    if epsilon is None:
        return False
    if not epsilon >= 0.0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    return bool(float(dense_value) - float(value) > float(epsilon))


def next_rate(rate: float, dense_value: float, value: float, adaptive: AdaptiveRate) -> float:
    """Next round's pruning rate from the last round's validation result (pure).

    ``rate · grow`` if ``dense_value − value ≤ adaptive.hold`` else
    ``rate · shrink``, clipped to ``[adaptive.min_rate, adaptive.max_rate]``.

    Example:
      >>> a = AdaptiveRate(grow=2.0, shrink=0.5, hold=0.01, min_rate=0.05, max_rate=0.6)
      >>> next_rate(0.2, 0.90, 0.895, a), next_rate(0.2, 0.90, 0.88, a), next_rate(0.4, 0.9, 0.9, a)
      (0.4, 0.1, 0.6)
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate!r}")
    drop = float(dense_value) - float(value)
    factor = adaptive.grow if drop <= adaptive.hold else adaptive.shrink
    return float(min(adaptive.max_rate, max(adaptive.min_rate, rate * factor)))


# --------------------------------------------------------------------------- helpers


def _seed0(tree: PyTree, seed_axis: bool) -> PyTree:
    return jax.tree.map(lambda x: x[0], tree) if seed_axis else tree


def _fold(key: jax.Array, data: int) -> jax.Array:
    if jnp.ndim(key) == 0:
        return jax.random.fold_in(key, data)
    return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)


def _vmapped(fn: Callable[..., Any], seed_axis: bool) -> Callable[..., Any]:
    return jax.vmap(fn) if seed_axis else fn


def _prunable_names(params1: PyTree, prunable: Prunable) -> list[tuple[str, tuple[int, ...]]]:
    which = jax.tree.leaves(prunable_tree(params1, prunable))
    return [
        (name, tuple(np.shape(leaf)))
        for (name, leaf), w in zip(named_leaves(params1), which, strict=True)
        if w
    ]


def _layer_rates(config: LotteryConfig, names: Sequence[str]) -> dict[str, float]:
    """Per-layer rate of every prunable path; a ``layer_rates`` key matching none → ValueError."""
    out = {}
    used = set()
    for name in names:
        rate = config.rate
        exact = [k for k, _ in config.layer_rates if k == name]
        keys = exact or [k for k, _ in config.layer_rates if re.search(k, name)]
        if keys:
            rate = dict(config.layer_rates)[keys[0]]
            used.add(keys[0])
        out[name] = rate
    unused = [k for k, _ in config.layer_rates if k not in used]
    for key in unused:
        if not any(key == n or re.search(key, n) for n in names):
            raise ValueError(
                f"LotteryConfig.layer_rates key {key!r} matches no prunable layer; layers: {names}"
            )
    return out


def _counts(mask1: PyTree, params1: PyTree, prunable: Prunable) -> dict[str, tuple[int, int]]:
    """``{path: (pruned, total)}`` of the prunable leaves of one seed's mask."""
    which = jax.tree.leaves(prunable_tree(params1, prunable))
    out = {}
    for (name, p), m, w in zip(named_leaves(params1), jax.tree.leaves(mask1), which, strict=True):
        if w:
            kept = int(np.sum(np.broadcast_to(np.asarray(m), np.shape(p))))
            total = int(np.prod(np.shape(p), dtype=np.int64))
            out[name] = (total - kept, total)
    return out


def _summary(values: Any) -> tuple[float, list[float]]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(arr.mean()), [float(v) for v in arr]


def _history_stats(history: Mapping[str, Any]) -> dict[str, Any]:
    """Early-stop step, max test accuracy and validation-selected test accuracy (means)."""
    h = {k: np.asarray(v, dtype=np.float64) for k, v in history.items() if k in _HISTORY_KEYS}
    out: dict[str, Any] = {}
    if not h:
        return out
    lengths = {k: v.shape[-1] for k, v in h.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"TrainOutput.history arrays differ in length (last axis): {lengths}")
    if "step" in h and "val_loss" in h:
        steps = np.broadcast_to(h["step"], h["val_loss"].shape)
        idx = np.argmin(h["val_loss"], axis=-1)
        es = np.take_along_axis(steps, idx[..., None], axis=-1)[..., 0]
        out["early_stop_step"], out["early_stop_step_per_seed"] = _summary(es)
    if "test_accuracy" in h:
        out["max_test_accuracy"], out["max_test_accuracy_per_seed"] = _summary(
            h["test_accuracy"].max(axis=-1)
        )
        if "val_accuracy" in h:
            val = np.broadcast_to(h["val_accuracy"], h["test_accuracy"].shape)
            idx = np.argmax(val, axis=-1)
            sel = np.take_along_axis(h["test_accuracy"], idx[..., None], axis=-1)[..., 0]
            out["val_selected_test_accuracy"], out["val_selected_test_accuracy_per_seed"] = (
                _summary(sel)
            )
    return out


class _Driver:
    """The state machine behind :func:`imp` (one instance per call)."""

    def __init__(self, params, train_fn, eval_fn, config, key, init_fn, checkpoint_dir):
        self.cfg = config
        self.train_fn, self.eval_fn, self.init_fn = train_fn, eval_fn, init_fn
        self.key = key
        self.dir = checkpoint_dir
        self.theta0 = params
        self.params1 = _seed0(params, config.seed_axis)
        self.layers = _prunable_names(self.params1, config.prunable)
        if not self.layers:
            raise ValueError("no prunable parameter: LotteryConfig.prunable matched no leaf")
        self.names = [n for n, _ in self.layers]
        self.layer_rate = _layer_rates(config, self.names)

    # ----------------------------------------------------------- masks
    def dense_mask(self):
        """All-kept mask (leading seed axis on every leaf with ``seed_axis``)."""
        mask = init_mask(self.params1, self.cfg.prunable)
        if self.cfg.seed_axis:
            n = jax.tree.leaves(self.theta0)[0].shape[0]
            mask = jax.tree.map(lambda m: jnp.broadcast_to(m, (n, *jnp.shape(m))), mask)
        return mask

    def _vprune(self, scores, sparsity_or_map, mask=None, scope="layer"):
        """:func:`sparsejax.prune`, vmapped over seeds; always given a mask (one compilation)."""
        cfg = self.cfg

        def one(s, m):
            if isinstance(sparsity_or_map, dict):
                return prune(s, None, distribution=sparsity_or_map, mask=m,
                             prunable=cfg.prunable, scope="layer")
            return prune(s, sparsity_or_map, mask=m, prunable=cfg.prunable, scope=scope)

        return _vmapped(one, cfg.seed_axis)(scores, self.dense_mask() if mask is None else mask)

    def ticket_mask(self, trained, base_mask, rates):
        """Cumulative magnitude pruning to ``1 − Π(1 − p_i)`` per layer (or globally)."""
        cfg = self.cfg
        scores = _scores.magnitude(trained)
        if cfg.scope == "global":
            return self._vprune(scores, cumulative_sparsity(rates), base_mask, scope="global")
        targets = {
            name: cumulative_sparsity([min(1.0, self.layer_rate[name] * r / cfg.rate)
                                       for r in rates])
            for name in self.names
        }
        return self._vprune(scores, targets, base_mask)

    def same_counts_mask(self, scores, ticket):
        """Mask pruning exactly the ticket's per-layer counts by ``scores``."""
        counts = _counts(_seed0(ticket, self.cfg.seed_axis), self.params1, self.cfg.prunable)
        return self._vprune(scores, {n: p / t for n, (p, t) in counts.items()})

    def mask_params(self, params, mask):
        return _vmapped(apply_mask, self.cfg.seed_axis)(params, mask)

    # ----------------------------------------------------------- training
    def plan(self, dense: bool) -> TrainPlan:
        cfg = self.cfg
        if dense:
            capture = cfg.rewind_step if cfg.reset == "rewind" else None
            return TrainPlan(0, cfg.steps, 1.0, capture)
        scale = cfg.finetune_lr_scale if cfg.reset == "finetune" else 1.0
        return TrainPlan(cfg.rewind_step, cfg.steps, scale, None)

    def run_variant(self, record, start, mask, key, plan):
        out = self.train_fn(start, mask, key, plan)
        if not isinstance(out, TrainOutput):
            if isinstance(out, tuple) and len(out) == 3:
                out = TrainOutput(*out)
            else:
                raise TypeError(
                    f"train_fn must return a TrainOutput(params, captured, history), got "
                    f"{type(out).__name__}"
                )
        check_same_structure(start, out.params, "params", "train_fn(...).params")
        counts = _counts(_seed0(mask, self.cfg.seed_axis), self.params1, self.cfg.prunable)
        pruned = sum(p for p, _ in counts.values())
        total = sum(t for _, t in counts.values())
        record.update(
            pruned=pruned,
            prunable=total,
            sparsity=pruned / total,
            weights_remaining=1.0 - pruned / total,
            layer_sparsity={n: p / t for n, (p, t) in counts.items()},
        )
        metrics = self.eval_fn(out.params)
        if not isinstance(metrics, Mapping) or self.cfg.metric not in metrics:
            raise ValueError(
                f"eval_fn must return a mapping with the key {self.cfg.metric!r} "
                f"(LotteryConfig.metric), got {metrics!r}"
            )
        for name, value in metrics.items():
            record[name], record[f"{name}_per_seed"] = _summary(value)
        record.update(_history_stats(out.history or {}))
        return out, record

    # ----------------------------------------------------------- checkpoints
    def _state(self, base_params, base_mask, dense_params):
        return {"base_params": base_params, "base_mask": base_mask, "dense_params": dense_params}

    def save(self, attempt, state, meta, rewind=None):
        if self.dir is None:
            return
        if rewind is not None:
            _checkpoint.save_snapshot(self.dir, "rewind", self.cfg.rewind_step, rewind,
                                      overwrite=True)
        _checkpoint.save(self.dir, attempt, state, metadata={"config": self.cfg.to_dict(), **meta},
                         keep=2)

    def restore(self, target_state):
        if self.dir is None or _checkpoint.latest_step(self.dir) is None:
            return None
        restored = _checkpoint.restore(self.dir, target_state)
        saved = restored.metadata.get("config")
        if saved != self.cfg.to_dict():
            raise ValueError(
                f"checkpoint_dir {os.fspath(self.dir)!r} holds a run of another config: "
                f"{saved} != {self.cfg.to_dict()}"
            )
        rewind = _checkpoint.restore_snapshot(self.dir, "rewind", self.theta0).state
        return restored, rewind

    # ----------------------------------------------------------- the cycle
    def run(self) -> LotteryResult:
        cfg = self.cfg
        dense_mask = self.dense_mask()
        target = self._state(self.theta0, dense_mask, self.theta0)
        resumed = self.restore(target)
        if resumed is None:
            plan = self.plan(dense=True)
            out, rec = self.run_variant(
                {"round": 0, "variant": "dense", "accepted": True, "rate": 0.0},
                self.theta0, dense_mask, _fold(self.key, 0), plan,
            )
            if cfg.reset == "rewind":
                if out.captured is None:
                    raise ValueError(
                        f"reset='rewind' needs train_fn to return the params at step "
                        f"{cfg.rewind_step} as TrainOutput.captured (plan.capture_step)"
                    )
                check_same_structure(self.theta0, out.captured, "params", "captured")
                rewind = out.captured
            else:
                rewind = self.theta0
            meta = {"records": [rec], "rates": [], "rate": cfg.rate, "attempt": 0,
                    "stopped": None}
            state = self._state(out.params, dense_mask, out.params)
            self.save(0, state, meta, rewind=rewind)
        else:
            restored, rewind = resumed
            state, meta = restored.state, restored.metadata
        records = list(meta["records"])
        dense_value = records[0][cfg.metric]
        rates, rate, attempt, stopped = list(meta["rates"]), meta["rate"], meta["attempt"], \
            meta["stopped"]
        while stopped is None and attempt < cfg.rounds:
            attempt += 1
            key = _fold(self.key, attempt)
            trial_rates = [*rates, rate]
            mask = self.ticket_mask(state["base_params"], state["base_mask"], trial_rates)
            plan = self.plan(dense=False)
            trained = state["base_params"] if cfg.reset in ("lr_rewind", "finetune") else rewind
            start = self.mask_params(trained, mask)
            out, rec = self.run_variant(
                {"round": attempt, "variant": "ticket", "rate": rate}, start, mask,
                _fold(key, 0), plan,
            )
            value = rec[cfg.metric]
            broke = should_stop(dense_value, value, cfg.epsilon)
            new_rate = rate if cfg.adaptive is None else next_rate(rate, dense_value, value,
                                                                   cfg.adaptive)
            retry = broke and cfg.adaptive is not None and rate * cfg.adaptive.shrink >= \
                cfg.adaptive.min_rate
            rec["accepted"] = not broke
            round_records = [rec]
            for i, control in enumerate(cfg.controls, start=1):
                ckey = _fold(key, i)
                if control == "reinit":
                    if self.init_fn is None:
                        raise ValueError("the 'reinit' control needs init_fn=key -> params")
                    fresh = _vmapped(self.init_fn, cfg.seed_axis)(_fold(ckey, 1))
                    check_same_structure(self.theta0, fresh, "params", "init_fn(key)")
                    cmask, cstart = mask, self.mask_params(fresh, mask)
                elif control == "random_mask":
                    rnd = _vmapped(_scores.random, cfg.seed_axis)(rewind, _fold(ckey, 1))
                    cmask = self.same_counts_mask(rnd, mask)
                    cstart = self.mask_params(rewind, cmask)
                else:  # one_shot
                    cmask = self.same_counts_mask(_scores.magnitude(state["dense_params"]), mask)
                    src = state["dense_params"] if cfg.reset in ("lr_rewind", "finetune") \
                        else rewind
                    cstart = self.mask_params(src, cmask)
                _, crec = self.run_variant(
                    {"round": attempt, "variant": control, "rate": rate,
                     "accepted": not broke}, cstart, cmask, ckey, plan,
                )
                round_records.append(crec)
            records.extend(round_records)
            if not broke:
                rates = trial_rates
                state = self._state(out.params, mask, state["dense_params"])
            elif not retry:
                stopped = "epsilon" if cfg.adaptive is None else "min_rate"
            rate = new_rate
            meta = {"records": records, "rates": rates, "rate": rate, "attempt": attempt,
                    "stopped": stopped}
            self.save(attempt, state, meta)
        accepted = [r for r in records if r["variant"] in ("dense", "ticket") and r["accepted"]]
        return LotteryResult(
            records=records,
            mask=state["base_mask"],
            params=state["base_params"],
            best_round=int(max(accepted, key=lambda r: (r["sparsity"], -r["round"]))["round"]),
            stopped=stopped or "rounds",
        )


def imp(
    params: PyTree,
    train_fn: Callable[[PyTree, PyTree, jax.Array, TrainPlan], TrainOutput],
    eval_fn: Callable[[PyTree], Mapping[str, Any]],
    config: LotteryConfig,
    *,
    key: jax.Array,
    init_fn: Callable[[jax.Array], PyTree] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> LotteryResult:
    """Iterative magnitude pruning with resets, controls, stopping and adaptive rates.

    See the module docstring for the round structure, resets and controls.
    Keys: round ``r`` uses ``fold_in(key, r)``; the ticket ``fold_in(·, 0)``,
    control ``i`` (1-based, in ``config.controls`` order) ``fold_in(·, i)``.

    Args:
      params: ``θ₀``, the initial params (leading seed axis ``S`` on every leaf
        with ``config.seed_axis``).
      train_fn: ``(params, mask, key, plan) -> TrainOutput`` (pure; see module doc).
      eval_fn: ``params -> {name: scalar or f32[S]}``; must contain ``config.metric``.
      config: a :class:`LotteryConfig`.
      key: PRNG key (``key[S]`` with ``config.seed_axis``).
      init_fn: ``key -> params`` for the ``"reinit"`` control.
      checkpoint_dir: checkpoint every round here (orbax) and resume from it.

    Returns:
      A :class:`LotteryResult`. Pure apart from the checkpoint files.

    Raises:
      ValueError / TypeError: bad config, ``train_fn`` output of another tree,
      missing ``captured`` params for ``"rewind"``, ``eval_fn`` without
      ``config.metric``, a checkpoint of another config.
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
    driver = _Driver(params, train_fn, eval_fn, config, key, init_fn, checkpoint_dir)
    return driver.run()


def search_sparsity(
    params: PyTree,
    train_fn: Callable[[PyTree, PyTree, jax.Array, TrainPlan], TrainOutput],
    eval_fn: Callable[[PyTree], Mapping[str, Any]],
    *,
    epsilon: float,
    key: jax.Array,
    rate: float = 0.2,
    max_rounds: int = 20,
    adaptive: AdaptiveRate = AdaptiveRate(),
    checkpoint_dir: str | os.PathLike | None = None,
    **config: Any,
) -> tuple[float, LotteryResult]:
    """Highest sparsity whose ``config.metric`` stays within ``epsilon`` of dense, in one call.

    Runs :func:`imp` with ``epsilon`` and an adaptive rate: rates grow while
    the accuracy holds, a round that breaks ``epsilon`` is rejected and
    retried at a smaller rate from the last accepted round, until the rate
    falls below ``adaptive.min_rate`` or ``max_rounds`` attempts are used.

    Args:
      params, train_fn, eval_fn, key, checkpoint_dir: as for :func:`imp`.
      epsilon: tolerated drop of the metric (e.g. 0.005 = 0.5 pp).
      rate: first pruning rate.
      max_rounds: pruning attempts.
      adaptive: the rate rule.
      **config: further :class:`LotteryConfig` fields (``steps``, ``reset``, ...).

    Returns:
      ``(sparsity, result)``: the sparsity of ``result.best_round`` and the run.
    """
    cfg = LotteryConfig(rounds=max_rounds, rate=rate, epsilon=epsilon, adaptive=adaptive, **config)
    result = imp(params, train_fn, eval_fn, cfg, key=key, checkpoint_dir=checkpoint_dir)
    best = next(r for r in result.records
                if r["round"] == result.best_round and r["variant"] in ("dense", "ticket"))
    return float(best["sparsity"]), result
