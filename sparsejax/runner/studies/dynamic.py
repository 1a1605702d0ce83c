"""``sparsejax dynamic``: dynamic channel gating vs static filter pruning at equal compute.

One dense model is trained (the MNIST-1D CNN for 1-D signals, LeNet-5 for images), then
three ways of cutting its compute get the same training budget (``finetune_steps`` from the
dense weights): ``static_l1`` (filters / units pruned by L1 norm, Li et al. 2017, fine-tuned
with ``sparsejax.keep_sparse``, one run per density), ``fbs`` (feature boosting and
suppression, Gao et al. 2019: saliency + k-WTA, L1 on the saliency) and ``hard_concrete``
(input-dependent hard-concrete L0 gates, Louizos et al. 2018), each gated model serving
every density; ``fbs_adaptive`` runs the FBS model under a confidence cascade (Bolukbasi et
al. 2017). Gated models train with a random density per example, ``d ~ U(min_density, 1)``,
with the sandwich rule (Yu & Huang 2019); ``--fixed`` adds one gated model per density.
Compute is effective MACs per example (:func:`sparsejax.dynamic.effective_flops`), accuracy
is on the test split.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Literal

import numpy as np

from sparsejax.data import dataset_names
from sparsejax.runner._config import ConfigError, check_fraction, check_positive
from sparsejax.runner._plots import tradeoff_curve
from sparsejax.runner._study import RunContext, Study, StudyConfig, check_data, run_study
from sparsejax.runner._tables import aggregate, markdown_table
from sparsejax.runner.studies._common import check_lr, device_line, load_data, spread_label

__all__ = ["STUDY", "Config", "figures", "main"]

GATES = ("fbs", "hard_concrete")


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Dynamic gating (FBS, hard-concrete L0) vs static L1 filter pruning at equal compute."""

    dataset: str = "mnist1d"
    """Data set: 1-D signals train the MNIST-1D CNN, images LeNet-5."""
    data_dir: str | None = None
    """Folder of a data set read from files (for mnist10k it replaces the shipped copy)."""
    seeds: int = 2
    """Training seeds (one after the other)."""
    densities: tuple[float, ...] = (0.25, 0.5, 0.75)
    """Fractions of the channels kept (static) or active (gated), each in (0, 1]."""
    gates: tuple[Literal["fbs", "hard_concrete"], ...] = GATES
    """Gated models to train."""
    dense_steps: int | None = None
    """Dense training steps (None: the data set's, 4000 mnist1d, 1500 mnist10k, 600 digits)."""
    finetune_steps: int | None = None
    """Steps of every static and gated model after the dense phase (None: the data set's)."""
    batch_size: int | None = None
    """Mini-batch size (None: 100 on mnist1d, 64 otherwise)."""
    lr: float | None = None
    """Adam learning rate of dense training (None: the data set's)."""
    finetune_lr: float | None = None
    """Adam learning rate after the dense phase (None: the data set's)."""
    min_density: float = 0.2
    """Lowest density sampled when training the gated models, in (0, 1]."""
    sandwich: bool = True
    """Pin a quarter of each batch to --min-density and a quarter to 1 (Yu & Huang 2019)."""
    fixed: bool = True
    """Also train one gated model per density, at that density only."""
    fbs_l1: float = 1e-3
    """L1 weight on the FBS saliencies."""
    l0_penalty: float = 1e-2
    """Weight of the expected-L0 penalty of the hard-concrete gates."""
    gate_init: Literal["random", "filters"] = "random"
    """Gate predictors start from their layers' initialisation, or at the L1 filter ranking."""
    gate_spread: float = 0.1
    """Spread of the predictor biases under --gate-init filters."""
    adaptive_densities: tuple[float, ...] = (0.25, 0.5, 1.0)
    """Density ladder of the FBS confidence cascade."""
    thresholds: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
    """Cascade thresholds: escalate while the max softmax is below one, each in [0, 1]."""


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


def presets(cfg: Config) -> dict[str, Any]:
    """The data set's recipe (a registered one: that of mnist1d for 1-D signals, of
    mnist10k for images of 16 pixels or more, else of digits) for the fields left at None."""
    recipe = PRESETS.get(cfg.dataset)
    if recipe is None:
        shape = load_data(cfg.dataset, cfg.data_dir).input_shape
        recipe = PRESETS["mnist1d" if len(shape) == 2 else
                         "mnist10k" if min(shape[:2]) >= 16 else "digits"]
    return {k: v for k, v in recipe.items() if getattr(cfg, k) is None}


