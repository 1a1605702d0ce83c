"""Cost of gradual pruning inside the train step: pruned step time over the dense step time.

Both steps are :func:`sparsejax.train.make_train_step` (jitted, params and
optimizer state on the device, batches pre-staged and rotated). The dense
step uses the optimizer ``tx``; the pruned step uses
``sparsejax.pruning(tx, score=magnitude, schedule=...)`` on every kernel, so
the only difference is the pruning transform: zeroing gradients at pruned
positions, the ``lax.cond`` that re-selects the mask on update steps and
``where(mask, u, -p)``.

Variants, each timed as ``steps`` consecutive calls from Python followed by
one ``block_until_ready`` (what a training loop does), median of ``repeats``
windows taken round-robin over the variants after a compile step and a warm-up
window (:func:`sparsejax.runner.time_round_robin`):

* ``dense``: the plain optimizer (timed twice, ``dense`` and ``dense_again``,
  to show the run-to-run spread);
* ``keep_sparse``: :func:`sparsejax.keep_sparse` with a fixed mask (gradient
  and update masking only, no ``lax.cond``): the floor of any masked step;
* ``ordinary``: the pruning transform, no update inside the window
  (schedule starts after it): the cost of every non-update step;
* ``update``: a mask update on every step (``every=1``): the cost of one
  update step (scoring plus selection);
* ``every100``: updates every 100 steps (Zhu & Gupta polynomial schedule),
  over a window of a multiple of 100 steps: the average the issue asks for;
* ``*_host``: the same three with the schedule on the host, no ``lax.cond``
  (an ordinary step is a ``keep_sparse`` step, an update step selects
  unconditionally): with the ``python`` loop,
  ``make_train_step(host_schedule=True)`` and
  ``prune_now = t in update_steps(schedule, ...)``; with the ``device`` loop,
  the window is one :func:`sparsejax.train.make_train_loop` program (a
  ``lax.scan`` between the update steps, which the host places);
* ``dense_variables``: the dense step on a state of ``nnx.Variable`` objects
  (``create_train_state(plain_arrays=False)``); every other variant uses
  plain arrays (``--variables`` switches them all to ``nnx.Variable``).

Models (``--models``):

* ``resnet20``: :class:`sparsejax.models.ResNet20` (269,722 params), CIFAR
  shapes ``float32[128, 32, 32, 3]``, SGD momentum 0.9 + weight decay;
* ``gpt``: :class:`sparsejax.models.decoder.DecoderLM` (111,008,256 params;
  width 768, 12 layers, vocabulary 32,768), bfloat16 compute, batch
  ``--gpt-batch`` x ``--gpt-seq`` tokens, AdamW;
* ``mlp``: a 318,010-parameter MLP 784-400-10 at batch 1024, the
  launch-bound case JaxPruner measured at 1.27x (on a 330k MLP).

Usage::

    python benchmarks/pruning_overhead.py --models resnet20 mlp --steps 20 \
        --repeats 2                                                   # CPU check
    python benchmarks/pruning_overhead.py --tag gpu       # GPU machine
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import sparsejax as sj
from sparsejax import train as sj_train
from sparsejax.models import MLP, ResNet20
from sparsejax.models.decoder import DecoderLM, next_token_loss
from sparsejax.runner import (
    config_to_dict,
    environment,
    markdown_table,
    parse_config,
    time_round_robin,
    write_report,
)

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "benchmarks"
FAR = 10**8  # a schedule beginning here never updates inside the timed window


@dataclasses.dataclass(frozen=True)
class Config:
    """Cost of gradual pruning inside the train step: pruned step time over the dense step time."""

    models: tuple[Literal["mlp", "resnet20", "gpt"], ...] = ("mlp", "resnet20", "gpt")
    scopes: tuple[Literal["layer", "global"], ...] = ("layer", "global")
    steps: int = dataclasses.field(default=200,
                                   metadata={"help": "timed steps (multiple of 100)"})
    repeats: int = 7
    loop: Literal["python", "device"] = dataclasses.field(
        default="python", metadata={"help": "python: one dispatch per step; device: all steps "
                                            "in one jitted lax.scan"})
    variables: bool = dataclasses.field(
        default=False, metadata={"help": "states of nnx.Variable objects instead of plain "
                                         "arrays (create_train_state)"})
    variants: tuple[str, ...] | None = dataclasses.field(
        default=None, metadata={"help": "only these variants (default: all; *_host ones need "
                                        "--loop python)"})
    resnet_batch: int = 128
    mlp_batch: int = 1024
    gpt_batch: int = 16
    gpt_seq: int = 1024
    tag: str = dataclasses.field(default_factory=jax.default_backend,
                                 metadata={"help": "output name suffix"})
    out_dir: pathlib.Path = RESULTS
    out: pathlib.Path | None = dataclasses.field(
        default=None, metadata={"help": "JSON path (default "
                                        "OUT_DIR/pruning_overhead_<tag>_<loop>.json)"})


def kernels(path: str, leaf: Any) -> bool:
    """Prune every kernel and the token embedding (not biases, norms, positions)."""
    return path.endswith("kernel") or path.endswith("embedding")


def _image_batches(rng, n, batch, shape, classes):
    return [
        (
            jax.device_put(rng.normal(size=(batch, *shape)).astype(np.float32)),
            jax.device_put(rng.integers(0, classes, size=(batch,)).astype(np.int32)),
        )
        for _ in range(n)
    ]


def _token_batches(rng, n, batch, seq, vocab):
    out = []
    for _ in range(n):
        toks = rng.integers(0, vocab, size=(batch, seq + 1)).astype(np.int32)
        out.append((jax.device_put(toks[:, :-1]), jax.device_put(toks[:, 1:])))
    return out


def build(name: str, cfg: Config, rng: np.random.Generator):
    """``(make_model, tx, batches, step_kwargs, description, params)`` for one model."""
    if name == "resnet20":
        tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
        batches = _image_batches(rng, 4, cfg.resnet_batch, (32, 32, 3), 10)
        return (
            lambda key: ResNet20(rngs=nnx.Rngs(key)),
            tx,
            batches,
            {},
            f"ResNet-20 (CIFAR), batch {cfg.resnet_batch}, SGD momentum + wd",
        )
    if name == "mlp":
        tx = optax.adam(1e-3)
        batches = _image_batches(rng, 4, cfg.mlp_batch, (784,), 10)
        return (
            lambda key: MLP((784, 400, 10), rngs=nnx.Rngs(key)),
            tx,
            batches,
            {},
            f"MLP 784-400-10 (318k params), batch {cfg.mlp_batch}, Adam",
        )
    if name == "gpt":
        tx = optax.adamw(3e-4, weight_decay=0.1)
        batches = _token_batches(rng, 4, cfg.gpt_batch, cfg.gpt_seq, 32768)
        return (
            lambda key: DecoderLM(max_len=cfg.gpt_seq, dtype=jnp.bfloat16, rngs=nnx.Rngs(key)),
            tx,
            batches,
            {"loss_fn": next_token_loss, "metrics_fn": lambda logits, labels: {}},
            f"GPT decoder (111M params), {cfg.gpt_batch}x{cfg.gpt_seq} tokens, bf16, AdamW",
        )
    raise ValueError(f"unknown model {name!r}")


def pruned_tx(tx: optax.GradientTransformation, schedule: Any, scope: str):
    return sj.pruning(
        tx,
        score=lambda params, grads: sj.scores.magnitude(params),
        schedule=schedule,
        prunable=kernels,
        scope=scope,
    )


class Variant:
    """One variant: its jitted step, its initial state, its compile step and its window of
    ``steps`` steps (timed by :func:`sparsejax.runner.time_round_robin`).

    ``loop="python"``: ``steps`` calls of the jitted step from Python, one sync at the
    end (what a training loop does; includes host dispatch). ``loop="device"``: the
    same steps inside one jitted ``lax.scan`` that keeps every step's metrics, like
    ``make_train_loop`` (device time only, no dispatch), reading one window of ``steps``
    batches passed as an argument (every variant reads the same bytes from HBM).
    """

    def __init__(self, make_model, tx, batches, step_kwargs, steps, loop, *, plain=True,
                 schedule=None):
        # schedule: the host knows the update steps, no lax.cond (python loop: prune_now per
        # step; device loop: make_train_loop). Windows cover steps 1 .. steps (after the
        # compile step), so the host needs the update steps below 1 + steps.
        self.host = schedule is not None
        self.update_at = (set(sj.schedules.update_steps(schedule, 1 + steps).tolist())
                          if self.host else None)
        self.step = sj_train.make_train_step(**step_kwargs, host_schedule=self.host)
        self.state = sj_train.create_train_state(
            make_model(jax.random.key(0)), tx, key=jax.random.key(1), plain_arrays=plain
        )
        self.batches, self.steps, self.loop = batches, steps, loop
        self.host_step = 0
        if loop == "device":
            stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
            raw = sj_train.make_train_step(**step_kwargs, jit=False)
            # Every device loop reads the same window of `steps` batches, an argument in
            # device memory: a loop that cycled through a few batches baked into the
            # program would read them from the L2 cache, and the host-scheduled loop,
            # given the window, from HBM.
            window = jax.tree.map(lambda x: x[np.arange(steps) % len(batches)], stacked)

            def many(state, window):
                # metrics kept per step, as make_train_loop keeps them: a loop that drops
                # them lets XLA delete the metric kernels from the baseline alone
                def body(st, i):
                    return raw(st, jax.tree.map(lambda x: x[i], window))

                return jax.lax.scan(body, state, jnp.arange(steps))

            program = jax.jit(many)
            self.many = lambda state: program(state, window)
            if self.host:
                train_loop = sj_train.make_train_loop(**step_kwargs)
                self.many = lambda state: train_loop(state, window, self.host_step)

    def compile(self):
        """The first step (python loop) or window (device loop): compiles, and advances the
        state the windows start from."""
        self.host_step = 0
        python = self.loop == "python"
        self.state = self._run(1) if python else self.many(self.state)[0]
        self.host_step = 1 if python else self.steps
        if self.host and python:  # compile the other value of prune_now
            jax.block_until_ready(self.step(self.state, self.batches[0], prune_now=True))
            jax.block_until_ready(self.step(self.state, self.batches[0], prune_now=False))
        return self.state

    def _run(self, steps):
        s = self.state
        if self.update_at is None:
            for i in range(steps):
                s, _ = self.step(s, self.batches[i % len(self.batches)])
            return s
        start = self.host_step  # the state's step, counted on the host: no device read
        for i in range(steps):
            s, _ = self.step(s, self.batches[i % len(self.batches)],
                             prune_now=start + i in self.update_at)
        return s

    def window(self):
        """One window of ``steps`` steps. Every window starts from the same state (step
        counter included), so the update steps of a schedule fall at the same places in
        every window."""
        return self._run(self.steps) if self.loop == "python" else self.many(self.state)


def main(argv: list[str] | None = None) -> list[dict]:
    cfg = parse_config(Config, argv)
    rng = np.random.default_rng(0)
    rows = []
    descriptions = {}
    for name in cfg.models:
        make_model, tx, batches, step_kwargs, description = build(name, cfg, rng)
        descriptions[name] = description
        # update steps at multiples of 100 counted from the state's step 1 (after the
        # compile step): begin=1 puts updates at 1, 101, 201, ... inside the window.
        plain = not cfg.variables
        # the mask mirrors the state's params (plain arrays or nnx.Variable objects)
        params = sj_train.create_train_state(
            make_model(jax.random.key(0)), optax.identity(), key=0, plain_arrays=plain).params
        n_params = sum(x.size for x in jax.tree.leaves(params))
        fixed = sj.prune(sj.scores.magnitude(params), 0.5, prunable=kernels)
        # (name, scope, tx, state of plain arrays?, schedule placed on the host or None)
        variants: list[tuple[str, str, Any, bool, Any]] = [
            ("dense", "-", tx, plain, None),
            ("dense_again", "-", tx, plain, None),
            ("dense_variables", "-", tx, False, None),
            ("keep_sparse", "-", sj.keep_sparse(tx, fixed), plain, None),
        ]
        for scope in cfg.scopes:
            schedules = {
                "ordinary": sj.schedules.polynomial(0.0, 0.9, begin=FAR, end=FAR + 100, every=100),
                "update": sj.schedules.polynomial(0.0, 0.9, begin=0, end=100 * cfg.steps, every=1),
                "every100": sj.schedules.polynomial(
                    0.0, 0.9, begin=1, end=1 + 100 * cfg.steps, every=100),
            }
            for label, sched in schedules.items():
                variants.append((label, scope, pruned_tx(tx, sched, scope), plain, None))
            for label, sched in schedules.items():
                variants.append((f"{label}_host", scope, pruned_tx(tx, sched, scope), plain, sched))
        if cfg.variants:
            variants = [v for v in variants if v[0] in cfg.variants or v[0] == "dense"]
        runs = [
            Variant(make_model, t, batches, step_kwargs, cfg.steps, cfg.loop, plain=p,
                    schedule=host)
            for _, _, t, p, host in variants
        ]
        # each compiled and warmed up (one window), then round-robin: drifts hit every
        # variant alike
        timings = time_round_robin([r.window for r in runs], repeats=cfg.repeats, warmup=1,
                                   calls=cfg.steps, first=[r.compile for r in runs])
        del runs
        dense_median = None
        for (variant, scope, _, plain_state, _), timing in zip(variants, timings, strict=True):
            compile_s = timing.compile_s
            times = [t * cfg.steps for t in timing.times_s]  # window seconds
            per_step = timing.median_s
            dense_median = per_step if variant == "dense" else dense_median
            row = {
                "model": name,
                "description": description,
                "params": int(n_params),
                "variant": variant,
                "scope": scope,
                "steps": cfg.steps,
                "loop": cfg.loop,
                "state": "plain arrays" if plain_state else "nnx.Variable",
                "compile_s": compile_s,
                "times_s": times,
                "step_ms": per_step * 1e3,
                "step_iqr_ms": timing.iqr_s * 1e3,
                "ratio_vs_dense": per_step / dense_median,
            }
            rows.append(row)
            print(
                f"{name:9s} {variant:16s} {scope:6s} {per_step * 1e3:9.3f} ms/step "
                f"x{row['ratio_vs_dense']:.3f} (compile {compile_s:.1f} s)",
                flush=True,
            )
    env = environment()
    table = markdown_table(
        rows,
        [
            ("model", "{model}"),
            ("params", "{params:,}"),
            ("variant", "{variant}"),
            ("scope", "{scope}"),
            ("state", "{state}"),
            ("ms/step", "{step_ms:.3f}"),
            ("vs dense", "{ratio_vs_dense:.3f}x"),
        ],
    )
    header = (
        f"# Gradual pruning overhead: pruned vs dense train step ({cfg.loop} loop)\n\n"
        f"Device: {env['device']} ({env['backend']}); jax {env['jax']}, flax {env['flax']}, "
        f"optax {env['optax']}; {env['date']}.\nCommand: `{env['command']}`. Median of "
        f"{cfg.repeats} windows of {cfg.steps} steps per variant, variants timed round-robin "
        "(`python` loop: steps dispatched back to back, one sync per window; `device` loop: "
        "the window is one jitted `lax.scan` keeping the metrics of every step, over `steps` "
        "batches in device memory, the same for every variant). `ordinary` = "
        "no mask update in the window, `update` = an update every "
        "step, `every100` = Zhu & Gupta schedule updating every 100 steps (the average); "
        "`*_host` = the same with the schedule on the host (`make_train_step(host_schedule=True)`"
        ", no `lax.cond`); `dense_variables` = the dense step on a state of `nnx.Variable` "
        "objects instead of plain arrays.\n\n"
        + "\n".join(f"- {m}: {d}" for m, d in descriptions.items())
        + "\n"
    )
    print("\n" + table)
    out = write_report(
        cfg.out or cfg.out_dir / f"pruning_overhead_{cfg.tag}_{cfg.loop}.json",
        {
            "benchmark": "pruning_overhead",
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
