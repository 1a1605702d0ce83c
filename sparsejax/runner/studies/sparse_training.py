"""``sparsejax sparse_training``: dynamic sparse training vs static sparsity, gradual pruning
and dense, at the same training budget.

Every method trains each model from scratch for the same steps with Adam (the dense
baselines' recipe), the same batches and ``seeds`` seeds (vmapped: one program per method
and sparsity), at overall kernel sparsities ``sparsities`` with the ERK distribution (Evci
et al. 2020): ``dense``; ``gradual`` (magnitude, cubic schedule 10 % -> 75 % of training,
Zhu & Gupta 2017); ``static`` (a fixed random ERK mask); ``set`` (Mocanu et al. 2018,
zeta = 0.3 constant); ``rigl`` (Evci et al. 2020, alpha = 0.3 cosine, stop at 75 %);
``snfs`` (Dettmers & Zettlemoyer 2019, p = 0.5 cosine, weights moved across layers by mean
momentum); ``srste`` (Zhou et al. 2021, dense weights, top-k ERK projection, decay 2e-4)
and ``srste_2:4`` / ``srste_1:4`` (its N:M forms, where every kernel's input axis divides
by 4). Models: LeNet-300-100 on MNIST-10k (3,000 steps x 64, Adam 1e-3) and the MNIST-1D
CNN (6,000 steps x 100, Adam 1e-2). Reported: final test accuracy (mean ± std and every
seed's), the sparsity reached, and the connections SET / RigL / SNFS move at each update.
Each finished configuration is appended to ``rows.jsonl``; ``--resume`` skips those.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Literal

import numpy as np

from sparsejax.runner._config import ConfigError, check_positive
from sparsejax.runner._environment import environment
from sparsejax.runner._plots import tradeoff_curve
from sparsejax.runner._study import RunContext, Study, StudyConfig, check_data, run_study
from sparsejax.runner._tables import markdown_table
from sparsejax.runner.studies._common import load_data, spread_label

__all__ = ["METHODS", "RECIPES", "STUDY", "Config", "build_optimizer", "figures",
           "initial_states", "main"]

#: (dataset, model) -> (steps, batch size, Adam learning rate)
RECIPES: dict[tuple[str, str], tuple[int, int, float]] = {
    ("mnist10k", "lenet300100"): (3_000, 64, 1e-3),
    ("mnist1d", "mnist1d_cnn"): (6_000, 100, 1e-2),
}
METHODS = ("dense", "gradual", "static", "set", "rigl", "snfs", "srste", "srste_2:4",
           "srste_1:4")
DYNAMIC = ("set", "rigl", "snfs")
NM_SHAPES = {"srste_2:4": (2, 4), "srste_1:4": (1, 4)}
SMOKE = {"steps": 40, "seeds": 2, "every": 10, "sparsities": (0.9, 0.98)}


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Dynamic sparse training (SET, RigL, SNFS), static sparsity, SR-STE and gradual pruning
    against dense, every method with the same steps, optimizer and batches."""

    pairs: tuple[str, ...] = ("mnist10k:lenet300100", "mnist1d:mnist1d_cnn")
    """dataset:model pairs: mnist10k:lenet300100 and/or mnist1d:mnist1d_cnn."""
    data_dir: str | None = None
    """Folder of the MNIST test split for mnist10k (None: the copy shipped with sparsejax)."""
    methods: tuple[Literal[METHODS], ...] = METHODS  # type: ignore[valid-type]
    """Methods to run (dense runs once per pair, the N:M ones at their own sparsity)."""
    sparsities: tuple[float, ...] = (0.8, 0.9, 0.95, 0.98)
    """Overall sparsities of the kernels, each in (0, 1)."""
    seeds: int = 3
    """Seeds per configuration (vmapped)."""
    every: int = 100
    """Steps between mask updates (ΔT) of gradual pruning and SET / RigL / SNFS."""
    steps: int | None = None
    """Training steps of every run (None: the pair's recipe, 3000 LeNet-300-100, 6000
    MNIST-1D CNN)."""


def check(cfg: Config) -> None:
    """Every value, before any training."""
    if not cfg.pairs:
        raise ConfigError("pairs", cfg.pairs, "give at least one dataset:model pair")
    for pair in cfg.pairs:
        dataset, _, model = pair.partition(":")
        if (dataset, model) not in RECIPES:
            raise ConfigError("pairs", cfg.pairs, f"unknown pair {pair!r}; known: "
                              + ", ".join(":".join(k) for k in RECIPES))
        check_data(dataset, cfg.data_dir, field="pairs")
    if not cfg.methods:
        raise ConfigError("methods", cfg.methods, "give at least one method")
    if not cfg.sparsities:
        raise ConfigError("sparsities", cfg.sparsities, "give at least one sparsity")
    for s in cfg.sparsities:
        if not 0.0 < s < 1.0:
            raise ConfigError("sparsities", cfg.sparsities, f"{s:g} is outside (0, 1)")
    check_positive(cfg, "seeds", "every", "steps")


