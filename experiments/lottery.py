"""Lottery tickets by iterative magnitude pruning (IMP), with controls, on CPU-sized tasks.

Tasks (``--task``):

* ``mnist1d`` — Greydanus & Kobak (2024), MNIST-1D lottery ticket: MLP
  40-500-500-10 on the default MNIST-1D (4,000 / 1,000, 500 training examples
  held out for validation), layerwise magnitude pruning with reset to
  initialisation, compared with random pruning at the same per-layer
  sparsities (``random_mask``, same initial weights).
* ``lenet`` — Frankle & Carbin (2019), LeNet-300-100 on MNIST-10k (official
  test split, 8,000 / 2,000; 1,000 of the 8,000 held out for validation),
  Adam 1.2e-3, batch 60, 20% per round (output layer 10%), reset to init;
  control: random reinitialisation with the ticket's mask (``reinit``).
* ``mnist1d_cnn`` — late rewinding (Frankle et al. 2020) vs rewinding to 0 on
  the MNIST-1D CNN (``ConvBase`` of Greydanus & Kobak): run once with
  ``--reset init`` and once with ``--reset rewind --rewind-step K``; conv
  layers 20% per round, output layer 10%; control: ``one_shot`` pruning.

All seeds of a round train in one jitted, vmapped ``lax.scan`` (masks kept by
:func:`sparsejax.keep_sparse`); every ``eval_every`` steps the validation loss
and accuracy and the test accuracy are recorded, giving per round the
early-stop step (minimum validation loss), the maximal test accuracy (the
number the MNIST-1D notebook reports; optimistic) and the
*validation-selected* test accuracy (test accuracy at the step of maximal
validation accuracy). Nothing is selected on test.

Outputs in ``--out``: ``results.json`` (config, every record, per seed),
``results.md`` (table), ``accuracy.png`` and ``early_stop.png`` (vs % of
weights remaining, ticket vs controls), and the orbax round checkpoints in
``checkpoints/`` (``--resume`` continues a killed run from them).

A thin wrapper of ``sparsejax lottery`` (``sparsejax/runner/studies/lottery.py``)::

    sparsejax lottery --task mnist1d --out runs/lottery/mnist1d
    sparsejax lottery --task lenet --out runs/lottery/lenet_mnist10k
    sparsejax lottery --out runs/lottery/mnist1d --resume      # continue a killed run
    sparsejax lottery --smoke                                  # seconds: CI-sized
"""

import sys

from sparsejax.runner.studies.lottery import (  # noqa: F401 (the study's names)
    STUDY,
    Config,
    figures,
    flat_split,
    main,
    make_task_fns,
)

if __name__ == "__main__":
    main(sys.argv[1:])
