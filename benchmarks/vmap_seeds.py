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
compiled first (compile time reported separately), then timed ``repeats``
times; the table gives the median. Throughput counts every seed:
``seed_steps/s = S * steps / time``, ``examples/s = B * seed_steps/s``.

Usage::

    python benchmarks/vmap_seeds.py                       # CPU, ~1 min
    python benchmarks/vmap_seeds.py --tag gpu --steps 200
    python benchmarks/vmap_seeds.py --model mnist1d_cnn --tag gpu --steps 200
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import time

import jax
import numpy as np
import optax
from flax import nnx

from sparsejax import train as sj_train
from sparsejax.models import MNIST1DCNN, LeNet300100
from sparsejax.runner.output import environment, markdown_table, write_report

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
make_model = MODELS["lenet300100"][0]
INPUT_SHAPE = MODELS["lenet300100"][1]


def staged_batches(rng: np.random.Generator, steps: int, shape: tuple[int, ...]) -> list:
    """``steps`` device-resident ``(x, y)`` batches with leading axes ``shape`` (B,) or (S, B)."""
    return [
        (
            jax.device_put(rng.normal(size=(*shape, *INPUT_SHAPE)).astype(np.float32)),
            jax.device_put(rng.integers(0, 10, size=shape).astype(np.int32)),
        )
        for _ in range(steps)
    ]


def run_steps(step, state, batches):
    for batch in batches:
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    return state


def bench_sequential(keys, tx, batches, repeats):
    step = sj_train.make_train_step()
    states = []
    for k in keys:
        k_model, k_drop = jax.random.split(k)
        states.append(sj_train.create_train_state(make_model(k_model), tx, key=k_drop))
    t0 = time.perf_counter()
    jax.block_until_ready(step(states[0], batches[0]))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for state in states:
            run_steps(step, state, batches)
        times.append(time.perf_counter() - t0)
    return compile_s, times


def bench_vmap(keys, tx, batches, repeats, per_seed_batches):
    step = sj_train.make_train_step(vmap_seeds=True, per_seed_batches=per_seed_batches)
    state = sj_train.create_train_states(make_model, tx, keys)
    t0 = time.perf_counter()
    jax.block_until_ready(step(state, batches[0]))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_steps(step, state, batches)
        times.append(time.perf_counter() - t0)
    return compile_s, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet300100")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per seed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tag", default=jax.default_backend(), help="output name suffix")
    parser.add_argument("--out-dir", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args()
    global make_model, INPUT_SHAPE
    make_model, INPUT_SHAPE, description = MODELS[args.model]
    load_at_start = os.getloadavg()[0]

    tx = optax.sgd(0.1, momentum=0.9)
    keys = jax.random.split(jax.random.key(0), args.seeds)
    rng = np.random.default_rng(0)
    rows = []
    for batch_size in args.batch_sizes:
        shared = staged_batches(rng, args.steps, (batch_size,))
        per_seed = staged_batches(rng, args.steps, (args.seeds, batch_size))
        runs = {
            "sequential": bench_sequential(keys, tx, shared, args.repeats),
            "vmap": bench_vmap(keys, tx, shared, args.repeats, per_seed_batches=False),
            "vmap_per_seed_batches": bench_vmap(keys, tx, per_seed, args.repeats, True),
        }
        base = None
        for mode, (compile_s, times) in runs.items():
            median = statistics.median(times)
            seed_steps = args.seeds * args.steps / median
            base = seed_steps if mode == "sequential" else base
            rows.append(
                {
                    "mode": mode,
                    "batch_size": batch_size,
                    "seeds": args.seeds,
                    "steps_per_seed": args.steps,
                    "compile_s": compile_s,
                    "times_s": times,
                    "median_s": median,
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
        f"# {args.seeds} seeds of {description}: vmapped vs sequential\n\n"
        f"Device: {env['device']} ({env['backend']}, {env['device_count']} device(s)); "
        f"jax {env['jax']}, flax {env['flax']}; {env['date']}.\n"
        f"Command: `{env['command']}` (XLA_FLAGS={env['xla_flags']!r}). Median of "
        f"{args.repeats} runs of {args.steps} steps per seed, batches pre-staged on the device, "
        f"SGD momentum 0.9. Host load average (1 min) {load_at_start:.1f} at the start, "
        f"{env['load_average_1m']['end']:.1f} at the end ({env['cpu_count']} CPUs).\n"
    )
    print("\n" + table)
    stem = f"vmap_seeds_{args.tag}" if args.model == "lenet300100" else (
        f"vmap_seeds_{args.model}_{args.tag}"
    )
    write_report(
        args.out_dir / f"{stem}.json",
        {
            "benchmark": "vmap_seeds",
            "model": description,
            "optimizer": "sgd(0.1, momentum=0.9)",
            "config": vars(args) | {"out_dir": str(args.out_dir)},
            "environment": env,
            "results": rows,
        },
        header + "\n" + table,
    )


if __name__ == "__main__":
    main()
