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
# # sparsejax quickstart: one-shot and gradual magnitude pruning
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sparsejax/sparsejax/blob/main/notebooks/01_quickstart.ipynb)
#
# This notebook trains LeNet-300-100 on the 8×8 scikit-learn digits (embedded: no download),
# then
#
# 1. prunes it **one-shot** by weight magnitude (Han et al. 2015), layer by layer and
#    globally, and looks at the per-layer mask summary;
# 2. prunes it **gradually** inside an ordinary jitted optax training loop with
#    `sparsejax.pruning` and the polynomial schedule of Zhu & Gupta (2017);
# 3. plots test accuracy against sparsity for the three methods.
#
# Everything runs on a CPU in a few minutes (a GPU or TPU runtime is faster, not needed).
#
# **On a TPU runtime** (Colab: run `pip install -U "jax[tpu]"` in a cell first, then
# *Runtime → Restart session*, then run the notebook from the top) every cell runs
# unchanged on the TPU, through XLA only: sparsejax never chooses a Pallas/Triton kernel
# for a TPU, and nothing here asks for one. On the TPU: the one-shot `prune` (layer and
# global scope, one sort per selection instead of the CPU's counting passes) and the
# jitted train steps with `sparsejax.pruning`. That these paths lower for a TPU is checked
# in CI (`tests/test_tpu_export.py`); this notebook has not been run on TPU hardware.

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
DENSE_STEPS = 60 if SMOKE else 3000     # dense training steps (batch 128)
PRUNE_STEPS = 40 if SMOKE else 2000     # gradual pruning steps per target sparsity
SPARSITIES = (0.5, 0.9) if SMOKE else (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
print(f"SMOKE={SMOKE}: {DENSE_STEPS} dense steps, {PRUNE_STEPS} pruning steps, {SPARSITIES}")

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
# ## Data and model
#
# `load_dataset("digits")` returns 1,438 training and 359 test images of shape `(8, 8, 1)`,
# standardised with the training statistics. The model is a plain Flax NNX module; pruning
# works on its parameter pytree, `nnx.split(model, nnx.Param)`.

# %%
data = load_dataset("digits")
x_train = jnp.asarray(data.x_train.reshape(len(data.x_train), -1))
y_train = jnp.asarray(data.y_train)
x_test = jnp.asarray(data.x_test.reshape(len(data.x_test), -1))
y_test = jnp.asarray(data.y_test)
print(f"{data.name}: train {x_train.shape}, test {x_test.shape}, {data.num_classes} classes")

model = LeNet300100(in_features=x_train.shape[1], num_classes=data.num_classes,
                    rngs=nnx.Rngs(0))
graphdef, params0 = nnx.split(model, nnx.Param)
print(sj.format_summary(sj.summary(params0)))

# %% [markdown]
# ## A custom jitted training loop
#
# The loop is pure optax: `tx.update(grads, opt_state, params)` then `optax.apply_updates`.
# One compiled `lax.scan` runs all the steps. The same loop trains the dense model and,
# with `tx = sj.pruning(...)` or `sj.keep_sparse(...)`, the sparse ones: the mask lives
# in the optimizer state.

# %%
BATCH = 128


def logits_fn(params, x):
    return nnx.merge(graphdef, params)(x)


def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, x), y).mean()


@jax.jit
def accuracy(params):
    return jnp.mean(jnp.argmax(logits_fn(params, x_test), axis=-1) == y_test)


def make_train(tx, steps):
    """A jitted ``(params, key) -> (params, opt_state, losses)`` running ``steps`` steps."""
    n = x_train.shape[0]

    @jax.jit
    def train(params, key):
        def step(carry, t):
            params, opt_state = carry
            idx = jax.random.choice(jax.random.fold_in(key, t), n, (BATCH,), replace=False)
            loss, grads = jax.value_and_grad(loss_fn)(params, x_train[idx], y_train[idx])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, tx.init(params)),
                                                   jnp.arange(steps))
        return params, opt_state, losses

    return train


dense, _, losses = make_train(optax.adam(1e-3), DENSE_STEPS)(params0, jax.random.key(1))
dense_acc = float(accuracy(dense))
print(f"dense LeNet-300-100: final train loss {float(losses[-1]):.4f}, "
      f"test accuracy {dense_acc:.2%}")

# %% [markdown]
# ## One-shot magnitude pruning: layerwise vs global
#
# `sj.scores.magnitude` gives `|w|` for every parameter; `sj.prune(scores, s)` returns a
# boolean mask pytree that prunes exactly `round(s·n)` of the `n` weights of every kernel
# (`scope="layer"`) or of all kernels together (`scope="global"`). Biases are not prunable
# by default (`ndim < 2`). `sj.apply_mask` zeroes the pruned weights (`jnp.where`).

