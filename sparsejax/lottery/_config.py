"""The configuration and data contract of :func:`sparsejax.lottery.imp`.

:class:`LotteryConfig` and :class:`AdaptiveRate` configure a run; :class:`TrainPlan` is
what the driver asks the user's ``train_fn`` to do in one round and :class:`TrainOutput`
what it returns; :class:`LotteryResult` is what :func:`~sparsejax.lottery.imp` returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from sparsejax.tree import Prunable, PyTree

__all__ = [
    "CONTROLS",
    "RESETS",
    "AdaptiveRate",
    "LotteryConfig",
    "LotteryResult",
    "TrainOutput",
    "TrainPlan",
]

RESETS: tuple[str, ...] = ("init", "rewind", "lr_rewind", "finetune")
CONTROLS: tuple[str, ...] = ("reinit", "random_mask", "one_shot")


class TrainPlan(NamedTuple):
    """What the driver asks ``train_fn`` to do in one round (hashable: usable as a static arg).

    ``train_fn(params, mask, key, plan) -> TrainOutput`` (pure; may be jitted, e.g. with
    ``plan`` static) trains from ``params`` (pruned entries are 0) keeping the ``mask``'s
    zeros at zero (e.g. with :func:`sparsejax.keep_sparse`), from step ``start_step`` to
    ``end_step`` of the learning-rate schedule, with the learning rate scaled by
    ``lr_scale`` (and says so: ``TrainOutput(..., lr_scale=plan.lr_scale)``; a round
    with ``lr_scale != 1``, the ``"finetune"`` reset, is refused when ``train_fn`` does not
    confirm it, since ignoring it silently runs another method).

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

    The ``history`` holds periodic evaluations: arrays (last axis = evaluation index)
    named ``"step"``, ``"val_loss"``, ``"val_accuracy"``, ``"test_accuracy"`` (any
    subset), from which each record takes the early-stop step (``argmin val_loss``), the
    maximal test accuracy and the validation-selected test accuracy (test accuracy at
    ``argmax val_accuracy``, first on ties).

    Attributes:
      params: the trained params (same tree as the input params).
      captured: the params after ``plan.capture_step`` steps, or ``None``.
      history: ``{name: array[..., E]}`` periodic evaluations (see above);
        ``{}`` if none.
      lr_scale: the learning-rate factor ``train_fn`` applied (``plan.lr_scale``);
        required when it is not 1 (``reset="finetune"``), checked by the driver.
    """

    params: PyTree
    captured: PyTree | None
    history: Mapping[str, Any]
    lr_scale: float | None = None


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
      rate: fraction of the *remaining* weights pruned per round, in (0, 1);
        ``None``: 0.2 (Frankle & Carbin 2019) when neither ``layer_rates`` nor
        ``final`` is given, otherwise every prunable layer must get its rate from them.
      layer_rates: per-layer rates ``((path_or_regex, rate), ...)`` (a mapping
        is accepted) for ``scope="layer"``, e.g. ``{"layers/2/kernel": 0.1}``
        for the output layer (Frankle & Carbin 2019: 20% dense, 10% conv and
        output). An exact path wins; otherwise the first key whose regex is
        found in the path. Under an adaptive rate every layer rate is scaled by
        ``current_rate / rate``.
      final: the sparsity to reach after ``rounds`` rounds instead of a rate: a
        fraction for every layer (or for all weights with ``scope="global"``), or
        per-layer fractions ``((path_or_regex, fraction), ...)`` / a mapping (Han et al.
        2015 give per-layer final sparsities). Round ``r`` prunes to ``1 − k^(r/R)``
        of a layer with final fraction ``1 − k`` (a per-round rate ``1 − k^(1/R)``),
        exactly ``round(final · n)`` weights after round ``R``. ``final`` wins over
        ``layer_rates`` and ``rate``; not with ``adaptive``.
      scope: ``"layer"`` or ``"global"`` magnitude ranking.
      reset: one of :data:`RESETS` (see :func:`imp` for what each one restarts from).
      rewind_step: ``k``: the rewind point for ``"rewind"`` (must be ``> 0``
        there, and 0 for ``"init"``) and the first step of later rounds for
        every reset but ``"init"``.
      steps: ``T``, the training length (``TrainPlan.end_step``).
      finetune_lr_scale: learning-rate factor of the ``"finetune"`` reset.
      controls: subset of :data:`CONTROLS` trained beside the ticket.
      metric: the key of ``eval_fn``'s result that every decision uses (stopping,
        adapting, :attr:`LotteryResult.best_round`); ``None``: ``"val_accuracy"`` if
        ``eval_fn`` returns it, else its only key. Checked on ``θ₀`` before any training.
      maximize: whether higher ``metric`` is better (accuracy); ``False`` for a loss or
        an error rate (a metric named ``*loss*`` / ``*error*`` / ``*perplexity*`` with
        ``maximize=True`` is refused).
      epsilon: stop (or reject) when the metric is more than ``epsilon`` worse than
        dense (``dense − value`` when maximizing); ``None``: never.
      adaptive: an :class:`AdaptiveRate`, or ``None`` for a constant rate.
      prunable: which leaves may be pruned (``Prunable`` spec; ``None``: ndim ≥ 2).
      seed_axis: params, masks and key carry a leading seed axis ``S``; pruning
        and scores are ``jax.vmap``-ed over it, ``train_fn`` / ``init_fn``
        receive the stacked trees (vmap inside them), and decisions use the mean
        over seeds.
    """

    rounds: int
    rate: float | None = None
    layer_rates: tuple[tuple[str, float], ...] = ()
    final: float | tuple[tuple[str, float], ...] | None = None
    scope: str = "layer"
    reset: str = "init"
    rewind_step: int = 0
    steps: int = 1
    finetune_lr_scale: float = 0.1
    controls: tuple[str, ...] = ()
    metric: str | None = None
    maximize: bool = True
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
        if self.rate is not None and not (
            isinstance(self.rate, (int, float)) and 0.0 < self.rate < 1.0
        ):
            raise ValueError(f"LotteryConfig.rate must be in (0, 1) or None, got {self.rate!r}")
        for path, r in self.layer_rates:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"LotteryConfig.layer_rates[{path!r}] must be in [0, 1), got {r}")
        self._check_final()
        if self.scope not in ("layer", "global"):
            raise ValueError(f"LotteryConfig.scope must be 'layer' or 'global', got {self.scope!r}")
        if self.layer_rates and self.scope != "layer":
            raise ValueError("LotteryConfig.layer_rates needs scope='layer'")
        if isinstance(self.final, tuple) and self.scope != "layer":
            raise ValueError("per-layer LotteryConfig.final needs scope='layer' (or one fraction)")
        if self.scope == "global" and self.rate is None and self.final is None and self.layer_rates:
            raise ValueError("LotteryConfig(scope='global') prunes all layers at one rate: set rate")
        if self.final is not None and self.rounds < 1:
            raise ValueError("LotteryConfig.final needs rounds >= 1 to reach it")
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
        if self.adaptive is not None and self.final is not None:
            raise ValueError("LotteryConfig.final fixes every round's rate; it cannot be adaptive")
        if self.adaptive is not None and self.rate is None and self.layer_rates:
            raise ValueError("an adaptive LotteryConfig needs rate=, the starting rate")
        if self.metric is not None and not isinstance(self.metric, str):
            raise TypeError(f"LotteryConfig.metric must be a string or None, got {self.metric!r}")
        if not isinstance(self.maximize, bool):
            raise TypeError(f"LotteryConfig.maximize must be a bool, got {self.maximize!r}")
        if self.metric is not None:
            check_direction(self.metric, self.maximize)

    def _check_final(self) -> None:
        final = self.final
        if final is None:
            return
        if isinstance(final, Mapping):
            final = tuple(final.items())
        if isinstance(final, (int, float)) and not isinstance(final, bool):
            items = (("", float(final)),)
            object.__setattr__(self, "final", float(final))
        else:
            try:
                items = tuple((str(k), float(v)) for k, v in final)
            except (TypeError, ValueError):
                raise TypeError(
                    f"LotteryConfig.final must be a fraction, a mapping or pairs (path, fraction); "
                    f"got {self.final!r}"
                ) from None
            object.__setattr__(self, "final", items)
        for path, f in items:
            if not 0.0 <= f < 1.0:
                where = f"[{path!r}]" if path else ""
                raise ValueError(f"LotteryConfig.final{where} must be in [0, 1), got {f}")

    @property
    def base_rate(self) -> float | None:
        """The rate of the layers no map names (0.2 when nothing else is given)."""
        if self.rate is not None:
            return float(self.rate)
        return 0.2 if not self.layer_rates and self.final is None else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (stored in every checkpoint to refuse resuming another config)."""
        d = dataclasses.asdict(self)
        d["layer_rates"] = [list(kv) for kv in self.layer_rates]
        d["final"] = [list(kv) for kv in self.final] if isinstance(self.final, tuple) else self.final
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
      metric: the ``eval_fn`` key the decisions used (``LotteryConfig.metric`` resolved).
    """

    records: list[dict[str, Any]]
    mask: PyTree
    params: PyTree
    best_round: int
    stopped: str
    metric: str | None = None


_LOSS_WORDS = ("loss", "error", "perplexity")


def check_direction(metric: str, maximize: bool) -> None:
    """Refuse a loss-like metric name that would be maximized (a silently inverted search)."""
    if maximize and any(w in metric.lower() for w in _LOSS_WORDS):
        raise ValueError(
            f"LotteryConfig.metric={metric!r} looks like a loss or an error rate, but "
            "maximize=True treats higher as better; set maximize=False (or select on an accuracy)"
        )
