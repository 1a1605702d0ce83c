"""``sparsejax comparison``: a ShrinkBench-style comparison of pruning methods on real data.

LeNet-300-100 is trained densely (``--seeds`` seeds, vmapped), every trained model is pruned
to each compression ratio by every method (:func:`sparsejax.runner.method_names` of kind
``unstructured``: the built-in ones and any registered with ``--plugin``), fine-tuned with
the pruned weights pinned at zero (``sparsejax.keep_sparse``), and test accuracy, macro
precision / recall / F1, measured compression and theoretical speedup (ShrinkBench
definitions, Blalock et al. 2020) are reported as mean ± std over seeds. Gradual methods
prune during the fine-tuning budget instead (polynomial schedule, Zhu & Gupta 2017), so
every method gets the same training steps after the dense phase. Compression counts all
parameters, biases included (ShrinkBench). All one-shot fine-tuning runs train in one
vmapped program.

This module is the pattern every study follows: ``Config`` (a docstring under each field),
``check``, ``run``, ``figures``, ``STUDY`` and ``main``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from sparsejax.data import dataset_names
from sparsejax.runner._config import ConfigError, check_positive
from sparsejax.runner._methods import ScoreInputs, get_method, method_names
from sparsejax.runner._plots import layer_sparsity_bars, tradeoff_curve
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

__all__ = ["STUDY", "Config", "figures", "main", "weight_sparsity_for"]

BUILTIN = ("global_magnitude", "layer_magnitude", "global_gradient", "layer_gradient",
           "global_taylor", "global_obd", "random", "gradual_magnitude")


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Compare pruning methods on LeNet-300-100: dense training, pruning to each compression
    ratio, fine-tuning, accuracy / F1 / speedup as mean ± std over seeds."""

    dataset: str = "digits"
    """Data set (sparsejax datasets lists them; --plugin modules may add more)."""
    data_dir: str | None = None
    """Folder of a data set read from files (mnist, fashion_mnist, cifar10; for mnist10k
    it replaces the copy shipped with sparsejax)."""
    seeds: int = 3
    """Training seeds, trained together (vmapped)."""
    compressions: tuple[float, ...] = (2, 4, 8, 16, 32, 64)
    """Target compression ratios, all parameters / nonzero parameters (each >= 1)."""
    methods: tuple[str, ...] = BUILTIN
    """Pruning methods to compare (unstructured; sparsejax methods lists them)."""
    train_epochs: int = 40
    """Epochs of dense training."""
    finetune_epochs: int = 15
    """Epochs of fine-tuning after pruning (the gradual methods prune during them)."""
    batch_size: int = 64
    """Mini-batch size of training and fine-tuning."""
    lr: float = 1e-3
    """Adam learning rate of dense training."""
    finetune_lr: float = 3e-4
    """Adam learning rate of fine-tuning."""
    score_examples: int = 512
    """Training examples in the batch the scores see (gradients, Hessian)."""
    hutchinson_samples: int = 64
    """Hutchinson probes of the Hessian diagonal (global_obd)."""
    gradual_every: int = 10
    """Steps between mask updates of the gradual methods."""
    bars_at: float = 16
    """Compression of the per-layer sparsity figure (the nearest one run is used)."""


SMOKE = {"seeds": 2, "compressions": (2.0, 8.0), "train_epochs": 2, "finetune_epochs": 1,
         "score_examples": 128, "hutchinson_samples": 4, "gradual_every": 2}


def weight_sparsity_for(compression: float, total: int, prunable: int) -> float:
    """Sparsity of the prunable weights that makes ``total / nonzero == compression``.

    Raises:
      ValueError: the compression needs more than all prunable weights.
    """
    s = (total - total / compression) / prunable
    if not 0.0 <= s <= 1.0:
        raise ValueError(
            f"compression {compression:g} is unreachable: it needs weight sparsity {s:.4f} "
            f"({total} params, {prunable} prunable)"
        )
    return s


def _lenet_counts(in_features: int, classes: int) -> tuple[int, int]:
    """(all parameters, kernel weights) of LeNet-300-100."""
    kernels = in_features * 300 + 300 * 100 + 100 * classes
    return kernels + 300 + 100 + classes, kernels


