"""Tests of the model zoo: exact parameter counts, forward shapes, jit == eager, masks, modes.

Parameter counts are checked on abstract models (``nnx.eval_shape``: the real
constructors and default initializers, no compilation). Forward tests build the
models with a NumPy-backed initializer (``_numpy_init``): on CPU each new shape
of a threefry-based initializer costs a separate XLA compilation, which would
dominate the run time of this file.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import sparsejax
from sparsejax.models import (
    MLP,
    MNIST1DCNN,
    MODEL_NAMES,
    VGG,
    VGG16,
    CifarResNet,
    Conv2,
    Conv4,
    Conv6,
    ConvNet,
    LeNet5,
    LeNet300100,
    MultiHeadSelfAttention,
    ResNet20,
    ResNet56,
    TransformerClassifier,
    create_model,
    mnist1d_mlp,
    patchify,
)
from sparsejax.tree import path_str

BATCH = 2


@pytest.fixture(autouse=True)
def _float32_matmuls():
    """Full-float32 convolutions and matmuls: on GPUs the default (TF32) differs between
    jitted and eager kernels by ~1e-3; on CPU this changes nothing."""
    with jax.default_matmul_precision("highest"):
        yield


def count(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _numpy_init(seed: int):
    """Initializer drawing N(0, 1/fan_in) from a NumPy generator (ignores the JAX key)."""
    gen = np.random.default_rng(seed)

    def init(key, shape, dtype=jnp.float32):
        del key
        fan_in = math.prod(shape[:-1]) if len(shape) > 1 else 1
        return jnp.asarray(gen.standard_normal(shape) / np.sqrt(fan_in), dtype)

    return init


# name, input_shape, kwargs, exact parameter count, class.
# Hand counts (weights + biases; BatchNorm scale + bias; running averages excluded):
#   lenet300100: 784*300+300 + 300*100+100 + 100*10+10                         = 266,610
#   mlp 40-500-500-10: 40*500+500 + 500*500+500 + 500*10+10                    = 276,010
#   lenet5 28x28 VALID: (25*20+20) + (25*20*50+50) + (4*4*50*500+500) + (500*10+10) = 431,080
#   lenet5 8x8 SAME: 520 + 25,050 + (2*2*50*500+500) + 5,010                   = 131,080
#   conv2: (27*64+64) + (576*64+64) + (16*16*64*256+256) + (256*256+256) + 2,570 = 4,301,642
#   conv4: 1,792 + 36,928 + (576*128+128) + (1152*128+128) + (8*8*128*256+256)
#          + 65,792 + 2,570                                                    = 2,425,930
#   conv6: 1,792 + 36,928 + 73,856 + 147,584 + (1152*256+256) + (2304*256+256)
#          + (4*4*256*256+256) + 65,792 + 2,570                                = 2,262,602
#   conv6 on 28x28x1 (28->14->7->3): 640 + ... + (3*3*256*256+256) + ...       = 1,802,698
#   mnist1d_cnn: (5*25+25) + 2*(3*25*25+25) + (125*10+10)                      = 5,210
#   resnet20 A: stem 432 + 32; stage1 3*(2*2,304 + 64) = 14,016;
#               stage2 (4,608+9,216+128) + 2*(2*9,216+128) = 51,072;
#               stage3 (18,432+36,864+256) + 2*(2*36,864+256) = 203,520; fc 650 = 269,722
#   resnet56 A: 464 + 9*4,672 + (13,952 + 8*18,560) + (55,552 + 8*73,984) + 650 = 853,018
#   option B adds (16*32 + 2*32) + (32*64 + 2*64) = 2,752: 272,474 (ResNet-56 B: 855,770)
#   vgg16: conv kernels 14,710,464 + BN 2*4,224 + 512*10+10                    = 14,724,042
#   vgg16 512-512-512-10 head: 14,718,912 + 2*(512*512+512) + 5,130            = 15,249,354
#   transformer MNIST 7x7 patches, dim 64, depth 2, 4 heads, mlp 256, cls:
#     embed 49*64+64 + cls 64 + pos 17*64 + 2*(2*128 + 3*64*64 + 64*64+64 + 64*256+256
#     + 256*64+64) + norm 128 + head 650 = 3,200 + 64 + 1,088 + 99,584 + 128 + 650 = 104,714
#   transformer MNIST-1D (40 tokens of 1 value): 128 + 64 + 41*64 + 99,584 + 778 = 103,178
#   transformer tokens (vocab 50, length 16): 50*64 + 64 + 17*64 + 99,584 + 778  = 104,714
COUNT_CASES = [
    ("lenet300100", (28, 28, 1), {}, 266_610, LeNet300100),
    ("mlp", (40,), {}, 276_010, MLP),
    ("lenet5", (28, 28, 1), {}, 431_080, LeNet5),
    ("lenet5", (8, 8, 1), {"padding": "SAME"}, 131_080, LeNet5),
    ("conv2", (32, 32, 3), {}, 4_301_642, Conv2),
    ("conv4", (32, 32, 3), {}, 2_425_930, Conv4),
    ("conv6", (32, 32, 3), {}, 2_262_602, Conv6),
    ("conv6", (28, 28, 1), {}, 1_802_698, Conv6),
    ("mnist1d_cnn", (40,), {}, 5_210, MNIST1DCNN),
    ("resnet20", (32, 32, 3), {}, 269_722, ResNet20),
    ("resnet20", (32, 32, 3), {"shortcut": "B"}, 272_474, ResNet20),
    ("resnet56", (32, 32, 3), {}, 853_018, ResNet56),
    ("vgg16", (32, 32, 3), {}, 14_724_042, VGG16),
    ("vgg16", (32, 32, 3), {"classifier_features": (512, 512)}, 15_249_354, VGG16),
    ("transformer", (28, 28, 1), {"patch_shape": (7, 7, 1)}, 104_714, TransformerClassifier),
    ("transformer", (40,), {}, 103_178, TransformerClassifier),
    ("transformer", (16,), {"vocab_size": 50}, 104_714, TransformerClassifier),
]


@pytest.mark.parametrize(
    "name,shape,kwargs,expected,cls",
    COUNT_CASES,
    ids=[f"{c[0]}-{'x'.join(map(str, c[1]))}-{len(c[2])}" for c in COUNT_CASES],
)
def test_exact_parameter_count(name, shape, kwargs, expected, cls):
    model = nnx.eval_shape(
        lambda: create_model(name, rngs=nnx.Rngs(0), input_shape=shape, num_classes=10, **kwargs)
    )
    assert type(model) is cls
    assert count(model) == expected


def test_registry_covers_every_name_and_rejects_unknown():
    assert set(MODEL_NAMES) == {c[0] for c in COUNT_CASES}
    with pytest.raises(ValueError, match=r"unknown model 'resnet18'.*lenet300100.*transformer"):
        create_model("resnet18", rngs=nnx.Rngs(0), input_shape=(32, 32, 3), num_classes=10)
    with pytest.raises(TypeError, match="name must be a string"):
        create_model(20, rngs=nnx.Rngs(0), input_shape=(32, 32, 3), num_classes=10)
    with pytest.raises(ValueError, match=r"input_shape\[1\] must be a positive integer"):
        create_model("lenet5", rngs=nnx.Rngs(0), input_shape=(28, 0, 1), num_classes=10)


def test_generic_constructors():
    a = nnx.eval_shape(lambda: mnist1d_mlp(rngs=nnx.Rngs(0)))
    assert a.features == (40, 500, 500, 10) and count(a) == 276_010
    # ResNet-8 (n = 1), option A: stem 432 + 32, stage 1: 2*2,304 + 64 = 4,672,
    # stage 2: 4,608 + 9,216 + 128 = 13,952, stage 3: 18,432 + 36,864 + 256 = 55,552, fc 650.
    b = nnx.eval_shape(lambda: CifarResNet(8, rngs=nnx.Rngs(0)))
    assert count(b) == 75_290 and len(b.blocks) == 3 and b.blocks_per_stage == 1
    # VGG (8, M, 16, M) on 8x8x3, 100 classes: 3*3*3*8 + 2*8 + 3*3*8*16 + 2*16 + 2*2*16*100 + 100.
    d = nnx.eval_shape(lambda: VGG((8, "M", 16, "M"), (8, 8, 3), 100, rngs=nnx.Rngs(0)))
    assert count(d) == 216 + 16 + 1_152 + 32 + 6_500
    assert d.pool_after == frozenset({0, 1})


# ----------------------------------------------------------------------------- forward


TRANSFORMER_KW = {"patch_shape": (7, 7, 1)}  # dim 64, depth 2, 4 heads of 16, mlp 256, cls
FORWARD_CASES = {
    # id: (registry name, input_shape, kwargs, classes)
    "lenet300100": ("lenet300100", (28, 28, 1), {}, 10),
    "mlp": ("mlp", (40,), {"hidden": (32, 16)}, 10),
    "lenet5": ("lenet5", (28, 28, 1), {}, 10),
    "lenet5_digits": ("lenet5", (8, 8, 1), {"padding": "SAME"}, 10),
    "conv2": ("conv2", (32, 32, 3), {}, 10),
    "conv4": ("conv4", (32, 32, 3), {}, 10),
    "conv6": ("conv6", (32, 32, 3), {}, 10),
    "mnist1d_cnn": ("mnist1d_cnn", (40,), {}, 10),
    "resnet20": ("resnet20", (32, 32, 3), {}, 10),
    "resnet20_B": ("resnet20", (32, 32, 3), {"shortcut": "B"}, 10),
    "resnet56": ("resnet56", (32, 32, 3), {}, 10),
    "vgg16": ("vgg16", (32, 32, 3), {"classifier_features": (64,), "dropout_rate": 0.5}, 10),
    "transformer_mnist": ("transformer", (28, 28, 1), TRANSFORMER_KW, 10),
}
FORWARD_IDS = list(FORWARD_CASES)
# Same code as resnet20 / conv2 + conv6; skipping their whole-model compilations saves time.
NO_JIT = ("resnet56", "conv4")
# The masking test needs one model per code path (same classes as skipped ones are covered).
MASK_IDS = [c for c in FORWARD_IDS if c not in ("resnet56", "conv4", "lenet5_digits")]
BN_MODELS = ("resnet20", "resnet20_B", "resnet56", "vgg16")
_CACHE: dict[str, nnx.Module] = {}


def build(case: str) -> nnx.Module:
    """A fresh copy of the case's model (built once per session, then cloned)."""
    if case not in _CACHE:
        name, shape, kwargs, classes = FORWARD_CASES[case]
        extra = {"kernel_init": _numpy_init(len(_CACHE))}
        if name == "transformer":
            extra["pos_init"] = _numpy_init(100 + len(_CACHE))
        if name == "vgg16":
            extra["classifier_init"] = _numpy_init(200)
        _CACHE[case] = create_model(
            name, rngs=nnx.Rngs(0), input_shape=shape, num_classes=classes, **kwargs, **extra
        )
    return nnx.clone(_CACHE[case])


