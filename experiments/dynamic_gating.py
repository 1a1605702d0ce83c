"""Dynamic channel gating vs static filter pruning at equal compute.

One dense model is trained, then three ways of cutting its compute get the same
training budget (``finetune_steps`` steps from the dense weights):

==================  ==========================================================  =================
method              what                                                         reference
==================  ==========================================================  =================
static_l1           prune filters / units by L1 norm (``sj.prune(...,            Li et al. 2017
                    structure=sj.Neurons(), reduction="l1")``, kernel + bias),
                    fine-tune with ``sj.keep_sparse``; one run per density
fbs                 gated model (:class:`sparsejax.dynamic.GatedLeNet5` /        Gao et al. 2019
                    ``GatedMNIST1DCNN``), FBS saliency + k-WTA, L1 on the
                    saliency; ONE run serves every density
hard_concrete       gated model, input-dependent hard-concrete L0 gates, top-k   Louizos et al. 2018
                    on log α, expected-L0 penalty; ONE run serves every density
fbs_adaptive        the FBS model under the confidence cascade: density ladder   Bolukbasi et al. 2017
                    ``adaptive_densities``, escalate while max softmax <
                    threshold (one point per threshold; failed runs are paid)
==================  ==========================================================  =================

The gated models are trained with a random density per example,
``d ~ U(min_density, 1)`` (slimmable-style sampled widths, Yu et al. 2019), a
quarter of every batch pinned to ``min_density`` and a quarter to 1 (the
sandwich rule of Yu & Huang 2019: on MNIST-1D it raised FBS at d=0.25 from
57% to 70% test accuracy, seed 0, against plain uniform sampling), so one model
serves all densities at run time with no retraining. Training only at the
lowest density was not chosen: the model must also serve the high densities. Gated
layers: the convolutions and the hidden dense layer (LeNet-5: conv1, conv2,
fc1; MNIST-1D CNN: conv1–conv3); the classifier is never gated or pruned.
Static pruning removes exactly the ``k = floor(d·C + ½)`` channels per layer
that gating keeps active, so both sit at the same nominal width.

The gate predictors start from their layers' initialisation (``--gate-init
random``, the default) or at the static L1 filter ranking (``--gate-init
filters``: :func:`sparsejax.dynamic.init_gates_from_filters`, so at step 0 the
gated model is the statically pruned one). On MNIST-1D (2 seeds,
``results/dynamic_gating/mnist1d_gate_init_filters``) the ranking
start helped the hard-concrete models (shared model at d=0.25: 72.1% vs 60.2%;
per-density models at 0.5 / 0.75: 91.25% / 92.60% vs 90.95% / 92.10%) and not
the shared FBS model (62.5% / 85.9% vs 65.8% / 87.55% at 0.25 / 0.5); on
LeNet-5 / MNIST-10k (``mnist10k_gate_init_filters``) it lifted every gated
model (shared hard-concrete at 0.5: 98.03% vs 97.25%) to within 0.01–0.27% of
static at 0.5 and 0.75. Static pruning still wins at d=0.25 on both, and is
never beaten on LeNet-5.

Trained longer (``--dense-steps 8000 --finetune-steps 12000``, 8 seeds,
``mnist1d_long``; LeNet-5 ``--dense-steps 4500 --finetune-steps 3000``, 3 seeds,
``mnist10k_long``), every gated MNIST-1D model beats static at 0.75 (by
0.45–1.13% at equal MACs) and the per-density hard-concrete model at 0.5
(+0.37%), while static stays ahead at 0.25 (83.18% at 7.8% MACs vs 83.06% /
82.59% at 8.9% for the per-density hard-concrete / FBS models); on LeNet-5
static and the per-density gated models tie within 0.3%.

Compute is **effective MACs per example** (:func:`sparsejax.dynamic.effective_flops`):
``Σ macs_per_pair · a_in · a_out`` over the layers, with ``a`` the active (gated:
nonzero-gate) channels of each layer and its input — exactly what a physically
shrunk (static) or gathered (dynamic) network computes — plus, for gated models,
the predictors' ``a_in · C_out`` MACs. Accuracy is on the test split.

A thin wrapper of ``sparsejax dynamic`` (``sparsejax/runner/studies/dynamic.py``)::

    sparsejax dynamic                             # MNIST-1D CNN, about 2 min on 2 cores
    sparsejax dynamic --dataset mnist10k          # LeNet-5 on the shipped MNIST test split
    sparsejax dynamic --smoke                     # seconds: CI-sized
"""

import sys

from sparsejax.runner.studies.dynamic import (  # noqa: F401 (the study's names)
    STUDY,
    Config,
    figures,
    main,
)

if __name__ == "__main__":
    main(sys.argv[1:])
