"""Coupled groups, keep sets and physical shrinking (sparsejax.shrink)."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from shrink_helpers import ATOL, INIT, batch, count, randomize, run

import sparsejax as sj
from sparsejax import models as M
from sparsejax.shrink import (
    Group,
    Member,
    block_mask,
    coupled_groups,
    group_mask,
    keep_sets,
    removable_blocks,
    remove_blocks,
    shrink,
)
from sparsejax.train import create_train_state, make_train_step
from sparsejax.tree import path_str


@pytest.fixture(autouse=True)
def _float32_matmuls():
    with jax.default_matmul_precision("float32"):
        yield


def masked_model(model, mask, groups, keep):
    """The reference: the original model with the user's mask and the group mask applied."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = sj.apply_mask(params, mask) if mask is not None else params
    params = sj.apply_mask(params, group_mask(groups, params, keep))
    out = nnx.merge(graphdef, params, rest, copy=True)
    out.eval()
    return out


def check_equivalent(model, mask_or_keep, x, *, is_mask=True, jit=True):
    groups = coupled_groups(model)
    params = nnx.state(model, nnx.Param)
    keep = keep_sets(groups, params, mask_or_keep)
    small = shrink(model, mask_or_keep, groups=groups)
    ref = masked_model(model, mask_or_keep if is_mask else None, groups, keep)
    chex.assert_trees_all_close(run(small, x, jit), run(ref, x, jit), atol=ATOL, rtol=ATOL)
    return small, groups, keep


def neuron_mask(model, prunable, sparsity=0.5):
    """L1-filter Neurons mask, layerwise (Li et al. 2017), built on the host.

    Same result as ``sj.prune(sj.scores.magnitude(params), sparsity, structure=sj.Neurons(),
    prunable=prunable)`` (checked in ``test_neuron_mask_helper_equals_prune``) without its
    per-test compilations.
    """
    params = nnx.state(model, nnx.Param)
    pattern = re.compile(prunable) if prunable is not None else None

    def one(kp, p):
        path = path_str(kp)
        arr = np.asarray(p)
        if (pattern is None and arr.ndim < 2) or (pattern is not None and not pattern.search(path)):
            return jnp.ones((), bool)
        score = np.abs(arr).reshape(-1, arr.shape[-1]).sum(0)
        k = round(sparsity * arr.shape[-1])
        keep = np.ones(arr.shape[-1], bool)
        keep[np.argsort(score, kind="stable")[:k]] = False
        return jnp.asarray(keep.reshape((1,) * (arr.ndim - 1) + (-1,)))

    return jax.tree_util.tree_map_with_path(one, params)


def test_neuron_mask_helper_equals_prune():
    model = M.MLP((6, 5, 4, 3), rngs=nnx.Rngs(0), **INIT)
    params = nnx.state(model, nnx.Param)
    mask = jax.jit(
        lambda p: sj.prune(
            sj.scores.magnitude(p), 0.4, structure=sj.Neurons(), prunable=r"layers/[01]/kernel"
        )
    )(params)
    chex.assert_trees_all_equal(mask, neuron_mask(model, r"layers/[01]/kernel", 0.4))
    assert [int(m.sum()) for m in jax.tree.leaves(mask)] == [1, 3, 1, 2, 1, 1]


# ----------------------------------------------------------------------------- groups


def test_groups_of_lenet5_follow_the_nhwc_flatten():
    groups = {g.name: g for g in coupled_groups(M.LeNet5(rngs=nnx.Rngs(0), **INIT))}
    assert set(groups) == {"conv1/kernel:3", "conv2/kernel:3", "fc1/kernel:1", "fc2/kernel:1"}
    g = groups["conv2/kernel:3"]
    assert g.size == 50 and g.blocked is None
    # one conv2 channel owns 4·4 = 16 rows of fc1 (rows p·50 + c), its bias one entry
    assert g.members == (
        Member("conv2/kernel", 3),
        Member("conv2/bias", 0),
        Member("fc1/kernel", 0, outer=16),
    )
    assert "reach the model output" in groups["fc2/kernel:1"].blocked


