"""Dense baselines: the accuracy every pruning result is compared with.

Trains each (dataset, model) pair of ``--pairs`` for ``--seeds`` seeds (vmapped:
one program per pair) with Adam and reports test accuracy and macro F1, mean ±
std, plus the best test accuracy seen during training (the MNIST-1D paper
reports the maximum over training; we report the final value as the headline).

Defaults follow the MNIST-1D reference training (Greydanus & Kobak 2024: Adam,
lr 1e-2, batch 100, 6,000 steps) for MNIST-1D, and Adam 1e-3 for the image
sets.

Usage::

    python experiments/dense_baselines.py --data-dir ../shared/data/mnist \
        --out results/dense_baselines
    python experiments/dense_baselines.py --smoke true
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import numpy as np
import optax
from flax import nnx

from sparsejax.data import load_dataset
from sparsejax.models import create_model
from sparsejax.runner import (
    config_to_dict,
    environment,
    markdown_table,
    parse_config,
    prepare_output_dir,
    write_json,
)
from sparsejax.train import (
    create_train_state,
    create_train_states,
    evaluate,
    train,
)

# (dataset, model) -> (steps, batch size, learning rate, model kwargs)
RECIPES: dict[tuple[str, str], tuple[int, int, float, dict]] = {
    ("digits", "lenet300100"): (1_000, 64, 1e-3, {}),
    ("digits", "lenet5"): (1_000, 64, 1e-3, {"padding": "SAME"}),
    ("mnist10k", "lenet300100"): (3_000, 64, 1e-3, {}),
    ("mnist10k", "lenet5"): (3_000, 64, 1e-3, {}),
    ("mnist1d", "mlp"): (6_000, 100, 1e-2, {"hidden": (500, 500)}),
    ("mnist1d", "mnist1d_cnn"): (6_000, 100, 1e-2, {}),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Dense baselines for every dataset / model pair used by the pruning studies."""

    pairs: tuple[str, ...] = tuple(f"{d}:{m}" for d, m in RECIPES)
    data_dir: str | None = None
    out: str = "runs/dense_baselines"
    seeds: int = 3
    eval_every: int = 500
    # vmap the seeds into one program (None: on accelerators only; on a CPU XLA's batched
    # convolutions and matmuls are slower than a loop, see results/benchmarks)
    vmap_seeds: bool | None = None
    smoke: bool = False
    progress: bool = True


def main(argv: list[str] | None = None) -> list[dict]:
    cfg = parse_config(Config, argv)
    out = prepare_output_dir(cfg.out, config_to_dict(cfg))
    rows = []
    for pair in cfg.pairs:
        dataset, _, model_name = pair.partition(":")
        if (dataset, model_name) not in RECIPES:
            raise ValueError(f"unknown pair {pair!r}; known: {[f'{d}:{m}' for d, m in RECIPES]}")
        if dataset == "mnist10k" and cfg.data_dir is None:
            print(f"skipping {pair}: needs --data-dir (the MNIST test split)")
            continue
        steps, batch_size, lr, kwargs = RECIPES[(dataset, model_name)]
        seeds = cfg.seeds
        if cfg.smoke:
            steps, seeds = 20, 2
        data = load_dataset(dataset, data_dir=cfg.data_dir)
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
                                              seed=list(range(seeds)), **common)
            res = evaluate(state, data.x_test, data.y_test, vmap_seeds=True)
            best = np.max([h["accuracy"] for h in history["eval"]], axis=0)
            params = sum(x.size for x in jax.tree.leaves(state.params)) // seeds
        else:  # the same initialisation and data order as the vmapped path, one seed at a time
            res, best = {"accuracy": [], "macro_f1": []}, []
            for i in range(seeds):
                model_key, dropout_key = jax.random.split(keys[i])
                state = create_train_state(make_model(model_key), optax.adam(lr), key=dropout_key)
                state, history = train(state, data.x_train, data.y_train, seed=i, **common)
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
    header = (f"# Dense baselines\n\n{rows[0]['seeds'] if rows else cfg.seeds} seeds, mean ± std, final test accuracy "
              f"after the last step; device {jax.devices()[0].device_kind}.\n"
              f"Command: `python experiments/{environment()['command']}`\n\n")
    (out / "results.md").write_text(header + table + "\n")
    write_json(out / "results.json", {"rows": rows})
    print(header + table)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
