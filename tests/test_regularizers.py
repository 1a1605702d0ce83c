"""Group lasso: penalty values, proximal step closed form, masks, a tiny training run."""

import importlib.util
import math
import pathlib
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import sparsejax as sj
from sparsejax.data import load_dataset
from sparsejax.models import MLP
from sparsejax.regularizers import (
    group_lasso_penalty,
    group_norms,
    group_stats,
    groups_to_mask,
    proximal_group_lasso,
)
from sparsejax.train import create_train_state, evaluate, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
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
    state = create_train_state(model, tx, key=0)
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


@pytest.mark.smoke
def test_sparsity_learning_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "experiments_sparsity_learning", ROOT / "experiments" / "sparsity_learning.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["experiments_sparsity_learning"] = module
    spec.loader.exec_module(module)
    res = module.main(["--smoke", "true", "--out", str(tmp_path), "--ssl", "true",
                       "--structured-vd", "true", "--finetune-steps", "10"])
    (vd,) = res["sparse_vd"]
    assert vd["model"] == "lenet300100" and vd["compression"] >= 1.0
    # converting the VD model to the plain LeNet-300-100 keeps its eval accuracy
    assert vd["test_accuracy"] == pytest.approx(vd["vd_eval_test_accuracy"], abs=1e-9)
    assert len(res["group_lasso"]) == 2 and sum(r["selected"] for r in res["group_lasso"]) <= 1
    for row in res["group_lasso"]:
        assert row["neurons"] == 400 and 0 <= row["neurons_removed"] <= 400
    # masked fine-tuning keeps every removed weight at zero
    for row in (vd, *res["group_lasso"]):
        assert row["finetune_steps"] == 10
        assert row["finetuned_pruned_nonzero"] == 0
        assert row["finetuned_compression"] >= row["compression"] * (1 - 1e-3)
    for name in ("config.json", "results.json", "results.md", "group_lasso_tradeoff.png"):
        assert (tmp_path / name).stat().st_size > 0
    # Wen et al. SSL on LeNet-5 and structured VD: the shrunk models compute the trained ones
    (ssl,) = res["ssl_lenet5"]
    assert ssl["max_rel_logit_diff"] <= 1e-5
    assert ssl["units_kept"]["conv2"] == ssl["filters_nonzero"]["conv2"]
    assert ssl["units_kept"]["conv1"] <= min(ssl["filters_nonzero"]["conv1"],
                                             ssl["conv2_channels_nonzero"])
    assert ssl["channels_in"]["conv2"] == ssl["units_kept"]["conv1"]
    assert [r["model"] for r in res["structured_vd"]] == ["lenet300100", "lenet5"]
    for row in res["structured_vd"]:
        assert row["max_rel_logit_diff"] <= 1e-5
        # converting and shrinking keep the VD model's eval predictions
        assert row["test_accuracy"] == pytest.approx(row["vd_eval_test_accuracy"], abs=1e-9)
    assert "Wen et al. 2016" in (tmp_path / "results.md").read_text()
