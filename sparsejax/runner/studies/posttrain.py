"""``sparsejax posttrain``: post-training pruning of a byte-level GPT decoder (magnitude,
Wanda, SparseGPT, Wanda with OWL's layer sparsities).

No pretrained weights or corpora can be downloaded, so the study trains its own model on
text every machine has: the Python standard library's ``.py`` sources
(:func:`sparsejax.data.load_python_stdlib`, split by file into train / validation /
calibration). Phases (``--phases``): ``train`` a :class:`~sparsejax.models.DecoderLM`
(AdamW, warm-up and cosine decay, bf16 compute, orbax checkpoints in ``--checkpoint-dir``,
outside the results; a model whose checkpoint exists is restored or resumed); ``prune``
every linear layer of every block one-shot, block by block
(:func:`sparsejax.posttrain.prune_sequential`) from ``--calibration`` sequences per
calibration seed (the papers: 128), at each unstructured sparsity and N:M pattern;
``evaluate`` validation bits per byte of the dense and every pruned model, with per-layer
output errors; ``timing`` the wall time to prune a ~100M-parameter decoder (random
weights) from 128 sequences of 1,024 bytes, first call (compiling) and second.
References: Frantar & Alistarh 2023 (SparseGPT), Sun et al. 2024 (Wanda), Yin et al. 2024
(OWL, M = 5, lambda = 0.08).

Outputs in ``--out``: ``config.json``, ``corpus.json``, ``training.json``,
``training_curve.png/.pdf``, ``results.json`` / ``results.md``, ``layer_errors.png/.pdf``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import pathlib
import time
from typing import Any, Literal

import numpy as np

from sparsejax.runner._config import ConfigError, check_positive
from sparsejax.runner._environment import environment
from sparsejax.runner._study import RunContext, Study, StudyConfig, run_study
from sparsejax.runner._tables import aggregate, markdown_table

__all__ = ["METHODS", "PHASES", "SMOKE", "STUDY", "Config", "check", "count_params",
           "figures", "main", "make_model", "parse_nm", "run_pruning", "time_pruning",
           "train"]

METHODS = ("magnitude", "wanda", "sparsegpt", "wanda_owl")
PHASES = ("train", "prune", "evaluate", "timing")


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Post-training pruning (magnitude, Wanda, SparseGPT, OWL) of a byte-level decoder
    trained on the Python standard library's sources."""

    checkpoint_dir: str = "runs/posttrain_checkpoints"
    """Folder of the dense model's orbax checkpoints (one subfolder per model and corpus)."""
    phases: tuple[Literal[PHASES], ...] = PHASES  # type: ignore[valid-type]
    """Phases to run: prune or evaluate without train need the model's checkpoint."""
    seed: int = 0
    """Seed of the model's initialisation and of its training batches."""
    dim: int = 512
    """Model width."""
    depth: int = 8
    """Transformer blocks."""
    heads: int = 8
    """Attention heads."""
    seq_len: int = 512
    """Context length in bytes (training windows, calibration sequences, evaluation)."""
    steps: int = 6000
    """Training steps."""
    batch_size: int = 32
    """Training (and evaluation) batch size in sequences."""
    lr: float = 1e-3
    """Peak AdamW learning rate (warm-up, then cosine decay to a tenth)."""
    warmup: int = 200
    """Warm-up steps of the learning rate."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    log_every: int = 250
    """Training steps between log lines (one jitted scan each)."""
    eval_every: int = 1000
    """Training steps between validation evaluations and checkpoints (a multiple of
    --log-every)."""
    curve_windows: int = 128
    """Validation windows of the training curve."""
    max_train_seconds: float = 300.0
    """Training stops (checkpointed) after this many seconds; --resume continues it."""
    max_files: int | None = None
    """Use only this many standard-library files (None: all)."""
    methods: tuple[Literal[METHODS], ...] = METHODS  # type: ignore[valid-type]
    """Pruning methods (wanda_owl: unstructured targets only)."""
    sparsities: tuple[float, ...] = (0.5, 0.6, 0.7)
    """Unstructured sparsities of the linear layers, each in (0, 1)."""
    nm: tuple[str, ...] = ("2:4", "4:8")
    """N:M patterns, written N:M."""
    calibration: int = 128
    """Calibration sequences per seed."""
    calibration_seeds: tuple[int, ...] = (0, 1)
    """Seeds of the calibration draws (magnitude uses no data: one run)."""
    calibration_batch: int = 16
    """Sequences per forward pass while pruning."""
    eval_windows: int | None = None
    """Validation windows of the evaluation (None: the whole validation split)."""
    owl_m: float = 5.0
    """OWL's outlier threshold M (an activation outlier exceeds M times the layer's mean)."""
    owl_lam: float = 0.08
    """OWL's lambda: block sparsities within ±lambda of the target."""
    timing_dim: int = 768
    """Width of the decoder timed by the timing phase."""
    timing_depth: int = 14
    """Blocks of the timed decoder."""
    timing_heads: int = 12
    """Attention heads of the timed decoder."""
    timing_seq_len: int = 1024
    """Bytes per calibration sequence of the timing phase."""
    timing_sequences: int = 128
    """Calibration sequences of the timing phase."""


