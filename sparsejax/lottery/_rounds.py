"""The round loop behind :func:`sparsejax.lottery.imp`: masks, resets, controls, checkpoints.

:class:`IMPRun` holds one call's inputs and runs the cycle: the dense round 0, then
pruning attempts that are accepted or rejected (and retried at a smaller rate), each
checkpointed so that a killed run resumes after its last finished round.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import checkpoint
from sparsejax import scores as scores_lib
from sparsejax.lottery._config import (
    LotteryConfig,
    LotteryResult,
    TrainOutput,
    TrainPlan,
    check_direction,
)
from sparsejax.lottery._records import history_stats, mean_and_per_seed, pruned_counts
from sparsejax.lottery._rules import cumulative_sparsity, next_rate, should_stop
from sparsejax.masks import apply_mask, init_mask
from sparsejax.select import prune
from sparsejax.tree import Prunable, PyTree, check_same_structure, named_leaves, prunable_tree


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


def _match(pairs: Sequence[tuple[str, float]], name: str) -> str | None:
    """The key of ``pairs`` for a path: an exact path wins, else the first regex found in it."""
    exact = [k for k, _ in pairs if k == name]
    keys = exact or [k for k, _ in pairs if re.search(k, name)]
    return keys[0] if keys else None


def _check_keys(pairs: Sequence[tuple[str, float]], names: Sequence[str], field: str) -> None:
    for key, _ in pairs:
        if not any(key == n or re.search(key, n) for n in names):
            raise ValueError(
                f"LotteryConfig.{field} key {key!r} matches no prunable layer; layers: {names}"
            )


def _layer_plan(config: LotteryConfig, names: Sequence[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Per prunable path: its per-round rate, and its final fraction where ``final`` sets it.

    Raises:
      ValueError: a ``layer_rates`` / ``final`` key matching no layer, or (``rate=None``
        with maps) a layer that gets no rate.
    """
    _check_keys(config.layer_rates, names, "layer_rates")
    final = config.final
    if isinstance(final, tuple):
        _check_keys(final, names, "final")
    rates: dict[str, float] = {}
    finals: dict[str, float] = {}
    missing = []
    for name in names:
        if isinstance(final, float):
            finals[name] = final
        elif isinstance(final, tuple) and (key := _match(final, name)) is not None:
            finals[name] = dict(final)[key]
        if name in finals:
            rates[name] = 1.0 - (1.0 - finals[name]) ** (1.0 / config.rounds)
        elif (key := _match(config.layer_rates, name)) is not None:
            rates[name] = dict(config.layer_rates)[key]
        elif config.base_rate is not None:
            rates[name] = config.base_rate
        else:
            missing.append(name)
    if missing:
        raise ValueError(
            f"LotteryConfig: no rate for the prunable layers {missing}: layer_rates / final do "
            "not name them; set rate= for the others or add them"
        )
    return rates, finals


