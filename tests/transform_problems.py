"""Shared problems and checks of the transforms tests (tests/transforms/): a quadratic with a
random mask, a tiny MLP, the optimizers every invariant runs with, and jitted runs cached
across test files (one compile per transform)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sparsejax.masks as sjm
from sparsejax import schedules, scores
from sparsejax.transforms import (
    keep_sparse,
    pruning,
)
from sparsejax.tree import named_leaves

OPTIMIZERS = {
    "sgd_momentum": lambda: optax.sgd(0.05, momentum=0.9),
    "nesterov": lambda: optax.sgd(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(0.05),
    "adamw": lambda: optax.adamw(0.05, weight_decay=0.1),
    "lion": lambda: optax.lion(0.01, weight_decay=0.1),
    "injected_adamw": lambda: optax.inject_hyperparams(optax.adamw)(
        learning_rate=optax.cosine_decay_schedule(0.05, 40), weight_decay=0.1
    ),
    "chain_clip_adam": lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.05)),
}

magnitude_score = lambda p, g: scores.magnitude(p)  # noqa: E731


# --------------------------------------------------------------------------- fixtures


def _quadratic_problem(seed: int):
    """Params, a 50 % random mask and a target: loss 0.5 |W - T|^2 has a nonzero gradient everywhere."""
    k = jax.random.split(jax.random.key(seed), 4)
    params = {
        "w": jax.random.normal(k[0], (6, 8)) + 3.0,
        "b": jax.random.normal(k[1], (8,)),
        "v": jax.random.normal(k[2], (8, 4)) + 3.0,
    }
    target = jax.tree.map(lambda p: -2.0 * p, params)
    mask = {
        "w": jax.random.bernoulli(k[3], 0.5, (6, 8)),
        "b": jnp.ones((), bool),
        "v": jax.random.bernoulli(jax.random.fold_in(k[3], 1), 0.5, (8, 4)),
    }
    return params, mask, target


def _quadratic_loss(params, target):
    return 0.5 * sum(jnp.sum((p - t) ** 2) for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(target)))


def _mlp_params(key):
    k = jax.random.split(key, 2)
    return {
        "dense0": {"kernel": jax.random.normal(k[0], (4, 16)) * 0.5, "bias": jnp.zeros(16)},
        "out": {"kernel": jax.random.normal(k[1], (16, 2)) * 0.25, "bias": jnp.zeros(2)},
    }


def _mlp(params, x):
    h = jnp.tanh(x @ params["dense0"]["kernel"] + params["dense0"]["bias"][None, :])
    return h @ params["out"]["kernel"] + params["out"]["bias"][None, :]


def _batch(seed=0):
    x = jax.random.normal(jax.random.key(100 + seed), (32, 4))
    y = jnp.stack([jnp.sin(2.0 * x[:, 0]), x[:, 1] * x[:, 2]], axis=1)
    return x, y


def _mlp_loss(params, batch):
    x, y = batch
    return jnp.mean((_mlp(params, x) - y) ** 2)


def _train_step(tx, loss_fn=_mlp_loss):
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def _expected_pruned(sparsity, n):
    """round(s * n) with s the float32 schedule value; refuses near-ties so the test is robust."""
    x = float(np.float32(sparsity)) * n
    assert abs(x - np.floor(x) - 0.5) > 1e-3, f"ambiguous tie {x}"
    return int(np.round(x))


def _full(mask, params):
    """[(path, full-shape numpy mask, numpy param)], the mask validated against the params."""
    sjm.validate_mask(params, mask)
    masks, params = jax.device_get((mask, params))
    return [
        (name, np.broadcast_to(np.asarray(m), np.shape(p)), np.asarray(p))
        for (name, m), (_, p) in zip(named_leaves(masks), named_leaves(params))
    ]


def _pruned(mask, params):
    """{path: number of pruned entries} for the prunable (ndim >= 2) leaves."""
    return {n: int(m.size - m.sum()) for n, m, p in _full(mask, params) if p.ndim >= 2}


def _named(tree):
    return named_leaves(tree)


def _assert_pruned_are_zero(params, mask):
    for name, m, p in _full(mask, params):
        assert np.all(p[~m] == 0.0), f"{name}: pruned weights moved: {p[~m][p[~m] != 0][:5]}"


def _assert_shrinks(old, new):
    old, new = jax.device_get((old, new))
    for (name, a), (_, b) in zip(named_leaves(old), named_leaves(new)):
        assert not np.any(np.asarray(b) & ~np.asarray(a)), f"mask grew at {name}"


@functools.cache
def _quadratic_step(name: str, gradual: bool = False):
    """(tx, jitted train step) for the quadratic problem, one compile per case.

    ``keep_sparse``'s update reads the mask from the state only, so one step
    serves every mask (swap it with ``state.with_mask(...)``).
    """
    if gradual:
        # Prune 15 % more every 3 steps until 60 % of the 80 kernel entries,
        # while momentum and Adam moments are live.
        tx = pruning(
            OPTIMIZERS[name](),
            score=magnitude_score,
            schedule=schedules.periodic(0.15, every=3, final=0.6, begin=1),
            scope="global",
        )
    else:
        tx = keep_sparse(OPTIMIZERS[name](), _quadratic_problem(0)[1])
    return tx, jax.jit(_train_step(tx, _quadratic_loss))



# --------------------------------------------------------------------------- pruning on a tiny MLP

SIZES = {"dense0/kernel": 64, "out/kernel": 32}
# Updates at 2, 5, 8, 11, 14 to 0, 0.4625, 0.7, 0.7875, 0.8.
POLY = schedules.polynomial(0.0, 0.8, begin=2, end=14, every=3)
TX_LAYER = pruning(optax.adam(0.02), score=magnitude_score, schedule=POLY)
# Updates at 0, 2, 4 to 0, 0.6125, 0.7 (global: of all 96 kernel entries).
GLOBAL_SCHEDULE = schedules.polynomial(0.0, 0.7, begin=0, end=4, every=2)
TX_GLOBAL = pruning(optax.adamw(0.02, weight_decay=0.1), score=magnitude_score, scope="global",
                    schedule=GLOBAL_SCHEDULE)

TRACES: dict = {}


@functools.cache
def _jitted(tx):
    """One jitted ``(init, train step)`` per transform, shared by the tests (counts step traces)."""

    def step(params, opt_state, batch):
        TRACES[tx] = TRACES.get(tx, 0) + 1
        return _train_step(tx)(params, opt_state, batch)

    return jax.jit(tx.init), jax.jit(step)


def _run_mlp(tx, num_steps, *, jit=True, params=None):
    """``num_steps`` train steps on the MLP, all jitted or all eager: [(params, state, loss)]."""
    params = _mlp_params(jax.random.key(0)) if params is None else params
    init, step = _jitted(tx) if jit else (tx.init, _train_step(tx))
    state, batch, history = init(params), _batch(), []
    for _ in range(num_steps):
        params, state, loss = step(params, state, batch)
        history.append((params, state, float(loss)))
    return history

