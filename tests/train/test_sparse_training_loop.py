"""Dynamic sparse training inside sparsejax.train: the host-placed drop schedule of
``make_train_loop`` and a killed run resumed from a checkpoint, bit for bit (these need
orbax and the train layer, so they live beside the train tests, not the core's)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import sparsejax as sj
from sparsejax import train as sj_train
from sparsejax.transforms import (
    SparseTrainingState,
    current_mask,
    current_step,
    pruning_schedules,
    sparse_evolutionary,
    sparse_momentum,
)


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(6, 16, rngs=rngs)
        self.fc2 = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.fc2(nnx.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2)
    return rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 3, 40).astype(np.int32)


STEP = sj_train.make_train_step()


def _fresh_state(tx):
    state = sj_train.create_train_state(MLP(nnx.Rngs(0)), tx, key=jax.random.key(1))
    return state.with_mask(current_mask(state.opt_state))


def test_make_train_loop_places_the_drop_schedule_on_the_host(data):
    """The loop's program (random growth, so that no near-tie of gradients between two
    differently fused programs can flip a choice) equals the lax.cond steps."""
    x, y = data
    batches = (jnp.asarray(x[:32].reshape(4, 8, 6)), jnp.asarray(y[:32].reshape(4, 8)))
    tx = sparse_evolutionary(optax.adam(0.05), 0.7, key=4, total_steps=14, every=2, begin=0)
    state = _fresh_state(tx)
    assert pruning_schedules(state.opt_state) == (tx.init(state.params).schedule,)
    loop = sj_train.make_train_loop()
    looped, _ = loop(state, batches, 0)
    looped, _ = loop(looped, batches, 4)  # steps 4..7: updates at 4 and 6
    stepped = state
    for t in range(8):
        stepped, _ = STEP(stepped, jax.tree.map(lambda b, t=t: b[t % 4], batches))
    assert int(current_step(looped.opt_state)) == 8
    chex.assert_trees_all_equal(current_mask(looped.opt_state), current_mask(stepped.opt_state))
    chex.assert_trees_all_close(looped.params, stepped.params, rtol=1e-5, atol=1e-6)
    moved = np.sum(_leaf(current_mask(looped.opt_state), "fc1/kernel")
                   != _leaf(current_mask(state.opt_state), "fc1/kernel"))
    assert moved > 0


def _leaf(tree, name):
    return np.asarray(dict(sj.tree.named_leaves(jax.device_get(tree)))[name])


def _bits(tree):
    """Leaves as numpy arrays (typed PRNG keys as their key data) for bit-exact comparisons."""
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x) for x in jax.tree.leaves(tree)]


class Killed(Exception):
    pass


@pytest.mark.parametrize("make", [
    lambda: sparse_evolutionary(optax.sgd(0.1, momentum=0.9), 0.7, key=4, total_steps=11,
                                every=2),
    lambda: sparse_momentum(optax.sgd(0.1, momentum=0.9), 0.7, key=4, total_steps=11, every=2),
], ids=["set", "snfs"])
def test_killed_run_resumed_from_a_checkpoint_ends_bit_identical(tmp_path, data, make):
    from sparsejax import checkpoint

    tx = make()
    x, y = data
    common = dict(batch_size=8, seed=5, steps=11, train_step=STEP, checkpoint_every=3,
                  progress=False)
    reference, _ = sj_train.train(_fresh_state(tx), x, y, checkpoint_dir=tmp_path / "ref",
                                  **common)

    def kill(state, metrics):
        if int(state.step) == 8:
            raise Killed

    with pytest.raises(Killed):
        sj_train.train(_fresh_state(tx), x, y, checkpoint_dir=tmp_path / "run", callback=kill,
                       **common)
    restored = checkpoint.restore(tmp_path / "run", _fresh_state(tx))
    assert restored.step == 6
    assert isinstance(restored.state.opt_state, SparseTrainingState)
    assert restored.state.opt_state.schedule is tx.init(reference.params).schedule
    resumed, _ = sj_train.train(restored.state, x, y, checkpoint_dir=tmp_path / "run", **common)
    for a, b in zip(_bits(resumed), _bits(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    mask = current_mask(resumed.opt_state)
    assert int(_leaf(mask, "fc1/kernel").sum() + _leaf(mask, "fc2/kernel").sum()) == round(
        0.3 * (96 + 48))