# %%
scores = sj.scores.magnitude(dense)
layerwise = sj.prune(scores, 0.9)
global_ = sj.prune(scores, 0.9, scope="global")

print("layerwise 90%:")
print(sj.format_summary(sj.summary(dense, layerwise)))
print("\nglobal 90%:")
print(sj.format_summary(sj.summary(dense, global_)))

n_kernels = sum(p.size for p in jax.tree.leaves(dense) if p.ndim == 2)
n_pruned = n_kernels - int(sj.count_kept(global_, dense, prunable=None))
assert n_pruned == round(0.9 * n_kernels), (n_pruned, n_kernels)
print(f"\nglobal: exactly {n_pruned:,} of {n_kernels:,} kernel weights pruned")

# %% [markdown]
# Global selection keeps more of the small output layer (its weights are larger), while
# the layerwise mask prunes 90 % of every kernel. Accuracy right after pruning, without
# any retraining:

# %%
one_shot = {"layerwise": [], "global": []}
for s in SPARSITIES:
    for scope, name in (("layer", "layerwise"), ("global", "global")):
        mask = sj.prune(scores, s, scope=scope)
        one_shot[name].append(float(accuracy(sj.apply_mask(dense, mask))))
    print(f"sparsity {s:.0%}: layerwise {one_shot['layerwise'][-1]:.2%}, "
          f"global {one_shot['global'][-1]:.2%}")

# %% [markdown]
# ## Gradual pruning in the training loop
#
# `sj.pruning(optax.adam(...), score=..., schedule=...)` is one optax transformation.
# On the schedule's update steps it re-selects the mask inside `lax.cond`; its updates
# put every pruned weight at exactly `0.0`. Starting from the dense weights, the
# polynomial schedule goes from 0 to the target sparsity over the first 75 % of the steps
# (an update every `PRUNE_STEPS // 20` steps), and the rest fine-tunes with the final mask.

# %%
every = max(PRUNE_STEPS // 20, 1)
end = every * ((3 * PRUNE_STEPS // 4) // every)


def gradual_tx(target):
    schedule = sj.schedules.polynomial(0.0, target, begin=0, end=end, every=every)
    return sj.pruning(optax.adam(1e-3), score=lambda p, g: sj.scores.magnitude(p),
                      schedule=schedule), schedule


gradual = []
for s in SPARSITIES:
    tx, schedule = gradual_tx(s)
    pruned, opt_state, _ = make_train(tx, PRUNE_STEPS)(dense, jax.random.key(2))
    mask = sj.current_mask(opt_state)
    # every pruned weight is exactly zero, and each kernel is at the target sparsity
    for p, m in zip(jax.tree.leaves(pruned), jax.tree.leaves(sj.broadcast_mask(mask, pruned))):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
    assert abs(float(sj.sparsity(mask, pruned)) - s) < 1e-3
    gradual.append(float(accuracy(pruned)))
    print(f"gradual to {s:.0%}: test accuracy {gradual[-1]:.2%}")

print(sj.format_summary(sj.summary(pruned, mask)))

# %%
steps = np.arange(PRUNE_STEPS)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].plot(steps, [float(schedule(t)) for t in steps])
axes[0].set(xlabel="step", ylabel="target sparsity",
            title=f"polynomial schedule (Zhu & Gupta 2017), final {SPARSITIES[-1]:.0%}")
axes[1].axhline(dense_acc, color="gray", ls="--", label="dense")
axes[1].plot(SPARSITIES, one_shot["layerwise"], "o-", label="one-shot, layerwise")
axes[1].plot(SPARSITIES, one_shot["global"], "s-", label="one-shot, global")
axes[1].plot(SPARSITIES, gradual, "^-", label="gradual (polynomial)")
axes[1].set(xlabel="sparsity of the kernels", ylabel="test accuracy",
            title="LeNet-300-100 on digits")
axes[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Without retraining, one-shot pruning holds up to moderate sparsity and then collapses;
# global selection degrades later than layerwise, because it leaves the small output
# layer denser. Gradual pruning inside the training loop stays near the dense accuracy
# far longer (at the default size: within about a point up to 95 % sparsity, where
# one-shot pruning has lost most of it). Next:
# `02_lottery_tickets` (iterative pruning and weight rewinding) and
# `03_sparsity_learning` (group lasso, sparse variational dropout).
