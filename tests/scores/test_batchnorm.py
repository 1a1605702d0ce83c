"""BatchNorm scale criterion: pairing BatchNorm scales with conv kernels."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from sparsejax import scores


def _bn_params():
    return {
        "conv1": {"kernel": jnp.ones((3, 3, 1, 4))},
        "bn1": {"scale": jnp.asarray([0.5, -2.0, 0.1, 1.0]), "bias": jnp.zeros(4)},
        "convs": [{"kernel": jnp.ones((3, 3, 4, 2))}],
        "norms": [{"scale": jnp.asarray([-3.0, 0.2]), "bias": jnp.zeros(2)}],
        "linear": {"kernel": jnp.ones((2, 10))},
    }


def test_bn_scale_same_module_convention():
    params = _bn_params()
    assert scores.bn_conv_pairs(params) == {"bn1/scale": "conv1/kernel",
                                              "norms/0/scale": "convs/0/kernel"}
    s = scores.bn_scale(params)
    np.testing.assert_allclose(s["conv1"]["kernel"].reshape(-1), [0.5, 2.0, 0.1, 1.0])
    np.testing.assert_allclose(s["convs"][0]["kernel"].reshape(-1), [3.0, 0.2])
    assert s["linear"]["kernel"].shape == ()
    mask = sj.prune(s, 0.5, params=params, structure=sj.Neurons(),
                    prunable=["conv1/kernel$", "convs/0/kernel$"])
    assert mask["conv1"]["kernel"].reshape(-1).tolist() == [False, True, False, True]
    assert mask["convs"][0]["kernel"].reshape(-1).tolist() == [True, False]
    linen = {"Conv_0": {"kernel": jnp.ones((1, 1, 1, 2))},
             "BatchNorm_0": {"scale": jnp.asarray([1.0, -4.0]), "bias": jnp.zeros(2)}}
    out = scores.bn_scale(linen)
    np.testing.assert_allclose(out["Conv_0"]["kernel"].reshape(-1), [1.0, 4.0])


def test_bn_scale_explicit_mapping_and_errors():
    params = {"features": {"kernel": jnp.ones((1, 1, 1, 3))},
              "post": {"scale": jnp.asarray([1.0, 2.0, 3.0])}}
    with pytest.raises(ValueError, match="no BatchNorm scale found.*bn_to_conv"):
        scores.bn_scale(params)
    s = scores.bn_scale(params, {"post": "features"})
    np.testing.assert_allclose(s["features"]["kernel"].reshape(-1), [1.0, 2.0, 3.0])
    s2 = jax.jit(lambda p: scores.bn_scale(p, {"post/scale": "features/kernel"}))(params)
    chex.assert_trees_all_close(s, s2)
    with pytest.raises(ValueError, match="'nope' is not a parameter path"):
        scores.bn_scale(params, {"nope": "features"})
    bad = {"conv": {"kernel": jnp.ones((1, 1, 1, 3))}, "bn": {"scale": jnp.ones(2)}}
    with pytest.raises(ValueError, match="'bn/scale' has shape \\(2,\\).*'conv/kernel'"):
        scores.bn_scale(bad)
    orphan = {"bn2": {"scale": jnp.ones(2)}, "conv1": {"kernel": jnp.ones((1, 1, 1, 2))}}
    with pytest.raises(ValueError, match="'bn2/scale'.*'conv2/kernel'"):
        scores.bn_scale(orphan)


def test_bn_pairs_on_model_zoo_resnet20():
    from flax import nnx

    from sparsejax.models import ResNet20

    abstract = nnx.eval_shape(lambda: ResNet20(rngs=nnx.Rngs(0)))
    _, shapes, _ = nnx.split(abstract, nnx.Param, ...)
    params = jax.tree.map(lambda a: jnp.full(a.shape, -0.5, a.dtype), shapes)
    pairs = scores.bn_conv_pairs(params)
    assert len(pairs) == 19  # the stem and the 2 convolutions of each of the 9 blocks
    assert pairs["bn/scale"] == "conv/kernel"
    assert pairs["blocks/8/bn2/scale"] == "blocks/8/conv2/kernel"
    s = scores.bn_scale(params)
    np.testing.assert_allclose(s["blocks"][8]["conv2"]["kernel"][...].reshape(-1), 0.5)
    assert s["blocks"][8]["conv2"]["kernel"][...].shape == (1, 1, 1, 64)