def batch_for(case: str) -> np.ndarray:
    _, shape, _, _ = FORWARD_CASES[case]
    return np.random.default_rng(1).standard_normal((BATCH, *shape)).astype(np.float32)


@jax.jit
def apply_jit(graphdef, state, x):
    """Pure jitted forward, the way a train / eval step calls a split model: (logits, new state)."""
    model = nnx.merge(graphdef, state)
    return model(x), nnx.state(model)


@pytest.mark.parametrize("case", FORWARD_IDS)
def test_forward_shape_and_jit_equals_eager(case):
    model = build(case)
    if case in BN_MODELS:
        model.eval()  # jit and eager both use the running averages (deterministic)
    x = batch_for(case)
    classes = FORWARD_CASES[case][3]
    eager = model(x)
    assert eager.shape == (BATCH, classes) and eager.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(eager)))
    if case not in NO_JIT:
        jitted, _ = apply_jit(*nnx.split(model), x)
        chex.assert_trees_all_close(jitted, eager, rtol=1e-5, atol=1e-5)
    # The logits depend on the input (no dead network): a shifted batch changes them.
    assert not np.allclose(np.asarray(model(x + 1.0)), np.asarray(eager))


def test_nnx_jit_equals_eager_for_a_module_argument():
    model = build("lenet5")
    x = batch_for("lenet5")
    chex.assert_trees_all_close(nnx.jit(lambda m, v: m(v))(model, x), model(x), rtol=1e-5)


