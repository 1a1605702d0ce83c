"""The main job: a ShrinkBench-style comparison of pruning methods on real data.

Train LeNet-300-100 densely (``seeds`` seeds, vmapped), prune each trained model
to compression ratios 2…64 with every method below, fine-tune with the pruned
weights pinned at zero (``sparsejax.keep_sparse``), and report test accuracy,
macro precision/recall/F1, measured compression and theoretical speedup
(ShrinkBench definitions, Blalock et al. 2020) as mean ± std over seeds.

Methods (one-shot unless noted):

==================  ===========================  =======  ==============================
method              score                        scope    reference
==================  ===========================  =======  ==============================
global_magnitude    ``|w|``                      global   Han et al. 2015
layer_magnitude     ``|w|``                      layer    Han et al. 2015
global_gradient     ``|g|``                      global   ShrinkBench
layer_gradient      ``|g|``                      layer    ShrinkBench
global_taylor       ``|w·g|``                    global   Molchanov et al. 2017
global_obd          ``½·h·w²`` (Hutchinson h)    global   LeCun et al. 1990
random              ``U[0, 1)``                  layer    control
gradual_magnitude   ``|w|``, polynomial schedule layer    Zhu & Gupta 2017
==================  ===========================  =======  ==============================

``gradual_magnitude`` prunes during the fine-tuning budget instead of before it
(sparsity rises as ``s_f(1 − (1 − t/T)³)`` over the first two thirds of the
steps, mask updated every ``gradual_every`` steps), so every method gets the same
number of training steps after the dense phase.

Compression counts **all** parameters, biases included (ShrinkBench): the
weights (every kernel, the classifier too) are pruned to the sparsity that
makes ``total / nonzero`` equal the target.

Every fine-tuning run of every one-shot method, compression and seed is
trained in ONE vmapped program (one compilation), so the whole job stays
within a few minutes on a 2-core CPU.

This script is a thin wrapper of ``sparsejax comparison`` (the study lives in
``sparsejax/runner/studies/comparison.py``); both take the same flags::

    sparsejax comparison                          # digits, a few minutes on 2 CPU cores
    sparsejax comparison --dataset mnist10k       # the MNIST test split shipped with sparsejax
    sparsejax comparison --dataset mnist1d
    sparsejax comparison --smoke                  # seconds: CI-sized
    sparsejax comparison --help                   # every flag, its default and choices
"""

import sys

from sparsejax.runner.studies.comparison import (  # noqa: F401 (the study's names)
    STUDY,
    Config,
    figures,
    main,
    weight_sparsity_for,
)

if __name__ == "__main__":
    main(sys.argv[1:])
