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
# # Learning sparsity: group lasso and sparse variational dropout
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sparsejax/sparsejax/blob/main/notebooks/03_sparsity_learning.ipynb)
#
# Instead of scoring and pruning a trained network, these methods make the training itself
# produce zeros:
#
# * **Group lasso** (Yuan & Lin 2006; Wen et al. 2016; Scardapane et al. 2017) adds
#   `λ · Σ_g √|g| · ‖w_g‖₂` over groups of weights, here the incoming weights and bias of
#   every hidden neuron. Its proximal step, `sparsejax.regularizers.proximal_group_lasso`
#   placed after Adam in an optax chain, sets whole groups to exactly zero, so the removed
#   neurons can be cut out of the model (`sparsejax.shrink.shrink`).
# * **Sparse variational dropout** (Molchanov, Ashukha & Vetrov 2017) learns a dropout
#   rate α for every weight; weights with `log α ≥ 3` are removed.
#   `sparsejax.variational` has the layers, the KL term, the warm start from a dense model
#   (`from_dense`) and the conversion into a plain model plus a mask (`to_plain`).
#
# Masks are plain bool arrays in a tree of their own, never `nnx.Param`: no optimizer
# mistakes them for weights. λ is chosen on validation data with a margin for its noise
# (`sparsejax.regularizers.select_lambda`).
#
# Both run on the scikit-learn digits with LeNet-300-100, in a few minutes on a CPU.
#
# **On a TPU runtime** (Colab: run `pip install -U "jax[tpu]"` in a cell first, then
# *Runtime → Restart session*, then run the notebook from the top) every cell runs
# unchanged on the TPU, through XLA only: sparsejax never chooses a Pallas/Triton kernel
# for a TPU, and nothing here asks for one. On the TPU: the training steps with the
# group-lasso proximal step and with variational dropout; `shrink` and the λ selection run
# on the host. That these paths lower for a TPU is checked in CI
# (`tests/test_tpu_export.py`); this notebook has not been run on TPU hardware.

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
STEPS = 300 if SMOKE else 3000             # training steps per model (batch 64)
LAMBDAS = (0.3,) if SMOKE else (0.01, 0.03, 0.1, 0.2, 0.3)
LAM = 0.3 if SMOKE else 0.1                # looked at in detail if no λ is selected
VD_STEPS = 30 if SMOKE else 6000
VD_WARMUP = 10 if SMOKE else 2000          # steps over which the KL weight goes 0 -> 1
print(f"SMOKE={SMOKE}: {STEPS} steps, λ in {LAMBDAS}, {VD_STEPS} sparse-VD steps")

# %%
import re

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import sparsejax as sj
from sparsejax.data import load_dataset
from sparsejax.metrics import compression_ratio
from sparsejax.models import LeNet300100
from sparsejax.regularizers import (
    group_norms,
    group_stats,
    groups_to_mask,
    proximal_group_lasso,
    select_lambda,
)
from sparsejax.shrink import shrink
from sparsejax.train import create_train_state, evaluate, make_train_step, train
from sparsejax.tree import named_leaves
from sparsejax.variational import (
    VDLeNet300100,
    from_dense,
    kl_penalty,
    kl_warmup,
    noisy_forward,
    to_plain,
)

print("jax", jax.__version__, "on", jax.devices()[0].platform)

data = load_dataset("digits")
x_all, y_all = data.x_train.reshape(len(data.x_train), -1), data.y_train
n_val = len(x_all) // 5  # the last 20 % of the training split: validation, for choosing λ
x_train, y_train, x_val, y_val = x_all[:-n_val], y_all[:-n_val], x_all[-n_val:], y_all[-n_val:]
x_test, y_test = data.x_test.reshape(len(data.x_test), -1), data.y_test
IN, CLASSES, LR = x_train.shape[1], data.num_classes, 1e-3
HIDDEN = r"layers/[01]/kernel"  # the two hidden layers: 300 + 100 neurons


def lenet(seed=0):
    return LeNet300100(in_features=IN, num_classes=CLASSES, rngs=nnx.Rngs(seed))


def correct(state, x, y):
    """Per-example correctness (bool[n]) of the state's model in evaluation mode."""
    model = state.model()
    model.eval()
    return np.asarray(jnp.argmax(model(x), axis=-1)) == y

# %% [markdown]
# ## Dense reference
#
# `sparsejax.train` is a small reference training loop (jitted steps, deterministic
# batches); the optimizer is any optax transformation.