def test_mlp_flattens_any_input_shape():
    model = build("lenet300100")
    x = batch_for("lenet300100")
    chex.assert_trees_all_close(model(x.reshape(BATCH, 784)), model(x), rtol=1e-6)
    with pytest.raises(ValueError, match=r"784 features per example, got shape \(2, 785\)"):
        model(np.zeros((BATCH, 785), np.float32))


def _masks(params, seed: int):
    """``init_mask``, then per prunable leaf a random half kept and output unit 0 pruned."""
    gen = np.random.default_rng(seed)
    mask = jax.jit(sparsejax.init_mask)(params)  # one compilation for all leaves

    def one(m):
        if np.ndim(m) == 0:
            return m
        keep = gen.random(np.shape(m)) < 0.5
        keep[..., 0] = False
        return jnp.asarray(keep)

    return jax.tree.map(one, mask)


@pytest.mark.parametrize("case", MASK_IDS)
def test_masked_params_equal_hand_zeroed_model(case):
    model = build(case)
    model.eval()
    x = batch_for(case)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    mask = _masks(params, seed=7)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    masked_model = nnx.merge(graphdef, jax.jit(sparsejax.apply_mask)(params, mask), rest)

    # Reference: zero the same entries directly on the module's variables.
    ref = nnx.clone(model)
    wanted = {path_str(p): np.asarray(m) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0]}
    pruned = 0
    for path, node in nnx.iter_graph(ref):
        if isinstance(node, nnx.Param):
            keep = wanted["/".join(str(k) for k in path)]
            if keep.ndim:
                value = np.asarray(node[...]).copy()
                value[~keep] = 0.0
                node[...] = jnp.asarray(value)
                pruned += int((~keep).sum())
    total = count(model)
    assert 0.3 * total < pruned < 0.7 * total
    got, want = masked_model(x), ref(x)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(got), np.asarray(model(x)))
    # Exact zeros where the mask prunes: at most total - pruned nonzero parameters.
    leaves = jax.tree.leaves(nnx.state(masked_model, nnx.Param))
    assert sum(int(np.count_nonzero(np.asarray(v))) for v in leaves) <= total - pruned


