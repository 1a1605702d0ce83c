"""Structured decisions in one call: unit_mask, prune_units, shrink_params (NNX, Linen, Equinox)."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from shrink_helpers import ATOL, INIT, batch, randomize, run

import sparsejax as sj
from sparsejax import models as M
from sparsejax.shrink import (
    Group,
    Member,
    coupled_groups,
    keep_sets,
    prune_units,
    shrink,
    shrink_params,
    unit_mask,
)
from sparsejax.tree import named_leaves


@pytest.fixture(autouse=True)
def _float32_matmuls():
    with jax.default_matmul_precision("float32"):
        yield


def masked(model, mask):
    """The masked model: ``apply_mask`` on the parameters, every other variable as it is."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return nnx.merge(graphdef, sj.apply_mask(params, mask), rest, copy=True)


def kept(mask, params):
    """``{path: entries kept}`` (broadcast masks counted in full)."""
    shapes = dict(named_leaves(params))
    return {p: int(np.sum(np.broadcast_to(np.asarray(m), np.shape(shapes[p]))))
            for p, m in named_leaves(mask)}


# ------------------------------------------------------------------ unit_mask == shrink


def test_filter_mask_of_lenet5_masks_bias_and_next_inputs_too():
    """The trap: a Filters mask prunes only kernels, so each removed filter's bias still feeds
    the next layer and the 'masked model' is not the pruned model. unit_mask is."""
    model = randomize(M.LeNet5(rngs=nnx.Rngs(0), **INIT))
    params = nnx.state(model, nnx.Param)
    mask = sj.prune(sj.scores.magnitude(params), 0.5, structure=sj.Filters(),
                    prunable=r"(conv1|conv2|fc1)/kernel")
    x = batch((2, 28, 28, 1))
    small = run(shrink(model, mask), x)
    assert float(jnp.max(jnp.abs(run(masked(model, mask), x) - small))) > 1e-3
    full = unit_mask(model, mask)
    chex.assert_trees_all_close(run(masked(model, full), x), small, atol=ATOL, rtol=ATOL)
    k = kept(full, params)
    # conv1 10 of 20 filters; conv2 25 of 50 filters on 10 of 20 input channels;
    # fc1 250 of 500 neurons on 16·25 = 400 of 800 rows; fc2 keeps its 10 logits
    assert (k["conv1/bias"], k["conv1/kernel"]) == (10, 5 * 5 * 1 * 10)
    assert (k["conv2/bias"], k["conv2/kernel"]) == (25, 5 * 5 * 10 * 25)
    assert (k["fc1/bias"], k["fc1/kernel"]) == (250, 400 * 250)
    assert (k["fc2/bias"], k["fc2/kernel"]) == (10, 250 * 10)


def test_unit_mask_equals_shrink_on_resnet20_internal_channels():
    model = randomize(M.CifarResNet(20, (8, 8, 3), rngs=nnx.Rngs(0), **INIT))
    mask = prune_units(model, 0.5, prunable=r"conv1/kernel")
    x = batch((2, 8, 8, 3))
    chex.assert_trees_all_close(run(masked(model, mask), x, jit=False),
                                run(shrink(model, mask), x, jit=False), atol=ATOL, rtol=ATOL)
    k = kept(mask, nnx.state(model, nnx.Param))
    assert k["blocks/0/bn1/scale"] == 8 and k["blocks/8/bn1/bias"] == 32
    assert k["blocks/8/conv2/kernel"] == 9 * 32 * 64  # half its input channels


