"""Iterative magnitude pruning (imp): counts, resets, controls, stopping, adaptive rates, resume."""

import itertools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import lottery as lt
from sparsejax.masks import apply_mask

X = jax.random.normal(jax.random.key(0), (64, 8))
Y = jnp.argmax(X[:, :4] @ jax.random.normal(jax.random.key(1), (4, 4)), axis=-1)


def init_fn(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (8, 16)) / jnp.sqrt(8.0),
        "b1": jnp.zeros(16),
        "w2": jax.random.normal(k2, (16, 4)) / 4.0,
        "b2": jnp.zeros(4),
    }


def loss_fn(p):
    h = jax.nn.relu(X @ p["w1"] + p["b1"][None, :])
    logits = h @ p["w2"] + p["b2"][None, :]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), Y[:, None], axis=1))


def accuracy(p):
    h = jax.nn.relu(X @ p["w1"] + p["b1"][None, :])
    return jnp.mean(jnp.argmax(h @ p["w2"] + p["b2"][None, :], axis=-1) == Y)


def sgd_train(params, mask, key, plan):
    """Masked full-batch SGD, lr 0.5·lr_scale, evaluated after every step; a pure function."""
    del key
    p, traj, losses, accs = params, [], [], []
    for _ in range(plan.end_step - plan.start_step):
        g = jax.grad(loss_fn)(p)
        p = jax.tree.map(lambda w, gw, m: jnp.where(m, w - 0.5 * plan.lr_scale * gw, 0.0),
                         p, g, mask)
        traj.append(p)
        losses.append(loss_fn(p))
        accs.append(accuracy(p))
    captured = None
    if plan.capture_step is not None:
        captured = traj[plan.capture_step - plan.start_step - 1]
    steps = jnp.arange(plan.start_step + 1, plan.end_step + 1)
    history = {"step": steps, "val_loss": jnp.stack(losses), "val_accuracy": jnp.stack(accs),
               "test_accuracy": jnp.stack(accs)}
    return lt.TrainOutput(p, captured, history, plan.lr_scale)


sgd_train_jit = jax.jit(sgd_train, static_argnames="plan")


def eval_fn(p):
    return {"val_accuracy": accuracy(p), "val_loss": loss_fn(p)}


class Recorder:
    """Wraps a train_fn and keeps every call's inputs (test-only side effect)."""

    def __init__(self, fn, fail_at=None):
        self.fn, self.calls, self.fail_at = fn, [], fail_at

    def __call__(self, params, mask, key, plan):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt("killed")
        self.calls.append((params, mask, key, plan))
        return self.fn(params, mask, key, plan)


P0 = init_fn(jax.random.key(3))


def run(config, train_fn=sgd_train_jit, **kw):
    rec = Recorder(train_fn)
    return lt.imp(P0, rec, eval_fn, config, key=jax.random.key(5), init_fn=init_fn, **kw), rec


# ------------------------------------------------------------------ counts and resets


@pytest.mark.parametrize("train_fn", [sgd_train, sgd_train_jit], ids=["eager", "jit"])
def test_layerwise_counts_are_exactly_one_minus_keep_power(train_fn):
    cfg = lt.LotteryConfig(rounds=4, rate=0.2, layer_rates={"w2": 0.1}, steps=3)
    result, rec = run(cfg, train_fn)
    tickets = [r for r in result.records if r["variant"] == "ticket"]
    assert [r["round"] for r in tickets] == [1, 2, 3, 4]
    for k, r in enumerate(tickets, start=1):
        w1 = round((1 - 0.8**k) * 128)
        w2 = round((1 - 0.9**k) * 64)
        assert r["layer_sparsity"] == {"w1": w1 / 128, "w2": w2 / 64}
        assert r["pruned"] == w1 + w2 and r["prunable"] == 192
    assert [round((1 - 0.8**k) * 128) for k in range(1, 5)] == [26, 46, 62, 76]
    masks = [c[1] for c in rec.calls]
    for before, after in itertools.pairwise(masks):  # masks only shrink
        assert not np.any(np.asarray(after["w1"]) & ~np.asarray(before["w1"]))
    assert result.stopped == "rounds" and result.best_round == 4


def test_global_scope_counts():
    cfg = lt.LotteryConfig(rounds=3, rate=0.3, scope="global", steps=2)
    result, _ = run(cfg)
    pruned = [r["pruned"] for r in result.records]
    assert pruned == [0] + [round((1 - 0.7**k) * 192) for k in (1, 2, 3)] == [0, 58, 98, 126]