# ----------------------------------------------------------------------------- modes


@pytest.mark.parametrize("case", ["resnet20", "vgg16"])
def test_batchnorm_train_and_eval_modes_differ(case):
    model = build(case)
    x = batch_for(case)
    model.eval()
    eval_out = model(x)
    stats = nnx.state(model, nnx.BatchStat)
    chex.assert_trees_all_close(model(x), eval_out)  # eval: pure, stats untouched
    chex.assert_trees_all_equal(nnx.state(model, nnx.BatchStat), stats)
    model.train()
    train_out, new_state = apply_jit(*nnx.split(model), x)
    assert not np.allclose(np.asarray(train_out), np.asarray(eval_out), atol=1e-3)
    new_stats = nnx.filter_state(new_state, nnx.BatchStat)
    assert not np.allclose(
        np.asarray(jax.tree.leaves(new_stats)[0]), np.asarray(jax.tree.leaves(stats)[0])
    )


def test_batchnorm_running_average_update_resnet20():
    model = build("resnet20")
    model.train()
    x = batch_for("resnet20")
    assert not model.bn.use_running_average and not model.blocks[0].bn1.use_running_average
    model.eval()
    stem = np.asarray(model.conv(x))
    model.train()
    graphdef, state = nnx.split(model)
    _, new_state = apply_jit(graphdef, state, x)
    trained = nnx.merge(graphdef, new_state)
    # Flax momentum 0.9: new = 0.9 * old + 0.1 * batch statistic (old mean 0, old var 1).
    chex.assert_trees_all_close(
        trained.bn.mean[...], 0.1 * stem.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )
    chex.assert_trees_all_close(
        trained.bn.var[...], 0.9 + 0.1 * stem.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )
    trained.eval()
    assert trained.bn.use_running_average and trained.blocks[-1].bn2.use_running_average


