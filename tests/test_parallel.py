"""Data-parallel and FSDP training on 8 devices: the 8 fake CPU devices that conftest
sets, unless the default backend has 8 of its own (the ``devices8`` fixture)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import sparsejax as sj
from sparsejax import checkpoint, parallel
from sparsejax import train as sj_train
from sparsejax.models import MLP


def test_fsdp_specs_split_largest_divisible_axis_and_replicate_small_leaves(devices8):
    tree = {
        "w": jnp.zeros((64, 256)),
        "v": jnp.zeros((24, 40)),  # 960 elements < min_size: replicated
        "u": jnp.zeros((100, 36)),  # no axis divisible by 8: replicated
        "c": jnp.zeros((3, 3, 16, 64)),
        "b": jnp.zeros((256,)),
        "m": jnp.ones((1, 256), bool),
        "s": jnp.zeros(()),
    }
    specs = jax.tree.map(
        lambda s: s.spec, parallel.state_shardings(tree, parallel.make_mesh(devices=devices8), "fsdp", min_size=1024)
    )
    assert specs == {
        "w": P(None, "data"),
        "v": P(),
        "u": P(),
        "c": P(None, None, None, "data"),
        "b": P(),
        "m": P(),
        "s": P(),
    }
    dp = parallel.state_shardings(tree, parallel.make_mesh(devices=devices8), "dp")
    assert all(s.spec == P() for s in jax.tree.leaves(dp))


def test_bad_inputs_name_the_value(devices8):
    with pytest.raises(ValueError, match="num_devices.*9"):
        parallel.make_mesh(9, devices=devices8)
    with pytest.raises(ValueError, match="strategy.*'zero3'"):
        parallel.state_shardings({"w": jnp.zeros(2)}, parallel.make_mesh(devices=devices8), "zero3")
    with pytest.raises(ValueError, match="axis 'model'"):
        parallel.state_shardings({"w": jnp.zeros(2)}, parallel.make_mesh(devices=devices8), axis="model")
    with pytest.raises(ValueError, match="'x'.*12 rows.*8 devices"):
        parallel.shard_batch({"x": np.zeros((12, 3))}, parallel.make_mesh(devices=devices8))
    with pytest.raises(ValueError, match="'y'.*scalar"):
        parallel.shard_batch({"y": np.zeros(())}, parallel.make_mesh(devices=devices8))


def _setup(strategy, devices8):
    model = MLP((32, 64, 10), rngs=nnx.Rngs(0))
    tx = sj.pruning(
        optax.adamw(1e-2),
        score=lambda p, g: sj.scores.magnitude(p),
        schedule=sj.schedules.polynomial(0.0, 0.75, begin=0, end=3, every=1),
        scope="global",
    )
    state = sj_train.create_train_state(model, tx, key=jax.random.key(1))
    rng = np.random.default_rng(0)
    batches = [
        (rng.normal(size=(64, 32)).astype(np.float32), rng.integers(0, 10, 64).astype(np.int32))
        for _ in range(4)
    ]
    if strategy is None:
        return state, batches
    mesh = parallel.make_mesh(devices=devices8)
    state = parallel.shard_state(state, mesh, strategy, min_size=256)
    return state, [parallel.shard_batch(b, mesh) for b in batches]


@pytest.mark.parametrize("strategy", ["dp", "fsdp"])
def test_sharded_training_with_gradual_pruning_matches_one_device(strategy, devices8):
    step = sj_train.make_train_step()
    ref, ref_batches = _setup(None, devices8)
    state, batches = _setup(strategy, devices8)
    for b_ref, b in zip(ref_batches, batches, strict=True):
        ref, _ = step(ref, b_ref)
        state, _ = step(state, b)
    chex.assert_trees_all_close(
        jax.device_get(state.params), jax.device_get(ref.params), atol=1e-5, rtol=1e-5
    )
    mask, ref_mask = sj.current_mask(state.opt_state), sj.current_mask(ref.opt_state)
    chex.assert_trees_all_equal(jax.device_get(mask), jax.device_get(ref_mask))
    # 75% of the 32*64 + 64*10 = 2688 kernel weights pruned, globally, on sharded params.
    assert sum(int((~np.asarray(m)).sum()) for m in jax.tree.leaves(mask)) == 2016
    for (name, p), (_, m) in zip(sj.tree.named_leaves(state.params),
                                 sj.tree.named_leaves(mask), strict=True):
        if m.shape == p.shape:  # full-shape masks live where their parameter lives
            assert m.sharding.is_equivalent_to(p.sharding, p.ndim), name
    if strategy == "fsdp":
        kernel = state.params["layers"][0]["kernel"]
        assert kernel.sharding.spec == P(None, "data")
        assert kernel.addressable_shards[0].data.shape == (32, 8)


def test_sharded_state_checkpoint_round_trip(tmp_path, devices8):
    step = sj_train.make_train_step()
    state, batches = _setup("fsdp", devices8)
    state, _ = step(state, batches[0])
    checkpoint.save(tmp_path, 1, state)
    fresh, _ = _setup("fsdp", devices8)
    restored = checkpoint.restore(tmp_path, fresh).state
    # (the static optimizer differs: `fresh` built its own transform object)
    got, want = jax.tree.leaves(restored), jax.tree.leaves(state)
    chex.assert_trees_all_equal(jax.device_get(got), jax.device_get(want))
    for a, b in zip(got, want, strict=True):
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
    # Training resumes from the restored sharded state exactly as from the live one.
    chex.assert_trees_all_equal(
        jax.device_get(step(restored, batches[1])[0].params),
        jax.device_get(step(state, batches[1])[0].params),
    )