def build_optimizer(method: str, sparsity: float, steps: int, lr: float, every: int):
    """The optimizer of ``method`` (every sparse one wraps ``optax.adam(lr)``); its PRNG key
    is a placeholder, replaced per seed by :func:`initial_states`."""
    import jax
    import optax

    import sparsejax as sj
    from sparsejax import transforms

    adam = optax.adam(lr)
    key = jax.random.key(0)  # replaced per seed (with_key / with_mask) before training
    if method == "dense":
        return adam
    if method == "gradual":
        begin = round(0.1 * steps / every) * every
        end = begin + (int(0.75 * steps) - begin) // every * every
        schedule = sj.schedules.polynomial(0.0, sparsity, begin=begin, end=end, every=every)
        return sj.pruning(adam, score=lambda p, g: sj.scores.magnitude(p), schedule=schedule,
                          distribution="erk")
    if method == "static":
        return transforms.static_sparse(adam, sparsity, key=key)
    common = dict(key=key, total_steps=steps, every=every, distribution="erk")
    if method == "set":
        return transforms.sparse_evolutionary(adam, sparsity, **common)
    if method == "rigl":
        return transforms.rigl(adam, sparsity, **common)
    if method == "snfs":
        return transforms.sparse_momentum(adam, sparsity, **common)
    if method == "srste":
        return transforms.straight_through(adam, structure=sj.Unstructured(), sparsity=sparsity,
                                           distribution="erk")
    n, m = NM_SHAPES[method]
    return transforms.straight_through(adam, structure=sj.NM(n, m))


def initial_states(method: str, tx, make_model, keys, sparsity: float):
    """Stacked states; each seed gets its own random mask and key (sparse methods), and the
    params are masked (or projected) before the first step."""
    import jax

    import sparsejax as sj
    from sparsejax import transforms
    from sparsejax.train import create_train_states

    state = create_train_states(make_model, tx, keys, plain_arrays=True)
    sparse_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    if method in ("static", *DYNAMIC):
        masks = jax.vmap(lambda p, k: transforms.random_mask(p, sparsity, k))(
            state.params, sparse_keys)
        state = state.with_mask(masks)
    if method in DYNAMIC:
        state = state.replace(opt_state=jax.vmap(transforms.with_key)(state.opt_state,
                                                                      sparse_keys))
    if method.startswith("srste"):
        state = state.replace(params=jax.vmap(sj.apply_mask)(
            state.params, transforms.current_mask(state.opt_state)))
    return state


def _windows(data, batch_size: int, seeds: int, steps: int, window: int):
    """Per window of ``window`` steps, the stacked batches ``(x[n, S, B, ...], y[n, S, B])``:
    seed ``i`` reads the batch order of ``sparsejax.data.batches`` with data seed ``i``."""
    import jax.numpy as jnp

    from sparsejax.data import batches

    per_seed: list[list] = [[] for _ in range(seeds)]
    epoch = 0
    while len(per_seed[0]) < steps:
        for i in range(seeds):
            per_seed[i].extend(batches(data.x_train, data.y_train, batch_size, i, epoch))
        epoch += 1
    for start in range(0, steps, window):
        stop = min(start + window, steps)
        xs = np.stack([np.stack([per_seed[i][t][0] for i in range(seeds)])
                       for t in range(start, stop)])
        ys = np.stack([np.stack([per_seed[i][t][1] for i in range(seeds)])
                       for t in range(start, stop)])
        yield start, (jnp.asarray(xs), jnp.asarray(ys))