def test_rewinding_restores_init_and_step_k():
    cfg = lt.LotteryConfig(rounds=2, rate=0.5, steps=6, reset="rewind", rewind_step=2)
    _, rec = run(cfg)
    theta_k = sgd_train_jit(P0, jax.tree.map(lambda _: jnp.array(True), P0), None,
                        lt.TrainPlan(0, 2)).params
    assert rec.calls[0][3] == lt.TrainPlan(0, 6, 1.0, 2)
    for params, mask, _, plan in rec.calls[1:]:
        assert plan == lt.TrainPlan(2, 6, 1.0, None)
        for name in ("w1", "w2"):
            m = np.asarray(mask[name])
            np.testing.assert_array_equal(np.asarray(params[name])[m], np.asarray(theta_k[name])[m])
            assert np.all(np.asarray(params[name])[~m] == 0.0)
            assert (~m).sum() > 0
        chex.assert_trees_all_equal(params["b1"], theta_k["b1"])  # biases are not pruned

    _, rec0 = run(lt.LotteryConfig(rounds=2, rate=0.5, steps=6))
    for params, mask, _, plan in rec0.calls[1:]:
        assert plan == lt.TrainPlan(0, 6, 1.0, None)
        chex.assert_trees_all_equal(params, apply_mask(P0, mask))


def test_lr_rewinding_and_finetuning_start_from_trained_weights():
    for reset, scale in (("lr_rewind", 1.0), ("finetune", 0.25)):
        cfg = lt.LotteryConfig(rounds=2, rate=0.5, steps=4, reset=reset, rewind_step=1,
                               finetune_lr_scale=0.25)
        _, rec = run(cfg)
        for i in (1, 2):
            params, mask, _, plan = rec.calls[i]
            assert plan == lt.TrainPlan(1, 4, scale, None)
            prev = sgd_train_jit(*rec.calls[i - 1]).params
            chex.assert_trees_all_equal(params, apply_mask(prev, mask))


def test_controls_use_the_tickets_mask_and_counts():
    cfg = lt.LotteryConfig(rounds=2, rate=0.4, steps=3,
                           controls=("reinit", "random_mask", "one_shot"))
    result, rec = run(cfg)
    calls = rec.calls[1:]  # per round: ticket, reinit, random_mask, one_shot
    assert len(calls) == 8
    dense_trained = sgd_train_jit(*rec.calls[0]).params
    for r in range(2):
        ticket, reinit, random_mask, one_shot = calls[4 * r: 4 * r + 4]
        chex.assert_trees_all_equal(reinit[1], ticket[1])  # same mask
        fresh = init_fn(jax.random.fold_in(jax.random.fold_in(
            jax.random.fold_in(jax.random.key(5), r + 1), 1), 1))
        chex.assert_trees_all_equal(reinit[0], apply_mask(fresh, ticket[1]))
        assert not np.array_equal(np.asarray(reinit[0]["w1"]), np.asarray(ticket[0]["w1"]))
        for other in (random_mask, one_shot):
            for name, n in (("w1", 128), ("w2", 64)):
                assert int(np.sum(~np.asarray(other[1][name]))) == round((1 - 0.6 ** (r + 1)) * n)
            chex.assert_trees_all_equal(other[0], apply_mask(P0, other[1]))
        assert not np.array_equal(np.asarray(random_mask[1]["w1"]), np.asarray(ticket[1]["w1"]))
        # one-shot = magnitude of the dense trained weights, straight to the ticket's counts
        w = np.abs(np.asarray(dense_trained["w1"])).ravel()
        kept = np.asarray(one_shot[1]["w1"]).ravel()
        assert w[kept].min() >= w[~kept].max()
    variants = [r["variant"] for r in result.records]
    assert variants == ["dense"] + ["ticket", "reinit", "random_mask", "one_shot"] * 2


def test_history_statistics():
    cfg = lt.LotteryConfig(rounds=1, rate=0.5, steps=5)
    hist = {"step": np.array([[1, 2, 3, 4], [1, 2, 3, 4]]),
            "val_loss": np.array([[3.0, 1.0, 2.0, 0.5], [1.0, 0.2, 0.9, 0.9]]),
            "val_accuracy": np.array([[0.1, 0.5, 0.5, 0.4], [0.3, 0.2, 0.1, 0.3]]),
            "test_accuracy": np.array([[0.2, 0.6, 0.9, 0.3], [0.5, 0.7, 0.1, 0.4]])}

    def train_fn(p, m, k, plan):
        return lt.TrainOutput(p, None, hist)

    r = lt.imp(P0, train_fn, eval_fn, cfg, key=jax.random.key(0)).records[1]
    assert r["early_stop_step_per_seed"] == [4.0, 2.0]
    assert r["max_test_accuracy_per_seed"] == [0.9, 0.7]
    assert r["val_selected_test_accuracy_per_seed"] == [0.6, 0.5]  # first argmax on ties
    assert r["val_selected_test_accuracy"] == pytest.approx(0.55)


