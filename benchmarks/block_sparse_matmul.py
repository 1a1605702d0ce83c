"""Benchmark: block-sparse ``x @ W`` (Pallas kernel) vs dense, masked dense and ``jax.experimental.sparse``.

For each weight size ``K = N`` (``--sizes``), block sparsity (``--sparsities``)
and block size (``--blocks``), a random bf16 weight is block-pruned with the
library's own selection (``sj.prune(|w|, s, structure=sj.Blocks(b, b))``,
exactly ``round(s·nblocks)`` blocks pruned), converted with
:meth:`BlockSparseMatrix.from_dense`, and ``x : (--batch, K)`` is multiplied by
it. Methods, all in one process on the same arrays:

* ``dense``: ``x @ W`` in bf16 (XLA → cuBLAS on GPU): the baseline of the speedup.
* ``masked``: ``x @ where(mask, W, 0)`` (what mask-based pruning costs today).
* ``bcsr``: ``jax.experimental.sparse.BCSR``. ``x @ BCSR`` raises
  ``NotImplementedError`` ("bcsr_dot_general currently implemented for BCSR lhs
  and ndarray rhs", jax 0.10), so it is timed as ``(BCSR(Wᵀ) @ xᵀ)ᵀ``; in bf16
  it has no cuSPARSE lowering and falls back to a gather implementation whose
  ``nse × batch`` intermediate is skipped above ``--bcsr-max-gb`` (recorded);
  ``bcsr_f32`` times the float32 cuSPARSE path for reference.
* ``kernel``: :func:`sparsejax.block_sparse.block_sparse_matmul`, Pallas
  (Triton on GPU). Each launch configuration of ``--configs`` is timed
  forward (``auto``: chosen by :func:`sparsejax.block_sparse.choose_launch`;
  ``block_m:block_k:num_warps:num_stages``, empty fields automatic; a ``/natural``
  suffix launches the block columns in natural order instead of heaviest
  first). A configuration that does not fit in shared memory is recorded as
  skipped, one whose output differs from ``x @ where(mask, W, 0)`` (float32)
  by more than 2e-2 (relative to max |y|) is recorded and never "best". The
  fastest forward is reported as ``kernel`` (all are in the JSON, method
  ``kernel_config``), and only it is timed forward+backward (its tiling also
  for ``dx``; ``d data`` automatic).

``fwd+bwd`` times ``y, (dx, dW) = vjp(f, x, W)(ct)`` (for the kernel ``dW`` is
the gradient of the kept blocks; BCSR is not timed backwards).

Timing (:func:`sparsejax.runner.time_calls`): every function is ``jax.jit``-ed,
compiled and run twice (warmup), then ``--reps`` samples are taken (BCSR: 5 samples
of 1 call, it is slow); a sample dispatches ``--inner`` calls back to back and blocks
once on all of them (``block_until_ready``), divided by ``--inner`` —
asynchronous dispatch hides the ~10 µs Python launch cost behind the kernels,
which a single blocked call would add to a 30 µs kernel. The table reports
the median sample. ``--profile`` adds, for dense, masked and the best kernel
configuration, the device time per forward call (the kernels' own durations in a
``jax.profiler`` trace of ``--profile-calls`` calls: the device-event time of the
lent GPU's METHOD.md) and the wall time per product of ``--chain`` products applied in
a row inside one jitted call (a deep stack of such layers: one dispatch for all of
them). At 4096² a lone kernel call is host-bound: its dispatch takes longer than
the ~21 µs kernel at 90% sparsity. Roofline: ``t_roof = max(flops / peak_flops, bytes / peak_bw)``
with the useful flops ``2·M·K·N·density`` and the compulsory bytes (``x``, the
kept blocks and their indices, ``y``; dense: all of ``W``); the fraction
reported is ``t_roof / t``. Peaks (``PEAKS``) are looked up from
``jax.devices()[0].device_kind``.

``--check`` first compares the Pallas kernel with the reference backend (fwd,
``dx``, ``d data``; bf16 and f32 (TF32 and IEEE) with the automatic launch
configurations, and bf16 with 256 rows per program in half-block chunks;
several block sizes; a mask with an empty block row and column; ``M`` not a
multiple of the tile) and stops with exit code 1 if any mismatch (``--suite``
goes on and exits 1 at the end; results are in the JSON either way).
``--deadline-s`` bounds the time: past it, BCSR and every configuration after
the first working one are skipped (recorded).

Usage (GPU, what the lead runs) — checks, this benchmark (4096² and 8192²,
75% and 90%) and the FFN inference benchmark of ``block_sparse_inference.py``
(``auto`` and the best configuration found here), about 5 minutes on an H200,
five files in the directory, a summary table printed last::

    PYTHONPATH=. python benchmarks/block_sparse_matmul.py --suite DIR

Only this benchmark::

    python benchmarks/block_sparse_matmul.py --check \\
        --out results/benchmarks/block_sparse_matmul_gpu.json

CPU smoke test (Pallas interpret mode, tiny)::

    python benchmarks/block_sparse_matmul.py --check --interpret \\
        --sizes 256 --batch 64 --blocks 32 --reps 3 --inner 1 --out /tmp/bsm.json

References:
  Gray, Radford, Kingma. "GPU Kernels for Block-Sparse Weights", OpenAI, 2017.
"""

