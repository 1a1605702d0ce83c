"""make_train_step: the closed form, jit vs eager, RNG streams, the forward's key and extra
loss terms, the schedule on the host."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from train_models import (
    HIDDEN,
    IN,
    STEP,
    make_net,
    net_state,
    plain,
)

from sparsejax import train as sj_train


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

    w, b = model.kernel[...], model.bias[...]
    logits = x @ w + b[None, :]
    p = jax.nn.softmax(logits)
    err = p - jax.nn.one_hot(y, 3)
    chex.assert_trees_all_close(
        new.params["kernel"][...], w - lr * (x.T @ err / 5 + wd * w), rtol=1e-6, atol=1e-6
    )
    chex.assert_trees_all_close(
        new.params["bias"][...], b - lr * (err.mean(0) + wd * b), rtol=1e-6, atol=1e-6
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
        x @ state.params["fc1"]["kernel"][...] + state.params["fc1"]["bias"][...][None, :]
    )
    chex.assert_trees_all_close(one.rest["bn"]["mean"][...], 0.1 * h.mean(0), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
        one.rest["bn"]["var"][...], 0.9 + 0.1 * h.var(0), rtol=1e-5, atol=1e-6
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
    kept = np.asarray(transforms.current_mask(b.opt_state)["fc1"]["kernel"][...])
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


# --------------------------------------------------------------------------- the forward


def _draw_forward(model, inputs, key):
    """A stochastic forward: the step key's uniform draw, logged as a constant loss term."""
    return model(inputs), {"draw": jax.lax.stop_gradient(jax.random.uniform(key))}


DRAW_STEP = sj_train.make_train_step(forward=_draw_forward)


def _draws(state, data, steps, train_step=DRAW_STEP):
    state, history = sj_train.train(state, *data, batch_size=8, seed=0, steps=steps,
                                    train_step=train_step, log_every=1, progress=False)
    return state, history["train"]


def test_forward_with_a_key_gets_a_fresh_key_every_step(data):
    """forward(model, x, key): a different key at every step, a function of (state.key, step):
    the same jitted and eager, after a resume, and the draws never reach the gradient."""
    state, logged = _draws(net_state(), data, 6)
    draws = [h["draw"] for h in logged]
    assert len(set(draws)) == 6 and all(0.0 < d < 1.0 for d in draws)
    for h in logged:  # the term adds to the objective; data_loss is the loss without it
        np.testing.assert_allclose(h["loss"], h["data_loss"] + h["draw"], rtol=1e-6)
    eager = sj_train.make_train_step(forward=_draw_forward, jit=False)
    _, logged_eager = _draws(net_state(), data, 6, eager)
    assert [h["draw"] for h in logged_eager] == draws
    half, first = _draws(net_state(), data, 3)
    resumed, second = _draws(half, data, 6)
    assert [h["draw"] for h in first + second] == draws
    chex.assert_trees_all_equal(plain(resumed), plain(state))
    _, other = _draws(net_state().replace(key=jax.random.key(8)), data, 2)
    assert [h["draw"] for h in other] != draws[:2]
    # a constant term leaves the training as the two-argument forward trains
    plain_state, _ = sj_train.train(net_state(), *data, batch_size=8, seed=0, steps=6,
                                    train_step=STEP, progress=False)
    chex.assert_trees_all_close(plain(state.params), plain(plain_state.params), rtol=1e-6,
                                atol=1e-7)


@pytest.mark.parametrize("takes_key", [False, True])
def test_forward_extra_terms_add_to_the_loss_and_are_logged(takes_key):
    """(logits, {name: term}): W <- W - lr (data gradient + 2 c W) for the term c |W|^2."""
    lr, c = 0.5, 0.05
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    state = sj_train.create_train_state(model, optax.sgd(lr), key=0)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)), jnp.float32)
    y = jnp.array([0, 2, 1, 2, 0], jnp.int32)

    def l2(m):
        return {"l2": c * jnp.sum(m.kernel[...] ** 2)}

    if takes_key:
        def forward(m, inputs, key):
            return m(inputs), l2(m)
    else:
        def forward(m, inputs):
            return m(inputs), l2(m)

    new, metrics = sj_train.make_train_step(forward=forward)(state, (x, y))
    ref, ref_metrics = sj_train.make_train_step()(state, (x, y))
    w = model.kernel[...]
    chex.assert_trees_all_close(new.params["kernel"][...],
                                ref.params["kernel"][...] - lr * 2 * c * w, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(new.params["bias"][...], ref.params["bias"][...], rtol=1e-6)
    assert set(metrics) == {"loss", "data_loss", "l2", "accuracy"}
    np.testing.assert_allclose(metrics["l2"], c * jnp.sum(w**2), rtol=1e-6)
    np.testing.assert_allclose(metrics["data_loss"], ref_metrics["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], metrics["data_loss"] + metrics["l2"], rtol=1e-6)


def test_two_argument_forward_still_works():
    """forward(model, x) gets no key; a forward with a third (defaulted or *args) parameter
    gets one; a tuple that is not (logits, {name: term}) is refused."""
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    state = sj_train.create_train_state(model, optax.sgd(0.1), key=0)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)), jnp.float32)
    y = jnp.array([0, 2, 1, 2, 0], jnp.int32)
    _, metrics = sj_train.make_train_step(forward=lambda m, inputs: 2.0 * m(inputs))(state, (x, y))
    logits = 2.0 * (x @ model.kernel[...] + model.bias[...][None, :])
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-6)
    seen = []

    def with_default(m, inputs, key=None):
        seen.append(key)
        return m(inputs)

    def with_args(m, inputs, *rest):
        seen.append(rest[0])
        return m(inputs)

    for forward in (with_default, with_args):
        sj_train.make_train_step(forward=forward, jit=False)(state, (x, y))
    assert all(jnp.issubdtype(k.dtype, jax.dtypes.prng_key) for k in seen) and len(seen) == 2
    with pytest.raises(TypeError, match=r"logits or \(logits, \{name: scalar loss term\}\)"):
        sj_train.make_train_step(forward=lambda m, inputs: (m(inputs), 1.0, 2.0), jit=False)(
            state, (x, y))
