"""One training run of each method of ``sparsejax sparsity_learning``: the dense reference,
sparse VD (Molchanov et al. 2017), group lasso on LeNet-300-100's hidden neurons, structured
sparsity learning on LeNet-5 (Wen et al. 2016) and structured sparse VD, each returning its
row of the results; plus the validation-split λ selection. The study module
(:mod:`sparsejax.runner.studies.sparsity_learning`) loads this one when a run starts.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sparsejax import apply_mask, keep_sparse
from sparsejax import train as training  # its names looked up at each call
from sparsejax.metrics import compression_ratio, flops, num_nonzero, num_params
from sparsejax.models import create_model
from sparsejax.regularizers import (
    group_norms,
    group_stats,
    groups_to_mask,
    proximal_group_lasso,
    select_lambda,
)
from sparsejax.shrink import shrink
from sparsejax.structures import InputChannels, Neurons
from sparsejax.tree import named_leaves
from sparsejax.variational import (
    VDLeNet5,
    VDLeNet300100,
    from_dense,
    kl_penalty,
    kl_warmup,
    noisy_forward,
    to_plain,
)

__all__: list[str] = []  # private: the study's steps

HIDDEN = r"layers/[01]/kernel"  # LeNet-300-100 hidden layers: 300 + 100 neurons


def _split(data, val_fraction: float):
    n = data.x_train.shape[0]
    n_val = round(n * val_fraction)
    if not 0 < n_val < n:
        raise ValueError(f"val_fraction={val_fraction} leaves no train or no validation data")
    return (data.x_train[: n - n_val], data.y_train[: n - n_val],
            data.x_train[n - n_val:], data.y_train[n - n_val:])


def _model_kwargs(name: str, data) -> dict[str, Any]:
    return {"padding": "SAME"} if name == "lenet5" and data.input_shape[0] < 16 else {}


def _dense(cfg: Any, data, name: str, steps: int, split) -> dict[str, Any]:
    x_tr, y_tr, x_val, y_val = split
    model = create_model(name, rngs=nnx.Rngs(cfg.seed), input_shape=data.input_shape,
                         num_classes=data.num_classes, **_model_kwargs(name, data))
    state = training.create_train_state(model, optax.adam(cfg.lr), key=cfg.seed)
    t0 = time.perf_counter()
    state, _ = training.train(state, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed,
                              steps=steps, progress=cfg.progress)
    return {"state": state, "seconds": time.perf_counter() - t0,
            "val_accuracy": training.evaluate(state, x_val, y_val)["accuracy"],
            "val_correct": _correct(state, x_val, y_val),
            "test_accuracy": training.evaluate(state, data.x_test, data.y_test)["accuracy"]}


def _correct(state, x, y, batch_size: int = 1000) -> np.ndarray:
    """Per-example correctness ``bool[n]`` of the state's model in evaluation mode."""
    model = state.model()
    model.eval()
    forward = nnx.jit(lambda m, v: jnp.argmax(m(v), axis=-1))
    preds = np.concatenate([np.asarray(forward(model, x[i:i + batch_size]))
                            for i in range(0, len(x), batch_size)])
    return preds == np.asarray(y)


def _vd_model(cfg: Any, data, name: str, *, structured: bool = False) -> nnx.Module:
    rngs = nnx.Rngs(params=cfg.seed, dropout=cfg.seed + 1)
    if name == "lenet300100":
        return VDLeNet300100(math.prod(data.input_shape), data.num_classes, rngs=rngs,
                             structured=structured)
    return VDLeNet5(data.input_shape, data.num_classes, rngs=rngs, structured=structured,
                    **_model_kwargs(name, data))


def _train_vd(cfg: Any, vd_model: nnx.Module, tx, steps: int, split, **kw):
    """``(state, history, seconds)`` of ``steps`` ELBO steps (KL warmed up)."""
    x_tr, y_tr = split[:2]
    state = training.create_train_state(vd_model, tx, key=cfg.seed)
    kl = kl_penalty(x_tr.shape[0], kl_warmup(min(cfg.vd_warmup, steps)))
    step = training.make_train_step(forward=noisy_forward, penalty=kl)
    t0 = time.perf_counter()
    state, history = training.train(state, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed,
                           steps=steps, train_step=step, progress=cfg.progress, **kw)
    return state, history, time.perf_counter() - t0


def _to_plain_model(data, name: str, vd_model: nnx.Module):
    """``(plain zoo model with the removed weights at zero, its params, mask)``."""
    plain = create_model(name, rngs=nnx.Rngs(0), input_shape=data.input_shape,
                         num_classes=data.num_classes, **_model_kwargs(name, data))
    params, mask = to_plain(vd_model, plain)
    nnx.update(plain, apply_mask(params, mask))
    return plain, params, mask


