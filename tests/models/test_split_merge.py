"""Every zoo, VD and gated model splits and merges with the filters NNX users write.

``nnx.split(model, nnx.Param, ...)`` always works and puts exactly the parameters in
``params``; a model that holds nothing but parameters (every model without BatchNorm or
Dropout streams: the VD models too, whose noise comes from a key given to the call) also
splits exhaustively with ``nnx.split(model, nnx.Param)``; the others split exhaustively
with ``nnx.Param, nnx.BatchStat, nnx.RngState`` as they hold them. Structure checks run on
abstract models (``nnx.eval_shape``: nothing is computed); outputs are compared on small
real models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax.dynamic import GatedLeNet5, GatedMNIST1DCNN
from sparsejax.models import MODEL_NAMES, DecoderLM, LeNet300100, create_model
from sparsejax.variational import VDLeNet5, VDLeNet300100

ZOO_SHAPES = {
    "lenet300100": (28, 28, 1), "mlp": (40,), "lenet5": (28, 28, 1), "conv2": (32, 32, 3),
    "conv4": (32, 32, 3), "conv6": (32, 32, 3), "mnist1d_cnn": (40,), "resnet20": (32, 32, 3),
    "resnet56": (32, 32, 3), "vgg16": (32, 32, 3), "transformer": (28, 28, 1),
}
ZOO_KWARGS = {"transformer": {"patch_shape": (7, 7, 1)}}
# The variable kinds each model holds besides nnx.Param.
EXTRA = {
    "resnet20": (nnx.BatchStat,), "resnet56": (nnx.BatchStat,),
    "vgg16": (nnx.BatchStat, nnx.RngState),  # BatchNorm, and Dropout in the classifier
    "transformer": (nnx.RngState,),  # Dropout
}


def _zoo(name):
    return lambda: create_model(name, rngs=nnx.Rngs(0), input_shape=ZOO_SHAPES[name],
                                num_classes=10, **ZOO_KWARGS.get(name, {}))


BUILDERS = {
    **{name: _zoo(name) for name in MODEL_NAMES},
    "decoder_lm": lambda: DecoderLM(64, 32, 1, 2, 16, rngs=nnx.Rngs(0)),
    "vd_lenet300100": lambda: VDLeNet300100(rngs=nnx.Rngs(0)),
    "vd_lenet300100_structured": lambda: VDLeNet300100(structured=True, rngs=nnx.Rngs(0)),
    "vd_lenet5": lambda: VDLeNet5(rngs=nnx.Rngs(0)),
    "vd_lenet5_structured": lambda: VDLeNet5(structured=True, rngs=nnx.Rngs(0)),
    "gated_lenet5": lambda: GatedLeNet5(rngs=nnx.Rngs(0)),
    "gated_mnist1d_cnn": lambda: GatedMNIST1DCNN(rngs=nnx.Rngs(0)),
}
assert set(MODEL_NAMES) <= set(ZOO_SHAPES), "a new zoo model needs an input shape here"


def _kinds(state) -> set[type]:
    return {type(v) for _, v in nnx.to_flat_state(state)}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_param_filter_split_and_merge(name):
    model = nnx.eval_shape(BUILDERS[name])
    extra = EXTRA.get(name, ())
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    assert _kinds(params) == {nnx.Param}
    assert all(any(issubclass(k, e) for e in extra) for k in _kinds(rest)), _kinds(rest)
    assert jax.tree.structure(params) == jax.tree.structure(nnx.state(model, nnx.Param))
    # merge, then split again: the same structure and the same leaves
    again = nnx.split(nnx.merge(graphdef, params, rest), nnx.Param, ...)
    assert again[0] == graphdef
    for a, b in zip(again[1:], (params, rest), strict=True):
        assert jax.tree.structure(a) == jax.tree.structure(b)
        assert all(x is y for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    # exhaustive split over the kinds the model holds
    parts = nnx.split(model, nnx.Param, *extra)
    assert len(parts) == 2 + len(extra)
    if extra:
        with pytest.raises(ValueError, match="Non-exhaustive filters"):
            nnx.split(model, nnx.Param)
    else:  # nothing but parameters: the two-way split every NNX user writes
        graphdef2, only = nnx.split(model, nnx.Param)
        assert jax.tree.structure(only) == jax.tree.structure(params)
        assert jax.tree.structure(nnx.state(nnx.merge(graphdef2, only))) == jax.tree.structure(
            nnx.state(model))


@pytest.mark.parametrize("structured", [False, True])
def test_vd_model_is_a_pure_function_of_params_and_key(structured):
    model = VDLeNet300100(64, 10, structured=structured, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
    key = jax.random.key(2)
    forward = jax.jit(lambda p, v, k: nnx.merge(graphdef, p)(v, key=k))
    first = forward(params, x, key)
    # no hidden RNG counter: the same key gives the same noise, call after call
    np.testing.assert_array_equal(forward(params, x, key), first)
    _, after = nnx.split(model, nnx.Param)
    assert all(a is b for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(params), strict=True))
    assert float(jnp.max(jnp.abs(forward(params, x, jax.random.key(3)) - first))) > 0
    # a batch of keys through vmap: one noise draw per key
    keys = jax.random.split(key, 2)
    batched = jax.vmap(forward, in_axes=(None, None, 0))(params, x, keys)
    np.testing.assert_allclose(batched[1], forward(params, x, keys[1]), rtol=1e-5, atol=1e-5)
    # evaluation mode after the round trip: deterministic, no key needed
    merged = nnx.merge(graphdef, params)
    merged.eval()
    evaluate = nnx.jit(lambda m, v: m(v))
    np.testing.assert_array_equal(evaluate(merged, x), evaluate(merged, x))


def test_plain_model_round_trip_outputs():
    model = LeNet300100(64, 10, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    graphdef, params = nnx.split(model, nnx.Param)
    np.testing.assert_array_equal(nnx.merge(graphdef, params)(x), model(x))