# %%
state = create_train_state(lenet(), optax.adam(LR), key=0, plain_arrays=True)
state, _ = train(state, x_train, y_train, batch_size=64, seed=0, steps=STEPS, progress=False)
dense_acc = evaluate(state, x_test, y_test)["accuracy"]
dense_val_correct = correct(state, x_val, y_val)
dense_norms = group_norms(state.params, prunable=HIDDEN)
print(f"dense LeNet-300-100: test accuracy {dense_acc:.2%}")

# %% [markdown]
# ## Proximal group lasso: a λ sweep
#
# `optax.chain(optax.adam(lr), proximal_group_lasso(lr, λ, prunable=HIDDEN))`: Adam's step,
# then the proximal operator of the group lasso. A neuron whose group norm reaches zero is
# removed for good; `groups_to_mask` turns the zero groups into a structured mask
# (`(1, out)` per kernel, `(out,)` for its bias). The train states hold plain arrays
# (`plain_arrays=True`), the form the masks take too.

# %%
lasso = []
for lam in LAMBDAS:
    tx = optax.chain(optax.adam(LR), proximal_group_lasso(LR, lam, prunable=HIDDEN))
    gl_state = create_train_state(lenet(), tx, key=0, plain_arrays=True)
    gl_state, _ = train(gl_state, x_train, y_train, batch_size=64, seed=0, steps=STEPS,
                        progress=False)
    stats = group_stats(gl_state.params, prunable=HIDDEN)
    removed = sum(s.removed for s in stats) / sum(s.groups for s in stats)
    acc = evaluate(gl_state, x_test, y_test)["accuracy"]
    lasso.append({"lam": lam, "state": gl_state, "removed": removed, "accuracy": acc,
                  "val_correct": correct(gl_state, x_val, y_val)})
    print(f"λ={lam:<5g} test accuracy {acc:.2%}, hidden neurons removed {removed:.1%} ("
          + ", ".join(f"{s.path}: {s.removed}/{s.groups}" for s in stats) + ")")

# %% [markdown]
# ## Choosing λ on validation data, with a margin for its noise
#
# "The largest λ within 1 point of the dense validation accuracy" lets noise choose: on
# a few hundred validation images one image is a few tenths of a point, and the strongest
# λ that *looks* fine is often one that was lucky on this split. `select_lambda` asks for
# the loss to be within 1 point with a margin of `z` standard errors of the paired
# difference (both models scored on the same images): `drop + z·SE ≤ 1 pp`.

# %%
selection = select_lambda([r["lam"] for r in lasso], [r["val_correct"] for r in lasso],
                          dense_val_correct, tolerance=0.01, z=1.0)
for lam, drop, se, ok in zip(selection.lams, selection.drops, selection.standard_errors,
                             selection.accepted):
    print(f"λ={lam:<5g} validation loss {100 * drop:+.2f} ± {100 * se:.2f} pp"
          + ("  accepted" if ok else ""))
print(f"selected λ = {selection.lam} on {selection.num_examples} validation images")

# %% [markdown]
# The removed neurons are exact zeros, so cutting them out of the network changes nothing:
# `shrink` builds a smaller dense LeNet from the kept neurons of each layer, with the same
# outputs. We look at the selected λ (`LAM` if no λ passes).

# %%
best = next(r for r in lasso if r["lam"] == (LAM if selection.lam is None else selection.lam))
gl_params = best["state"].params
gl_mask = groups_to_mask(gl_params, prunable=HIDDEN)
print(sj.format_summary(sj.summary(gl_params, gl_mask)))
model = best["state"].model()
kept = {path: np.flatnonzero(np.ravel(m)).tolist()  # the kept neurons of each hidden layer
        for path, m in named_leaves(gl_mask) if re.search(HIDDEN, path)}
small = shrink(model, kept)
print(f"λ={best['lam']:g}: layer widths {model.features} -> {small.features}")
stats = group_stats(gl_params, prunable=HIDDEN)
assert small.features[1:3] == tuple(s.groups - s.removed for s in stats)
np.testing.assert_allclose(np.asarray(small(x_test)), np.asarray(model(x_test)),
                           rtol=1e-5, atol=1e-5)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].axhline(dense_acc, color="gray", ls="--", label="dense")
axes[0].plot([100 * r["removed"] for r in lasso], [r["accuracy"] for r in lasso], "o-",
             label="proximal group lasso")
for r in lasso:
    axes[0].annotate(f"λ={r['lam']:g}", (100 * r["removed"], r["accuracy"]),
                     textcoords="offset points", xytext=(4, 4))
