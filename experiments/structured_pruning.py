"""Structured (filter / neuron) pruning: criteria, allocation, one-shot vs iterative, oracle ρ.

Train a CNN densely (``seeds`` seeds, vmapped), then remove whole output units
(Conv filters, Dense neurons; ``sparsejax.Neurons()`` masks) of every hidden
layer — never the classifier's outputs — and fine-tune with the removed units
pinned at zero (``sparsejax.keep_sparse``). Models: LeNet-5 (Caffe) on
MNIST-10k (``conv1``, ``conv2``, ``fc1`` pruned) and the MNIST-1D CNN
(``conv1``–``conv3`` pruned).

Methods (``s`` = the target in ``sparsities``):

==================  ==============================================  ======================
method              what is removed                                 reference
==================  ==============================================  ======================
l1_layer / _global  lowest L1 filter norm, ``s`` of every layer /   Li et al. 2017
                    ``s`` of all units ranked together
taylor_layer / ...  lowest group Taylor ``(Σ g·w)²`` (mean over     Molchanov et al. 2019
                    ``score_batches`` mini-batches)
random_layer / ...  random units                                    control
..._global_l2       a global ranking of the unit scores divided by  Molchanov et al. 2017
                    their layer's L2 norm (``prune(normalize=
                    "l2")``): no layer collapse
sensitivity         L1 ranking inside each layer; per-layer         Li et al. 2017 (§4.2),
                    fractions from ``allocate_budget`` on the       BN-free
                    layer-sensitivity curves (validation accuracy)
                    so that the pruned layers lose ``s`` of their
                    FLOPs, each layer's drop ≤ ``max_drop``
==================  ==============================================  ======================

Schedules: ``one_shot`` (prune to ``s``, fine-tune ``finetune_epochs``) and
``iterative`` (``iterative_steps`` rounds: prune to ``s·j/k`` — scores, and for
``sensitivity`` the curves, recomputed on the current network — then fine-tune
``finetune_epochs / k`` epochs; the same total budget).

Reported per run: filters removed per layer, FLOPs reduction of the pruned
layers from the masks (ShrinkBench nonzero FLOPs, :func:`sparsejax.metrics.flops`),
FLOPs reduction of the whole network once physically shrunk (a removed unit
also removes the next layer's input channel), accuracy right after pruning and
after fine-tuning. Plus the Spearman rank correlation (per layer, mean over
seeds) of every criterion (L1, L2, group Taylor, mean activation, 1 − APoZ,
random) with the exact oracle loss change of removing each unit alone
(Molchanov et al. 2017), measured on the dense networks.

Usage::

    python experiments/structured_pruning.py --dataset mnist1d   # 25 min on 2 busy CPU cores
    python experiments/structured_pruning.py --dataset mnist10k --data-dir ../shared/data/mnist  # GPU
    python experiments/structured_pruning.py --smoke true                  # < 60 s: CI-sized

Results go to ``results/structured_pruning/<dataset>/`` unless ``--out`` is given.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sparsejax as sj
from sparsejax import metrics, scores
from sparsejax.data import load_dataset
from sparsejax.models import MNIST1DCNN, LeNet5
from sparsejax.runner import (
    aggregate,
    config_to_dict,
    environment,
    markdown_table,
    parse_config,
    prepare_output_dir,
    tradeoff_curve,
    write_json,
)
from sparsejax.sensitivity import (
    allocate_budget,
    layer_sensitivity,
    plot_sensitivity_curves,
    plot_sensitivity_heatmap,
)
from sparsejax.train import TrainState, create_train_states, evaluate, train
from sparsejax.tree import named_leaves

ROOT = pathlib.Path(__file__).resolve().parents[1]

METHODS = {
    # name: (criterion, scope)
    "l1_layer": ("l1", "layer"),
    "l1_global": ("l1", "global"),
    "taylor_layer": ("taylor", "layer"),
    "taylor_global": ("taylor", "global"),
    "l1_global_l2": ("l1", "global"),
    "taylor_global_l2": ("taylor", "global"),
    "random_layer": ("random", "layer"),
    "random_global": ("random", "global"),
    "sensitivity": ("l1", "allocated"),
}
# Global rankings with layer-wise L2-normalised unit scores (Molchanov et al. 2017).
NORMALIZE = {"l1_global_l2": "l2", "taylor_global_l2": "l2"}
SCHEDULES = ("one_shot", "iterative")
CORRELATED = ("l1", "l2", "taylor", "activation", "apoz", "random")

# Per data set: model, the pruned kernels, and the chain of kernels in forward order.
MODELS = {
    "mnist10k": ("lenet5", ("conv1/kernel", "conv2/kernel", "fc1/kernel"),
                 ("conv1/kernel", "conv2/kernel", "fc1/kernel", "fc2/kernel")),
    "mnist1d": ("mnist1d_cnn", ("conv1/kernel", "conv2/kernel", "conv3/kernel"),
                ("conv1/kernel", "conv2/kernel", "conv3/kernel", "linear/kernel")),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Structured pruning: filter criteria, sensitivity allocation, one-shot vs iterative."""

    dataset: str = "mnist1d"
    data_dir: str | None = None
    out: str | None = None
    seeds: int = 3
    sparsities: tuple[float, ...] = (0.25, 0.5, 0.75)
    methods: tuple[str, ...] = tuple(METHODS)
    schedules: tuple[str, ...] = SCHEDULES
    iterative_steps: int = 3
    train_epochs: int | None = None
    finetune_epochs: int = 12
    batch_size: int | None = None
    lr: float | None = None
    finetune_lr: float = 1e-3
    score_batches: int = 8
    oracle_examples: int = 512
    val_examples: int = 500
    sensitivity_grid: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
    max_drop: float | None = None
    max_train: int | None = None
    smoke: bool = False
    progress: bool = True


