"""pruning: exact pruned counts, shrinking masks, update steps, jit / vmap / sharding / NNX /
chain behaviour and error messages."""

import dataclasses
import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from transform_problems import (
    POLY,
    SIZES,
    TRACES,
    TX_GLOBAL,
    TX_LAYER,
    _assert_pruned_are_zero,
    _assert_shrinks,
    _batch,
    _expected_pruned,
    _mlp_loss,
    _mlp_params,
    _named,
    _pruned,
    _run_mlp,
    _train_step,
    magnitude_score,
)

import sparsejax.masks as sjm
from sparsejax import schedules, scores
from sparsejax.structures import Neurons
from sparsejax.transforms import (
    PruningState,
    Score,
    current_mask,
    current_step,
    pruning,
)


def test_pruning_mlp_reaches_scheduled_sparsity_exactly_and_only_on_schedule():
    history = _run_mlp(TX_LAYER, 18)
    prev = jax.tree.map(lambda p: jnp.ones(p.shape if p.ndim >= 2 else (), bool),
                        _mlp_params(jax.random.key(0)))
    changed = []
    for t, (params, state, _) in enumerate(history):
        mask = current_mask(state)
        assert int(current_step(state)) == t + 1
        _assert_shrinks(prev, mask)
        _assert_pruned_are_zero(params, mask)
        counts = _pruned(mask, params)
        if bool(POLY.is_update(t)):
            assert counts == {k: _expected_pruned(POLY(t), n) for k, n in SIZES.items()}, t
        else:
            chex.assert_trees_all_equal(mask, prev)
        if counts != _pruned(prev, params):
            changed.append(t)
        prev = mask
    assert changed == [5, 8, 11, 14]  # step 2 is an update to sparsity 0.0
    # round(0.8 n) per layer at the end, and the pruned network still learned.
    assert _pruned(prev, history[-1][0]) == {"dense0/kernel": 51, "out/kernel": 26}
    assert history[-1][2] < 0.8 * history[0][2]
    # A changing mask never retraced the jitted step.
    assert TRACES[TX_LAYER] == 1


def test_pruning_cost_is_paid_only_inside_cond():
    # The score uses `cos`, which appears nowhere else: it must only be traced
    # inside the true branch of the lax.cond.
    tx = pruning(optax.sgd(0.1), score=lambda p, g: jax.tree.map(jnp.cos, p), schedule=POLY)
    params = jax.eval_shape(_mlp_params, jax.random.key(0))  # shapes only: nothing runs
    closed = jax.make_jaxpr(tx.update)(params, jax.eval_shape(tx.init, params), params)
    conds = [e for e in closed.jaxpr.eqns if e.primitive.name == "cond"]
    assert len(conds) == 1
    count = lambda j: len(re.findall(r"= cos ", str(j)))  # noqa: E731
    false_branch, true_branch = conds[0].params["branches"]
    assert count(true_branch) == 4 and count(false_branch) == 0  # one per leaf
    assert count(closed) == count(true_branch)