def check(cfg: Config) -> None:
    """Every value, before any training."""
    check_data(cfg.dataset, cfg.data_dir)
    check_positive(cfg, "seeds", "dense_steps", "finetune_steps", "batch_size")
    check_lr(cfg, "lr", "finetune_lr")
    for name in ("densities", "adaptive_densities"):
        if not getattr(cfg, name):
            raise ConfigError(name, getattr(cfg, name), "give at least one density")
        for d in getattr(cfg, name):
            if not 0 < d <= 1:
                raise ConfigError(name, getattr(cfg, name), f"{d:g} is outside (0, 1]")
    if not 0 < cfg.min_density <= 1:
        raise ConfigError("min_density", cfg.min_density, "must be in (0, 1]")
    check_fraction("thresholds", cfg.thresholds)
    for name in ("fbs_l1", "l0_penalty", "gate_spread"):
        if getattr(cfg, name) < 0:
            raise ConfigError(name, getattr(cfg, name), "must be >= 0")
    shape = load_data(cfg.dataset, cfg.data_dir).input_shape
    if len(shape) not in (2, 3):
        raise ConfigError("dataset", cfg.dataset, f"inputs of shape {shape}: the study needs "
                          "images (H, W, C) or 1-D signals (L, C)")


def build(dataset: str, input_shape: tuple[int, ...], num_classes: int):
    """(dense zoo constructor, gated constructor): the MNIST-1D CNN for 1-D signals, LeNet-5
    for images."""
    from flax import nnx

    from sparsejax import dynamic
    from sparsejax.models import MNIST1DCNN, LeNet5

    if len(input_shape) == 2:
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
    from sparsejax import dynamic

    dynamic.load_dense_params(model, dense_params)
    if cfg.gate_init == "filters":
        dynamic.init_gates_from_filters(model, cfg.gate_spread)


def filter_mask(params, costs, ks: dict[str, int]):
    """L1-norm filter pruning of the gated layers to ``ks`` channels; biases follow kernels."""
    import jax

    import sparsejax as sj
    from sparsejax.tree import named_leaves, path_str

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


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Train the dense model, the static and gated models, and report (module docstring)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import sparsejax as sj
    from sparsejax import dynamic
    from sparsejax.train import create_train_state, evaluate, make_train_step, train

    t_start = time.perf_counter()
    data = load_data(cfg.dataset, cfg.data_dir)
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
                         steps=cfg.dense_steps, progress=cfg.progress,
                         writer=ctx.writer.scoped(f"seed{seed}/dense"))
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
                          steps=cfg.finetune_steps, progress=cfg.progress,
                          writer=ctx.writer.scoped(f"seed{seed}/static_l1_{d:g}"))
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
                           steps=cfg.finetune_steps, train_step=step, progress=cfg.progress,
                           writer=ctx.writer.scoped(f"seed{seed}/{gate}"))
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
                               progress=cfg.progress,
                               writer=ctx.writer.scoped(f"seed{seed}/{gate}_fixed_{d:g}"))
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
        f"{device_line()}.\nCommand: `{ctx.command}`\n\n"
    )
    body = (header + table + "\n\n## Adaptive policy (FBS model, ladder "
            f"{tuple(sorted(cfg.adaptive_densities))}, escalate while max softmax < threshold)\n\n"
            + table_ad + "\n\n## Equal-compute comparison (linear interpolation on the gated "
            "curve)\n\n" + "\n".join(verdict) + "\n")
    results = {"dataset": data.name, "model": model_name, "dense_macs": dense_macs,
               "dense": dense_rows, "rows": rows, "adaptive": adaptive_rows,
               "aggregate": agg, "aggregate_adaptive": agg_ad, "verdict": verdict,
               "methods": list(methods), "elapsed_s": elapsed}
    ctx.save_figures(figures(results, dataclasses.asdict(cfg)))
    ctx.write_text("results.md", body)
    ctx.write_json("results.json", results)
    print(body)
    print(f"wrote {ctx.out}: results.json, results.md, tradeoff.png/.pdf")
    return results


def figures(results: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Test accuracy vs effective MACs: static, gated (shared and per density), cascade."""
    agg, agg_ad = results["aggregate"], results.get("aggregate_adaptive") or []
    methods = results.get("methods") or list(dict.fromkeys(a["method"] for a in agg))
    curves = {}
    for m in methods:
        pts = sorted((a["relative_macs_mean"], a["accuracy_mean"], a["accuracy_std"])
                     for a in agg if a["method"] == m)
        if pts:
            curves[m] = tuple(list(v) for v in zip(*pts))
    if agg_ad:
        pts = sorted((a["relative_macs_mean"], a["accuracy_mean"], a["accuracy_std"])
                     for a in agg_ad)
        curves["fbs_adaptive (cascade)"] = tuple(list(v) for v in zip(*pts))
    seeds = config.get("seeds") or len(results["dense"])
    dense = float(np.mean([r["accuracy"] for r in results["dense"]]))
    return {"tradeoff": tradeoff_curve(
        curves, logx=False, xlabel="effective MACs per example (fraction of dense)",
        baseline=dense, baseline_label=f"dense ({dense:.2%})",
        error_label=spread_label(seeds),
        title=f"{results['model']} on {results['dataset']}: accuracy vs effective MACs")}


STUDY = Study(
    name="dynamic", config=Config, run=run, check=check, figures=figures, smoke=SMOKE,
    presets=presets,
    summary="dynamic channel gating vs static filter pruning at equal compute",
    choices=lambda: {"dataset": dataset_names()},
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``sparsejax dynamic [flags]`` (``argv`` default: ``sys.argv[1:]``)."""
    return run_study(STUDY, argv)