from __future__ import annotations

import dataclasses
import gc
import pathlib
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

import sparsejax as sj
from sparsejax.block_sparse import (
    BlockSparseMatrix,
    KernelConfig,
    Tiling,
    block_sparse_matmul,
    choose_launch,
    smem_limit,
)
from sparsejax.runner import (
    Timing,
    config_to_dict,
    environment,
    kernel_times,
    markdown_table,
    parse_config,
    time_calls,
    write_json,
    write_report,
)

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "benchmarks"

#: device_kind substring -> (dense bf16 tensor-core FLOP/s, HBM bytes/s). Dense (no 2:4) peaks
#: from the NVIDIA data sheets. First match wins, so more specific names come first.
PEAKS: dict[str, tuple[float, float]] = {
    "H200": (989e12, 4.8e12),
    "H100 PCIe": (756e12, 2.0e12),
    "H100 NVL": (835e12, 3.9e12),
    "H100": (989e12, 3.35e12),  # SXM (device_kind "NVIDIA H100 80GB HBM3")
    "A100-SXM4-80GB": (312e12, 2.039e12),
    "A100": (312e12, 1.555e12),
}


def peaks(device_kind: str) -> tuple[float, float] | None:
    """``(flops/s, bytes/s)`` for a device kind, or ``None`` when unknown (e.g. CPU)."""
    for key, value in PEAKS.items():
        if key.lower() in device_kind.lower():
            return value
    return None


def chained(layer: Callable[[jax.Array], jax.Array], depth: int) -> Callable[[jax.Array], jax.Array]:
    """``x ↦ layer(layer(… layer(x)))`` (``depth`` times): one dispatch for ``depth`` products.

    Each product reads the previous one's output, so XLA can neither merge nor drop them;
    the time per product is that of a deep stack of such layers (no host launch per layer).
    """

    def run(x):
        for _ in range(depth):
            x = layer(x)
        return x

    return run


#: Launch configurations tried by default (≤ 6), block_m:block_k:num_warps:num_stages: the
#: automatic choice (bf16, 128² blocks: 128:128:4:3, 229 KB) with and without the
#: heavy-columns-first order; 64-row chunks (less shared memory) with 8 warps or 4 stages;
#: 256 rows per program (each loaded block reused over twice the rows); 64 rows per
#: program (twice the programs, ~90 KB: two programs per SM).
DEFAULT_CONFIGS = ["auto", "auto/natural", "128:64:8:3", "128:64:4:4", "256:64:8:3",
                   "64:64:4:3"]


@dataclasses.dataclass(frozen=True)
class Config:
    """Block-sparse ``x @ W`` (Pallas kernel) vs dense, masked dense and ``jax.experimental.sparse``."""

    suite: pathlib.Path | None = dataclasses.field(
        default=None, metadata={"help": "checks + this benchmark + the FFN inference "
                                        "benchmark, files into this directory"})
    sizes: tuple[int, ...] = (4096, 8192)
    sparsities: tuple[float, ...] | None = dataclasses.field(
        default=None, metadata={"help": "default 0.5 0.75 0.9 (--suite: 0.75 0.9)"})
    blocks: tuple[int, ...] = (128,)
    batch: int = 2048
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    configs: tuple[str, ...] | None = dataclasses.field(
        default=None, metadata={"help": "launch configs: auto | block_m:block_k:num_warps:"
                                        "num_stages, optional /natural suffix (default "
                                        f"{' '.join(DEFAULT_CONFIGS)})"})
    reps: int = 20
    inner: int = 10
    seed: int = 0
    interpret: bool = dataclasses.field(default=False,
                                        metadata={"help": "Pallas interpret mode (CPU)"})
    check: bool = dataclasses.field(default=False,
                                    metadata={"help": "kernel vs reference checks first"})
    no_bcsr: bool = False
    bcsr_max_gb: float = 16.0
    deadline_s: float | None = dataclasses.field(
        default=None, metadata={"help": "after this many seconds skip BCSR and all but the "
                                        "first working config (--suite default: 240)"})
    profile: bool = dataclasses.field(
        default=False, metadata={"help": "also the device-busy time per forward call "
                                         "(jax.profiler trace) and the time per product of a "
                                         "--chain deep stack in one jitted call"})
    profile_calls: int = 20
    chain: int = 8
    tag: str = dataclasses.field(default_factory=jax.default_backend,
                                 metadata={"help": "output name suffix"})
    out: pathlib.Path | None = dataclasses.field(
        default=None, metadata={"help": "JSON path (default "
                                        "results/benchmarks/block_sparse_matmul_<tag>.json)"})


