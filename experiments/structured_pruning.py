"""Structured (filter / neuron) pruning: criteria, allocation, one-shot vs iterative, oracle ρ.

Train a CNN densely (``seeds`` seeds, vmapped), then remove whole output units
(Conv filters, Dense neurons; ``sparsejax.Neurons()`` masks) of every hidden
layer — never the classifier's outputs — and fine-tune with the removed units
pinned at zero (``sparsejax.keep_sparse``). Models: LeNet-5 (Caffe) on
MNIST-10k (``conv1``, ``conv2``, ``fc1`` pruned) and the MNIST-1D CNN
(``conv1``–``conv3`` pruned).

Methods (``s`` = the target in ``sparsities``):

==================  ==============================================  ======================
method              what is removed                                 reference
==================  ==============================================  ======================
l1_layer / _global  lowest L1 filter norm, ``s`` of every layer /   Li et al. 2017
                    ``s`` of all units ranked together
taylor_layer / ...  lowest group Taylor ``(Σ g·w)²`` (mean over     Molchanov et al. 2019
                    ``score_batches`` mini-batches)
random_layer / ...  random units                                    control
..._global_l2       a global ranking of the unit scores divided by  Molchanov et al. 2017
                    their layer's L2 norm (``prune(normalize=
                    "l2")``): no layer collapse
sensitivity         L1 ranking inside each layer; per-layer         Li et al. 2017 (§4.2),
                    fractions from ``allocate_budget`` on the       BN-free
                    layer-sensitivity curves (validation accuracy)
                    so that the pruned layers lose ``s`` of their
                    FLOPs, each layer's drop ≤ ``max_drop``
==================  ==============================================  ======================

Schedules: ``one_shot`` (prune to ``s``, fine-tune ``finetune_epochs``) and
``iterative`` (``iterative_steps`` rounds: prune to ``s·j/k`` — scores, and for
``sensitivity`` the curves, recomputed on the current network — then fine-tune
``finetune_epochs / k`` epochs; the same total budget).

Reported per run: filters removed per layer, FLOPs reduction of the pruned
layers from the masks (ShrinkBench nonzero FLOPs, :func:`sparsejax.metrics.flops`),
FLOPs reduction of the whole network once physically shrunk (a removed unit
also removes the next layer's input channel), accuracy right after pruning and
after fine-tuning. Plus the Spearman rank correlation (per layer, mean over
seeds) of every criterion (L1, L2, group Taylor, mean activation, 1 − APoZ,
random) with the exact oracle loss change of removing each unit alone
(Molchanov et al. 2017), measured on the dense networks.

A thin wrapper of ``sparsejax structured`` (``sparsejax/runner/studies/structured.py``)::

    sparsejax structured --dataset mnist1d        # about 25 min on 2 busy CPU cores
    sparsejax structured --dataset mnist10k       # LeNet-5; a GPU is advised
    sparsejax structured --smoke                  # under a minute: CI-sized
"""

import sys

from sparsejax.runner.studies.structured import (  # noqa: F401 (the study's names)
    STUDY,
    Config,
    figures,
    main,
)

if __name__ == "__main__":
    main(sys.argv[1:])
