"""Tests of the reference training core (sparsejax.train)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sparsejax import data as sj_data
from sparsejax import train as sj_train

IN, HIDDEN, CLASSES = 6, 8, 3


class Net(nnx.Module):
    """Linear -> ReLU -> BatchNorm -> Dropout -> Linear: every kind of state the step handles."""

    def __init__(self, rngs: nnx.Rngs, rate: float = 0.25):
        self.fc1 = nnx.Linear(IN, HIDDEN, rngs=rngs)
        self.bn = nnx.BatchNorm(HIDDEN, momentum=0.9, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.fc2 = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.fc2(self.drop(self.bn(nnx.relu(self.fc1(x)))))


def make_net(key):
    return Net(nnx.Rngs(key))


# The optimizer is a static field of the state and jit caches per function object: sharing
# one optimizer, one step function and one batch size (8) shares the compilations.
ADAM = optax.adam(1e-2)
STEP = sj_train.make_train_step()


def plain(tree):
    """Typed PRNG keys -> key data, so that chex.assert_trees_all_close can compare them."""
    is_key = lambda a: jnp.issubdtype(a.dtype, jax.dtypes.prng_key)  # noqa: E731
    return jax.tree.map(lambda a: jax.random.key_data(a) if is_key(a) else a, tree)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=40).astype(np.int32)
    return x, y


def net_state(tx=None, seed=0):
    tx = ADAM if tx is None else tx
    return sj_train.create_train_state(make_net(jax.random.key(seed)), tx, key=jax.random.key(7))


# --------------------------------------------------------------------------- state


def test_create_train_state_splits_params_rest_and_optimizer():
    tx = ADAM
    state = sj_train.create_train_state(make_net(jax.random.key(0)), tx, key=3)
    params = {p for p, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]}
    rest = {p for p, _ in jax.tree_util.tree_flatten_with_path(state.rest)[0]}
    names = lambda paths: sorted(jax.tree_util.keystr(p[:-1]) for p in paths)  # noqa: E731
    assert names(params) == [
        "['bn']['bias']",
        "['bn']['scale']",
        "['fc1']['bias']",
        "['fc1']['kernel']",
        "['fc2']['bias']",
        "['fc2']['kernel']",
    ]
    assert names(rest) == [
        "['bn']['mean']",
        "['bn']['var']",
        "['drop']['rngs']['count']",
        "['drop']['rngs']['key']",
    ]
    assert int(state.step) == 0 and int(state.epoch) == 0 and int(state.batch) == 0
    chex.assert_trees_all_equal(state.opt_state, tx.init(state.params))
    assert (
        jax.random.key_data(state.key).tolist() == jax.random.key_data(jax.random.key(3)).tolist()
    )
    assert isinstance(state.model(), Net)
    # A raw uint32 key is accepted and wrapped; a float is not.
    raw = sj_train.create_train_state(make_net(0), tx, key=jax.random.PRNGKey(3))
    assert jax.random.key_data(raw.key).tolist() == [0, 3]
    with pytest.raises(TypeError, match="key must be"):
        sj_train.create_train_state(make_net(0), tx, key=1.5)
    with pytest.raises(ValueError, match=r"batch of shape \(2,\); .* use create_train_states"):
        sj_train.create_train_state(make_net(0), tx, key=jax.random.split(jax.random.key(0)))
    with pytest.raises(TypeError, match="nnx.Module"):
        sj_train.create_train_state(lambda x: x, tx, key=0)


# --------------------------------------------------------------------------- train step


def test_train_step_equals_closed_form_sgd_with_weight_decay():
    """One step on a linear softmax classifier: W <- W - lr (x^T (p - onehot) / B + wd W)."""
    lr, wd = 0.5, 0.1
    # add_decayed_weights needs params in update: the step must pass them.
    tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr))
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    state = sj_train.create_train_state(model, tx, key=0)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)), jnp.float32)
    y = jnp.array([0, 2, 1, 2, 0], jnp.int32)
    new, metrics = sj_train.make_train_step()(state, (x, y))

    w, b = model.kernel.value, model.bias.value
    logits = x @ w + b[None, :]
    p = jax.nn.softmax(logits)
    err = p - jax.nn.one_hot(y, 3)
    chex.assert_trees_all_close(
        new.params["kernel"].value, w - lr * (x.T @ err / 5 + wd * w), rtol=1e-6, atol=1e-6
    )
    chex.assert_trees_all_close(
        new.params["bias"].value, b - lr * (err.mean(0) + wd * b), rtol=1e-6, atol=1e-6
    )
    expected_loss = -jnp.mean(jnp.log(p[jnp.arange(5), y]))
    chex.assert_trees_all_close(metrics["loss"], expected_loss, rtol=1e-6)
    assert float(metrics["accuracy"]) == float(jnp.mean(jnp.argmax(logits, -1) == y))
    assert int(new.step) == 1


def test_train_step_jitted_equals_eager_reference_and_updates_batch_stats(data):
    x, y = data[0][:8], data[1][:8]
    state = net_state()
    jitted, eager = STEP, sj_train.make_train_step(jit=False)
    a, b = state, state
    for _ in range(2):
        a, ma = jitted(a, (x, y))
        b, mb = eager(b, (x, y))
        chex.assert_trees_all_close(ma, mb, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(plain(a), plain(b), rtol=1e-5, atol=1e-6)

    # BatchNorm in train mode: running mean <- 0.9 * 0 + 0.1 * batch mean of relu(fc1(x)).
    one, _ = jitted(state, (x, y))
    h = jax.nn.relu(
        x @ state.params["fc1"]["kernel"].value + state.params["fc1"]["bias"].value[None, :]
    )
    chex.assert_trees_all_close(one.rest["bn"]["mean"].value, 0.1 * h.mean(0), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
        one.rest["bn"]["var"].value, 0.9 + 0.1 * h.var(0), rtol=1e-5, atol=1e-6
    )


def test_dropout_is_a_function_of_key_and_step(data):
    x, y = data[0][:8], data[1][:8]
    state = net_state()
    _, m1 = STEP(state, (x, y))
    _, m2 = STEP(state, (x, y))
    assert float(m1["loss"]) == float(m2["loss"])  # same key, same step: same dropout mask
    _, m3 = STEP(state.replace(step=jnp.int32(5)), (x, y))
    _, m4 = STEP(state.replace(key=jax.random.key(8)), (x, y))
    assert float(m3["loss"]) != float(m1["loss"])
    assert float(m4["loss"]) != float(m1["loss"])
    # In eval mode (no dropout) the logits do not depend on the key.
    ev = sj_train.make_eval_step()
    where = np.ones(8, bool)
    e1 = ev(state, (x, y), where)
    e2 = ev(state.replace(key=jax.random.key(8), step=jnp.int32(5)), (x, y), where)
    assert float(e1["loss_sum"]) == float(e2["loss_sum"])


def test_loss_fn_must_be_per_example(data):
    bad = sj_train.make_train_step(lambda logits, labels: jnp.mean(logits))
    with pytest.raises(ValueError, match=r"per-example losses of shape \(batch,\) = \(4,\)"):
        bad(net_state(), (data[0][:4], data[1][:4]))
    with pytest.raises(ValueError, match="per_seed_batches=True needs vmap_seeds=True"):
        sj_train.make_train_step(per_seed_batches=True)


# --------------------------------------------------------------------------- evaluation


def test_evaluate_matches_sklearn_and_eval_mode_forward(data):
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

    x, y = data
    state, _ = sj_train.train(
        net_state(), x, y, batch_size=8, seed=0, steps=6, train_step=STEP, progress=False
    )
    # batch_size 16 does not divide 40: the last batch is padded and masked.
    result = sj_train.evaluate(state, x, y, batch_size=16)

    model = state.model()
    model.eval()
    logits = np.asarray(model(jnp.asarray(x)))
    preds = logits.argmax(-1)
    p, r, f, s = precision_recall_fscore_support(y, preds, labels=range(CLASSES), zero_division=0)
    np.testing.assert_allclose(result["precision"], p, rtol=1e-6)
    np.testing.assert_allclose(result["recall"], r, rtol=1e-6)
    np.testing.assert_allclose(result["f1"], f, rtol=1e-6)
    assert result["support"] == s.tolist() and sum(result["support"]) == 40
    np.testing.assert_allclose(result["macro_f1"], f.mean(), rtol=1e-6)
    np.testing.assert_allclose(result["macro_precision"], p.mean(), rtol=1e-6)
    np.testing.assert_allclose(result["macro_recall"], r.mean(), rtol=1e-6)
    assert result["accuracy"] == np.sum(preds == y) / 40
    probs = np.asarray(jax.nn.softmax(logits.astype(np.float64)))
    np.testing.assert_allclose(result["loss"], log_loss(y, probs, labels=range(3)), rtol=1e-5)
    np.testing.assert_array_equal(result["confusion"], confusion_matrix(y, preds, labels=range(3)))


def test_evaluate_rejects_bad_labels_and_shapes(data):
    x, y = data
    state = net_state()
    bad = y.copy()
    bad[[3, 17]] = [5, -1]
    with pytest.raises(ValueError, match=r"only 38 of the 40 labels lie in \[0, num_classes=3\)"):
        sj_train.evaluate(state, x, bad)
    with pytest.raises(ValueError, match=r"same N, got \(40, 6\) and \(39,\)"):
        sj_train.evaluate(state, x, y[:39])


# --------------------------------------------------------------------------- train loop


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
    assert stacked.step.shape == (2,) and stacked.params["fc1"]["kernel"].value.shape == (
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
    w = many.params["fc1"]["kernel"].value
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
        kept = np.asarray(mask[layer]["kernel"].value)
        kernel = np.asarray(state.params[layer]["kernel"].value)
        assert kept.shape == kernel.shape and int((~kept).sum()) == size // 2
        assert np.all(kernel[~kept] == 0.0) and np.all(kernel[kept] != 0.0)
        assert mask[layer]["bias"].value.shape == ()


def test_host_schedule_step_equals_the_lax_cond_step(data):
    """make_train_step(host_schedule=True): prune_now from the host, same states, no cond."""
    from sparsejax import schedules, scores, transforms

    sched = schedules.polynomial(0.0, 0.5, begin=2, end=6, every=2)
    tx = transforms.pruning(optax.adam(1e-2), schedule=sched,
                            score=lambda params, grads: scores.magnitude(params))
    x, y = data
    batch = (jnp.asarray(x[:8]), jnp.asarray(y[:8]))
    update_at = set(schedules.update_steps(sched, 8))
    assert update_at == {2, 4, 6}
    plain = sj_train.make_train_step()
    hinted = sj_train.make_train_step(host_schedule=True)
    a = b = sj_train.create_train_state(make_net(0), tx, key=1)
    for t in range(8):
        a, metrics_a = plain(a, batch)
        b, metrics_b = hinted(b, batch, prune_now=t in update_at)
        chex.assert_trees_all_equal(transforms.current_mask(a.opt_state),
                                    transforms.current_mask(b.opt_state))
        chex.assert_trees_all_close(a.params, b.params, rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_close(metrics_a, metrics_b, rtol=1e-6)
    kept = np.asarray(transforms.current_mask(b.opt_state)["fc1"]["kernel"].value)
    assert int((~kept).sum()) == IN * HIDDEN // 2
    assert hinted._cache_size() == 2  # one compilation per value of prune_now
    with pytest.raises(TypeError, match=r"prune_now must be a Python bool .*got None"):
        sj_train.make_train_step(host_schedule=True, jit=False)(b, batch, None)
    # vmapped seeds: prune_now is shared by all seeds
    states = sj_train.create_train_states(make_net, tx, jax.random.split(jax.random.key(0), 2))
    many = sj_train.make_train_step(vmap_seeds=True, host_schedule=True)
    many_plain = sj_train.make_train_step(vmap_seeds=True)
    s1 = s2 = states
    for t in range(4):
        s1, _ = many(s1, batch, prune_now=t in update_at)
        s2, _ = many_plain(s2, batch)
    chex.assert_trees_all_equal(transforms.current_mask(s1.opt_state),
                                transforms.current_mask(s2.opt_state))


def test_plain_arrays_state_trains_exactly_like_the_variable_state(data):
    """plain_arrays=True: no nnx.Variable in the state, same paths and numbers, eval works."""
    from sparsejax.tree import named_leaves

    x, y = data[0][:8], data[1][:8]
    a = net_state()
    b = sj_train.create_train_state(make_net(jax.random.key(0)), ADAM, key=jax.random.key(7),
                                    plain_arrays=True)
    is_var = lambda v: isinstance(v, nnx.Variable)  # noqa: E731
    for tree in (b.params, b.rest, b.opt_state):
        assert not any(is_var(v) for v in jax.tree.leaves(tree, is_leaf=is_var))
    assert [p for p, _ in named_leaves(a.params)] == [p for p, _ in named_leaves(b.params)] == [
        "bn/bias", "bn/scale", "fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel"]
    for _ in range(3):
        a, ma = STEP(a, (x, y))
        b, mb = STEP(b, (x, y))
        chex.assert_trees_all_equal(ma, mb)
    unwrap = lambda t: sj_train._plain(plain(t))  # noqa: E731
    chex.assert_trees_all_equal(unwrap(a.params), unwrap(b.params))
    chex.assert_trees_all_equal(unwrap(a.rest), unwrap(b.rest))  # BatchNorm statistics moved
    assert not any(is_var(v) for v in jax.tree.leaves(b.rest, is_leaf=is_var))
    assert float(jnp.abs(b.rest["bn"]["mean"]).sum()) > 0
    chex.assert_trees_all_equal(sj_train.evaluate(a, x, y, batch_size=4),
                                sj_train.evaluate(b, x, y, batch_size=4))
    many = sj_train.create_train_states(make_net, ADAM, jax.random.split(jax.random.key(0), 2),
                                        plain_arrays=True)
    assert many.params["fc1"]["kernel"].shape == (2, IN, HIDDEN)
    assert not any(is_var(v) for v in jax.tree.leaves(many.rest, is_leaf=is_var))


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
    kept = np.asarray(transforms.current_mask(b.opt_state)["fc1"]["kernel"].value)
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
    plan = sj_train._loop_plan(
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
    kept = np.asarray(transforms.current_mask(b.opt_state)["fc1"]["kernel"].value)
    assert kept.shape == (2, IN, HIDDEN)
    assert [int((~k).sum()) for k in kept] == [IN * HIDDEN // 2] * 2