# ------------------------------------------------------------------ stopping, adaptive, search


def scripted_eval(values):
    """Scripted accuracies; the first also answers imp's check of eval_fn on θ₀."""
    it = iter([values[0], *values])

    def fn(p):
        return {"val_accuracy": next(it)}

    return fn


def identity_train(p, m, k, plan):
    return lt.TrainOutput(p, None, {})


def test_stop_when_accuracy_falls_more_than_epsilon():
    cfg = lt.LotteryConfig(rounds=10, rate=0.5, epsilon=0.01)
    res = lt.imp(P0, identity_train, scripted_eval([0.90, 0.91, 0.895, 0.889, 0.95]), cfg,
                 key=jax.random.key(0))
    assert [r["round"] for r in res.records] == [0, 1, 2, 3]
    assert [r["accepted"] for r in res.records] == [True, True, True, False]
    assert res.stopped == "epsilon" and res.best_round == 2
    assert res.records[2]["pruned"] == round(0.75 * 128) + round(0.75 * 64)


def test_adaptive_rate_backtracks_and_search_finds_the_limit():
    adaptive = lt.AdaptiveRate(grow=2.0, shrink=0.5, hold=0.0, min_rate=0.1, max_rate=0.8)
    cfg = lt.LotteryConfig(rounds=10, rate=0.2, epsilon=0.01, adaptive=adaptive)
    # round 1 holds (rate .2 → .4), round 2 drops .005 (.4 → .2), round 3 breaks ε: rejected,
    # retried from round 2's mask at .1; round 4 breaks again and .1·.5 < min_rate: stop.
    values = [0.90, 0.90, 0.895, 0.85, 0.80]
    res = lt.imp(P0, identity_train, scripted_eval(values), cfg, key=jax.random.key(0))
    tickets = [r for r in res.records if r["variant"] == "ticket"]
    assert [r["rate"] for r in tickets] == [0.2, 0.4, 0.2, 0.1]
    assert [r["accepted"] for r in tickets] == [True, True, False, False]
    s2 = lt.cumulative_sparsity([0.2, 0.4])
    assert tickets[1]["pruned"] == round(s2 * 128) + round(s2 * 64)
    s_retry = lt.cumulative_sparsity([0.2, 0.4, 0.1])
    assert tickets[3]["pruned"] == round(s_retry * 128) + round(s_retry * 64)
    assert res.stopped == "min_rate" and res.best_round == 2
    assert int(np.sum(~np.asarray(res.mask["w1"]))) == round(s2 * 128)

    sparsity, res2 = lt.search_sparsity(P0, identity_train, scripted_eval(values), epsilon=0.01,
                                        key=jax.random.key(0), adaptive=adaptive, max_rounds=10)
    assert sparsity == tickets[1]["sparsity"] and res2.records == res.records


# ------------------------------------------------------------------ resume, seeds, errors


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    cfg = lt.LotteryConfig(rounds=2, rate=0.3, steps=4, reset="rewind", rewind_step=1,
                           controls=("random_mask",))
    full, _ = run(cfg)
    killer = Recorder(sgd_train_jit, fail_at=3)  # dies in round 2 (after dense + 2 calls of r1)
    with pytest.raises(KeyboardInterrupt):
        lt.imp(P0, killer, eval_fn, cfg, key=jax.random.key(5), checkpoint_dir=tmp_path / "b")
    resumed_rec = Recorder(sgd_train_jit)
    resumed = lt.imp(P0, resumed_rec, eval_fn, cfg, key=jax.random.key(5),
                     checkpoint_dir=tmp_path / "b")
    assert len(resumed_rec.calls) == 2  # round 2 only: ticket + control
    assert json.dumps(resumed.records) == json.dumps(full.records)
    chex.assert_trees_all_equal(resumed.params, full.params)
    chex.assert_trees_all_equal(resumed.mask, full.mask)
    # a finished run resumes to the same result without training
    again = Recorder(sgd_train_jit)
    lt.imp(P0, again, eval_fn, cfg, key=jax.random.key(5), checkpoint_dir=tmp_path / "b")
    assert again.calls == []
    other = lt.LotteryConfig(rounds=3, rate=0.2, steps=4)
    with pytest.raises(ValueError, match="another config"):
        lt.imp(P0, sgd_train_jit, eval_fn, other, key=jax.random.key(5),
               checkpoint_dir=tmp_path / "b")


