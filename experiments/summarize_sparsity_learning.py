"""Summarise several seeds of the sparsity learning study against its targets.

A thin wrapper of ``sparsejax sparsity_learning_summary``
(``sparsejax/runner/studies/sparsity_learning_summary.py``)::

    sparsejax sparsity_learning_summary results/sparsity_learning/gpu_seeds
"""

import sys

from sparsejax.runner.studies.sparsity_learning_summary import (  # noqa: F401
    main,
    summarize,
)

if __name__ == "__main__":
    main(sys.argv[1:])
