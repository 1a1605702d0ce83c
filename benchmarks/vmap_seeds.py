"""Throughput of S seeds trained in one vmapped step vs S sequential runs.

Models (``--model``): :class:`sparsejax.models.LeNet300100` (784-300-100-10,
266,610 parameters) on MNIST-shaped inputs (``float32[B, 28, 28, 1]``) and
:class:`sparsejax.models.MNIST1DCNN` (5,210 parameters) on MNIST-1D inputs
(``float32[B, 40]``), 10 classes; the optimizer SGD with momentum 0.9. Three ways to train ``S`` seeds for
``steps`` steps each with :func:`sparsejax.train.make_train_step`:

* ``sequential``: ``S`` single-seed states, one jitted step, run one seed
  after the other (what a loop over seeds does);
* ``vmap``: one state with a leading seed axis
  (:func:`sparsejax.train.create_train_states`), one ``jax.vmap``-ed step,
  all seeds on the same batch;
* ``vmap_per_seed_batches``: as ``vmap``, every seed on its own batch.

Batches are random, pre-generated and already on the device, so the numbers
measure the training step, not the input pipeline. Each configuration is
compiled first (one step; compile time reported separately), then the whole
run (all seeds, ``steps`` steps each) is timed ``repeats`` times with
:func:`sparsejax.runner.time_run`; the table gives the median. Throughput counts every seed:
``seed_steps/s = S * steps / time``, ``examples/s = B * seed_steps/s``.

Usage::

    python benchmarks/vmap_seeds.py                       # CPU, ~1 min
    python benchmarks/vmap_seeds.py --tag gpu --steps 200
    python benchmarks/vmap_seeds.py --model mnist1d_cnn --tag gpu --steps 200
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable
from typing import Literal

import jax
import numpy as np
import optax
from flax import nnx

from sparsejax import train as sj_train
from sparsejax.models import MNIST1DCNN, LeNet300100
from sparsejax.runner import (
    Timing,
    config_to_dict,
    environment,
    markdown_table,
    parse_config,
    time_run,
    write_report,
)

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "benchmarks"

# name -> (constructor(key), input shape of one example, description)
MODELS = {
    "lenet300100": (
        lambda key: LeNet300100(784, 10, rngs=nnx.Rngs(key)),
        (28, 28, 1),
        "LeNet300100 (784-300-100-10)",
    ),
    "mnist1d_cnn": (
        lambda key: MNIST1DCNN(rngs=nnx.Rngs(key)),
        (40,),
        "MNIST1DCNN (5,210 params, length 40)",
    ),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Throughput of S seeds trained in one vmapped step vs S sequential runs."""

    model: Literal["lenet300100", "mnist1d_cnn"] = "lenet300100"
    seeds: int = 8
    batch_sizes: tuple[int, ...] = (32, 128)
    steps: int = dataclasses.field(default=40, metadata={"help": "timed steps per seed"})
    repeats: int = 3
    tag: str = dataclasses.field(default_factory=jax.default_backend,
                                 metadata={"help": "output name suffix"})
    out_dir: pathlib.Path = RESULTS
    out: pathlib.Path | None = dataclasses.field(
        default=None, metadata={"help": "JSON path (default OUT_DIR/vmap_seeds_<tag>.json, "
                                        "vmap_seeds_<model>_<tag>.json for other models)"})


def staged_batches(rng: np.random.Generator, steps: int, shape: tuple[int, ...],
                   input_shape: tuple[int, ...]) -> list:
    """``steps`` device-resident ``(x, y)`` batches with leading axes ``shape`` (B,) or (S, B)."""
    return [
        (
            jax.device_put(rng.normal(size=(*shape, *input_shape)).astype(np.float32)),
            jax.device_put(rng.integers(0, 10, size=shape).astype(np.int32)),
        )
        for _ in range(steps)
    ]


def run_steps(step, state, batches):
    for batch in batches:
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    return state


def bench_sequential(make_model: Callable, keys, tx, batches, repeats: int) -> Timing:
    """``S`` single-seed states, one after the other; compiled by one step of seed 0."""
    step = sj_train.make_train_step()
    states = []
    for k in keys:
        k_model, k_drop = jax.random.split(k)
        states.append(sj_train.create_train_state(make_model(k_model), tx, key=k_drop))

    def run():
        for state in states:
            run_steps(step, state, batches)

    return time_run(run, repeats=repeats, first=lambda: step(states[0], batches[0]))