SMOKE = {"dim": 32, "depth": 2, "heads": 2, "seq_len": 64, "steps": 60, "batch_size": 8,
         "log_every": 20, "eval_every": 60, "curve_windows": 8, "max_files": 150,
         "sparsities": (0.5, 0.7), "nm": ("2:4",), "calibration": 8,
         "calibration_batch": 4, "eval_windows": 16, "timing_dim": 32, "timing_depth": 2,
         "timing_heads": 2, "timing_seq_len": 64, "timing_sequences": 8, "owl_lam": 0.1}


def parse_nm(pattern: str):
    """``"2:4"`` -> ``NM(2, 4)``; a malformed pattern raises :class:`ConfigError` (``--nm``)."""
    import sparsejax as sj

    try:
        n, m = (int(p) for p in pattern.split(":"))
        return sj.NM(n, m)
    except ValueError as err:
        raise ConfigError("nm", pattern, f"not an N:M pattern like 2:4 ({err})") from None


@functools.lru_cache(maxsize=4)
def _corpus(max_files: int | None):
    from sparsejax.data import load_python_stdlib

    return load_python_stdlib(max_files=max_files)


def check(cfg: Config) -> None:
    """Every value, before any work; prune / evaluate without train need a checkpoint."""
    for s in cfg.sparsities:
        if not 0.0 < s < 1.0:
            raise ConfigError("sparsities", cfg.sparsities, f"{s:g} is outside (0, 1)")
    for pattern in cfg.nm:
        parse_nm(pattern)
    if not cfg.phases:
        raise ConfigError("phases", cfg.phases, "give at least one phase")
    check_positive(cfg, "dim", "depth", "heads", "seq_len", "steps", "batch_size",
                   "log_every", "eval_every", "curve_windows", "max_files", "calibration",
                   "calibration_batch", "eval_windows", "timing_dim", "timing_depth",
                   "timing_heads", "timing_seq_len", "timing_sequences")
    for name in ("lr", "max_train_seconds", "owl_m"):
        if not getattr(cfg, name) > 0:
            raise ConfigError(name, getattr(cfg, name), "must be > 0")
    for name in ("warmup", "weight_decay", "owl_lam"):
        if getattr(cfg, name) < 0:
            raise ConfigError(name, getattr(cfg, name), "must be >= 0")
    for name, dim, heads in (("heads", cfg.dim, cfg.heads),
                             ("timing_heads", cfg.timing_dim, cfg.timing_heads)):
        if dim % heads:
            raise ConfigError(name, heads, f"must divide the width {dim}")
    if cfg.eval_every % cfg.log_every:
        raise ConfigError("eval_every", cfg.eval_every,
                          f"must be a multiple of --log-every {cfg.log_every}")
    if not cfg.calibration_seeds:
        raise ConfigError("calibration_seeds", cfg.calibration_seeds, "give at least one seed")
    if "train" not in cfg.phases and {"prune", "evaluate"} & set(cfg.phases):
        from sparsejax import checkpoint

        path = checkpoint_path(cfg, _model_record(cfg, _corpus(cfg.max_files).sha256))
        if checkpoint.latest_step(path) is None:
            raise ConfigError("checkpoint_dir", cfg.checkpoint_dir, f"no trained model in "
                              f"{path}: run the train phase first")


def make_model(cfg: Config, dtype=None, seed: int | None = None):
    """The byte-level :class:`~sparsejax.models.DecoderLM` of ``cfg`` (256 tokens)."""
    from flax import nnx

    from sparsejax.models import DecoderLM

    return DecoderLM(256, cfg.dim, cfg.depth, cfg.heads, max_len=cfg.seq_len, dtype=dtype,
                     rngs=nnx.Rngs(cfg.seed if seed is None else seed))