def test_groups_of_mnist1d_follow_the_channel_major_flatten():
    groups = {g.name: g for g in coupled_groups(M.MNIST1DCNN(rngs=nnx.Rngs(0), **INIT))}
    # 40 -> 19 -> 10 -> 5: a conv3 channel owns 5 consecutive rows of `linear`
    assert Member("linear/kernel", 0, inner=5) in groups["conv3/kernel:2"].members
    assert Member("conv2/kernel", 1) in groups["conv1/kernel:2"].members


def test_resnet_groups_internal_channels_and_streams():
    a = {g.name: g for g in coupled_groups(M.CifarResNet(8, (8, 8, 3), rngs=nnx.Rngs(0), **INIT))}
    internal = a["blocks/1/conv1/kernel:3"]
    assert internal.blocked is None and internal.size == 32
    assert {(m.path, m.axis) for m in internal.members} == {
        ("blocks/1/conv1/kernel", 3),
        ("blocks/1/bn1/scale", 0),
        ("blocks/1/bn1/bias", 0),
        ("blocks/1/bn1/mean", 0),
        ("blocks/1/bn1/var", 0),
        ("blocks/1/conv2/kernel", 2),
    }
    # option A: the zero-padded shortcut ties the stage streams partially -> blocked
    assert "pad" in a["conv/kernel:3"].blocked
    b = {
        g.name: g
        for g in coupled_groups(M.CifarResNet(8, (8, 8, 3), shortcut="B", rngs=nnx.Rngs(0), **INIT))
    }
    stream = b["conv/kernel:3"]  # stage-1 stream: stem conv, bn, block 0's output, block 1's inputs
    assert stream.blocked is None
    assert {(m.path, m.axis) for m in stream.members} >= {
        ("bn/scale", 0),
        ("blocks/0/conv1/kernel", 2),
        ("blocks/0/conv2/kernel", 3),
        ("blocks/0/bn2/bias", 0),
        ("blocks/1/conv1/kernel", 2),
        ("blocks/1/shortcut_conv/kernel", 2),
    }


def test_transformer_head_groups():
    model = M.TransformerClassifier(
        (8, 8, 1), patch_shape=(4, 4, 1), dim=16, num_heads=4, depth=1, qkv_bias=True,
        rngs=nnx.Rngs(0), **INIT,
    )  # fmt: skip
    groups = {g.name: g for g in coupled_groups(model)}
    heads = groups["blocks/0/attn/query/kernel:1"]
    assert heads.size == 4 and heads.blocked is None
    assert {(m.path, m.axis) for m in heads.members} == {
        ("blocks/0/attn/query/kernel", 1),
        ("blocks/0/attn/query/bias", 0),
        ("blocks/0/attn/key/kernel", 1),
        ("blocks/0/attn/key/bias", 0),
        ("blocks/0/attn/value/kernel", 1),
        ("blocks/0/attn/value/bias", 0),
        ("blocks/0/attn/out/kernel", 0),
    }
    assert "reduces over its units" in groups["embed/kernel:1"].blocked  # LayerNorm


# ----------------------------------------------------------------------------- shrink


def test_lenet300100_neurons_exact_count_and_equivalence():
    model = randomize(M.LeNet300100(rngs=nnx.Rngs(0), **INIT))
    mask = neuron_mask(model, r"layers/[01]/kernel")
    small, _, keep = check_equivalent(model, mask, batch((3, 784)))
    assert small.features == (784, 150, 50, 10)
    assert [len(k) for k in keep.values()] == [150, 50, 10]
    assert count(small) == 784 * 150 + 150 + 150 * 50 + 50 + 50 * 10 + 10 == 125_810
    assert count(model) == 266_610  # original untouched


def test_mlp_keep_indices():
    model = randomize(M.MLP((40, 32, 16, 10), rngs=nnx.Rngs(1), **INIT))
    keep = {"layers/0/kernel": [0, 3, 5, 31], "layers/1/kernel:1": np.arange(0, 16, 2)}
    small, _, _ = check_equivalent(model, keep, batch((4, 40)), is_mask=False)
    np.testing.assert_array_equal(
        small.layers[0].kernel[...], model.layers[0].kernel[...][:, [0, 3, 5, 31]]
    )
    assert count(small) == 40 * 4 + 4 + 4 * 8 + 8 + 8 * 10 + 10 == 294


