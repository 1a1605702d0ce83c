"""``sparsejax dense``: the dense baselines every pruning result is compared with.

Trains each ``dataset:model`` pair of ``--pairs`` for ``--seeds`` seeds with Adam and
reports test accuracy and macro F1 (mean ± std) plus the best test accuracy seen during
training (the MNIST-1D paper reports the maximum over training; the final value is the
headline here). Recipes follow the MNIST-1D reference training (Greydanus & Kobak 2024: Adam
1e-2, batch 100, 6,000 steps) for MNIST-1D and Adam 1e-3 for the image sets; a pair outside
:data:`RECIPES` (a registered data set, another zoo model) trains 1,000 steps of batch 64
with Adam 1e-3.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from sparsejax.runner._config import ConfigError, check_positive
from sparsejax.runner._study import RunContext, Study, StudyConfig, check_data, run_study
from sparsejax.runner._tables import markdown_table
from sparsejax.runner.studies._common import device_line, load_data

__all__ = ["RECIPES", "STUDY", "Config", "main"]

# (dataset, model) -> (steps, batch size, learning rate, model kwargs)
RECIPES: dict[tuple[str, str], tuple[int, int, float, dict]] = {
    ("digits", "lenet300100"): (1_000, 64, 1e-3, {}),
    ("digits", "lenet5"): (1_000, 64, 1e-3, {"padding": "SAME"}),
    ("mnist10k", "lenet300100"): (3_000, 64, 1e-3, {}),
    ("mnist10k", "lenet5"): (3_000, 64, 1e-3, {}),
    ("mnist1d", "mlp"): (6_000, 100, 1e-2, {"hidden": (500, 500)}),
    ("mnist1d", "mnist1d_cnn"): (6_000, 100, 1e-2, {}),
}
DEFAULT_RECIPE = (1_000, 64, 1e-3, {})


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Dense baselines for every data set / model pair the pruning studies use."""

    pairs: tuple[str, ...] = tuple(f"{d}:{m}" for d, m in RECIPES)
    """dataset:model pairs to train (models: the sparsejax.models zoo names)."""
    data_dir: str | None = None
    """Folder of a data set read from files (for mnist10k it replaces the shipped copy)."""
    seeds: int = 3
    """Training seeds."""
    eval_every: int = 500
    """Steps between test evaluations (for the best accuracy during training)."""
    vmap_seeds: bool | None = None
    """Train the seeds as one vmapped program (None: on accelerators only; on a CPU a loop
    is faster)."""


SMOKE = {"seeds": 2}
SMOKE_STEPS = 20


def check(cfg: Config) -> None:
    """Every value, before any training."""
    from sparsejax.models.registry import MODEL_NAMES

    check_positive(cfg, "seeds", "eval_every")
    if not cfg.pairs:
        raise ConfigError("pairs", cfg.pairs, "give at least one dataset:model pair")
    for pair in cfg.pairs:
        dataset, sep, model = pair.partition(":")
        if not sep or model not in MODEL_NAMES:
            raise ConfigError("pairs", cfg.pairs, f"{pair!r} is not dataset:model with a model "
                              f"of {', '.join(MODEL_NAMES)}")
        try:
            check_data(dataset, cfg.data_dir)
        except ConfigError as err:
            raise ConfigError("pairs", cfg.pairs, f"{pair!r}: {err.reason}") from None


