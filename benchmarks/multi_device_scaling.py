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

Timing (:func:`sparsejax.runner.time_run`): ``--steps`` steps dispatched back to
back from Python with one sync at the end, after a compile step and a warm-up
window; median of ``--repeats`` windows. Scaling efficiency = tokens/s on N devices / (N x
tokens/s on 1 device).

Usage::

    python benchmarks/multi_device_scaling.py --out-dir DIR      # all GPUs
    python benchmarks/multi_device_scaling.py --dim 64 --heads 4 --depth 2 --vocab 512 \
        --seq 64 --per-device-batch 2 --steps 3 --repeats 1                   # CPU check
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sparsejax as sj
from sparsejax import parallel
from sparsejax import train as sj_train
from sparsejax.models.decoder import DecoderLM, next_token_loss
from sparsejax.runner import (
    config_to_dict,
    environment,
    markdown_table,
    parse_config,
    time_run,
    write_report,
)

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "benchmarks"


@dataclasses.dataclass(frozen=True)
class Config:
    """Throughput of gradual-pruning training on 1 vs N devices: data parallel and FSDP."""

    devices: tuple[int, ...] | None = dataclasses.field(
        default=None, metadata={"help": "device counts (default: 1 and all)"})
    strategies: tuple[str, ...] = ("dp", "fsdp")
    vocab: int = 32768
    dim: int = 768
    depth: int = 12
    heads: int = 12
    seq: int = 1024
    per_device_batch: int = 16
    steps: int = 50
    repeats: int = 3
    tag: str = dataclasses.field(default_factory=jax.default_backend,
                                 metadata={"help": "output name suffix"})
    out_dir: pathlib.Path = RESULTS
    out: pathlib.Path | None = dataclasses.field(
        default=None, metadata={"help": "JSON path (default "
                                        "OUT_DIR/multi_device_scaling_<tag>.json)"})


def main(argv: list[str] | None = None) -> list[dict]:
    cfg = parse_config(Config, argv)
    counts = cfg.devices or sorted({1, len(jax.devices())})

    def make_model():
        return DecoderLM(cfg.vocab, cfg.dim, cfg.depth, cfg.heads, max_len=cfg.seq,
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
    for strategy in cfg.strategies:
        for n in counts:
            mesh = parallel.make_mesh(n)
            state = sj_train.create_train_state(make_model(), tx, key=jax.random.key(1))
            n_params = sum(x.size for x in jax.tree.leaves(state.params))
            state = parallel.shard_state(state, mesh, strategy)
            batch = n * cfg.per_device_batch
            batches = []
            for _ in range(2):
                toks = rng.integers(0, cfg.vocab, size=(batch, cfg.seq + 1)).astype(np.int32)
                batches.append(parallel.shard_batch((toks[:, :-1], toks[:, 1:]), mesh))
            current = {"state": state}
            del state

            def compile_step(current=current, batches=batches):
                current["state"], _ = step(current["state"], batches[0])
                return current["state"]

            def window(current=current, batches=batches):  # every window from the same state
                s = current["state"]
                for i in range(cfg.steps):
                    s, _ = step(s, batches[i % 2])
                return s

            timing = time_run(window, repeats=cfg.repeats, warmup=1, calls=cfg.steps,
                              first=compile_step)
            per_step = timing.median_s
            tokens = batch * cfg.seq / per_step
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
                "compile_s": timing.compile_s,
                "times_s": [t * cfg.steps for t in timing.times_s],  # window seconds
                "step_iqr_ms": timing.iqr_s * 1e3,
            }
            rows.append(row)
            print(f"{strategy:5s} n={n} batch={batch} {per_step * 1e3:8.2f} ms/step "
                  f"{tokens:12,.0f} tok/s  x{row['speedup_vs_1'] or float('nan'):.2f}", flush=True)
            current.clear()
            del batches
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
        f"{cfg.per_device_batch} x {cfg.seq} tokens per device, bf16 compute, AdamW inside "
        "`sparsejax.pruning` (global magnitude, updates every 100 steps); median of "
        f"{cfg.repeats} windows of {cfg.steps} steps. XLA_FLAGS: `{env['xla_flags'] or '(none)'}`.\n"
    )
    print("\n" + table)
    out = write_report(cfg.out or cfg.out_dir / f"multi_device_scaling_{cfg.tag}.json", {
        "benchmark": "multi_device_scaling", "params": n_params,
        "config": config_to_dict(cfg), "environment": env,
        "results": rows,
    }, header + "\n" + table)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return rows


if __name__ == "__main__":
    main()
