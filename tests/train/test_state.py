"""TrainState, create_train_state(s), TrainState.create and TrainState.with_mask."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from train_models import (
    ADAM,
    HIDDEN,
    IN,
    STEP,
    Net,
    make_net,
    net_state,
    plain,
)

from sparsejax import train as sj_train
from sparsejax.train._state import _plain


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
    unwrap = lambda t: _plain(plain(t))  # noqa: E731
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


# --------------------------------------------------------------------------- create, with_mask


def _unstack(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def test_train_state_create_single_and_stacked():
    model = make_net(jax.random.key(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    one = sj_train.TrainState.create(graphdef=graphdef, params=params, rest=rest, tx=ADAM, key=7)
    chex.assert_trees_all_equal(plain(one), plain(sj_train.create_train_state(model, ADAM, key=7)))
    # S keys: a stacked state whose seed i is the single state of its parts
    dense = sj_train.create_train_states(make_net, ADAM, jax.random.split(jax.random.key(1), 3))
    keys = jax.random.split(jax.random.key(2), 3)
    many = sj_train.TrainState.create(graphdef=dense.graphdef, params=dense.params,
                                      rest=dense.rest, tx=ADAM, key=keys)
    assert many.step.shape == many.epoch.shape == many.batch.shape == (3,)
    for i in range(3):
        single = sj_train.TrainState.create(graphdef=dense.graphdef,
                                            params=_unstack(dense.params, i),
                                            rest=_unstack(dense.rest, i), tx=ADAM, key=keys[i])
        chex.assert_trees_all_equal(plain(_unstack(many, i)), plain(single))
    with pytest.raises(ValueError, match=r"3 keys, but the params leaf 'bn/bias' has shape \(8,\), "
                                         r"without a leading seed axis of size 3"):
        sj_train.TrainState.create(graphdef=graphdef, params=params, rest=rest, tx=ADAM, key=keys)
    with pytest.raises(ValueError, match=r"one key or a 1-D batch of keys, got shape \(1, 3\)"):
        sj_train.TrainState.create(graphdef=graphdef, params=params, rest=rest, tx=ADAM,
                                   key=keys[None])


def test_with_mask_on_stacked_seeds_equals_the_per_seed_construction(data):
    """One optimizer keep_sparse(inner), a mask per run: the same arrays as the 0.1 studies'
    hand-built state (vmapped keep_sparse(inner, m).init on the masked params), and as each
    run built on its own; explicitly vmapped the same; training keeps the pruned weights 0."""
    import optax

    import sparsejax as sj

    n = 3
    dense = sj_train.create_train_states(make_net, ADAM, jax.random.split(jax.random.key(4), n))
    masks = [sj.prune(sj.scores.magnitude(p), 0.5, params=p)
             for p in (_unstack(dense.params, i) for i in range(n))]
    masks_b = jax.tree.map(lambda *ms: jnp.stack(ms), *masks)
    inner = optax.adam(1e-2)
    keys = jax.random.split(jax.random.key(1), n)
    tx = sj.keep_sparse(inner)
    fresh = sj_train.TrainState.create(graphdef=dense.graphdef, params=dense.params,
                                       rest=dense.rest, tx=tx, key=keys)
    new = fresh.with_mask(masks_b)

    params_b = jax.vmap(sj.apply_mask)(dense.params, masks_b)
    old_tx = sj.keep_sparse(inner, sj.init_mask)
    old = sj_train.TrainState(
        step=jnp.zeros(n, jnp.int32), params=params_b, rest=dense.rest,
        opt_state=jax.vmap(lambda p, m: sj.keep_sparse(inner, m).init(p))(params_b, masks_b),
        key=keys, epoch=jnp.zeros(n, jnp.int32), batch=jnp.zeros(n, jnp.int32),
        graphdef=dense.graphdef, tx=old_tx,
    )
    chex.assert_trees_all_equal(plain(new.replace(tx=old_tx)), plain(old))
    chex.assert_trees_all_equal(plain(jax.vmap(lambda s, m: s.with_mask(m))(fresh, masks_b)),
                                plain(new))
    for i in range(n):
        single = sj_train.TrainState.create(
            graphdef=dense.graphdef, params=_unstack(dense.params, i),
            rest=_unstack(dense.rest, i), tx=tx, key=keys[i]).with_mask(masks[i])
        chex.assert_trees_all_equal(plain(_unstack(new, i)), plain(single))

    x, y = data
    trained, _ = sj_train.train(new, x, y, batch_size=8, seed=0, steps=2, progress=False,
                                vmap_seeds=True)
    kernel = np.asarray(trained.params["fc1"]["kernel"][...])
    kept = np.asarray(masks_b["fc1"]["kernel"][...])
    assert np.all(kernel[~kept] == 0.0) and np.all(kernel[kept] != 0.0)
    with pytest.raises(ValueError, match="with_mask: no PruningState or KeepSparseState"):
        net_state().with_mask(masks[0])