def _vd(cfg: Any, data, name: str, steps: int, dense: dict, split) -> dict[str, Any]:
    x_val, y_val = split[2:]
    vd_model = _vd_model(cfg, data, name)
    if cfg.vd_init == "dense":
        vd_model = from_dense(vd_model, dense["state"].model())
    elif cfg.vd_init != "scratch":
        raise ValueError(f"vd_init must be 'dense' or 'scratch', got {cfg.vd_init!r}")
    state, history, seconds = _train_vd(cfg, vd_model, optax.adam(cfg.lr), steps, split,
                                        log_every=max(steps // 10, 1))
    # conversion into the plain zoo model + mask, evaluated with the ordinary train.evaluate
    plain, params, mask = _to_plain_model(data, name, state.model())
    plain_state = training.create_train_state(plain, optax.adam(cfg.lr), key=0, plain_arrays=True)
    vd_test = training.evaluate(state, data.x_test, data.y_test)["accuracy"]
    test = training.evaluate(plain_state, data.x_test, data.y_test)["accuracy"]
    last = history["train"][-1]
    finetuned = _masked_finetune(cfg, plain, mask, data, split, dense)
    finetuned.pop("_finetuned_val_correct", None)
    return {
        "experiment": "sparse_vd", "dataset": data.name, "model": name, "steps": steps,
        "init": cfg.vd_init, "seconds": seconds,
        "val_accuracy": training.evaluate(plain_state, x_val, y_val)["accuracy"],
        "test_accuracy": test, "vd_eval_test_accuracy": vd_test,
        "dense_test_accuracy": dense["test_accuracy"],
        "error_increase_pp": 100 * (dense["test_accuracy"] - test),
        "compression": compression_ratio(params, mask),
        "final_kl": float(last["kl"]), "final_nll": float(last["data_loss"]),
        **finetuned,
    }


def _masked_finetune(cfg: Any, model, mask, data, split, dense: dict) -> dict[str, Any]:
    """``cfg.finetune_steps`` of Adam with the mask kept (``keep_sparse``); {} when 0."""
    if not cfg.finetune_steps:
        return {}
    x_tr, y_tr, x_val, y_val = split
    # the mask is plain arrays (never an nnx.Param): the train state holds plain arrays too
    state = training.create_train_state(model, keep_sparse(optax.adam(cfg.finetune_lr), mask),
                               key=cfg.seed, plain_arrays=True)
    state, _ = training.train(state, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed + 1,
                     steps=cfg.finetune_steps, progress=cfg.progress)
    acc = _accuracies(state, data, x_val, y_val, dense)
    return {"finetune_steps": cfg.finetune_steps,
            "_finetuned_val_correct": _correct(state, x_val, y_val),
            "finetuned_val_accuracy": acc["val_accuracy"],
            "finetuned_test_accuracy": acc["test_accuracy"],
            "finetuned_compression": compression_ratio(state.params),
            # entries the mask removed that are nonzero after fine-tuning (must be 0)
            "finetuned_pruned_nonzero": num_nonzero(state.params)
            - num_nonzero(state.params, mask)}


def _accuracies(state, data, x_val, y_val, dense: dict) -> dict[str, float]:
    return {"val_accuracy": training.evaluate(state, x_val, y_val)["accuracy"],
            "test_accuracy": training.evaluate(state, data.x_test, data.y_test)["accuracy"],
            "dense_val_accuracy": dense["val_accuracy"],
            "dense_test_accuracy": dense["test_accuracy"]}


def _group_lasso(cfg: Any, data, lam: float, steps: int, dense: dict, split) -> dict[str, Any]:
    x_tr, y_tr, x_val, y_val = split
    model = create_model("lenet300100", rngs=nnx.Rngs(cfg.seed), input_shape=data.input_shape,
                         num_classes=data.num_classes)
    tx = optax.chain(optax.adam(cfg.lr), proximal_group_lasso(cfg.lr, lam, prunable=HIDDEN))
    state = training.create_train_state(model, tx, key=cfg.seed, plain_arrays=True)
    t0 = time.perf_counter()
    state, _ = training.train(state, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed,
                              steps=steps, progress=cfg.progress)
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
        "_val_correct": _correct(state, x_val, y_val),
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


def _ssl_lenet5(cfg: Any, data, lam: float, steps: int, dense: dict, split) -> dict[str, Any]:
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
    state = training.create_train_state(model, tx, key=cfg.seed)
    t0 = time.perf_counter()
    state, _ = training.train(state, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed,
                              steps=steps, progress=cfg.progress)
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
    ft = training.create_train_state(small, optax.adam(cfg.lr), key=cfg.seed)
    ft, _ = training.train(ft, x_tr, y_tr, batch_size=cfg.batch_size, seed=cfg.seed + 1,
                  steps=cfg.ssl_finetune_steps, progress=cfg.progress)
    ft_test = training.evaluate(ft, data.x_test, data.y_test)["accuracy"]
    return {
        "_finetuned_val_correct": _correct(ft, x_val, y_val),
        "experiment": "ssl_lenet5", "dataset": data.name, "model": "lenet5", "lam": lam,
        "steps": steps, "seconds": seconds, **acc,
        "error_pp": 100 * (1 - test), "dense_error_pp": 100 * (1 - dense["test_accuracy"]),
        "finetune_steps": cfg.ssl_finetune_steps,
        "finetuned_val_accuracy": training.evaluate(ft, x_val, y_val)["accuracy"],
        "finetuned_error_pp": 100 * (1 - ft_test),
        "filters_nonzero": filters_alive, "conv2_channels_nonzero": int(chan2.sum()),
        **report,
    }


def _structured_vd(cfg: Any, data, name: str, steps: int, dense: dict, split) -> dict[str, Any]:
    """Structured sparse VD (one log α per unit), converted and shrunk."""
    x_val, y_val = split[2:]
    vd_model = from_dense(_vd_model(cfg, data, name, structured=True), dense["state"].model())
    # The unit noise (log σ², scale) moves at its own, larger learning rate: at 1e-3 per
    # Adam step, log σ² = -10 needs > 10^4 steps to reach the pruning threshold.
    labels = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: "noise" if any(getattr(k, "key", None) in ("log_sigma2", "scale")
                                       for k in path) else "weights", params)
    tx = optax.multi_transform({"weights": optax.adam(cfg.lr),
                                "noise": optax.adam(cfg.svd_noise_lr)}, labels)
    state, _, seconds = _train_vd(cfg, vd_model, tx, steps, split)
    plain, _, mask = _to_plain_model(data, name, state.model())
    units = dict(named_leaves(mask))
    keep = {f"{n}/kernel": np.flatnonzero(np.asarray(units[f"{n}/kernel"]).reshape(-1)).tolist()
            or [0] for n in UNITS[name]}
    small = shrink(plain, keep)
    report = _shrunk_report(dense["state"].model(), plain, small, data.x_test[:256], UNITS[name])
    small_state = training.create_train_state(small, optax.adam(cfg.lr), key=0)
    test = training.evaluate(small_state, data.x_test, data.y_test)["accuracy"]
    return {
        "experiment": "structured_vd", "dataset": data.name, "model": name, "steps": steps,
        "seconds": seconds,
        "val_accuracy": training.evaluate(small_state, x_val, y_val)["accuracy"],
        "test_accuracy": test, "vd_eval_test_accuracy":
            training.evaluate(state, data.x_test, data.y_test)["accuracy"],
        "dense_test_accuracy": dense["test_accuracy"],
        "error_increase_pp": 100 * (dense["test_accuracy"] - test),
        "compression": report["dense_params"] / report["params"], **report,
    }


def _select_lambda(cfg: Any, rows: list[dict], dense: dict, finetuned: bool) -> dict:
    """Mark the λ that :func:`select_lambda` picks on the validation split; its summary."""
    key = "_finetuned_val_correct" if finetuned else "_val_correct"
    sel = select_lambda([r["lam"] for r in rows], [r.pop(key) for r in rows],
                        dense["val_correct"], tolerance=cfg.tolerance, z=cfg.select_z)
    for r, drop, se, ok in zip(rows, sel.drops, sel.standard_errors, sel.accepted, strict=True):
        r.pop("_val_correct", None)
        r.pop("_finetuned_val_correct", None)
        r.update({"val_drop_pp": 100 * drop, "val_drop_se_pp": 100 * se, "accepted": ok,
                  "selected": sel.lam is not None and r["lam"] == sel.lam})
    return {"lam": sel.lam, "tolerance": cfg.tolerance, "z": cfg.select_z,
            "validation_examples": sel.num_examples,
            "on": "fine-tuned" if finetuned else "trained"}


def _meets_bar(cfg: Any, row: dict, test_key: str, removed: float) -> bool:
    """Whether a selected row removes >= 50 % of the units within ``tolerance`` on test."""
    return bool(removed >= 0.5 and row["dense_test_accuracy"] - row[test_key] <= cfg.tolerance)


def _units(row: dict) -> str:
    return " / ".join(f"{row['units_kept'][n]}" for n in row["units_kept"])

