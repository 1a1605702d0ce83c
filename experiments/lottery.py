"""Lottery tickets by iterative magnitude pruning (IMP), with controls, on CPU-sized tasks.

Tasks (``--task``):

* ``mnist1d`` — Greydanus & Kobak (2024), MNIST-1D lottery ticket: MLP
  40-500-500-10 on the default MNIST-1D (4,000 / 1,000, 500 training examples
  held out for validation), layerwise magnitude pruning with reset to
  initialisation, compared with random pruning at the same per-layer
  sparsities (``random_mask``, same initial weights).
* ``lenet`` — Frankle & Carbin (2019), LeNet-300-100 on MNIST-10k (official
  test split, 8,000 / 2,000; 1,000 of the 8,000 held out for validation),
  Adam 1.2e-3, batch 60, 20% per round (output layer 10%), reset to init;
  control: random reinitialisation with the ticket's mask (``reinit``).
* ``mnist1d_cnn`` — late rewinding (Frankle et al. 2020) vs rewinding to 0 on
  the MNIST-1D CNN (``ConvBase`` of Greydanus & Kobak): run once with
  ``--reset init`` and once with ``--reset rewind --rewind-step K``; conv
  layers 20% per round, output layer 10%; control: ``one_shot`` pruning.

All seeds of a round train in one jitted, vmapped ``lax.scan`` (masks kept by
:func:`sparsejax.keep_sparse`); every ``eval_every`` steps the validation loss
and accuracy and the test accuracy are recorded, giving per round the
early-stop step (minimum validation loss), the maximal test accuracy (the
number the MNIST-1D notebook reports; optimistic) and the
*validation-selected* test accuracy (test accuracy at the step of maximal
validation accuracy). Nothing is selected on test.

Outputs in ``--out``: ``results.json`` (config, every record, per seed),
``results.md`` (table), ``accuracy.png`` and ``early_stop.png`` (vs % of
weights remaining, ticket vs controls), and the orbax round checkpoints in
``checkpoints/`` (a killed run resumes from them).

Usage::

    python experiments/lottery.py --task mnist1d --out results/lottery/mnist1d
    python experiments/lottery.py --task lenet --data-dir ../shared/data/mnist \\
        --out results/lottery/lenet_mnist10k
    python experiments/lottery.py --smoke true        # seconds: CI-sized
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sparsejax as sj
from sparsejax import lottery
from sparsejax.data import load_dataset, stratified_split
from sparsejax.models import MNIST1DCNN, LeNet300100, mnist1d_mlp
from sparsejax.runner import (
    config_to_dict,
    markdown_table,
    parse_config,
    prepare_output_dir,
    tradeoff_curve,
    write_json,
)


@dataclasses.dataclass(frozen=True)
class Config:
    """IMP lottery-ticket reproduction."""

    task: str = "mnist1d"
    data_dir: str | None = None
    out: str = "runs/lottery"
    seeds: int = 3
    rounds: int = 10
    rate: float = 0.3
    output_rate: float | None = None
    output_layer: str = "layers/2/kernel"
    reset: str = "init"
    rewind_step: int = 0
    controls: tuple[str, ...] = ("random_mask",)
    steps: int = 3000
    batch_size: int = 100
    lr: float = 1e-3
    eval_every: int = 100
    val_size: int = 500
    resume: bool = False
    smoke: bool = False
    progress: bool = True


PRESETS = {
    "mnist1d": {},
    "lenet": {"rate": 0.2, "output_rate": 0.1, "controls": ("reinit",), "steps": 2400,
              "batch_size": 60, "lr": 1.2e-3, "val_size": 1000, "eval_every": 100},
}
PRESETS["mnist1d_cnn"] = {"rate": 0.2, "output_rate": 0.1, "output_layer": "linear/kernel",
                          "controls": ("one_shot",), "steps": 2000, "lr": 3e-3}
SMOKE = {"seeds": 2, "rounds": 2, "steps": 40, "eval_every": 20}


def apply_preset(cfg: Config, argv: list[str]) -> Config:
    """Task preset values for every field not given on the command line."""
    given = {a[2:].replace("-", "_").split("=")[0] for a in argv if a.startswith("--")}
    preset = {k: v for k, v in PRESETS[cfg.task].items() if k not in given}
    cfg = dataclasses.replace(cfg, **preset)
    if cfg.smoke:
        cfg = dataclasses.replace(cfg, **SMOKE)
    return cfg


def flat_split(data, val_size: int) -> tuple[jax.Array, ...]:
    """``(x_tr, y_tr, x_va, y_va, x_te, y_te)``: flattened inputs on the device, a stratified
    validation split of ``val_size`` training examples (seed 0) held out of training."""
    x_all = np.asarray(data.x_train, np.float32).reshape(len(data.x_train), -1)
    y_all = np.asarray(data.y_train, np.int32)
    tr_idx, va_idx = stratified_split(y_all, val_size, seed=0)
    return (jnp.asarray(x_all[tr_idx]), jnp.asarray(y_all[tr_idx]),
            jnp.asarray(x_all[va_idx]), jnp.asarray(y_all[va_idx]),
            jnp.asarray(np.asarray(data.x_test, np.float32).reshape(len(data.x_test), -1)),
            jnp.asarray(data.y_test, jnp.int32))


def make_task_fns(make_model, data, *, lr: float, batch_size: int, eval_every: int) -> dict:
    """The per-seed pieces of the IMP driver's ``train_fn`` / ``eval_fn`` for a classifier.

    ``make_model(key)`` builds the NNX model; ``data = (x_tr, y_tr, x_va, y_va, x_te, y_te)``.
    Returns ``init_fn(key) -> params``, ``train_one(params, mask, data_key, plan) ->
    (params, captured, history)`` (Adam ``lr · plan.lr_scale`` under ``keep_sparse``, epochs
    reshuffled from ``data_key``, validation / test metrics every ``eval_every`` steps, the
    params at ``plan.capture_step`` captured for rewinding) and ``metrics(params)``.
    Also used by ``benchmarks/lottery_seeds.py``.
    """
    x_tr, y_tr, x_va, y_va, x_te, y_te = data
    n_train = x_tr.shape[0]
    graphdef = nnx.split(nnx.eval_shape(lambda: make_model(jax.random.key(0))), nnx.Param)[0]

    def init_fn(key):
        return nnx.split(make_model(key), nnx.Param)[1]

    def logits_fn(params, x):
        return nnx.merge(graphdef, params)(x)

    def loss(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, x), y).mean()

    def acc(params, x, y):
        return jnp.mean(jnp.argmax(logits_fn(params, x), axis=-1) == y)

    steps_per_epoch = n_train // batch_size

    def train_one(params, mask, data_key, plan):
        tx = sj.keep_sparse(optax.adam(lr * plan.lr_scale), mask)
        opt = tx.init(params)

        def step(carry, t):
            p, o = carry
            perm = jax.random.permutation(jax.random.fold_in(data_key, t // steps_per_epoch),
                                          n_train)
            idx = jax.lax.dynamic_slice_in_dim(perm, (t % steps_per_epoch) * batch_size,
                                               batch_size)
            g = jax.grad(loss)(p, x_tr[idx], y_tr[idx])
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        def chunk(carry, c):
            (p, o), captured = carry
            t0 = plan.start_step + c * eval_every
            (p, o), _ = jax.lax.scan(step, (p, o), t0 + jnp.arange(eval_every))
            t1 = t0 + eval_every
            if plan.capture_step is not None:
                captured = jax.tree.map(lambda a, b: jnp.where(t1 == plan.capture_step, a, b),
                                        p, captured)
            ev = (t1, loss(p, x_va, y_va), acc(p, x_va, y_va), acc(p, x_te, y_te))
            return ((p, o), captured), ev

        n_chunks = (plan.end_step - plan.start_step) // eval_every
        ((p, _), captured), (t, vl, va, ta) = jax.lax.scan(
            chunk, ((params, opt), params), jnp.arange(n_chunks))
        history = {"step": t, "val_loss": vl, "val_accuracy": va, "test_accuracy": ta}
        return p, captured, history

    def metrics(p):
        return {"val_accuracy": acc(p, x_va, y_va), "val_loss": loss(p, x_va, y_va),
                "test_accuracy": acc(p, x_te, y_te)}

    return {"init_fn": init_fn, "train_one": train_one, "metrics": metrics}


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(Config, argv)
    if cfg.task not in PRESETS:
        raise ValueError(f"unknown task {cfg.task!r}; known: {sorted(PRESETS)}")
    cfg = apply_preset(cfg, argv)
    cfg = dataclasses.replace(cfg, controls=tuple(c for c in cfg.controls if c))  # --controls ""
    t_start = time.perf_counter()
    out = prepare_output_dir(cfg.out, config_to_dict(cfg))
    ckpt = out / "checkpoints"
    if ckpt.exists() and not cfg.resume:
        shutil.rmtree(ckpt)

    # ------------------------------------------------------------------ data
    if cfg.task.startswith("mnist1d"):
        data = load_dataset("mnist1d")
    else:
        data = load_dataset("mnist10k", data_dir=cfg.data_dir)
    x_tr, y_tr, x_va, y_va, x_te, y_te = flat_split(data, cfg.val_size)
    n_train, in_features = x_tr.shape
    print(f"{data.name}: {n_train} train / {len(x_va)} val / {len(x_te)} test")

    # ------------------------------------------------------------------ model
    def make_model(key):
        if cfg.task == "mnist1d":
            return mnist1d_mlp(in_features=in_features, rngs=nnx.Rngs(key))
        if cfg.task == "mnist1d_cnn":
            return MNIST1DCNN(in_length=in_features, rngs=nnx.Rngs(key))
        return LeNet300100(in_features=in_features, num_classes=data.num_classes,
                           rngs=nnx.Rngs(key))

    task = make_task_fns(make_model, (x_tr, y_tr, x_va, y_va, x_te, y_te), lr=cfg.lr,
                         batch_size=cfg.batch_size, eval_every=cfg.eval_every)
    init_fn, train_one = task["init_fn"], task["train_one"]
    keys = jax.random.split(jax.random.key(0), cfg.seeds)
    params0 = jax.jit(jax.vmap(init_fn))(keys)
    data_keys = jax.random.split(jax.random.key(1), cfg.seeds)

    @jax.jit(static_argnames="plan")
    def train_fn(params, mask, key, plan):
        del key  # same data order in every round: tickets and controls see the same batches
        for s in (plan.start_step, plan.end_step) + (() if plan.capture_step is None
                                                      else (plan.capture_step,)):
            if s % cfg.eval_every:
                raise ValueError(f"steps ({s}) must be multiples of eval_every={cfg.eval_every}")
        p, captured, history = jax.vmap(train_one, in_axes=(0, 0, 0, None))(
            params, mask, data_keys, plan)
        return lottery.TrainOutput(p, captured if plan.capture_step is not None else None,
                                   history)

    eval_fn = jax.jit(jax.vmap(task["metrics"]))

    # ------------------------------------------------------------------ IMP
    layer_rates = {} if cfg.output_rate is None else {cfg.output_layer: cfg.output_rate}
    lcfg = lottery.LotteryConfig(
        rounds=cfg.rounds, rate=cfg.rate, layer_rates=layer_rates, reset=cfg.reset,
        rewind_step=cfg.rewind_step, steps=cfg.steps, controls=cfg.controls,
        metric="val_accuracy", seed_axis=True,
    )
    result = lottery.imp(params0, train_fn, eval_fn, lcfg, key=jax.random.split(
        jax.random.key(2), cfg.seeds), init_fn=init_fn, checkpoint_dir=ckpt)
    rows = result.records
    rates = [lcfg.rate] * cfg.rounds
    expected = [1 - lottery.cumulative_sparsity(rates[:r]) for r in range(1, cfg.rounds + 1)]
    elapsed = time.perf_counter() - t_start

    # ------------------------------------------------------------------ report
    def cell(row, name):
        per = row.get(f"{name}_per_seed")
        if per is None:
            return "—"
        return f"{np.mean(per):.2%} ± {np.std(per):.2%}"

    variants = ["ticket", *cfg.controls]
    table_rows = []
    dense = rows[0]
    for r in range(0, cfg.rounds + 1):
        row = {"round": r}
        for v in variants:
            rec = dense if r == 0 else next(x for x in rows if x["round"] == r and
                                             x["variant"] == v)
            row["remaining"] = rec["weights_remaining"]
            row[f"{v}_sel"] = cell(rec, "val_selected_test_accuracy")
            row[f"{v}_max"] = cell(rec, "max_test_accuracy")
            row[f"{v}_es"] = f"{rec['early_stop_step']:.0f}"
        table_rows.append(row)
    columns = [("round", "{round}"), ("% weights remaining", "{remaining:.1%}")]
    for v in variants:
        columns += [(f"{v}: test acc @ best val", f"{{{v}_sel}}"),
                    (f"{v}: max test acc", f"{{{v}_max}}"),
                    (f"{v}: early-stop step", f"{{{v}_es}}")]
    table = markdown_table(table_rows, columns)
    command = "python experiments/lottery.py " + " ".join(argv)
    header = (
        f"# IMP lottery tickets: {cfg.task} ({data.name})\n\n"
        f"Command: `{command}`\n\n"
        f"Device: {jax.devices()[0].device_kind} ({jax.device_count()} device(s)), wall time "
        f"{elapsed:.0f} s. {cfg.seeds} seeds (vmapped), mean ± std over seeds. Reset "
        f"`{cfg.reset}`, rate {cfg.rate:g} per round"
        + (f" (output layer {cfg.output_rate:g})" if cfg.output_rate is not None else "")
        + f", layerwise magnitude; {cfg.steps} steps of batch {cfg.batch_size}, Adam "
        f"{cfg.lr:g}; evaluated every {cfg.eval_every} steps. 'test acc @ best val' is the "
        "test accuracy at the evaluation of highest validation accuracy; 'max test acc' is "
        "the maximum over evaluations (optimistic, as in the MNIST-1D notebook); early stop = "
        "step of minimal validation loss. Round 0 is the dense network.\n\n"
    )
    (out / "results.md").write_text(header + table + "\n")

    def curve(name):
        curves = {}
        for v in variants:
            pts = [dense] + [x for x in rows if x["variant"] == v]
            curves[v] = ([100 * p["weights_remaining"] for p in pts],
                         [float(np.mean(p[f"{name}_per_seed"])) for p in pts],
                         [float(np.std(p[f"{name}_per_seed"])) for p in pts])
        return curves

    tradeoff_curve(out / "accuracy.png", curve("val_selected_test_accuracy"),
                   xlabel="% of weights remaining", ylabel="test accuracy @ best validation",
                   baseline=float(np.mean(dense["val_selected_test_accuracy_per_seed"])),
                   title=f"IMP on {data.name}: ticket vs controls")
    tradeoff_curve(out / "early_stop.png", curve("early_stop_step"),
                   xlabel="% of weights remaining", ylabel="early-stop step (min val loss)",
                   title=f"IMP on {data.name}: early-stop iteration")
    results = {"task": cfg.task, "dataset": data.name, "config": config_to_dict(cfg),
               "lottery_config": lcfg.to_dict(), "rows": rows,
               "expected_remaining": expected, "elapsed_s": elapsed,
               "device": jax.devices()[0].device_kind, "command": command}
    write_json(out / "results.json", results)
    print(header + table)
    return results


if __name__ == "__main__":
    main()