def test_dropout_is_active_in_train_mode_only():
    model = build("vgg16")  # classifier 512 -> 64 -> 10 with dropout 0.5
    x = batch_for("vgg16")
    model.eval()
    chex.assert_trees_all_equal(model(x), model(x))
    model.train()
    graphdef, state = nnx.split(model)
    c, state = apply_jit(graphdef, state, x)
    d, state = apply_jit(graphdef, state, x)  # the dropout stream advanced: a new mask
    assert not np.allclose(np.asarray(c), np.asarray(d))


# ----------------------------------------------------------------------------- shapes / options


def test_resnet_option_a_is_parameter_free_and_pads_channels():
    a = nnx.eval_shape(lambda: ResNet20(rngs=nnx.Rngs(0)))
    b = nnx.eval_shape(lambda: ResNet20(shortcut="B", rngs=nnx.Rngs(0)))
    assert [blk.projection for blk in a.blocks] == [False] * 9
    assert [blk.projection for blk in b.blocks] == [False] * 3 + [True, False, False] * 2
    assert b.blocks[3].shortcut_conv.kernel.shape == (1, 1, 16, 32)
    assert b.blocks[6].shortcut_conv.kernel.shape == (1, 1, 32, 64)
    # Option A shortcut: the block's output minus its residual branch is x[:, ::2, ::2]
    # zero-padded from 16 to 32 channels (before the final ReLU).
    model = build("resnet20")
    model.eval()
    blk = model.blocks[3]
    x = jnp.asarray(np.random.default_rng(3).standard_normal((BATCH, 32, 32, 16)), jnp.float32)
    branch = blk.bn2(blk.conv2(jax.nn.relu(blk.bn1(blk.conv1(x)))))
    assert branch.shape == (BATCH, 16, 16, 32)
    expected = jax.nn.relu(branch + jnp.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (0, 16))))
    chex.assert_trees_all_close(blk(x), expected, rtol=1e-6)


def test_kernel_layouts():
    lenet = nnx.eval_shape(lambda: LeNet5(rngs=nnx.Rngs(0)))
    assert lenet.conv1.kernel.shape == (5, 5, 1, 20) and lenet.fc1.kernel.shape == (800, 500)
    cnn = nnx.eval_shape(lambda: MNIST1DCNN(rngs=nnx.Rngs(0)))
    assert cnn.conv1.kernel.shape == (5, 1, 25) and cnn.conv2.kernel.shape == (3, 25, 25)
    assert cnn.linear.kernel.shape == (125, 10)
    vgg = nnx.eval_shape(lambda: VGG16(rngs=nnx.Rngs(0)))
    assert len(vgg.convs) == 13 and vgg.convs[12].kernel.shape == (3, 3, 512, 512)
    assert vgg.convs[0].bias is None and vgg.classifier[0].kernel.shape == (512, 10)
    conv6 = nnx.eval_shape(lambda: Conv6(rngs=nnx.Rngs(0)))
    assert [c.kernel.shape[-1] for c in conv6.convs] == [64, 64, 128, 128, 256, 256]
    assert [d.kernel.shape for d in conv6.dense] == [(4096, 256), (256, 256), (256, 10)]
    conv4 = nnx.eval_shape(lambda: Conv4(in_shape=(28, 28, 1), num_classes=5, rngs=nnx.Rngs(0)))
    assert conv4.dense[0].kernel.shape == (7 * 7 * 128, 256) and conv4.dense[2].kernel.shape[1] == 5


