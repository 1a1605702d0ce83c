# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lottery tickets: iterative magnitude pruning with weight rewinding
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sparsejax/sparsejax/blob/main/notebooks/02_lottery_tickets.ipynb)
#
# *Iterative magnitude pruning* (IMP) trains a network, prunes a fraction of its
# smallest-magnitude weights, **resets** the surviving weights and trains again, round
# after round. Frankle & Carbin (2019) reset to the initial weights θ₀ and found sparse
# "winning tickets" that train as well as the dense network; Frankle et al. (2020)
# showed that resetting to the weights θ_k after a few training steps (**rewinding**)
# is more robust. The test of a ticket is a control with the same mask and fresh
# random weights (**random reinitialisation**) or a random mask with the same per-layer
# sparsity.
#
# `sparsejax.lottery.imp` runs the rounds around *your* pure training function; here a
# jitted, `vmap`-ed `lax.scan` trains 3 seeds of LeNet-300-100 on the digits at once.
#
# **On a TPU runtime** (Colab: run `pip install -U "jax[tpu]"` in a cell first, then
# *Runtime → Restart session*, then run the notebook from the top) every cell runs
# unchanged on the TPU, through XLA only: sparsejax never chooses a Pallas/Triton kernel
# for a TPU, and nothing here asks for one. On the TPU: the `vmap`-ed `lax.scan` training
# of the 3 seeds and every round's magnitude pruning (`prune`, vmapped over the seeds).
# That these paths lower for a TPU is checked in CI (`tests/test_tpu_export.py`); this
# notebook has not been run on TPU hardware.

# %%
# Install sparsejax in Colab (skipped when it is already importable, e.g. in a checkout).
# Colab's preinstalled jax / flax may be older than sparsejax needs: pip upgrades them.
# If the import below then fails, use Runtime -> Restart session and run again.
REPO_URL = "https://github.com/sparsejax/sparsejax"  # <- your fork, if you use one
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("sparsejax") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           f"sparsejax[experiments] @ git+{REPO_URL}"])

# %%
# Size: the default runs in a few minutes on a CPU; SPARSEJAX_SMOKE=1 (CI) in seconds.
import os

SMOKE = os.environ.get("SPARSEJAX_SMOKE", "0") == "1"
SEEDS = 2 if SMOKE else 3        # trained in parallel with jax.vmap
ROUNDS = 2 if SMOKE else 7       # pruning rounds after the dense round 0
STEPS = 40 if SMOKE else 1500    # training steps per round (batch 64)
REWIND_STEP = 10 if SMOKE else 100
RATE = 0.5                       # fraction of the remaining weights pruned per round
print(f"SMOKE={SMOKE}: {SEEDS} seeds, {ROUNDS} rounds of {STEPS} steps, rewind to "
      f"step {REWIND_STEP}")

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import sparsejax as sj
from sparsejax import lottery
from sparsejax.data import load_dataset, stratified_split
from sparsejax.models import LeNet300100

print("jax", jax.__version__, "on", jax.devices()[0].platform)

# %% [markdown]
# ## Data: train / validation / test
#
# The pruning decisions never look at the test split: 200 training images are held out
# (stratified) for validation.

# %%
data = load_dataset("digits")
x_all = data.x_train.reshape(len(data.x_train), -1)
tr, va = stratified_split(data.y_train, 200, seed=0)
x_tr, y_tr = jnp.asarray(x_all[tr]), jnp.asarray(data.y_train[tr])
x_va, y_va = jnp.asarray(x_all[va]), jnp.asarray(data.y_train[va])
x_te = jnp.asarray(data.x_test.reshape(len(data.x_test), -1))
y_te = jnp.asarray(data.y_test)
print(f"train {x_tr.shape[0]}, validation {x_va.shape[0]}, test {x_te.shape[0]}")

# %% [markdown]
# ## The training function that `imp` drives
#
# `train_fn(params, mask, key, plan)` trains from `plan.start_step` to `plan.end_step`
# keeping the mask's zeros at zero (`sj.keep_sparse` around Adam) and returns the params
# after `plan.capture_step` steps: the rewinding point θ_k of the dense round. The batch
# of step `t` depends only on `t`, so a rewound run continues the dense run's data order.
# Every leaf carries a leading seed axis: the seeds train in one `vmap`.

# %%
def make_model(key):
    return LeNet300100(in_features=x_tr.shape[1], num_classes=data.num_classes,
                       rngs=nnx.Rngs(key))


graphdef = nnx.split(nnx.eval_shape(lambda: make_model(jax.random.key(0))), nnx.Param)[0]


@jax.jit
def init_fn(key):
    return nnx.split(make_model(key), nnx.Param)[1]


def logits_fn(params, x):
    return nnx.merge(graphdef, params)(x)


def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, x), y).mean()


def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(logits_fn(params, x), axis=-1) == y)


