"""train: batches, resumption, validation, many seeds at once, a pruning optimizer."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_models import (
    ADAM,
    CLASSES,
    HIDDEN,
    IN,
    STEP,
    make_net,
    net_state,
    plain,
)

from sparsejax import data as sj_data
from sparsejax import train as sj_train


def recording_step(step_fn, seen):
    def step(state, batch):
        seen.append(np.asarray(batch[1]).copy())
        return step_fn(state, batch)

    return step


def test_train_follows_data_batches_and_resumes_mid_epoch(data):
    x, y = data[0][:36], data[1][:36]  # batch 8: 4 batches per epoch, 4 examples dropped
    seen = []
    state, history = sj_train.train(
        net_state(),
        x,
        y,
        batch_size=8,
        seed=3,
        steps=9,
        train_step=recording_step(STEP, seen),
        eval_data=(x, y),
        eval_every=4,
        log_every=4,
        progress=False,
    )
    expected = [b[1] for e in range(3) for b in sj_data.batches(x, y, 8, 3, e)][:9]
    assert len(seen) == 9
    for got, want in zip(seen, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert (int(state.step), int(state.epoch), int(state.batch)) == (9, 2, 1)
    assert [(h["step"], h["epoch"]) for h in history["train"]] == [(4, 1), (8, 2), (9, 2)]
    assert [h["step"] for h in history["eval"]] == [4, 8, 9]
    assert set(history["eval"][0]) >= {"accuracy", "loss", "macro_f1", "precision", "confusion"}
    assert 0.0 <= history["train"][0]["accuracy"] <= 1.0

    # Stopping at step 6 (mid-epoch) and resuming to 9 sees the same batches and ends bit-equal.
    seen2 = []
    half, _ = sj_train.train(
        net_state(),
        x,
        y,
        batch_size=8,
        seed=3,
        steps=6,
        train_step=recording_step(STEP, seen2),
        progress=False,
    )
    assert (int(half.epoch), int(half.batch)) == (1, 2)
    resumed, _ = sj_train.train(
        half,
        x,
        y,
        batch_size=8,
        seed=3,
        steps=9,
        train_step=recording_step(STEP, seen2),
        progress=False,
    )
    for got, want in zip(seen2, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    chex.assert_trees_all_equal(resumed, state)


def test_train_epochs_mode_and_progress_bar(data, capsys):
    x, y = data[0][:36], data[1][:36]
    state, history = sj_train.train(
        net_state(), x, y, batch_size=8, seed=0, epochs=2, train_step=STEP, progress=True
    )
    assert (int(state.step), int(state.epoch), int(state.batch)) == (8, 2, 0)
    assert history["eval"] == [] and history["train"][-1]["step"] == 8
    assert "8/8" in capsys.readouterr().err
    # Already at the target: nothing to do, the state comes back unchanged.
    same, history = sj_train.train(
        state, x, y, batch_size=8, seed=0, epochs=2, train_step=STEP, progress=False
    )
    assert same is state and history == {"train": [], "eval": []}


def test_train_validates_arguments(data):
    x, y = data
    state = net_state()
    common = dict(seed=0, progress=False)
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        sj_train.train(state, x, y, batch_size=8, steps=2, epochs=1, **common)
    with pytest.raises(ValueError, match="batch_size=64 exceeds the 40 training examples"):
        sj_train.train(state, x, y, batch_size=64, steps=2, **common)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        sj_train.train(state, x, y, batch_size=0, steps=2, **common)
    with pytest.raises(ValueError, match="eval_every needs eval_data"):
        sj_train.train(state, x, y, batch_size=8, steps=2, eval_every=1, **common)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint_dir"):
        sj_train.train(state, x, y, batch_size=8, steps=2, checkpoint_every=1, **common)
    with pytest.raises(ValueError, match=r"state.batch=4 exceeds the 2 batches per epoch"):
        sj_train.train(state.replace(batch=jnp.int32(4)), x, y, batch_size=16, steps=9, **common)
    with pytest.raises(ValueError, match="seed must be an int"):
        sj_train.train(state, x, y, batch_size=8, steps=2, seed=[0, 1], progress=False)
    with pytest.raises(ValueError, match="use train_many_seeds"):
        sj_train.train(
            jax.tree.map(lambda a: a[None], state), x, y, batch_size=8, steps=2, **common
        )


# --------------------------------------------------------------------------- many seeds


def _assert_same_init(a, b):
    """Equal on the CPU; elsewhere within a few float32 ulps (a GPU's vmapped initializer
    kernels may round differently from the unbatched ones)."""
    if jax.default_backend() == "cpu":
        chex.assert_trees_all_equal(a, b)
    else:
        chex.assert_trees_all_close(plain(a), plain(b), rtol=1e-6, atol=1e-6)


def test_vmapped_seeds_equal_sequential_training(data):
    x, y = data
    tx = ADAM
    keys = jax.random.split(jax.random.key(42), 2)
    stacked = sj_train.create_train_states(make_net, tx, keys)
    assert stacked.step.shape == (2,) and stacked.params["fc1"]["kernel"][...].shape == (
        2,
        IN,
        HIDDEN,
    )
    for data_seed in (5, [5, 6]):  # shared batches, then one batch order per seed
        many, history = sj_train.train_many_seeds(
            stacked,
            x,
            y,
            batch_size=8,
            seed=data_seed,
            steps=4,
            eval_data=(x, y),
            log_every=2,
            progress=False,
        )
        assert many.step.tolist() == [4, 4] and many.epoch.tolist() == [0, 0]
        assert len(history["train"][0]["loss"]) == 2 and len(history["eval"][-1]["macro_f1"]) == 2
        for i, k in enumerate(keys):
            k_model, k_drop = jax.random.split(k)
            single = sj_train.create_train_state(make_net(k_model), tx, key=k_drop)
            _assert_same_init(single, jax.tree.map(lambda a, i=i: a[i], stacked))
            seed_i = data_seed if isinstance(data_seed, int) else data_seed[i]
            single, hist_i = sj_train.train(
                single,
                x,
                y,
                batch_size=8,
                seed=seed_i,
                steps=4,
                train_step=STEP,
                eval_data=(x, y),
                progress=False,
            )
            chex.assert_trees_all_close(
                plain(single), plain(jax.tree.map(lambda a, i=i: a[i], many)), rtol=1e-5, atol=1e-6
            )
            assert hist_i["eval"][-1]["confusion"] == history["eval"][-1]["confusion"][i]
    # Different seeds really are different models.
    w = many.params["fc1"]["kernel"][...]
    assert not np.allclose(w[0], w[1])


def test_many_seeds_validation(data):
    x, y = data
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), net_state())
    with pytest.raises(ValueError, match="got 3 data seeds for a state of 2 seeds"):
        sj_train.train_many_seeds(
            stacked, x, y, batch_size=8, seed=[0, 1, 2], steps=1, progress=False
        )
    with pytest.raises(ValueError, match="needs a state with a leading seed axis"):
        sj_train.train_many_seeds(net_state(), x, y, batch_size=8, seed=0, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"1-D batch of S >= 1 keys, got shape \(\)"):
        sj_train.create_train_states(make_net, ADAM, jax.random.key(0))


def test_train_runs_stacked_seeds_with_vmap_seeds(data):
    """train(vmap_seeds=True) is the one loop; train_many_seeds is its deprecated spelling."""
    x, y = data
    stacked = sj_train.create_train_states(make_net, ADAM, jax.random.split(jax.random.key(42), 2))
    options = dict(batch_size=8, seed=[5, 6], steps=3, eval_data=(x, y), log_every=2,
                   progress=False)
    new, history = sj_train.train(stacked, x, y, vmap_seeds=True, **options)
    with pytest.warns(DeprecationWarning, match=r"use train\(\.\.\., vmap_seeds=True\)"):
        old, old_history = sj_train.train_many_seeds(stacked, x, y, **options)
    chex.assert_trees_all_equal(plain(new), plain(old))
    assert history == old_history and len(history["eval"][-1]["accuracy"]) == 2
    with pytest.raises(ValueError, match=r"single-seed state.*pass vmap_seeds=True"):
        sj_train.train(stacked, x, y, batch_size=8, seed=0, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"train\(vmap_seeds=True\) needs a state with a leading"):
        sj_train.train(net_state(), x, y, batch_size=8, seed=0, steps=1, progress=False,
                       vmap_seeds=True)


# --------------------------------------------------------------------------- integration


def test_pruning_transform_inside_the_train_step(data):
    """The pruning transform needs params in tx.update: the step passes them, no extra call."""
    from sparsejax import schedules, scores, transforms

    tx = transforms.pruning(
        optax.adam(1e-2),
        score=lambda params, grads: scores.magnitude(params),
        schedule=schedules.polynomial(0.0, 0.5, begin=2, end=6, every=2),
    )
    x, y = data
    state, _ = sj_train.train(
        sj_train.create_train_state(make_net(0), tx, key=1),
        x,
        y,
        batch_size=8,
        seed=0,
        steps=7,
        progress=False,
    )
    mask = transforms.current_mask(state.opt_state)
    assert int(transforms.current_step(state.opt_state)) == 7 == int(state.step)
    # 50 % of each kernel pruned (fc1: 48 entries, fc2: 24), biases and BatchNorm untouched.
    for layer, size in (("fc1", IN * HIDDEN), ("fc2", HIDDEN * CLASSES)):
        kept = np.asarray(mask[layer]["kernel"][...])
        kernel = np.asarray(state.params[layer]["kernel"][...])
        assert kept.shape == kernel.shape and int((~kept).sum()) == size // 2
        assert np.all(kernel[~kept] == 0.0) and np.all(kernel[kept] != 0.0)
        assert mask[layer]["bias"][...].shape == ()