def run_config(method: str, sparsity: float, data, make_model, recipe, every: int,
               seeds: int, loops: dict) -> dict[str, Any]:
    """Train ``seeds`` models of ``method`` at ``sparsity``; their accuracies and counts."""
    import jax
    import jax.numpy as jnp

    from sparsejax import transforms
    from sparsejax.train import evaluate, make_train_loop

    steps, batch_size, lr = recipe
    tx = build_optimizer(method, sparsity, steps, lr, every)
    keys = jax.random.split(jax.random.key(2024), seeds)
    state = initial_states(method, tx, make_model, keys, sparsity)
    loop = loops.setdefault(tx, make_train_loop(vmap_seeds=True, per_seed_batches=True))
    moved: list[list[int]] = []
    t0 = time.perf_counter()
    for start, window in _windows(data, batch_size, seeds, steps, every):
        before = transforms.current_mask(state.opt_state) if method in DYNAMIC else None
        state, _ = loop(state, window, start)
        if before is not None:
            after = transforms.current_mask(state.opt_state)
            counts = sum(np.asarray(jnp.sum(a & ~b, axis=tuple(range(1, a.ndim))))
                         for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
                         if a.ndim >= 3)
            moved.append([int(c) for c in np.broadcast_to(counts, (seeds,))])
    seconds = time.perf_counter() - t0
    res = evaluate(state, data.x_test, data.y_test, vmap_seeds=True)
    params = jax.device_get(state.params)
    kernels = [p for p in jax.tree.leaves(params) if p.ndim >= 3]
    total = sum(int(np.prod(p.shape[1:])) for p in kernels)
    nonzero = [sum(int(np.count_nonzero(p[i])) for p in kernels) for i in range(seeds)]
    if method == "dense":
        kept = [total] * seeds
    else:  # the mask's count: a grown weight that got no gradient yet is still 0.0
        masks = jax.device_get(transforms.current_mask(state.opt_state))
        kept = [sum(int(np.broadcast_to(m[i], p.shape[1:]).sum())
                    for m, p in zip(jax.tree.leaves(masks), jax.tree.leaves(params))
                    if p.ndim >= 3) for i in range(seeds)]
    acc = np.asarray(res["accuracy"], np.float64)
    return {
        "method": method, "sparsity": sparsity, "accuracy": acc.tolist(),
        "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
        "mask_sparsity": [1 - k / total for k in kept],
        "nonzero_sparsity": [1 - n / total for n in nonzero],
        "moved_per_update": moved, "seconds": seconds,
    }


def _applies(method: str, params) -> bool:
    """N:M needs every prunable kernel's input axis (-2) divisible by M."""
    import jax

    if method not in NM_SHAPES:
        return True
    m = NM_SHAPES[method][1]
    return all(p.shape[-2] % m == 0 for p in jax.tree.leaves(params) if p.ndim >= 2)


def _figure(pair: str, rows: list[dict], seeds: int):
    curves = {}
    dense = [r for r in rows if r["method"] == "dense"]
    for method in ("gradual", "static", "set", "rigl", "snfs", "srste"):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["sparsity"])
        if mine:
            curves[method] = ([1 / (1 - r["sparsity"]) for r in mine],
                              [r["accuracy_mean"] for r in mine],
                              [r["accuracy_std"] for r in mine])
    nm = sorted((r for r in rows if r["method"] in NM_SHAPES), key=lambda r: r["sparsity"])
    if nm:
        curves["srste N:M (2:4, 1:4)"] = ([1 / (1 - r["sparsity"]) for r in nm],
                                          [r["accuracy_mean"] for r in nm],
                                          [r["accuracy_std"] for r in nm])
    return tradeoff_curve(curves, baseline=dense[0]["accuracy_mean"] if dense else None,
                          xlabel="compression of the kernels (1 / (1 − sparsity))",
                          title=f"{pair}: sparse training, same budget",
                          error_label=spread_label(seeds), focus=None)