def test_lenet5_shrink():
    model = randomize(M.LeNet5(rngs=nnx.Rngs(0), **INIT))
    mask = neuron_mask(model, r"(conv1|conv2|fc1)/kernel")
    small, _, _ = check_equivalent(model, mask, batch((2, 28, 28, 1)))
    # conv1 20->10, conv2 50->25, fc1 500->250 (4·4·25 = 400 inputs)
    expected = (25 * 10 + 10) + (25 * 10 * 25 + 25) + (400 * 250 + 250) + (250 * 10 + 10)
    assert count(small) == expected == 109_295
    assert small.fc1.in_features == 400 and small.conv2.in_features == 10


@pytest.mark.parametrize("depth", [2, 4, 6])
def test_convnets_shrink(depth):
    model = randomize(
        M.ConvNet(depth, (8, 8, 3), 10, dense_features=(32, 16), rngs=nnx.Rngs(0), **INIT)
    )
    mask = neuron_mask(model, r"(convs/\d+|dense/[01])/kernel")
    small, _, _ = check_equivalent(model, mask, batch((2, 8, 8, 3)))
    widths = [32 * 2 ** (i // 2) for i in range(depth)]  # half of 64·2^stage
    convs = sum(9 * c_in * c_out + c_out for c_in, c_out in zip([3, *widths], widths))
    flat = (8 // 2 ** (depth // 2)) ** 2 * widths[-1]
    dense = flat * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10
    assert count(small) == convs + dense


def test_mnist1d_cnn_shrink():
    model = randomize(M.MNIST1DCNN(rngs=nnx.Rngs(0), **INIT))
    mask = neuron_mask(model, r"conv\d/kernel", sparsity=0.4)  # 25 -> 15 channels
    small, _, _ = check_equivalent(model, mask, batch((3, 40)))
    assert count(small) == (5 * 15 + 15) + 2 * (3 * 15 * 15 + 15) + (15 * 5 * 10 + 10) == 2_230


def resnet_count(depth, frac, shortcut="A", width=16, classes=10):
    """Closed-form parameter count with the internal channels of every block scaled by frac."""
    n = (depth - 2) // 6
    total = 9 * 3 * width + 2 * width
    c_in = width
    for stage in range(3):
        out = width * 2**stage
        mid = int(out * frac)
        for _ in range(n):
            total += 9 * c_in * mid + 2 * mid + 9 * mid * out + 2 * out
            if shortcut == "B" and c_in != out:
                total += c_in * out + 2 * out
            c_in = out
    return total + c_in * classes + classes


@pytest.mark.parametrize("depth,shortcut", [(20, "A"), (20, "B"), (56, "A"), (56, "B")])
def test_resnet_internal_channels(depth, shortcut):
    model = randomize(M.CifarResNet(depth, (8, 8, 3), shortcut=shortcut, rngs=nnx.Rngs(0), **INIT))
    mask = neuron_mask(model, r"conv1/kernel")
    small, _, _ = check_equivalent(model, mask, batch((2, 8, 8, 3)), jit=False)
    assert count(small) == resnet_count(depth, 0.5, shortcut)
    if (depth, shortcut) == (20, "A"):
        assert count(small) == 135_754 and count(model) == 269_722


def test_masking_only_the_kernel_is_not_the_masked_model_with_batchnorm():
    """Why the masked model zeroes BN scale/bias too: a zeroed filter + BN outputs the BN shift."""
    model = randomize(M.CifarResNet(8, (8, 8, 3), rngs=nnx.Rngs(0), **INIT))
    mask = neuron_mask(model, r"conv1/kernel")
    x = batch((2, 8, 8, 3))
    small = shrink(model, mask)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    kernel_only = nnx.merge(graphdef, sj.apply_mask(params, mask), rest, copy=True)
    gap = run(small, x, jit=False) - run(kernel_only, x, jit=False)
    assert float(jnp.max(jnp.abs(gap))) > 1e-2


def test_resnet_option_b_stream_channels():
    model = randomize(M.CifarResNet(8, (8, 8, 3), shortcut="B", rngs=nnx.Rngs(0), **INIT))
    keep = {"conv/kernel": list(range(0, 16, 2))}  # stage-1 stream: 16 -> 8 channels
    small, _, _ = check_equivalent(model, keep, batch((2, 8, 8, 3)), is_mask=False, jit=False)
    assert small.conv.out_features == 8 and small.blocks[0].out_channels == 8
    assert small.blocks[1].shortcut_conv.in_features == 8
    # removed: stem 9·3·8 + 2·8; block 0: conv1 in 8·9·16, conv2 out 9·16·8, bn2 2·8;
    # block 1: conv1 in 8·9·32, shortcut 8·32
    removed = (9 * 3 * 8 + 16) + (8 * 9 * 16 + 9 * 16 * 8 + 16) + (8 * 9 * 32 + 8 * 32)
    assert count(model) - count(small) == removed


def test_vgg16_shrink():
    model = randomize(M.VGG16((32, 32, 3), 4, rngs=nnx.Rngs(0), **INIT))
    mask = neuron_mask(model, r"convs/\d+/kernel")
    small, _, _ = check_equivalent(model, mask, batch((2, 32, 32, 3)))
    widths = [w // 2 for w in M.VGG16_CONFIG if w != "M"]
    convs = sum(9 * a * b + 2 * b for a, b in zip([3, *widths], widths))
    assert count(small) == convs + 256 * 4 + 4


def test_transformer_heads_and_mlp_neurons():
    model = randomize(
        M.TransformerClassifier(
            (8, 8, 1),
            patch_shape=(4, 4, 1),
            dim=16,
            num_heads=4,
            depth=2,
            mlp_dim=32,
            qkv_bias=True,
            rngs=nnx.Rngs(0),
            **INIT,
        )
    )
    params = nnx.state(model, nnx.Param)
    mask = neuron_mask(model, r"fc1/kernel", sparsity=0.25)  # 32 -> 24 MLP neurons
    heads = jax.tree.map(lambda m: m, mask)
    head_keep = jnp.asarray([True, False, True, False])[None, :, None]  # keep heads 0 and 2
    heads["blocks"][0]["attn"]["query"]["kernel"] = nnx.Param(head_keep)
    sj.validate_mask(params, heads)
    small, _, keep = check_equivalent(model, heads, batch((2, 8, 8, 1)))
    assert keep["blocks/0/attn/query/kernel:1"] == (0, 2)
    assert small.blocks[0].attn.num_heads == 2 and small.blocks[1].attn.num_heads == 4
    assert small.blocks[0].fc1.out_features == 24
    # removed: 2 heads of block 0 (q/k/v kernels 16·4 + biases 4 each, out 4·16) and
    # 8 MLP neurons per block (fc1 16·8 + 8, fc2 8·16)
    removed = 2 * (3 * (16 * 4 + 4) + 4 * 16) + 2 * (16 * 8 + 8 + 8 * 16)
    assert count(model) - count(small) == removed == 1_064


def test_shrunk_model_trains_one_jitted_step():
    """A shrunk conv-BN-dense model (BatchNorm in training mode) takes a jitted SGD step."""
    model = M.VGG((8, "M"), (4, 4, 3), 4, rngs=nnx.Rngs(0), **INIT)
    small = shrink(model, neuron_mask(model, r"convs/0/kernel"))
    assert small.convs[0].out_features == 4 and small.classifier[0].in_features == 2 * 2 * 4
    state = create_train_state(small, optax.sgd(0.1), key=0)
    x, y = batch((4, 4, 4, 3)), jnp.asarray([0, 1, 2, 3])
    new_state, metrics = make_train_step()(state, (x, y))
    assert int(new_state.step) == 1 and np.isfinite(float(metrics["loss"]))
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new_state.params)
    assert all(jax.tree.leaves(moved))  # every (shrunk) parameter received a gradient step
    assert jax.tree.map(jnp.shape, new_state.params) == jax.tree.map(jnp.shape, state.params)
    stats = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.rest, new_state.rest)
    assert any(jax.tree.leaves(stats))  # running BatchNorm statistics of the shrunk channels


def test_shrink_jitted_forward_equals_eager_and_original_untouched():
    model = randomize(M.MNIST1DCNN(rngs=nnx.Rngs(0), **INIT))
    before = jax.tree.map(np.asarray, nnx.state(model))
    small = shrink(model, {"conv2/kernel": [1, 2, 3]})
    x = batch((3, 40))
    graphdef, state = nnx.split(small)
    jitted = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, x)
    chex.assert_trees_all_close(jitted, small(x), atol=ATOL)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, nnx.state(model)), before)


