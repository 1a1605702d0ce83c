"""``sparsejax lottery``: lottery tickets by iterative magnitude pruning (IMP), with controls.

Tasks (``--task``): ``mnist1d`` (Greydanus & Kobak 2024: MLP 40-500-500-10, layerwise
magnitude pruning, reset to initialisation, control ``random_mask``), ``lenet`` (Frankle &
Carbin 2019: LeNet-300-100 on MNIST-10k, Adam 1.2e-3, batch 60, 20 % per round, output
layer 10 %, control ``reinit``) and ``mnist1d_cnn`` (late rewinding, Frankle et al. 2020, vs
rewinding to 0 on the MNIST-1D CNN, control ``one_shot``). ``--dataset`` runs a task's
model on another data set (a registered one too). All seeds of a round train in one jitted,
vmapped ``lax.scan`` (masks kept by :func:`sparsejax.keep_sparse`); every ``eval_every``
steps the validation loss / accuracy and the test accuracy are recorded, giving per round
the early-stop step (minimum validation loss), the maximal test accuracy (optimistic) and
the validation-selected test accuracy. Nothing is selected on test. The round checkpoints
in ``checkpoints/`` let ``--resume`` continue a killed run.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Literal

import numpy as np

from sparsejax.data import dataset_names, stratified_split
from sparsejax.runner._config import ConfigError, check_positive
from sparsejax.runner._plots import tradeoff_curve
from sparsejax.runner._study import RunContext, Study, StudyConfig, check_data, run_study
from sparsejax.runner._tables import markdown_table
from sparsejax.runner.studies._common import check_lr, device_line, load_data, spread_label

__all__ = ["STUDY", "Config", "figures", "flat_split", "main", "make_task_fns"]

TASK_DATA = {"mnist1d": "mnist1d", "mnist1d_cnn": "mnist1d", "lenet": "mnist10k"}


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Lottery tickets by iterative magnitude pruning (IMP), with controls, on CPU-sized
    tasks."""

    task: Literal["mnist1d", "lenet", "mnist1d_cnn"] = "mnist1d"
    """Model and recipe: mnist1d (MLP), lenet (LeNet-300-100, Frankle & Carbin 2019) or
    mnist1d_cnn (late rewinding); a task's recipe fills the fields not given."""
    dataset: str | None = None
    """Data set (None: the task's, mnist1d or mnist10k)."""
    data_dir: str | None = None
    """Folder of a data set read from files (for mnist10k it replaces the shipped copy)."""
    seeds: int = 3
    """Training seeds, trained together (vmapped)."""
    rounds: int = 10
    """Pruning rounds after the dense round 0."""
    rate: float = 0.3
    """Fraction of the remaining weights pruned per round, in (0, 1)."""
    output_rate: float | None = None
    """Per-round rate of the output layer (None: --rate)."""
    output_layer: str = "layers/2/kernel"
    """Path of the output layer's kernel (for --output-rate)."""
    reset: Literal["init", "rewind", "lr_rewind", "finetune"] = "init"
    """What the surviving weights restart from each round."""
    rewind_step: int = 0
    """Step rewound to by --reset rewind / lr_rewind (a multiple of --eval-every)."""
    controls: tuple[Literal["reinit", "random_mask", "one_shot"], ...] = ("random_mask",)
    """Control runs trained beside the ticket each round (none: --controls with no value)."""
    steps: int = 3000
    """Training steps per round (a multiple of --eval-every)."""
    batch_size: int = 100
    """Mini-batch size."""
    lr: float = 1e-3
    """Adam learning rate."""
    eval_every: int = 100
    """Steps between evaluations (validation and test)."""
    val_size: int = 500
    """Training examples held out for validation (stratified, seed 0)."""


PRESETS = {
    "mnist1d": {},
    "lenet": {"rate": 0.2, "output_rate": 0.1, "controls": ("reinit",), "steps": 2400,
              "batch_size": 60, "lr": 1.2e-3, "val_size": 1000, "eval_every": 100},
    "mnist1d_cnn": {"rate": 0.2, "output_rate": 0.1, "output_layer": "linear/kernel",
                    "controls": ("one_shot",), "steps": 2000, "lr": 3e-3},
}
SMOKE = {"seeds": 2, "rounds": 2, "steps": 40, "eval_every": 20}