def run(cfg: Config, ctx: RunContext) -> list[dict[str, Any]]:
    """Train every pair and report (see the module docstring)."""
    import jax
    import optax
    from flax import nnx

    from sparsejax.models import create_model
    from sparsejax.train import create_train_state, create_train_states, evaluate, train

    rows = []
    for pair in cfg.pairs:
        dataset, _, model_name = pair.partition(":")
        steps, batch_size, lr, kwargs = RECIPES.get((dataset, model_name), DEFAULT_RECIPE)
        seeds = cfg.seeds
        if cfg.smoke:
            steps = SMOKE_STEPS
        data = load_data(dataset, cfg.data_dir)
        t0 = time.perf_counter()

        def make_model(key, data=data, model_name=model_name, kwargs=kwargs):
            return create_model(model_name, rngs=nnx.Rngs(key), input_shape=data.input_shape,
                                num_classes=data.num_classes, **kwargs)

        vmap = cfg.vmap_seeds if cfg.vmap_seeds is not None else jax.default_backend() != "cpu"
        keys = jax.random.split(jax.random.key(0), seeds)
        common = dict(batch_size=batch_size, steps=steps, eval_data=(data.x_test, data.y_test),
                      eval_every=min(cfg.eval_every, steps), progress=cfg.progress)
        if vmap:
            state = create_train_states(make_model, optax.adam(lr), keys)
            state, history = train(state, data.x_train, data.y_train, vmap_seeds=True,
                                   seed=list(range(seeds)), writer=ctx.writer.scoped(pair),
                                   **common)
            res = evaluate(state, data.x_test, data.y_test, vmap_seeds=True)
            best = np.max([h["accuracy"] for h in history["eval"]], axis=0)
            params = sum(x.size for x in jax.tree.leaves(state.params)) // seeds
        else:  # the same initialisation and data order as the vmapped path, one seed at a time
            res, best = {"accuracy": [], "macro_f1": []}, []
            for i in range(seeds):
                model_key, dropout_key = jax.random.split(keys[i])
                state = create_train_state(make_model(model_key), optax.adam(lr), key=dropout_key)
                state, history = train(state, data.x_train, data.y_train, seed=i,
                                       writer=ctx.writer.scoped(f"{pair}/seed{i}"), **common)
                one = evaluate(state, data.x_test, data.y_test)
                res["accuracy"].append(one["accuracy"])
                res["macro_f1"].append(one["macro_f1"])
                best.append(max(h["accuracy"] for h in history["eval"]))
            best = np.asarray(best)
            params = sum(x.size for x in jax.tree.leaves(state.params))
        acc, f1 = np.asarray(res["accuracy"]), np.asarray(res["macro_f1"])
        row = {"dataset": data.name, "model": model_name, "params": int(params), "steps": steps,
               "batch_size": batch_size, "lr": lr, "seeds": seeds, "vmapped": vmap,
               "accuracy": acc.tolist(), "macro_f1": f1.tolist(), "best_accuracy": best.tolist(),
               "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
               "best_accuracy_mean": float(best.mean()), "macro_f1_mean": float(f1.mean()),
               "macro_f1_std": float(f1.std()), "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"{pair}: accuracy {row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f} "
              f"(best during training {row['best_accuracy_mean']:.4f}), {row['seconds']:.0f} s")
    table = markdown_table(rows, [
        ("dataset", "{dataset}"), ("model", "{model}"), ("params", "{params:,}"),
        ("steps × batch", "{steps} × {batch_size}"), ("Adam lr", "{lr:g}"),
        ("test accuracy", "{accuracy_mean:.2%} ± {accuracy_std:.2%}"),
        ("best during training", "{best_accuracy_mean:.2%}"),
        ("macro F1", "{macro_f1_mean:.4f} ± {macro_f1_std:.4f}"),
        ("seconds", "{seconds:.0f}"),
    ])
    header = (f"# Dense baselines\n\n{cfg.seeds} seeds, mean ± std, final test accuracy after "
              f"the last step; {device_line()}.\nCommand: `{ctx.command}`\n\n")
    ctx.write_text("results.md", header + table + "\n")
    ctx.write_json("results.json", {"rows": rows})
    print(header + table)
    return rows


STUDY = Study(name="dense", config=Config, run=run, check=check, smoke=SMOKE,
              summary="dense baselines of every data set / model pair the studies use")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """``sparsejax dense [flags]`` (``argv`` default: ``sys.argv[1:]``)."""
    return run_study(STUDY, argv)
