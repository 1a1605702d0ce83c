"""Post-training pruning of a byte-level GPT decoder: magnitude, Wanda, SparseGPT, OWL.

The decoder is trained on the Python standard library's sources (no download), then every
linear layer of every block is pruned one-shot from calibration sequences; see
``sparsejax/runner/studies/posttrain.py``.

A thin wrapper of ``sparsejax posttrain``::

    sparsejax posttrain --out runs/posttrain/h100                   # GPU, one command
    sparsejax posttrain --out runs/posttrain/h100 --phases timing   # only the timing
    sparsejax posttrain --smoke --out /tmp/posttrain --checkpoint-dir /tmp/posttrain_ckpt
"""

import sys

from sparsejax.runner.studies.posttrain import (  # noqa: F401 (the study's names)
    METHODS,
    PHASES,
    SMOKE,
    STUDY,
    Config,
    figures,
    main,
)

if __name__ == "__main__":
    main(sys.argv[1:])
