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
# # Sparse training from scratch: static masks, SET and RigL
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sparsejax/sparsejax/blob/main/notebooks/06_sparse_training.ipynb)
#
# Pruning starts from a dense network. **Sparse training** never has one: the network is
# sparse from the first step, and *dynamic* methods move its connections while it trains.
# This notebook trains LeNet-300-100 on the 8×8 digits, side by side:
#
# * **static**: a random mask with the Erdős–Rényi-Kernel layer distribution (ERK), fixed
#   (the "Static" baseline of Evci et al. 2020), `sj.transforms.static_sparse`;
# * **SET** (Mocanu et al. 2018): every `ΔT` steps, drop the fraction `ζ = 0.3` of each
#   layer's smallest active weights and regrow as many at random,
#   `sj.transforms.sparse_evolutionary`;
# * **RigL** (Evci et al. 2020): drop the smallest, grow where the *dense gradient* is
#   largest, the fraction decaying with a cosine from `α = 0.3`, updates stopping at 75 %
#   of training, `sj.transforms.rigl`.
#
# Each is one optax transformation around `optax.adam`: the mask, its PRNG key and the
# schedule live in the optimizer state, every layer keeps exactly its number of active
# weights, and a dropped or grown weight is exactly `0.0` with zeroed Adam moments.
# We then plot accuracy against sparsity and the number of connections each update moves.
#
# Everything runs on a CPU in a few minutes (a GPU or TPU runtime is faster, not needed).
#
# **On a TPU runtime** (Colab: run `pip install -U "jax[tpu]"` in a cell first, then
# *Runtime → Restart session*, then run the notebook from the top) every cell runs
# unchanged on the TPU, through XLA only: sparsejax never chooses a Pallas/Triton kernel
# for a TPU, and nothing here asks for one. On the TPU: static sparse training, SET, RigL
# and SNFS steps; their drop-and-grow selections sort on an accelerator. That these paths
# lower for a TPU is checked in CI (`tests/test_tpu_export.py`); this notebook has not
# been run on TPU hardware.

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
STEPS = 60 if SMOKE else 3000          # training steps of every run (batch 128)
EVERY = 10 if SMOKE else 100           # ΔT: steps between mask updates
SPARSITIES = (0.9,) if SMOKE else (0.8, 0.9, 0.95, 0.98)
print(f"SMOKE={SMOKE}: {STEPS} steps, an update every {EVERY}, sparsities {SPARSITIES}")

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import sparsejax as sj
from sparsejax.data import load_dataset
from sparsejax.models import LeNet300100

print("jax", jax.__version__, "on", jax.devices()[0].platform)

# %% [markdown]
# ## Data, model and a jitted training loop
#
# The loop is plain optax: `tx.update(grads, opt_state, params)` then
# `optax.apply_updates`, all the steps in one `lax.scan`. Besides the losses it returns,
# for every step, how many kernel weights the step's update switched off (the mask is in
# the optimizer state: `sj.current_mask(opt_state)`).

# %%
data = load_dataset("digits")
x_train = jnp.asarray(data.x_train.reshape(len(data.x_train), -1))
y_train = jnp.asarray(data.y_train)
x_test = jnp.asarray(data.x_test.reshape(len(data.x_test), -1))
y_test = jnp.asarray(data.y_test)
model = LeNet300100(in_features=x_train.shape[1], num_classes=data.num_classes,
                    rngs=nnx.Rngs(0))
graphdef, params0 = nnx.split(model, nnx.Param)
n_kernels = sum(p.size for p in jax.tree.leaves(params0) if p.ndim == 2)
print(f"{data.name}: train {x_train.shape}, test {x_test.shape}; {n_kernels:,} kernel weights")
BATCH = 128


def loss_fn(params, x, y):
    logits = nnx.merge(graphdef, params)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@jax.jit
def accuracy(params):
    logits = nnx.merge(graphdef, params)(x_test)
    return jnp.mean(jnp.argmax(logits, axis=-1) == y_test)


def kernel_masks(opt_state):
    return [m for m in jax.tree.leaves(sj.current_mask(opt_state)) if m.ndim == 2]


def make_train(tx):
    """A jitted ``(params, key) -> (params, opt_state, losses, moved)`` of ``STEPS`` steps."""
    n = x_train.shape[0]

    @jax.jit
    def train(params, key):
        opt_state = tx.init(params)
        params = sj.apply_mask(params, sj.current_mask(opt_state))  # sparse from step 0

        def step(carry, t):
            params, opt_state = carry
            idx = jax.random.choice(jax.random.fold_in(key, t), n, (BATCH,), replace=False)
            loss, grads = jax.value_and_grad(loss_fn)(params, x_train[idx], y_train[idx])
            updates, new_state = tx.update(grads, opt_state, params)
            moved = jnp.int32(0) + sum(jnp.sum(a & ~b) for a, b in zip(
                kernel_masks(opt_state), kernel_masks(new_state)))
            return (optax.apply_updates(params, updates), new_state), (loss, moved)

        (params, opt_state), (losses, moved) = jax.lax.scan(step, (params, opt_state),
                                                            jnp.arange(STEPS))
        return params, opt_state, losses, moved

    return train