def test_vmapped_seeds_match_single_seed_runs():
    keys = jax.random.split(jax.random.key(9), 2)
    p0 = jax.vmap(init_fn)(keys)
    cfg = lt.LotteryConfig(rounds=1, rate=0.5, steps=3, controls=("random_mask",))
    batched = lt.imp(p0, jax.vmap(sgd_train_jit, in_axes=(0, 0, 0, None)),
                     jax.jit(jax.vmap(eval_fn)), dataclasses_replace(cfg, seed_axis=True), key=keys)
    for i in range(2):
        def seed(tree, i=i):
            return jax.tree.map(lambda x: x[i], tree)

        single = lt.imp(seed(p0), sgd_train_jit, jax.jit(eval_fn), cfg, key=keys[i])
        chex.assert_trees_all_equal(seed(batched.mask), single.mask)
        chex.assert_trees_all_close(seed(batched.params), single.params, atol=1e-5)
        for rb, rs in zip(batched.records, single.records, strict=True):
            assert rb["pruned"] == rs["pruned"]
            assert rb["val_accuracy_per_seed"][i] == pytest.approx(rs["val_accuracy"], abs=1e-6)


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="rate must be in"):
        lt.LotteryConfig(rounds=1, rate=1.2)
    with pytest.raises(ValueError, match="reset must be one of"):
        lt.LotteryConfig(rounds=1, reset="magic")
    with pytest.raises(ValueError, match="needs rewind_step > 0"):
        lt.LotteryConfig(rounds=1, reset="rewind", steps=5)
    with pytest.raises(ValueError, match="controls"):
        lt.LotteryConfig(rounds=1, controls=("ticket",))
    with pytest.raises(ValueError, match="layer_rates.*'w2'.*0.1.*must be in|layer_rates\\['w2'\\]"):
        lt.LotteryConfig(rounds=1, layer_rates={"w2": 1.1})
    with pytest.raises(ValueError, match="'conv' matches no prunable layer"):
        lt.imp(P0, identity_train, eval_fn, lt.LotteryConfig(rounds=1, layer_rates={"conv": 0.1}),
               key=jax.random.key(0))
    with pytest.raises(ValueError, match="TrainOutput.captured"):
        lt.imp(P0, identity_train, eval_fn,
               lt.LotteryConfig(rounds=1, reset="rewind", rewind_step=1, steps=3),
               key=jax.random.key(0))
    with pytest.raises(ValueError, match="'accuracy'"):
        lt.imp(P0, identity_train, eval_fn, lt.LotteryConfig(rounds=1, metric="accuracy"),
               key=jax.random.key(0))
    with pytest.raises(ValueError, match="init_fn"):
        lt.imp(P0, identity_train, eval_fn, lt.LotteryConfig(rounds=1, controls=("reinit",)),
               key=jax.random.key(0))


# ------------------------------------------------------------------ driver ergonomics


