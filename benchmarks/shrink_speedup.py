"""Inference speedup of a physically shrunk ResNet-56 vs the dense one (L1 filter pruning).

Li et al. (2017) prune the filters of the first convolution of each residual block of
a CIFAR ResNet-56 by their L1 norm; the block's internal channels (``conv1`` output =
``bn1`` = ``conv2`` input) then disappear from both convolutions. This benchmark:

1. builds :class:`sparsejax.models.ResNet56` (32x32x3 CIFAR shape, random weights and
   inputs, option-A shortcuts unless ``--shortcut B``), eval mode;
2. prunes ``--sparsity`` (default 50 %) of the ``blocks/*/conv1`` filters per layer by
   their L1 norm: ``sparsejax.prune(magnitude, s, structure=Neurons(), reduction="l1")``;
3. shrinks the model with :func:`sparsejax.shrink.shrink` and checks that its
   logits equal the masked model's (:func:`sparsejax.shrink.group_mask`) on a batch;
4. counts FLOPs (multiply-accumulates, one example) with :func:`sparsejax.metrics.flops`:
   the dense model (125,485,696 for ResNet-56, the 1.25e8 of Li et al. 2017, Table 2),
   the shrunk model (62,964,352 at 50 %), and the masked model's nonzero FLOPs (which
   must equal the shrunk model's);
5. times the jitted eval-mode forward pass of both models (``--dtype`` float32 or
   bfloat16) for each ``--batch`` size with :func:`sparsejax.runner.time_calls`: compile
   + ``--warmup`` calls, then ``--repeats`` repetitions of ``--iters`` calls each; the
   table gives the median time per call with the calls dispatched back to back and one
   ``block_until_ready`` at the end (throughput), and beside it the latency with a block
   after every call;
6. with ``--profile``, traces ``--iters`` calls of each model per batch size with
   :func:`sparsejax.runner.kernel_times` and records the device-busy time, the
   kernels per call and the longest kernels (GPU): where the FLOPs saving is lost.

Random data: the timings do not depend on the values.

Usage::

    python benchmarks/shrink_speedup.py --batch 32 --repeats 3   # CPU, ~1 min
    python benchmarks/shrink_speedup.py --batch 64 256 1024 --repeats 20 \\
        --out results/benchmarks/shrink_speedup_gpu.json

References:
  Li, Kadav, Durdanovic, Samet & Graf (2017), Pruning Filters for Efficient ConvNets,
  ICLR (Section 4.2, ResNet-56 on CIFAR-10); Blalock et al. (2020), What is the State of
  Neural Network Pruning?, MLSys (FLOPs counting).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import sparsejax as sj
from sparsejax.metrics import flops
from sparsejax.models import CifarResNet
from sparsejax.runner import (
    config_to_dict,
    environment,
    jit_flat_state,
    markdown_table,
    parse_config,
    time_calls,
    write_report,
)
from sparsejax.shrink import coupled_groups, group_mask, keep_sets, shrink

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "benchmarks"
PRUNABLE = r"^blocks/\d+/conv1/kernel$"


@dataclasses.dataclass(frozen=True)
class Config:
    """Inference speedup of a physically shrunk ResNet-56 vs the dense one (L1 filter pruning)."""

    batch: tuple[int, ...] = dataclasses.field(default=(256,), metadata={"help": "batch sizes"})
    depth: int = dataclasses.field(default=56, metadata={"help": "ResNet depth 6n+2"})
    shortcut: Literal["A", "B"] = "A"
    sparsity: float = dataclasses.field(default=0.5,
                                        metadata={"help": "filters pruned per layer"})
    repeats: int = dataclasses.field(default=10,
                                     metadata={"help": "timed repetitions (median)"})
    iters: int = dataclasses.field(default=5, metadata={"help": "calls per timed repetition"})
    warmup: int = dataclasses.field(default=3,
                                    metadata={"help": "untimed calls after compiling"})
    seed: int = 0
    dtype: Literal["float32", "bfloat16"] = dataclasses.field(
        default="float32",
        metadata={"help": "parameters, statistics and inputs of the timed forward"})
    precision: Literal["default", "high", "highest"] = dataclasses.field(
        default="default",
        metadata={"help": "jax.default_matmul_precision of the timed forward: 'default' lets "
                          "float32 convolutions use TF32 on NVIDIA GPUs, 'highest' is full "
                          "float32 arithmetic"})
    profile: bool = dataclasses.field(
        default=False, metadata={"help": "per-kernel device times of both models "
                                         "(jax.profiler trace)"})
    tag: str = dataclasses.field(default_factory=jax.default_backend,
                                 metadata={"help": "output name suffix"})
    out: pathlib.Path | None = dataclasses.field(
        default=None, metadata={"help": "JSON output path (default "
                                        "results/benchmarks/shrink_speedup_<tag>.json; a .md "
                                        "beside it)"})


def forward_fn(model: nnx.Module, dtype=jnp.float32, precision: str | None = None):
    """``(jitted f(leaves, x) -> logits, leaves)`` for the model in eval mode.

    The state travels as a flat list of arrays (flattened once here), so a call costs no
    NNX-state flattening on the host; floating leaves are cast to ``dtype``. ``precision``
    (``jax.default_matmul_precision``: ``"highest"`` is full float32 arithmetic, no TF32)
    applies to every convolution and product traced in ``f``; ``None`` keeps JAX's default.
    """
    model = nnx.clone(model)
    model.eval()
    graphdef, state = nnx.split(model)
    state = jax.tree.map(
        lambda v: jnp.asarray(v, dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state
    )

    def f(state, x):
        with jax.default_matmul_precision(precision):
            return nnx.merge(graphdef, state)(x)

    return jit_flat_state(f, state)


def count_flops(model: nnx.Module, mask=None):
    """FLOPs report of one example (params traced, running statistics closed over)."""
    model = nnx.clone(model)
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.ShapeDtypeStruct((1, *model.in_shape), jnp.float32)
    return flops(lambda p, v: nnx.merge(graphdef, p, rest)(v), params, x, mask=mask)


def conv_traffic(model: CifarResNet, batch: int, itemsize: int) -> dict[str, float]:
    """Fewest activation bytes a conv-by-conv forward moves (one batch; weights excluded).

    Each convolution reads its input and writes its output once; BatchNorm, ReLU and the
    shortcut add are taken as fused into the convolutions' epilogues, so the shortcut costs
    one more read of the block input (strided for stride 2, before option A's zero
    channels). This is the traffic of the best schedule that still runs one kernel per
    convolution; below it, a block's intermediate activation must stay on chip (one fused
    kernel per residual block). Bytes over bandwidth bound the time from below when, as
    here, the arithmetic takes less time than the traffic.
    """
    h, w = model.in_shape[0], model.in_shape[1]
    total = batch * h * w * (model.in_shape[2] + model.conv.out_features)  # stem conv
    for block in model.blocks:
        c_in = block.conv1.in_features
        s = block.stride
        h, w = -(-h // s), -(-w // s)
        c1, c2 = block.conv1.out_features, block.conv2.out_features
        hw = batch * h * w
        conv1 = hw * s * s * c_in + hw * c1  # full-resolution input read
        conv2 = hw * c1 + hw * c2
        short = hw * (block.shortcut_conv.out_features if block.projection else c_in)
        total += conv1 + conv2 + short
    return {"bytes": float(total * itemsize)}


def time_forward(f, state, x, warmup: int, repeats: int, iters: int,
                 device_calls: int = 0) -> dict:
    """Median seconds per call: ``pipelined`` (the throughput figure the table reports)
    dispatches ``iters`` calls and blocks once, ``latency`` blocks after every call;
    with ``device_calls``, also the device time per call (``kernel_times``)."""
    pipelined = time_calls(f, state, x, repeats=repeats, calls=iters, warmup=warmup,
                           device_calls=device_calls)
    latency = time_calls(f, state, x, repeats=repeats, calls=iters, warmup=0, block_each=True)
    return {"compile_s": pipelined.compile_s, "latency_times_s": list(latency.times_s),
            "times_s": list(pipelined.times_s), "latency_median_s": latency.median_s,
            "median_s": pipelined.median_s, "iqr_s": pipelined.iqr_s,
            "latency_iqr_s": latency.iqr_s, "device": pipelined.device}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_config(Config, argv)
    out = args.out or RESULTS / f"shrink_speedup_{args.tag}.json"
    load_at_start = os.getloadavg()[0]

    dense = CifarResNet(args.depth, (32, 32, 3), 10, shortcut=args.shortcut,
                        rngs=nnx.Rngs(args.seed))  # fmt: skip
    params = nnx.state(dense, nnx.Param)
    mask = jax.jit(
        lambda p: sj.prune(
            sj.scores.magnitude(p),
            args.sparsity,
            structure=sj.Neurons(),
            prunable=PRUNABLE,
            reduction="l1",
        )
    )(params)
    groups = coupled_groups(dense)
    keep = keep_sets(groups, params, mask)
    small = shrink(dense, mask, groups=groups)

    # Equivalence check: shrunk == masked model (conv1 filters, bn1 channels, conv2 rows zeroed).
    gmask = group_mask(groups, params, keep)
    graphdef, p, rest = nnx.split(dense, nnx.Param, ...)
    masked = nnx.merge(graphdef, sj.apply_mask(p, gmask), rest, copy=True)
    x_check = jnp.asarray(np.random.default_rng(1).normal(size=(8, 32, 32, 3)), jnp.float32)
    with jax.default_matmul_precision("float32"):
        f_m, s_m = forward_fn(masked)
        f_s, s_s = forward_fn(small)
        ref, got = f_m(s_m, x_check), f_s(s_s, x_check)
        # Relative to the logit scale: random He-initialised BN ResNets have large logits.
        max_diff = float(jnp.max(jnp.abs(ref - got)) / jnp.max(jnp.abs(ref)))

    dense_flops = count_flops(dense)
    small_flops = count_flops(small)
    masked_flops = count_flops(dense, mask=gmask)
    theory = dense_flops.total_flops / small_flops.total_flops
    n_dense = sum(x.size for x in jax.tree.leaves(params))
    n_small = sum(x.size for x in jax.tree.leaves(nnx.state(small, nnx.Param)))
    print(
        f"ResNet-{args.depth}{args.shortcut}: {n_dense:,} -> {n_small:,} parameters; "
        f"FLOPs/example {dense_flops.total_flops:,} -> {small_flops.total_flops:,} "
        f"(x{theory:.3f}); masked nonzero FLOPs {masked_flops.nonzero_flops:,.0f}; "
        f"max |shrunk - masked| / max |masked| = {max_diff:.2e}",
        flush=True,
    )

    dtype = jnp.dtype(args.dtype)
    precision = None if args.precision == "default" else args.precision
    f_dense, s_dense = forward_fn(dense, dtype, precision)
    f_small, s_small = forward_fn(small, dtype, precision)
    rng = np.random.default_rng(args.seed)
    rows, profiles = [], []
    for b in args.batch:
        x = jax.device_put(jnp.asarray(rng.normal(size=(b, 32, 32, 3)), dtype))
        device_calls = args.iters if args.profile else 0
        td = time_forward(f_dense, s_dense, x, args.warmup, args.repeats, args.iters,
                          device_calls)
        ts = time_forward(f_small, s_small, x, args.warmup, args.repeats, args.iters,
                          device_calls)
        profile = {"dense": td.pop("device"), "shrunk": ts.pop("device")}
        row = {
            "batch_size": b,
            "dense": td,
            "shrunk": ts,
            "dense_ms": 1e3 * td["median_s"],
            "shrunk_ms": 1e3 * ts["median_s"],
            "speedup": td["median_s"] / ts["median_s"],
            "dense_latency_ms": 1e3 * td["latency_median_s"],
            "shrunk_latency_ms": 1e3 * ts["latency_median_s"],
            "latency_speedup": td["latency_median_s"] / ts["latency_median_s"],
            "theoretical_speedup": theory,
            "dense_images_per_s": b / td["median_s"],
            "shrunk_images_per_s": b / ts["median_s"],
        }
        row["ratio"] = row["speedup"] / theory
        traffic = (conv_traffic(dense, b, dtype.itemsize)["bytes"],
                   conv_traffic(small, b, dtype.itemsize)["bytes"])
        row["traffic_gb"] = {"dense": traffic[0] / 1e9, "shrunk": traffic[1] / 1e9}
        row["traffic_speedup"] = traffic[0] / traffic[1]
        if args.profile:
            for name, prof in profile.items():
                row[f"{name}_profile"] = prof.to_dict()
                profiles.append((b, name, prof))
        rows.append(row)
        print(
            f"B={b:5d} dense {row['dense_ms']:9.3f} ms  shrunk {row['shrunk_ms']:9.3f} ms  "
            f"x{row['speedup']:.2f} (FLOPs x{theory:.2f})",
            flush=True,
        )

    env = environment(load_at_start)
    table = markdown_table(
        rows,
        [
            ("batch", "{batch_size}"),
            ("dense (ms)", "{dense_ms:.3f}"),
            ("shrunk (ms)", "{shrunk_ms:.3f}"),
            ("measured speedup", "{speedup:.2f}x"),
            ("FLOPs speedup", "{theoretical_speedup:.2f}x"),
            ("measured / FLOPs", "{ratio:.2f}"),
            ("traffic speedup", "{traffic_speedup:.2f}x"),
            ("latency dense / shrunk (ms)", "{dense_latency_ms:.3f} / {shrunk_latency_ms:.3f}"),
            ("dense img/s", "{dense_images_per_s:,.0f}"),
            ("shrunk img/s", "{shrunk_images_per_s:,.0f}"),
        ],
    )
    header = (
        f"# ResNet-{args.depth} (option {args.shortcut}): dense vs shrunk after pruning "
        f"{args.sparsity:.0%} of the block-internal filters (L1, Li et al. 2017)\n\n"
        f"Device: {env['device']} ({env['backend']}); jax {env['jax']}, flax {env['flax']}; "
        f"{env['date']}. Command: `{env['command']}`.\n"
        f"Parameters {n_dense:,} -> {n_small:,}; FLOPs (MACs) per 32x32 image "
        f"{dense_flops.total_flops:,} -> {small_flops.total_flops:,} (masked model's nonzero "
        f"FLOPs {masked_flops.nonzero_flops:,.0f}); logits max |shrunk - masked| / max |masked| "
        f"= {max_diff:.1e}. Jitted eval-mode forward in {args.dtype}, matmul precision {args.precision} (state passed as a flat "
        f"list of arrays), median over {args.repeats} repetitions of {args.iters} calls after "
        f"{args.warmup} warm-up calls: ms columns dispatch the {args.iters} calls and block "
        f"once (throughput); latency blocks after each call. Host load (1 min) {load_at_start:.1f} -> "
        f"{env['load_average_1m']['end']:.1f} ({env['cpu_count']} CPUs).\n"
        "Traffic speedup: dense over shrunk activation bytes of a conv-by-conv forward "
        "(each convolution reads its input and writes its output once, BN / ReLU / shortcut "
        "add fused into them; `conv_traffic`): the speedup a memory-bound forward that runs "
        "one kernel per convolution can reach.\n"
    )
    print("\n" + table)
    sections = [header, table]
    if profiles:
        sections.append(
            f"## Device kernels per call (jax.profiler trace of {args.iters} calls)\n\n"
            + markdown_table(
                [{"batch": b, "model": name, "busy": p.busy_us, "span": p.span_us,
                  "kernels": p.kernels} for b, name, p in profiles],
                [("batch", "{batch}"), ("model", "{model}"), ("device busy (µs)", "{busy:.1f}"),
                 ("first to last kernel (µs)", "{span:.1f}"), ("kernels", "{kernels:g}")],
            )
        )
        for b, name, p in profiles:
            sections.append(f"### batch {b}, {name}: longest kernels\n\n" + p.table(top=8))
    write_report(
        out,
        {
            "benchmark": "shrink_speedup",
            "model": f"ResNet{args.depth}{args.shortcut}",
            "config": config_to_dict(args) | {"out": str(out)},
            "environment": env,
            "parameters": {"dense": n_dense, "shrunk": n_small},
            "flops_per_example": {
                "dense": dense_flops.total_flops,
                "shrunk": small_flops.total_flops,
                "masked_nonzero": masked_flops.nonzero_flops,
                "theoretical_speedup": theory,
            },
            "max_rel_diff_shrunk_vs_masked": max_diff,
            "results": rows,
        },
        "\n\n".join(sections),
    )
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return rows


if __name__ == "__main__":
    main()