def count_params(model) -> tuple[int, int]:
    """(all parameters, those of the pruned linear layers)."""
    import jax
    from flax import nnx

    from sparsejax import posttrain

    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    pruned = sum(int(np.prod(getattr(model.blocks[i], n).kernel.shape))
                 for i, n, _ in posttrain.linear_layers(model))
    return total, pruned


# --------------------------------------------------------------------------- training

def _model_record(cfg: Config, corpus_hash: str) -> dict:
    keys = ("seed", "dim", "depth", "heads", "seq_len", "steps", "batch_size", "lr", "warmup",
            "weight_decay", "max_files")
    return {**{k: getattr(cfg, k) for k in keys}, "corpus_sha256": corpus_hash}


def checkpoint_path(cfg: Config, record: dict) -> pathlib.Path:
    """``<checkpoint_dir>/d<dim>x<depth>_s<steps>_<hash of the model record>``."""
    tag = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    return pathlib.Path(cfg.checkpoint_dir) / f"d{cfg.dim}x{cfg.depth}_s{cfg.steps}_{tag}"


def log_line(text: str) -> None:
    print(text, flush=True)


def train(cfg: Config, corpus, record: dict, log=log_line, writer=None):
    """Train (or restore) the dense model; returns (float32 model, curve rows, info)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from jax import lax

    from sparsejax import checkpoint, posttrain
    from sparsejax.data import random_windows
    from sparsejax.models import next_token_loss
    from sparsejax.train import create_train_state, make_train_step

    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, min(cfg.warmup, cfg.steps - 1),
                                                  cfg.steps, end_value=cfg.lr * 0.1)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=cfg.weight_decay))
    state = create_train_state(make_model(cfg, jnp.bfloat16), tx, key=cfg.seed,
                               plain_arrays=True)
    ckpt = checkpoint_path(cfg, record)
    curve: list[dict] = []
    if checkpoint.latest_step(ckpt) is not None:
        restored = checkpoint.restore(ckpt, state)
        if restored.metadata.get("model") != record:
            raise ConfigError("checkpoint_dir", cfg.checkpoint_dir, f"{ckpt} holds another "
                              f"model ({restored.metadata.get('model')})")
        state, curve = restored.state, list(restored.metadata.get("curve", []))
        log(f"restored step {restored.step} from {ckpt}")
    step_fn = make_train_step(next_token_loss, metrics_fn=lambda logits, labels: {}, jit=False)
    stream = jnp.asarray(corpus.train)
    windows = random_windows(corpus.validation, cfg.curve_windows, cfg.seq_len + 1, seed=1)
    data_key = jax.random.key(cfg.seed + 1)

    @functools.partial(jax.jit, static_argnums=2)
    def run(state, stream, length):
        def body(st, _):
            key = jax.random.fold_in(data_key, st.step)
            starts = jax.random.randint(key, (cfg.batch_size,), 0,
                                        stream.shape[0] - cfg.seq_len - 1)
            seqs = jax.vmap(lambda s: lax.dynamic_slice(stream, (s,), (cfg.seq_len + 1,)))(starts)
            seqs = seqs.astype(jnp.int32)
            st, metrics = step_fn(st, (seqs[:, :-1], seqs[:, 1:]))
            return st, metrics["loss"]
        return lax.scan(body, state, None, length=length)

    start, t0, stopped = int(state.step), time.perf_counter(), False
    while int(state.step) < cfg.steps:
        chunk = min(cfg.log_every, cfg.steps - int(state.step))
        tc = time.perf_counter()
        state, losses = run(state, stream, chunk)
        loss = float(jnp.mean(losses)) / math.log(2)
        step, dt = int(state.step), time.perf_counter() - tc
        row = {"step": step, "train_bits_per_byte": loss, "seconds": time.perf_counter() - t0}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row["validation_bits_per_byte"] = posttrain.evaluate_language_model(
                state.model(), windows, batch_size=cfg.batch_size).bits_per_token
        curve.append(row)
        if writer is not None:
            writer.write_scalars(step, {k: v for k, v in row.items() if k != "step"})
        log(f"step {step}/{cfg.steps}: train {loss:.3f} bits/byte"
            + (f", validation {row['validation_bits_per_byte']:.3f}"
               if "validation_bits_per_byte" in row else "")
            + f" ({chunk * cfg.batch_size * cfg.seq_len / dt:,.0f} tokens/s)")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            checkpoint.save(ckpt, step, state, metadata={"model": record, "curve": curve},
                            keep=2, overwrite=True)
        if time.perf_counter() - t0 > cfg.max_train_seconds and step < cfg.steps:
            log(f"stopping at step {step}: --max-train-seconds {cfg.max_train_seconds} reached")
            checkpoint.save(ckpt, step, state, metadata={"model": record, "curve": curve},
                            keep=2, overwrite=True)
            stopped = True
            break
    model = make_model(cfg)                      # float32 compute for pruning and evaluation
    nnx.update(model, state.params)
    info = {"steps_done": int(state.step), "steps_this_run": int(state.step) - start,
            "stopped_early": stopped, "train_seconds_this_run": time.perf_counter() - t0,
            "checkpoint": str(ckpt)}
    return model, curve, info


# --------------------------------------------------------------------------- pruning

def configurations(cfg: Config) -> list[tuple[str, float | None, Any]]:
    """(label, sparsity, structure) of every target: unstructured ones, then N:M."""
    import sparsejax as sj

    out = [(f"{s:.0%}", s, sj.Unstructured()) for s in cfg.sparsities]
    return out + [(p, None, parse_nm(p)) for p in cfg.nm]


def prune_one(model, method_name: str, sparsity, structure, tokens, cfg: Config, log=log_line):
    """One method at one target (OWL: Wanda with :func:`owl_layer_sparsities`)."""
    from sparsejax import posttrain

    method = {"magnitude": posttrain.Magnitude(), "wanda": posttrain.Wanda(),
              "wanda_owl": posttrain.Wanda(), "sparsegpt": posttrain.SparseGPT()}[method_name]
    layer_sparsity = None
    if method_name == "wanda_owl":
        layer_sparsity = posttrain.owl_layer_sparsities(
            model, tokens, sparsity, m=cfg.owl_m, lam=cfg.owl_lam,
            batch_size=cfg.calibration_batch, log=log)
    return posttrain.prune_sequential(
        model, tokens, method, sparsity, structure=structure, layer_sparsity=layer_sparsity,
        batch_size=cfg.calibration_batch)


def run_pruning(cfg: Config, model, corpus, evaluate: bool, log=log_line) -> list[dict]:
    """Every method at every target and calibration seed; evaluated when ``evaluate``."""
    import jax
    from flax import nnx

    import sparsejax as sj
    from sparsejax import posttrain
    from sparsejax.data import contiguous_windows, random_windows

    valid = contiguous_windows(corpus.validation, cfg.seq_len + 1, cfg.eval_windows)
    rows = []
    if evaluate:
        dense = posttrain.evaluate_language_model(model, valid, batch_size=cfg.batch_size)
        rows.append({"method": "dense", "target": "dense", "seed": None,
                     "bits_per_byte": dense.bits_per_token, "perplexity": dense.perplexity,
                     "sparsity": 0.0, "prune_seconds": 0.0, "layers": []})
        log(f"dense: {dense.bits_per_token:.4f} bits/byte, perplexity {dense.perplexity:.3f} "
            f"({dense.tokens:,} validation bytes)")
    calib = {s: random_windows(corpus.calibration, cfg.calibration, cfg.seq_len, seed=s)
             for s in cfg.calibration_seeds}
    for label, sparsity, structure in configurations(cfg):
        for name in cfg.methods:
            if name == "wanda_owl" and not isinstance(structure, sj.Unstructured):
                continue
            for seed in cfg.calibration_seeds if name != "magnitude" else (None,):
                t = time.perf_counter()
                out = prune_one(model, name, sparsity, structure,
                                calib[cfg.calibration_seeds[0] if seed is None else seed], cfg,
                                log)
                jax.block_until_ready(nnx.state(out.model, nnx.Param))
                row = {"method": name, "target": label, "seed": seed, "sparsity": out.sparsity,
                       "prune_seconds": time.perf_counter() - t,
                       "layers": [dataclasses.asdict(r) for r in out.layers]}
                if evaluate:
                    ev = posttrain.evaluate_language_model(out.model, valid,
                                                           batch_size=cfg.batch_size)
                    row.update(bits_per_byte=ev.bits_per_token, perplexity=ev.perplexity)
                rows.append(row)
                log(f"{name} {label} seed {seed}: sparsity {out.sparsity:.4f}, "
                    + (f"{row['bits_per_byte']:.4f} bits/byte, " if evaluate else "")
                    + f"pruned in {row['prune_seconds']:.1f} s")
    return rows


def time_pruning(cfg: Config, corpus, log=log_line) -> dict:
    """Seconds to prune a ~100M-parameter decoder (random weights), cold and warm."""
    import jax
    from flax import nnx

    import sparsejax as sj
    from sparsejax import posttrain
    from sparsejax.data import random_windows
    from sparsejax.models import DecoderLM

    model = DecoderLM(256, cfg.timing_dim, cfg.timing_depth, cfg.timing_heads,
                      max_len=cfg.timing_seq_len, rngs=nnx.Rngs(0))
    total, pruned = count_params(model)
    tokens = random_windows(corpus.calibration, cfg.timing_sequences, cfg.timing_seq_len, seed=0)
    result = {"params": total, "pruned_params": pruned, "sequences": cfg.timing_sequences,
              "seq_len": cfg.timing_seq_len, "runs": []}
    log(f"timing: {total:,} parameters ({pruned:,} in the pruned layers), "
        f"{cfg.timing_sequences} x {cfg.timing_seq_len} calibration bytes")
    for name, method in (("sparsegpt", posttrain.SparseGPT()), ("wanda", posttrain.Wanda()),
                         ("magnitude", posttrain.Magnitude())):
        for label, sparsity, structure in (("50%", 0.5, sj.Unstructured()),
                                           ("2:4", None, sj.NM(2, 4))):
            times = []
            for _ in range(2):
                t = time.perf_counter()
                out = posttrain.prune_sequential(model, tokens, method, sparsity,
                                                 structure=structure, errors=False,
                                                 batch_size=cfg.calibration_batch)
                jax.block_until_ready(nnx.state(out.model, nnx.Param))
                times.append(time.perf_counter() - t)
            result["runs"].append({"method": name, "target": label, "first_s": times[0],
                                   "second_s": times[1]})
            log(f"timing {name} {label}: first call {times[0]:.1f} s (with compilation), "
                f"second {times[1]:.1f} s")
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    if stats and "peak_bytes_in_use" in stats:
        result["peak_device_memory_gb"] = stats["peak_bytes_in_use"] / 2**30
    return result


# --------------------------------------------------------------------------- report

def report(cfg: Config, rows: list[dict], timing: dict | None, header: str) -> str:
    """``results.md``: the table of every method and target, rankings, timings."""
    body = [header]
    if rows and "bits_per_byte" in rows[0]:
        agg = aggregate(rows, ("method", "target"), ("bits_per_byte", "perplexity", "sparsity",
                                                     "prune_seconds"))
        for a in agg:
            a["seeds"] = a["n"] if a["method"] not in ("dense", "magnitude") else "—"
        body.append(markdown_table(agg, [
            ("method", "{method}"), ("target", "{target}"), ("sparsity", "{sparsity_mean:.4f}"),
            ("val bits/byte", "{bits_per_byte_mean:.4f} ± {bits_per_byte_std:.4f}"),
            ("val perplexity/byte", "{perplexity_mean:.3f}"),
            ("prune s", "{prune_seconds_mean:.1f}"), ("seeds", "{seeds}")]))
        lines = []
        for label, *_ in configurations(cfg):
            here = sorted((a["bits_per_byte_mean"], a["method"]) for a in agg
                          if a["target"] == label)
            lines.append(f"- {label}: " + " < ".join(f"{m} {b:.4f}" for b, m in here))
        body.append("Ranking by validation bits per byte (lower is better):\n\n"
                    + "\n".join(lines))
    if timing:
        body.append(f"## Time to prune a {timing['params'] / 1e6:.1f}M-parameter decoder\n\n"
                    f"{timing['sequences']} calibration sequences of {timing['seq_len']} bytes, "
                    f"random weights, float32"
                    + (f"; peak device memory {timing['peak_device_memory_gb']:.1f} GiB"
                       if "peak_device_memory_gb" in timing else "") + ".\n\n"
                    + markdown_table(timing["runs"], [
                        ("method", "{method}"), ("target", "{target}"),
                        ("first call s (compiles)", "{first_s:.1f}"),
                        ("second call s", "{second_s:.1f}")]))
    return "\n\n".join(body) + "\n"


def _curve_figure(curve: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot([r["step"] for r in curve], [r["train_bits_per_byte"] for r in curve], label="train")
    val = [r for r in curve if r.get("validation_bits_per_byte") is not None]
    ax.plot([r["step"] for r in val], [r["validation_bits_per_byte"] for r in val], "o-",
            label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per byte")
    ax.set_title("byte-level decoder on the Python standard library")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _layer_errors_figure(rows: list[dict], targets: list[str]):
    """Relative output error per layer (first calibration seed), one panel per target."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4), dpi=120,
                             squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        seen, names = set(), []
        for row in rows:
            if row["target"] != target or row["method"] in seen or not row["layers"]:
                continue
            seen.add(row["method"])
            errs = [r["error"] for r in row["layers"]]
            ax.semilogy(range(len(errs)), errs, marker=".", label=row["method"])
            names = [r["path"].removeprefix("blocks/").removesuffix("/kernel")
                     for r in row["layers"]]
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=6)
        ax.set_title(f"{target}: ‖XW − XŴ‖² / ‖XW‖² per layer (blocks in order)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figures(results: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``training_curve`` (train / validation bits per byte) and ``layer_errors`` (per-layer
    output errors at the first sparsity and the first N:M pattern), where the run has them."""
    out = {}
    curve = (results.get("training") or {}).get("curve")
    if curve:
        out["training_curve"] = _curve_figure(curve)
    rows = results.get("rows")
    if rows:
        sparsities, nm = config.get("sparsities") or (), config.get("nm") or ()
        targets = [t for t in (f"{sparsities[0]:.0%}" if sparsities else None,
                               nm[0] if nm else None) if t]
        out["layer_errors"] = _layer_errors_figure(rows, targets)
    return out


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Train (or restore), prune, evaluate and time (module docstring)."""
    t_start = time.perf_counter()
    corpus = _corpus(cfg.max_files)
    print(corpus)
    record = _model_record(cfg, corpus.sha256)
    results: dict = {"corpus": corpus.summary(), "environment": environment()}
    quiet = log_line if cfg.progress else (lambda _: None)
    if "train" in cfg.phases or "prune" in cfg.phases or "evaluate" in cfg.phases:
        model, curve, info = train(cfg, corpus, record, log=quiet,
                                   writer=ctx.writer.scoped("train"))
        total, pruned = count_params(model)
        results["training"] = {**info, "params": total, "pruned_params": pruned}
        ctx.write_json("corpus.json", corpus.summary())
        ctx.write_json("training.json", {"curve": curve, **results["training"]})
        results["training"]["curve"] = curve
        log_line(f"model: {total:,} parameters, {pruned:,} in the blocks' linear layers")
        if info["stopped_early"]:
            log_line(f"training stopped at step {info['steps_done']} of {cfg.steps} "
                     f"(--max-train-seconds); run the same command with --resume to "
                     f"continue it from the checkpoint, then prune")
            ctx.save_figures(figures(results, dataclasses.asdict(cfg)))
            ctx.write_json("results.json", results)
            return results
    rows = []
    if "prune" in cfg.phases or "evaluate" in cfg.phases:
        rows = run_pruning(cfg, model, corpus, "evaluate" in cfg.phases)
        results["rows"] = rows
    timing = time_pruning(cfg, corpus) if "timing" in cfg.phases else None
    results["timing"] = timing
    env = results["environment"]
    header = (f"# Post-training pruning of a byte-level decoder (Python {corpus.python_version} "
              f"standard library)\n\n"
              + (f"Model: {results['training']['params']:,} parameters "
                 f"({cfg.dim} wide, {cfg.depth} blocks, context {cfg.seq_len}), trained "
                 f"{results['training']['steps_done']} steps of {cfg.batch_size} × "
                 f"{cfg.seq_len} bytes. " if "training" in results else "")
              + f"Calibration: {cfg.calibration} sequences of {cfg.seq_len} bytes from the "
              f"calibration files, seeds {list(cfg.calibration_seeds)}; validation: "
              f"{corpus.validation.size:,} bytes of other files. Corpus sha256 "
              f"{corpus.sha256[:16]}…; device {env['device']}, jax {env['jax']}; wall time "
              f"{time.perf_counter() - t_start:.0f} s.\n"
              f"Command: `{ctx.command}`")
    text = report(cfg, rows, timing, header)
    ctx.write_json("corpus.json", corpus.summary())
    ctx.save_figures(figures(results, dataclasses.asdict(cfg)))
    ctx.write_text("results.md", text)
    ctx.write_json("results.json", results)
    print(text)
    return results


STUDY = Study(
    name="posttrain", config=Config, run=run, check=check, figures=figures, smoke=SMOKE,
    summary="post-training pruning of a byte-level decoder: magnitude, Wanda, SparseGPT, OWL",
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``sparsejax posttrain [flags]`` (``argv`` default: ``sys.argv[1:]``)."""
    return run_study(STUDY, argv)
