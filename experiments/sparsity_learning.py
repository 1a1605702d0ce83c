"""Sparsity learning: sparse variational dropout and group lasso, against a dense reference.

Three studies, all on a train / validation split carved from the training set
(the last ``val_fraction`` of the shuffled-by-the-loader training examples);
the test split is only used for the reported numbers, never for a choice:

1. **Dense reference** per (data set, model): Adam, ``dense_steps`` steps, batch 64.
2. **Sparse VD** (Molchanov et al. 2017) on LeNet-300-100 and LeNet-5 (MNIST-10k):
   the VD model's θ starts from the dense reference (``vd_init="dense"``) or
   from scratch, Adam, KL weight warmed up linearly over ``vd_warmup`` steps,
   log α ≥ 3 removed. Reported: ShrinkBench compression ratio (all parameters /
   nonzeros of the converted plain model) and test error, compared with the
   dense model (targets: ≥ 30× / ≥ 50× within 1 pp).
3. **Group lasso** (proximal, Neurons groups = incoming weights + bias of the
   300 + 100 hidden units) on LeNet-300-100, digits and MNIST-10k: a λ sweep
   gives the tradeoff curve (test accuracy vs fraction of hidden neurons
   removed); the *selected* λ is the largest whose validation accuracy is
   within 1 pp of the dense model's validation accuracy (target: ≥ 50 % of the
   hidden neurons removed with ≤ 1 pp test-accuracy loss).

Two structured studies (off by default; ``--ssl true`` / ``--structured-vd true``):

4. **Structured sparsity learning on LeNet-5** (Wen et al. 2016, in the layout of their
   Table 1): proximal group lasso on the filters (``Neurons``, with bias) of ``conv1``,
   ``conv2`` and ``fc1`` and on the input channels (``InputChannels``) of ``conv2``,
   λ sweep; a ``conv1`` filter is removed when its filter *or* the matching ``conv2``
   input channel is exactly zero. The model is then physically shrunk
   (:func:`sparsejax.shrink.shrink`, logits checked against the trained model) and
   the table gives filters / channels kept per layer, each layer's FLOPs relative to the
   dense LeNet-5 and the test error.
5. **Structured sparse VD** (one log α per unit, ``VDLeNet300100(structured=True)`` /
   ``VDLeNet5(structured=True)``): units with log α ≥ 3 removed, the converted model
   shrunk (logits checked), units kept per layer, parameters and FLOPs vs dense.

Usage::

    python experiments/sparsity_learning.py --out results/sparsity_learning
    python experiments/sparsity_learning.py --vd false --group-lasso false --ssl true \
        --structured-vd true --out results/sparsity_learning/structured
    python experiments/sparsity_learning.py --smoke true --out /tmp/sl
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from sparsejax import apply_mask, keep_sparse
from sparsejax.data import load_dataset
from sparsejax.metrics import compression_ratio, flops, num_nonzero, num_params
from sparsejax.models import create_model
from sparsejax.regularizers import group_norms, group_stats, groups_to_mask, proximal_group_lasso
from sparsejax.runner import (
    config_to_dict,
    markdown_table,
    parse_config,
    prepare_output_dir,
    tradeoff_curve,
    write_json,
)
from sparsejax.shrink import shrink
from sparsejax.structures import InputChannels, Neurons
from sparsejax.train import create_train_state, evaluate, make_train_step, train
from sparsejax.tree import named_leaves
from sparsejax.variational import (
    VDLeNet5,
    VDLeNet300100,
    kl_penalty,
    kl_warmup,
    to_plain,
)

HIDDEN = r"layers/[01]/kernel"  # LeNet-300-100 hidden layers: 300 + 100 neurons


@dataclasses.dataclass(frozen=True)
class Config:
    """Sparse variational dropout and group lasso on LeNet-300-100 / LeNet-5."""

    data_dir: str = "/work/shared/data/mnist"
    out: str = "runs/sparsity_learning"
    seed: int = 0
    val_fraction: float = 0.1
    batch_size: int = 64
    lr: float = 1e-3
    dense_steps: int = 3000
    vd: bool = True
    vd_models: tuple[str, ...] = ("lenet300100", "lenet5")
    vd_steps: int = 6000
    vd_steps_lenet5: int = 3000
    vd_warmup: int = 2000
    vd_init: str = "dense"
    group_lasso: bool = True
    gl_datasets: tuple[str, ...] = ("digits", "mnist10k")
    gl_lambdas: tuple[float, ...] = (0.03, 0.1, 0.2, 0.3, 0.5)
    gl_steps: int = 3000
    finetune_steps: int = 0
    finetune_lr: float = 3e-4
    ssl: bool = False
    ssl_lambdas: tuple[float, ...] = (0.03, 0.05, 0.07, 0.1, 0.15, 0.2)
    ssl_steps: int = 3000
    ssl_finetune_steps: int = 1000
    structured_vd: bool = False
    svd_models: tuple[str, ...] = ("lenet300100", "lenet5")
    svd_steps: int = 12000
    svd_noise_lr: float = 1e-2
    smoke: bool = False
    progress: bool = False


def _split(data, val_fraction: float):
    n = data.x_train.shape[0]
    n_val = round(n * val_fraction)
    if not 0 < n_val < n:
        raise ValueError(f"val_fraction={val_fraction} leaves no train or no validation data")
    return (data.x_train[: n - n_val], data.y_train[: n - n_val],
            data.x_train[n - n_val:], data.y_train[n - n_val:])


def _model_kwargs(name: str, data) -> dict[str, Any]:
    return {"padding": "SAME"} if name == "lenet5" and data.input_shape[0] < 16 else {}


def _dense(cfg: Config, data, name: str, steps: int, split) -> dict[str, Any]:
    x_tr, y_tr, x_val, y_val = split
    model = create_model(name, rngs=nnx.Rngs(cfg.seed), input_shape=data.input_shape,
                         num_classes=data.num_classes, **_model_kwargs(name, data))
    state = create_train_state(model, optax.adam(cfg.lr), key=cfg.seed)
    t0 = time.perf_counter()
    state, _ = train(state, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed, steps=steps,
                     progress=cfg.progress)
    return {"state": state, "seconds": time.perf_counter() - t0,
            "val_accuracy": evaluate(state, x_val, y_val)["accuracy"],
            "test_accuracy": evaluate(state, data.x_test, data.y_test)["accuracy"]}


def _init_from(vd_model: nnx.Module, dense_model: nnx.Module) -> None:
    """Copy the dense model's kernels / biases into the VD model's θ / bias (same paths)."""
    dense = dict(nnx.iter_graph(dense_model))
    for path, node in nnx.iter_graph(vd_model):
        if hasattr(node, "log_sigma2"):
            src = dense[path]
            node.kernel.set_value(src.kernel.get_value())
            node.bias.set_value(src.bias.get_value())


def _vd_model(cfg: Config, data, name: str, *, structured: bool = False) -> nnx.Module:
    rngs = nnx.Rngs(params=cfg.seed, dropout=cfg.seed + 1)
    if name == "lenet300100":
        return VDLeNet300100(math.prod(data.input_shape), data.num_classes, rngs=rngs,
                             structured=structured)
    return VDLeNet5(data.input_shape, data.num_classes, rngs=rngs, structured=structured,
                    **_model_kwargs(name, data))


def _train_vd(cfg: Config, vd_model: nnx.Module, tx, steps: int, split, **kw):
    """``(state, history, seconds)`` of ``steps`` ELBO steps (KL warmed up)."""
    x_tr, y_tr = split[:2]
    state = create_train_state(vd_model, tx, key=cfg.seed)
    kl = kl_penalty(x_tr.shape[0], kl_warmup(min(cfg.vd_warmup, steps)))
    step = make_train_step(penalty=kl)
    t0 = time.perf_counter()
    state, history = train(state, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed,
                           steps=steps, train_step=step, progress=cfg.progress, **kw)
    return state, history, time.perf_counter() - t0


def _to_plain_model(data, name: str, vd_model: nnx.Module):
    """``(plain zoo model with the removed weights at zero, its params, mask)``."""
    plain = create_model(name, rngs=nnx.Rngs(0), input_shape=data.input_shape,
                         num_classes=data.num_classes, **_model_kwargs(name, data))
    params, mask = to_plain(vd_model, plain)
    nnx.update(plain, apply_mask(params, mask))
    return plain, params, mask


def _vd(cfg: Config, data, name: str, steps: int, dense: dict, split) -> dict[str, Any]:
    x_val, y_val = split[2:]
    vd_model = _vd_model(cfg, data, name)
    if cfg.vd_init == "dense":
        _init_from(vd_model, dense["state"].model())
    elif cfg.vd_init != "scratch":
        raise ValueError(f"vd_init must be 'dense' or 'scratch', got {cfg.vd_init!r}")
    state, history, seconds = _train_vd(cfg, vd_model, optax.adam(cfg.lr), steps, split,
                                        log_every=max(steps // 10, 1))
    # conversion into the plain zoo model + mask, evaluated with the ordinary train.evaluate
    plain, params, mask = _to_plain_model(data, name, state.model())
    plain_state = create_train_state(plain, optax.adam(cfg.lr), key=0)
    vd_test = evaluate(state, data.x_test, data.y_test)["accuracy"]
    test = evaluate(plain_state, data.x_test, data.y_test)["accuracy"]
    last = history["train"][-1]
    return {
        "experiment": "sparse_vd", "dataset": data.name, "model": name, "steps": steps,
        "init": cfg.vd_init, "seconds": seconds,
        "val_accuracy": evaluate(plain_state, x_val, y_val)["accuracy"],
        "test_accuracy": test, "vd_eval_test_accuracy": vd_test,
        "dense_test_accuracy": dense["test_accuracy"],
        "error_increase_pp": 100 * (dense["test_accuracy"] - test),
        "compression": compression_ratio(params, mask),
        "final_kl": float(last["kl"]), "final_nll": float(last["data_loss"]),
        **_masked_finetune(cfg, plain, mask, data, split, dense),
    }


def _masked_finetune(cfg: Config, model, mask, data, split, dense: dict) -> dict[str, Any]:
    """``cfg.finetune_steps`` of Adam with the mask kept (``keep_sparse``); {} when 0."""
    if not cfg.finetune_steps:
        return {}
    x_tr, y_tr, x_val, y_val = split
    state = create_train_state(model, keep_sparse(optax.adam(cfg.finetune_lr), mask),
                               key=cfg.seed)
    state, _ = train(state, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed + 1,
                     steps=cfg.finetune_steps, progress=cfg.progress)
    acc = _accuracies(state, data, x_val, y_val, dense)
    return {"finetune_steps": cfg.finetune_steps,
            "finetuned_val_accuracy": acc["val_accuracy"],
            "finetuned_test_accuracy": acc["test_accuracy"],
            "finetuned_compression": compression_ratio(state.params),
            # entries the mask removed that are nonzero after fine-tuning (must be 0)
            "finetuned_pruned_nonzero": num_nonzero(state.params)
            - num_nonzero(state.params, mask)}


def _accuracies(state, data, x_val, y_val, dense: dict) -> dict[str, float]:
    return {"val_accuracy": evaluate(state, x_val, y_val)["accuracy"],
            "test_accuracy": evaluate(state, data.x_test, data.y_test)["accuracy"],
            "dense_val_accuracy": dense["val_accuracy"],
            "dense_test_accuracy": dense["test_accuracy"]}


def _group_lasso(cfg: Config, data, lam: float, steps: int, dense: dict, split) -> dict[str, Any]:
    x_tr, y_tr, x_val, y_val = split
    model = create_model("lenet300100", rngs=nnx.Rngs(cfg.seed), input_shape=data.input_shape,
                         num_classes=data.num_classes)
    tx = optax.chain(optax.adam(cfg.lr), proximal_group_lasso(cfg.lr, lam, prunable=HIDDEN))
    state = create_train_state(model, tx, key=cfg.seed)
    t0 = time.perf_counter()
    state, _ = train(state, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed, steps=steps,
                     progress=cfg.progress)
    seconds = time.perf_counter() - t0
    stats = group_stats(state.params, structure=Neurons(), prunable=HIDDEN)
    removed = sum(s.removed for s in stats)
    groups = sum(s.groups for s in stats)
    mask = groups_to_mask(state.params, prunable=HIDDEN)
    acc = _accuracies(state, data, x_val, y_val, dense)
    test = acc["test_accuracy"]
    return {
        "experiment": "group_lasso", "dataset": data.name, "model": "lenet300100", "lam": lam,
        "steps": steps, "seconds": seconds, **acc,
        "accuracy_loss_pp": 100 * (dense["test_accuracy"] - test),
        "neurons_removed": removed, "neurons": groups, "removed_fraction": removed / groups,
        "per_layer_removed": {s.path: f"{s.removed}/{s.groups}" for s in stats},
        "compression": compression_ratio(state.params, mask),
        **_masked_finetune(cfg, state.model(), mask, data, split, dense),
    }


SSL_FILTERS = r"^(conv1|conv2|fc1)/kernel$"
SSL_CHANNELS = r"^conv2/kernel$"
UNITS = {"lenet5": ("conv1", "conv2", "fc1"), "lenet300100": ("layers/0", "layers/1")}


def _forward(model: nnx.Module):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return lambda p, x: nnx.merge(graphdef, p, rest)(x), params


def _layer_flops(model: nnx.Module, input_shape) -> dict[str, int]:
    """Dense MACs of one example per kernel path (``sparsejax.metrics.flops``)."""
    f, params = _forward(model)
    x = jax.ShapeDtypeStruct((1, *input_shape), jax.numpy.float32)
    return {r.path: r.flops for r in flops(f, params, x).rows}


def _shrunk_report(dense_model, model, small, x_check, names) -> dict[str, Any]:
    """Units kept per layer, parameters, FLOPs, and the shrunk-vs-model logits check."""
    f, p = _forward(model)
    fs, ps = _forward(small)
    ref, got = f(p, x_check), fs(ps, x_check)
    shape = tuple(x_check.shape[1:])
    full, small_flops = _layer_flops(dense_model, shape), _layer_flops(small, shape)
    kernels = {"/".join(map(str, k)): v for k, v in nnx.iter_graph(small)}
    return {
        "units_kept": {n: int(kernels[n].kernel.shape[-1]) for n in names},
        "channels_in": {n: int(kernels[n].kernel.shape[-2]) for n in names},
        "params": num_params(nnx.state(small, nnx.Param)),
        "dense_params": num_params(nnx.state(dense_model, nnx.Param)),
        "layer_flops_fraction": {k.removesuffix("/kernel"): small_flops[k] / v
                                 for k, v in full.items() if k in small_flops},
        "flops_fraction": sum(small_flops.values()) / sum(full.values()),
        "max_rel_logit_diff": float(jax.numpy.max(jax.numpy.abs(ref - got))
                                    / jax.numpy.max(jax.numpy.abs(ref))),
    }


def _ssl_lenet5(cfg: Config, data, lam: float, steps: int, dense: dict, split) -> dict[str, Any]:
    """Wen et al. (2016) filter- and channel-wise group lasso on LeNet-5, then shrink."""
    x_tr, y_tr, x_val, y_val = split
    kw = _model_kwargs("lenet5", data)
    model = create_model("lenet5", rngs=nnx.Rngs(cfg.seed), input_shape=data.input_shape,
                         num_classes=data.num_classes, **kw)
    tx = optax.chain(
        optax.adam(cfg.lr),
        proximal_group_lasso(cfg.lr, lam, structure=Neurons(), prunable=SSL_FILTERS),
        proximal_group_lasso(cfg.lr, lam, structure=InputChannels(), prunable=SSL_CHANNELS,
                             include_bias=False),
    )
    state = create_train_state(model, tx, key=cfg.seed)
    t0 = time.perf_counter()
    state, _ = train(state, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed, steps=steps,
                     progress=cfg.progress)
    seconds = time.perf_counter() - t0
    trained = state.model()
    filt = dict(named_leaves(group_norms(state.params, structure=Neurons(),
                                         prunable=SSL_FILTERS)))
    chan = dict(named_leaves(group_norms(state.params, structure=InputChannels(),
                                         prunable=SSL_CHANNELS, include_bias=False)))
    alive = {n: np.asarray(filt[f"{n}/kernel"]).reshape(-1) > 0 for n in UNITS["lenet5"]}
    chan2 = np.asarray(chan["conv2/kernel"]).reshape(-1) > 0
    filters_alive = {n: int(a.sum()) for n, a in alive.items()}
    alive["conv1"] = alive["conv1"] & chan2  # a filter nobody reads is removed too
    keep = {f"{n}/kernel": np.flatnonzero(a).tolist() or [0] for n, a in alive.items()}
    small = shrink(trained, keep)
    report = _shrunk_report(model, trained, small, data.x_test[:256], UNITS["lenet5"])
    acc = _accuracies(state, data, x_val, y_val, dense)
    test = acc["test_accuracy"]
    # The shrunk model is an ordinary (smaller) LeNet-5: fine-tune it without the penalty.
    ft = create_train_state(small, optax.adam(cfg.lr), key=cfg.seed)
    ft, _ = train(ft, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed + 1,
                  steps=cfg.ssl_finetune_steps, progress=cfg.progress)
    ft_test = evaluate(ft, data.x_test, data.y_test)["accuracy"]
    return {
        "experiment": "ssl_lenet5", "dataset": data.name, "model": "lenet5", "lam": lam,
        "steps": steps, "seconds": seconds, **acc,
        "error_pp": 100 * (1 - test), "dense_error_pp": 100 * (1 - dense["test_accuracy"]),
        "finetune_steps": cfg.ssl_finetune_steps,
        "finetuned_val_accuracy": evaluate(ft, x_val, y_val)["accuracy"],
        "finetuned_error_pp": 100 * (1 - ft_test),
        "filters_nonzero": filters_alive, "conv2_channels_nonzero": int(chan2.sum()),
        **report,
    }


def _structured_vd(cfg: Config, data, name: str, steps: int, dense: dict, split) -> dict[str, Any]:
    """Structured sparse VD (one log α per unit), converted and shrunk."""
    x_val, y_val = split[2:]
    vd_model = _vd_model(cfg, data, name, structured=True)
    _init_from(vd_model, dense["state"].model())
    # The unit noise (log σ², scale) moves at its own, larger learning rate: at 1e-3 per
    # Adam step, log σ² = -10 needs > 10^4 steps to reach the pruning threshold.
    labels = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: "noise" if any(getattr(k, "key", None) in ("log_sigma2", "scale")
                                       for k in path) else "weights", params)
    tx = optax.multi_transform({"weights": optax.adam(cfg.lr),
                                "noise": optax.adam(cfg.svd_noise_lr)}, labels)
    state, _, seconds = _train_vd(cfg, vd_model, tx, steps, split)
    plain, _, mask = _to_plain_model(data, name, state.model())
    small = shrink(plain, mask, strict=False)
    report = _shrunk_report(dense["state"].model(), plain, small, data.x_test[:256], UNITS[name])
    small_state = create_train_state(small, optax.adam(cfg.lr), key=0)
    test = evaluate(small_state, data.x_test, data.y_test)["accuracy"]
    return {
        "experiment": "structured_vd", "dataset": data.name, "model": name, "steps": steps,
        "seconds": seconds, "val_accuracy": evaluate(small_state, x_val, y_val)["accuracy"],
        "test_accuracy": test, "vd_eval_test_accuracy":
            evaluate(state, data.x_test, data.y_test)["accuracy"],
        "dense_test_accuracy": dense["test_accuracy"],
        "error_increase_pp": 100 * (dense["test_accuracy"] - test),
        "compression": report["dense_params"] / report["params"], **report,
    }


def _select_lambda(rows: list[dict], key: str) -> None:
    """Mark the largest λ whose ``key`` (a validation accuracy) is within 1 pp of dense."""
    ok = [r for r in rows if r[key] >= r["dense_val_accuracy"] - 0.01]
    for r in rows:
        r["selected"] = bool(ok) and r is max(ok, key=lambda q: q["lam"])


def _units(row: dict) -> str:
    return " / ".join(f"{row['units_kept'][n]}" for n in row["units_kept"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(Config, argv)
    if cfg.smoke:
        cfg = dataclasses.replace(cfg, dense_steps=20, vd_steps=20, vd_steps_lenet5=10,
                                  vd_warmup=10, gl_steps=20, gl_lambdas=cfg.gl_lambdas[:2],
                                  gl_datasets=("digits",), vd_models=("lenet300100",),
                                  ssl_steps=20, ssl_lambdas=cfg.ssl_lambdas[-1:],
                                  ssl_finetune_steps=10, svd_steps=20,
                                  finetune_steps=min(cfg.finetune_steps, 10))
    out = prepare_output_dir(cfg.out, config_to_dict(cfg))
    device = jax.devices()[0].device_kind
    datasets = {}

    def get(name):
        if name not in datasets:
            datasets[name] = load_dataset(name, data_dir=cfg.data_dir if name == "mnist10k"
                                          else None)
        return datasets[name]

    dense_rows, vd_rows, gl_rows, dense = [], [], [], {}
    vd_dataset = "digits" if cfg.smoke else "mnist10k"
    gl_datasets = cfg.gl_datasets if cfg.group_lasso else ()
    vd_models = cfg.vd_models if cfg.vd else ()
    ssl_models = ("lenet5",) if cfg.ssl else ()
    svd_models = cfg.svd_models if cfg.structured_vd else ()
    pairs = ([(vd_dataset, m) for m in (*vd_models, *ssl_models, *svd_models)]
             + [(d, "lenet300100") for d in gl_datasets])
    for ds, model in dict.fromkeys(pairs):
        data = get(ds)
        dense[(ds, model)] = _dense(cfg, data, model, cfg.dense_steps, _split(data, cfg.val_fraction))
        d = dense[(ds, model)]
        dense_rows.append({"dataset": ds, "model": model, "steps": cfg.dense_steps,
                           "val_accuracy": d["val_accuracy"], "test_accuracy": d["test_accuracy"],
                           "seconds": d["seconds"]})
        print(f"dense {ds}/{model}: test {d['test_accuracy']:.4f} ({d['seconds']:.0f} s)",
              flush=True)
    for model in vd_models:
        data = get(vd_dataset)
        steps = cfg.vd_steps if model == "lenet300100" else cfg.vd_steps_lenet5
        row = _vd(cfg, data, model, steps, dense[(vd_dataset, model)],
                  _split(data, cfg.val_fraction))
        vd_rows.append(row)
        print(f"sparse VD {vd_dataset}/{model}: test {row['test_accuracy']:.4f}, "
              f"compression {row['compression']:.1f}x ({row['seconds']:.0f} s)", flush=True)
    curves = {}
    for ds in gl_datasets:
        data = get(ds)
        rows = [_group_lasso(cfg, data, lam, cfg.gl_steps, dense[(ds, "lenet300100")],
                             _split(data, cfg.val_fraction)) for lam in cfg.gl_lambdas]
        _select_lambda(rows, "finetuned_val_accuracy" if cfg.finetune_steps else "val_accuracy")
        for r in rows:
            print(f"group lasso {ds} λ={r['lam']:g}: test {r['test_accuracy']:.4f}, hidden "
                  f"neurons removed {r['removed_fraction']:.1%} ({r['seconds']:.0f} s)"
                  + ("  <- selected on validation" if r["selected"] else ""), flush=True)
        gl_rows.extend(rows)
        curves[f"group lasso, {ds}"] = ([r["removed_fraction"] for r in rows],
                                        [r["test_accuracy"] for r in rows],
                                        [0.0 for _ in rows])
    ssl_rows, svd_rows = [], []
    if cfg.ssl:
        data = get(vd_dataset)
        ssl_rows = [_ssl_lenet5(cfg, data, lam, cfg.ssl_steps, dense[(vd_dataset, "lenet5")],
                                _split(data, cfg.val_fraction)) for lam in cfg.ssl_lambdas]
        _select_lambda(ssl_rows, "finetuned_val_accuracy")
        for r in ssl_rows:
            print(f"SSL LeNet-5 λ={r['lam']:g}: error {r['error_pp']:.2f}% "
                  f"(fine-tuned {r['finetuned_error_pp']:.2f}%), units {_units(r)}, "
                  f"FLOPs {r['flops_fraction']:.1%} ({r['seconds']:.0f} s)", flush=True)
    for model in svd_models:
        data = get(vd_dataset)
        row = _structured_vd(cfg, data, model, cfg.svd_steps, dense[(vd_dataset, model)],
                             _split(data, cfg.val_fraction))
        svd_rows.append(row)
        print(f"structured VD {model}: test {row['test_accuracy']:.4f}, units {_units(row)}, "
              f"params {row['compression']:.1f}x smaller ({row['seconds']:.0f} s)", flush=True)
    if curves:
        tradeoff_curve(out / "group_lasso_tradeoff.png", curves,
                       xlabel="fraction of hidden neurons removed", ylabel="test accuracy",
                       logx=False, title="LeNet-300-100, proximal group lasso (λ sweep)")

    command = "python experiments/sparsity_learning.py " + " ".join(argv or sys.argv[1:])
    ft_columns = ([(f"val / test acc after {cfg.finetune_steps} FT steps (mask kept)",
                    "{finetuned_val_accuracy:.2%} / {finetuned_test_accuracy:.2%}")]
                  if cfg.finetune_steps else [])
    md = [f"# Sparsity learning\n\nCommand: `{command.strip()}`  \nDevice: {device}. One seed ({cfg.seed}). Validation = last {cfg.val_fraction:.0%} of the "
          "training split; every model trains on the rest.\n",
          "## Dense references\n",
          markdown_table(dense_rows, [("data", "{dataset}"), ("model", "{model}"),
                                      ("steps", "{steps}"), ("val acc", "{val_accuracy:.2%}"),
                                      ("test acc", "{test_accuracy:.2%}"),
                                      ("seconds", "{seconds:.0f}")]),
          *(["\n## Sparse variational dropout (log α ≥ 3 removed)\n",
             markdown_table(vd_rows, [("data", "{dataset}"), ("model", "{model}"),
                                   ("init", "{init}"), ("steps", "{steps}"),
                                   ("test acc", "{test_accuracy:.2%}"),
                                   ("dense test acc", "{dense_test_accuracy:.2%}"),
                                   ("error +pp", "{error_increase_pp:+.2f}"),
                                   ("compression", "{compression:.1f}x"), *ft_columns,
                                   ("seconds", "{seconds:.0f}")])] if vd_rows else []),
          *(["\n## Group lasso, LeNet-300-100 (proximal Adam, Neurons groups with bias)\n",
             markdown_table(gl_rows, [("data", "{dataset}"), ("λ", "{lam:g}"),
                                   ("val acc", "{val_accuracy:.2%}"),
                                   ("test acc", "{test_accuracy:.2%}"),
                                   ("dense test acc", "{dense_test_accuracy:.2%}"),
                                   ("loss pp", "{accuracy_loss_pp:+.2f}"),
                                   ("hidden neurons removed", "{removed_fraction:.1%}"),
                                   ("per layer", "{per_layer_removed}"),
                                   ("compression", "{compression:.1f}x"), *ft_columns,
                                   ("selected (val)", "{selected}")])] if gl_rows else []),
          "\n![tradeoff](group_lasso_tradeoff.png)\n" if curves else "",
          *(["\n## Structured sparsity learning, LeNet-5 (Wen et al. 2016, Table 1 layout)\n\n"
             "Proximal group lasso on filters (conv1, conv2, fc1; with bias) and on conv2's input "
             "channels; the model is shrunk. *kept*: filters (output units) / input channels "
             "of each layer after shrinking; FLOPs: each layer's MACs relative to the dense "
             f"LeNet-5. FT: the shrunk model fine-tuned {cfg.ssl_finetune_steps} steps (Adam, no "
             "penalty); *selected*: the largest λ whose fine-tuned validation accuracy is "
             "within 1 pp of the dense model's.\n",
             markdown_table(ssl_rows, [
                 ("λ", "{lam:g}"), ("conv1 kept", "{units_kept[conv1]}/20 · "
                                                  "{channels_in[conv1]}"),
                 ("conv2 kept", "{units_kept[conv2]}/50 · {channels_in[conv2]}/20"),
                 ("fc1 kept", "{units_kept[fc1]}/500"),
                 ("FLOPs conv1 / conv2 / fc1", "{layer_flops_fraction[conv1]:.1%} / "
                  "{layer_flops_fraction[conv2]:.1%} / {layer_flops_fraction[fc1]:.1%}"),
                 ("FLOPs total", "{flops_fraction:.1%}"), ("params", "{params:,}"),
                 ("test error", "{error_pp:.2f}%"),
                 ("val acc / test error after FT", "{finetuned_val_accuracy:.2%} / "
                                                   "{finetuned_error_pp:.2f}%"),
                 ("dense error", "{dense_error_pp:.2f}%"), ("selected (val)", "{selected}"),
                 ("shrunk vs trained logits", "{max_rel_logit_diff:.1e}")])]
            if ssl_rows else []),
          *(["\n## Structured sparse VD (one log α per unit, log α ≥ 3 removed), shrunk\n\n"
             f"θ from the dense model; Adam {cfg.lr:g} on the weights, {cfg.svd_noise_lr:g} on "
             "the unit noise (log σ², scale); the output layer keeps per-weight VD.\n",
             markdown_table(svd_rows, [
                 ("model", "{model}"), ("steps", "{steps}"), ("units kept", "{units_kept}"),
                 ("params", "{params:,} / {dense_params:,}"), ("smaller", "{compression:.1f}x"),
                 ("FLOPs", "{flops_fraction:.1%}"), ("test acc", "{test_accuracy:.2%}"),
                 ("dense test acc", "{dense_test_accuracy:.2%}"),
                 ("error +pp", "{error_increase_pp:+.2f}"),
                 ("shrunk vs VD-eval logits", "{max_rel_logit_diff:.1e}")])]
            if svd_rows else [])]
    (out / "results.md").write_text("\n".join(md))
    results = {"dense": dense_rows, "sparse_vd": vd_rows, "group_lasso": gl_rows,
               "ssl_lenet5": ssl_rows, "structured_vd": svd_rows, "device": device}
    write_json(out / "results.json", results)
    print("\n".join(md))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
