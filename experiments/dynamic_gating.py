"""Dynamic channel gating vs static filter pruning at equal compute (issue #7).

One dense model is trained, then three ways of cutting its compute get the same
training budget (``finetune_steps`` steps from the dense weights):

==================  ==========================================================  =================
method              what                                                         reference
==================  ==========================================================  =================
static_l1           prune filters / units by L1 norm (``sj.prune(...,            Li et al. 2017
                    structure=sj.Neurons(), reduction="l1")``, kernel + bias),
                    fine-tune with ``sj.keep_sparse``; one run per density
fbs                 gated model (:class:`sparsejax.dynamic.GatedLeNet5` /        Gao et al. 2019
                    ``GatedMNIST1DCNN``), FBS saliency + k-WTA, L1 on the
                    saliency; ONE run serves every density
hard_concrete       gated model, input-dependent hard-concrete L0 gates, top-k   Louizos et al. 2018
                    on log α, expected-L0 penalty; ONE run serves every density
fbs_adaptive        the FBS model under the confidence cascade: density ladder   Bolukbasi et al. 2017
                    ``adaptive_densities``, escalate while max softmax <
                    threshold (one point per threshold; failed runs are paid)
==================  ==========================================================  =================

The gated models are trained with a random density per example,
``d ~ U(min_density, 1)`` (slimmable-style sampled widths, Yu et al. 2019), a
quarter of every batch pinned to ``min_density`` and a quarter to 1 (the
sandwich rule of Yu & Huang 2019: on MNIST-1D it raised FBS at d=0.25 from
57% to 70% test accuracy, seed 0, against plain uniform sampling), so one model
serves all densities at run time with no retraining. Training only at the
lowest density was not chosen: the model must also serve the high densities. Gated
layers: the convolutions and the hidden dense layer (LeNet-5: conv1, conv2,
fc1; MNIST-1D CNN: conv1–conv3); the classifier is never gated or pruned.
Static pruning removes exactly the ``k = floor(d·C + ½)`` channels per layer
that gating keeps active, so both sit at the same nominal width.

The gate predictors start from their layers' initialisation (``--gate-init
random``, the default) or at the static L1 filter ranking (``--gate-init
filters``: :func:`sparsejax.dynamic.init_gates_from_filters`, so at step 0 the
gated model is the statically pruned one). On MNIST-1D (2 seeds,
``results/dynamic_gating/mnist1d_gate_init_filters``) the ranking
start helped the hard-concrete models (shared model at d=0.25: 72.1% vs 60.2%;
per-density models at 0.5 / 0.75: 91.25% / 92.60% vs 90.95% / 92.10%) and not
the shared FBS model (62.5% / 85.9% vs 65.8% / 87.55% at 0.25 / 0.5); on
LeNet-5 / MNIST-10k (``mnist10k_gate_init_filters``) it lifted every gated
model (shared hard-concrete at 0.5: 98.03% vs 97.25%) to within 0.01–0.27% of
static at 0.5 and 0.75. Static pruning still wins at d=0.25 on both, and is
never beaten on LeNet-5.

Trained longer (``--dense-steps 8000 --finetune-steps 12000``, 8 seeds,
``mnist1d_long``; LeNet-5 ``--dense-steps 4500 --finetune-steps 3000``, 3 seeds,
``mnist10k_long``), every gated MNIST-1D model beats static at 0.75 (by
0.45–1.13% at equal MACs) and the per-density hard-concrete model at 0.5
(+0.37%), while static stays ahead at 0.25 (83.18% at 7.8% MACs vs 83.06% /
82.59% at 8.9% for the per-density hard-concrete / FBS models); on LeNet-5
static and the per-density gated models tie within 0.3%.

Compute is **effective MACs per example** (:func:`sparsejax.dynamic.effective_flops`):
``Σ macs_per_pair · a_in · a_out`` over the layers, with ``a`` the active (gated:
nonzero-gate) channels of each layer and its input — exactly what a physically
shrunk (static) or gathered (dynamic) network computes — plus, for gated models,
the predictors' ``a_in · C_out`` MACs. Accuracy is on the test split.

Usage::

    python experiments/dynamic_gating.py                        # MNIST-1D CNN, ~2 min on 2 cores
    python experiments/dynamic_gating.py --dataset mnist10k --data-dir ../shared/data/mnist
    python experiments/dynamic_gating.py --smoke true           # seconds: CI-sized
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
from sparsejax import dynamic
from sparsejax.data import load_dataset
from sparsejax.models import MNIST1DCNN, LeNet5
from sparsejax.runner import (
    aggregate,
    config_to_dict,
    environment,
    markdown_table,
    parse_config,
    prepare_output_dir,
    write_json,
)
from sparsejax.train import create_train_state, evaluate, make_train_step, train
from sparsejax.tree import named_leaves, path_str

GATES = ("fbs", "hard_concrete")
GATE_INITS = ("filters", "random")


@dataclasses.dataclass(frozen=True)
class Config:
    """Dynamic gating (FBS, hard-concrete L0) vs static L1 filter pruning at equal compute."""

    dataset: str = "mnist1d"
    data_dir: str | None = None
    out: str = "runs/dynamic_gating"
    seeds: int = 2
    densities: tuple[float, ...] = (0.25, 0.5, 0.75)
    gates: tuple[str, ...] = GATES
    dense_steps: int | None = None
    finetune_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    finetune_lr: float | None = None
    min_density: float = 0.2
    sandwich: bool = True
    fixed: bool = True
    fbs_l1: float = 1e-3
    l0_penalty: float = 1e-2
    gate_init: str = "random"
    gate_spread: float = 0.1
    adaptive_densities: tuple[float, ...] = (0.25, 0.5, 1.0)
    thresholds: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
    smoke: bool = False
    progress: bool = True


# Per-dataset defaults for the fields left at None.
PRESETS = {
    "mnist1d": {"dense_steps": 4000, "finetune_steps": 3000, "batch_size": 100, "lr": 1e-2,
                "finetune_lr": 3e-3},
    "mnist10k": {"dense_steps": 1500, "finetune_steps": 1000, "batch_size": 64, "lr": 1e-3,
                 "finetune_lr": 5e-4},
    "digits": {"dense_steps": 600, "finetune_steps": 400, "batch_size": 64, "lr": 1e-3,
               "finetune_lr": 5e-4},
}
SMOKE = {"seeds": 1, "dense_steps": 60, "finetune_steps": 40, "densities": (0.25, 0.5, 0.75),
         "thresholds": (0.0, 0.9, 1.0)}


def resolve(cfg: Config) -> Config:
    if cfg.dataset not in PRESETS:
        raise ValueError(f"dataset must be one of {list(PRESETS)}, got {cfg.dataset!r}")
    if cfg.smoke:
        cfg = dataclasses.replace(cfg, **SMOKE)
    fill = {k: v for k, v in PRESETS[cfg.dataset].items() if getattr(cfg, k) is None}
    cfg = dataclasses.replace(cfg, **fill)
    for i, d in enumerate(cfg.densities):
        dynamic.check_density(d, f"densities[{i}]")
    if cfg.gate_init not in GATE_INITS:
        raise ValueError(f"gate_init must be one of {GATE_INITS}, got {cfg.gate_init!r}")
    unknown = [g for g in cfg.gates if g not in GATES]
    if unknown:
        raise ValueError(f"unknown gates {unknown}; known: {list(GATES)}")
    return cfg


def build(dataset: str, input_shape: tuple[int, ...], num_classes: int):
    """(dense zoo constructor, gated constructor) for the data set."""
    if dataset == "mnist1d":
        length = input_shape[0]
        return (lambda key: MNIST1DCNN(length, num_classes, rngs=nnx.Rngs(key)),
                lambda key, gate: dynamic.GatedMNIST1DCNN(length, num_classes, gate=gate,
                                                          rngs=nnx.Rngs(key)))
    padding = "VALID" if min(input_shape[:2]) >= 16 else "SAME"
    return (lambda key: LeNet5(input_shape, num_classes, padding=padding, rngs=nnx.Rngs(key)),
            lambda key, gate: dynamic.GatedLeNet5(input_shape, num_classes, padding=padding,
                                                  gate=gate, rngs=nnx.Rngs(key)))


def load_gated(model, dense_params, cfg: Config) -> None:
    """Dense weights into a gated model; with ``gate_init="filters"`` its predictors start
    at the L1 filter ranking (:func:`sparsejax.dynamic.init_gates_from_filters`), i.e. at
    the channels static pruning keeps; ``"random"``: the layers' own initialisation."""
    dynamic.load_dense_params(model, dense_params)
    if cfg.gate_init == "filters":
        dynamic.init_gates_from_filters(model, cfg.gate_spread)