def parse_launch(text: str) -> tuple[Tiling, bool]:
    """``"256:64:8:3"`` → ``(Tiling(256, 64, 8, 3), True)``; ``"auto/natural"`` → ``(Tiling(), False)``."""
    spec, _, order = text.partition("/")
    if order not in ("", "natural"):
        raise ValueError(f"a config is TILING or TILING/natural, got {text!r}")
    return Tiling.from_string(spec), order != "natural"


def kernel_config(text: str, interpret: bool = False, *, backward: bool = True) -> KernelConfig:
    """The :class:`KernelConfig` of a ``--configs`` entry (its tiling for ``fwd`` and ``dx``)."""
    tiling, balance = parse_launch(text)
    return KernelConfig(backend="pallas", interpret=interpret, fwd=tiling,
                        dx=tiling if backward else Tiling(), balance=balance)


def resolved(text: str, m: int, block: int, itemsize: int, blocks_per_program: float) -> str:
    """The forward launch ``block_m:block_k:num_warps:num_stages`` a config resolves to."""
    launch = choose_launch("fwd", parse_launch(text)[0], m=m, block=(block, block),
                           itemsize=itemsize, limit=smem_limit(),
                           blocks_per_program=blocks_per_program)
    return f"{launch} ({launch.smem_bytes} B)"


def over_deadline(args: Config, t_start: float) -> bool:
    """Whether ``--deadline-s`` seconds have passed since ``t_start`` (then optional work is
    cut)."""
    return args.deadline_s is not None and time.perf_counter() - t_start > args.deadline_s


def vjp_fn(f: Callable[..., jax.Array]) -> Callable[..., Any]:
    """``(a, b, ct) -> (f(a, b), *vjp(ct))``: forward plus both gradients."""

    def fb(a, b, ct):
        y, pull = jax.vjp(f, a, b)
        return y, pull(ct)

    return fb


# --------------------------------------------------------------------------- correctness


