"""A pruning optimizer state survives a checkpoint round trip with its schedule (static data)."""

import chex
import jax
from transform_problems import POLY, TX_LAYER, _mlp_params, _run_mlp

from sparsejax import checkpoint


def test_pruning_state_checkpoint_restores_leaves_and_schedule(tmp_path):
    params = _mlp_params(jax.random.key(0))
    _, state1, _ = _run_mlp(TX_LAYER, 1, jit=False)[-1]
    checkpoint.save(tmp_path / "run", 1, state1)
    restored = checkpoint.restore(tmp_path / "run", TX_LAYER.init(params)).state
    chex.assert_trees_all_equal(restored, state1)
    assert restored.schedule is POLY
