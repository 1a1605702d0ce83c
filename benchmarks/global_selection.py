"""Benchmark: one-shot global magnitude selection, sort-free vs flat ``lax.top_k`` / ``jnp.sort``.

For each size ``N`` (parameters) the script builds a transformer-like list of
float32 weight matrices summing to exactly ``N`` (blocks of ``(d, 3d)``,
``(d, d)``, ``(d, 4d)``, ``(4d, d)`` plus one remainder row), takes magnitude
scores ``|w|`` (``w ~ N(0, 1)``, generated on the device), and times, in the
same process and on the same scores:

* ``ours``: ``sparsejax.prune(scores, s, scope="global", search=...)`` under
  ``jax.jit``, one column per ``--variants`` entry: ``sampled`` (a sorted
  strided sample of 2**20 scores brackets the threshold; one pass counts below
  the bracket and histograms the entries inside it into 2**18 bins, then one
  writes the masks; on a single GPU one Pallas pass reads the scores, writes
  provisional masks and compacts the in-bracket entries, and a second kernel
  fixes those entries; ``sampled-xla`` runs XLA's reduction + scatter and
  mask fusion, the path taken with several devices)
  and ``radix-bB`` (``32 / B`` counting passes of per-leaf reductions on the
  float bit pattern). No concatenated copy, no sort of the scores;
* ``top_k``: the usual reference (JaxPruner style) — concatenate the flattened
  scores, ``lax.top_k`` of the ``n - round(s·n)`` kept entries, threshold at
  the smallest kept value, masks;
* ``sort``: concatenate, ``jnp.sort``, threshold at index ``round(s·n)``, masks.

Every method is compiled first (compile time and XLA's memory analysis are
recorded), then run ``--repeats`` times after one warm-up run
(:func:`sparsejax.runner.time_calls`); the table gives the median wall time
around ``block_until_ready``. Ours runs first; its masks are checked to prune
exactly ``round(s·n)`` entries and, where the sort reference ran and pruned
exactly that many, to equal it bit for bit. (float32 draws repeat beyond about
1e7 samples: a threshold reference then keeps every score tied with its
threshold and misses ``round(s·n)`` by those ties, while ours breaks the tie
by position; the table reports the miss.) Buffers are freed between methods
so that the references' concatenated copy (4·N bytes) is not held next to ours.

Usage::

    python benchmarks/global_selection.py --sizes 1e6 1e7 1e8 --repeats 3
    python benchmarks/global_selection.py --sizes 1e8 5e8 1e9 \\
        --variants sampled radix-b2 --profile \\
        --out results/benchmarks/global_selection_gpu.json

``--profile`` adds the per-kernel device time of the first variant
(:func:`sparsejax.runner.kernel_times`) to the JSON and the markdown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import pathlib
import sys
import time
from typing import Literal

import jax
import jax.numpy as jnp

from sparsejax import select
from sparsejax.runner import (
    config_to_dict,
    environment,
    kernel_times,
    markdown_table,
    parse_config,
    time_calls,
    write_report,
)
from sparsejax.select import prune

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "benchmarks"
Variant = Literal["sampled", "sampled-xla", "radix-b1", "radix-b2", "radix-b4"]


@dataclasses.dataclass(frozen=True)
class Config:
    """One-shot global magnitude selection, sort-free vs flat ``lax.top_k`` / ``jnp.sort``."""

    sizes: tuple[float, ...] = dataclasses.field(default=(1e6, 1e7, 1e8),
                                                 metadata={"help": "params"})
    layers: int = dataclasses.field(default=24,
                                    metadata={"help": "weight matrices (4 per block)"})
    sparsity: float = 0.9
    repeats: int = 5
    ref_repeats: int | None = dataclasses.field(default=None,
                                                metadata={"help": "default: --repeats"})
    variants: tuple[Variant, ...] = dataclasses.field(
        default=("sampled", "radix-b2"),
        metadata={"help": "ours: 'sampled', 'sampled-xla' and/or 'radix-bB' (B = bits per "
                          "pass: 1, 2 or 4)"})
    profile: bool = dataclasses.field(default=False,
                                      metadata={"help": "kernel times of the first variant"})
    skip_topk_above: float = dataclasses.field(default=float("inf"), metadata={"help": "params"})
    skip_sort_above: float = dataclasses.field(default=float("inf"), metadata={"help": "params"})
    seed: int = 0
    tag: str = dataclasses.field(default_factory=jax.default_backend,
                                 metadata={"help": "output name suffix"})
    out: pathlib.Path | None = dataclasses.field(
        default=None, metadata={"help": "JSON path (default "
                                        "results/benchmarks/global_selection_<tag>.json); the "
                                        "markdown table goes next to it (.md)"})


def layer_shapes(n: int, layers: int) -> list[tuple[int, int]]:
    """Transformer-like matrix shapes summing to exactly ``n`` entries.

    ``layers // 4`` blocks of ``(d, 3d)``, ``(d, d)``, ``(d, 4d)``, ``(4d, d)``
    (``12 d²`` entries per block) and, if needed, one ``(1, r)`` remainder.
    """
    blocks = max(1, layers // 4)
    d = max(1, math.isqrt(n // (12 * blocks)))
    shapes = [sh for _ in range(blocks) for sh in ((d, 3 * d), (d, d), (d, 4 * d), (4 * d, d))]
    while sum(a * b for a, b in shapes) > n:  # tiny n: drop whole matrices
        shapes.pop()
    rest = n - sum(a * b for a, b in shapes)
    if rest:
        shapes.append((1, rest))
    return shapes


def make_scores(shapes: list[tuple[int, int]], seed: int) -> list[jax.Array]:
    """``|N(0, 1)|`` float32 scores, one device array per layer."""
    key = jax.random.key(seed)
    gen = jax.jit(
        lambda k, shape: jnp.abs(jax.random.normal(k, shape, jnp.float32)), static_argnums=1
    )
    return [gen(jax.random.fold_in(key, i), sh) for i, sh in enumerate(shapes)]


def _concat(scores: list[jax.Array]) -> jax.Array:
    return jnp.concatenate([s.reshape(-1) for s in scores])


def topk_reference(scores: list[jax.Array], k_prune: int) -> list[jax.Array]:
    """Flat reference: ``lax.top_k`` of the kept entries, threshold, masks."""
    flat = _concat(scores)
    values, _ = jax.lax.top_k(flat, flat.size - k_prune)
    return [s >= values[-1] for s in scores]


def sort_reference(scores: list[jax.Array], k_prune: int) -> list[jax.Array]:
    """Flat reference: ``jnp.sort`` and threshold at index ``k_prune``."""
    threshold = jnp.sort(_concat(scores))[k_prune]
    return [s >= threshold for s in scores]


def run_method(fn, scores, repeats: int) -> tuple[list[jax.Array], dict]:
    """Compile ``fn`` for ``scores`` (ahead of time, for XLA's memory analysis), run it once
    (allocation, caches), then ``repeats`` timed runs; masks and timing stats."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(scores).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    out = jax.block_until_ready(compiled(scores))  # the masks, checked by the caller
    timing = time_calls(compiled, scores, repeats=repeats, warmup=0)  # first run untimed
    stats = {
        "median_ms": 1e3 * timing.median_s,
        "min_ms": 1e3 * timing.min_s,
        "iqr_ms": 1e3 * timing.iqr_s,
        "times_ms": [1e3 * t for t in timing.times_s],
        "compile_s": compile_s,
        "temp_bytes": getattr(mem, "temp_size_in_bytes", None),
        "output_bytes": getattr(mem, "output_size_in_bytes", None),
    }
    return out, stats


@contextlib.contextmanager
def xla_passes(on: bool):
    """Trace ``search="sampled"`` with XLA's reduction + scatter and mask fusion even on
    a GPU (where its two full passes are Pallas kernels by default)."""
    saved = select._plan.pallas_passes_allowed
    select._plan.pallas_passes_allowed = saved and not on
    try:
        yield
    finally:
        select._plan.pallas_passes_allowed = saved


def pruned_count(masks: list[jax.Array]) -> int:
    return sum(int(jnp.sum(~m, dtype=jnp.int32)) for m in masks)


def device_peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> dict:
    args = parse_config(Config, argv)
    variants = {}
    for v in args.variants:
        if v in ("sampled", "sampled-xla"):
            variants[v] = {"search": "sampled"}
        elif v.startswith("radix-b") and v[7:] in ("1", "2", "4"):
            variants[v] = {"search": "radix", "bits_per_pass": int(v[7:])}
        else:  # unreachable: parse_config checks the choices
            raise ValueError(f"--variants: expected sampled, sampled-xla or radix-b1/2/4, "
                             f"got {v!r}")
    ref_repeats = args.ref_repeats or args.repeats
    load_start = os.getloadavg()[0]

    rows = []
    for size in args.sizes:
        shapes = layer_shapes(int(size), args.layers)
        n = sum(a * b for a, b in shapes)
        k = round(args.sparsity * n)
        scores = make_scores(shapes, args.seed)
        row: dict = {"params": n, "leaves": len(shapes), "sparsity": args.sparsity, "k": k}

        ours_masks = None
        for name, kw in variants.items():

            def ours(sc, kw=kw):
                return prune(sc, args.sparsity, scope="global", **kw)

            with xla_passes(name == "sampled-xla"):
                masks, stats = run_method(ours, scores, args.repeats)
            got = pruned_count(masks)
            if got != k:
                raise AssertionError(f"ours ({name}) pruned {got} of {n}, expected {k}")
            if ours_masks is None:
                ours_masks = masks
            elif not all(bool(jnp.array_equal(a, b)) for a, b in zip(ours_masks, masks)):
                raise AssertionError(f"ours ({name}) differs from ours ({args.variants[0]})")
            row[f"ours_{name}"] = stats
            del masks
            gc.collect()
        if args.profile:
            first = args.variants[0]
            with xla_passes(first == "sampled-xla"):
                prof = kernel_times(
                    jax.jit(
                        lambda sc, kw=variants[first]: prune(
                            sc, args.sparsity, scope="global", **kw
                        )
                    ),
                    scores,
                    calls=3,
                )
            row["profile"] = prof.to_dict()
            row["profile_table"] = prof.table(top=8)
            print(
                f"N={n:,} {args.variants[0]}: busy {prof.busy_us:.0f} µs, "
                f"{prof.kernels:g} kernels\n{row['profile_table']}",
                flush=True,
            )
        row["peak_bytes_after_ours"] = device_peak_bytes()

        for name, ref, limit in (
            ("top_k", topk_reference, args.skip_topk_above),
            ("sort", sort_reference, args.skip_sort_above),
        ):
            if n > limit:
                row[name] = None
                continue
            masks, stats = run_method(lambda sc, ref=ref, k=k: ref(sc, k), scores, ref_repeats)
            got = pruned_count(masks)
            # A threshold reference keeps every score tied with its threshold: float32
            # |N(0, 1)| draws repeat beyond ~1e7 samples, so it can miss k by the ties.
            stats["pruned_minus_target"] = got - k
            if name == "sort":
                same = all(bool(jnp.array_equal(a, b)) for a, b in zip(ours_masks, masks))
                stats["equals_ours"] = same
                if not same and got == k:
                    raise AssertionError("ours differs from the sort reference")
            row[name] = stats
            del masks
            gc.collect()
        row["peak_bytes_total"] = device_peak_bytes()
        del scores, ours_masks
        gc.collect()

        best = min(row[f"ours_{v}"]["median_ms"] for v in variants)
        for name in ("top_k", "sort"):
            row[f"{name}_over_ours"] = row[name]["median_ms"] / best if row[name] else None
        rows.append(row)
        print(
            f"N={n:,}: ours {best:.2f} ms, top_k "
            f"{fmt(row['top_k'] and row['top_k']['median_ms'], '.2f')} ms, sort "
            f"{fmt(row['sort'] and row['sort']['median_ms'], '.2f')} ms",
            flush=True,
        )

    env = environment(load_start)
    table_rows = []
    for r in rows:
        t = {"params": f"{r['params']:,}", "leaves": r["leaves"]}
        for v in variants:
            t[f"ours_{v}"] = fmt(r[f"ours_{v}"]["median_ms"], ".1f")
        t["topk"] = fmt(r["top_k"] and r["top_k"]["median_ms"], ".1f")
        t["sort"] = fmt(r["sort"] and r["sort"]["median_ms"], ".1f")
        t["rtopk"] = fmt(r["top_k_over_ours"], ".1f")
        t["rsort"] = fmt(r["sort_over_ours"], ".1f")
        first = f"ours_{args.variants[0]}"
        t["compile"] = fmt(r[first]["compile_s"], ".2f")
        mem = [r[first]["temp_bytes"]]
        mem += [r[m]["temp_bytes"] if r[m] else None for m in ("top_k", "sort")]
        t["mem"] = " / ".join(fmt(v and v / 2**20, ".0f") for v in mem)
        t["exact"] = "yes"
        if r["sort"] and r["sort"]["equals_ours"]:
            t["exact"] += ", = sort"
        for m in ("top_k", "sort"):
            if r[m] and r[m]["pruned_minus_target"]:
                t["exact"] += f"; {m} off by {r[m]['pruned_minus_target']:+d} (ties)"
        table_rows.append(t)
    columns = [("params", "{params}"), ("leaves", "{leaves}")]
    columns += [(f"ours {v} (ms)", f"{{ours_{v}}}") for v in variants]
    columns += [
        ("flat top_k (ms)", "{topk}"),
        ("flat sort (ms)", "{sort}"),
        ("top_k / ours", "{rtopk}x"),
        ("sort / ours", "{rsort}x"),
        ("ours compile (s)", "{compile}"),
        ("XLA temp MiB ours / top_k / sort", "{mem}"),
        ("ours prunes round(s·n)", "{exact}"),
    ]
    header = (
        f"# Global magnitude selection at sparsity {args.sparsity}\n\n"
        f"Device: {env['device']} ({env['backend']}, {env['device_count']} device(s)); "
        f"jax {env['jax']}; {env['date']}.\n"
        f"Command: `{env['command']}`. Median wall time of {args.repeats} runs (references: "
        f"{ref_repeats}) after compilation and one warm-up run, around `block_until_ready`. "
        f"Scores |N(0,1)| float32 in transformer-like matrices; ratios use the fastest "
        f"variant of ours; compile time and memory are those of `{args.variants[0]}`. Host load average (1 min) {load_start:.1f} at the start, "
        f"{env['load_average_1m']['end']:.1f} at the end ({env['cpu_count']} CPUs).\n\n"
    )
    text = header + markdown_table(table_rows, columns) + "\n"
    for r in rows:
        if "profile_table" in r:
            prof = r["profile"]
            text += (
                f"\nKernels of `{args.variants[0]}` at {r['params']:,} params "
                f"(`kernel_times`, 3 calls): device busy {prof['busy_us']:.0f} µs per call, "
                f"{prof['kernels']:g} kernels.\n\n{r['profile_table']}\n"
            )
    print(text)
    out = args.out or RESULTS / f"global_selection_{args.tag}.json"
    write_report(out, {"environment": env, "args": {**config_to_dict(args), "out": str(out)},
                       "rows": rows}, text)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return {"environment": env, "rows": rows}


if __name__ == "__main__":
    main(sys.argv[1:])