dense, _, _, _ = make_train(sj.keep_sparse(optax.adam(1e-3)))(params0, jax.random.key(1))
dense_acc = float(accuracy(dense))
print(f"dense: test accuracy {dense_acc:.2%}")

# %% [markdown]
# ## Three sparse trainings at the same sparsity
#
# The three transforms take the overall sparsity of the kernels and a PRNG key: `init`
# draws the random ERK mask (small layers stay denser; exactly `round(s_l · n_l)` pruned
# weights in layer `l`). SET and RigL read their `drop_schedule` from the state;
# `sparsejax.train.make_train_loop()` would place their updates on the host.

# %%
def methods(sparsity, key):
    adam = optax.adam(1e-3)
    return {
        "static": sj.transforms.static_sparse(adam, sparsity, key=key),
        "SET": sj.transforms.sparse_evolutionary(adam, sparsity, key=key, total_steps=STEPS,
                                                 every=EVERY),
        "RigL": sj.transforms.rigl(adam, sparsity, key=key, total_steps=STEPS, every=EVERY),
    }


key = jax.random.key(7)
mask = sj.transforms.random_mask(params0, 0.9, key)
print(sj.format_summary(sj.summary(params0, mask)))
kept = sum(int(m.sum()) for m in jax.tree.leaves(mask) if m.ndim == 2)
print(f"ERK at 90%: {kept:,} of {n_kernels:,} kernel weights kept")

rigl = methods(0.9, key)["RigL"]
schedule = rigl.init(params0).schedule
print(f"RigL: updates at steps {sj.schedules.update_steps(schedule, STEPS).tolist()[:4]}... "
      f"until {schedule.last_update}, drop fraction {float(schedule(0)):.2f} -> "
      f"{float(schedule(schedule.last_update)):.2f}")

# %%
results = {name: [] for name in ("static", "SET", "RigL")}
moved_at_90 = {}
for s in SPARSITIES:
    for name, tx in methods(s, key).items():
        params, opt_state, losses, moved = make_train(tx)(params0, jax.random.key(1))
        masks = kernel_masks(opt_state)
        # exactly the initial ERK counts, and every inactive weight exactly 0.0
        initial = kernel_masks(tx.init(params0))
        assert [int(m.sum()) for m in masks] == [int(m.sum()) for m in initial]
        for p, m in zip([p for p in jax.tree.leaves(params) if p.ndim == 2], masks):
            assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
        results[name].append(float(accuracy(params)))
        if s == 0.9:
            moved_at_90[name] = np.asarray(moved)
        total_moved = int(np.sum(moved))
        print(f"{name:>6} at {s:.0%}: test accuracy {results[name][-1]:.2%}, "
              f"{total_moved:,} connections moved in {int(np.sum(moved > 0))} updates, "
              f"{sum(int(m.sum()) for m in masks):,} kept at the end")

# %% [markdown]
# SET moves the same number of connections at every update (30 % of the active weights);
# RigL's cosine decay moves fewer and fewer, and none after 75 % of training, so the
# network settles before the end. The static mask never changes.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].axhline(dense_acc, color="gray", ls="--", label="dense")
for name, marker in (("static", "o"), ("SET", "s"), ("RigL", "^")):
    axes[0].plot(SPARSITIES, results[name], marker + "-", label=name)
axes[0].set(xlabel="sparsity of the kernels", ylabel="test accuracy",
            title=f"LeNet-300-100 on digits, {STEPS} steps")
axes[0].legend()
for name, marker in (("SET", "s"), ("RigL", "^")):
    steps = np.flatnonzero(moved_at_90[name])
    axes[1].plot(steps, moved_at_90[name][steps], marker + "-", label=name)
axes[1].set(xlabel="step", ylabel="connections moved by the update",
            title="connections moved per update at 90 %")
axes[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# At the default size the dynamic methods beat the fixed random mask, more so the
# sparser the network; on this tiny data set the differences are small and seeds
# matter — `experiments/sparse_training.py` runs every method with several seeds on
# MNIST-10k and MNIST-1D (results in `results/sparse_training/`).
#
# Other transforms of the family: `sj.transforms.sparse_momentum` (SNFS: growth by
# gradient momentum, redistribution across layers) and `sj.transforms.straight_through`
# (dense weights trained through their N:M or top-k projection, SR-STE).
