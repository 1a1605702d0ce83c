"""Inference latency of gated models: gathered (active channels only) vs masked vs dense.

For each model (the MNIST-1D CNN, LeNet-5 on 28×28×1), batch size and density,
three jitted forward passes are timed:

* ``dense``: the zoo model (:class:`sparsejax.models.MNIST1DCNN` /
  :class:`sparsejax.models.LeNet5`), the reference;
* ``masked``: the gated model on the masked path — every channel computed,
  then multiplied by the gate (density a traced argument);
* ``gathered``: :func:`sparsejax.dynamic.make_gathered` — per example, the
  ``k`` active output columns of each kernel (and the matching input rows of
  the next layer) are gathered into dense arrays with a static ``k`` and only
  those are computed (one compilation per distinct ``k``).

Every path gets the model state as a flat list of arrays (no pytree flattening
on the host per call). ``--widths`` sets the channels of the MNIST-1D CNN, to
show where the gathered path starts to pay off: the reference width (25) is
dominated by per-operation overhead. Weights are random (latency does not
depend on them: ``k`` is static). Timing (:func:`sparsejax.runner.time_calls`):
each call is compiled, warmed up (2 calls), then timed ``--repeats`` times over
``--iters`` calls each; the table gives the median time per call and the speedup
over ``dense``. Effective MACs are the cost model of
:func:`sparsejax.dynamic.effective_flops` (predictor included).

Usage::

    python benchmarks/gating_latency.py                      # CPU, < 60 s
    python benchmarks/gating_latency.py --tag gpu --batch-sizes 1 8 64
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax import dynamic
from sparsejax.models import MNIST1DCNN, LeNet5
from sparsejax.runner import (
    config_to_dict,
    environment,
    jit_flat_state,
    markdown_table,
    parse_config,
    time_calls,
    write_report,
)

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "benchmarks"

# name -> (dense(rngs, width), gated(rngs, width), input shape, whether --widths applies)
MODELS = {
    "mnist1d_cnn": (lambda r, c: MNIST1DCNN(channels=c, rngs=r),
                    lambda r, c: dynamic.GatedMNIST1DCNN(channels=c, rngs=r), (40,), True),
    "lenet5": (lambda r, c: LeNet5(rngs=r), lambda r, c: dynamic.GatedLeNet5(rngs=r),
               (28, 28, 1), False),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Inference latency of gated models: gathered (active channels only) vs masked vs dense."""

    models: tuple[Literal["mnist1d_cnn", "lenet5"], ...] = ("mnist1d_cnn", "lenet5")
    batch_sizes: tuple[int, ...] = (1, 16)
    densities: tuple[float, ...] = (1.0, 0.5, 0.25)
    widths: tuple[int, ...] = dataclasses.field(
        default=(25,), metadata={"help": "channels of every MNIST-1D CNN convolution (25: the "
                                         "reference model); LeNet-5 keeps its 20/50/500"})
    repeats: int = dataclasses.field(default=5, metadata={"help": "timed samples (median)"})
    iters: int = dataclasses.field(default=20, metadata={"help": "calls per sample"})
    tag: str = dataclasses.field(default_factory=jax.default_backend,
                                 metadata={"help": "output name suffix"})
    out: pathlib.Path | None = dataclasses.field(
        default=None, metadata={"help": "JSON path (default "
                                        "results/benchmarks/gating_latency_<tag>.json)"})


def time_call(fn, args, repeats: int, iters: int) -> tuple[float, float, float]:
    """(compile + first call seconds, median and IQR of the seconds per call): 2 warm-up
    calls, then ``repeats`` samples of ``iters`` calls dispatched back to back."""
    t = time_calls(fn, *args, repeats=repeats, calls=iters, warmup=2)
    return t.compile_s, t.median_s, t.iqr_s


def main(argv: list[str] | None = None) -> list[dict]:
    cfg = parse_config(Config, argv)
    for d in cfg.densities:
        dynamic.check_density(d)

    rows = []
    rng = np.random.default_rng(0)
    runs = [(name, w) for name in cfg.models
            for w in (cfg.widths if MODELS[name][3] else [None])]
    for name, width in runs:
        make_dense, make_gated, shape, _ = MODELS[name]
        dense = make_dense(nnx.Rngs(0), width)
        gated = make_gated(nnx.Rngs(0), width)
        label = name if width is None else f"{name} C={width}"
        dg, ds = nnx.split(dense)
        gg, gstate = nnx.split(gated)
        dense_fn, ds = jit_flat_state(lambda s, x, g=dg: nnx.merge(g, s)(x), ds)
        masked_fn, gs = jit_flat_state(lambda s, x, d, g=gg: nnx.merge(g, s)(x, d), gstate)
        dense_macs = dynamic.dense_flops(gated.costs)
        full = {n: c.out_channels for n, c in zip(gated.gated_layers, gated.costs, strict=False)}
        full_macs = float(dynamic.effective_flops(gated.costs, full))  # masked: all + predictors
        for batch in cfg.batch_sizes:
            x = jnp.asarray(rng.normal(size=(batch, *shape)).astype(np.float32))
            c_dense, t_dense, q_dense = time_call(dense_fn, (ds, x), cfg.repeats, cfg.iters)
            rows.append({"model": label, "batch": batch, "density": 1.0, "path": "dense",
                         "ks": "", "rel_macs": 1.0, "compile_s": c_dense, "latency_s": t_dense,
                         "latency_iqr_s": q_dense, "speedup": 1.0})
            for d in cfg.densities:
                ks = gated.active_k(d)
                counts = dict(zip(gated.gated_layers, ks, strict=True))
                macs = float(dynamic.effective_flops(gated.costs, counts))
                for path, fn, fargs in (
                    ("masked", masked_fn, (gs, x, jnp.float32(d))),
                    ("gathered", jit_flat_state(dynamic.make_gathered(gg, ks), gstate)[0], (gs, x)),
                ):
                    c, t, q = time_call(fn, fargs, cfg.repeats, cfg.iters)
                    rows.append({"model": label, "batch": batch, "density": d, "path": path,
                                 "ks": "/".join(map(str, ks)),
                                 "rel_macs": (macs if path == "gathered" else full_macs)
                                 / dense_macs,
                                 "compile_s": c, "latency_s": t, "latency_iqr_s": q,
                                 "speedup": t_dense / t})
            print(f"{label} batch {batch}: done", flush=True)
    env = environment()
    table = markdown_table(
        rows,
        [("model", "{model}"), ("batch", "{batch}"), ("path", "{path}"),
         ("density", "{density:g}"), ("k per layer", "{ks}"), ("rel. MACs", "{rel_macs:.1%}"),
         ("latency", "{latency_s:.2e} s"), ("speedup vs dense", "{speedup:.2f}×"),
         ("compile", "{compile_s:.2f} s")],
    )
    header = (f"# Gated inference latency ({env['device']}, jax {env['jax']})\n\n"
              f"Median of {cfg.repeats} × {cfg.iters} calls after warm-up. "
              "`masked`: all channels computed then gated (MACs = dense + predictors); "
              "`gathered`: only the active channels (MACs of the cost model). "
              "Every path gets the state as a flat list of arrays.\n"
              f"Command: `python benchmarks/{env['command']}`\n\n")
    print(header + table)
    out = cfg.out or RESULTS / f"gating_latency_{cfg.tag}.json"
    write_report(out, {"environment": env, "args": config_to_dict(cfg), "rows": rows},
                 header + table)
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    return rows


if __name__ == "__main__":
    main()
