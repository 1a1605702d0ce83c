"""``sparsejax structured``: filter / neuron pruning — criteria, allocation, schedules, oracle ρ.

A CNN is trained densely (``--seeds`` seeds, vmapped): LeNet-5 for image data (``conv1``,
``conv2``, ``fc1`` pruned), the MNIST-1D CNN for 1-D signals (``conv1``–``conv3``). Whole
output units (``sparsejax.Neurons()``) of the hidden layers are removed by every structured
method (:func:`sparsejax.runner.method_names` ``("structured")``: L1 / Taylor / random
rankings per layer or global, L2-normalised global rankings, sensitivity-guided allocation,
and registered ones), then fine-tuned with the removed units pinned at zero. Schedules:
``one_shot`` and ``iterative`` (``iterative_steps`` rounds of ``s·j/k``, the same total
budget). Reported: filters removed per layer, FLOPs reduction from the masks and once
physically shrunk, accuracy after pruning and after fine-tuning, and the Spearman ρ of each
criterion with the exact oracle loss change of removing each unit (Molchanov et al. 2017).
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Literal

import numpy as np

from sparsejax.data import dataset_names
from sparsejax.runner._config import ConfigError, check_fraction, check_positive
from sparsejax.runner._methods import ScoreInputs, get_method, method_names
from sparsejax.runner._plots import tradeoff_curve
from sparsejax.runner._study import RunContext, Study, StudyConfig, check_data, run_study
from sparsejax.runner._tables import aggregate, markdown_table
from sparsejax.runner.studies._common import (
    check_lr,
    device_line,
    load_data,
    spread_label,
    stack,
    unstack,
)

__all__ = ["STUDY", "Config", "figures", "main"]

BUILTIN = ("l1_layer", "l1_global", "taylor_layer", "taylor_global", "l1_global_l2",
           "taylor_global_l2", "random_layer", "random_global", "sensitivity")
CORRELATED = ("l1", "l2", "taylor", "activation", "apoz", "random")
# model -> (pruned kernels, chain of kernels in forward order)
MODELS = {"lenet5": (("conv1/kernel", "conv2/kernel", "fc1/kernel"),
                     ("conv1/kernel", "conv2/kernel", "fc1/kernel", "fc2/kernel")),
          "mnist1d_cnn": (("conv1/kernel", "conv2/kernel", "conv3/kernel"),
                          ("conv1/kernel", "conv2/kernel", "conv3/kernel", "linear/kernel"))}
# Dense recipes for the fields left at None: MNIST-1D as in the mnist1d repository (Adam
# 1e-2, batch 100, about 6,000 steps), LeNet-5 with Adam 1e-3.
DENSE = {"mnist1d": {"train_epochs": 175, "batch_size": 100, "lr": 1e-2}}
DENSE_IMAGES = {"train_epochs": 15, "batch_size": 64, "lr": 1e-3}


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Structured pruning: filter criteria, sensitivity allocation, one-shot vs iterative."""

    dataset: str = "mnist1d"
    """Data set: images train LeNet-5, 1-D signals the MNIST-1D CNN."""
    data_dir: str | None = None
    """Folder of a data set read from files (for mnist10k it replaces the shipped copy)."""
    seeds: int = 3
    """Training seeds, trained together (vmapped)."""
    sparsities: tuple[float, ...] = (0.25, 0.5, 0.75)
    """Target fractions of the pruned layers' units removed, each in [0, 1)."""
    methods: tuple[str, ...] = BUILTIN
    """Structured pruning methods (sparsejax methods lists them)."""
    schedules: tuple[Literal["one_shot", "iterative"], ...] = ("one_shot", "iterative")
    """Prune once, or in --iterative-steps rounds with the same fine-tuning budget."""
    iterative_steps: int = 3
    """Rounds of the iterative schedule."""
    train_epochs: int | None = None
    """Epochs of dense training (None: 175 on mnist1d, 15 otherwise)."""
    finetune_epochs: int = 12
    """Fine-tuning epochs per run, in total (split over the iterative rounds)."""
    batch_size: int | None = None
    """Mini-batch size (None: 100 on mnist1d, 64 otherwise)."""
    lr: float | None = None
    """Adam learning rate of dense training (None: 1e-2 on mnist1d, 1e-3 otherwise)."""
    finetune_lr: float = 1e-3
    """Adam learning rate of fine-tuning."""
    score_batches: int = 8
    """Mini-batches averaged by the group-Taylor criterion."""
    oracle_examples: int = 512
    """Training examples of the oracle (exact loss change of removing each unit)."""
    val_examples: int = 500
    """Training examples held out for validation (the sensitivity curves), at most 1/5."""
    sensitivity_grid: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
    """Per-layer sparsities of the sensitivity curves, each in [0, 1)."""
    max_drop: float | None = None
    """Largest validation-accuracy drop a layer may cause under sensitivity allocation."""
    max_train: int | None = None
    """Use at most this many training examples (None: all)."""


