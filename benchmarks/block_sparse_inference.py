"""End-to-end inference: a block-pruned transformer FFN, dense vs block-sparse, tokens/s.

The model is the feed-forward block of a transformer, ``y = W₂ · gelu(W₁ x + b₁) + b₂``
(``--d-model`` → ``--d-ff`` → ``--d-model``, default 4096 → 16384 → 4096, bf16),
built from two ``nnx.Linear``. For each sparsity in ``--sparsities`` both
kernels are block-pruned by magnitude with the library
(``sj.prune(|W|, s, structure=sj.Blocks(b, b))``, per layer) and the layers
are swapped for :class:`sparsejax.block_sparse.BlockSparseLinear`
(``from_linear``). Rows of the table:

* ``dense``: the unpruned FFN (XLA/cuBLAS);
* ``masked s``: the pruned FFN with dense kernels (``where(mask, W, 0)`` stored
  dense, so the cost is the dense cost);
* ``block-sparse s``: the same pruned FFN with the Pallas kernel, once per
  launch configuration of ``--configs`` (``auto``: chosen per dtype and block
  by :func:`sparsejax.block_sparse.choose_launch`;
  ``block_m:block_k:num_warps:num_stages`` with empty fields automatic; a
  ``/natural`` suffix turns off the heaviest-columns-first launch order).

Each model is split with ``nnx.split`` and its forward is a ``jax.jit``-ed pure
function of ``(state, x)`` (no NNX graph traversal inside the timing); timing as
in ``block_sparse_matmul.py`` (:func:`sparsejax.runner.time_calls`: warmup,
``--inner`` back-to-back calls per sample, ``block_until_ready``, median of
``--reps`` samples). The sparse output
is checked against the masked dense FFN (max relative error in the JSON).

Usage (GPU)::

    python benchmarks/block_sparse_inference.py \\
        --out results/benchmarks/block_sparse_inference_gpu.json

CPU smoke test::

    python benchmarks/block_sparse_inference.py --interpret --d-model 64 \\
        --d-ff 256 --tokens 32 --block 16 --reps 2 --inner 1 --out /tmp/bsi.json

References:
  Gray, Radford, Kingma. "GPU Kernels for Block-Sparse Weights", OpenAI, 2017.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

import sparsejax as sj
from sparsejax.block_sparse import (
    BlockSparseLinear,
    KernelConfig,
    Tiling,
    choose_launch,
    smem_limit,
)
from sparsejax.runner import (
    config_to_dict,
    environment,
    markdown_table,
    parse_config,
    time_calls,
    write_report,
)

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "benchmarks"


@dataclasses.dataclass(frozen=True)
class Config:
    """End-to-end inference: a block-pruned transformer FFN, dense vs block-sparse, tokens/s."""

    d_model: int = 4096
    d_ff: int = 16384
    tokens: int = 2048
    sparsities: tuple[float, ...] = (0.75, 0.9)
    block: int = 128
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    configs: tuple[str, ...] = dataclasses.field(
        default=("auto",), metadata={"help": "launch configs: auto | "
                                             "block_m:block_k:num_warps:num_stages[/natural]"})
    reps: int = 30
    inner: int = 10
    seed: int = 0
    interpret: bool = dataclasses.field(default=False,
                                        metadata={"help": "Pallas interpret mode (CPU)"})
    tag: str = dataclasses.field(default_factory=jax.default_backend,
                                 metadata={"help": "output name suffix"})
    out: pathlib.Path | None = dataclasses.field(
        default=None, metadata={"help": "JSON path (default "
                                        "results/benchmarks/block_sparse_inference_<tag>.json)"})


class FFN(nnx.Module):
    """``(..., d) → (..., d)``: ``fc2(gelu(fc1(x)))``; ``fc1``/``fc2`` any Linear-like layers."""

    def __init__(self, fc1: nnx.Module, fc2: nnx.Module):
        self.fc1 = fc1
        self.fc2 = fc2

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x)))


def dense_ffn(d_model: int, d_ff: int, dtype: Any, seed: int) -> FFN:
    rngs = nnx.Rngs(seed)
    kw = {"dtype": dtype, "param_dtype": dtype, "rngs": rngs}
    return FFN(nnx.Linear(d_model, d_ff, **kw), nnx.Linear(d_ff, d_model, **kw))


def prune_ffn(model: FFN, sparsity: float, block: int, cfg: KernelConfig) -> tuple[FFN, FFN]:
    """``(masked dense FFN, block-sparse FFN)`` at ``sparsity`` (magnitude, per layer)."""
    kernels = {"fc1": model.fc1.kernel[...], "fc2": model.fc2.kernel[...]}
    scores = jax.tree.map(lambda w: jnp.abs(w.astype(jnp.float32)), kernels)
    masks = sj.prune(scores, sparsity, structure=sj.Blocks(block, block))
    masked = nnx.clone(model)
    masked.fc1.kernel[...] = jnp.where(masks["fc1"], kernels["fc1"], 0)
    masked.fc2.kernel[...] = jnp.where(masks["fc2"], kernels["fc2"], 0)
    sparse = FFN(
        BlockSparseLinear.from_linear(model.fc1, masks["fc1"], block=block, config=cfg),
        BlockSparseLinear.from_linear(model.fc2, masks["fc2"], block=block, config=cfg),
    )
    return masked, sparse


def inference_config(text: str, interpret: bool) -> KernelConfig:
    """``"auto"``, ``"256:64:8:3"`` or ``"...:.../natural"`` → a forward-only :class:`KernelConfig`."""
    spec, _, order = text.partition("/")
    if order not in ("", "natural"):
        raise ValueError(f"a config is TILING or TILING/natural, got {text!r}")
    return KernelConfig(backend="pallas", interpret=interpret, fwd=Tiling.from_string(spec),
                        balance=order != "natural")


def pure_forward(model: nnx.Module):
    """``(jit(f), state)`` with ``f(state, x) = merge(graphdef, state)(x)``."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda st, x: nnx.merge(graphdef, st)(x)), state


