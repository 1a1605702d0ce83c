"""Cost of sparsejax in the user's own training step: pruned step time over the dense step time.

The step is what a user writes: a jitted ``step(params, opt_state, x, y)`` on a plain
dict of arrays, ``grads = jax.grad(loss)(params)``, ``tx.update(grads, opt_state,
params)``, ``optax.apply_updates`` — with ``tx`` the dense optimizer (Adam) or the same
optimizer wrapped by sparsejax. Three ways to run it (``--loops``):

* ``python``: the jitted step called from Python once per step, one sync per window;
* ``scan``: the same step inside one jitted ``lax.scan`` over the window (one dispatch);
* ``train_loop``: :func:`sparsejax.train.make_train_loop` on the equivalent zoo model
  (our loop: the update steps are placed on the host, no conditional in the step).

Variants: ``dense`` (timed twice: ``dense_again`` is the run-to-run spread),
``keep_sparse`` (a fixed 90% mask), ``pruning_layer`` / ``pruning_global`` (magnitude,
polynomial schedule to 90% updating every 100 steps: two updates per window of 200) and
``pruning_never`` (the same transform, no update due in the window), and the dynamic sparse
training methods ``rigl`` and ``set`` (ERK at the same sparsity, rewired every 100 steps).
Every variant of a
loop reads the same window of distinct batches from device memory; variants are timed
round-robin (median of ``--repeats`` windows after a compile and a warm-up window).
``--profile`` adds the device-side kernel time of one window of each ``python`` variant
(:func:`sparsejax.runner.kernel_times`): busy time, span and kernels per step.

Models: ``mlp`` 784-300-100-10 at batch 1024; ``mlp67m`` 4096-(4096)x4-10 (67M params) at
batch 1024; ``cnn`` Conv-4 of Frankle & Carbin (2019) on CIFAR shapes at batch 256.

Usage::

    python benchmarks/step_overhead.py --models mlp --steps 200 --repeats 2   # CPU check
    python benchmarks/step_overhead.py --tag gpu-h100 --profile               # on a GPU
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sparsejax as sj
from sparsejax import train as sj_train
from sparsejax.models import MLP, Conv4, LeNet300100
from sparsejax.runner import (
    config_to_dict,
    environment,
    kernel_times,
    markdown_table,
    parse_config,
    time_round_robin,
    write_report,
)

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "benchmarks"
FAR = 10**8  # a schedule beginning here never updates inside the timed window
MODELS = ("mlp", "mlp67m", "cnn")
LOOPS = ("python", "scan", "train_loop")


@dataclasses.dataclass(frozen=True)
class Config:
    """Cost of sparsejax in the user's own training step: pruned over dense step time."""

    models: tuple[Literal["mlp", "mlp67m", "cnn"], ...] = MODELS
    loops: tuple[Literal["python", "scan", "train_loop"], ...] = LOOPS
    steps: int = dataclasses.field(
        default=200, metadata={"help": "steps per timed window (a multiple of 100)"})
    repeats: int = 7
    sparsity: float = 0.9
    profile: bool = dataclasses.field(
        default=False, metadata={"help": "also trace one window of each python-loop variant"})
    tag: str = dataclasses.field(default_factory=jax.default_backend,
                                 metadata={"help": "output name suffix"})
    out_dir: pathlib.Path = RESULTS
    out: pathlib.Path | None = dataclasses.field(
        default=None, metadata={"help": "JSON path (default OUT_DIR/step_overhead_<tag>.json)"})


# --------------------------------------------------------------------------- the user's models


def _dense_init(key, sizes):
    params = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        key, sub = jax.random.split(key)
        params[f"dense{i}"] = {
            "kernel": jax.random.normal(sub, (n_in, n_out), jnp.float32) * np.sqrt(2.0 / n_in),
            "bias": jnp.zeros((n_out,), jnp.float32),
        }
    return params


def _mlp_apply(params, x):
    n = len(params)
    for i in range(n):
        layer = params[f"dense{i}"]
        x = x @ layer["kernel"] + layer["bias"]
        if i < n - 1:
            x = jax.nn.relu(x)
    return x