def test_unit_mask_equals_shrink_on_transformer_heads():
    model = randomize(M.TransformerClassifier(
        (8, 8, 1), patch_shape=(4, 4, 1), dim=16, num_heads=4, depth=2, mlp_dim=32,
        qkv_bias=True, rngs=nnx.Rngs(0), **INIT))  # fmt: skip
    keep = {"blocks/0/attn/query/kernel:1": [0, 2], "blocks/1/fc1/kernel": list(range(0, 32, 2))}
    x = batch((2, 8, 8, 1))
    full = unit_mask(model, keep)
    chex.assert_trees_all_close(run(masked(model, full), x), run(shrink(model, keep), x),
                                atol=ATOL, rtol=ATOL)
    k = kept(full, nnx.state(model, nnx.Param))
    assert k["blocks/0/attn/key/kernel"] == 16 * 2 * 4 and k["blocks/0/attn/out/kernel"] == 2 * 4 * 16
    assert k["blocks/0/attn/value/bias"] == 2 * 4 and k["blocks/1/fc2/kernel"] == 16 * 16
    # heads by the L1 norm of their query slice, in one call
    heads = prune_units(model, 0.5, prunable=r"attn/query/kernel:1")
    small = shrink(model, heads)
    assert [b.attn.num_heads for b in small.blocks] == [2, 2]
    chex.assert_trees_all_close(run(masked(model, heads), x), run(small, x), atol=ATOL, rtol=ATOL)


# ------------------------------------------------------------------ prune_units


def test_prune_units_leaves_the_output_layer_and_equals_filters_plus_unit_mask():
    model = randomize(M.LeNet5(rngs=nnx.Rngs(0), **INIT))
    params = nnx.state(model, nnx.Param)
    mask = prune_units(model, 0.5)
    filters = sj.prune(sj.scores.magnitude(params), 0.5, structure=sj.Filters(),
                       prunable=r"(conv1|conv2|fc1)/kernel")
    chex.assert_trees_all_equal(mask, unit_mask(model, filters))
    small = shrink(model, mask)
    assert (small.conv1.out_features, small.conv2.out_features, small.fc1.out_features,
            small.fc2.out_features) == (10, 25, 250, 10)
    with pytest.raises(ValueError, match=r"'fc2/kernel:1'.*reach the model output"):
        prune_units(model, 0.5, prunable="fc2")


def test_prune_units_global_and_iterative_counts():
    model = M.LeNet5(rngs=nnx.Rngs(0), **INIT)
    params = nnx.state(model, nnx.Param)
    groups = coupled_groups(model)
    first = prune_units(model, 0.5, scope="global", normalize="l2", groups=groups)
    units = {n: len(k) for n, k in keep_sets(groups, params, first).items()}
    assert 20 + 50 + 500 - sum(v for n, v in units.items() if n != "fc2/kernel:1") == 285
    # iterative: units removed before stay removed and count toward the new target
    second = prune_units(model, 0.75, mask=first, groups=groups)
    again = keep_sets(groups, params, second)
    assert [len(again[n]) for n in ("conv1/kernel:3", "conv2/kernel:3", "fc1/kernel:1")] == [5, 12, 125]
    for n, k in keep_sets(groups, params, first).items():
        assert set(again[n]) <= set(k)
    per_layer = prune_units(model, {"conv": 0.5}, groups=groups)  # fc1 keeps all
    assert [len(keep_sets(groups, params, per_layer)[n]) for n in
            ("conv1/kernel:3", "conv2/kernel:3", "fc1/kernel:1")] == [10, 25, 500]


def test_group_importance_sums_every_coupled_slice():
    """over="group": Σ|·| over the kernel column, its bias and the next layer's row."""
    w1 = jnp.asarray([[1.0, 0.0, 3.0, 0.5], [1.0, 0.2, 0.0, 0.5]])
    b1 = jnp.asarray([0.0, 0.0, 0.0, 0.0])
    w2 = jnp.asarray([[0.1, 0.1], [5.0, 5.0], [0.1, 0.0], [0.0, 0.1]])
    params = {"w1": w1, "b1": b1, "w2": w2}
    spec = [Group(4, (Member("w1", 1), Member("b1", 0), Member("w2", 0)))]
    # leader: 2.0, 0.2, 3.0, 1.0 -> unit 1 goes; group: 2.2, 10.2, 3.1, 1.1 -> unit 3 goes
    lead = prune_units(params, 0.25, groups=spec)
    group = prune_units(params, 0.25, groups=spec, over="group")
    assert np.asarray(lead["w1"]).reshape(-1).tolist() == [True, False, True, True]
    assert np.asarray(group["w2"]).reshape(-1).tolist() == [True, True, True, False]
    l2 = prune_units(params, 0.25, groups=spec, over="group", reduction="l2")
    assert np.asarray(l2["b1"]).tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="over must be one of"):
        prune_units(params, 0.25, groups=spec, over="all")
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        prune_units(params, 1.0, groups=spec)
    with pytest.raises(ValueError, match="removes every unit"):
        prune_units(params, {"w1": 1.0}, groups=spec)
    with pytest.raises(ValueError, match="groups= .* or apply_fn="):
        prune_units(params, 0.5)
    with pytest.raises(ValueError, match="matches no coupled group"):
        prune_units(params, 0.5, groups=spec, prunable="w3")


