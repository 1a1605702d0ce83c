"""A hand-made two-layer sensitivity table shared by the budget and plot tests."""

import numpy as np

import sparsejax as sj
from sparsejax.sensitivity import LayerSensitivity


def two_layer_table(**kw):
    drops = np.asarray([[0.01, 0.02, 0.5], [0.0, 0.1, 0.2]])
    base = dict(
        layers=("A", "B"), sparsities=(0.2, 0.5, 1.0), values=1.0 - drops, baseline=1.0,
        groups=(10, 10), sizes=(100, 300), pruned=np.asarray([[2, 5, 10], [2, 5, 10]]),
        structure=sj.Neurons(),
    )
    base.update(kw)
    return LayerSensitivity(**base)
