"""Pruned and shrunk NNX models saved with their mask and widths, restored to the same function."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from shrink_helpers import INIT, batch, randomize, run

import sparsejax as sj
from sparsejax import models as M
from sparsejax.shrink import load_model, prune_units, remove_blocks, save_model, shrink


def test_shrunk_lenet5_round_trip(tmp_path):
    model = randomize(M.LeNet5(rngs=nnx.Rngs(0), **INIT))
    small = shrink(model, prune_units(model, 0.5))
    save_model(tmp_path / "small", small, metadata={"sparsity": 0.5})
    loaded = load_model(tmp_path / "small", M.LeNet5(rngs=nnx.Rngs(7), **INIT))
    assert (loaded.model.conv1.out_features, loaded.model.conv2.in_features,
            loaded.model.fc1.in_features) == (10, 10, 400)
    assert loaded.mask is None and loaded.metadata == {"sparsity": 0.5}
    chex.assert_trees_all_equal(nnx.state(loaded.model), nnx.state(small))  # bit for bit
    x = batch((2, 28, 28, 1))
    chex.assert_trees_all_equal(run(loaded.model, x), run(small, x))


def test_masked_model_round_trip_keeps_its_mask(tmp_path):
    model = M.LeNet300100(rngs=nnx.Rngs(0), **INIT)
    params = nnx.state(model, nnx.Param)
    mask = sj.prune(sj.scores.magnitude(params), 0.9)
    nnx.update(model, sj.apply_mask(params, mask))
    save_model(tmp_path / "m", model, mask=mask)
    loaded = load_model(tmp_path / "m", M.LeNet300100(rngs=nnx.Rngs(1), **INIT))
    chex.assert_trees_all_equal(loaded.mask, mask)
    assert int(sj.count_kept(loaded.mask, params)) == round(0.1 * 784 * 300) + round(
        0.1 * 300 * 100) + round(0.1 * 100 * 10) + 300 + 100 + 10
    x = batch((3, 784))
    chex.assert_trees_all_equal(run(loaded.model, x), run(model, x))


def test_resnet_with_shrunk_channels_and_removed_blocks(tmp_path):
    model = randomize(M.CifarResNet(8, (8, 8, 3), shortcut="B", rngs=nnx.Rngs(0), **INIT))
    small = shrink(model, prune_units(model, 0.5, prunable=r"conv1/kernel"))
    fewer, removed = remove_blocks(small, [0])
    save_model(tmp_path / "r", fewer, removed_blocks=removed)
    loaded = load_model(tmp_path / "r", M.CifarResNet(8, (8, 8, 3), shortcut="B",
                                                      rngs=nnx.Rngs(3), **INIT))
    assert len(loaded.model.blocks) == len(fewer.blocks) == 2
    x = batch((2, 8, 8, 3))
    chex.assert_trees_all_equal(run(loaded.model, x), run(fewer, x))


def test_save_load_errors(tmp_path):
    model = M.LeNet300100(rngs=nnx.Rngs(0), **INIT)
    save_model(tmp_path / "a", model)
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        save_model(tmp_path / "a", model)
    save_model(tmp_path / "a", model, overwrite=True)
    with pytest.raises(ValueError, match=r"holds a .*LeNet300100; the template is a .*LeNet5"):
        load_model(tmp_path / "a", M.LeNet5(rngs=nnx.Rngs(0), **INIT))
    save_model(tmp_path / "c", M.MLP((6, 5, 4, 3), rngs=nnx.Rngs(0), **INIT))
    with pytest.raises(ValueError, match=r"differ from the saved model's.*layers/2"):
        load_model(tmp_path / "c", M.MLP((6, 5, 3), rngs=nnx.Rngs(0), **INIT))
    with pytest.raises(FileNotFoundError, match="no saved model"):
        load_model(tmp_path / "empty", model)
    bad = {"layers": {"0": {"kernel": jnp.ones((), bool)}}}
    with pytest.raises(ValueError, match="mask"):
        save_model(tmp_path / "b", model, mask=bad)
    assert np.isfinite(float(jnp.sum(run(model, batch((1, 784))))))