# ------------------------------------------------------------------ any layout: Linen, Equinox


class LinenMLP(nn.Module):
    features: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for f in self.features[:-1]:
            x = nn.relu(nn.Dense(f)(x))
        return nn.Dense(self.features[-1])(x)


def test_linen_mlp_neuron_pruning_keeps_the_logits():
    mlp = LinenMLP((32, 16, 10))
    x = batch((4, 20))
    params = mlp.init(jax.random.key(0), x)
    mask = prune_units(params, 0.5, apply_fn=mlp.apply, inputs=x)
    k = kept(mask, params)
    assert k["params/Dense_2/bias"] == 10 and k["params/Dense_2/kernel"] == 8 * 10
    assert k["params/Dense_0/kernel"] == 20 * 16 and k["params/Dense_1/kernel"] == 16 * 8
    small = shrink_params(params, mask, apply_fn=mlp.apply, inputs=x)
    assert jax.tree.map(jnp.shape, small)["params"]["Dense_1"]["kernel"] == (16, 8)
    chex.assert_trees_all_close(LinenMLP((16, 8, 10)).apply(small, x),
                                mlp.apply(sj.apply_mask(params, mask), x), atol=ATOL, rtol=ATOL)


def test_equinox_mlp_out_in_weights():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(12, 10, 16, 2, key=jax.random.key(0))  # weights (out, in)
    params, static = eqx.partition(model, eqx.is_array)
    scores = sj.scores.magnitude(params)
    # the Flax default would have given a (1, 12) mask and pruned inputs: now refused
    with pytest.raises(ValueError, match=r"'layers/0/weight'.*layout='equinox'"):
        sj.prune(scores, 0.5, structure=sj.Neurons())
    neurons = sj.prune(scores, 0.5, structure=sj.Neurons(layout="equinox"),
                       prunable=r"layers/[01]/weight")
    assert neurons.layers[0].weight.shape == (16, 1) and int(neurons.layers[0].weight.sum()) == 8
    nm = sj.prune(scores, structure=sj.NM(2, 4, layout="equinox"), prunable=r"layers/0/weight")
    runs = np.asarray(nm.layers[0].weight).reshape(16, 3, 4)  # along the input axis
    assert (runs.sum(-1) == 2).all()

    def fwd(p, x):
        return jax.vmap(eqx.combine(p, static))(x)

    x = batch((5, 12))
    mask = prune_units(params, 0.5, apply_fn=fwd, inputs=x)
    chex.assert_trees_all_equal(mask, unit_mask(params, neurons, apply_fn=fwd, inputs=x))
    small = shrink_params(params, mask, apply_fn=fwd, inputs=x)
    assert [layer.weight.shape for layer in small.layers] == [(8, 12), (8, 8), (10, 8)]

    def small_fwd(v):
        for i, layer in enumerate(small.layers):
            v = layer.weight @ v + layer.bias
            v = jax.nn.relu(v) if i < 2 else v
        return v

    chex.assert_trees_all_close(jax.vmap(small_fwd)(x), fwd(sj.apply_mask(params, mask), x),
                                atol=ATOL, rtol=ATOL)
