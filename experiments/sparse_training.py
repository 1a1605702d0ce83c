"""Dynamic sparse training vs static sparsity, gradual pruning and dense, same budget.

SET (Mocanu et al. 2018), RigL (Evci et al. 2020), SNFS (Dettmers & Zettlemoyer 2019),
SR-STE (Zhou et al. 2021, unstructured and 2:4 / 1:4), static random ERK masks and
gradual magnitude pruning (Zhu & Gupta 2017) against dense, on LeNet-300-100 / MNIST-10k
and the MNIST-1D CNN; see ``sparsejax/runner/studies/sparse_training.py``.

A thin wrapper of ``sparsejax sparse_training``::

    nice -n 10 sparsejax sparse_training --out runs/sparse_training/cpu_3seeds
    sparsejax sparse_training --out runs/sparse_training/cpu_3seeds --resume  # continue
    sparsejax sparse_training --smoke                                         # seconds
"""

import sys

from sparsejax.runner.studies.sparse_training import (  # noqa: F401 (the study's names)
    METHODS,
    RECIPES,
    STUDY,
    Config,
    build_optimizer,
    figures,
    initial_states,
    main,
)

if __name__ == "__main__":
    main(sys.argv[1:])
