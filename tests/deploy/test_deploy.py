"""strip (training state -> plain params), export (BCOO, BlockSparseMatrix), sparse_apply."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.experimental import sparse
from shrink_helpers import INIT

import sparsejax as sj
from sparsejax import models as M
from sparsejax.block_sparse import BlockSparseMatrix
from sparsejax.deploy import export, is_sparse, sparse_apply, strip
from sparsejax.train import create_train_state, make_train_step

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _float32_matmuls():
    with jax.default_matmul_precision("float32"):
        yield


def batch(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def nnx_forward(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return params, lambda p, x: nnx.merge(graphdef, p, rest, copy=True)(x)


# ------------------------------------------------------------------ strip


def test_strip_returns_plain_masked_params_of_a_pruning_run():
    model = M.LeNet300100(rngs=nnx.Rngs(0), **INIT)
    sched = sj.schedules.one_shot(0.9, at=0)
    tx = sj.pruning(optax.sgd(0.1), score=lambda p, g: sj.scores.magnitude(p), schedule=sched)
    state = create_train_state(model, tx, key=0)
    x, y = batch((8, 784)), jnp.arange(8) % 10
    state, _ = make_train_step()(state, (x, y))
    plain = strip(state)
    assert isinstance(plain, nnx.State)
    assert jax.tree.structure(plain) == jax.tree.structure(state.params)
    mask = sj.current_mask(state.opt_state)
    for p, m in zip(jax.tree.leaves(plain), jax.tree.leaves(mask), strict=True):
        assert not np.any(np.asarray(p)[~np.broadcast_to(np.asarray(m), p.shape)])
    kernels = [np.asarray(p) for p in jax.tree.leaves(plain) if p.ndim == 2]
    assert [int((k != 0).sum()) for k in kernels] == [round(0.1 * k.size) for k in kernels]
    chex.assert_trees_all_equal(strip(state.params, state.opt_state), plain)


def test_strip_keep_sparse_through_a_chain_and_errors():
    params = {"w": jnp.array([[1.0, -3.0], [0.5, 2.0]]), "b": jnp.ones(2)}
    mask = sj.prune(sj.scores.magnitude(params), 0.5)
    opt_state = optax.chain(optax.clip(1.0), sj.keep_sparse(optax.adam(0.1), mask)).init(params)
    assert strip(params, opt_state)["w"].tolist() == [[0.0, -3.0], [0.0, 2.0]]
    with pytest.raises(ValueError, match=r"no (sparsejax state|PruningState)"):
        strip(params, optax.adam(0.1).init(params))
    with pytest.raises(TypeError, match=r"\.params and .opt_state"):
        strip(params)


# ------------------------------------------------------------------ export + sparse_apply


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_bcoo_lenet300100_matches_the_masked_model(jit):
    params, fwd = nnx_forward(M.LeNet300100(rngs=nnx.Rngs(0), **INIT))
    mask = sj.prune(sj.scores.magnitude(params), 0.9)
    sp = export(params, mask)
    leaves = jax.tree.leaves(sp, is_leaf=is_sparse)
    nse = [x.nse for x in leaves if isinstance(x, sparse.BCOO)]
    assert nse == [round(0.1 * 784 * 300), round(0.1 * 300 * 100), round(0.1 * 100 * 10)]
    run = jax.jit(sparse_apply(fwd)) if jit else sparse_apply(fwd)
    x = batch((3, 784))
    chex.assert_trees_all_close(run(sp, x), fwd(sj.apply_mask(params, mask), x), atol=ATOL)


def test_bcoo_conv_net_and_kept_zeros_are_stored():
    params, fwd = nnx_forward(M.ConvNet(2, (8, 8, 3), 10, dense_features=(16,), rngs=nnx.Rngs(0), **INIT))
    mask = sj.prune(sj.scores.magnitude(params), 0.8)
    sp = export(params, mask)
    conv = jax.tree.leaves(sp, is_leaf=is_sparse)[3]  # convs/1/kernel
    assert conv.shape == (3, 3, 64, 64) and conv.nse == round(0.2 * 3 * 3 * 64 * 64)
    x = batch((2, 8, 8, 3))
    chex.assert_trees_all_close(jax.jit(sparse_apply(fwd))(sp, x),
                                fwd(sj.apply_mask(params, mask), x), atol=ATOL)
    w = {"w": jnp.array([[0.0, 2.0], [3.0, 0.0]])}
    assert export(w, {"w": jnp.ones((2, 2), bool)})["w"].nse == 4  # the mask's, zeros too
    assert export(w)["w"].nse == 2  # no mask: the nonzeros


def test_block_sparse_export_of_a_blocks_pruned_mlp():
    params, fwd = nnx_forward(M.MLP((32, 64, 16, 10), rngs=nnx.Rngs(0), **INIT))
    mask = sj.prune(sj.scores.magnitude(params), 0.75, structure=sj.Blocks(8, 8),
                    prunable=r"layers/[01]/kernel")
    sp = export(params, mask, format="block", block=8, prunable=r"layers/[01]/kernel")
    leaves = jax.tree.leaves(sp, is_leaf=is_sparse)  # b0, k0, b1, k1, b2, k2
    first = leaves[1]
    assert isinstance(first, BlockSparseMatrix) and first.nnz_blocks == 8 and first.block == (8, 8)
    assert leaves[3].nnz_blocks == 4 and not is_sparse(leaves[5])
    x = batch((4, 32))
    chex.assert_trees_all_close(jax.jit(sparse_apply(fwd))(sp, x),
                                fwd(sj.apply_mask(params, mask), x), atol=ATOL)


def test_linen_apply_with_exported_params():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))

    net, x = Net(), batch((4, 8))
    params = net.init(jax.random.key(0), x)
    mask = sj.prune(sj.scores.magnitude(params), 0.5)
    sp = export(params, mask)
    chex.assert_trees_all_close(sparse_apply(net.apply)(sp, x),
                                net.apply(sj.apply_mask(params, mask), x), atol=ATOL)


def test_export_errors_name_the_path():
    params, _ = nnx_forward(M.LeNet5(rngs=nnx.Rngs(0), **INIT))
    with pytest.raises(ValueError, match="format must be one of"):
        export(params, format="csr")
    with pytest.raises(ValueError, match="needs block="):
        export(params, format="block")
    with pytest.raises(ValueError, match=r"'conv1/kernel' has shape \(5, 5, 1, 20\)"):
        export(params, format="block", block=2)
    w = {"w": jnp.arange(16.0).reshape(4, 4)}
    with pytest.raises(ValueError, match=r"mask at 'w'.* not constant on \(2, 2\) blocks"):
        export(w, {"w": jnp.eye(4, dtype=bool)}, format="block", block=2)
    with pytest.raises(TypeError, match="callable"):
        sparse_apply(3)
