"""``sparsejax sparsity_learning``: sparse variational dropout, group lasso and structured
sparsity learning, against a dense reference.

Every model trains on the training split less its last ``val_fraction`` (the validation
split, on which every choice is made); the test split gives only the reported numbers.
Studies: (1) a dense reference per (data set, model), Adam; (2) sparse VD (Molchanov et al.
2017) on LeNet-300-100 and LeNet-5, from the dense model (``--vd-init dense``) or from
scratch, KL warmed up over ``vd_warmup`` steps, log alpha >= 3 removed: compression and test
error vs dense (targets 30x / 50x within 1 pp); (3) group lasso (proximal, a group per
hidden neuron of LeNet-300-100 with its bias), a lambda sweep, the *selected* lambda the
largest whose validation loss against dense is within ``tolerance`` with a margin of
``select_z`` standard errors (:func:`sparsejax.regularizers.select_lambda`; target >= 50 %
of the hidden neurons removed within 1 pp); off by default, (4) structured sparsity
learning on LeNet-5 (Wen et al. 2016, Table 1 layout: group lasso on the filters of conv1,
conv2, fc1 and the input channels of conv2, the model shrunk and fine-tuned) and (5)
structured sparse VD (one log alpha per unit, the model shrunk). ``sparsejax
sparsity_learning_summary ROOT`` aggregates one run per seed
(:mod:`sparsejax.runner.studies.sparsity_learning_summary`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Literal

from sparsejax.data import dataset_names
from sparsejax.runner._config import ConfigError, check_fraction, check_positive
from sparsejax.runner._plots import tradeoff_curve
from sparsejax.runner._study import RunContext, Study, StudyConfig, check_data, run_study
from sparsejax.runner._tables import markdown_table
from sparsejax.runner.studies._common import check_lr, load_data

__all__ = ["STUDY", "Config", "check", "figures", "main"]

Model = Literal["lenet300100", "lenet5"]


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Sparse variational dropout, group lasso and structured sparsity learning on
    LeNet-300-100 / LeNet-5, against a dense reference."""

    progress: bool = False
    """Show training progress: a bar on a terminal, a few plain lines otherwise."""
    data_dir: str | None = None
    """Folder of the MNIST test split for mnist10k (None: the copy shipped with sparsejax)."""
    seed: int = 0
    """Seed of every model's initialisation and batch order."""
    val_fraction: float = 0.1
    """Fraction of the training split held out for validation (its last examples)."""
    batch_size: int = 64
    """Mini-batch size of every training run."""
    lr: float = 1e-3
    """Adam learning rate of every training run (but fine-tuning and the VD unit noise)."""
    dense_steps: int = 3000
    """Steps of each dense reference."""
    vd: bool = True
    """Run sparse VD (per-weight log alpha)."""
    vd_models: tuple[Model, ...] = ("lenet300100", "lenet5")
    """Models of sparse VD."""
    vd_dataset: Literal["mnist10k", "digits"] = "mnist10k"
    """Data set of sparse VD, SSL and structured VD (--smoke: digits)."""
    vd_steps: int = 6000
    """Sparse VD steps on LeNet-300-100."""
    vd_steps_lenet5: int = 3000
    """Sparse VD steps on LeNet-5."""
    vd_warmup: int = 2000
    """Steps over which the KL weight rises linearly from 0 to 1."""
    vd_init: Literal["dense", "scratch"] = "dense"
    """Start sparse VD from the dense reference (theta and biases, log sigma^2 = -10) or from
    scratch."""
    group_lasso: bool = True
    """Run group lasso on LeNet-300-100's hidden neurons."""
    gl_datasets: tuple[str, ...] = ("digits", "mnist10k")
    """Data sets of group lasso."""
    gl_lambdas: tuple[float, ...] = (0.03, 0.1, 0.2, 0.3, 0.5)
    """Group lasso strengths swept."""
    gl_steps: int = 3000
    """Steps of each group lasso run."""
    finetune_steps: int = 0
    """Masked fine-tuning steps (mask kept) after sparse VD and group lasso (0: none)."""
    finetune_lr: float = 3e-4
    """Adam learning rate of the masked fine-tuning."""
    ssl: bool = False
    """Run structured sparsity learning on LeNet-5 (Wen et al. 2016)."""
    ssl_lambdas: tuple[float, ...] = (0.03, 0.05, 0.07, 0.1, 0.15, 0.2)
    """SSL group lasso strengths swept."""
    ssl_steps: int = 3000
    """Steps of each SSL run."""
    ssl_finetune_steps: int = 1000
    """Fine-tuning steps of each shrunk SSL model (no penalty)."""
    structured_vd: bool = False
    """Run structured sparse VD (one log alpha per unit), the models shrunk."""
    svd_models: tuple[Model, ...] = ("lenet300100", "lenet5")
    """Models of structured sparse VD."""
    svd_steps: int = 12000
    """Structured sparse VD steps."""
    svd_noise_lr: float = 1e-2
    """Adam learning rate of the unit noise (log sigma^2, scale) of structured VD."""
    tolerance: float = 0.01
    """Accuracy loss allowed against the dense model (a fraction: 0.01 = 1 pp)."""
    select_z: float = 1.645
    """Margin of the lambda selection in standard errors of the validation accuracy loss
    (1.645: a one-sided 95 % upper bound on the loss)."""