def filter_mask(params, costs, ks: dict[str, int]):
    """L1-norm filter pruning of the gated layers to ``ks`` channels; biases follow kernels."""
    channels = {c.name: c.out_channels for c in costs}
    dist = {f"{n}/kernel": 1.0 - k / channels[n] for n, k in ks.items()}
    prunable = [f"^{n}/kernel$" for n in ks]
    mask = sj.prune(sj.scores.magnitude(params), 0.0, prunable=prunable,
                    structure=sj.Neurons(), distribution=dist, reduction="l1")
    kernels = dict(named_leaves(mask))

    def bias_mask(path, leaf):
        name = path_str(path)
        layer = name.rsplit("/", 1)[0]
        if name.endswith("/bias") and layer in ks:
            return kernels[f"{layer}/kernel"].reshape(-1)
        return leaf

    mask = jax.tree_util.tree_map_with_path(bias_mask, mask)
    for n, k in ks.items():  # exactly k filters kept per layer
        assert int(np.sum(np.asarray(kernels[f"{n}/kernel"]))) == k, (n, k)
    return mask


def interp_accuracy(curve: list[tuple[float, float]], flops: float) -> float | None:
    """Accuracy of a (flops, accuracy) curve at ``flops`` (linear interpolation), or None."""
    pts = sorted(curve)
    xs = [p[0] for p in pts]
    if not pts or flops < xs[0] or flops > xs[-1]:
        return None
    return float(np.interp(flops, xs, [p[1] for p in pts]))


