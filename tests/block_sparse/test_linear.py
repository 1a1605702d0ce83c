"""``BlockSparseLinear``: the NNX layer against a block-pruned ``nnx.Linear``."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import sparsejax as sj
from sparsejax.block_sparse import BlockIndex, BlockSparseLinear


def _pruned_linear(use_bias):
    lin = nnx.Linear(64, 32, use_bias=use_bias, rngs=nnx.Rngs(0))
    if use_bias:
        lin.bias[...] = jnp.linspace(-1.0, 1.0, 32)
    mask = sj.prune({"k": jnp.abs(lin.kernel[...])}, 0.75, structure=sj.Blocks(16, 16))["k"]
    return lin, mask


@pytest.mark.parametrize(("use_bias", "jit"), [(True, False), (False, True)])
def test_layer_is_drop_in_for_pruned_linear(use_bias, jit):
    lin, mask = _pruned_linear(use_bias)
    layer = BlockSparseLinear.from_linear(lin, mask, block=16)
    assert (layer.in_features, layer.out_features, layer.use_bias) == (64, 32, use_bias)
    assert layer.data.shape == (2, 16, 16)  # 8 blocks, 75% pruned
    lin.kernel[...] = jnp.where(mask, lin.kernel[...], 0)
    x = jax.random.normal(jax.random.key(1), (2, 3, 64))
    call = nnx.jit(lambda mod, x: mod(x)) if jit else (lambda mod, x: mod(x))
    chex.assert_trees_all_close(call(layer, x), call(lin, x), atol=1e-5)
    np.testing.assert_array_equal(layer.kernel.to_dense(), lin.kernel[...])
    params = nnx.state(layer, nnx.Param)
    assert sorted(params.keys()) == (["bias", "data"] if use_bias else ["data"])
    assert len(jax.tree.leaves(nnx.state(layer, BlockIndex))) == 8


def test_layer_finetuning_matches_masked_dense_sgd():
    lin, mask = _pruned_linear(True)
    layer = BlockSparseLinear.from_linear(lin, mask, block=16)
    lin.kernel[...] = jnp.where(mask, lin.kernel[...], 0)
    x = jax.random.normal(jax.random.key(2), (8, 64))
    target = jax.random.normal(jax.random.key(3), (8, 32))

    def loss(mod):
        return jnp.mean((mod(x) - target) ** 2)

    opt = nnx.Optimizer(layer, optax.sgd(0.5), wrt=nnx.Param)

    @nnx.jit
    def step(mod, opt):
        opt.update(mod, nnx.grad(loss)(mod))

    def dense_loss(w, b):
        return jnp.mean((x @ jnp.where(mask, w, 0) + b[None, :] - target) ** 2)

    w, b = lin.kernel[...], lin.bias[...]
    for _ in range(3):
        step(layer, opt)
        gw, gb = jax.grad(dense_loss, argnums=(0, 1))(w, b)
        w, b = w - 0.5 * jnp.where(mask, gw, 0), b - 0.5 * gb
    assert layer.data.shape == (2, 16, 16)
    lin.kernel[...], lin.bias[...] = w, b
    chex.assert_trees_all_close(layer.kernel.to_dense(), lin.kernel[...], atol=1e-5)
    chex.assert_trees_all_close(layer.bias[...], lin.bias[...], atol=1e-5)


def test_layer_bad_inputs():
    lin, mask = _pruned_linear(True)
    with pytest.raises(TypeError, match="nnx.Linear"):
        BlockSparseLinear.from_linear(object(), mask, block=16)
    layer = BlockSparseLinear.from_linear(lin, mask, block=16)
    with pytest.raises(ValueError, match="out_sharding"):
        layer(jnp.ones((1, 64)), out_sharding="x")
    with pytest.raises(ValueError, match=r"bias must have shape \(32,\)"):
        BlockSparseLinear(layer.kernel, jnp.ones(3))