def test_pruning_jitted_equals_eager():
    eager = _run_mlp(TX_LAYER, 6, jit=False)[-1]
    jitted = _run_mlp(TX_LAYER, 6, jit=True)[-1]
    chex.assert_trees_all_equal(current_mask(eager[1]), current_mask(jitted[1]))
    chex.assert_trees_all_close(eager[0], jitted[0], rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(eager[1], jitted[1], rtol=1e-5, atol=1e-6)
    # Updates at 2 (0.0) and 5 (0.4625).
    assert _pruned(current_mask(eager[1]), eager[0]) == {"dense0/kernel": 30, "out/kernel": 15}



def test_pruning_with_the_schedule_on_the_host_equals_lax_cond():
    """prune_now=t in update_steps: no cond traced, same masks and params as the cond path."""
    update_at = set(schedules.update_steps(POLY, 18))
    assert sorted(update_at) == [2, 5, 8, 11, 14]

    def hinted(params, opt_state, batch, prune_now):
        loss, grads = jax.value_and_grad(_mlp_loss)(params, batch)
        updates, opt_state = TX_LAYER.update(grads, opt_state, params, prune_now=prune_now)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(hinted, static_argnames="prune_now")
    params = _mlp_params(jax.random.key(0))
    shapes = jax.eval_shape(TX_LAYER.init, params)
    for prune_now, conds in ((False, 0), (True, 0)):
        jaxpr = jax.make_jaxpr(hinted, static_argnums=3)(params, shapes, _batch(), prune_now)
        assert [e.primitive.name for e in jaxpr.jaxpr.eqns].count("cond") == conds
    # prune_now=False traces no scoring: a `cos` score appears only with True
    cos_tx = pruning(optax.sgd(0.1), score=lambda p, g: jax.tree.map(jnp.cos, p), schedule=POLY)
    cos_state = jax.eval_shape(cos_tx.init, params)
    n_cos = {b: len(re.findall(r"= cos ", str(jax.make_jaxpr(
        lambda p, s, b=b: cos_tx.update(p, s, p, prune_now=b))(params, cos_state))))
        for b in (False, True)}
    assert n_cos == {False: 0, True: 4}

    reference = _run_mlp(TX_LAYER, 18)
    state = jax.jit(TX_LAYER.init)(params)
    for t in range(18):
        params, state, loss = step(params, state, _batch(), prune_now=t in update_at)
        ref_params, ref_state, ref_loss = reference[t]
        chex.assert_trees_all_equal(current_mask(state), current_mask(ref_state))
        chex.assert_trees_all_close(params, ref_params, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-6)
    assert _pruned(current_mask(state), params) == {"dense0/kernel": 51, "out/kernel": 26}
    # A wrong True hint (step 18 is no update step) leaves the mask alone.
    _, state2, _ = step(params, state, _batch(), prune_now=True)
    chex.assert_trees_all_equal(current_mask(state2), current_mask(state))
    with pytest.raises(TypeError, match=r"prune_now must be None or a Python bool.*got 1 of"):
        TX_LAYER.update(params, state, params, prune_now=1)


def _vmapped_global_run(device=None):
    """TX_GLOBAL for 6 steps, vmapped over 4 seeds (init and update), unsharded, on
    ``device`` (default: the first device); one run per device."""
    return _vmapped_global_run_on(jax.devices()[0] if device is None else device)


@functools.cache
def _vmapped_global_run_on(device):
    with jax.default_device(device):
        keys = jax.random.split(jax.random.key(7), 4)
        params_b = jax.jit(jax.vmap(_mlp_params))(keys)
        step = jax.jit(jax.vmap(_train_step(TX_GLOBAL), in_axes=(0, 0, None)))
        p, s = params_b, jax.jit(jax.vmap(TX_GLOBAL.init))(params_b)
        for _ in range(6):
            p, s, _ = step(p, s, _batch())
        return keys, params_b, jax.device_get(p), jax.device_get(s)


def test_pruning_vmapped_over_seeds():
    keys, params_b, p, s = _vmapped_global_run()
    np.testing.assert_array_equal(current_step(s), [6, 6, 6, 6])
    # vmap of init gave each seed the parameters it would get on its own.
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[2], params_b), _mlp_params(keys[2]))
    masks = [jax.tree.map(lambda x, i=i: x[i], current_mask(s)) for i in range(4)]
    for i, mask in enumerate(masks):
        params = jax.tree.map(lambda x, i=i: x[i], p)
        _assert_pruned_are_zero(params, mask)
        assert sum(_pruned(mask, params).values()) == 67  # round(0.7 * 96), global
        # Each seed got its own mask: the one magnitude pruning of its own
        # initial weights would start from.
        if i:
            assert not all(np.array_equal(a, b) for a, b in
                           zip(jax.tree.leaves(mask), jax.tree.leaves(masks[0])))


def test_pruning_sharded_keeps_sharding_and_matches_unsharded_vmapped_runs(devices8):
    mesh = Mesh(np.array(devices8).reshape(2, 4), ("data", "model"))
    specs = {
        "dense0": {"kernel": P("data", "model"), "bias": P("model")},
        "out": {"kernel": P("model", None), "bias": P()},
    }
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                             is_leaf=lambda x: isinstance(x, P))
    x, y = _batch()
    batch = jax.device_put((x, y), NamedSharding(mesh, P("data", None)))
    step = jax.jit(_train_step(TX_GLOBAL))
    keys, _, p_ref, s_ref = _vmapped_global_run(devices8[0])  # on the sharded runs' platform
    for i in (0,):
        p = jax.device_put(_mlp_params(keys[i]), shardings)
        state = TX_GLOBAL.init(p)
        for name, m in _named(state.mask):  # init: a full-shape mask has its kernel's sharding
            assert m.sharding == dict(_named(shardings))[name] if name in SIZES else m.shape == ()
        for _ in range(6):
            p, state, _ = step(p, state, batch)
        for (name, q), (_, m), (_, sh) in zip(_named(p), _named(state.mask), _named(shardings)):
            assert q.sharding.is_equivalent_to(sh, q.ndim), name
            if name in SIZES:
                assert m.sharding.is_equivalent_to(sh, m.ndim), (name, m.sharding)
        pick = functools.partial(jax.tree.map, lambda x, i=i: x[i])
        chex.assert_trees_all_equal(jax.device_get(state.mask), jax.device_get(pick(s_ref.mask)))
        chex.assert_trees_all_close(jax.device_get(p), pick(p_ref), rtol=1e-5, atol=1e-6)
        assert sum(_pruned(state.mask, p).values()) == 67


