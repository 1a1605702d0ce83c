"""The main job: a ShrinkBench-style comparison of pruning methods on real data.

Train LeNet-300-100 densely (``seeds`` seeds, vmapped), prune each trained model
to compression ratios 2…64 with every method below, fine-tune with the pruned
weights pinned at zero (``sparsejax.keep_sparse``), and report test accuracy,
macro precision/recall/F1, measured compression and theoretical speedup
(ShrinkBench definitions, Blalock et al. 2020) as mean ± std over seeds.

Methods (one-shot unless noted):

==================  ===========================  =======  ==============================
method              score                        scope    reference
==================  ===========================  =======  ==============================
global_magnitude    ``|w|``                      global   Han et al. 2015
layer_magnitude     ``|w|``                      layer    Han et al. 2015
global_gradient     ``|g|``                      global   ShrinkBench
layer_gradient      ``|g|``                      layer    ShrinkBench
global_taylor       ``|w·g|``                    global   Molchanov et al. 2017
global_obd          ``½·h·w²`` (Hutchinson h)    global   LeCun et al. 1990
random              ``U[0, 1)``                  layer    control
gradual_magnitude   ``|w|``, polynomial schedule layer    Zhu & Gupta 2017
==================  ===========================  =======  ==============================

``gradual_magnitude`` prunes during the fine-tuning budget instead of before it
(sparsity rises as ``s_f(1 − (1 − t/T)³)`` over the first two thirds of the
steps, mask updated every ``gradual_every`` steps), so every method gets the same
number of training steps after the dense phase.

Compression counts **all** parameters, biases included (ShrinkBench): the
weights (every kernel, the classifier too) are pruned to the sparsity that
makes ``total / nonzero`` equal the target.

Every fine-tuning run of every one-shot method, compression and seed is
trained in ONE vmapped program (one compilation), so the whole job stays
within a few minutes on a 2-core CPU.

Usage::

    python experiments/shrinkbench.py                      # digits, ~3 min on 2 CPU cores
    python experiments/shrinkbench.py --dataset mnist10k --data-dir ../shared/data/mnist
    python experiments/shrinkbench.py --dataset mnist1d
    python experiments/shrinkbench.py --smoke true         # seconds: CI-sized
"""

from __future__ import annotations

import dataclasses
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
from sparsejax.models import LeNet300100
from sparsejax.runner import (
    aggregate,
    config_to_dict,
    environment,
    layer_sparsity_bars,
    markdown_table,
    parse_config,
    prepare_output_dir,
    tradeoff_curve,
    write_json,
)
from sparsejax.train import (
    TrainState,
    create_train_states,
    evaluate,
    train,
)

ONE_SHOT = {
    # name: (score kind, scope)
    "global_magnitude": ("magnitude", "global"),
    "layer_magnitude": ("magnitude", "layer"),
    "global_gradient": ("gradient", "global"),
    "layer_gradient": ("gradient", "layer"),
    "global_taylor": ("taylor", "global"),
    "global_obd": ("obd", "global"),
    "random": ("random", "layer"),
}
GRADUAL = ("gradual_magnitude",)
ALL_METHODS = (*ONE_SHOT, *GRADUAL)


@dataclasses.dataclass(frozen=True)
class Config:
    """ShrinkBench-style comparison of pruning methods on LeNet-300-100."""

    dataset: str = "digits"
    data_dir: str | None = None
    out: str = "runs/shrinkbench"
    seeds: int = 3
    compressions: tuple[float, ...] = (2, 4, 8, 16, 32, 64)
    methods: tuple[str, ...] = ALL_METHODS
    train_epochs: int = 40
    finetune_epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    finetune_lr: float = 3e-4
    score_examples: int = 512
    hutchinson_samples: int = 64
    gradual_every: int = 10
    bars_at: float = 16
    smoke: bool = False
    progress: bool = True


SMOKE = {"seeds": 2, "compressions": (2.0, 8.0), "train_epochs": 2, "finetune_epochs": 1,
         "score_examples": 128, "hutchinson_samples": 4, "gradual_every": 2}


def weight_sparsity_for(compression: float, total: int, prunable: int) -> float:
    """Sparsity of the prunable weights that makes ``total / nonzero == compression``."""
    s = (total - total / compression) / prunable
    if not 0.0 <= s <= 1.0:
        raise ValueError(
            f"compression {compression} is unreachable: it needs weight sparsity {s:.4f} "
            f"({total} params, {prunable} prunable)"
        )
    return s


def stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(Config, argv)
    if cfg.smoke:
        cfg = dataclasses.replace(cfg, **SMOKE)
    unknown = [m for m in cfg.methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {list(ALL_METHODS)}")
    t_start = time.perf_counter()
    out = prepare_output_dir(cfg.out, config_to_dict(cfg))
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir)
    x_tr, y_tr = np.asarray(data.x_train, np.float32), np.asarray(data.y_train, np.int32)
    x_te, y_te = np.asarray(data.x_test, np.float32), np.asarray(data.y_test, np.int32)
    in_features = int(np.prod(x_tr.shape[1:]))
    print(f"{data.name}: {len(x_tr)} train / {len(x_te)} test, input {x_tr.shape[1:]}")

    def make_model(key):
        return LeNet300100(in_features=in_features, num_classes=data.num_classes,
                           rngs=nnx.Rngs(key))

    # ---------------------------------------------------------------- dense training
    keys = jax.random.split(jax.random.key(0), cfg.seeds)
    dense = create_train_states(make_model, optax.adam(cfg.lr), keys)
    data_seeds = list(range(cfg.seeds))
    dense, _ = train(dense, x_tr, y_tr, vmap_seeds=True, batch_size=cfg.batch_size, seed=data_seeds,
                                epochs=cfg.train_epochs, progress=cfg.progress)
    dense_eval = evaluate(dense, x_te, y_te, vmap_seeds=True)
    graphdef = dense.graphdef
    params0 = unstack(dense.params, 0)
    rest0 = unstack(dense.rest, 0)
    total = metrics.num_params(params0)
    n_prunable = metrics.num_params(params0, prunable=None)
    print(f"dense LeNet-300-100: {total:,} params ({n_prunable:,} prunable), test accuracy "
          + ", ".join(f"{a:.4f}" for a in dense_eval["accuracy"]))

    def loss_fn(params, batch):
        xb, yb = batch
        logits = nnx.merge(graphdef, params, rest0)(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def forward(params, xb):
        return nnx.merge(graphdef, params, rest0)(xb)

    rng = np.random.default_rng(1234)
    score_idx = rng.choice(len(x_tr), size=min(cfg.score_examples, len(x_tr)), replace=False)
    score_batch = (jnp.asarray(x_tr[score_idx]), jnp.asarray(y_tr[score_idx]))
    grad_fn = jax.jit(jax.grad(loss_fn))

    # ---------------------------------------------------------------- one-shot masks
    one_shot = [m for m in cfg.methods if m in ONE_SHOT]
    configs, ft_params, ft_masks = [], [], []
    for s in range(cfg.seeds):
        p = unstack(dense.params, s)
        g = grad_fn(p, score_batch)
        kinds = {ONE_SHOT[m][0] for m in one_shot}
        sc = {}
        if "magnitude" in kinds:
            sc["magnitude"] = scores.magnitude(p)
        if "gradient" in kinds:
            sc["gradient"] = scores.gradient(g)
        if "taylor" in kinds:
            sc["taylor"] = scores.taylor(p, g)
        if "obd" in kinds:
            h = scores.hessian_diag_hutchinson(loss_fn, p, score_batch,
                                               jax.random.key(100 + s), cfg.hutchinson_samples)
            sc["obd"] = scores.obd(p, h)
        if "random" in kinds:
            sc["random"] = scores.random(p, jax.random.key(200 + s))
        for m in one_shot:
            kind, scope = ONE_SHOT[m]
            for c in cfg.compressions:
                sparsity = weight_sparsity_for(c, total, n_prunable)
                mask = sj.prune(sc[kind], sparsity, params=p, scope=scope)
                configs.append({"method": m, "compression": float(c), "seed": s})
                ft_params.append(sj.apply_mask(p, mask))
                ft_masks.append(mask)

    rows = []
    bars: dict[str, list[float]] = {}
    layer_names = [r.path for r in sj.summary(params0) if len(r.shape) >= 2]

    def record(cfg_row, p, mask, before, after):
        comp = metrics.compression_ratio(p, mask)
        report = metrics.flops(forward, p, x_te[:1], mask=mask)
        row = {**cfg_row, "accuracy": after["accuracy"], "accuracy_before_ft": before,
               "macro_precision": after["macro_precision"], "macro_recall": after["macro_recall"],
               "macro_f1": after["macro_f1"], "compression_measured": comp,
               "theoretical_speedup": report.theoretical_speedup}
        rows.append(row)
        if cfg_row["seed"] == 0 and cfg_row["compression"] == float(cfg.bars_at):
            stats = {r.path: r.sparsity for r in sj.summary(p, mask)}
            bars[cfg_row["method"]] = [stats[n] for n in layer_names]

    if configs:
        n = len(configs)
        # One optimizer for all runs (one compilation); each run's mask lives in its opt state.
        ft = TrainState.create(
            graphdef=graphdef,
            params=stack(ft_params),
            rest=stack([rest0] * n),
            tx=sj.keep_sparse(optax.adam(cfg.finetune_lr)),
            key=jax.random.split(jax.random.key(1), n),
        ).with_mask(stack(ft_masks))
        before = evaluate(ft, x_te, y_te, vmap_seeds=True)["accuracy"]
        print(f"fine-tuning {n} pruned models in one vmapped program ...")
        ft, _ = train(ft, x_tr, y_tr, vmap_seeds=True, batch_size=cfg.batch_size,
                                 seed=[c["seed"] for c in configs],
                                 epochs=cfg.finetune_epochs, progress=cfg.progress)
        after = evaluate(ft, x_te, y_te, vmap_seeds=True)
        for i, c in enumerate(configs):
            res = {k: after[k][i] for k in ("accuracy", "macro_precision", "macro_recall",
                                            "macro_f1")}
            record(c, unstack(ft.params, i), ft_masks[i], before[i], res)

    # ---------------------------------------------------------------- gradual magnitude
    if "gradual_magnitude" in cfg.methods:
        steps_per_epoch = len(x_tr) // cfg.batch_size
        total_steps = cfg.finetune_epochs * steps_per_epoch
        end = max(cfg.gradual_every, (2 * total_steps // 3) // cfg.gradual_every * cfg.gradual_every)
        for c in cfg.compressions:
            sparsity = weight_sparsity_for(c, total, n_prunable)
            tx = sj.pruning(
                optax.adam(cfg.finetune_lr),
                score=lambda p, g: scores.magnitude(p),
                schedule=sj.schedules.polynomial(0.0, sparsity, begin=0, end=end,
                                                 every=cfg.gradual_every),
                scope="layer",
            )
            st = TrainState.create(graphdef=graphdef, params=dense.params, rest=dense.rest, tx=tx,
                                   key=jax.random.split(jax.random.key(2), cfg.seeds))
            st, _ = train(st, x_tr, y_tr, vmap_seeds=True, batch_size=cfg.batch_size, seed=data_seeds,
                                     epochs=cfg.finetune_epochs, progress=cfg.progress)
            res = evaluate(st, x_te, y_te, vmap_seeds=True)
            for s in range(cfg.seeds):
                mask = sj.current_mask(unstack(st.opt_state, s))
                record({"method": "gradual_magnitude", "compression": float(c), "seed": s},
                       unstack(st.params, s), mask, float("nan"),
                       {k: res[k][s] for k in ("accuracy", "macro_precision", "macro_recall",
                                               "macro_f1")})

    # ---------------------------------------------------------------- report
    agg = aggregate(rows, ("method", "compression"),
                    ("accuracy", "macro_f1", "compression_measured", "theoretical_speedup",
                     "accuracy_before_ft"))
    for a in agg:
        before = a["accuracy_before_ft_mean"]
        a["before_ft"] = "—" if np.isnan(before) else f"{before:.2%}"
    dense_acc = np.asarray(dense_eval["accuracy"])
    dense_f1 = np.asarray(dense_eval["macro_f1"])
    table = markdown_table(
        [{"method": "dense", "compression": 1.0, "accuracy_mean": dense_acc.mean(),
          "accuracy_std": dense_acc.std(), "macro_f1_mean": dense_f1.mean(),
          "macro_f1_std": dense_f1.std(), "compression_measured_mean": 1.0,
          "theoretical_speedup_mean": 1.0, "before_ft": "—"}, *agg],
        [("method", "{method}"), ("target", "{compression:g}×"),
         ("measured", "{compression_measured_mean:.2f}×"),
         ("speedup (theory)", "{theoretical_speedup_mean:.2f}×"),
         ("acc. before FT", "{before_ft}"),
         ("test accuracy", "{accuracy_mean:.2%} ± {accuracy_std:.2%}"),
         ("macro F1", "{macro_f1_mean:.4f} ± {macro_f1_std:.4f}")],
    )
    elapsed = time.perf_counter() - t_start
    header = (f"# ShrinkBench-style comparison: LeNet-300-100 on {data.name}\n\n"
              f"{cfg.seeds} seeds, mean ± std; dense {cfg.train_epochs} epochs, "
              f"fine-tune {cfg.finetune_epochs} epochs; wall time {elapsed:.0f} s on "
              f"{jax.devices()[0].device_kind}.\n"
              f"Command: `python experiments/{environment()['command']}`\n\n")
    (out / "results.md").write_text(header + table + "\n")
    curves = {}
    for m in cfg.methods:
        pts = [a for a in agg if a["method"] == m]
        curves[m] = ([a["compression"] for a in pts], [a["accuracy_mean"] for a in pts],
                     [a["accuracy_std"] for a in pts])
    tradeoff_curve(out / "tradeoff.png", curves, baseline=float(dense_acc.mean()),
                   title=f"LeNet-300-100 on {data.name}: accuracy vs compression")
    if bars:
        layer_sparsity_bars(out / "layer_sparsity.png", layer_names, bars,
                            title=f"per-layer sparsity at {cfg.bars_at:g}× compression (seed 0)")
    results = {"dataset": data.name, "dense": dense_eval, "rows": rows, "aggregate": agg,
               "elapsed_s": elapsed}
    write_json(out / "results.json", results)
    print(header + table)
    print(f"\nwrote {out}/results.json, results.md, tradeoff.png"
          + (", layer_sparsity.png" if bars else ""))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