axes[0].set(xlabel="% of hidden neurons removed", ylabel="test accuracy",
            title="group lasso on LeNet-300-100 (digits)")
axes[0].legend()
norms = np.concatenate([np.ravel(n) for n in jax.tree.leaves(group_norms(gl_params,
                                                                          prunable=HIDDEN))])
dense_all = np.concatenate([np.ravel(n) for n in jax.tree.leaves(dense_norms)])
bins = np.linspace(0.0, max(dense_all.max(), norms.max()), 40)
axes[1].hist(dense_all, bins=bins, alpha=0.6, label="dense")
axes[1].hist(norms, bins=bins, alpha=0.6, label=f"group lasso λ={best['lam']:g}")
axes[1].set(xlabel="‖w_g‖₂ of a hidden neuron (incoming weights + bias)", ylabel="neurons")
axes[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Sparse variational dropout
#
# `VDLeNet300100` has the parameter paths of `LeNet300100` plus a `log_sigma2` per weight,
# and nothing else: its noise comes from a key given to the call, `model(x, key=key)`, so
# `nnx.split(model, nnx.Param)` takes all of it. As in the paper, θ starts from the trained
# dense network: `from_dense` copies its weights and sets `log σ² = −10`. The ordinary
# train step with the noisy forward and the KL term as its penalty,
# `make_train_step(forward=noisy_forward, penalty=kl_penalty(N, kl_warmup(W)))`, minimises
# the negative ELBO per example, the KL weight rising linearly from 0 to 1 over `W` steps.
# `to_plain` converts the trained model into the plain LeNet's parameters plus a mask
# (`log α ≥ 3` removed) whose outputs equal the VD model's evaluation outputs.

# %%
vd_model = from_dense(VDLeNet300100(IN, CLASSES, rngs=nnx.Rngs(0)), state.model())
vd_state = create_train_state(vd_model, optax.adam(LR), key=0)
vd_step = make_train_step(forward=noisy_forward,
                          penalty=kl_penalty(x_train.shape[0], kl_warmup(VD_WARMUP)))
vd_state, history = train(vd_state, x_train, y_train, batch_size=64, seed=0, steps=VD_STEPS,
                          train_step=vd_step, log_every=max(VD_STEPS // 20, 1),
                          progress=False)

params, mask = to_plain(vd_state.model(), lenet())  # plain arrays, like the mask
plain = lenet()
nnx.update(plain, sj.apply_mask(params, mask))
vd_acc = evaluate(create_train_state(plain, optax.adam(LR), key=0), x_test, y_test)["accuracy"]
ratio = compression_ratio(params, mask)
# the plain model with the mask computes what the VD model computes in evaluation mode
assert vd_acc == evaluate(vd_state, x_test, y_test)["accuracy"]
print(sj.format_summary(sj.summary(params, mask)))
print(f"sparse VD: test accuracy {vd_acc:.2%} (dense {dense_acc:.2%}), "
      f"compression {ratio:.1f}x")

# %%
trained_vd = vd_state.model()
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
steps = [h["step"] for h in history["train"]]
axes[0].plot(steps, [h["data_loss"] for h in history["train"]], label="NLL (per example)")
axes[0].plot(steps, [h["kl"] / x_train.shape[0] for h in history["train"]],
             label="KL / N")
axes[0].set(xlabel="step", title="sparse VD training", yscale="log")
axes[0].legend()
for i, layer in enumerate(trained_vd.layers):
    axes[1].hist(np.ravel(np.asarray(layer.log_alpha())), bins=60, histtype="step",
                 label=f"layers/{i}")
axes[1].axvline(3.0, color="k", ls="--", label="threshold log α = 3")
axes[1].set(xlabel="log α", ylabel="weights", yscale="log",
            title=f"{ratio:.1f}x compression, test acc {vd_acc:.1%}")
axes[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Group lasso removes whole neurons, which `shrink` turns into a smaller dense network
# (at the default size, the selected λ = 0.1 keeps 51 + 39 of the 300 + 100 hidden neurons
# at the dense test accuracy). Sparse VD removes individual weights and compresses far more
# (about 64× here) but costs about 3 points on this tiny training set: the KL term is
# weighted by 1/N, and N is only 1,151; on MNIST-10k `experiments/sparsity_learning.py`
# gets about 41× within half a point after a short masked fine-tune
# (`results/sparsity_learning/`). Unstructured sparsity needs sparse kernels to run faster.