# ------------------------------------------------------------------- explicit spec / errors


class TwoLayer(nnx.Module):
    """A user model with a cumulative sum over its hidden units.

    The tracer conservatively blocks the hidden group, although removing units whose
    activations are exactly zero leaves every kept partial sum unchanged: a case for an
    explicit spec.
    """

    def __init__(self, rngs):
        self.a = nnx.Linear(6, 5, rngs=rngs)
        self.b = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        h = jnp.cumsum(jax.nn.relu(self.a(x)), axis=-1)
        return self.b(h)


def test_explicit_spec_for_a_user_model():
    model = TwoLayer(nnx.Rngs(0))
    x = batch((4, 6))
    traced = coupled_groups(model, x)
    assert "cumsum" in traced[0].blocked  # the analysis names the op that stopped it
    spec = [Group(5, (Member("a/kernel", 1), Member("a/bias", 0), Member("b/kernel", 0)))]
    small = shrink(model, {"a/kernel:1": [0, 4]}, groups=spec, inputs=x)
    params = nnx.state(model, nnx.Param)
    keep = keep_sets(spec, params, {0: [0, 4]})
    ref = nnx.merge(*nnx.split(model), copy=True)
    nnx.update(ref, sj.apply_mask(params, group_mask(spec, params, keep)))
    chex.assert_trees_all_close(small(x), ref(x), atol=ATOL)
    assert small.b.in_features == 2


