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
# # Post-training pruning of a language model: magnitude, Wanda, SparseGPT
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sparsejax/sparsejax/blob/main/notebooks/07_post_training.ipynb)
#
# Most pruning of trained transformers today is **one-shot**: a little calibration data,
# no retraining, layer by layer. `sparsejax.posttrain` has the three methods the papers
# compare, on the same core as everything else (`sj.prune`, `sj.NM`, masks):
#
# * **magnitude**: `|W|`, compared over each layer (the papers' baseline);
# * **Wanda** (Sun, Liu, Bair & Kolter, ICLR 2024): `|W_ij|·‖X_j‖₂`, the weight times the
#   norm of its input feature over the calibration tokens, compared within each output
#   unit; no weight update;
# * **SparseGPT** (Frantar & Alistarh, ICML 2023): the optimal-brain-surgeon update with
#   the layer Hessian `H = 2XXᵀ/n`, columns in lazy blocks of 128, the mask chosen per
#   block, and the kept weights *reconstructed* to make up for the pruned ones.
#
# All three prune every linear layer of every block **in order**: each block is pruned
# from the outputs of the already pruned blocks before it (`prune_sequential`), streaming
# the calibration batch block by block. This notebook trains a tiny byte-level GPT on the
# Python standard library's own source files (on every machine, nothing to download),
# then prunes it to 50 % and 70 % and to 2:4, and compares validation bits per byte and
# the per-layer output errors. It runs on a CPU in a few minutes.
#
# **On a TPU runtime** (Colab: run `pip install -U "jax[tpu]"` in a cell first, then
# *Runtime → Restart session*, then run the notebook from the top) every cell runs
# unchanged on the TPU, through XLA only: sparsejax never chooses a Pallas/Triton kernel
# for a TPU, and nothing here asks for one. On the TPU: the byte-level GPT's training and
# evaluation, the calibration statistics, magnitude, Wanda and SparseGPT (its Cholesky
# factor and block updates) per layer. That these paths lower for a TPU is checked in CI
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
# Size: the default trains for about a minute on a CPU; SPARSEJAX_SMOKE=1 (CI) in seconds.
import os

SMOKE = os.environ.get("SPARSEJAX_SMOKE", "0") == "1"
DIM, DEPTH, HEADS = (32, 2, 2) if SMOKE else (128, 4, 4)
SEQ = 64 if SMOKE else 128            # bytes per sequence
STEPS = 60 if SMOKE else 300          # AdamW steps of 16 sequences
CALIBRATION = 8 if SMOKE else 64      # calibration sequences (the papers: 128 x 2,048 tokens)
VALIDATION = 16 if SMOKE else 256     # validation sequences
MAX_FILES = 150 if SMOKE else 600     # standard-library files read
print(f"SMOKE={SMOKE}: decoder {DIM} wide, {DEPTH} blocks, {STEPS} steps; "
      f"{CALIBRATION} calibration sequences of {SEQ} bytes")

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import sparsejax as sj
from sparsejax import posttrain
from sparsejax.data import contiguous_windows, load_python_stdlib, random_windows
from sparsejax.models import DecoderLM, next_token_loss
from sparsejax.train import create_train_state, make_train_step

print("jax", jax.__version__, "on", jax.devices()[0].platform)

# %% [markdown]
# ## The corpus and a tiny decoder
#
# `load_python_stdlib` reads the `.py` files of the running Python's standard library and
# splits them **by file** into train / validation / calibration (a hash of each path
# decides), so the validation and calibration text never appears in training. Tokens are
# bytes (vocabulary 256); perplexity is per byte and `nll / ln 2` is bits per byte.

# %%
corpus = load_python_stdlib(max_files=MAX_FILES, validation_fraction=0.1,
                            calibration_fraction=0.1)
print(corpus)

model = DecoderLM(256, DIM, DEPTH, HEADS, max_len=SEQ, rngs=nnx.Rngs(0))
tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 20, STEPS, 3e-4),
                 b2=0.95, weight_decay=0.1)
state = create_train_state(model, tx, key=0, plain_arrays=True)
train_step = make_train_step(next_token_loss, metrics_fn=lambda logits, labels: {})

curve, t0 = [], time.perf_counter()
for t in range(STEPS):
    seqs = random_windows(corpus.train, 16, SEQ + 1, seed=t)
    state, metrics = train_step(state, (seqs[:, :-1], seqs[:, 1:]))
    curve.append(float(metrics["loss"]) / np.log(2))
print(f"trained {STEPS} steps in {time.perf_counter() - t0:.0f} s: "
      f"{np.mean(curve[-10:]):.3f} bits/byte on the last training batches")
dense = state.model()
pruned_params = sum(int(np.prod(getattr(dense.blocks[i], n).kernel.shape))
                    for i, n, _ in posttrain.linear_layers(dense))
print(f"{pruned_params:,} weights in the blocks' linear layers (qkv, proj, fc1, fc2)")

plt.figure(figsize=(6, 3.5))
plt.plot(np.arange(1, STEPS + 1), curve)
plt.xlabel("step")
plt.ylabel("training bits per byte")
plt.title("a byte-level decoder on the Python standard library")
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## One layer: what each method does
#
# The calibration inputs of a layer give Wanda its feature norms and SparseGPT its
# Hessian. Here we take block 0's `fc1` and its inputs, prune it to 50 % three ways and
# measure the relative output error `‖XW − XŴ‖² / ‖XW‖²` on those inputs: SparseGPT
# minimises exactly this, by updating the weights it keeps.

