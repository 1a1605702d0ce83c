"""Sparsity learning: sparse variational dropout, group lasso and structured sparsity
learning (Wen et al. 2016, structured sparse VD), against a dense reference.

See ``sparsejax/runner/studies/sparsity_learning.py``. A thin wrapper of
``sparsejax sparsity_learning``::

    sparsejax sparsity_learning --out runs/sparsity_learning
    sparsejax sparsity_learning --vd false --group-lasso false --ssl true \
        --structured-vd true --out runs/sparsity_learning/structured
    sparsejax sparsity_learning --smoke --out /tmp/sl                # seconds
    sparsejax sparsity_learning_summary runs/sparsity_learning/seeds  # over seeds
"""

import sys

from sparsejax.runner.studies.sparsity_learning import (  # noqa: F401 (the study's names)
    SMOKE,
    STUDY,
    Config,
    figures,
    main,
)

if __name__ == "__main__":
    main(sys.argv[1:])