# Conv-4 (Frankle & Carbin 2019): conv 64, 64, pool, 128, 128, pool, dense 256, 256, 10.
_CONV4 = ((3, 64), (64, 64), "pool", (64, 128), (128, 128), "pool")
_CONV4_DENSE = (8 * 8 * 128, 256, 256, 10)


def _cnn_init(key):
    params, i = {}, 0
    for spec in _CONV4:
        if spec == "pool":
            continue
        key, sub = jax.random.split(key)
        c_in, c_out = spec
        params[f"conv{i}"] = {
            "kernel": jax.random.normal(sub, (3, 3, c_in, c_out), jnp.float32)
            * np.sqrt(2.0 / (9 * c_in)),
            "bias": jnp.zeros((c_out,), jnp.float32),
        }
        i += 1
    dense = _dense_init(key, _CONV4_DENSE)
    params.update({f"fc{k[len('dense'):]}": v for k, v in dense.items()})
    return params


def _cnn_apply(params, x):
    i = 0
    for spec in _CONV4:
        if spec == "pool":
            x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            continue
        layer = params[f"conv{i}"]
        x = jax.lax.conv_general_dilated(x, layer["kernel"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(x + layer["bias"])
        i += 1
    x = x.reshape(x.shape[0], -1)
    n = len(_CONV4_DENSE) - 1
    for j in range(n):
        layer = params[f"fc{j}"]
        x = x @ layer["kernel"] + layer["bias"]
        if j < n - 1:
            x = jax.nn.relu(x)
    return x


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    description: str
    init: Callable[[jax.Array], Any]
    apply: Callable[[Any, jax.Array], jax.Array]
    zoo: Callable[[jax.Array], nnx.Module]
    in_shape: tuple[int, ...]
    batch: int


def build(name: str) -> Model:
    if name == "mlp":
        return Model(name, "MLP 784-300-100-10 (266,610 params), batch 1024, Adam",
                     lambda k: _dense_init(k, (784, 300, 100, 10)), _mlp_apply,
                     lambda k: LeNet300100(rngs=nnx.Rngs(k)), (784,), 1024)
    if name == "mlp67m":
        sizes = (4096, 4096, 4096, 4096, 4096, 10)
        return Model(name, "MLP 4096-4096x4-10 (67,166,218 params), batch 1024, Adam",
                     lambda k: _dense_init(k, sizes), _mlp_apply,
                     lambda k: MLP(sizes, rngs=nnx.Rngs(k)), (4096,), 1024)
    if name == "cnn":
        return Model(name, "Conv-4 on CIFAR shapes (2,425,930 params), batch 256, Adam",
                     _cnn_init, _cnn_apply,
                     lambda k: Conv4((32, 32, 3), 10, rngs=nnx.Rngs(k)), (32, 32, 3), 256)
    raise ValueError(f"unknown model {name!r}")


def kernels(path: str, leaf: Any) -> bool:
    """Every kernel is prunable (not biases)."""
    return path.endswith("kernel")


def _magnitude(params, grads):
    return sj.scores.magnitude(params)


def variants(cfg: Config, fixed_mask: Any) -> list[tuple[str, str, optax.GradientTransformation]]:
    """``(variant, scope, tx)``: the dense optimizer and the same optimizer wrapped."""
    adam = optax.adam(1e-3)
    every100 = sj.schedules.polynomial(0.0, cfg.sparsity, begin=1, end=1 + 100 * cfg.steps,
                                       every=100)
    never = sj.schedules.polynomial(0.0, cfg.sparsity, begin=FAR, end=FAR + 100, every=100)

    def pruning(schedule, scope):
        return sj.pruning(adam, score=_magnitude, schedule=schedule, prunable=kernels,
                          scope=scope)

    return [
        ("dense", "-", adam),
        ("dense_again", "-", adam),
        ("keep_sparse", "-", sj.keep_sparse(adam, fixed_mask)),
        ("pruning_layer", "layer", pruning(every100, "layer")),
        ("pruning_global", "global", pruning(every100, "global")),
        ("pruning_never", "layer", pruning(never, "layer")),
        # dynamic sparse training at the same sparsity (ERK), rewired every 100 steps from
        # step 1: two updates per window, like the pruning variants
        ("rigl", "layer", sj.transforms.rigl(adam, cfg.sparsity, key=0, total_steps=10**8,
                                             begin=1, prunable=kernels)),
        ("set", "layer", sj.transforms.sparse_evolutionary(adam, cfg.sparsity, key=0,
                                                           total_steps=10**8, begin=1,
                                                           prunable=kernels)),
    ]


# --------------------------------------------------------------------------- the three loops


class UserRun:
    """One variant in the user's own step, called from Python or scanned on the device."""

    def __init__(self, model: Model, tx, params, window, loop: str):
        def loss(p, x, y):
            logits = model.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        def step(params, opt_state, x, y):
            grads = jax.grad(loss)(params, x, y)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        self.step = jax.jit(step)
        self.xs, self.ys = window
        self.steps = self.xs.shape[0]
        # one device array per step, split once here: indexing the window inside the timed
        # loop would add an eager slicing dispatch to every step
        self.batches = [(self.xs[i], self.ys[i]) for i in range(self.steps)]
        self.loop = loop
        self.start = (params, tx.init(params))

        def scanned(params, opt_state, xs, ys):
            def body(carry, batch):
                return step(*carry, *batch), None

            return jax.lax.scan(body, (params, opt_state), (xs, ys))[0]

        self.scanned = jax.jit(scanned)

    def compile(self):
        """Compile and take one step: windows start from the state after step 0."""
        params, opt_state = self.step(*self.start, *self.batches[0])
        if self.loop == "scan":
            jax.block_until_ready(self.scanned(params, opt_state, self.xs, self.ys))
        self.start = (params, opt_state)
        return self.start

    def window(self):
        params, opt_state = self.start
        if self.loop == "scan":
            return self.scanned(params, opt_state, self.xs, self.ys)
        for x, y in self.batches:
            params, opt_state = self.step(params, opt_state, x, y)
        return params, opt_state


class TrainLoopRun:
    """One variant in our loop: ``make_train_loop`` on the zoo model, updates placed on the
    host (no conditional in the step)."""

    def __init__(self, model: Model, tx, window):
        self.state = sj_train.create_train_state(model.zoo(jax.random.key(0)), tx,
                                                 key=jax.random.key(1), plain_arrays=True)
        self.loop = sj_train.make_train_loop()
        self.window_batches = window
        self.steps = window[0].shape[0]
        self.start_step = 0

    def compile(self):
        first = jax.tree.map(lambda b: b[:1], self.window_batches)
        self.state, _ = self.loop(self.state, first, 0)
        jax.block_until_ready(self.loop(self.state, self.window_batches, 1))
        self.start_step = 1
        return self.state

    def window(self):
        return self.loop(self.state, self.window_batches, self.start_step)


def _window(model: Model, steps: int, rng: np.random.Generator):
    xs = rng.normal(size=(steps, model.batch, *model.in_shape)).astype(np.float32)
    ys = rng.integers(0, 10, size=(steps, model.batch)).astype(np.int32)
    return jax.device_put(xs), jax.device_put(ys)


def _zoo_mask(model: Model, sparsity: float):
    params = sj_train.create_train_state(model.zoo(jax.random.key(0)), optax.identity(), key=0,
                                         plain_arrays=True).params
    return sj.prune(sj.scores.magnitude(params), sparsity, prunable=kernels)


def main(argv: list[str] | None = None) -> list[dict]:
    cfg = parse_config(Config, argv)
    if cfg.steps % 100 or cfg.steps <= 0:
        raise SystemExit(f"--steps must be a positive multiple of 100, got {cfg.steps}")
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    profiles: dict[str, Any] = {}
    for name in cfg.models:
        model = build(name)
        params = model.init(jax.random.key(0))
        n_params = sum(int(x.size) for x in jax.tree.leaves(params))
        window = _window(model, cfg.steps, rng)
        fixed = sj.prune(sj.scores.magnitude(params), cfg.sparsity, prunable=kernels)
        for loop in cfg.loops:
            if loop == "train_loop":
                zoo_fixed = _zoo_mask(model, cfg.sparsity)
                chosen = [(v, s, t) for v, s, t in variants(cfg, zoo_fixed) if v != "pruning_never"]
                runs = [TrainLoopRun(model, t, window) for _, _, t in chosen]
            else:
                chosen = variants(cfg, fixed)
                runs = [UserRun(model, t, params, window, loop) for _, _, t in chosen]
            timings = time_round_robin([r.window for r in runs], repeats=cfg.repeats, warmup=1,
                                       calls=cfg.steps, first=[r.compile for r in runs])
            dense = timings[0].median_s
            for (variant, scope, _), timing, run in zip(chosen, timings, runs, strict=True):
                row = {
                    "model": name, "description": model.description, "params": n_params,
                    "loop": loop, "variant": variant, "scope": scope, "steps": cfg.steps,
                    "step_us": timing.median_s * 1e6, "iqr_us": timing.iqr_s * 1e6,
                    "ratio_vs_dense": timing.median_s / dense,
                    "compile_s": timing.compile_s, "times_s": list(timing.times_s),
                }
                if cfg.profile and loop == "python":
                    prof = kernel_times(run.window, calls=1)
                    row["device_busy_us"] = prof.busy_us / cfg.steps
                    row["device_span_us"] = prof.span_us / cfg.steps
                    row["kernels_per_step"] = prof.kernels / cfg.steps
                    profiles[f"{name}/{variant}"] = prof.to_dict(top=30)
                rows.append(row)
                print(f"{name:7s} {loop:10s} {variant:15s} {row['step_us']:10.1f} us/step "
                      f"x{row['ratio_vs_dense']:.3f}", flush=True)
            del runs
    env = environment()
    columns = [("model", "{model}"), ("loop", "{loop}"), ("variant", "{variant}"),
               ("µs/step", "{step_us:.1f}"), ("IQR µs", "{iqr_us:.1f}"),
               ("vs dense", "{ratio_vs_dense:.3f}x")]
    if cfg.profile:
        columns += [("device busy µs", "{device_busy_us}"), ("kernels/step", "{kernels_per_step}")]
        for row in rows:  # the profiled python-loop rows; the other loops show a dash
            for key in ("device_busy_us", "kernels_per_step"):
                row[key] = f"{row[key]:.1f}" if key in row else "–"
    table = markdown_table(rows, columns)
    header = (
        "# sparsejax in the user's own training step: pruned vs dense step time\n\n"
        f"Device: {env['device']} ({env['backend']}); jax {env['jax']}, optax {env['optax']}; "
        f"{env['date']}.\nCommand: `{env['command']}`. Median of {cfg.repeats} windows of "
        f"{cfg.steps} steps per variant (round-robin, after a compile step and a warm-up "
        "window); every loop reads the same window of distinct batches from device memory. "
        "`python`: the user's jitted step called once per step; `scan`: the same step in one "
        "`lax.scan`; `train_loop`: `sparsejax.train.make_train_loop` (updates placed on the "
        f"host). Pruning: magnitude to {cfg.sparsity:.0%} per layer or globally, updates every "
        "100 steps (two per window); `pruning_never`: no update due; `keep_sparse`: a fixed "
        "mask; `rigl` / `set`: dynamic sparse training (ERK, same sparsity, drop and grow every "
        "100 steps). Ratios are to `dense` of the same model and loop.\n\n"
        + "\n".join(f"- {m}: {build(m).description}" for m in cfg.models) + "\n"
    )
    print("\n" + table)
    out = write_report(
        cfg.out or cfg.out_dir / f"step_overhead_{cfg.tag}.json",
        {"benchmark": "step_overhead", "config": config_to_dict(cfg), "environment": env,
         "results": rows, "profiles": profiles},
        header + "\n" + table,
    )
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return rows


if __name__ == "__main__":
    main()