def bench(fn, args, reps: int, inner: int) -> float:
    """Median seconds per call (:func:`sparsejax.runner.time_calls`, 2 warm-up calls)."""
    return time_calls(fn, *args, repeats=reps, calls=inner).median_s


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_config(Config, argv)
    out = args.out or RESULTS / f"block_sparse_inference_{args.tag}.json"

    env = environment()
    dtype = jnp.dtype(args.dtype)
    try:
        configs = {text: inference_config(text, args.interpret) for text in args.configs}
    except ValueError as e:
        raise SystemExit(f"block_sparse_inference.py: error: --configs: {e}") from None

    def launch_text(cfg: KernelConfig, sparsity: float) -> str:
        """The forward launches of fc1 / fc2 (kept blocks per block column differ)."""
        return " / ".join(
            str(choose_launch(
                "fwd", cfg.fwd, m=args.tokens, block=(args.block, args.block),
                itemsize=dtype.itemsize, limit=smem_limit(),
                blocks_per_program=(1 - sparsity) * k_in / args.block))
            for k_in in (args.d_model, args.d_ff)
        )

    launches = {}
    for text, cfg in configs.items():
        for s in args.sparsities:
            try:
                launches[text, s] = launch_text(cfg, s)
            except ValueError as e:
                msg = f"block_sparse_inference.py: error: --configs {text}: {e}"
                raise SystemExit(msg) from None
    print(f"device: {env['device']}, jax {env['jax']}, FFN {args.d_model}->{args.d_ff}->"
          f"{args.d_model}, {args.tokens} tokens, {dtype}, block {args.block}", flush=True)
    model = dense_ffn(args.d_model, args.d_ff, dtype, args.seed)
    x = jax.random.normal(jax.random.key(args.seed + 1), (args.tokens, args.d_model), dtype)

    f, st = pure_forward(model)
    t_dense = bench(f, (st, x), args.reps, args.inner)
    rows = [{"model": "dense", "config": None, "launch": None, "sparsity": 0.0,
             "ms": t_dense * 1e3, "tokens_per_s": args.tokens / t_dense, "speedup": 1.0,
             "max_rel_err": None}]
    for s in args.sparsities:
        first = next(iter(configs.values()))
        masked, sparse = prune_ffn(model, s, args.block, first)
        fm, sm = pure_forward(masked)
        ref = fm(sm, x).astype(jnp.float32)
        t = bench(fm, (sm, x), args.reps, args.inner)
        rows.append({"model": f"masked {s:.2f}", "config": None, "launch": None, "sparsity": s,
                     "ms": t * 1e3, "tokens_per_s": args.tokens / t, "speedup": t_dense / t,
                     "max_rel_err": None})
        print(f"masked {s:.2f}: {t * 1e3:.3f} ms, {t_dense / t:.2f}x", flush=True)
        for text, cfg in configs.items():
            sparse.fc1.config = sparse.fc2.config = cfg  # static: part of the graphdef
            fs, ss = pure_forward(sparse)
            err = float(jnp.max(jnp.abs(fs(ss, x).astype(jnp.float32) - ref)) /
                        (jnp.max(jnp.abs(ref)) + 1e-30))
            t = bench(fs, (ss, x), args.reps, args.inner)
            rows.append({"model": f"block-sparse {s:.2f}", "config": text,
                         "launch": launches[text, s], "sparsity": s, "ms": t * 1e3,
                         "tokens_per_s": args.tokens / t, "speedup": t_dense / t,
                         "max_rel_err": err})
            print(f"block-sparse {s:.2f} [{text} = {launches[text, s]}]: {t * 1e3:.3f} ms, "
                  f"{args.tokens / t:,.0f} tokens/s, {t_dense / t:.2f}x, rel err {err:.1e}",
                  flush=True)
            del ss
        del masked, sparse, sm, ref

    for r in rows:
        r["cfg"] = "—" if r["config"] is None else f"{r['config']} = {r['launch']}"
    text = markdown_table(rows, [("model", "{model}"), ("config", "{cfg}"),
                                 ("ms / batch", "{ms:.3f}"),
                                 ("tokens/s", "{tokens_per_s:,.0f}"),
                                 ("speedup vs dense", "{speedup:.2f}")])
    print(text)
    write_report(out, {"environment": env, "args": config_to_dict(args) | {"out": str(out)},
                       "rows": rows},
        f"# block-sparse FFN inference ({env['device']}, jax {env['jax']}, {env['date']})\n\n"
        f"`{env['command']}`\n\n{text}\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