def presets(cfg: Config) -> dict[str, Any]:
    """The task's recipe, and its data set, for the fields not given."""
    return {**PRESETS[cfg.task], "dataset": cfg.dataset or TASK_DATA[cfg.task]}


def check(cfg: Config) -> None:
    """Every value, before any training."""
    check_data(cfg.dataset, cfg.data_dir)
    check_positive(cfg, "seeds", "rounds", "steps", "batch_size", "eval_every", "val_size")
    check_lr(cfg, "lr")
    if not 0 < cfg.rate < 1:
        raise ConfigError("rate", cfg.rate, "must be in (0, 1)")
    if cfg.output_rate is not None and not 0 < cfg.output_rate < 1:
        raise ConfigError("output_rate", cfg.output_rate, "must be in (0, 1)")
    if cfg.steps % cfg.eval_every:
        raise ConfigError("steps", cfg.steps, f"must be a multiple of --eval-every "
                          f"{cfg.eval_every}")
    if cfg.reset in ("rewind", "lr_rewind") and (
            cfg.rewind_step % cfg.eval_every or not 0 <= cfg.rewind_step < cfg.steps):
        raise ConfigError("rewind_step", cfg.rewind_step, f"must be a multiple of --eval-every "
                          f"{cfg.eval_every} in [0, --steps {cfg.steps})")
    data = load_data(cfg.dataset, cfg.data_dir)
    if cfg.val_size >= data.num_train - cfg.batch_size:
        raise ConfigError("val_size", cfg.val_size, f"leaves fewer than --batch-size "
                          f"{cfg.batch_size} of the {data.num_train} training examples")


