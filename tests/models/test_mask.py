"""The Mask variable type: not a parameter for split, optimizers, gradients or the train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sparsejax.models import Mask
from sparsejax.train import create_train_state, make_train_step


class MaskedLinear(nnx.Module):
    """A layer that keeps its mask with its kernel (the case ``Mask`` is for)."""

    def __init__(self):
        self.kernel = nnx.Param(jnp.arange(6.0).reshape(3, 2) + 1.0)
        self.kernel_mask = Mask(jnp.array([[True, False], [True, True], [False, True]]))

    def __call__(self, x):
        return x @ jnp.where(self.kernel_mask[...], self.kernel[...], 0.0)


def test_mask_is_a_variable_but_not_a_param():
    assert issubclass(Mask, nnx.Variable) and not issubclass(Mask, nnx.Param)
    _, params, rest = nnx.split(MaskedLinear(), nnx.Param, ...)
    assert [k for k, _ in nnx.to_flat_state(params)] == [("kernel",)]
    assert [k for k, _ in nnx.to_flat_state(rest)] == [("kernel_mask",)]
    masks = nnx.state(MaskedLinear(), Mask)
    np.testing.assert_array_equal(masks["kernel_mask"][...], [[1, 0], [1, 1], [0, 1]])
    # the exhaustive split names both kinds
    _, p2, m2 = nnx.split(MaskedLinear(), nnx.Param, Mask)
    assert jax.tree.structure(p2) == jax.tree.structure(params)
    assert jax.tree.structure(m2) == jax.tree.structure(rest)


def test_optimizer_over_params_never_sees_the_mask():
    model = MaskedLinear()
    opt = nnx.Optimizer(model, optax.sgd(1.0), wrt=nnx.Param)
    assert len(jax.tree.leaves(opt.opt_state)) == 0  # sgd keeps no state, and no mask leaf
    x = jnp.ones((1, 3))
    grads = nnx.grad(lambda m: jnp.sum(m(x)), argnums=nnx.DiffState(0, nnx.Param))(model)
    assert [k for k, _ in nnx.to_flat_state(grads)] == [("kernel",)]
    opt.update(model, grads)
    # d sum(x @ (m*W)) / dW = m (x = 1): kept entries step by -1, removed ones get 0
    np.testing.assert_array_equal(model.kernel[...], [[0.0, 2.0], [2.0, 3.0], [5.0, 5.0]])
    np.testing.assert_array_equal(model.kernel_mask[...], [[1, 0], [1, 1], [0, 1]])


def test_train_step_keeps_the_mask_in_rest_untouched():
    state = create_train_state(MaskedLinear(), optax.adam(0.1), key=0)
    assert [k for k, _ in nnx.to_flat_state(state.rest)] == [("kernel_mask",)]
    step = make_train_step(loss_fn=lambda logits, y: jnp.sum((logits - y) ** 2, axis=-1),
                           metrics_fn=lambda logits, y: {})
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))
    new, _ = step(state, (x, y))
    assert not np.array_equal(new.params["kernel"][...], state.params["kernel"][...])
    np.testing.assert_array_equal(new.rest["kernel_mask"][...], state.rest["kernel_mask"][...])


def test_mask_values_must_be_bool():
    with pytest.raises(TypeError, match="bool array, got dtype float32"):
        Mask(jnp.ones((2, 2)))
    with pytest.raises(TypeError, match="got dtype int"):
        Mask([1, 0])
    assert bool(Mask(True)[...]) and Mask([True, False])[...].tolist() == [True, False]
    abstract = nnx.eval_shape(lambda: Mask(jnp.ones(3, bool)))
    assert abstract.get_value().shape == (3,) and abstract.get_value().dtype == jnp.bool_