def figures(results: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Test accuracy vs kernel compression, one figure per pair (``accuracy_<pair>``)."""
    rows = results["rows"]
    seeds = rows[0]["seeds"] if rows else config.get("seeds", 1)
    return {f"accuracy_{pair.replace(':', '_')}":
            _figure(pair, [r for r in rows if r["pair"] == pair], seeds)
            for pair in dict.fromkeys(r["pair"] for r in rows)}


def _targets(method: str, sparsities) -> list[float]:
    if method == "dense" or method in NM_SHAPES:
        n, m = NM_SHAPES.get(method, (1, 1))
        return [1 - n / m]
    return list(sparsities)


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Train every method at every sparsity on every pair and report (module docstring)."""
    import jax
    from flax import nnx

    from sparsejax.models import create_model

    partial = ctx.out / "rows.jsonl"
    done = ([json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
            if ctx.resumed and partial.exists() else [])
    rows = list(done)
    for pair in cfg.pairs:
        dataset, _, model_name = pair.partition(":")
        steps, batch_size, lr = RECIPES[(dataset, model_name)]
        steps = cfg.steps or steps
        recipe = (steps, batch_size, lr)
        data = load_data(dataset, cfg.data_dir)

        def make_model(key, data=data, model_name=model_name):
            return create_model(model_name, rngs=nnx.Rngs(key), input_shape=data.input_shape,
                                num_classes=data.num_classes)

        shapes = nnx.split(nnx.eval_shape(lambda: make_model(jax.random.key(0))), nnx.Param)[1]
        loops: dict = {}
        for method in cfg.methods:
            if not _applies(method, shapes):
                print(f"{pair}: {method} skipped (a kernel's input axis is not divisible by 4)")
                continue
            for s in _targets(method, cfg.sparsities):
                if any(r["pair"] == pair and r["method"] == method and r["sparsity"] == s
                       for r in done):
                    continue
                row = {"pair": pair, "steps": steps, "batch_size": batch_size, "lr": lr,
                       "seeds": cfg.seeds, **run_config(method, s, data, make_model, recipe,
                                                        cfg.every, cfg.seeds, loops)}
                rows.append(row)
                with partial.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                ctx.writer.scoped(f"{pair}/{method}_{s:g}").write_scalars(
                    steps, {"accuracy_mean": row["accuracy_mean"],
                            "accuracy_std": row["accuracy_std"]})
                print(f"{pair} {method:>10} s={s:.3f}: accuracy {row['accuracy_mean']:.2%} ± "
                      f"{row['accuracy_std']:.2%} ({row['seconds']:.0f} s)", flush=True)
        ctx.save_figures(figures({"rows": [r for r in rows if r["pair"] == pair]},
                                 {"seeds": cfg.seeds}))
    # the environment of the run's start (config.json), also when resumed
    env = json.loads((ctx.out / "config.json").read_text()).get("environment") or environment()
    table = markdown_table(
        [{**r, "moved": _moved_text(r), "reached": float(np.mean(r["mask_sparsity"]))}
         for r in rows],
        [("pair", "{pair}"), ("method", "{method}"), ("sparsity", "{sparsity:.3f}"),
         ("mask sparsity reached", "{reached:.4f}"),
         ("test accuracy", "{accuracy_mean:.2%} ± {accuracy_std:.2%}"),
         ("seeds", "{accuracy}"), ("moved per update (first → last)", "{moved}"),
         ("seconds", "{seconds:.0f}")])
    header = (f"# Sparse training\n\n{cfg.seeds} seeds (vmapped), final test accuracy "
              f"(mean ± std over the seeds), device {env.get('device')} ({env.get('backend')}), "
              f"jax {env.get('jax')}, git {env.get('git_commit')}.\n"
              f"Command: `{ctx.command}`\n\n")
    pivots = "\n\n".join(_pivot(pair, [r for r in rows if r["pair"] == pair])
                          for pair in dict.fromkeys(r["pair"] for r in rows))
    text = header + pivots + "\n\n## Every run\n\n" + table + "\n"
    results = {"rows": rows, "environment": env, "config": dataclasses.asdict(cfg)}
    ctx.write_text("results.md", text)
    ctx.write_json("results.json", results)
    print(text)
    return results


def _pivot(pair: str, rows: list[dict]) -> str:
    """One table per model: a row per method, a column per sparsity (N:M at their own)."""
    sparsities = sorted({r["sparsity"] for r in rows if r["method"] not in ("dense",
                                                                             *NM_SHAPES)})
    cell = {(r["method"], r["sparsity"]): r for r in rows}
    lines = [f"## {pair}", "",
             "| method | " + " | ".join(f"{s:.0%}" for s in sparsities) + " |",
             "|---|" + "---|" * len(sparsities)]
    for method in METHODS:
        if method == "dense" or method in NM_SHAPES:
            mine = [r for r in rows if r["method"] == method]
            if mine:
                r = mine[0]
                lines.append(f"| {method} ({r['sparsity']:.0%}) | "
                             f"{r['accuracy_mean']:.2%} ± {r['accuracy_std']:.2%} |"
                             + " |" * (len(sparsities) - 1))
            continue
        if any((method, s) in cell for s in sparsities):
            lines.append(f"| {method} | " + " | ".join(
                f"{cell[(method, s)]['accuracy_mean']:.2%} ± {cell[(method, s)]['accuracy_std']:.2%}"
                if (method, s) in cell else "–" for s in sparsities) + " |")
    return "\n".join(lines)


def _moved_text(row: dict) -> str:
    moved = [m for m in row["moved_per_update"] if any(m)]
    if not moved:
        return "–"
    first, last = np.mean(moved[0]), np.mean(moved[-1])
    return f"{first:.0f} → {last:.0f} ({len(moved)} updates)"


STUDY = Study(
    name="sparse_training", config=Config, run=run, check=check, figures=figures, smoke=SMOKE,
    summary="dynamic sparse training (SET, RigL, SNFS, SR-STE) vs static, gradual and dense",
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``sparsejax sparse_training [flags]`` (``argv`` default: ``sys.argv[1:]``)."""
    return run_study(STUDY, argv)