class Looped(nnx.Module):
    """Hidden units through a lax.scan (iterated body): the analysis must not guess."""

    def __init__(self, rngs):
        self.a = nnx.Linear(6, 5, rngs=rngs)
        self.b = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        h, _ = jax.lax.scan(lambda c, _: (2.0 * c, None), jax.nn.relu(self.a(x)), None, length=3)
        return self.b(h)


def test_unsupported_primitive_blocks_and_shrink_names_it():
    model = Looped(nnx.Rngs(0))
    x = batch((2, 6))
    (hidden, logits) = coupled_groups(model, x)
    assert hidden.members == (Member("a/kernel", 1), Member("a/bias", 0))
    assert hidden.blocked == "primitive 'scan' (not supported by the coupling analysis) consumes it"
    assert logits.blocked == "its units reach the model output"
    with pytest.raises(ValueError, match=r"'a/kernel:1' cannot be shrunk: primitive 'scan'"):
        shrink(model, {"a/kernel": [0, 1]}, inputs=x)


def test_bad_specs_and_keeps_name_the_path():
    model = TwoLayer(nnx.Rngs(0))
    x = batch((4, 6))
    with pytest.raises(ValueError, match="'a/kernl'"):
        shrink(model, {0: [0]}, groups=[Group(5, (Member("a/kernl", 1),))], inputs=x)
    with pytest.raises(ValueError, match="'b/kernel' axis 0 has 5 entries, expected"):
        shrink(model, {0: [0]}, groups=[Group(4, (Member("b/kernel", 0),))], inputs=x)
    spec = [Group(5, (Member("a/kernel", 1), Member("b/kernel", 0)))]
    with pytest.raises(ValueError, match="outside"):
        shrink(model, {0: [7]}, groups=spec, inputs=x)
    with pytest.raises(ValueError, match="names no group"):
        shrink(model, {"c/kernel": [0]}, groups=spec, inputs=x)
    with pytest.raises(ValueError, match="cumsum"):
        shrink(model, {"a/kernel": [0]}, inputs=x)  # traced group is blocked
    with pytest.raises(ValueError, match="belongs to two groups"):
        shrink(model, {0: [0]}, groups=[*spec, Group(5, (Member("a/kernel", 1),))], inputs=x)