def test_pruning_on_nnx_state():
    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(4, 16, rngs=rngs), nnx.Linear(16, 2, rngs=rngs)])

        def __call__(self, x):
            return self.layers[1](jnp.tanh(self.layers[0](x)))

    graphdef, params, rest = nnx.split(MLP(nnx.Rngs(0)), nnx.Param, ...)
    tx = pruning(optax.adam(0.02), score=magnitude_score, schedule=schedules.one_shot(0.75, at=1))

    def loss_fn(params, batch):
        x, y = batch
        return jnp.mean((nnx.merge(graphdef, params, rest)(x) - y) ** 2)

    step = jax.jit(_train_step(tx, loss_fn))
    state = tx.init(params)
    for _ in range(3):
        params, state, _ = step(params, state, _batch())
    mask = current_mask(state)
    assert isinstance(mask, nnx.State)
    assert _pruned(mask, params) == {"layers/0/kernel": 48, "layers/1/kernel": 24}
    _assert_pruned_are_zero(params, mask)
    merged = nnx.merge(graphdef, params, rest)
    assert int(jnp.sum(merged.layers[0].kernel[...] == 0.0)) == 48


# --------------------------------------------------------------------------- composition, scores


def test_pruning_in_multisteps_chain_with_injected_hyperparams_and_custom_score():
    counting_magnitude = Score(
        init=lambda p: jnp.zeros((), jnp.int32),
        update=lambda s, p, g: s + 1,  # every (inner) step
        compute=lambda s, p, g: scores.magnitude(p),  # update steps only
    )
    inner = optax.inject_hyperparams(optax.adamw)(learning_rate=0.02, weight_decay=0.05)
    # iterative(0.5, rounds=2, steps_per_round=3): updates at inner steps 3, 6 to 50 %, 75 %.
    prune_tx = pruning(inner, score=counting_magnitude, schedule=schedules.iterative(0.5, 2, 3))
    tx = optax.MultiSteps(optax.chain(optax.clip_by_global_norm(1.0), prune_tx), every_k_schedule=2)
    history = _run_mlp(tx, 16)
    half = {"dense0/kernel": 32, "out/kernel": 16}
    for m, (params, state, _) in enumerate(history):
        mask = current_mask(state)
        _assert_pruned_are_zero(params, mask)
        inner_steps = (m + 1) // 2
        assert int(current_step(state)) == inner_steps
        if inner_steps in (5, 6):  # after the update at inner step 3, before the one at 6
            assert _pruned(mask, params) == half
    params, state, _ = history[-1]
    pruning_state = state.inner_opt_state[1]
    assert isinstance(pruning_state, PruningState)
    chex.assert_trees_all_equal(current_mask(state), pruning_state.mask)
    assert int(pruning_state.score_state) == 8
    assert _pruned(pruning_state.mask, params) == {k: 3 * v // 2 for k, v in half.items()}



def test_pruning_neurons_structure_fixed_mask_shape():
    tx = pruning(optax.adam(0.02), score=magnitude_score, structure=Neurons(),
                 schedule=schedules.polynomial(0.0, 0.5, begin=0, end=4, every=2))
    state = tx.init(_mlp_params(jax.random.key(0)))
    assert jax.tree.map(jnp.shape, state.mask) == {
        "dense0": {"kernel": (1, 16), "bias": ()}, "out": {"kernel": (1, 2), "bias": ()}}
    params, state, _ = _run_mlp(tx, 6, jit=False)[-1]
    m = np.asarray(state.mask["dense0"]["kernel"])
    assert m.shape == (1, 16) and (~m).sum() == 8
    assert np.all(np.asarray(params["dense0"]["kernel"])[:, ~m[0]] == 0.0)
    assert np.all(np.asarray(params["dense0"]["kernel"])[:, m[0]] != 0.0)
    assert (~np.asarray(state.mask["out"]["kernel"])).sum() == 1


def test_pruning_from_an_initial_mask_only_shrinks_it():
    params = _mlp_params(jax.random.key(0))
    m0 = jax.tree.map(lambda p: jax.random.bernoulli(jax.random.key(5), 0.7, p.shape)
                      if p.ndim >= 2 else jnp.asarray(True), params)
    tx = pruning(optax.adam(0.02), score=magnitude_score, mask=m0,
                 schedule=schedules.one_shot(0.5, at=0))
    params, state, _ = _run_mlp(tx, 2, jit=False)[-1]
    _assert_shrinks(m0, state.mask)
    assert _pruned(state.mask, params) == {"dense0/kernel": 32, "out/kernel": 16}


def test_pruning_errors_name_path_and_value():
    params = _mlp_params(jax.random.key(0))
    state = TX_LAYER.init(params)
    with pytest.raises(ValueError, match=r"pruning: update.* needs params \(got params=None\)"):
        TX_LAYER.update(params, state)
    small = {"dense0": params["dense0"], "out": {"kernel": params["out"]["kernel"]}}
    with pytest.raises(ValueError, match=r"paths only in pruning mask: \['out/bias'\]"):
        TX_LAYER.update(small, state, small)
    bad = jax.tree.map(lambda p: jnp.ones((), bool), params)
    with pytest.raises(ValueError, match=r"initial mask at 'dense0/kernel' has shape \(\).*\(4, 16\)"):
        pruning(optax.sgd(0.1), score=magnitude_score, schedule=POLY, mask=bad).init(params)
    with pytest.raises(ValueError, match=r"initial mask at 'dense0/kernel' has shape \(4, 16\).*\(1, 16\)"):
        pruning(optax.sgd(0.1), score=magnitude_score, schedule=POLY, structure=Neurons(),
                mask=sjm.init_mask(params)).init(params)
    with pytest.raises(TypeError, match=r"must accept \(params, grads\)"):
        pruning(optax.sgd(0.1), score=scores.magnitude, schedule=POLY)
    with pytest.raises(TypeError, match=r"schedule must have __call__\(step\), got 0.5"):
        pruning(optax.sgd(0.1), score=magnitude_score, schedule=0.5)


@pytest.mark.parametrize("normalize", [None, "l2"])
def test_pruning_forwards_normalize_to_the_global_ranking(normalize):
    """Two layers of very different scale: unnormalised global filter norms remove the
    small layer entirely; ``normalize="l2"`` (Molchanov et al. 2017) keeps both alive."""
    col = lambda v: jnp.tile(jnp.asarray(v, jnp.float32) / 3.0, (3, 1))  # noqa: E731
    params = {"a": {"kernel": col([1.0, 2.0, 3.0, 4.0])},
              "b": {"kernel": col([150.0, 250.0, 350.0, 450.0])}}
    tx = pruning(optax.sgd(0.0), score=magnitude_score, schedule=schedules.one_shot(0.5),
                 scope="global", structure=Neurons(), normalize=normalize)
    state = tx.init(params)
    _, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state, params)
    got = {k: np.asarray(v["kernel"]).reshape(-1).astype(int).tolist()
           for k, v in state.mask.items()}
    if normalize is None:
        assert got == {"a": [0, 0, 0, 0], "b": [1, 1, 1, 1]}
    else:  # a/√30 = .183 .365 .548 .730, b/√410000 = .234 .390 .547 .703
        assert got == {"a": [0, 0, 1, 1], "b": [0, 0, 1, 1]}