def test_mnist1d_cnn_lengths_and_channel_major_flatten():
    model = build("mnist1d_cnn")
    x = batch_for("mnist1d_cnn")
    chex.assert_trees_all_close(model(x[..., None]), model(x), rtol=1e-6)  # (b, L, 1) too
    h = jnp.asarray(x[..., None])
    for conv in (model.conv1, model.conv2, model.conv3):
        h = jax.nn.relu(conv(h))
    assert h.shape == (BATCH, 5, 25)  # 40 -> 19 -> 10 -> 5
    torch_order = np.asarray(h).transpose(0, 2, 1).reshape(BATCH, 125)  # NCL .view(b, -1)
    chex.assert_trees_all_close(model(x), model.linear(jnp.asarray(torch_order)), rtol=1e-5)


# ----------------------------------------------------------------------------- transformer


def test_attention_head_layout_and_reference_formula():
    attn = build("transformer_mnist").blocks[0].attn
    assert attn.num_heads == 4 and attn.head_dim == 16
    for proj in (attn.query, attn.key, attn.value):
        assert proj.kernel.shape == (64, 4, 16) and proj.bias is None
    assert attn.out.kernel.shape == (4, 16, 64) and attn.out.bias.shape == (64,)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((BATCH, 17, 64)), jnp.float32)
    q = jnp.einsum("btd,dhk->bthk", x, attn.query.kernel[...])
    k = jnp.einsum("btd,dhk->bthk", x, attn.key.kernel[...])
    v = jnp.einsum("btd,dhk->bthk", x, attn.value.kernel[...])
    w = jax.nn.softmax(jnp.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(16.0), axis=-1)
    o = jnp.einsum("bhqs,bshk->bqhk", w, v)
    want = jnp.einsum("bqhk,hkd->bqd", o, attn.out.kernel[...]) + attn.out.bias[...][None, None]
    chex.assert_trees_all_close(attn(x), want, rtol=1e-4, atol=1e-5)


def test_transformer_blocks_and_patches():
    model = build("transformer_mnist")
    assert model.num_tokens == 16 and model.pos_embedding.shape == (17, 64)
    assert len(model.blocks) == 2
    assert [blk.fc1.kernel.shape for blk in model.blocks] == [(64, 256)] * 2
    x = batch_for("transformer_mnist")
    patches = np.asarray(patchify(jnp.asarray(x), (7, 7, 1)))
    assert patches.shape == (BATCH, 16, 49)
    np.testing.assert_array_equal(patches[:, 1], x[:, :7, 7:14, 0].reshape(BATCH, 49))
    np.testing.assert_array_equal(patches[:, 4], x[:, 7:14, :7, 0].reshape(BATCH, 49))
    rows = nnx.eval_shape(
        lambda: create_model(
            "transformer", rngs=nnx.Rngs(0), input_shape=(28, 28, 1), num_classes=10
        )
    )
    assert rows.patch_shape == (1, 28, 1) and rows.num_tokens == 28


def test_transformer_on_mnist1d_sequences():
    def forward():
        model = create_model(
            "transformer", rngs=nnx.Rngs(0), input_shape=(40,), num_classes=10, pool="mean"
        )
        return model(jnp.zeros((BATCH, 40)))

    out = nnx.eval_shape(forward)
    assert out.shape == (BATCH, 10) and out.dtype == jnp.float32