SMOKE = {"seeds": 1, "sparsities": (0.5,), "iterative_steps": 2, "train_epochs": 1,
         "finetune_epochs": 2, "score_batches": 2, "oracle_examples": 128, "val_examples": 256,
         "sensitivity_grid": (0.25, 0.5, 0.75), "max_train": 512,
         "methods": ("l1_layer", "taylor_global", "l1_global_l2", "random_layer",
                     "sensitivity")}


def presets(cfg: Config) -> dict[str, Any]:
    """The dense recipe of the data set for the fields left at None."""
    recipe = DENSE.get(cfg.dataset, DENSE_IMAGES)
    return {k: v for k, v in recipe.items() if getattr(cfg, k) is None}


def _model_name(input_shape: tuple[int, ...]) -> str:
    return "lenet5" if len(input_shape) == 3 else "mnist1d_cnn"


def check(cfg: Config) -> None:
    """Every value, before any training."""
    check_data(cfg.dataset, cfg.data_dir)
    check_positive(cfg, "seeds", "iterative_steps", "train_epochs", "batch_size",
                   "score_batches", "oracle_examples", "val_examples", "max_train")
    check_positive(cfg, "finetune_epochs", minimum=0)
    check_lr(cfg, "lr", "finetune_lr")
    for name in ("sparsities", "methods", "schedules"):
        if not getattr(cfg, name):
            raise ConfigError(name, getattr(cfg, name), "give at least one value")
    check_fraction("sparsities", cfg.sparsities, high_open=True)
    check_fraction("sensitivity_grid", cfg.sensitivity_grid, high_open=True)
    if cfg.max_drop is not None and not cfg.max_drop > 0:
        raise ConfigError("max_drop", cfg.max_drop, "must be > 0")
    data = load_data(cfg.dataset, cfg.data_dir)
    if len(data.input_shape) not in (2, 3):
        raise ConfigError("dataset", cfg.dataset, f"inputs of shape {data.input_shape}: the "
                          "study needs images (H, W, C) or 1-D signals (L, C)")
    n_train = data.num_train - min(cfg.val_examples, data.num_train // 5)
    n_train = min(n_train, cfg.max_train or n_train)
    if cfg.score_batches * cfg.batch_size > n_train:
        raise ConfigError("score_batches", cfg.score_batches, f"× --batch-size "
                          f"{cfg.batch_size} exceeds the {n_train} training examples")


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Train, prune, fine-tune and report (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import sparsejax as sj
    from sparsejax import metrics, scores
    from sparsejax.models import MNIST1DCNN, LeNet5
    from sparsejax.sensitivity import layer_sensitivity
    from sparsejax.train import TrainState, create_train_states, evaluate, train
    from sparsejax.tree import named_leaves

    t_start = time.perf_counter()
    data = load_data(cfg.dataset, cfg.data_dir)
    x_all, y_all = np.asarray(data.x_train, np.float32), np.asarray(data.y_train, np.int32)
    x_te, y_te = np.asarray(data.x_test, np.float32), np.asarray(data.y_test, np.int32)
    # A validation split of the training data drives the sensitivity curves (never the test set).
    n_val = min(cfg.val_examples, len(x_all) // 5)
    x_val, y_val = x_all[:n_val], y_all[:n_val]
    x_tr, y_tr = x_all[n_val:], y_all[n_val:]
    if cfg.max_train is not None:
        x_tr, y_tr = x_tr[: cfg.max_train], y_tr[: cfg.max_train]
    model_name = _model_name(data.input_shape)
    pruned_layers, chain = MODELS[model_name]
    prunable = [re.escape(p) + "$" for p in pruned_layers]
    print(f"{data.name}: {len(x_tr)} train / {n_val} val / {len(x_te)} test; model {model_name}")

    def make_model(key):
        if model_name == "lenet5":
            padding = "VALID" if min(x_tr.shape[1:3]) >= 16 else "SAME"
            return LeNet5(x_tr.shape[1:], data.num_classes, padding=padding, rngs=nnx.Rngs(key))
        return MNIST1DCNN(int(np.prod(x_tr.shape[1:])), data.num_classes, rngs=nnx.Rngs(key))

    def activations(model, x):
        """Outputs of every pruned layer (post-ReLU where the model has one)."""
        if isinstance(model, LeNet5):
            a1 = model.conv1(x)  # Caffe LeNet-5: no ReLU after the convolutions
            a2 = model.conv2(nnx.max_pool(a1, (2, 2), strides=(2, 2)))
            flat = nnx.max_pool(a2, (2, 2), strides=(2, 2)).reshape(x.shape[0], -1)
            return {"conv1/kernel": a1, "conv2/kernel": a2,
                    "fc1/kernel": jax.nn.relu(model.fc1(flat))}
        x = x.reshape(x.shape[0], -1, 1)
        a1 = jax.nn.relu(model.conv1(x))
        a2 = jax.nn.relu(model.conv2(a1))
        return {"conv1/kernel": a1, "conv2/kernel": a2, "conv3/kernel": jax.nn.relu(
            model.conv3(a2))}

    # ---------------------------------------------------------------- dense training
    keys = jax.random.split(jax.random.key(0), cfg.seeds)
    dense = create_train_states(make_model, optax.adam(cfg.lr), keys)
    dense, _ = train(dense, x_tr, y_tr, vmap_seeds=True, batch_size=cfg.batch_size,
                     seed=list(range(cfg.seeds)), epochs=cfg.train_epochs,
                     progress=cfg.progress, writer=ctx.writer.scoped("dense"))
    dense_eval = evaluate(dense, x_te, y_te, vmap_seeds=True)
    graphdef, rest0 = dense.graphdef, unstack(dense.rest, 0)
    print(f"[{time.perf_counter() - t_start:.0f} s] dense test accuracy: "
          + ", ".join(f"{a:.4f}" for a in dense_eval["accuracy"]))

    def forward(params, xb):
        return nnx.merge(graphdef, params, rest0)(xb)

    def loss_fn(params, batch):
        xb, yb = batch
        return optax.softmax_cross_entropy_with_integer_labels(forward(params, xb), yb).mean()

    xv, yv = jnp.asarray(x_val), jnp.asarray(y_val)

    def val_accuracy(params):  # traceable: the sensitivity grid runs vmapped
        return jnp.mean(jnp.argmax(forward(params, xv), axis=-1) == yv)

    rng = np.random.default_rng(1234)
    idx = rng.choice(len(x_tr), size=cfg.score_batches * cfg.batch_size, replace=False)
    score_batches = (jnp.asarray(x_tr[idx].reshape(cfg.score_batches, cfg.batch_size,
                                                   *x_tr.shape[1:])),
                     jnp.asarray(y_tr[idx].reshape(cfg.score_batches, cfg.batch_size)))
    o_idx = rng.choice(len(x_tr), size=min(cfg.oracle_examples, len(x_tr)), replace=False)
    oracle_batch = (jnp.asarray(x_tr[o_idx]), jnp.asarray(y_tr[o_idx]))

    params0 = unstack(dense.params, 0)
    flops_report = metrics.flops(forward, params0, x_te[:1])
    layer_cost = {r.path: r.flops for r in flops_report.rows}
    units = {p: int(np.shape(dict(named_leaves(params0))[p])[-1]) for p in chain}
    pruned_flops = {p: layer_cost[p] for p in pruned_layers}
    sens_tables: dict[str, Any] = {}

    def inputs_for(p, seed, mask=None, round_=0):
        def keep_dense(sens):
            if seed == 0 and round_ == 0 and mask is None:
                sens_tables.setdefault("dense", sens)

        return ScoreInputs(p, loss_fn=loss_fn, batches=score_batches, seed=seed, mask=mask,
                           prunable=prunable, options={"round": round_},
                           extras={"val_metric": val_accuracy, "layer_costs": pruned_flops,
                                   "sensitivity_grid": cfg.sensitivity_grid,
                                   "max_drop": cfg.max_drop, "on_sensitivity": keep_dense})

    def unit_scores(kind, p, seed):
        if kind in ("l1", "l2", "taylor", "random"):
            method = {"l1": "l1_layer", "l2": None, "taylor": "taylor_layer",
                      "random": "random_layer"}[kind]
            if method is None:
                return scores.filter_norm(p, 2, prunable=prunable)
            return get_method(method).score(inputs_for(p, seed))
        acts = activations(nnx.merge(graphdef, p, rest0), oracle_batch[0])
        vec = (scores.activation_mean(acts) if kind == "activation"
               else scores.apoz_importance(acts))
        return scores.neuron_scores(p, vec, prunable=prunable)

    # ---------------------------------------------------------------- rank correlation vs oracle
    corr: dict[str, dict[str, list[float]]] = {k: {p: [] for p in pruned_layers}
                                               for k in CORRELATED}
    for s in range(cfg.seeds):
        p = unstack(dense.params, s)
        orc = scores.oracle(loss_fn, p, oracle_batch, prunable=prunable, chunk_size=64)
        for kind in CORRELATED:
            rho = scores.rank_correlation(unit_scores(kind, p, s), orc, prunable=prunable)
            for path, v in rho.items():
                corr[kind][path].append(float(v))
    print(f"[{time.perf_counter() - t_start:.0f} s] oracle and rank correlations done")
    corr_mean = {k: {p: float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan")
                     for p, v in per.items()} for k, per in corr.items()}

    def chain_flops_reduction(mask) -> float:
        """Whole-network FLOPs saved once shrunk: out-units × in-channels kept, per layer."""
        kept = {}
        for path in chain:
            leaf = dict(named_leaves(mask)).get(path)
            m = np.asarray(leaf).reshape(-1) if leaf is not None and np.ndim(leaf) else None
            kept[path] = 1.0 if m is None or m.size != units[path] else float(m.mean())
        total = saved = 0.0
        for i, path in enumerate(chain):
            frac_in = kept[chain[i - 1]] if i else 1.0
            total += layer_cost[path]
            saved += layer_cost[path] * (1.0 - kept[path] * frac_in)
        return saved / total

    def finetune(params_list, masks_list, epochs, seeds_of, label):
        n = len(params_list)
        st = TrainState.create(
            graphdef=graphdef, params=stack(params_list), rest=stack([rest0] * n),
            tx=sj.keep_sparse(optax.adam(cfg.finetune_lr)),
            key=jax.random.split(jax.random.key(1), n),
        ).with_mask(stack(masks_list))
        before = evaluate(st, x_te, y_te, vmap_seeds=True)["accuracy"]
        if epochs > 0:
            st, _ = train(st, x_tr, y_tr, vmap_seeds=True, batch_size=cfg.batch_size,
                          seed=seeds_of, epochs=epochs, progress=cfg.progress,
                          writer=ctx.writer.scoped(label))
        after = evaluate(st, x_te, y_te, vmap_seeds=True)["accuracy"]
        return [unstack(st.params, i) for i in range(n)], before, after

    runs = [{"method": m, "scope": get_method(m).scope, "schedule": sch, "sparsity": float(t),
             "seed": s}
            for sch in cfg.schedules for m in cfg.methods for t in cfg.sparsities
            for s in range(cfg.seeds)]
    rows = []
    for sch in cfg.schedules:
        todo = [r for r in runs if r["schedule"] == sch]
        rounds = 1 if sch == "one_shot" else cfg.iterative_steps
        epochs = cfg.finetune_epochs if rounds == 1 else max(1, cfg.finetune_epochs // rounds)
        params_list = [unstack(dense.params, r["seed"]) for r in todo]
        masks: list = [None] * len(todo)
        print(f"[{time.perf_counter() - t_start:.0f} s] {sch}: {len(todo)} runs, {rounds} "
              f"round(s) of {epochs} fine-tuning epoch(s)")
        for j in range(1, rounds + 1):
            masks = [get_method(r["method"]).mask(inputs_for(p, r["seed"], m, j - 1),
                                                  r["sparsity"] * j / rounds)
                     for r, p, m in zip(todo, params_list, masks)]
            params_list, before, after = finetune(params_list, masks, epochs,
                                                  [r["seed"] for r in todo], f"{sch}_round{j}")
            if j == 1:
                first_before = before
        for i, r in enumerate(todo):
            mask = masks[i]
            named = dict(named_leaves(mask))
            removed = {p: int(units[p] - np.asarray(named[p]).sum()) for p in pruned_layers}
            nz = metrics.flops(forward, params_list[i], x_te[:1], mask=mask).by_path()
            red_mask = 1.0 - sum(nz[p].nonzero_flops for p in pruned_layers) / sum(
                pruned_flops.values())
            rows.append({**r, "filters_removed": removed,
                         "units_removed_fraction": sum(removed.values()) / sum(
                             units[p] for p in pruned_layers),
                         "flops_reduction_mask": red_mask,
                         "flops_reduction_shrunk": chain_flops_reduction(mask),
                         "accuracy_pruned": first_before[i] if rounds == 1 else before[i],
                         "accuracy_after_ft": after[i]})

    # ---------------------------------------------------------------- report
    agg = aggregate(rows, ("schedule", "method", "sparsity"),
                    ("accuracy_after_ft", "accuracy_pruned", "flops_reduction_mask",
                     "flops_reduction_shrunk", "units_removed_fraction"))
    for a in agg:
        mine = [r for r in rows if all(r[k] == a[k] for k in ("schedule", "method", "sparsity"))]
        a["filters"] = ", ".join(
            f"{p.split('/')[0]} {np.mean([r['filters_removed'][p] for r in mine]):.3g}/{units[p]}"
            for p in pruned_layers)
    dense_acc = np.asarray(dense_eval["accuracy"])
    table = markdown_table(
        agg,
        [("schedule", "{schedule}"), ("method", "{method}"), ("target", "{sparsity:g}"),
         ("filters removed", "{filters}"),
         ("FLOPs red. (mask, pruned layers)", "{flops_reduction_mask_mean:.1%}"),
         ("FLOPs red. (shrunk, whole net)", "{flops_reduction_shrunk_mean:.1%}"),
         ("acc. pruned", "{accuracy_pruned_mean:.2%} ± {accuracy_pruned_std:.2%}"),
         ("acc. after FT", "{accuracy_after_ft_mean:.2%} ± {accuracy_after_ft_std:.2%}")],
    )
    corr_rows = [{"criterion": k, **{p.split("/")[0]: v for p, v in per.items()}}
                 for k, per in corr_mean.items()]
    corr_table = markdown_table(
        corr_rows, [("criterion", "{criterion}")]
        + [(f"ρ {p.split('/')[0]}", "{" + p.split("/")[0] + ":.3f}") for p in pruned_layers])
    elapsed = time.perf_counter() - t_start
    header = (f"# Structured pruning: {model_name} on {data.name}\n\n"
              f"{cfg.seeds} seed(s), mean ± std; dense {cfg.train_epochs} epochs "
              f"(test accuracy {dense_acc.mean():.2%} ± {dense_acc.std():.2%}); fine-tuning "
              f"{cfg.finetune_epochs} epochs in total per run; wall time {elapsed:.0f} s on "
              f"{device_line()}.\nCommand: `{ctx.command}`\n\n"
              f"Pruned layers: {', '.join(pruned_layers)} (units: "
              f"{', '.join(str(units[p]) for p in pruned_layers)}); dense FLOPs (MACs / example): "
              f"{flops_report.total_flops:,}. *acc. pruned*: test accuracy right after the "
              f"(last) pruning step, before its fine-tuning. Iterative: {cfg.iterative_steps} "
              f"rounds of {max(1, cfg.finetune_epochs // cfg.iterative_steps)} epochs.\n\n")
    corr_text = (f"\n\n## Spearman ρ of each criterion with the oracle (Molchanov et al. 2017)\n\n"
                 f"Oracle: exact |ΔL| of removing each unit alone on {len(o_idx)} training "
                 f"examples; dense networks, mean over seeds.\n\n{corr_table}\n")
    sens = sens_tables.get("dense")
    if sens is None:
        sens = layer_sensitivity(val_accuracy, params0, unit_scores("l1", params0, 0),
                                 cfg.sensitivity_grid, prunable=prunable, structure=sj.Neurons())
    results = {"dataset": data.name, "model": model_name, "dense": dense_eval, "units": units,
               "layer_flops": layer_cost, "rows": rows, "aggregate": agg,
               "rank_correlation": corr_mean, "rank_correlation_per_seed": corr,
               "sensitivity": sens.to_dict(), "elapsed_s": elapsed}
    ctx.save_figures(figures(results, dataclasses.asdict(cfg)))
    ctx.write_text("results.md", header + table + corr_text)
    ctx.write_json("results.json", results)
    print(header + table + corr_text)
    return results


def figures(results: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Accuracy vs FLOPs reduction, and the layer-sensitivity curves and heat map."""
    from sparsejax.sensitivity import plot_sensitivity_curves, plot_sensitivity_heatmap

    agg = results["aggregate"]
    seeds = config.get("seeds") or max(a["n"] for a in agg)
    curves = {}
    for sch in dict.fromkeys(a["schedule"] for a in agg):
        for m in dict.fromkeys(a["method"] for a in agg):
            pts = sorted((a["flops_reduction_shrunk_mean"], a["accuracy_after_ft_mean"],
                          a["accuracy_after_ft_std"]) for a in agg
                         if a["method"] == m and a["schedule"] == sch)
            if pts:
                curves[f"{m} ({sch})"] = tuple(list(v) for v in zip(*pts))
    dense = float(np.mean(results["dense"]["accuracy"]))
    model, data = results["model"], results["dataset"]
    sens = results["sensitivity"]
    return {
        "tradeoff": tradeoff_curve(
            curves, xlabel="FLOPs reduction (shrunk network)", logx=False, baseline=dense,
            baseline_label=f"dense ({dense:.2%})", error_label=spread_label(seeds),
            title=f"{model} on {data}: filter pruning after fine-tuning"),
        "sensitivity_curves": plot_sensitivity_curves(
            sens, ylabel="validation accuracy",
            title=f"{model}: L1 filter pruning of one layer (seed 0)"),
        "sensitivity_heatmap": plot_sensitivity_heatmap(
            sens, title="accuracy drop, one layer pruned (seed 0)"),
    }


STUDY = Study(
    name="structured", config=Config, run=run, check=check, figures=figures, smoke=SMOKE,
    presets=presets,
    summary="filter / neuron pruning: criteria, allocation, one-shot vs iterative",
    choices=lambda: {"dataset": dataset_names(), "methods": method_names("structured")},
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``sparsejax structured [flags]`` (``argv`` default: ``sys.argv[1:]``)."""
    return run_study(STUDY, argv)