def test_spec_dataclasses_validate():
    with pytest.raises(ValueError, match="axis must be >= 0"):
        Member("w", -1)
    with pytest.raises(TypeError, match="outer must be an int"):
        Member("w", 0, outer=2.0)
    with pytest.raises(ValueError, match="size must be >= 1"):
        Group(0, (Member("w", 0),))
    with pytest.raises(ValueError, match="lists axis 1 of 'w' twice"):
        Group(3, (Member("w", 1), Member("w", 1, inner=2)))
    with pytest.raises(TypeError, match="nnx.Module"):
        coupled_groups({"w": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match="no list of blocks"):
        remove_blocks(M.LeNet5(rngs=nnx.Rngs(0), **INIT), [0])


def test_inconsistent_and_blocked_masks():
    model = M.LeNet300100(rngs=nnx.Rngs(0), **INIT)
    params = nnx.state(model, nnx.Param)
    groups = coupled_groups(model)
    full = neuron_mask(model, None)  # also prunes the 10 logits of layers/2
    with pytest.raises(ValueError, match="'layers/2/kernel:1' cannot be shrunk: .*model output"):
        keep_sets(groups, params, full)
    keep = keep_sets(groups, params, full, strict=False)
    assert [len(k) for k in keep.values()] == [150, 50, 10]
    # a mask on the next layer's input rows (InputChannels) that contradicts the leader
    rows = sj.prune(sj.scores.magnitude(params), 0.5, structure=sj.InputChannels(),
                    prunable=r"layers/1/kernel")  # fmt: skip
    with pytest.raises(ValueError, match="coupled member 'layers/1/kernel'"):
        keep_sets(groups, params, rows)
    none = jax.tree.map(lambda m: jnp.zeros_like(m), neuron_mask(model, r"layers/0/kernel"))
    with pytest.raises(ValueError, match="every unit"):
        keep_sets(groups, params, none)


def test_head_dim_groups_that_break_attention_raise():
    model = M.TransformerClassifier(
        (8, 8, 1), patch_shape=(4, 4, 1), dim=16, num_heads=2, depth=1, rngs=nnx.Rngs(0), **INIT
    )
    with pytest.raises(ValueError, match="does not run"):
        shrink(model, {"blocks/0/attn/query/kernel:2": [0, 1, 2]})  # q/k head width 8 -> 3
    with pytest.raises(ValueError, match="leads several groups"):
        shrink(model, {"blocks/0/attn/query/kernel": [0]})  # heads (axis 1) or width (axis 2)?


# ----------------------------------------------------------------------------- blocks


def test_remove_resnet_blocks_equals_block_mask():
    model = randomize(M.CifarResNet(20, (8, 8, 3), rngs=nnx.Rngs(0), **INIT))
    assert removable_blocks(model) == (0, 1, 2, 4, 5, 7, 8)
    small, removed = remove_blocks(model, [1, 5])
    assert removed == (1, 5) and len(small.blocks) == 7
    assert count(model) - count(small) == (2 * 9 * 16 * 16 + 4 * 16) + (2 * 9 * 32 * 32 + 4 * 32)
    ref = nnx.merge(*nnx.split(model), copy=True)
    nnx.update(ref, sj.apply_mask(nnx.state(model, nnx.Param), block_mask(model, [1, 5])))
    x = batch((2, 8, 8, 3))
    chex.assert_trees_all_close(run(small, x, jit=False), run(ref, x, jit=False), atol=ATOL)
    with pytest.raises(ValueError, match="blocks/3 cannot be removed: .*stride 2"):
        remove_blocks(model, [3])
    with pytest.raises(ValueError, match="block index 9 out of range"):
        block_mask(model, [9])


def test_remove_transformer_blocks_from_a_layers_mask():
    model = randomize(
        M.TransformerClassifier(
            (8, 8, 1), patch_shape=(4, 4, 1), dim=16, depth=2, rngs=nnx.Rngs(0), **INIT
        )
    )
    params = nnx.state(model, nnx.Param)
    # a Layers()-structured mask (scalar leaves) pruning every kernel of block 0
    mask = jax.tree_util.tree_map_with_path(
        lambda kp, p: jnp.asarray(not re.match(r"blocks/0/.*kernel", path_str(kp))), params
    )
    small, removed = remove_blocks(model, mask)
    assert removed == (0,) and len(small.blocks) == 1
    per_block = 2 * 2 * 16 + 4 * 16 * 16 + 16 + 16 * 64 + 64 + 64 * 16 + 16
    assert count(model) - count(small) == per_block == 3_232
    ref = nnx.merge(*nnx.split(model), copy=True)
    nnx.update(ref, sj.apply_mask(params, block_mask(model, removed)))
    x = batch((2, 8, 8, 1))
    chex.assert_trees_all_close(run(small, x), run(ref, x), atol=ATOL)