def test_masked_head_equals_physically_removed_head():
    """A (1, H, 1) / (H, 1, 1) head mask == the model built with H - 1 heads and sliced kernels."""
    big = build("transformer_mnist")
    small = nnx.eval_shape(
        lambda: create_model(
            "transformer",
            rngs=nnx.Rngs(0),
            input_shape=(28, 28, 1),
            num_classes=10,
            num_heads=3,
            head_dim=16,
            **TRANSFORMER_KW,
        )
    )
    drop = 2
    graphdef, params, rest = nnx.split(big, nnx.Param, ...)
    keep_heads = np.arange(4) != drop

    def head_mask(path, p):
        name = path_str(path)
        if name.endswith(("query/kernel", "key/kernel", "value/kernel")):
            return jnp.asarray(keep_heads.reshape(1, 4, 1))
        if name.endswith("attn/out/kernel"):
            return jnp.asarray(keep_heads.reshape(4, 1, 1))
        return jnp.ones((), bool)

    mask = jax.tree_util.tree_map_with_path(head_mask, params)
    masked = nnx.merge(graphdef, jax.jit(sparsejax.apply_mask)(params, mask), rest)

    def shrink(path, p):
        name, value = path_str(path), np.asarray(p)
        if name.endswith(("query/kernel", "key/kernel", "value/kernel")):
            return jnp.asarray(np.delete(value, drop, axis=1))
        if name.endswith("attn/out/kernel"):
            return jnp.asarray(np.delete(value, drop, axis=0))
        return jnp.asarray(value)

    small_params = jax.tree_util.tree_map_with_path(shrink, params)
    small_graphdef = nnx.graphdef(small)  # abstract model: only its structure is used
    small = nnx.merge(small_graphdef, small_params, rest)
    assert small.blocks[0].attn.query.kernel.shape == (64, 3, 16)
    assert count(small) == 104_714 - 2 * 4 * 64 * 16
    x = batch_for("transformer_mnist")
    chex.assert_trees_all_close(masked(x), small(x), rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.asarray(masked(x)), np.asarray(big(x)))


def test_transformer_token_input():
    init = _numpy_init(5)
    model = TransformerClassifier(
        (16,),
        10,
        vocab_size=50,
        kernel_init=init,
        pos_init=init,
        embedding_init=init,
        rngs=nnx.Rngs(0),
    )
    tokens = np.random.default_rng(0).integers(0, 50, (BATCH, 16)).astype(np.int32)
    out = model(tokens)
    assert out.shape == (BATCH, 10) and bool(jnp.all(jnp.isfinite(out)))
    assert model.embed.embedding.shape == (50, 64)
    with pytest.raises(TypeError, match="integer ids"):
        model(tokens.astype(np.float32))


# ----------------------------------------------------------------------------- errors


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"LeNet5: the input is too small.*padding='SAME'"):
        LeNet5((8, 8, 1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"LeNet5: the input is too small"):
        LeNet5((3, 3, 1), padding="SAME", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="padding must be 'VALID' or 'SAME', got 'FULL'"):
        LeNet5(padding="FULL", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"VGG: the input is too small.*\(1, 1\)"):
        VGG16((28, 28, 1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 2.*got 21"):
        CifarResNet(21, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="shortcut must be 'A' or 'B', got 'C'"):
        ResNet20(shortcut="C", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="depth must be a positive even number"):
        ConvNet(3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"in_shape must be \(height, width, channels\)"):
        LeNet5((28, 28), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"features\[1\] must be a positive integer, got 2.5"):
        MLP((4, 2.5, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="features must have at least 2 entries"):
        MLP((4,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"patch_shape \(5, 5, 1\) must have one entry per axis"):
        TransformerClassifier((28, 28, 1), patch_shape=(5, 5, 1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"dim \(30\) must be divisible by num_heads \(4\)"):
        TransformerClassifier((40,), dim=30, num_heads=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"dim \(64\) must be divisible by num_heads \(3\)"):
        MultiHeadSelfAttention(64, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="pool must be 'cls' or 'mean'"):
        TransformerClassifier((40,), pool="max", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\), got 1.0"):
        VGG16(dropout_rate=1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"mnist1d_cnn takes input_shape \(length,\)"):
        create_model("mnist1d_cnn", rngs=nnx.Rngs(0), input_shape=(40, 3), num_classes=10)


def test_wrong_input_shape_names_model_and_shapes():
    model = build("lenet5")
    with pytest.raises(
        ValueError,
        match=r"LeNet5 expects inputs of shape \(batch, 28, 28, 1\), "
        r"got \(2, 32, 32, 3\)",
    ):
        model(np.zeros((BATCH, 32, 32, 3), np.float32))
    # A grayscale batch without its channel axis is accepted.
    x = batch_for("lenet5")
    chex.assert_trees_all_close(model(x[..., 0]), model(x), rtol=1e-6)
    with pytest.raises(ValueError, match=r"MNIST1DCNN expects inputs of shape \(batch, 40, 1\)"):
        build("mnist1d_cnn")(np.zeros((BATCH, 41), np.float32))