def test_pruning_state_carries_its_schedule_without_a_leaf():
    """The schedule is static data of the state: same leaves and paths as the 0.1 state (so
    checkpoints are unchanged), one compilation for every state of one optimizer."""
    import copy

    params = _mlp_params(jax.random.key(0))
    state = TX_LAYER.init(params)
    assert isinstance(state, PruningState) and state.schedule is POLY
    assert [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]] == [
        ".step", *[f".mask_leaves[{i}]" for i in range(4)], ".inner_state[0].count",
        *[f".inner_state[0].{m}['{layer}']['{leaf}']" for m in ("mu", "nu")
          for layer in ("dense0", "out") for leaf in ("bias", "kernel")],
    ]
    _, state1, _ = _run_mlp(TX_LAYER, 1, jit=False)[-1]
    assert state1.schedule is POLY  # update keeps it; so do tree maps, copies and eval_shape
    assert jax.tree.map(lambda x: x, state1).schedule is POLY
    assert copy.deepcopy(state1).schedule is POLY
    assert jax.eval_shape(TX_LAYER.init, params).schedule is POLY
    assert jax.tree.structure(state1) == jax.tree.structure(state)
    # an equal but distinct schedule is another optimizer: another tree structure
    twin = pruning(optax.adam(0.02), score=magnitude_score, schedule=dataclasses.replace(POLY))
    assert jax.tree.structure(twin.init(params)) != jax.tree.structure(state)
    traces = []
    f = jax.jit(lambda s: traces.append(1) or s.step + 1)
    f(state), f(state1)
    assert len(traces) == 1
