"""Throughput of gradual-pruning training on 1 vs N devices: data parallel and FSDP.

The model is the GPT decoder of :mod:`sparsejax.models.decoder` (111M
parameters at the defaults, bfloat16 compute) trained with AdamW wrapped in
``sparsejax.pruning`` (magnitude, global scope, Zhu & Gupta schedule updating
every 100 steps). Weak scaling: every device gets ``--per-device-batch``
sequences of ``--seq`` tokens, so N devices process N times the tokens per
step. State and batches are placed with :mod:`sparsejax.parallel`
(``"dp"``: replicated state, gradients all-reduced; ``"fsdp"``: every large
leaf -- params, Adam moments, full-shape masks -- split over the devices); the
step is the unchanged :func:`sparsejax.train.make_train_step`.

Timing: ``--steps`` steps dispatched back to back from Python with one sync
at the end, after a compile step and a warm-up window; median of
``--repeats`` windows. Scaling efficiency = tokens/s on N devices / (N x
tokens/s on 1 device).

Usage::

    python benchmarks/multi_device_scaling.py --out-dir DIR      # all GPUs
    python benchmarks/multi_device_scaling.py --dim 64 --heads 4 --depth 2 --vocab 512 \
        --seq 64 --per-device-batch 2 --steps 3 --repeats 1                   # CPU check
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sparsejax as sj
from sparsejax import parallel
from sparsejax import train as sj_train
from sparsejax.models.decoder import DecoderLM, next_token_loss
from sparsejax.runner.output import environment, markdown_table, write_report

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "benchmarks"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, nargs="+", default=None, help="default: 1 and all")
    ap.add_argument("--strategies", nargs="+", default=["dp", "fsdp"])
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--per-device-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tag", default=jax.default_backend())
    ap.add_argument("--out-dir", type=pathlib.Path, default=RESULTS)
    args = ap.parse_args()
    counts = args.devices or sorted({1, len(jax.devices())})

    def make_model():
        return DecoderLM(args.vocab, args.dim, args.depth, args.heads, max_len=args.seq,
                         dtype=jnp.bfloat16, rngs=nnx.Rngs(0))

    tx = sj.pruning(
        optax.adamw(3e-4, weight_decay=0.1),
        score=lambda p, g: sj.scores.magnitude(p),
        schedule=sj.schedules.polynomial(0.0, 0.8, begin=1, end=1 + 100 * 1000, every=100),
        prunable=lambda path, leaf: path.endswith("kernel"),
        scope="global",
    )
    step = sj_train.make_train_step(loss_fn=next_token_loss, metrics_fn=lambda lg, lb: {})
    rng = np.random.default_rng(0)
    rows = []
    base: dict[str, float] = {}
    n_params = None
    for strategy in args.strategies:
        for n in counts:
            mesh = parallel.make_mesh(n)
            state = sj_train.create_train_state(make_model(), tx, key=jax.random.key(1))
            n_params = sum(x.size for x in jax.tree.leaves(state.params))
            state = parallel.shard_state(state, mesh, strategy)
            batch = n * args.per_device_batch
            batches = []
            for _ in range(2):
                toks = rng.integers(0, args.vocab, size=(batch, args.seq + 1)).astype(np.int32)
                batches.append(parallel.shard_batch((toks[:, :-1], toks[:, 1:]), mesh))
            t0 = time.perf_counter()
            state, _ = step(state, batches[0])
            jax.block_until_ready(state)
            compile_s = time.perf_counter() - t0
            times = []
            for r in range(args.repeats + 1):  # first window = warm-up
                s = state
                t0 = time.perf_counter()
                for i in range(args.steps):
                    s, _ = step(s, batches[i % 2])
                jax.block_until_ready(s)
                if r:
                    times.append(time.perf_counter() - t0)
            per_step = statistics.median(times) / args.steps
            tokens = batch * args.seq / per_step
            if n == 1:
                base[strategy] = tokens
            row = {
                "strategy": strategy,
                "devices": n,
                "global_batch": batch,
                "step_ms": per_step * 1e3,
                "tokens_per_s": tokens,
                "speedup_vs_1": tokens / base[strategy] if strategy in base else None,
                "efficiency": tokens / (n * base[strategy]) if strategy in base else None,
                "compile_s": compile_s,
                "times_s": times,
            }
            rows.append(row)
            print(f"{strategy:5s} n={n} batch={batch} {per_step * 1e3:8.2f} ms/step "
                  f"{tokens:12,.0f} tok/s  x{row['speedup_vs_1'] or float('nan'):.2f}", flush=True)
            del state, s, batches
    env = environment()
    table = markdown_table(rows, [
        ("strategy", "{strategy}"), ("devices", "{devices}"), ("global batch", "{global_batch}"),
        ("ms/step", "{step_ms:.2f}"), ("tokens/s", "{tokens_per_s:,.0f}"),
        ("speedup", "{speedup_vs_1:.2f}x"), ("efficiency", "{efficiency:.2f}"),
    ])
    header = (
        f"# Multi-device scaling of gradual-pruning training (GPT decoder, {n_params:,} params)\n\n"
        f"Device: {env['device']} x{env['device_count']} ({env['backend']}); jax {env['jax']}, "
        f"flax {env['flax']}; {env['date']}.\nCommand: `{env['command']}`. "
        f"{args.per_device_batch} x {args.seq} tokens per device, bf16 compute, AdamW inside "
        "`sparsejax.pruning` (global magnitude, updates every 100 steps); median of "
        f"{args.repeats} windows of {args.steps} steps. XLA_FLAGS: `{env['xla_flags'] or '(none)'}`.\n"
    )
    print("\n" + table)
    write_report(args.out_dir / f"multi_device_scaling_{args.tag}.json", {
        "benchmark": "multi_device_scaling", "params": n_params,
        "config": vars(args) | {"out_dir": str(args.out_dir)}, "environment": env,
        "results": rows,
    }, header + "\n" + table)


if __name__ == "__main__":
    main()
