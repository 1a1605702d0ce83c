"""Group lasso: penalty values, proximal step closed form, masks, λ selection, a tiny training run."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import sparsejax as sj
from sparsejax.data import load_dataset
from sparsejax.models import MLP
from sparsejax.regularizers import (
    LambdaSelection,
    group_lasso_penalty,
    group_norms,
    group_stats,
    groups_to_mask,
    proximal_group_lasso,
    select_lambda,
)
from sparsejax.train import create_train_state, evaluate, train

SQ3 = math.sqrt(3.0)


def _params():
    # columns (units) of the kernel with their bias: norms 0.5, 5, 2 (3 entries per group)
    return {
        "dense": {
            "kernel": jnp.array([[0.3, 3.0, 0.0], [0.4, 4.0, 1.2]]),
            "bias": jnp.array([0.0, 0.0, 1.6]),
        },
        "scale": jnp.array([7.0, -7.0]),  # 1-d, not prunable, not a bias: untouched
    }


def test_group_norms_neurons_with_bias():
    norms = group_norms(_params())
    np.testing.assert_allclose(norms["dense"]["kernel"], [[0.5, 5.0, 2.0]], rtol=1e-6)
    assert norms["dense"]["kernel"].shape == (1, 3)
    assert norms["dense"]["bias"].shape == () and norms["scale"].shape == ()


def test_penalty_hand_computed():
    p = _params()
    # λ·√3·(0.5 + 5 + 2) = 2·√3·7.5
    assert float(group_lasso_penalty(p, 2.0)) == pytest.approx(2.0 * SQ3 * 7.5, rel=1e-6)
    # without the bias: groups of 2, norms (0.5, 5, 1.2)
    assert float(group_lasso_penalty(p, 1.0, include_bias=False)) == pytest.approx(
        math.sqrt(2.0) * 6.7, rel=1e-6)
    # sparse group lasso: + λ1·Σ|w| over kernel and joined bias (0.3+0.4+3+4+1.2+1.6 = 10.5)
    assert float(group_lasso_penalty(p, 0.0, l1=0.1)) == pytest.approx(1.05, rel=1e-6)
    # input channels (rows, outgoing weights, bias not joined): √3·(‖(.3,3,0)‖ + ‖(.4,4,1.2)‖)
    rows = math.hypot(0.3, 3.0) + math.sqrt(0.16 + 16 + 1.44)
    assert float(group_lasso_penalty(p, 1.0, structure=sj.InputChannels())) == pytest.approx(
        SQ3 * rows, rel=1e-6)
    # whole layer: √6·‖kernel‖_F (Layers never joins the bias)
    frob = math.sqrt(0.09 + 0.16 + 9 + 16 + 1.44)
    assert float(group_lasso_penalty(p, 1.0, structure=sj.Layers())) == pytest.approx(
        math.sqrt(6.0) * frob, rel=1e-6)
    # unstructured groups of one entry: the L1 norm of the kernel
    assert float(group_lasso_penalty(p, 1.0, structure=sj.Unstructured())) == pytest.approx(
        8.9, rel=1e-6)


def test_penalty_gradient_finite_at_zero_group_and_jit():
    p = _params()
    p["dense"]["kernel"] = p["dense"]["kernel"].at[:, 0].set(0.0)
    g = jax.grad(lambda q: group_lasso_penalty(q, 1.0))(p)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))
    np.testing.assert_array_equal(g["dense"]["kernel"][:, 0], [0.0, 0.0])
    # d/dw of √3·‖w_g‖ is √3·w/‖w_g‖
    np.testing.assert_allclose(g["dense"]["kernel"][:, 1], SQ3 * np.array([3.0, 4.0]) / 5.0,
                               rtol=1e-6)
    jitted = jax.jit(lambda q: group_lasso_penalty(q, 1.0))(p)
    assert float(jitted) == pytest.approx(float(group_lasso_penalty(p, 1.0)), rel=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_proximal_step_closed_form(jit):
    lr = 0.5
    lam = 2.0 / SQ3  # threshold lr·λ·√|g| = 1 for groups of 3
    tx = proximal_group_lasso(lr, lam)
    z = _params()
    params = jax.tree.map(lambda x: x - 0.25, z)
    updates = jax.tree.map(lambda _: jnp.full((), 0.25), z)
    updates = jax.tree.map(lambda x, u: jnp.broadcast_to(u, x.shape), z, updates)
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    new_updates, state = update(updates, state, params)
    new = optax.apply_updates(params, new_updates)
    # unit 0: ‖z_g‖ = 0.5 ≤ 1 → exact zeros (kernel column and bias)
    assert np.all(np.asarray(new["dense"]["kernel"][:, 0]) == 0.0)
    assert float(new["dense"]["bias"][0]) == 0.0
    # unit 1: factor 1 − 1/5, unit 2: factor 1 − 1/2 (bias shrunk by the same factor)
    np.testing.assert_allclose(new["dense"]["kernel"][:, 1], [2.4, 3.2], rtol=1e-6)
    np.testing.assert_allclose(new["dense"]["kernel"][:, 2], [0.0, 0.6], atol=1e-6)
    np.testing.assert_allclose(new["dense"]["bias"][1:], [0.0, 0.8], atol=1e-6)
    # leaves outside every group take the incoming update unchanged
    np.testing.assert_array_equal(new_updates["scale"], updates["scale"])
    assert int(state.count) == 1


def test_proximal_threshold_boundary_and_sparse_group():
    tx = proximal_group_lasso(1.0, 1.0, include_bias=False)  # groups of 4: threshold 2
    params = {"w": jnp.array([[0.999, 1.001], [0.999, 1.001], [0.999, 1.001], [0.999, 1.001]])}
    zero = jax.tree.map(jnp.zeros_like, params)
    upd, _ = tx.update(zero, tx.init(params), params)
    new = optax.apply_updates(params, upd)
    # ‖col0‖ = 1.998 ≤ 2 → zero; ‖col1‖ = 2.002 → factor 1 − 2/2.002
    assert np.all(np.asarray(new["w"][:, 0]) == 0.0)
    np.testing.assert_allclose(new["w"][:, 1], 1.001 * (1 - 2 / 2.002), rtol=1e-3)
    # sparse group lasso: L1 soft threshold 0.5 first, then groups of 2 with threshold 0.5·√2
    tx = proximal_group_lasso(0.5, 1.0, l1=1.0, include_bias=False)
    params = {"w": jnp.array([[0.6, 3.5], [0.7, 4.5]])}
    upd, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    new = optax.apply_updates(params, upd)
    # col0 → (0.1, 0.2), norm 0.2236 ≤ 0.707 → 0; col1 → (3, 4), factor 1 − 0.5·√2/5
    assert np.all(np.asarray(new["w"][:, 0]) == 0.0)
    np.testing.assert_allclose(new["w"][:, 1], np.array([3.0, 4.0]) * (1 - 0.5 * math.sqrt(2) / 5),
                               rtol=1e-6)


def test_proximal_uses_learning_rate_schedule():
    sched = optax.piecewise_constant_schedule(1.0, {1: 0.0})  # lr 1 at step 0, then 0
    tx = proximal_group_lasso(sched, 1.0, include_bias=False)
    params = {"w": jnp.array([[3.0], [4.0]])}
    state = tx.init(params)
    zero = {"w": jnp.zeros((2, 1))}
    upd, state = tx.update(zero, state, params)
    np.testing.assert_allclose(optax.apply_updates(params, upd)["w"][:, 0],
                               [3 * (1 - math.sqrt(2) / 5), 4 * (1 - math.sqrt(2) / 5)], rtol=1e-6)
    upd, state = tx.update(zero, state, params)  # lr 0: identity
    np.testing.assert_allclose(optax.apply_updates(params, upd)["w"], params["w"])


def test_groups_to_mask_shapes_and_values():
    p = _params()
    p["dense"]["kernel"] = p["dense"]["kernel"].at[:, 0].set(0.0)
    mask = groups_to_mask(p)
    np.testing.assert_array_equal(mask["dense"]["kernel"], [[False, True, True]])
    np.testing.assert_array_equal(mask["dense"]["bias"], [False, True, True])
    assert mask["scale"].shape == () and bool(mask["scale"])
    sj.validate_mask(p, mask)
    chex.assert_trees_all_equal(sj.apply_mask(p, mask), p)  # removing zero groups changes nothing
    # atol: unit 2 (norm 2) falls under atol 2.5
    np.testing.assert_array_equal(groups_to_mask(p, atol=2.5)["dense"]["kernel"],
                                  [[False, True, False]])
    conv = {"conv": {"kernel": jnp.ones((3, 3, 2, 4)).at[..., 1].set(0.0), "bias": jnp.zeros(4)}}
    cmask = groups_to_mask(conv, structure=sj.Filters())
    assert cmask["conv"]["kernel"].shape == (1, 1, 1, 4)
    np.testing.assert_array_equal(cmask["conv"]["kernel"].reshape(-1), [True, False, True, True])
    imask = groups_to_mask(conv, structure=sj.InputChannels())
    assert imask["conv"]["kernel"].shape == (1, 1, 2, 1) and imask["conv"]["bias"].shape == ()
    (row,) = group_stats(conv, structure=sj.Filters())
    assert (row.path, row.groups, row.removed, row.fraction) == ("conv/kernel", 4, 1, 0.25)
    jitted = jax.jit(lambda q: groups_to_mask(q))(p)
    chex.assert_trees_all_equal(jitted, mask)


def test_bad_inputs_raise_clear_errors():
    p = _params()
    with pytest.raises(ValueError, match="NM"):
        group_norms(p, structure=sj.NM(2, 4))
    with pytest.raises(ValueError, match="lam"):
        proximal_group_lasso(0.1, -1.0)
    with pytest.raises(TypeError, match="structure"):
        group_norms(p, structure="neurons")
    bad = {"d": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(2)}}
    with pytest.raises(ValueError, match="'d/bias'"):
        group_norms(bad)
    with pytest.raises(ValueError, match="matches no parameter path"):
        group_norms(p, prunable=r"nonexistent/kernel")
    tx = proximal_group_lasso(0.1, 1.0)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(p, tx.init(p))


def test_tiny_training_run_removes_neurons():
    """Proximal Adam on a 64-32-32-10 MLP (digits): exact zero neurons, accuracy kept."""
    data = load_dataset("digits")
    model = MLP((64, 32, 32, 10), rngs=nnx.Rngs(0))
    hidden = r"layers/[01]/kernel"
    lr = 3e-3
    tx = optax.chain(optax.adam(lr), proximal_group_lasso(lr, 0.4, prunable=hidden))
    state = create_train_state(model, tx, key=0, plain_arrays=True)
    state, _ = train(state, data.x_train, data.y_train, batch_size=64, seed=0, steps=300,
                     progress=False)
    stats = group_stats(state.params, prunable=hidden)
    removed = sum(s.removed for s in stats)
    # measured on CPU: 10 + 4 of the 64 hidden neurons are exact zeros after 300 steps
    assert removed >= 8
    mask = groups_to_mask(state.params, prunable=hidden)
    # the mask matches the exact zeros: applying it changes nothing
    chex.assert_trees_all_equal(sj.apply_mask(state.params, mask), state.params)
    assert evaluate(state, data.x_test, data.y_test)["accuracy"] > 0.9


def _variables(tree):
    return [x for x in jax.tree.leaves(tree, is_leaf=lambda v: isinstance(v, nnx.Variable))
            if isinstance(x, nnx.Variable)]


def test_masks_and_norms_of_an_nnx_state_are_plain_arrays():
    model = MLP((6, 4, 3), rngs=nnx.Rngs(0))
    model.layers[0].kernel.set_value(model.layers[0].kernel[...].at[:, 1].set(0.0))
    model.layers[0].bias.set_value(jnp.zeros(4))
    params = nnx.state(model, nnx.Param)  # nnx.Param leaves
    assert len(_variables(params)) == 4
    pure = nnx.as_pure(params)
    mask = groups_to_mask(params, prunable=r"layers/0/kernel")
    norms = group_norms(params, prunable=r"layers/0/kernel")
    for tree in (mask, norms):
        assert _variables(tree) == []  # never an nnx.Param (nor any other Variable)
        assert jax.tree.structure(tree) == jax.tree.structure(pure)
    np.testing.assert_array_equal(mask["layers"][0]["kernel"], [[True, False, True, True]])
    np.testing.assert_array_equal(mask["layers"][0]["bias"], [True, False, True, True])
    chex.assert_trees_all_equal(mask, groups_to_mask(pure, prunable=r"layers/0/kernel"))
    chex.assert_trees_all_equal(sj.apply_mask(pure, mask), pure)
    jitted = jax.jit(lambda q: groups_to_mask(q, prunable=r"layers/0/kernel"))(params)
    assert _variables(jitted) == []
    chex.assert_trees_all_equal(jitted, mask)


# ---------------------------------------------------------------------------------------------
# λ selection with a margin of standard errors
# ---------------------------------------------------------------------------------------------


def _reference(n, wrong=30):
    """Reference correctness: the last ``wrong`` of ``n`` examples wrong."""
    return np.arange(n) < n - wrong


def _candidate(ref, only_ref, only_cand):
    """Wrong on the first ``only_ref`` examples (the reference is right there), right on the
    first ``only_cand`` examples that the reference gets wrong; elsewhere as the reference."""
    cand = ref.copy()
    cand[:only_ref] = False
    wrong = np.flatnonzero(~ref)
    cand[wrong[:only_cand]] = True
    return cand


def _paired_se(n, b, c):
    # d_i = ref_i − cand_i has b ones and c minus ones: var(ddof=1) = (b + c − (b − c)²/n)/(n − 1)
    return math.sqrt((b + c - (b - c) ** 2 / n) / (n - 1) / n)


def test_select_lambda_closed_form():
    n = 800
    ref = _reference(n)
    c1 = _candidate(ref, 4, 2)   # drop (4 − 2)/800 = 0.25 pp
    c2 = _candidate(ref, 10, 1)  # 1.125 pp
    c3 = _candidate(ref, 7, 1)   # 0.75 pp
    sel = select_lambda([0.03, 0.1, 0.05], [c1, c2, c3], ref, tolerance=0.01, z=1.0)
    assert isinstance(sel, LambdaSelection)
    assert sel.drops == pytest.approx([2 / n, 9 / n, 6 / n], abs=1e-15)
    assert sel.standard_errors == pytest.approx(
        [_paired_se(n, 4, 2), _paired_se(n, 10, 1), _paired_se(n, 7, 1)], rel=1e-12)
    assert sel.upper_bounds == pytest.approx(
        [d + se for d, se in zip(sel.drops, sel.standard_errors, strict=True)], rel=1e-12)
    # 0.75 pp + 1 SE (0.35 pp) = 1.10 pp > 1 pp: only λ = 0.03 passes at z = 1
    assert sel.accepted == (True, False, False) and (sel.lam, sel.index) == (0.03, 0)
    assert (sel.tolerance, sel.z, sel.num_examples) == (0.01, 1.0, n)
    # z = 0 is the plain rule "largest λ within 1 pp": 0.05 (0.75 pp), not 0.1 (1.125 pp)
    plain = select_lambda([0.03, 0.1, 0.05], [c1, c2, c3], ref, z=0.0)
    assert (plain.lam, plain.accepted) == (0.05, (True, False, True))
    # 4× the examples with the same rates: the SE halves and 0.05 passes at z = 1
    big = select_lambda([0.03, 0.05], [np.tile(c1, 4), np.tile(c3, 4)], np.tile(ref, 4), z=1.0)
    assert big.lam == 0.05
    assert big.standard_errors[1] == pytest.approx(_paired_se(4 * n, 28, 4), rel=1e-12)
    # a 2-D array of rows is the same as a list of rows
    assert select_lambda([0.03, 0.1, 0.05], np.stack([c1, c2, c3]), ref, z=1.0) == sel


def test_select_lambda_sequential_stops_at_the_first_failure():
    ref = _reference(1000)
    good, bad = _candidate(ref, 1, 0), _candidate(ref, 30, 0)
    lams = [0.1, 0.01, 0.05, 0.2]
    rows = [good, good, bad, good]  # 0.05 fails, 0.1 and 0.2 pass (noise)
    free = select_lambda(lams, rows, ref)
    assert free.lam == 0.2 and free.accepted == (True, True, False, True)
    seq = select_lambda(lams, rows, ref, sequential=True)
    assert seq.lam == 0.01 and seq.accepted == (False, True, False, False)
    none = select_lambda([0.05, 0.1], [bad, bad], ref, sequential=True)
    assert none.lam is None and none.index is None and none.accepted == (False, False)


def test_select_lambda_bad_inputs():
    ref = _reference(10, wrong=2)
    cand = _candidate(ref, 1, 0)
    with pytest.raises(ValueError, match="lams is empty"):
        select_lambda([], [], ref)
    with pytest.raises(ValueError, match="distinct"):
        select_lambda([0.1, 0.1], [cand, cand], ref)
    with pytest.raises(ValueError, match=r"lams\[1\]"):
        select_lambda([0.1, -0.2], [cand, cand], ref)
    with pytest.raises(ValueError, match="one per λ"):
        select_lambda([0.1, 0.2], [cand], ref)
    with pytest.raises(ValueError, match=r"correct\[0\] has 9 examples, reference_correct 10"):
        select_lambda([0.1], [cand[:9]], ref)
    with pytest.raises(ValueError, match=r"correct\[0\] must be a 1-D bool array.*float"):
        select_lambda([0.1], [cand.astype(float)], ref)
    with pytest.raises(ValueError, match="reference_correct must be a 1-D bool"):
        select_lambda([0.1], [cand], ref[None])
    with pytest.raises(ValueError, match=">= 2"):
        select_lambda([0.1], [cand[:1]], ref[:1])
    with pytest.raises(ValueError, match="tolerance"):
        select_lambda([0.1], [cand], ref, tolerance=1.5)
    with pytest.raises(ValueError, match="z must be"):
        select_lambda([0.1], [cand], ref, z=-1.0)
    with pytest.raises(TypeError, match="sequential"):
        select_lambda([0.1], [cand], ref, sequential=1)


@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=6),
    st.floats(0.0, 3.0), st.floats(0.0, 3.0), st.floats(0.0, 0.05), st.permutations(range(6)),
)
def test_select_lambda_invariants(counts, z_lo, z_extra, tolerance, order):
    ref = _reference(500, wrong=40)
    rows = [_candidate(ref, b, c) for b, c in counts]
    lams = [0.01 * (i + 1) for i in range(len(rows))]
    lo = select_lambda(lams, rows, ref, tolerance=tolerance, z=z_lo)
    hi = select_lambda(lams, rows, ref, tolerance=tolerance, z=z_lo + z_extra)
    for sel in (lo, hi):
        if sel.lam is not None:  # the selected λ meets its own bound, and is the largest that does
            assert sel.upper_bounds[sel.index] <= tolerance
            assert sel.lam == max(lam for lam, ok in zip(lams, sel.accepted, strict=True) if ok)
    # a wider margin never selects a larger λ
    assert hi.lam is None or (lo.lam is not None and hi.lam <= lo.lam)
    # the order of the candidates does not matter
    perm = [i for i in order if i < len(rows)]
    shuffled = select_lambda([lams[i] for i in perm], [rows[i] for i in perm], ref,
                             tolerance=tolerance, z=z_lo)
    assert shuffled.lam == lo.lam
    # sequential testing never selects more than the free rule
    seq = select_lambda(lams, rows, ref, tolerance=tolerance, z=z_lo, sequential=True)
    assert seq.lam is None or (lo.lam is not None and seq.lam <= lo.lam)