def test_quiet_by_default_progress_lines_and_on_round(capsys):
    cfg = lt.LotteryConfig(rounds=2, rate=0.5, controls=("random_mask",))
    seen = []
    res = lt.imp(P0, identity_train, eval_fn, cfg, key=jax.random.key(0), on_round=seen.append)
    assert capsys.readouterr().out == ""  # a library call prints nothing
    assert [[r["variant"] for r in recs] for recs in seen] == [
        ["dense"], ["ticket", "random_mask"], ["ticket", "random_mask"]]
    assert [r for recs in seen for r in recs] == res.records
    lt.imp(P0, identity_train, eval_fn, cfg, key=jax.random.key(0), progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("imp round 0/2 dense: sparsity 0.00%")
    assert lines[2].startswith("imp round 2/2 ticket: sparsity 75.00% (144 of 192 pruned), "
                               "val_accuracy ")
    assert "(dense " in lines[2] and "; random_mask " in lines[2]
    with pytest.raises(TypeError, match="on_round must be callable"):
        lt.imp(P0, identity_train, eval_fn, cfg, key=jax.random.key(0), on_round=1)


def test_final_fractions_give_per_round_rates_and_exact_final_counts():
    """Han et al. give final per-layer sparsities: no hand conversion to 1 − k^(1/R)."""
    cfg = lt.LotteryConfig(rounds=3, final={"w1": 0.9, "w2": 0.5})  # no rate needed
    res = lt.imp(P0, identity_train, eval_fn, cfg, key=jax.random.key(0))
    tickets = [r for r in res.records if r["variant"] == "ticket"]
    for r, rec in enumerate(tickets, start=1):
        assert rec["layer_sparsity"]["w1"] == round((1 - 0.1 ** (r / 3)) * 128) / 128
        assert rec["layer_sparsity"]["w2"] == round((1 - 0.5 ** (r / 3)) * 64) / 64
    assert tickets[-1]["pruned"] == round(0.9 * 128) + round(0.5 * 64) == 147
    # the same run from the per-round rates by hand
    rates = {"w1": 1 - 0.1 ** (1 / 3), "w2": 1 - 0.5 ** (1 / 3)}
    hand = lt.imp(P0, identity_train, eval_fn, lt.LotteryConfig(rounds=3, layer_rates=rates),
                  key=jax.random.key(0))
    assert [r["pruned"] for r in hand.records] == [r["pruned"] for r in res.records]
    one = lt.imp(P0, identity_train, eval_fn,
                 lt.LotteryConfig(rounds=2, final=0.75, scope="global"), key=jax.random.key(0))
    assert [r["pruned"] for r in one.records] == [0, round(0.5 * 192), 144]
    with pytest.raises(ValueError, match=r"no rate for the prunable layers \['w2'\]"):
        lt.imp(P0, identity_train, eval_fn, lt.LotteryConfig(rounds=1, final={"w1": 0.5}),
               key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"final\['w1'\] must be in \[0, 1\)"):
        lt.LotteryConfig(rounds=1, final={"w1": 1.0})
    with pytest.raises(ValueError, match="cannot be adaptive"):
        lt.LotteryConfig(rounds=1, final=0.5, adaptive=lt.AdaptiveRate())
    with pytest.raises(ValueError, match="key 'conv' matches no prunable layer"):
        lt.imp(P0, identity_train, eval_fn, lt.LotteryConfig(rounds=1, final={"conv": 0.5}),
               key=jax.random.key(0))


def test_a_train_fn_ignoring_lr_scale_is_refused():
    cfg = lt.LotteryConfig(rounds=1, reset="finetune", finetune_lr_scale=0.1, steps=2)
    with pytest.raises(ValueError, match=r"plan.lr_scale=0.1 .*returned TrainOutput.lr_scale=None"):
        lt.imp(P0, identity_train, eval_fn, cfg, key=jax.random.key(0))

    def honest(p, m, k, plan):
        return lt.TrainOutput(p, None, {}, lr_scale=plan.lr_scale)

    res = lt.imp(P0, honest, eval_fn, cfg, key=jax.random.key(0))
    assert res.records[1]["pruned"] == round(0.2 * 128) + round(0.2 * 64)


def test_selection_metric_named_once_and_checked_before_training():
    test_only = lambda p: {"test_accuracy": accuracy(p)}  # noqa: E731
    rec = Recorder(identity_train)
    res = lt.imp(P0, rec, test_only, lt.LotteryConfig(rounds=1, epsilon=0.5),
                 key=jax.random.key(0))
    assert res.metric == "test_accuracy" and len(rec.calls) == 2
    both = lambda p: {"test_accuracy": accuracy(p), "test_loss": loss_fn(p)}  # noqa: E731
    for cfg, pattern in [
        (lt.LotteryConfig(rounds=1), r"name the one to select rounds on"),
        (lt.LotteryConfig(rounds=1, metric="val_accuracy"), r"not among .*\['test_accuracy'"),
    ]:
        rec = Recorder(identity_train)
        with pytest.raises(ValueError, match=pattern):
            lt.imp(P0, rec, both, cfg, key=jax.random.key(0))
        assert rec.calls == []  # nothing trained
    with pytest.raises(ValueError, match="looks like a loss"):
        lt.LotteryConfig(rounds=1, metric="val_loss")
    with pytest.raises(ValueError, match="must be a number"):
        lt.imp(P0, identity_train, lambda p: {"val_accuracy": "high"}, lt.LotteryConfig(rounds=1),
               key=jax.random.key(0))
    # a loss, minimised: the run stops when it rises more than epsilon above dense
    losses = iter([1.0, 1.0, 1.05, 1.3])
    cfg = lt.LotteryConfig(rounds=5, rate=0.5, metric="val_loss", maximize=False, epsilon=0.1)
    res = lt.imp(P0, identity_train, lambda p: {"val_loss": next(losses)}, cfg,
                 key=jax.random.key(0))
    assert [r["accepted"] for r in res.records] == [True, True, False]
    assert res.stopped == "epsilon" and res.best_round == 1