SMOKE = {"dense_steps": 20, "vd_steps": 20, "vd_steps_lenet5": 10, "vd_warmup": 10,
         "gl_steps": 20, "gl_lambdas": (0.03, 0.1), "gl_datasets": ("digits",),
         "vd_models": ("lenet300100",), "vd_dataset": "digits", "ssl_steps": 20,
         "ssl_lambdas": (0.2,), "ssl_finetune_steps": 10, "svd_steps": 20}


def _data(cfg: Config, name: str):
    return load_data(name, cfg.data_dir if name == "mnist10k" else None)


def check(cfg: Config) -> None:
    """Every value, before any training."""
    check_positive(cfg, "batch_size", "dense_steps", "vd_steps", "vd_steps_lenet5",
                   "gl_steps", "ssl_steps", "svd_steps")
    check_positive(cfg, "vd_warmup", "finetune_steps", "ssl_finetune_steps", minimum=0)
    check_lr(cfg, "lr", "finetune_lr", "svd_noise_lr")
    check_fraction("tolerance", cfg.tolerance)
    if cfg.select_z < 0:
        raise ConfigError("select_z", cfg.select_z, "must be >= 0")
    for name, on in (("gl_lambdas", cfg.group_lasso), ("ssl_lambdas", cfg.ssl)):
        values = getattr(cfg, name)
        if on and not values:
            raise ConfigError(name, values, "give at least one strength")
        if any(v < 0 for v in values):
            raise ConfigError(name, values, "strengths must be >= 0")
    used = ([cfg.vd_dataset] if cfg.vd or cfg.ssl or cfg.structured_vd else [])
    used += list(cfg.gl_datasets) if cfg.group_lasso else []
    for name in dict.fromkeys(used):
        field = "vd_dataset" if name == cfg.vd_dataset else "gl_datasets"
        check_data(name, cfg.data_dir if name == "mnist10k" else None, field=field)
        try:
            shape = _data(cfg, name).input_shape
        except ConfigError as err:  # named by the flag that chose the files
            raise ConfigError("data_dir" if name == "mnist10k" and cfg.data_dir else field,
                              cfg.data_dir if name == "mnist10k" and cfg.data_dir else name,
                              err.reason) from err
        if len(shape) != 3:
            raise ConfigError(field, name, f"inputs of shape {shape}: LeNet needs images")
        n = _data(cfg, name).x_train.shape[0]
        if not 0 < round(n * cfg.val_fraction) < n:
            raise ConfigError("val_fraction", cfg.val_fraction, f"leaves no training or no "
                              f"validation example of the {n} of {name}")


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Every study that is on, then the report (module docstring)."""
    import jax

    from sparsejax.runner.studies._sparsity_learning_runs import (
        _dense,
        _group_lasso,
        _meets_bar,
        _select_lambda,
        _split,
        _ssl_lenet5,
        _structured_vd,
        _units,
        _vd,
    )

    t_start = time.perf_counter()
    device = jax.devices()[0].device_kind

    def get(name):
        return _data(cfg, name)

    def record(scope: str, row: dict) -> None:
        """A finished run's accuracies and sizes into the metric writers."""
        ctx.writer.scoped(scope).write_scalars(row["steps"], {
            k: v for k, v in row.items() if isinstance(v, (int, float))
            and not isinstance(v, bool) and k != "steps"})

    dense_rows, vd_rows, gl_rows, dense, selections = [], [], [], {}, {}
    vd_dataset = cfg.vd_dataset
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
        record(f"dense/{ds}/{model}", dense_rows[-1])
        print(f"dense {ds}/{model}: test {d['test_accuracy']:.4f} ({d['seconds']:.0f} s)",
              flush=True)
    for model in vd_models:
        data = get(vd_dataset)
        steps = cfg.vd_steps if model == "lenet300100" else cfg.vd_steps_lenet5
        row = _vd(cfg, data, model, steps, dense[(vd_dataset, model)],
                  _split(data, cfg.val_fraction))
        vd_rows.append(row)
        record(f"sparse_vd/{vd_dataset}/{model}", row)
        print(f"sparse VD {vd_dataset}/{model}: test {row['test_accuracy']:.4f}, "
              f"compression {row['compression']:.1f}x ({row['seconds']:.0f} s)", flush=True)
    for ds in gl_datasets:
        data = get(ds)
        rows = [_group_lasso(cfg, data, lam, cfg.gl_steps, dense[(ds, "lenet300100")],
                             _split(data, cfg.val_fraction)) for lam in cfg.gl_lambdas]
        selections[f"group_lasso/{ds}"] = _select_lambda(
            cfg, rows, dense[(ds, "lenet300100")], bool(cfg.finetune_steps))
        test_key = "finetuned_test_accuracy" if cfg.finetune_steps else "test_accuracy"
        for r in rows:
            r["meets_bar"] = r["selected"] and _meets_bar(cfg, r, test_key, r["removed_fraction"])
            print(f"group lasso {ds} λ={r['lam']:g}: test {r['test_accuracy']:.4f}, hidden "
                  f"neurons removed {r['removed_fraction']:.1%} ({r['seconds']:.0f} s)"
                  + ("  <- selected on validation" if r["selected"] else ""), flush=True)
        gl_rows.extend(rows)
        for r in rows:
            record(f"group_lasso/{ds}/lam{r['lam']:g}", r)
    ssl_rows, svd_rows = [], []
    if cfg.ssl:
        data = get(vd_dataset)
        ssl_rows = [_ssl_lenet5(cfg, data, lam, cfg.ssl_steps, dense[(vd_dataset, "lenet5")],
                                _split(data, cfg.val_fraction)) for lam in cfg.ssl_lambdas]
        selections["ssl_lenet5"] = _select_lambda(cfg, ssl_rows, dense[(vd_dataset, "lenet5")],
                                                  True)
        for r in ssl_rows:
            record(f"ssl_lenet5/{vd_dataset}/lam{r['lam']:g}", r)
            print(f"SSL LeNet-5 λ={r['lam']:g}: error {r['error_pp']:.2f}% "
                  f"(fine-tuned {r['finetuned_error_pp']:.2f}%), units {_units(r)}, "
                  f"FLOPs {r['flops_fraction']:.1%} ({r['seconds']:.0f} s)", flush=True)
    for model in svd_models:
        data = get(vd_dataset)
        row = _structured_vd(cfg, data, model, cfg.svd_steps, dense[(vd_dataset, model)],
                             _split(data, cfg.val_fraction))
        svd_rows.append(row)
        record(f"structured_vd/{vd_dataset}/{model}", row)
        print(f"structured VD {model}: test {row['test_accuracy']:.4f}, units {_units(row)}, "
              f"params {row['compression']:.1f}x smaller ({row['seconds']:.0f} s)", flush=True)
    command = ctx.command
    ft_columns = ([(f"val / test acc after {cfg.finetune_steps} FT steps (mask kept)",
                    "{finetuned_val_accuracy:.2%} / {finetuned_test_accuracy:.2%}")]
                  if cfg.finetune_steps else [])
    rule = (f"*selected*: the largest λ whose validation accuracy loss against the dense model "
            f"(after fine-tuning, if any) is within {100 * cfg.tolerance:g} pp with a margin of "
            f"{cfg.select_z:g} standard errors (paired over the validation examples: "
            "`sparsejax.regularizers.select_lambda`); *accepted*: the λ that pass that test.")
    md = [f"# Sparsity learning\n\nCommand: `{command.strip()}`  \nDevice: {device}. One "
          f"seed ({cfg.seed}). Validation = last {cfg.val_fraction:.0%} of the training split; "
          "every model trains on the rest.\n",
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
          *(["\n## Group lasso, LeNet-300-100 (proximal Adam, Neurons groups with bias)\n\n"
             f"{rule} *meets bar*: the selected λ removes >= 50 % of the hidden neurons "
             f"within {100 * cfg.tolerance:g} pp of the dense test accuracy"
             + (" (after fine-tuning)" if cfg.finetune_steps else "") + ".\n",
             markdown_table(gl_rows, [("data", "{dataset}"), ("λ", "{lam:g}"),
                                   ("val acc", "{val_accuracy:.2%}"),
                                   ("test acc", "{test_accuracy:.2%}"),
                                   ("dense test acc", "{dense_test_accuracy:.2%}"),
                                   ("loss pp", "{accuracy_loss_pp:+.2f}"),
                                   ("hidden neurons removed", "{removed_fraction:.1%}"),
                                   ("per layer", "{per_layer_removed}"),
                                   ("compression", "{compression:.1f}x"), *ft_columns,
                                   ("val loss pp ± SE", "{val_drop_pp:+.2f} ± {val_drop_se_pp:.2f}"),
                                   ("accepted", "{accepted}"), ("selected", "{selected}"),
                                   ("meets bar", "{meets_bar}")])] if gl_rows else []),
          "\n![tradeoff](group_lasso_tradeoff.png)\n" if gl_rows else "",
          *(["\n## Structured sparsity learning, LeNet-5 (Wen et al. 2016, Table 1 layout)\n\n"
             "Proximal group lasso on filters (conv1, conv2, fc1; with bias) and on conv2's input "
             "channels; the model is shrunk. *kept*: filters (output units) / input channels "
             "of each layer after shrinking; FLOPs: each layer's MACs relative to the dense "
             f"LeNet-5. FT: the shrunk model fine-tuned {cfg.ssl_finetune_steps} steps (Adam, no "
             f"penalty). {rule}\n",
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
                 ("dense error", "{dense_error_pp:.2f}%"),
                 ("val loss pp ± SE", "{val_drop_pp:+.2f} ± {val_drop_se_pp:.2f}"),
                 ("accepted", "{accepted}"), ("selected", "{selected}"),
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
    results = {"dense": dense_rows, "sparse_vd": vd_rows, "group_lasso": gl_rows,
               "ssl_lenet5": ssl_rows, "structured_vd": svd_rows, "selection": selections,
               "device": device, "elapsed_s": time.perf_counter() - t_start}
    ctx.save_figures(figures(results, dataclasses.asdict(cfg)))
    ctx.write_text("results.md", "\n".join(md))
    ctx.write_json("results.json", results)
    print("\n".join(md))
    return results



def figures(results: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``group_lasso_tradeoff``: test accuracy vs fraction of hidden neurons removed, one
    curve per data set (where the run has group lasso rows)."""
    rows = results.get("group_lasso") or []
    curves = {}
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == ds]
        curves[f"group lasso, {ds}"] = ([r["removed_fraction"] for r in mine],
                                        [r["test_accuracy"] for r in mine],
                                        [0.0 for _ in mine])
    if not curves:
        return {}
    return {"group_lasso_tradeoff": tradeoff_curve(
        curves, xlabel="fraction of hidden neurons removed", ylabel="test accuracy",
        logx=False, title="LeNet-300-100, proximal group lasso (λ sweep)")}


STUDY = Study(
    name="sparsity_learning", config=Config, run=run, check=check, figures=figures,
    smoke=SMOKE,
    summary="sparse variational dropout, group lasso and structured sparsity learning",
    choices=lambda: {"gl_datasets": dataset_names()},
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``sparsejax sparsity_learning [flags]`` (``argv`` default: ``sys.argv[1:]``)."""
    return run_study(STUDY, argv)