# Dense recipes (``None`` in the config): MNIST-1D as in the mnist1d repository (lr 1e-2,
# batch 100, ~6,000 steps; experiments/dense_baselines.py reaches 92.6 %), LeNet-5 with Adam.
DENSE = {"mnist1d": {"train_epochs": 175, "batch_size": 100, "lr": 1e-2},
         "mnist10k": {"train_epochs": 15, "batch_size": 64, "lr": 1e-3}}

SMOKE = {"seeds": 1, "sparsities": (0.5,), "iterative_steps": 2, "train_epochs": 1,
         "finetune_epochs": 2, "score_batches": 2, "oracle_examples": 128, "val_examples": 256,
         "sensitivity_grid": (0.25, 0.5, 0.75), "max_train": 512,
         "methods": ("l1_layer", "taylor_global", "l1_global_l2", "random_layer",
                     "sensitivity")}


def stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def activations(model: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
    """Outputs of every pruned layer (post-ReLU where the model has one), keyed by kernel path."""
    if isinstance(model, LeNet5):
        a1 = model.conv1(x)  # Caffe LeNet-5: no ReLU after the convolutions
        a2 = model.conv2(nnx.max_pool(a1, (2, 2), strides=(2, 2)))
        flat = nnx.max_pool(a2, (2, 2), strides=(2, 2)).reshape(x.shape[0], -1)
        a3 = jax.nn.relu(model.fc1(flat))
        return {"conv1/kernel": a1, "conv2/kernel": a2, "fc1/kernel": a3}
    x = x.reshape(x.shape[0], -1, 1)
    a1 = jax.nn.relu(model.conv1(x))
    a2 = jax.nn.relu(model.conv2(a1))
    a3 = jax.nn.relu(model.conv3(a2))
    return {"conv1/kernel": a1, "conv2/kernel": a2, "conv3/kernel": a3}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(Config, argv)
    if cfg.smoke:
        cfg = dataclasses.replace(cfg, **SMOKE)
    if cfg.dataset in DENSE:
        cfg = dataclasses.replace(
            cfg, **{k: v for k, v in DENSE[cfg.dataset].items() if getattr(cfg, k) is None})
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {list(METHODS)}")
    bad = [s for s in cfg.schedules if s not in SCHEDULES]
    if bad:
        raise ValueError(f"unknown schedules {bad}; known: {list(SCHEDULES)}")
    if cfg.dataset not in MODELS:
        raise ValueError(f"dataset must be one of {list(MODELS)}, got {cfg.dataset!r}")
    out_dir = cfg.out or str(
        ROOT / "runs" / "structured_pruning_smoke" if cfg.smoke
        else ROOT / "results" / "structured_pruning" / cfg.dataset
    )
    t_start = time.perf_counter()
    out = prepare_output_dir(out_dir, config_to_dict(cfg))
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir)
    x_all, y_all = np.asarray(data.x_train, np.float32), np.asarray(data.y_train, np.int32)
    x_te, y_te = np.asarray(data.x_test, np.float32), np.asarray(data.y_test, np.int32)
    # A validation split of the training data drives the sensitivity curves (never the test set).
    n_val = min(cfg.val_examples, len(x_all) // 5)
    x_val, y_val = x_all[:n_val], y_all[:n_val]
    x_tr, y_tr = x_all[n_val:], y_all[n_val:]
    if cfg.max_train is not None:
        x_tr, y_tr = x_tr[: cfg.max_train], y_tr[: cfg.max_train]
    model_name, pruned_layers, chain = MODELS[cfg.dataset]
    prunable = [re.escape(p) + "$" for p in pruned_layers]
    print(f"{data.name}: {len(x_tr)} train / {n_val} val / {len(x_te)} test; model {model_name}")

    def make_model(key):
        if model_name == "lenet5":
            return LeNet5(x_tr.shape[1:], data.num_classes, rngs=nnx.Rngs(key))
        return MNIST1DCNN(x_tr.shape[1], data.num_classes, rngs=nnx.Rngs(key))

    # ---------------------------------------------------------------- dense training
    keys = jax.random.split(jax.random.key(0), cfg.seeds)
    dense = create_train_states(make_model, optax.adam(cfg.lr), keys)
    dense, _ = train(dense, x_tr, y_tr, vmap_seeds=True, batch_size=cfg.batch_size,
                                seed=list(range(cfg.seeds)), epochs=cfg.train_epochs,
                                progress=cfg.progress)
    dense_eval = evaluate(dense, x_te, y_te, vmap_seeds=True)
    graphdef = dense.graphdef
    rest0 = unstack(dense.rest, 0)
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

    def unit_scores(kind, p, seed, key_offset=0):
        if kind == "l1":
            return scores.filter_norm(p, 1, prunable=prunable)
        if kind == "l2":
            return scores.filter_norm(p, 2, prunable=prunable)
        if kind == "taylor":
            return scores.mean_group_taylor(loss_fn, p, score_batches, prunable=prunable)
        if kind == "random":
            return scores.random_units(p, jax.random.key(1000 * seed + 7 + key_offset),
                                         prunable=prunable)
        model = nnx.merge(graphdef, p, rest0)
        acts = activations(model, oracle_batch[0])
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

    # ---------------------------------------------------------------- masks
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

    sens_tables = {}

    def make_mask(method, p, target, seed, mask=None, round_=0):
        kind, scope = METHODS[method]
        sc = unit_scores(kind, p, seed, key_offset=round_)
        if scope == "allocated":
            sens = layer_sensitivity(val_accuracy, p, sc, cfg.sensitivity_grid,
                                     prunable=prunable, structure=sj.Neurons(), mask=mask)
            if seed == 0 and round_ == 0 and mask is None:
                sens_tables["dense"] = sens
            alloc = allocate_budget(sens, target, costs=pruned_flops, max_drop=cfg.max_drop)
            return sj.prune(sc, 0.0, params=p, mask=mask, prunable=prunable,
                            structure=sj.Neurons(), distribution=alloc)
        return sj.prune(sc, target, params=p, mask=mask, prunable=prunable,
                        structure=sj.Neurons(), scope=scope, normalize=NORMALIZE.get(method))

    def finetune(params_list, masks_list, epochs, seeds_of):
        n = len(params_list)
        # One optimizer for all runs; with_mask zeroes each run's pruned weights and puts its
        # mask in its optimizer state.
        st = TrainState.create(
            graphdef=graphdef, params=stack(params_list), rest=stack([rest0] * n),
            tx=sj.keep_sparse(optax.adam(cfg.finetune_lr)),
            key=jax.random.split(jax.random.key(1), n),
        ).with_mask(stack(masks_list))
        before = evaluate(st, x_te, y_te, vmap_seeds=True)["accuracy"]
        if epochs > 0:
            st, _ = train(st, x_tr, y_tr, vmap_seeds=True, batch_size=cfg.batch_size, seed=seeds_of,
                                     epochs=epochs, progress=cfg.progress)
        after = evaluate(st, x_te, y_te, vmap_seeds=True)["accuracy"]
        return [unstack(st.params, i) for i in range(n)], before, after

    runs = [{"method": m, "scope": METHODS[m][1], "schedule": sch, "sparsity": float(t),
             "seed": s}
            for sch in cfg.schedules for m in cfg.methods for t in cfg.sparsities
            for s in range(cfg.seeds)]
    rows = []
    for sch in cfg.schedules:
        todo = [r for r in runs if r["schedule"] == sch]
        if not todo:
            continue
        rounds = 1 if sch == "one_shot" else cfg.iterative_steps
        epochs = cfg.finetune_epochs if rounds == 1 else max(1, cfg.finetune_epochs // rounds)
        params_list = [unstack(dense.params, r["seed"]) for r in todo]
        masks: list = [None] * len(todo)
        print(f"[{time.perf_counter() - t_start:.0f} s] {sch}: {len(todo)} runs, {rounds} "
              f"round(s) of {epochs} fine-tuning epoch(s)")
        for j in range(1, rounds + 1):
            masks = [make_mask(r["method"], p, r["sparsity"] * j / rounds, r["seed"], m, j - 1)
                     for r, p, m in zip(todo, params_list, masks)]
            params_list, before, after = finetune(params_list, masks, epochs,
                                                  [r["seed"] for r in todo])
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
    env = environment()
    header = (f"# Structured pruning: {model_name} on {data.name}\n\n"
              f"{cfg.seeds} seed(s), mean ± std; dense {cfg.train_epochs} epochs "
              f"(test accuracy {dense_acc.mean():.2%} ± {dense_acc.std():.2%}); fine-tuning "
              f"{cfg.finetune_epochs} epochs in total per run; wall time {elapsed:.0f} s on "
              f"{env['device']} ({env['backend']}).\n"
              f"Command: `python experiments/{env['command']}`\n\n"
              f"Pruned layers: {', '.join(pruned_layers)} (units: "
              f"{', '.join(str(units[p]) for p in pruned_layers)}); dense FLOPs (MACs / example): "
              f"{flops_report.total_flops:,}. *acc. pruned*: test accuracy right after the "
              f"(last) pruning step, before its fine-tuning. Iterative: {cfg.iterative_steps} "
              f"rounds of {max(1, cfg.finetune_epochs // cfg.iterative_steps)} epochs.\n\n")
    corr_text = (f"\n\n## Spearman ρ of each criterion with the oracle (Molchanov et al. 2017)\n\n"
                 f"Oracle: exact |ΔL| of removing each unit alone on {len(o_idx)} training "
                 f"examples; dense networks, mean over seeds.\n\n{corr_table}\n")
    (out / "results.md").write_text(header + table + corr_text)
    curves = {}
    for sch in cfg.schedules:
        for m in cfg.methods:
            pts = [a for a in agg if a["method"] == m and a["schedule"] == sch]
            if pts:
                curves[f"{m} ({sch})"] = ([a["flops_reduction_shrunk_mean"] for a in pts],
                                         [a["accuracy_after_ft_mean"] for a in pts],
                                         [a["accuracy_after_ft_std"] for a in pts])
    tradeoff_curve(out / "tradeoff.png", curves, xlabel="FLOPs reduction (shrunk network)",
                   logx=False, baseline=float(dense_acc.mean()),
                   title=f"{model_name} on {data.name}: filter pruning after fine-tuning")
    sens = sens_tables.get("dense")
    if sens is None:
        sens = layer_sensitivity(val_accuracy, params0, unit_scores("l1", params0, 0),
                                 cfg.sensitivity_grid, prunable=prunable, structure=sj.Neurons())
    plot_sensitivity_curves(out / "sensitivity_curves.png", sens, ylabel="validation accuracy",
                            title=f"{model_name}: L1 filter pruning of one layer (seed 0)")
    plot_sensitivity_heatmap(out / "sensitivity_heatmap.png", sens,
                             title="accuracy drop, one layer pruned (seed 0)")
    results = {"dataset": data.name, "model": model_name, "dense": dense_eval, "units": units,
               "layer_flops": layer_cost, "rows": rows, "aggregate": agg,
               "rank_correlation": corr_mean, "rank_correlation_per_seed": corr,
               "sensitivity": sens.to_dict(), "elapsed_s": elapsed}
    write_json(out / "results.json", results)
    print(header + table + corr_text)
    print(f"\nwrote {out}/results.json, results.md, tradeoff.png, sensitivity_*.png")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
