"""make_train_loop: many steps in one program, the updates placed on the host."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_models import (
    HIDDEN,
    IN,
    STEP,
    make_net,
)

from sparsejax import train as sj_train
from sparsejax.train._loop import _loop_plan


def test_train_loop_equals_the_lax_cond_steps(data):
    """make_train_loop: n steps in one program, updates placed on the host, same results."""
    from sparsejax import schedules, scores, transforms

    sched = schedules.polynomial(0.0, 0.5, begin=2, end=6, every=2)
    tx = transforms.pruning(optax.adam(1e-2), schedule=sched,
                            score=lambda params, grads: scores.magnitude(params))
    x, y = data
    batches = [(jnp.asarray(x[i:i + 8]), jnp.asarray(y[i:i + 8])) for i in range(0, 40, 8)]
    plain_step = sj_train.make_train_step()
    loop = sj_train.make_train_loop(sched)
    a = b = c = sj_train.create_train_state(make_net(0), tx, key=1)
    history = []
    for t in range(10):  # steps 0..9: updates at 2, 4, 6
        a, metrics = plain_step(a, batches[t % 5])
        history.append(metrics)
    stacked = jax.tree.map(lambda *bs: jnp.stack(bs), *batches)
    # two windows of 5 steps: updates at offsets (2, 4) then (1,)
    for start in (0, 5):
        b, metrics_b = loop(b, stacked, start)
        want = jax.tree.map(lambda *ms: jnp.stack(ms), *history[start:start + 5])
        chex.assert_trees_all_close(metrics_b, want, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(transforms.current_mask(a.opt_state),
                                transforms.current_mask(b.opt_state))
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)
    assert int(b.step) == 10
    kept = np.asarray(transforms.current_mask(b.opt_state)["fc1"]["kernel"][...])
    assert int((~kept).sum()) == IN * HIDDEN // 2
    # eager (jit=False) gives the same
    eager = sj_train.make_train_loop(sched, jit=False)
    for start in (0, 5):
        c, _ = eager(c, stacked, start)
    chex.assert_trees_all_equal(transforms.current_mask(c.opt_state),
                                transforms.current_mask(b.opt_state))
    with pytest.raises(ValueError, match=r"start must be an int >= 0, got -1"):
        loop(b, stacked, -1)
    with pytest.raises(ValueError, match=r"same leading \(step\) axis"):
        loop(b, (stacked[0], stacked[1][:3]), 10)
    with pytest.raises(TypeError, match=r"schedule must have is_update"):
        sj_train.make_train_loop(0.5)


@pytest.mark.parametrize("every", [1, 2])
def test_train_loop_periodic_updates_are_one_scan(data, every):
    """Updates every step / every other step: a nested scan, same states as the cond step."""
    from sparsejax import schedules, scores, transforms

    sched = schedules.polynomial(0.0, 0.6, begin=1, end=9, every=every)
    tx = transforms.pruning(optax.sgd(0.05, momentum=0.9), schedule=sched,
                            score=lambda params, grads: scores.magnitude(params))
    x, y = data
    stacked = (jnp.asarray(x[:40]).reshape(5, 8, IN), jnp.asarray(y[:40]).reshape(5, 8))
    plan = _loop_plan(
        np.isin(np.arange(5), schedules.update_steps(sched, 5)))
    assert len(plan) <= 3  # not one entry per update
    a = b = sj_train.create_train_state(make_net(0), tx, key=1)
    for t in range(5):
        a, _ = STEP(a, (stacked[0][t], stacked[1][t]))
    b, metrics = sj_train.make_train_loop(sched)(b, stacked, 0)
    assert metrics["loss"].shape == (5,)
    chex.assert_trees_all_equal(transforms.current_mask(a.opt_state),
                                transforms.current_mask(b.opt_state))
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)


def test_train_loop_vmapped_seeds_equals_the_vmapped_cond_step(data):
    """make_train_loop(vmap_seeds=True): all seeds share the host-placed updates."""
    from sparsejax import schedules, scores, transforms

    sched = schedules.polynomial(0.0, 0.5, begin=1, end=3, every=2)
    tx = transforms.pruning(optax.adam(1e-2), schedule=sched,
                            score=lambda params, grads: scores.magnitude(params))
    x, y = data
    stacked = (jnp.asarray(x[:32]).reshape(4, 8, IN), jnp.asarray(y[:32]).reshape(4, 8))
    states = sj_train.create_train_states(make_net, tx, jax.random.split(jax.random.key(0), 2))
    many = sj_train.make_train_step(vmap_seeds=True)
    a = states
    for t in range(4):
        a, _ = many(a, (stacked[0][t], stacked[1][t]))
    b, metrics = sj_train.make_train_loop(sched, vmap_seeds=True)(states, stacked, 0)
    assert metrics["loss"].shape == (4, 2)  # (steps, seeds)
    chex.assert_trees_all_equal(transforms.current_mask(a.opt_state),
                                transforms.current_mask(b.opt_state))
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)
    kept = np.asarray(transforms.current_mask(b.opt_state)["fc1"]["kernel"][...])
    assert kept.shape == (2, IN, HIDDEN)
    assert [int((~k).sum()) for k in kept] == [IN * HIDDEN // 2] * 2


# --------------------------------------------------------------------------- the schedule's one place


def _windows(loop, state, stacked, starts=(0, 5)):
    metrics = []
    for start in starts:
        state, m = loop(state, stacked, start)
        metrics.append(m)
    return state, metrics


def _stacked_batches(data):
    x, y = data
    return jnp.asarray(x[:40]).reshape(5, 8, IN), jnp.asarray(y[:40]).reshape(5, 8)


def test_train_loop_reads_the_schedule_from_the_optimizer_state(data):
    """make_train_loop() equals the 0.1 make_train_loop(schedule); a schedule given there
    (deprecated) overrides the state's."""
    from sparsejax import schedules, scores, transforms

    sched = schedules.polynomial(0.0, 0.5, begin=2, end=6, every=2)
    tx = transforms.pruning(optax.adam(1e-2), schedule=sched,
                            score=lambda params, grads: scores.magnitude(params))
    stacked = _stacked_batches(data)
    state = sj_train.create_train_state(make_net(0), tx, key=1)
    new, metrics = _windows(sj_train.make_train_loop(), state, stacked)
    with pytest.warns(DeprecationWarning, match=r"make_train_loop\(schedule\) is deprecated"):
        old_loop = sj_train.make_train_loop(sched)
    old, old_metrics = _windows(old_loop, state, stacked)
    chex.assert_trees_all_equal(new, old)
    chex.assert_trees_all_equal(metrics, old_metrics)
    kept = np.asarray(transforms.current_mask(new.opt_state)["fc1"]["kernel"][...])
    assert int((~kept).sum()) == IN * HIDDEN // 2
    # the given schedule wins: one without updates in the window prunes nothing
    with pytest.warns(DeprecationWarning):
        never = sj_train.make_train_loop(schedules.one_shot(0.5, at=100))
    unpruned, _ = _windows(never, state, stacked)
    assert all(bool(np.all(m)) for m in jax.tree.leaves(transforms.current_mask(unpruned.opt_state)))