def run_checks(interpret: bool, seed: int) -> list[dict[str, Any]]:
    """Pallas kernel vs the reference backend: fwd, dx, d data for several dtypes/blocks."""
    blocks = (16, 32) if interpret else (32, 64, 128)
    m = 48 if interpret else 300
    cases = [
        ("bf16", jnp.bfloat16, None, 2.0**-7),
        ("f32-tf32", jnp.float32, None, 2e-2),  # TF32 inputs on the GPU kernel
        ("f32-ieee", jnp.float32, jax.lax.Precision.HIGHEST, 1e-4),
        ("bf16-tiled", jnp.bfloat16, None, 2.0**-7),
    ]
    rows = []
    for b in blocks:
        k, n = 4 * b, 6 * b
        rng = np.random.default_rng(seed + b)
        bmask = rng.random((4, 6)) < 0.5
        bmask[1, :] = False  # an empty block row: dx there must be 0
        bmask[:, 2] = False  # an empty block column: y there must be 0
        for name, dtype, precision, tol in cases:
            w = jnp.asarray(rng.standard_normal((k, n)), dtype)
            x = jnp.asarray(rng.standard_normal((m, k)), dtype)
            ct = jnp.asarray(rng.standard_normal((m, n)), dtype)
            mat = BlockSparseMatrix.from_dense(w, bmask, block=b)
            ref_cfg = KernelConfig(backend="reference", precision=jax.lax.Precision.HIGHEST)
            ker_cfg = KernelConfig(backend="pallas", interpret=interpret, precision=precision)
            if name == "bf16-tiled":  # the chunked loop, 256 rows per program, 8 warps
                t = Tiling(block_m=64 if interpret else 256, block_k=max(16, b // 2), num_warps=8,
                           num_stages=3)
                ker_cfg = KernelConfig(backend="pallas", interpret=interpret, fwd=t, dx=t,
                                       ddata=Tiling(block_k=32), balance=True)

            def run(cfg, x=x, mat=mat, ct=ct):
                f = lambda a, d: block_sparse_matmul(a, mat.with_data(d), config=cfg)  # noqa: E731
                y, (dx, dd) = jax.jit(vjp_fn(f))(x, mat.data, ct)
                return [np.asarray(v.astype(jnp.float32)) for v in (y, dx, dd)]

            try:
                got, want = run(ker_cfg), run(ref_cfg)
            except Exception as e:  # record a compile/launch failure as a failed check, go on
                rows.append({"block": b, "dtype": name, "m": m, "ok": False,
                             "error": f"{type(e).__name__}: {str(e)[:300]}"})
                print(f"check block={b:4d} {name:9s} -> FAIL ({type(e).__name__}: "
                      f"{str(e)[:200]})", flush=True)
                continue
            errs = {}
            ok = True
            for label, g, r in zip(("y", "dx", "ddata"), got, want):
                err = float(np.max(np.abs(g - r)) / (np.max(np.abs(r)) + 1e-30))
                errs[label] = err
                ok &= err <= tol
            zero_col = not np.any(got[0][:, 2 * b : 3 * b])
            zero_row = not np.any(got[1][:, b : 2 * b])
            ok = ok and zero_col and zero_row
            rows.append({"block": b, "dtype": name, "m": m, "k": k, "n": n, "tol": tol,
                         **{f"relerr_{key}": v for key, v in errs.items()},
                         "empty_col_zero": zero_col, "empty_row_zero": zero_row, "ok": bool(ok)})
            print(f"check block={b:4d} {name:9s} y={errs['y']:.1e} dx={errs['dx']:.1e} "
                  f"ddata={errs['ddata']:.1e} empty-col-zero={zero_col} "
                  f"empty-row-zero={zero_row} -> {'OK' if ok else 'FAIL'}", flush=True)
    return rows


# --------------------------------------------------------------------------- benchmark


def make_case(size: int, sparsity: float, block: int, batch: int, dtype, seed: int):
    """Random weight, block mask from ``sj.prune`` (magnitude), inputs and cotangent."""
    key = jax.random.key(seed)
    kw, kx, kc = jax.random.split(key, 3)
    w = jax.random.normal(kw, (size, size), jnp.float32)
    mask = sj.prune({"w": jnp.abs(w)}, sparsity, structure=sj.Blocks(block, block))["w"]
    w = w.astype(dtype)
    x = jax.random.normal(kx, (batch, size), dtype)
    ct = jax.random.normal(kc, (batch, size), dtype)
    return w, mask, x, ct


def flops_bytes(m: int, k: int, n: int, density: float, itemsize: int, nnzb: int | None,
                block: int) -> dict[str, float]:
    """Useful flops and compulsory bytes of fwd and fwd+bwd (``nnzb=None``: dense ``W``)."""
    w_bytes = k * n * itemsize if nnzb is None else nnzb * (block * block * itemsize + 8)
    fwd_flops = 2.0 * m * k * n * density
    fwd_bytes = (m * k + m * n) * itemsize + w_bytes
    # bwd: dx = dy Wᵀ (read dy, W; write dx), dW = xᵀ dy (read x, dy; write dW)
    bwd_bytes = (2 * m * n + 2 * m * k) * itemsize + 2 * w_bytes
    return {"fwd_flops": fwd_flops, "fwd_bytes": fwd_bytes,
            "fb_flops": 3 * fwd_flops, "fb_bytes": fwd_bytes + bwd_bytes}


def roofline(t: float | None, flops: float, nbytes: float, peak) -> float | None:
    if t is None or peak is None:
        return None
    return max(flops / peak[0], nbytes / peak[1]) / t


def run_benchmark(args: Config, peak, save=None,
                  t_start: float | None = None) -> list[dict[str, Any]]:
    """All cases; ``save(rows)`` is called after each case (partial results survive a kill).
    ``t_start``: when the run began (``time.perf_counter()``), for ``--deadline-s``."""
    t_start = time.perf_counter() if t_start is None else t_start

    def bench(fn, fn_args):
        return time_calls(fn, *fn_args, repeats=args.reps, calls=args.inner)

    from jax.experimental import sparse as jsparse

    dtype = jnp.dtype(args.dtype)
    for text in args.configs:
        parse_launch(text)  # fail early on a typo
    rows = []
    for size in args.sizes:
        dense_cache: dict[str, Any] = {}
        for block in args.blocks:
            for s in args.sparsities:
                w, mask, x, ct = make_case(size, s, block, args.batch, dtype, args.seed)
                m, k, n = args.batch, size, size
                mat = BlockSparseMatrix.from_dense(w, mask, block=block)
                density = mat.density
                base = {"size": size, "block": block, "sparsity": s, "density": density,
                        "batch": m, "dtype": str(dtype), "nnz_blocks": mat.nnz_blocks}
                fb_dense = flops_bytes(m, k, n, 1.0, dtype.itemsize, None, block)
                fb_sparse = flops_bytes(m, k, n, density, dtype.itemsize, mat.nnz_blocks, block)

                def record(method, fwd: Timing | None, fb: Timing | None, cost, extra=None,
                           base=base):
                    row = {**base, "method": method, **(extra or {})}
                    row["fwd_ms"] = None if fwd is None else fwd.median_s * 1e3
                    row["fwd_min_ms"] = None if fwd is None else fwd.min_s * 1e3
                    row["fwd_iqr_ms"] = None if fwd is None else fwd.iqr_s * 1e3
                    row["fb_ms"] = None if fb is None else fb.median_s * 1e3
                    row["fwd_tflops"] = (None if fwd is None
                                         else cost["fwd_flops"] / fwd.median_s / 1e12)
                    row["fwd_roofline"] = roofline(fwd and fwd.median_s, cost["fwd_flops"],
                                                   cost["fwd_bytes"], peak)
                    row["fb_roofline"] = roofline(fb and fb.median_s, cost["fb_flops"],
                                                  cost["fb_bytes"], peak)
                    rows.append(row)
                    return row

                # dense (computed once per size; independent of the mask)
                if "fwd" not in dense_cache:
                    f = jax.jit(lambda a, b: a @ b)
                    dense_cache["fwd"] = bench(f, (x, w))
                    fb = jax.jit(vjp_fn(lambda a, b: a @ b))
                    dense_cache["fb"] = bench(fb, (x, w, ct))
                    if args.profile:
                        dense_cache["extra"] = device_and_chain(
                            f, (x, w), lambda a, b: a @ b, (scaled(w, k),), x, args)
                dense = record("dense", dense_cache["fwd"], dense_cache["fb"], fb_dense,
                               dense_cache.get("extra"))

                # the mask is an argument (a closed-over 8192² mask would be baked into the HLO)
                def masked_fb(a, b, mk, ct):
                    return vjp_fn(lambda a, b: a @ jnp.where(mk, b, 0))(a, b, ct)

                mf = jax.jit(lambda a, b, mk: a @ jnp.where(mk, b, 0))
                record("masked", bench(mf, (x, w, mask)),
                       bench(jax.jit(masked_fb), (x, w, mask, ct)),
                       fb_dense,
                       device_and_chain(mf, (x, w, mask), lambda a, b, mk: a @ jnp.where(mk, b, 0),
                                        (scaled(w, k * density), mask), x, args)
                       if args.profile else None)

                if not args.no_bcsr and not over_deadline(args, t_start):
                    for name, bdtype in (("bcsr", dtype), ("bcsr_f32", jnp.float32)):
                        rows.append(time_bcsr(jsparse, name, bdtype, w, mask, x, args, base,
                                              fb_sparse, peak))

                # float32 reference of the kernel output (the kernel is checked, then timed)
                y_ref = jnp.dot(x.astype(jnp.float32), jnp.where(mask, w, 0).astype(jnp.float32))
                y_scale = float(jnp.max(jnp.abs(y_ref)))
                best = None
                for text in args.configs:
                    extra = {"config": text}
                    try:
                        extra["launch"] = resolved(text, m, block, dtype.itemsize,
                                                   mat.nnz_blocks / (n // block))
                    except ValueError as e:  # does not fit in shared memory: skip, say why
                        rows.append({**base, "method": "kernel_config", **extra,
                                     "skipped": str(e)[:400]})
                        print(f"  config {text}: skipped (does not fit)", flush=True)
                        continue
                    if over_deadline(args, t_start) and best is not None:
                        rows.append({**base, "method": "kernel_config", **extra,
                                     "skipped": "time budget (--deadline-s) spent"})
                        continue
                    cfg = kernel_config(text, args.interpret)
                    kf = lambda a, d, cfg=cfg, mat=mat: block_sparse_matmul(  # noqa: E731
                        a, mat.with_data(d), config=cfg)
                    try:
                        fn = jax.jit(kf)
                        y = fn(x, mat.data).astype(jnp.float32)
                        extra["relerr_y"] = float(jnp.max(jnp.abs(y - y_ref))) / y_scale
                        del y
                        fwd = bench(fn, (x, mat.data))
                    except Exception as e:  # a Triton failure of one config is not fatal
                        rows.append({**base, "method": "kernel_config", **extra,
                                     "error": f"{type(e).__name__}: {str(e)[:300]}"})
                        print(f"  config {text} failed: {type(e).__name__}: {str(e)[:200]}",
                              flush=True)
                        continue
                    extra["correct"] = extra["relerr_y"] <= 2e-2
                    row = record("kernel_config", fwd, None, fb_sparse, extra)
                    wrong = "" if extra["correct"] else f" WRONG relerr={extra['relerr_y']:.1e}"
                    print(f"  config {text:>13s} = {extra['launch']}: {row['fwd_ms']:.4f} ms"
                          f"{wrong}", flush=True)
                    if extra["correct"] and (best is None or row["fwd_ms"] < best["fwd_ms"]):
                        best = row
                if best is not None:
                    kernel = {**best, "method": "kernel"}
                    cfg = kernel_config(best["config"], args.interpret)
                    kf = lambda a, d, cfg=cfg, mat=mat: block_sparse_matmul(  # noqa: E731
                        a, mat.with_data(d), config=cfg)
                    try:
                        fb = bench(jax.jit(vjp_fn(kf)), (x, mat.data, ct))
                        kernel["fb_ms"] = fb.median_s * 1e3
                        kernel["fb_roofline"] = roofline(fb.median_s, fb_sparse["fb_flops"],
                                                         fb_sparse["fb_bytes"], peak)
                        kernel["fb_speedup"] = dense["fb_ms"] / kernel["fb_ms"]
                    except Exception as e:
                        kernel["fb_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                        kernel["fb_speedup"] = None
                        print(f"  fwd+bwd of {best['config']} failed: {kernel['fb_error']}",
                              flush=True)
                    kernel["fwd_speedup"] = dense["fwd_ms"] / kernel["fwd_ms"]
                    if args.profile:
                        kernel.update(device_and_chain(
                            jax.jit(kf), (x, mat.data), kf, (scaled(mat.data, k * density),),
                            x, args))
                        for key in ("busy_us", "chain_us"):
                            kernel[f"{key}_speedup"] = (dense[key] / kernel[key] if kernel[key]
                                                        else None)  # no GPU trace on CPU
                    target = {0.75: 1.8, 0.9: 3.0}.get(round(s, 2))
                    kernel["target_speedup"] = target
                    kernel["meets_target"] = None if target is None else kernel[
                        "fwd_speedup"] >= target
                    auto = [r for r in rows[-len(args.configs) - 1:]
                            if r.get("config") == "auto" and r.get("fwd_ms")]
                    kernel["auto_fwd_speedup"] = (dense["fwd_ms"] / auto[0]["fwd_ms"]
                                                  if auto else None)
                    rows.append(kernel)
                    fbx = kernel["fb_speedup"]
                    print(f"size={size} block={block} s={s:.2f}: dense {dense['fwd_ms']:.3f} ms, "
                          f"kernel {kernel['fwd_ms']:.3f} ms ({kernel['fwd_speedup']:.2f}x, "
                          f"config {best['config']}), fwd+bwd "
                          f"{'-' if fbx is None else format(fbx, '.2f')}x", flush=True)
                del y_ref
                del w, mask, x, ct, mat
                gc.collect()
                if save is not None:
                    save(rows)
    return rows


def scaled(w: jax.Array, fan_in: float) -> jax.Array:
    """``w / sqrt(fan_in)`` in ``w``'s dtype (a NumPy float64 scalar would promote bf16 to f32)."""
    return (w / np.sqrt(fan_in)).astype(w.dtype)


def device_and_chain(fn, args_, layer, weights, x, args) -> dict[str, Any]:
    """``--profile``: device-busy time of ``fn(*args_)`` and the per-product time of a chain.

    ``busy_us`` sums the kernels' own durations in a ``jax.profiler`` trace
    (:func:`~sparsejax.runner.kernel_times`: the device-event time of
    METHOD.md, no host dispatch or launch gaps); ``span_us`` runs from the first kernel's
    start to the last one's end, per call. The chain applies ``layer(h, *weights)`` ``--chain`` times in one jitted call (the
    weight is scaled by one over the square root of its kept fan-in, so activations stay
    O(1) in bf16), timed like the single product (``time_calls``).
    """
    dev = kernel_times(fn, *args_, calls=args.profile_calls)
    chain = jax.jit(lambda a, *ws: chained(lambda h: layer(h, *ws), args.chain)(a))
    out = chain(x, *weights)
    if out.dtype != x.dtype:  # the chain must time the products in the benchmark's dtype
        raise TypeError(f"chain computed in {out.dtype}, not {x.dtype}")
    finite = bool(jnp.all(jnp.isfinite(out)))
    del out
    t = time_calls(chain, x, *weights, repeats=args.reps, calls=max(1, args.inner // 2))
    return {"busy_us": dev.busy_us, "span_us": dev.span_us, "kernels_per_call": dev.kernels,
            "chain_us": t.median_s * 1e6 / args.chain, "chain_finite": finite}


def time_bcsr(jsparse, name, bdtype, w, mask, x, args, base, cost, peak) -> dict[str, Any]:
    """Time ``(BCSR(Wᵀ) @ xᵀ)ᵀ``; record an error or a skip instead of failing the run."""
    row = {**base, "method": name, "dtype": str(jnp.dtype(bdtype))}
    nse = int(jnp.sum(mask))
    if jnp.dtype(bdtype) != jnp.float32 or jax.default_backend() != "gpu":
        est = 2 * nse * args.batch * jnp.dtype(bdtype).itemsize / 1e9  # gather fallback
        if est > args.bcsr_max_gb:
            row["skipped"] = f"default (gather) lowering needs ~{est:.1f} GB > --bcsr-max-gb"
            print(f"  {name}: skipped ({row['skipped']})", flush=True)
            return row
    try:
        wt = jsparse.BCSR.fromdense(jnp.where(mask, w, 0).T.astype(bdtype), nse=nse)
        xb = x.astype(bdtype)
        f = jax.jit(lambda a, sp: (sp @ a.T).T)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = time_calls(f, xb, wt, repeats=min(args.reps, 5))  # slow: few reps
        row["fwd_ms"] = res.median_s * 1e3
        row["fwd_min_ms"] = res.min_s * 1e3
        row["fwd_tflops"] = cost["fwd_flops"] / res.median_s / 1e12
        row["fwd_roofline"] = roofline(res.median_s, cost["fwd_flops"], cost["fwd_bytes"], peak)
        del wt
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        print(f"  {name}: failed ({row['error'][:120]})", flush=True)
    return row


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    shown = [r for r in rows if r["method"] != "kernel_config" and "fwd_ms" in r]
    dense = {(r["size"], r["block"], r["sparsity"]): r for r in shown if r["method"] == "dense"}
    out = []
    for r in shown:
        d = dense.get((r["size"], r["block"], r["sparsity"]))
        out.append({
            "size": r["size"], "block": r["block"], "s": f"{r['sparsity']:.2f}",
            "kept": f"{r['density']:.3f}",
            "method": r["method"] + (f" ({r['config']} = {r['launch'].split(' ')[0]})"
                                     if r["method"] == "kernel" else ""),
            "fwd": _fmt(r["fwd_ms"], ".3f"),
            "xf": _fmt(d and r["fwd_ms"] and d["fwd_ms"] / r["fwd_ms"], ".2f"),
            "tf": _fmt(r.get("fwd_tflops"), ".3g"),
            "rf": _fmt(r.get("fwd_roofline") and 100 * r["fwd_roofline"], ".0f"),
            "fb": _fmt(r.get("fb_ms"), ".3f"),
            "xb": _fmt(d and r.get("fb_ms") and d["fb_ms"] / r["fb_ms"], ".2f"),
            "rb": _fmt(r.get("fb_roofline") and 100 * r["fb_roofline"], ".0f"),
            "busy": _fmt(r.get("busy_us"), ".1f"),
            "xd": _fmt((r.get("busy_us") and d and d.get("busy_us")
                       and d["busy_us"] / r["busy_us"]) or None, ".2f"),
            "chain": _fmt(r.get("chain_us"), ".1f"),
            "xc": _fmt(d and r.get("chain_us") and d.get("chain_us")
                       and d["chain_us"] / r["chain_us"], ".2f"),
        })
    cols = [("K=N", "{size}"), ("block", "{block}"), ("sparsity", "{s}"),
            ("kept blocks", "{kept}"), ("method", "{method}"),
            ("fwd ms", "{fwd}"), ("fwd speedup", "{xf}"), ("useful TFLOP/s", "{tf}"),
            ("fwd roofline %", "{rf}"), ("fwd+bwd ms", "{fb}"), ("fwd+bwd speedup", "{xb}"),
            ("fwd+bwd roofline %", "{rb}")]
    if any(r.get("busy_us") is not None for r in shown):
        cols += [("fwd device µs", "{busy}"), ("device speedup", "{xd}"),
                 ("chain µs / product", "{chain}"), ("chain speedup", "{xc}")]
    return markdown_table(out, cols)


def config_table(rows: list[dict[str, Any]]) -> str:
    """The configuration sweep: forward ms of every ``--configs`` entry per case."""
    out = []
    for r in rows:
        if r["method"] != "kernel_config":
            continue
        status = ("skipped" if "skipped" in r else "error" if "error" in r
                  else "ok" if r.get("correct") else "WRONG")
        out.append({"size": r["size"], "block": r["block"], "s": f"{r['sparsity']:.2f}",
                    "config": r["config"], "launch": r.get("launch", "—"),
                    "fwd": _fmt(r.get("fwd_ms"), ".4f"), "tf": _fmt(r.get("fwd_tflops"), ".0f"),
                    "err": _fmt(r.get("relerr_y"), ".1e"), "status": status})
    cols = [("K=N", "{size}"), ("block", "{block}"), ("sparsity", "{s}"), ("config", "{config}"),
            ("fwd launch (smem)", "{launch}"), ("fwd ms", "{fwd}"), ("TFLOP/s", "{tf}"),
            ("rel err", "{err}"), ("status", "{status}")]
    return markdown_table(out, cols)


def best_config(rows: list[dict[str, Any]]) -> str | None:
    """The config with the lowest geometric-mean forward time over the cases where all ran."""
    times: dict[str, dict[tuple, float]] = {}
    for r in rows:
        if r["method"] == "kernel_config" and r.get("correct"):
            key = (r["size"], r["block"], r["sparsity"])
            times.setdefault(r["config"], {})[key] = r["fwd_ms"]
    if not times:
        return None
    cases = set.intersection(*(set(t) for t in times.values()))
    full = {c: t for c, t in times.items() if set(t) >= cases and cases}
    if not full:
        return None
    return min(full, key=lambda c: sum(np.log(full[c][k]) for k in cases))


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Per case: dense vs the best kernel config, the target and the automatic config."""
    dense = {(r["size"], r["block"], r["sparsity"]): r for r in rows if r["method"] == "dense"}
    out = []
    for r in rows:
        if r["method"] != "kernel":
            continue
        d = dense[(r["size"], r["block"], r["sparsity"])]
        met = r.get("meets_target")
        out.append({"size": r["size"], "block": r["block"], "s": f"{r['sparsity']:.2f}",
                    "dense": f"{d['fwd_ms']:.3f}", "kernel": f"{r['fwd_ms']:.3f}",
                    "x": f"{r['fwd_speedup']:.2f}", "auto": _fmt(r.get("auto_fwd_speedup"), ".2f"),
                    "target": _fmt(r.get("target_speedup"), ".1f"),
                    "met": "—" if met is None else ("yes" if met else "NO"),
                    "config": f"{r['config']} = {r['launch'].split(' ')[0]}",
                    "fb": _fmt(r.get("fb_speedup"), ".2f")})
    cols = [("K=N", "{size}"), ("block", "{block}"), ("sparsity", "{s}"),
            ("dense fwd ms", "{dense}"), ("kernel fwd ms", "{kernel}"), ("speedup", "{x}"),
            ("target", "{target}"), ("met", "{met}"), ("best config", "{config}"),
            ("auto speedup", "{auto}"), ("fwd+bwd speedup", "{fb}")]
    return markdown_table(out, cols)


def run_suite(args, result: dict[str, Any], env: dict[str, Any]) -> int:
    """``--suite DIR``: the inference benchmark with ``auto`` and the best config, then a summary."""
    import importlib.util

    path = pathlib.Path(__file__).resolve().parent / "block_sparse_inference.py"
    spec = importlib.util.spec_from_file_location("block_sparse_inference", path)
    inference = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = inference  # its config dataclass resolves annotations through it
    spec.loader.exec_module(inference)
    best = best_config(result["rows"])
    configs = ["auto"] + ([best] if best not in (None, "auto") else [])
    inf_out = args.suite / "block_sparse_inference.json"
    argv = ["--out", str(inf_out), "--configs", *configs]
    if args.interpret:
        argv += ["--interpret", "--d-model", "64", "--d-ff", "128", "--tokens", "32", "--block",
                 "32", "--reps", "2", "--inner", "1", "--sparsities", "0.75"]
    print(f"\n== inference benchmark, configs {configs}", flush=True)
    rc = inference.main(argv)
    inf_rows = __import__("json").loads(inf_out.read_text())["rows"]
    checks = result.get("checks", [])
    n_ok = sum(c["ok"] for c in checks)
    inf_text = markdown_table(
        [{**r, "cfg": r.get("config") or "—"} for r in inf_rows],
        [("FFN", "{model}"), ("config", "{cfg}"), ("ms", "{ms:.3f}"),
         ("speedup vs dense", "{speedup:.2f}")])
    text = (f"# block-sparse kernel suite ({env['device']}, jax {env['jax']}, {env['date']})\n\n"
            f"`{env['command']}`\n\n"
            f"Checks (Pallas vs reference, fwd/dx/d data): {n_ok}/{len(checks)} OK"
            + "".join(f"\n- FAILED: block {c['block']} {c['dtype']}" for c in checks
                      if not c["ok"])
            + f"\n\n## matmul x:(batch {args.batch}, K) @ W:(K, K), {args.dtype}\n\n"
            f"{summary_table(result['rows'])}\n\nBest config overall (geometric mean): "
            f"`{best}`\n\n## FFN inference ({inf_rows and 'see block_sparse_inference.md'})"
            f"\n\n{inf_text}\n")
    (args.suite / "summary.md").write_text(text)
    print("\n" + text)
    print(f"wrote {sorted(p.name for p in args.suite.iterdir())} in {args.suite}")
    return 0 if rc == 0 and n_ok == len(checks) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_config(Config, argv)
    t_start = time.perf_counter()
    if args.reps < 1 or args.inner < 1:
        raise SystemExit("block_sparse_matmul.py: error: --reps and --inner must be >= 1")
    if args.suite is not None:
        args.suite.mkdir(parents=True, exist_ok=True)
        args = dataclasses.replace(
            args, out=args.suite / "block_sparse_matmul.json", check=True,
            sparsities=args.sparsities or (0.75, 0.9),
            deadline_s=240.0 if args.deadline_s is None else args.deadline_s,
            bcsr_max_gb=min(args.bcsr_max_gb, 4.0))  # no 10+ GB gather fallbacks here
    args = dataclasses.replace(
        args, sparsities=args.sparsities or (0.5, 0.75, 0.9),
        configs=args.configs or (("auto", "auto/natural") if args.interpret
                                 else tuple(DEFAULT_CONFIGS)),
        out=args.out or RESULTS / f"block_sparse_matmul_{args.tag}.json")
    try:
        for text in args.configs:
            parse_launch(text)
    except ValueError as e:
        raise SystemExit(f"block_sparse_matmul.py: error: --configs: {e}") from None

    env = environment()
    peak = peaks(env["device"])
    print(f"device: {env['device']} ({env['backend']}), jax {env['jax']}, peaks {peak}, "
          f"smem limit {smem_limit()} B", flush=True)
    result: dict[str, Any] = {"environment": env, "args": config_to_dict(args),
        "peaks": None if peak is None else {"flops": peak[0], "bytes_per_s": peak[1]},
        "peak_table": PEAKS, "smem_limit": smem_limit()}
    checks_ok = True
    if args.check:
        checks = run_checks(args.interpret, args.seed)
        result["checks"] = checks
        checks_ok = all(c["ok"] for c in checks)
        if not checks_ok:
            write_json(args.out, result)
            print(f"correctness checks FAILED; wrote {args.out}", file=sys.stderr)
            if args.suite is None:
                return 1

    def save(rows):
        result["rows"] = rows
        write_json(args.out, result)

    rows = run_benchmark(args, peak, save, t_start)
    result["rows"] = rows
    result["best_config"] = best_config(rows)
    text = table(rows)
    sweep = config_table(rows)
    print(text)
    print(sweep)
    write_report(
        args.out, result,
        f"# block-sparse matmul ({env['device']}, jax {env['jax']}, {env['date']})\n\n"
        f"`{env['command']}`\n\n{text}\n\n## launch configurations (forward)\n\n{sweep}\n")
    print(f"wrote {args.out} ({time.perf_counter() - t_start:.0f} s)")
    if args.suite is not None:
        return run_suite(args, result, env) or (0 if checks_ok else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