def main(argv: list[str] | None = None) -> dict:
    cfg = resolve(parse_config(Config, argv))
    t_start = time.perf_counter()
    out = prepare_output_dir(cfg.out, config_to_dict(cfg))
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir)
    x_tr, y_tr, x_te, y_te = data.x_train, data.y_train, data.x_test, data.y_test
    print(f"{data.name}: {len(x_tr)} train / {len(x_te)} test, input {x_tr.shape[1:]}")
    make_dense, make_gated = build(cfg.dataset, tuple(data.input_shape), data.num_classes)
    probe = make_gated(jax.random.key(0), "fbs")
    costs, layers = probe.costs, probe.gated_layers
    dense_macs = dynamic.dense_flops(costs)
    model_name = type(probe).__name__.removeprefix("Gated")
    print(f"{model_name}: {dense_macs:,} dense MACs per example; gated layers {layers}")

    rows: list[dict] = []
    adaptive_rows: list[dict] = []
    dense_rows: list[dict] = []
    for seed in range(cfg.seeds):
        k_model, k_train, k_gates = jax.random.split(jax.random.key(seed), 3)
        # ------------------------------------------------------------ dense
        state = create_train_state(make_dense(k_model), optax.adam(cfg.lr), key=k_train)
        state, _ = train(state, x_tr, y_tr, batch_size=cfg.batch_size, seed=seed,
                         steps=cfg.dense_steps, progress=cfg.progress)
        dense_acc = evaluate(state, x_te, y_te)["accuracy"]
        dense_rows.append({"seed": seed, "accuracy": dense_acc})
        print(f"seed {seed}: dense accuracy {dense_acc:.4f}")
        dense_params = state.params

        # ------------------------------------------------------------ static L1 filter pruning
        ft_inner = optax.adam(cfg.finetune_lr)
        static_tx = sj.keep_sparse(ft_inner)  # all-keep; each density's mask set below
        for d in cfg.densities:
            ks = dict(zip(layers, probe.active_k(d), strict=True))
            mask = filter_mask(dense_params, costs, ks)
            # One optimizer object for every density (the mask lives in the optimizer state),
            # so the fine-tuning step compiles once.
            st = create_train_state(nnx.merge(state.graphdef, dense_params, state.rest),
                                    static_tx, key=k_train).with_mask(mask)
            before = evaluate(st, x_te, y_te)["accuracy"]
            st, _ = train(st, x_tr, y_tr, batch_size=cfg.batch_size, seed=seed,
                          steps=cfg.finetune_steps, progress=cfg.progress)
            acc = evaluate(st, x_te, y_te)["accuracy"]
            macs = float(dynamic.effective_flops(costs, ks, include_predictor=False))
            rows.append({"method": "static_l1", "density": d, "seed": seed, "accuracy": acc,
                         "accuracy_before_ft": before, "macs": macs,
                         "relative_macs": macs / dense_macs,
                         **{f"active_{n}": ks[n] / c.out_channels
                            for n, c in zip(layers, costs, strict=False)}})
            print(f"  static_l1 d={d}: {acc:.4f} (before FT {before:.4f}), "
                  f"{macs / dense_macs:.1%} MACs")

        # ------------------------------------------------------------ gated models
        for gate in cfg.gates:
            model = make_gated(k_gates, gate)
            load_gated(model, dense_params, cfg)
            gst = create_train_state(model, optax.adam(cfg.finetune_lr), key=k_train)
            lam = cfg.fbs_l1 if gate == "fbs" else cfg.l0_penalty
            step = make_train_step(forward=dynamic.sampled_density_forward(
                min_density=cfg.min_density, penalty=lam, sandwich=cfg.sandwich))
            gst, _ = train(gst, x_tr, y_tr, batch_size=cfg.batch_size, seed=seed,
                           steps=cfg.finetune_steps, train_step=step, progress=cfg.progress)
            model = gst.model()
            eval_ds = sorted({*cfg.densities, *cfg.adaptive_densities, 1.0})
            preds = {d: dynamic.gated_predictions(model, x_te, d) for d in eval_ds}

            def gated_row(name, d, p, seed=seed):
                acc = float(np.mean(np.argmax(p.logits, -1) == y_te))
                macs = float(np.mean(p.flops))
                row = {"method": name, "density": d, "seed": seed, "accuracy": acc,
                       "accuracy_before_ft": float("nan"), "macs": macs,
                       "relative_macs": macs / dense_macs}
                for n, c in zip(layers, costs, strict=False):
                    row[f"active_{n}"] = float(np.mean(p.counts[n])) / c.out_channels
                rows.append(row)
                print(f"  {name} d={d}: {acc:.4f}, {macs / dense_macs:.1%} MACs, active "
                      + ", ".join(f"{n} {row[f'active_{n}']:.2f}" for n in layers))

            for d in eval_ds:
                gated_row(gate, d, preds[d])
            # One gated model per density, trained at that density only (as Gao et al. 2019
            # train FBS), with the same step budget as each static model.
            for d in cfg.densities if cfg.fixed else ():
                fixed = make_gated(k_gates, gate)
                load_gated(fixed, dense_params, cfg)
                fst = create_train_state(fixed, optax.adam(cfg.finetune_lr), key=k_train)
                fstep = make_train_step(forward=dynamic.sampled_density_forward(
                    min_density=d, max_density=d, penalty=lam, sandwich=False))
                fst, _ = train(fst, x_tr, y_tr, batch_size=cfg.batch_size, seed=seed,
                               steps=cfg.finetune_steps, train_step=fstep,
                               progress=cfg.progress)
                gated_row(f"{gate}_fixed", d, dynamic.gated_predictions(fst.model(), x_te, d))
            if gate == "fbs":
                ladder = sorted(cfg.adaptive_densities)
                lg = jnp.stack([preds[d].logits for d in ladder])
                fl = jnp.stack([preds[d].flops for d in ladder])
                for t in cfg.thresholds:
                    res = dynamic.adaptive_select(lg, fl, t)
                    acc = float(jnp.mean(jnp.argmax(res.logits, -1) == y_te))
                    macs = float(jnp.mean(res.flops))
                    adaptive_rows.append({
                        "method": "fbs_adaptive", "threshold": t, "seed": seed,
                        "accuracy": acc, "macs": macs, "relative_macs": macs / dense_macs,
                        "level_fractions": np.bincount(np.asarray(res.level),
                                                       minlength=len(ladder)) / len(y_te)})
                print("  fbs_adaptive: " + ", ".join(
                    f"t={r['threshold']}: {r['accuracy']:.4f} @ {r['relative_macs']:.1%}"
                    for r in adaptive_rows if r["seed"] == seed))

    # ---------------------------------------------------------------- report
    agg = aggregate(rows, ("method", "density"), ("accuracy", "relative_macs", "macs"))
    agg_ad = aggregate(adaptive_rows, ("method", "threshold"), ("accuracy", "relative_macs"))
    dense_acc = np.asarray([r["accuracy"] for r in dense_rows])
    table = markdown_table(
        [{"method": "dense", "density": 1.0, "accuracy_mean": dense_acc.mean(),
          "accuracy_std": dense_acc.std(), "relative_macs_mean": 1.0,
          "macs_mean": float(dense_macs)}, *agg],
        [("method", "{method}"), ("density", "{density:g}"),
         ("MACs / example", "{macs_mean:,.0f}"), ("rel. MACs", "{relative_macs_mean:.1%}"),
         ("test accuracy", "{accuracy_mean:.2%} ± {accuracy_std:.2%}")],
    )
    table_ad = markdown_table(
        agg_ad,
        [("threshold", "{threshold:g}"), ("rel. MACs (cascade)", "{relative_macs_mean:.1%}"),
         ("test accuracy", "{accuracy_mean:.2%} ± {accuracy_std:.2%}")],
    ) if agg_ad else ""
    methods = ("static_l1", *cfg.gates, *(f"{g}_fixed" for g in cfg.gates if cfg.fixed))
    curves = {m: [(a["relative_macs_mean"], a["accuracy_mean"]) for a in agg
                  if a["method"] == m] for m in methods}
    if agg_ad:
        curves["fbs_adaptive"] = [(a["relative_macs_mean"], a["accuracy_mean"]) for a in agg_ad]
    verdict = []
    for a in agg:
        if a["method"] != "static_l1":
            continue
        x_s, acc_s = a["relative_macs_mean"], a["accuracy_mean"]
        for g in curves:
            if g == "static_l1":
                continue
            acc_g = interp_accuracy(curves[g], x_s)
            head = f"- static d={a['density']:g} ({x_s:.1%} MACs, {acc_s:.2%}) vs {g}: "
            if acc_g is None:
                lo_x, lo_acc = min(curves[g])
                if x_s < lo_x and lo_acc <= acc_s:
                    verdict.append(head + f"static better at lower compute ({g}'s cheapest "
                                   f"point: {lo_acc:.2%} at {lo_x:.1%} MACs)")
                else:
                    verdict.append(head + f"not comparable (outside {g}'s MAC range)")
                continue
            diff = acc_g - acc_s
            verdict.append(head + f"{acc_g:.2%} at equal MACs: "
                           f"{'gating better' if diff > 0 else 'static better'} by {abs(diff):.2%}")
    elapsed = time.perf_counter() - t_start
    env = environment()
    header = (
        f"# Dynamic gating vs static filter pruning: {model_name} on {data.name}\n\n"
        f"{cfg.seeds} seed(s), mean ± std; dense {cfg.dense_steps} steps, then "
        f"{cfg.finetune_steps} steps for every static density and for each gated model "
        f"(one gated model serves all densities; trained with d ~ U({cfg.min_density}, 1) "
        f"per example{', sandwich rule' if cfg.sandwich else ''}"
        f"{'; *_fixed: one gated model per density, trained at that density only' if cfg.fixed else ''}"
        f"; FBS λ={cfg.fbs_l1}, L0 λ={cfg.l0_penalty}; gate predictors start "
        + ("at the L1 filter ranking (spread " + f"{cfg.gate_spread})"
           if cfg.gate_init == "filters" else "at random")
        + f"); batch {cfg.batch_size}. "
        f"MACs per example include the gate predictors. Wall time {elapsed:.0f} s on "
        f"{env['device']} (jax {env['jax']}).\n"
        f"Command: `python experiments/{env['command']}`\n\n"
    )
    body = (header + table + "\n\n## Adaptive policy (FBS model, ladder "
            f"{tuple(sorted(cfg.adaptive_densities))}, escalate while max softmax < threshold)\n\n"
            + table_ad + "\n\n## Equal-compute comparison (linear interpolation on the gated "
            "curve)\n\n" + "\n".join(verdict) + "\n")
    (out / "results.md").write_text(body)
    plot(out / "tradeoff.png", agg, agg_ad, methods, float(dense_acc.mean()),
         f"{model_name} on {data.name}: accuracy vs effective MACs")
    results = {"dataset": data.name, "model": model_name, "dense_macs": dense_macs,
               "dense": dense_rows, "rows": rows, "adaptive": adaptive_rows,
               "aggregate": agg, "aggregate_adaptive": agg_ad, "verdict": verdict,
               "elapsed_s": elapsed}
    write_json(out / "results.json", results)
    print(body)
    print(f"wrote {out}/results.json, results.md, tradeoff.png")
    return results


def plot(path, agg, agg_ad, methods, dense_acc, title):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for m in methods:
        pts = sorted((a["relative_macs_mean"], a["accuracy_mean"], a["accuracy_std"])
                     for a in agg if a["method"] == m)
        if pts:
            x, y, s = zip(*pts, strict=True)
            ax.errorbar(x, y, yerr=s, marker="o", ms=4, capsize=3, label=m)
    if agg_ad:
        pts = sorted((a["relative_macs_mean"], a["accuracy_mean"], a["accuracy_std"])
                     for a in agg_ad)
        x, y, s = zip(*pts, strict=True)
        ax.errorbar(x, y, yerr=s, marker="s", ms=4, capsize=3, ls="--",
                    label="fbs_adaptive (cascade)")
    ax.axhline(dense_acc, color="k", ls=":", lw=1, label="dense")
    ax.set_xlabel("effective MACs per example (fraction of dense)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1:])
