"""Layer handlers: a user's own layer types, registered the way the zoo's are, shrink."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import sparsejax as sj
from sparsejax.shrink import (
    Member,
    block_mask,
    coupled_groups,
    group_mask,
    keep_sets,
    register_residual_block,
    register_resize,
    removable_blocks,
    remove_blocks,
    shrink,
)

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _float32_matmuls():
    with jax.default_matmul_precision("float32"):
        yield


class DenseBase(nnx.Module):
    """A user's dense layer whose forward pass reads its own width attribute."""

    def __init__(self, din: int, dout: int, *, seed: int):
        gen = np.random.default_rng(seed)
        self.din, self.dout = din, dout
        self.w = nnx.Param(jnp.asarray(gen.standard_normal((din, dout)) / np.sqrt(din),
                                       jnp.float32))
        self.b = nnx.Param(jnp.asarray(0.1 * gen.standard_normal(dout), jnp.float32))

    def __call__(self, x):
        return (x @ self.w[...] + self.b[...][None, :]).reshape(x.shape[0], self.dout)


class UserDense(DenseBase):
    """Registered below."""


class UserDenseChild(UserDense):
    """Not registered itself: inherits the handler of UserDense."""


class UnregisteredDense(DenseBase):
    """Never registered: its width attribute goes stale after shrinking."""


def resize_user_dense(module: DenseBase) -> None:
    module.din, module.dout = np.shape(module.w[...])


register_resize(UserDense, resize_user_dense)


class TwoDense(nnx.Module):
    def __init__(self, layer_type):
        self.l1 = layer_type(6, 8, seed=0)
        self.l2 = layer_type(8, 3, seed=1)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


def batch(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.parametrize("layer_type", [UserDense, UserDenseChild])
def test_registered_user_layer_shrinks_to_the_masked_model(layer_type):
    model = TwoDense(layer_type)
    x = batch((4, 6))
    groups = coupled_groups(model, x)
    hidden = groups[0]
    assert hidden.name == "l1/w:1" and hidden.size == 8 and hidden.blocked is None
    assert hidden.members == (Member("l1/w", 1), Member("l1/b", 0), Member("l2/w", 0))
    keep = {"l1/w": [0, 3, 5]}
    small = shrink(model, keep, inputs=x)
    assert (small.l1.din, small.l1.dout, small.l2.din, small.l2.dout) == (6, 3, 3, 3)
    assert (model.l1.dout, model.l2.din) == (8, 8)  # the original is untouched
    np.testing.assert_array_equal(small.l1.w[...], model.l1.w[...][:, [0, 3, 5]])
    np.testing.assert_array_equal(small.l2.w[...], model.l2.w[...][[0, 3, 5], :])
    params = nnx.state(model, nnx.Param)
    sets = keep_sets(groups, params, keep)
    ref = nnx.merge(*nnx.split(model), copy=True)
    nnx.update(ref, sj.apply_mask(params, group_mask(groups, params, sets)))
    chex.assert_trees_all_close(small(x), ref(x), atol=ATOL, rtol=ATOL)


def test_unregistered_user_layer_keeps_a_stale_width_and_shrink_says_so():
    model = TwoDense(UnregisteredDense)
    with pytest.raises(ValueError, match="does not run"):
        shrink(model, {"l1/w": [0, 3, 5]}, inputs=batch((4, 6)))


# ----------------------------------------------------------------------------- residual blocks


class ResidualBase(nnx.Module):
    """``x + dense(x)``: with every parameter zero, the identity."""

    def __init__(self, dim: int, *, seed: int):
        self.inner = UserDense(dim, dim, seed=seed)

    def __call__(self, x):
        return x + self.inner(x)


class UserResidual(ResidualBase):
    """Registered below."""


class UnregisteredResidual(ResidualBase):
    """Never registered: not a known residual block."""


def user_residual_removable(block: ResidualBase) -> str | None:
    return None if block.inner.din == block.inner.dout else "it changes the width"


register_residual_block(UserResidual, user_residual_removable)


class UserResNet(nnx.Module):
    def __init__(self, block_type):
        self.stem = UserDense(6, 4, seed=0)
        self.blocks = nnx.List([block_type(4, seed=s) for s in (1, 2, 3)])
        self.head = UserDense(4, 3, seed=4)

    def __call__(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def test_registered_user_residual_block_is_removed_like_its_block_mask():
    model = UserResNet(UserResidual)
    assert removable_blocks(model) == (0, 1, 2)
    small, removed = remove_blocks(model, [1])
    assert removed == (1,) and len(small.blocks) == 2
    ref = nnx.merge(*nnx.split(model), copy=True)
    nnx.update(ref, sj.apply_mask(nnx.state(model, nnx.Param), block_mask(model, [1])))
    x = batch((3, 6))
    chex.assert_trees_all_close(small(x), ref(x), atol=ATOL, rtol=ATOL)


def test_unregistered_block_type_is_not_removable():
    model = UserResNet(UnregisteredResidual)
    assert removable_blocks(model) == ()
    with pytest.raises(ValueError, match="blocks/0 cannot be removed: UnregisteredResidual is "
                                         "not a known residual block"):
        remove_blocks(model, [0])


def test_registration_checks_its_arguments():
    with pytest.raises(TypeError, match="nnx.Module subclass"):
        register_resize(int, resize_user_dense)
    with pytest.raises(TypeError, match="callable"):
        register_residual_block(UserResidual, "yes")