class IMPRun:
    """The state machine behind :func:`sparsejax.lottery.imp` (one instance per call)."""

    def __init__(self, params, train_fn, eval_fn, config, key, init_fn, checkpoint_dir,
                 on_round=None, progress=False):
        self.cfg = config
        self.on_round, self.progress = on_round, progress
        self.train_fn, self.eval_fn, self.init_fn = train_fn, eval_fn, init_fn
        self.key = key
        self.dir = checkpoint_dir
        self.theta0 = params
        self.params1 = _seed0(params, config.seed_axis)
        self.layers = _prunable_names(self.params1, config.prunable)
        if not self.layers:
            raise ValueError("no prunable parameter: LotteryConfig.prunable matched no leaf")
        self.names = [n for n, _ in self.layers]
        self.layer_rate, self.final = _layer_plan(config, self.names)
        # rates are recorded relative to this nominal rate (1.0 when only maps give them)
        self.nominal = config.base_rate if config.base_rate is not None else 1.0
        self.metric: str | None = config.metric
        self.sign = 1.0 if config.maximize else -1.0

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

    def _final_target(self, final: float, done: int) -> float:
        """``1 − k^(r/R)`` after ``r = done`` rounds, exactly the final fraction at ``R``."""
        if done >= self.cfg.rounds:
            return final
        return 1.0 - (1.0 - final) ** (done / self.cfg.rounds)

    def ticket_mask(self, trained, base_mask, rates):
        """Cumulative magnitude pruning to ``1 − Π(1 − p_i)`` per layer (or globally)."""
        cfg = self.cfg
        scores = scores_lib.magnitude(trained)
        if cfg.scope == "global":
            if isinstance(cfg.final, float):
                target = self._final_target(cfg.final, len(rates))
            else:
                target = cumulative_sparsity(rates)
            return self._vprune(scores, target, base_mask, scope="global")
        targets = {}
        for name in self.names:
            if name in self.final:
                targets[name] = self._final_target(self.final[name], len(rates))
            else:
                targets[name] = cumulative_sparsity(
                    [min(1.0, self.layer_rate[name] * r / self.nominal) for r in rates])
        return self._vprune(scores, targets, base_mask)

    def same_counts_mask(self, scores, ticket):
        """Mask pruning exactly the ticket's per-layer counts by ``scores``."""
        counts = pruned_counts(_seed0(ticket, self.cfg.seed_axis), self.params1,
                               self.cfg.prunable)
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
            if isinstance(out, tuple) and len(out) in (3, 4):
                out = TrainOutput(*out)
            else:
                raise TypeError(
                    f"train_fn must return a TrainOutput(params, captured, history[, lr_scale]), got "
                    f"{type(out).__name__}"
                )
        check_same_structure(start, out.params, "params", "train_fn(...).params")
        counts = pruned_counts(_seed0(mask, self.cfg.seed_axis), self.params1, self.cfg.prunable)
        pruned = sum(p for p, _ in counts.values())
        total = sum(t for _, t in counts.values())
        record.update(
            pruned=pruned,
            prunable=total,
            sparsity=pruned / total,
            weights_remaining=1.0 - pruned / total,
            layer_sparsity={n: p / t for n, (p, t) in counts.items()},
        )
        if plan.lr_scale != 1.0 and out.lr_scale != plan.lr_scale:
            raise ValueError(
                f"train_fn was asked to train at plan.lr_scale={plan.lr_scale} (reset="
                f"{self.cfg.reset!r}) but returned TrainOutput.lr_scale={out.lr_scale!r}: a "
                "train_fn that ignores the scale runs another method. Multiply the learning "
                "rate by plan.lr_scale and return TrainOutput(..., lr_scale=plan.lr_scale)"
            )
        metrics = self.check_metrics(self.eval_fn(out.params))
        for name, value in metrics.items():
            record[name], record[f"{name}_per_seed"] = mean_and_per_seed(value)
        record.update(history_stats(out.history or {}))
        return out, record

    def check_metrics(self, metrics: Any) -> Mapping[str, Any]:
        """``eval_fn``'s result, checked: a mapping of numbers holding the decision metric."""
        if not isinstance(metrics, Mapping) or not metrics:
            raise ValueError(f"eval_fn must return a non-empty mapping {{name: value}}, got {metrics!r}")
        for name, value in metrics.items():
            try:
                mean_and_per_seed(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"eval_fn's {name!r} must be a number or an array of per-seed numbers, got "
                    f"{value!r}"
                ) from None
        if self.metric is not None and self.metric not in metrics:
            raise ValueError(
                f"LotteryConfig.metric={self.metric!r} is not among what eval_fn returns: "
                f"{sorted(metrics)}"
            )
        return metrics

    def resolve_metric(self) -> None:
        """Evaluate ``θ₀`` once, before any training, and fix the decision metric."""
        metrics = self.check_metrics(self.eval_fn(self.theta0))
        if self.metric is None:
            if "val_accuracy" in metrics:
                self.metric = "val_accuracy"
            elif len(metrics) == 1:
                self.metric = next(iter(metrics))
            else:
                raise ValueError(
                    f"eval_fn returns {sorted(metrics)}: name the one to select rounds on with "
                    "LotteryConfig(metric=...)"
                )
            check_direction(self.metric, self.cfg.maximize)

    def report(self, round_records: list[dict[str, Any]], dense_value: float, seconds: float):
        """Call ``on_round`` and print the progress line (when asked)."""
        if self.progress:
            r = round_records[0]
            value = r[self.metric]
            line = (
                f"imp round {r['round']}/{self.cfg.rounds} {r['variant']}: sparsity "
                f"{r['sparsity']:.2%} ({r['pruned']:,} of {r['prunable']:,} pruned), "
                f"{self.metric} {value:.4f}"
            )
            if r["round"] > 0:
                line += f" (dense {dense_value:.4f})" + ("" if r["accepted"] else ", rejected")
            for c in round_records[1:]:
                line += f"; {c['variant']} {c[self.metric]:.4f}"
            print(f"{line}, {seconds:.1f} s", flush=True)
        if self.on_round is not None:
            self.on_round([dict(r) for r in round_records])

    # ----------------------------------------------------------- checkpoints
    def _state(self, base_params, base_mask, dense_params):
        return {"base_params": base_params, "base_mask": base_mask, "dense_params": dense_params}

    def save(self, attempt, state, meta, rewind=None):
        if self.dir is None:
            return
        if rewind is not None:
            checkpoint.save_snapshot(self.dir, "rewind", self.cfg.rewind_step, rewind,
                                     overwrite=True)
        checkpoint.save(self.dir, attempt, state, metadata={"config": self.cfg.to_dict(), **meta},
                        keep=2)

    def restore(self, target_state):
        if self.dir is None or checkpoint.latest_step(self.dir) is None:
            return None
        restored = checkpoint.restore(self.dir, target_state)
        saved = restored.metadata.get("config")
        if saved != self.cfg.to_dict():
            raise ValueError(
                f"checkpoint_dir {os.fspath(self.dir)!r} holds a run of another config: "
                f"{saved} != {self.cfg.to_dict()}"
            )
        rewind = checkpoint.restore_snapshot(self.dir, "rewind", self.theta0).state
        return restored, rewind

    # ----------------------------------------------------------- the cycle
    def run(self) -> LotteryResult:
        cfg = self.cfg
        dense_mask = self.dense_mask()
        self.resolve_metric()
        target = self._state(self.theta0, dense_mask, self.theta0)
        resumed = self.restore(target)
        if resumed is None:
            started = time.perf_counter()
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
            meta = {"records": [rec], "rates": [], "rate": self.nominal, "attempt": 0,
                    "stopped": None}
            state = self._state(out.params, dense_mask, out.params)
            self.save(0, state, meta, rewind=rewind)
            self.report([rec], rec[self.metric], time.perf_counter() - started)
        else:
            restored, rewind = resumed
            state, meta = restored.state, restored.metadata
        records = list(meta["records"])
        dense_value = records[0][self.metric]
        rates, rate, attempt, stopped = list(meta["rates"]), meta["rate"], meta["attempt"], \
            meta["stopped"]
        while stopped is None and attempt < cfg.rounds:
            started = time.perf_counter()
            attempt += 1
            key = _fold(self.key, attempt)
            trial_rates = [*rates, rate]
            mask = self.ticket_mask(state["base_params"], state["base_mask"], trial_rates)
            plan = self.plan(dense=False)
            trained = state["base_params"] if cfg.reset in ("lr_rewind", "finetune") else rewind
            start = self.mask_params(trained, mask)
            shown = rate if cfg.base_rate is not None else None
            out, rec = self.run_variant(
                {"round": attempt, "variant": "ticket", "rate": shown}, start, mask,
                _fold(key, 0), plan,
            )
            value = rec[self.metric]
            signed = (self.sign * dense_value, self.sign * value)
            broke = should_stop(*signed, cfg.epsilon)
            new_rate = rate if cfg.adaptive is None else next_rate(rate, *signed, cfg.adaptive)
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
                    rnd = _vmapped(scores_lib.random, cfg.seed_axis)(rewind, _fold(ckey, 1))
                    cmask = self.same_counts_mask(rnd, mask)
                    cstart = self.mask_params(rewind, cmask)
                else:  # one_shot
                    cmask = self.same_counts_mask(scores_lib.magnitude(state["dense_params"]),
                                                  mask)
                    src = state["dense_params"] if cfg.reset in ("lr_rewind", "finetune") \
                        else rewind
                    cstart = self.mask_params(src, cmask)
                _, crec = self.run_variant(
                    {"round": attempt, "variant": control, "rate": shown,
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
            self.report(round_records, dense_value, time.perf_counter() - started)
        accepted = [r for r in records if r["variant"] in ("dense", "ticket") and r["accepted"]]
        return LotteryResult(
            records=records,
            mask=state["base_mask"],
            params=state["base_params"],
            best_round=int(max(accepted, key=lambda r: (r["sparsity"], -r["round"]))["round"]),
            stopped=stopped or "rounds",
            metric=self.metric,
        )