def check(cfg: Config) -> None:
    """Every value, before any training (the data set is loaded to check the compressions)."""
    check_data(cfg.dataset, cfg.data_dir)
    check_positive(cfg, "seeds", "train_epochs", "finetune_epochs", "batch_size",
                   "score_examples", "hutchinson_samples", "gradual_every")
    check_lr(cfg, "lr", "finetune_lr")
    if not cfg.compressions:
        raise ConfigError("compressions", cfg.compressions, "give at least one ratio")
    check_positive(cfg, "compressions", "bars_at", minimum=1)
    if not cfg.methods:
        raise ConfigError("methods", cfg.methods, "give at least one method")
    data = load_data(cfg.dataset, cfg.data_dir)
    total, prunable = _lenet_counts(int(np.prod(data.input_shape)), data.num_classes)
    for c in cfg.compressions:
        try:
            weight_sparsity_for(c, total, prunable)
        except ValueError as err:
            raise ConfigError("compressions", cfg.compressions,
                              f"{err}; at most {total / (total - prunable):.1f}") from None
    if cfg.batch_size > data.num_train:
        raise ConfigError("batch_size", cfg.batch_size,
                          f"exceeds the {data.num_train} training examples of {cfg.dataset}")


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Train, prune, fine-tune and report (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import sparsejax as sj
    from sparsejax import metrics
    from sparsejax.models import LeNet300100
    from sparsejax.train import TrainState, create_train_states, evaluate, train

    t_start = time.perf_counter()
    data = load_data(cfg.dataset, cfg.data_dir)
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
    dense, _ = train(dense, x_tr, y_tr, vmap_seeds=True, batch_size=cfg.batch_size,
                     seed=data_seeds, epochs=cfg.train_epochs, progress=cfg.progress,
                     writer=ctx.writer.scoped("dense"))
    dense_eval = evaluate(dense, x_te, y_te, vmap_seeds=True)
    graphdef = dense.graphdef
    params0, rest0 = unstack(dense.params, 0), unstack(dense.rest, 0)
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
    methods = [get_method(m) for m in cfg.methods]
    one_shot = [m for m in methods if m.schedule == "one_shot"]
    gradual = [m for m in methods if m.schedule == "gradual"]
    bars_at = min(cfg.compressions, key=lambda c: (abs(c - cfg.bars_at), c))

    # ---------------------------------------------------------------- one-shot masks
    configs, ft_params, ft_masks = [], [], []
    for s in range(cfg.seeds):
        p = unstack(dense.params, s)
        inputs = ScoreInputs(p, grads=grad_fn(p, score_batch), loss_fn=loss_fn,
                             batch=score_batch, seed=s,
                             options={"hutchinson_samples": cfg.hutchinson_samples})
        for m in one_shot:
            for c in cfg.compressions:
                mask = m.mask(inputs, weight_sparsity_for(c, total, n_prunable))
                # full-shape leaves: every run's mask stacks into one vmapped program
                mask = jax.tree.map(lambda k, w: jnp.broadcast_to(k, w.shape), mask, p)
                configs.append({"method": m.name, "compression": float(c), "seed": s})
                ft_params.append(sj.apply_mask(p, mask))
                ft_masks.append(mask)

    rows: list[dict[str, Any]] = []
    bars: dict[str, list[float]] = {}
    layer_names = [r.path for r in sj.summary(params0) if len(r.shape) >= 2]
    quality = ("accuracy", "macro_precision", "macro_recall", "macro_f1")

    def record(cfg_row, p, mask, before, after):
        report = metrics.flops(forward, p, x_te[:1], mask=mask)
        rows.append({**cfg_row, **{k: after[k] for k in quality}, "accuracy_before_ft": before,
                     "compression_measured": metrics.compression_ratio(p, mask),
                     "theoretical_speedup": report.theoretical_speedup})
        if cfg_row["seed"] == 0 and cfg_row["compression"] == float(bars_at):
            stats = {r.path: r.sparsity for r in sj.summary(p, mask)}
            bars[cfg_row["method"]] = [float(stats[n]) for n in layer_names]

    if configs:
        n = len(configs)
        # One optimizer for all runs (one compilation); each run's mask lives in its opt state.
        ft = TrainState.create(
            graphdef=graphdef, params=stack(ft_params), rest=stack([rest0] * n),
            tx=sj.keep_sparse(optax.adam(cfg.finetune_lr)),
            key=jax.random.split(jax.random.key(1), n),
        ).with_mask(stack(ft_masks))
        before = evaluate(ft, x_te, y_te, vmap_seeds=True)["accuracy"]
        print(f"fine-tuning {n} pruned models in one vmapped program ...")
        ft, _ = train(ft, x_tr, y_tr, vmap_seeds=True, batch_size=cfg.batch_size,
                      seed=[c["seed"] for c in configs], epochs=cfg.finetune_epochs,
                      progress=cfg.progress, writer=ctx.writer.scoped("finetune"))
        after = evaluate(ft, x_te, y_te, vmap_seeds=True)
        for i, c in enumerate(configs):
            record(c, unstack(ft.params, i), ft_masks[i], before[i],
                   {k: after[k][i] for k in quality})

    # ---------------------------------------------------------------- gradual methods
    steps_per_epoch = len(x_tr) // cfg.batch_size
    total_steps = cfg.finetune_epochs * steps_per_epoch
    end = max(cfg.gradual_every, (2 * total_steps // 3) // cfg.gradual_every * cfg.gradual_every)
    for m in gradual:
        for c in cfg.compressions:
            sparsity = weight_sparsity_for(c, total, n_prunable)
            tx = sj.pruning(
                optax.adam(cfg.finetune_lr),
                score=lambda p, g, m=m: m.score(ScoreInputs(p, grads=g)),
                schedule=sj.schedules.polynomial(0.0, sparsity, begin=0, end=end,
                                                 every=cfg.gradual_every),
                scope=m.scope, normalize=m.normalize,
            )
            st = TrainState.create(graphdef=graphdef, params=dense.params, rest=dense.rest,
                                   tx=tx, key=jax.random.split(jax.random.key(2), cfg.seeds))
            st, _ = train(st, x_tr, y_tr, vmap_seeds=True, batch_size=cfg.batch_size,
                          seed=data_seeds, epochs=cfg.finetune_epochs, progress=cfg.progress,
                          writer=ctx.writer.scoped(f"{m.name}_{c:g}x"))
            res = evaluate(st, x_te, y_te, vmap_seeds=True)
            for s in range(cfg.seeds):
                mask = sj.current_mask(unstack(st.opt_state, s))
                record({"method": m.name, "compression": float(c), "seed": s},
                       unstack(st.params, s), mask, float("nan"),
                       {k: res[k][s] for k in quality})

    # ---------------------------------------------------------------- report
    agg = aggregate(rows, ("method", "compression"),
                    ("accuracy", "macro_f1", "compression_measured", "theoretical_speedup",
                     "accuracy_before_ft"))
    for a in agg:
        before = a["accuracy_before_ft_mean"]
        a["before_ft"] = "—" if np.isnan(before) else f"{before:.2%}"
    dense_acc, dense_f1 = np.asarray(dense_eval["accuracy"]), np.asarray(dense_eval["macro_f1"])
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
              f"{device_line()}.\nCommand: `{ctx.command}`\n\n")
    results = {"dataset": data.name, "dense": dense_eval, "rows": rows, "aggregate": agg,
               "layer_sparsity": {"compression": float(bars_at), "layers": layer_names,
                                  "methods": bars},
               "elapsed_s": elapsed}
    ctx.save_figures(figures(results, dataclasses.asdict(cfg)))
    ctx.write_text("results.md", header + table + "\n")
    ctx.write_json("results.json", results)
    print(header + table)
    print(f"\nwrote {ctx.out}: results.json, results.md, tradeoff.png/.pdf"
          + (", layer_sparsity.png/.pdf" if bars else ""))
    return results


def figures(results: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The accuracy-vs-compression curves and the per-layer sparsity bars of a run."""
    agg = results["aggregate"]
    seeds = config.get("seeds") or max(a["n"] for a in agg)
    methods = list(dict.fromkeys(a["method"] for a in agg))
    curves = {}
    for m in methods:
        pts = sorted((a["compression"], a["accuracy_mean"], a["accuracy_std"])
                     for a in agg if a["method"] == m)
        curves[m] = tuple(list(v) for v in zip(*pts))
    dense = float(np.mean(results["dense"]["accuracy"]))
    out = {"tradeoff": tradeoff_curve(
        curves, baseline=dense, baseline_label=f"dense ({dense:.2%})",
        error_label=spread_label(seeds),
        title=f"LeNet-300-100 on {results['dataset']}: test accuracy after fine-tuning")}
    bars = results.get("layer_sparsity")
    if bars and bars["methods"]:
        out["layer_sparsity"] = layer_sparsity_bars(
            bars["layers"], bars["methods"],
            title=f"per-layer sparsity at {bars['compression']:g}× compression (seed 0)")
    return out


STUDY = Study(
    name="comparison", config=Config, run=run, check=check, figures=figures, smoke=SMOKE,
    summary="ShrinkBench-style comparison of pruning methods on LeNet-300-100",
    choices=lambda: {"dataset": dataset_names(), "methods": method_names("unstructured")},
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``sparsejax comparison [flags]`` (``argv`` default: ``sys.argv[1:]``)."""
    return run_study(STUDY, argv)