def bench_vmap(make_model: Callable, keys, tx, batches, repeats: int,
               per_seed_batches: bool) -> Timing:
    """One state with a leading seed axis, one vmapped step; compiled by one step."""
    step = sj_train.make_train_step(vmap_seeds=True, per_seed_batches=per_seed_batches)
    state = sj_train.create_train_states(make_model, tx, keys)
    return time_run(lambda: run_steps(step, state, batches), repeats=repeats,
                    first=lambda: step(state, batches[0]))


def main(argv: list[str] | None = None) -> list[dict]:
    cfg = parse_config(Config, argv)
    make_model, input_shape, description = MODELS[cfg.model]
    load_at_start = os.getloadavg()[0]

    tx = optax.sgd(0.1, momentum=0.9)
    keys = jax.random.split(jax.random.key(0), cfg.seeds)
    rng = np.random.default_rng(0)
    rows = []
    for batch_size in cfg.batch_sizes:
        shared = staged_batches(rng, cfg.steps, (batch_size,), input_shape)
        per_seed = staged_batches(rng, cfg.steps, (cfg.seeds, batch_size), input_shape)
        runs = {
            "sequential": bench_sequential(make_model, keys, tx, shared, cfg.repeats),
            "vmap": bench_vmap(make_model, keys, tx, shared, cfg.repeats, False),
            "vmap_per_seed_batches": bench_vmap(make_model, keys, tx, per_seed, cfg.repeats,
                                                True),
        }
        base = None
        for mode, timing in runs.items():
            median = timing.median_s
            seed_steps = cfg.seeds * cfg.steps / median
            base = seed_steps if mode == "sequential" else base
            rows.append(
                {
                    "mode": mode,
                    "batch_size": batch_size,
                    "seeds": cfg.seeds,
                    "steps_per_seed": cfg.steps,
                    "compile_s": timing.compile_s,
                    "times_s": list(timing.times_s),
                    "median_s": median,
                    "iqr_s": timing.iqr_s,
                    "seed_steps_per_s": seed_steps,
                    "examples_per_s": seed_steps * batch_size,
                    "speedup_vs_sequential": seed_steps / base,
                }
            )
            print(
                f"B={batch_size:4d} {mode:22s} {seed_steps:9.1f} seed-steps/s "
                f"{seed_steps * batch_size:11.0f} examples/s  x{seed_steps / base:.2f}",
                flush=True,
            )

    env = environment(load_at_start)
    table = markdown_table(
        rows,
        [
            ("batch", "{batch_size}"),
            ("mode", "{mode}"),
            ("seed-steps/s", "{seed_steps_per_s:,.1f}"),
            ("examples/s", "{examples_per_s:,.0f}"),
            ("speedup", "{speedup_vs_sequential:.2f}x"),
            ("compile (s)", "{compile_s:.2f}"),
        ],
    )
    header = (
        f"# {cfg.seeds} seeds of {description}: vmapped vs sequential\n\n"
        f"Device: {env['device']} ({env['backend']}, {env['device_count']} device(s)); "
        f"jax {env['jax']}, flax {env['flax']}; {env['date']}.\n"
        f"Command: `{env['command']}` (XLA_FLAGS={env['xla_flags']!r}). Median of "
        f"{cfg.repeats} runs of {cfg.steps} steps per seed, batches pre-staged on the device, "
        f"SGD momentum 0.9. Host load average (1 min) {load_at_start:.1f} at the start, "
        f"{env['load_average_1m']['end']:.1f} at the end ({env['cpu_count']} CPUs).\n"
    )
    print("\n" + table)
    stem = f"vmap_seeds_{cfg.tag}" if cfg.model == "lenet300100" else (
        f"vmap_seeds_{cfg.model}_{cfg.tag}"
    )
    out = write_report(
        cfg.out or cfg.out_dir / f"{stem}.json",
        {
            "benchmark": "vmap_seeds",
            "model": description,
            "optimizer": "sgd(0.1, momentum=0.9)",
            "config": config_to_dict(cfg),
            "environment": env,
            "results": rows,
        },
        header + "\n" + table,
    )
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return rows


if __name__ == "__main__":
    main()
