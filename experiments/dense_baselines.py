"""Dense baselines: the accuracy every pruning result is compared with.

Trains each (dataset, model) pair of ``--pairs`` for ``--seeds`` seeds (vmapped:
one program per pair) with Adam and reports test accuracy and macro F1, mean ±
std, plus the best test accuracy seen during training (the MNIST-1D paper
reports the maximum over training; we report the final value as the headline).

Defaults follow the MNIST-1D reference training (Greydanus & Kobak 2024: Adam,
lr 1e-2, batch 100, 6,000 steps) for MNIST-1D, and Adam 1e-3 for the image
sets.

A thin wrapper of ``sparsejax dense`` (``sparsejax/runner/studies/dense.py``)::

    sparsejax dense --out runs/dense_baselines
    sparsejax dense --smoke
"""

import sys

from sparsejax.runner.studies.dense import (  # noqa: F401 (the study's names)
    RECIPES,
    STUDY,
    Config,
    main,
)

if __name__ == "__main__":
    main(sys.argv[1:])