# %%
calib = random_windows(corpus.calibration, CALIBRATION, SEQ, seed=0)
x = dense.embed_tokens(jnp.asarray(calib))
inputs = dense.blocks[0].linear_inputs(x)["fc1"]            # (sequences, SEQ, DIM)
stats = posttrain.input_statistics(inputs)
kernel = dense.blocks[0].fc1.kernel[...]                     # (in, out) = (DIM, 4·DIM)
one_layer = {
    "magnitude": jnp.where(posttrain.magnitude_mask(kernel, 0.5), kernel, 0.0),
    "Wanda": jnp.where(posttrain.wanda_mask(kernel, posttrain.input_norms(stats), 0.5),
                       kernel, 0.0),
    "SparseGPT": posttrain.sparsegpt(kernel, posttrain.hessian(stats), 0.5).kernel,
}
for name, new in one_layer.items():
    err = float(posttrain.reconstruction_error(kernel, new, stats))
    print(f"block 0 fc1 at 50%, {name:9s}: {int(jnp.sum(new == 0)):,} of {kernel.size:,} "
          f"weights zero, relative output error {err:.4f}")

# %% [markdown]
# ## The whole model, block by block
#
# `prune_sequential(model, calibration_tokens, method, sparsity)` returns a pruned copy,
# its mask and a per-layer report. N:M patterns (`sj.NM(2, 4)`: 2 of every 4 consecutive
# inputs of each output unit kept, the pattern of sparse tensor cores) replace the
# sparsity. Validation: consecutive windows of the validation files.

# %%
valid = contiguous_windows(corpus.validation, SEQ + 1, VALIDATION)
methods = {"magnitude": posttrain.Magnitude(), "wanda": posttrain.Wanda(),
           "sparsegpt": posttrain.SparseGPT()}
targets = [("50%", 0.5, sj.Unstructured()), ("70%", 0.7, sj.Unstructured()),
           ("2:4", None, sj.NM(2, 4))]
base = posttrain.evaluate_language_model(dense, valid)
rows = [("dense", "—", 0.0, base.bits_per_token, base.perplexity)]
reports = {}
for label, sparsity, structure in targets:
    for name, method in methods.items():
        out = posttrain.prune_sequential(dense, calib, method, sparsity, structure=structure,
                                         batch_size=4)
        ev = posttrain.evaluate_language_model(out.model, valid)
        rows.append((name, label, out.sparsity, ev.bits_per_token, ev.perplexity))
        reports[name, label] = out
print(f"validation: {len(valid) * SEQ:,} bytes\n")
print("| method    | target | sparsity | bits/byte | perplexity/byte |")
print("|-----------|--------|----------|-----------|-----------------|")
for name, label, s, bpb, ppl in rows:
    print(f"| {name:9s} | {label:6s} | {s:.4f}   | {bpb:.3f}     | {ppl:15.3f} |")

# %%
mask_24 = reports["sparsegpt", "2:4"].mask
kernels = [m for p, m in sj.tree.named_leaves(mask_24) if p.endswith("kernel") and np.ndim(m)]
groups_ok = all(bool(jnp.all(k.reshape(k.shape[0] // 4, 4, k.shape[1]).sum(axis=1) == 2))
                for k in kernels)
print(f"2:4 check: every run of 4 inputs of every output unit keeps exactly 2 weights in "
      f"all {len(kernels)} pruned kernels: {groups_ok}")
kept = int(sum(int(k.sum()) for k in kernels))
print(f"SparseGPT 2:4: {pruned_params - kept:,} of {pruned_params:,} weights pruned")

# %% [markdown]
# ## Per-layer errors
#
# Each layer's relative output error on the calibration inputs it was pruned from (its
# inputs already come from the pruned layers before it). SparseGPT's reconstruction keeps
# it far below the two selection-only methods; errors grow where inputs are outliers.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, label in zip(axes, ("50%", "2:4"), strict=True):
    for name in methods:
        layers = reports[name, label].layers
        ax.semilogy([r.error for r in layers], marker=".", label=name)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([r.path.removeprefix("blocks/").removesuffix("/kernel")
                        for r in layers], rotation=90, fontsize=7)
    ax.set_title(f"{label}: ‖XW − XŴ‖² / ‖XW‖² per layer")
    ax.grid(alpha=0.3)
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Non-uniform sparsity: OWL
#
# OWL (Yin et al., ICML 2024) prunes blocks with many *outliers* (Wanda scores above 5×
# their mean) less and the others more, keeping the overall sparsity: block sparsities are
# spread over `1 − s ± λ` (λ = 0.08 in the paper) and passed to `prune_sequential` as a
# per-layer map.

# %%
owl = posttrain.owl_layer_sparsities(dense, calib, 0.7, lam=0.08, batch_size=4, log=print)
per_block = [owl[f"blocks/{i}/qkv/kernel"] for i in range(DEPTH)]
out = posttrain.prune_sequential(dense, calib, posttrain.Wanda(), 0.7, layer_sparsity=owl,
                                 batch_size=4, errors=False)
ev = posttrain.evaluate_language_model(out.model, valid)
print("OWL block sparsities at 70%: " + ", ".join(f"{s:.3f}" for s in per_block)
      + f" (mean {np.mean(per_block):.3f})")
print(f"Wanda + OWL 70%: sparsity {out.sparsity:.4f}, {ev.bits_per_token:.3f} bits/byte "
      f"(uniform Wanda 70%: {rows[5][3]:.3f})")

# %% [markdown]
# The study script `experiments/posttrain.py` runs all of this at scale on a GPU (a 25M
# parameter decoder, 128 calibration sequences, two calibration seeds, 50/60/70 %, 2:4 and
# 4:8, and the time to prune a 100M-parameter model): see `docs/results.md`.
