"""Scores that accumulate across steps (movement pruning)."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from transform_problems import (
    SIZES,
    _batch,
    _mlp_loss,
    _mlp_params,
    _named,
    _run_mlp,
)

from sparsejax import schedules, scores
from sparsejax.transforms import (
    accumulated,
    pruning,
)


def test_accumulated_movement_score():
    tx = pruning(optax.sgd(0.1), score=accumulated(scores.movement),
                 schedule=schedules.one_shot(0.5, at=3))
    state = _run_mlp(tx, 4, jit=False)[-1][1]
    # Replay plain SGD for the same 4 steps (nothing is pruned before step 3)
    # and accumulate Sanh et al.'s S = -sum_t w_t * g_t by hand.
    params, total = _mlp_params(jax.random.key(0)), None
    for _ in range(4):
        g = jax.grad(_mlp_loss)(params, _batch())
        step_score = jax.tree.map(lambda p, gg: -p * gg, params, g)
        total = step_score if total is None else jax.tree.map(jnp.add, total, step_score)
        params = jax.tree.map(lambda p, gg: p - 0.1 * gg, params, g)
    chex.assert_trees_all_close(state.score_state, total, rtol=1e-5, atol=1e-7)
    # The mask selected at step 3 keeps the half of each kernel with the largest S.
    for (name, s), (_, m) in zip(_named(total), _named(state.mask)):
        if name in SIZES:
            s, m = np.asarray(s), np.asarray(m)
            assert (~m).sum() == SIZES[name] // 2
            assert np.max(s[~m]) <= np.min(s[m]), name