def flat_split(data, val_size: int) -> tuple[Any, ...]:
    """``(x_tr, y_tr, x_va, y_va, x_te, y_te)``: flattened inputs on the device, a stratified
    validation split of ``val_size`` training examples (seed 0) held out of training."""
    import jax.numpy as jnp

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
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import sparsejax as sj

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


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Run IMP with its controls and report (see the module docstring)."""
    import jax
    from flax import nnx

    from sparsejax import lottery
    from sparsejax.models import MNIST1DCNN, LeNet300100, mnist1d_mlp

    controls = cfg.controls
    t_start = time.perf_counter()
    data = load_data(cfg.dataset, cfg.data_dir)
    x_tr, y_tr, x_va, y_va, x_te, y_te = flat_split(data, cfg.val_size)
    n_train, in_features = x_tr.shape
    print(f"{data.name}: {n_train} train / {len(x_va)} val / {len(x_te)} test")

    def make_model(key):
        if cfg.task == "mnist1d":
            return mnist1d_mlp(in_features=in_features, num_classes=data.num_classes,
                               rngs=nnx.Rngs(key))
        if cfg.task == "mnist1d_cnn":
            return MNIST1DCNN(in_length=in_features, num_classes=data.num_classes,
                              rngs=nnx.Rngs(key))
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
        p, captured, history = jax.vmap(train_one, in_axes=(0, 0, 0, None))(
            params, mask, data_keys, plan)
        return lottery.TrainOutput(p, captured if plan.capture_step is not None else None,
                                   history, lr_scale=plan.lr_scale)  # train_one scales Adam's lr

    eval_fn = jax.jit(jax.vmap(task["metrics"]))
    layer_rates = {} if cfg.output_rate is None else {cfg.output_layer: cfg.output_rate}
    lcfg = lottery.LotteryConfig(
        rounds=cfg.rounds, rate=cfg.rate, layer_rates=layer_rates, reset=cfg.reset,
        rewind_step=cfg.rewind_step, steps=cfg.steps, controls=controls,
        metric="val_accuracy", seed_axis=True,
    )
    result = lottery.imp(params0, train_fn, eval_fn, lcfg, key=jax.random.split(
        jax.random.key(2), cfg.seeds), init_fn=init_fn, checkpoint_dir=ctx.out / "checkpoints",
        progress=cfg.progress)
    rows = result.records
    for r in rows:
        scalars = {k: v for k, v in r.items() if k.endswith("_per_seed")}
        ctx.writer.scoped(r["variant"]).write_scalars(r["round"], scalars)
    rates = [lcfg.rate] * cfg.rounds
    expected = [1 - lottery.cumulative_sparsity(rates[:r]) for r in range(1, cfg.rounds + 1)]
    elapsed = time.perf_counter() - t_start

    def cell(row, name):
        per = row.get(f"{name}_per_seed")
        return "—" if per is None else f"{np.mean(per):.2%} ± {np.std(per):.2%}"

    variants = ["ticket", *controls]
    table_rows = []
    dense = rows[0]
    for r in range(0, cfg.rounds + 1):
        row: dict[str, Any] = {"round": r}
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
    header = (
        f"# IMP lottery tickets: {cfg.task} ({data.name})\n\nCommand: `{ctx.command}`\n\n"
        f"Device: {device_line()}, {jax.device_count()} device(s); wall time {elapsed:.0f} s. "
        f"{cfg.seeds} seeds (vmapped), mean ± std over seeds. Reset `{cfg.reset}`, rate "
        f"{cfg.rate:g} per round"
        + (f" (output layer {cfg.output_rate:g})" if cfg.output_rate is not None else "")
        + f", layerwise magnitude; {cfg.steps} steps of batch {cfg.batch_size}, Adam "
        f"{cfg.lr:g}; evaluated every {cfg.eval_every} steps. 'test acc @ best val' is the "
        "test accuracy at the evaluation of highest validation accuracy; 'max test acc' is "
        "the maximum over evaluations (optimistic, as in the MNIST-1D notebook); early stop = "
        "step of minimal validation loss. Round 0 is the dense network.\n\n"
    )
    results = {"task": cfg.task, "dataset": data.name, "config": dataclasses.asdict(cfg),
               "lottery_config": lcfg.to_dict(), "rows": rows,
               "expected_remaining": expected, "elapsed_s": elapsed,
               "device": jax.devices()[0].device_kind, "command": ctx.command}
    ctx.save_figures(figures(results, dataclasses.asdict(cfg)))
    ctx.write_text("results.md", header + table + "\n")
    ctx.write_json("results.json", results)
    print(header + table)
    return results


def figures(results: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Test accuracy and early-stop step vs % of weights remaining, ticket vs controls."""
    rows = results["rows"]
    dense = next(r for r in rows if r["variant"] == "dense")
    variants = list(dict.fromkeys(r["variant"] for r in rows if r["variant"] != "dense"))
    seeds = len(dense["val_selected_test_accuracy_per_seed"])

    def curves(name):
        out = {}
        for v in variants:
            pts = [dense] + [x for x in rows if x["variant"] == v]
            out[v] = ([100 * p["weights_remaining"] for p in pts],
                      [float(np.mean(p[f"{name}_per_seed"])) for p in pts],
                      [float(np.std(p[f"{name}_per_seed"])) for p in pts])
        return out

    spread = spread_label(seeds)
    data = results["dataset"]
    dense_acc = float(np.mean(dense["val_selected_test_accuracy_per_seed"]))
    return {
        "accuracy": tradeoff_curve(
            curves("val_selected_test_accuracy"), xlabel="% of weights remaining",
            ylabel="test accuracy @ best validation", error_label=spread,
            baseline=dense_acc, baseline_label=f"dense ({dense_acc:.2%})",
            title=f"IMP on {data}: ticket vs controls"),
        "early_stop": tradeoff_curve(
            curves("early_stop_step"), xlabel="% of weights remaining",
            ylabel="early-stop step (min val loss)", error_label=spread, focus=None,
            title=f"IMP on {data}: early-stop iteration"),
    }


STUDY = Study(
    name="lottery", config=Config, run=run, check=check, figures=figures, smoke=SMOKE,
    presets=presets, summary="lottery tickets by iterative magnitude pruning, with controls",
    choices=lambda: {"dataset": dataset_names()},
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``sparsejax lottery [flags]`` (``argv`` default: ``sys.argv[1:]``)."""
    return run_study(STUDY, argv)