def train_one(params, mask, data_key, plan):
    tx = sj.keep_sparse(optax.adam(1e-3 * plan.lr_scale), mask)

    def step(carry, t):
        params, opt_state, captured = carry
        idx = jax.random.choice(jax.random.fold_in(data_key, t), x_tr.shape[0], (64,),
                                replace=False)
        grads = jax.grad(loss_fn)(params, x_tr[idx], y_tr[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if plan.capture_step is not None:
            captured = jax.tree.map(lambda new, old: jnp.where(t + 1 == plan.capture_step,
                                                               new, old), params, captured)
        return (params, opt_state, captured), None

    (params, _, captured), _ = jax.lax.scan(
        step, (params, tx.init(params), params), jnp.arange(plan.start_step, plan.end_step))
    return params, captured


data_keys = jax.random.split(jax.random.key(1), SEEDS)  # one data order per seed


@jax.jit(static_argnames="plan")
def train_fn(params, mask, key, plan):
    del key  # tickets and controls of a seed see the same batches
    params, captured = jax.vmap(train_one, in_axes=(0, 0, 0, None))(params, mask, data_keys,
                                                                     plan)
    return lottery.TrainOutput(params, captured if plan.capture_step is not None else None, {})


@jax.jit
def eval_fn(params):
    return jax.vmap(lambda p: {"val_accuracy": accuracy(p, x_va, y_va),
                               "test_accuracy": accuracy(p, x_te, y_te)})(params)


theta0 = jax.vmap(init_fn)(jax.random.split(jax.random.key(0), SEEDS))

# %% [markdown]
# ## Run IMP
#
# Each round prunes `RATE` of the remaining weights of every kernel (the small output
# layer at half that rate, as Frankle & Carbin do), by magnitude of the last round's
# trained weights, rewinds the survivors to θ_k and retrains. Beside each ticket,
# `imp` trains the two controls with the same training plan.

# %%
config = lottery.LotteryConfig(
    rounds=ROUNDS, rate=RATE, layer_rates={"layers/2/kernel": RATE / 2},
    reset="rewind", rewind_step=REWIND_STEP, steps=STEPS,
    controls=("reinit", "random_mask"), metric="val_accuracy", seed_axis=True,
)
result = lottery.imp(theta0, train_fn, eval_fn, config,
                     key=jax.random.split(jax.random.key(2), SEEDS), init_fn=init_fn)

print(f"{'round':>5} {'variant':>12} {'remaining':>10} {'test accuracy':>18}")
for r in result.records:
    per_seed = r["test_accuracy_per_seed"]
    print(f"{r['round']:>5} {r['variant']:>12} {r['weights_remaining']:>10.1%} "
          f"{np.mean(per_seed):>10.2%} ± {np.std(per_seed):.2%}")

# %% [markdown]
# The pruned counts are exact: the hidden kernels lose `round((1 − (1 − p)^r)·n)` weights
# after `r` rounds. The last ticket of seed 0:

# %%
ticket_mask = jax.tree.map(lambda m: m[0], result.mask)
ticket_params = jax.tree.map(lambda p: p[0], result.params)
print(sj.format_summary(sj.summary(ticket_params, ticket_mask)))
n_hidden = x_tr.shape[1] * 300
kept = int(np.sum(np.asarray(ticket_mask["layers"][0]["kernel"])))
assert n_hidden - kept == round(lottery.cumulative_sparsity([RATE] * ROUNDS) * n_hidden)

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
dense = result.records[0]
ax.axhline(dense["test_accuracy"], color="gray", ls="--", label="dense")
for variant, marker in (("ticket", "o"), ("reinit", "s"), ("random_mask", "^")):
    rows = [r for r in result.records if r["variant"] == variant]
    x = [100 * r["weights_remaining"] for r in rows]
    y = [np.mean(r["test_accuracy_per_seed"]) for r in rows]
    err = [np.std(r["test_accuracy_per_seed"]) for r in rows]
    label = {"ticket": f"ticket (rewind to step {REWIND_STEP})",
             "reinit": "same mask, random reinit", "random_mask": "random mask, rewound"}
    ax.errorbar(x, y, yerr=err, marker=marker, capsize=3, label=label[variant])
ax.set_xscale("log")
ax.set_xticks(x, [f"{v:.3g}" for v in x])  # the rounds' remaining percentages
ax.minorticks_off()
ax.invert_xaxis()
ax.set(xlabel="% of weights remaining (kernels)", ylabel="test accuracy",
       title=f"IMP on digits, LeNet-300-100, {SEEDS} seeds")
ax.legend()
plt.show()

# %% [markdown]
# At moderate sparsity every variant trains well (the digits are easy and LeNet-300-100
# is large for them); as fewer weights remain, the rewound tickets keep the dense accuracy
# longest, while the same masks with fresh weights and random masks fall behind —
# the lottery-ticket effect. `lottery.search_sparsity(..., epsilon=0.01)` finds the
# sparsest ticket within 1 point of dense with an adaptive pruning rate, and
# `imp(..., checkpoint_dir=...)` checkpoints every round and resumes a killed run.
