"""current_mask, current_step, with_mask and pruning_schedules on nested optimizer states."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from transform_problems import (
    POLY,
    _assert_pruned_are_zero,
    _batch,
    _mlp_params,
    _quadratic_loss,
    _quadratic_problem,
    _train_step,
    magnitude_score,
)

import sparsejax.masks as sjm
from sparsejax import schedules
from sparsejax.structures import Neurons
from sparsejax.transforms import (
    PruningState,
    current_mask,
    current_step,
    keep_sparse,
    pruning,
    pruning_schedules,
    with_mask,
)


def test_current_mask_errors():
    with pytest.raises(ValueError, match="no PruningState or KeepSparseState"):
        current_mask(optax.adam(0.1).init({"w": jnp.ones(2)}))
    params, mask, _ = _quadratic_problem(0)
    two = optax.chain(keep_sparse(optax.sgd(0.1), mask), keep_sparse(optax.sgd(0.1), mask))
    with pytest.raises(ValueError, match=r"2 pruning states .* at \['\[0\]', '\[1\]'\]"):
        current_mask(two.init(params))
    with pytest.raises(ValueError, match="KeepSparseState .* counts no steps"):
        current_step(keep_sparse(optax.sgd(0.1), mask).init(params))


# --------------------------------------------------------------------------- with_mask


INNER = {
    "sgd_momentum": lambda: optax.sgd(0.05, momentum=0.9),
    "adam": lambda: optax.adam(0.05),
    "chain_clip_adamw": lambda: optax.chain(optax.clip_by_global_norm(1.0),
                                            optax.adamw(0.05, weight_decay=0.1)),
}


@pytest.mark.parametrize("name", sorted(INNER))
def test_with_mask_equals_building_keep_sparse_with_the_mask(name):
    """keep_sparse(inner) + with_mask(state, m, p) is keep_sparse(inner, m).init(p), array for
    array; a lower-rank leaf is stored as init stores it; the optimizer then trains the same."""
    params, mask, target = _quadratic_problem(5)
    mask = dict(mask, v=jnp.array([True, False, True, True]))  # (out,) for an (8, 4) kernel
    params = sjm.apply_mask(params, mask)
    one_tx = keep_sparse(INNER[name]())
    swapped = with_mask(one_tx.init(params), mask, params)
    built = keep_sparse(INNER[name](), mask).init(params)
    chex.assert_trees_all_equal(swapped, built)
    assert swapped.mask["v"].shape == (1, 4)
    # the all-keep optimizer reads the mask from its state only: same training
    step = jax.jit(_train_step(one_tx, _quadratic_loss))
    ref = jax.jit(_train_step(keep_sparse(INNER[name](), mask), _quadratic_loss))
    a, sa, b, sb = params, swapped, params, built
    for _ in range(3):
        a, sa, _ = step(a, sa, target)
        b, sb, _ = ref(b, sb, target)
    chex.assert_trees_all_equal((a, sa), (b, sb))
    _assert_pruned_are_zero(a, mask)


def test_with_mask_vmapped_over_seeds_equals_per_seed_construction():
    keys = jax.random.split(jax.random.key(3), 3)
    params_b = jax.vmap(_mlp_params)(keys)
    masks_b = jax.vmap(lambda p: jax.tree.map(
        lambda x: jnp.abs(x) > 0.3 if x.ndim >= 2 else jnp.ones((), bool), p))(params_b)
    tx = keep_sparse(optax.adam(0.1))
    states = jax.vmap(tx.init)(params_b)
    swapped = jax.vmap(with_mask)(states, masks_b, params_b)
    for i in range(3):
        pick = lambda t, i=i: jax.tree.map(lambda x: x[i], t)  # noqa: E731
        chex.assert_trees_all_equal(
            pick(swapped), keep_sparse(optax.adam(0.1), pick(masks_b)).init(pick(params_b)))
    # a jitted vmapped swap gives the same
    chex.assert_trees_all_equal(jax.jit(jax.vmap(with_mask))(states, masks_b, params_b), swapped)


def test_with_mask_finds_the_state_in_a_nested_optimizer_and_keeps_the_rest():
    params = _mlp_params(jax.random.key(0))
    sched = schedules.one_shot(0.5, at=1)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     pruning(optax.adam(0.02), score=magnitude_score, schedule=sched))
    state = tx.init(params)
    for _ in range(2):
        _, state, _ = _train_step(tx)(params, state, _batch())
    old = state[1]
    assert int(old.step) == 2
    new_mask = jax.tree.map(jnp.logical_not, old.mask)
    swapped = with_mask(state, new_mask)
    chex.assert_trees_all_equal(current_mask(swapped), new_mask)
    chex.assert_trees_all_equal(swapped[0], state[0])
    assert isinstance(swapped[1], PruningState) and swapped[1].schedule is sched
    chex.assert_trees_all_equal((swapped[1].step, swapped[1].inner_state, swapped[1].score_state),
                                (old.step, old.inner_state, old.score_state))


def test_with_mask_errors_name_path_and_value():
    params, mask, _ = _quadratic_problem(0)
    with pytest.raises(ValueError, match="with_mask: no PruningState or KeepSparseState"):
        with_mask(optax.adam(0.1).init(params), mask)
    two = optax.chain(keep_sparse(optax.sgd(0.1)), keep_sparse(optax.sgd(0.1)))
    with pytest.raises(ValueError, match=r"with_mask: 2 pruning states"):
        with_mask(two.init(params), mask)
    state = keep_sparse(optax.sgd(0.1)).init(params)
    with pytest.raises(ValueError, match=r"paths only in the state's mask: \['v'\]"):
        with_mask(state, {"w": mask["w"], "b": mask["b"]})
    with pytest.raises(ValueError, match=r"mask at 'w' has dtype float32"):
        with_mask(state, dict(mask, w=jnp.ones((6, 8))))
    with pytest.raises(ValueError, match=r"mask at 'v' has shape \(4, 8\).*\(8, 4\)"):
        with_mask(state, dict(mask, v=jnp.ones((4, 8), bool)), params)
    # a pruning state's mask shapes are fixed by its structure at init
    mlp = _mlp_params(jax.random.key(0))
    pstate = pruning(optax.sgd(0.1), score=magnitude_score, schedule=POLY,
                     structure=Neurons()).init(mlp)
    full = jax.tree.map(lambda p: jnp.ones(p.shape if p.ndim >= 2 else (), bool), mlp)
    with pytest.raises(ValueError, match=r"mask at 'dense0/kernel' has shape \(4, 16\), but the "
                                         r"pruning state's mask there has shape \(1, 16\)"):
        with_mask(pstate, full)


def test_keep_sparse_without_a_mask_keeps_everything():
    params, _, target = _quadratic_problem(6)
    tx, ref = keep_sparse(optax.adam(0.1)), optax.adam(0.1)
    state, ref_state = tx.init(params), ref.init(params)
    assert jax.tree.map(jnp.shape, state.mask) == {"w": (), "b": (), "v": ()}
    assert all(bool(m) for m in jax.tree.leaves(state.mask))
    p = q = params
    for _ in range(3):
        g = jax.grad(_quadratic_loss)(p, target)
        u, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u)
        v, ref_state = ref.update(jax.grad(_quadratic_loss)(q, target), ref_state, q)
        q = optax.apply_updates(q, v)
    chex.assert_trees_all_equal(p, q)


# --------------------------------------------------------------------------- schedules


def test_pruning_schedules_lists_every_pruning_state_in_order():
    params = _mlp_params(jax.random.key(0))
    a, b = schedules.one_shot(0.5, at=1), schedules.periodic(0.1, every=2, final=0.4)
    tx = optax.chain(
        pruning(optax.sgd(0.1), score=magnitude_score, schedule=a, prunable="dense0"),
        keep_sparse(optax.identity()),
        pruning(optax.identity(), score=magnitude_score, schedule=b, prunable="out"),
    )
    state = tx.init(params)
    assert pruning_schedules(state) == (a, b)
    assert pruning_schedules(keep_sparse(optax.sgd(0.1)).init(params)) == ()
    assert pruning_schedules(optax.adam(0.1).init(params)) == ()
    # static data: readable from a traced state, and from the state's shapes alone
    assert jax.jit(lambda s: (jnp.zeros(()), pruning_schedules(s) == (a, b))[0])(state) == 0
    assert pruning_schedules(jax.eval_shape(tx.init, params)) == (a, b)
    # a PruningState assembled by hand has no schedule: reported as None
    bare = PruningState(*state[0][:4])
    assert bare.schedule is None and pruning_schedules(bare) == (None,)