def test_train_loop_places_the_updates_of_every_pruning_state(data):
    """Two pruning transforms with their own schedules: the union of their update steps."""
    from sparsejax import schedules, scores, transforms

    magnitude = lambda params, grads: scores.magnitude(params)  # noqa: E731
    tx = optax.chain(
        transforms.pruning(optax.adam(1e-2), score=magnitude, prunable="fc1/kernel",
                           schedule=schedules.one_shot(0.5, at=1)),
        transforms.pruning(optax.identity(), score=magnitude, prunable="fc2/kernel",
                           schedule=schedules.one_shot(0.5, at=3)),
    )
    stacked = _stacked_batches(data)
    a = b = sj_train.create_train_state(make_net(0), tx, key=1)
    for t in range(5):
        a, _ = STEP(a, (stacked[0][t], stacked[1][t]))
    b, _ = sj_train.make_train_loop()(b, stacked, 0)
    for i, (layer, size) in enumerate((("fc1", IN * HIDDEN), ("fc2", HIDDEN * 3))):
        chex.assert_trees_all_equal(a.opt_state[i].mask, b.opt_state[i].mask)
        kept = np.asarray(b.opt_state[i].mask[layer]["kernel"][...])
        assert int((~kept).sum()) == size // 2
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)


def test_train_loop_without_a_pruning_state(data):
    """A dense optimizer (no prune_now argument) runs plain steps; a pruning state assembled
    by hand, without its schedule, is refused."""
    from sparsejax import schedules, scores, transforms

    stacked = _stacked_batches(data)
    a = b = sj_train.create_train_state(make_net(0), optax.adam(1e-2), key=1)
    for t in range(5):
        a, _ = STEP(a, (stacked[0][t], stacked[1][t]))
    b, metrics = sj_train.make_train_loop()(b, stacked, 0)
    assert metrics["loss"].shape == (5,)
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)

    tx = transforms.pruning(optax.adam(1e-2), schedule=schedules.one_shot(0.5, at=1),
                            score=lambda params, grads: scores.magnitude(params))
    state = sj_train.create_train_state(make_net(0), tx, key=1)
    bare = state.replace(opt_state=transforms.PruningState(*state.opt_state[:4]))
    with pytest.raises(ValueError, match="a PruningState without its schedule"):
        sj_train.make_train_loop()(bare, stacked, 0)
