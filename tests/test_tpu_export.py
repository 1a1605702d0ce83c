"""Every public jitted path lowers for TPU (and CUDA), checked on a CPU: issue #29.

``jax.export.export(jax.jit(f), platforms=[p])`` lowers ``f`` for platform ``p`` without
its hardware. :data:`PATHS` lists the public jitted paths a TPU user takes (the train step
of every zoo model with ``sparsejax.pruning``, each structure and scope, ``keep_sparse``,
the sparse-training transforms, group lasso, variational dropout, the lottery driver's
pruning, the gated forward and its gathered path, ``BlockSparseLinear``, a shrunk model,
post-training pruning); each is exported for ``"tpu"`` and ``"cuda"``, and a test fails
when one stops lowering. **Registering a new public jitted path means adding a row to
PATHS** (a name and a builder returning ``(jitted function, example arguments)``).

The second half asserts the choices made while tracing follow the *lowering* platform
(``sparsejax._platform.by_platform``), not this host: the Pallas/Triton kernels are in
the CUDA programs and never in a TPU one (no Triton and no Mosaic custom call), ``prune``
sorts on an accelerator and runs its radix passes on a CPU, and the block-sparse product
lowers to XLA's gather + dot on a TPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax import export

import sparsejax as sj
from sparsejax import _platform
from sparsejax.models import MODEL_NAMES, create_model
from sparsejax.train import create_train_state, make_train_step

PLATFORMS = ("tpu", "cuda")
TRITON = "__gpu$xla.gpu.triton"
MOSAIC = "tpu_custom_call"
# The CUDA programs may hold the Triton kernels, whose custom call has no serialization
# guarantee: allowed here, since the module is only inspected.
_ALLOW_TRITON = [export.DisabledSafetyCheck.custom_call(TRITON)]


def lower(fn: Callable[..., Any], args: tuple, platform: str) -> str:
    """The StableHLO text of ``jax.jit(fn)(*args)`` exported for ``platform``."""
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    exported = export.export(jitted, platforms=[platform], disabled_checks=_ALLOW_TRITON)(*args)
    assert exported.platforms == (platform,)
    return exported.mlir_module()


def _xy(shape: tuple[int, ...], classes: int, batch: int = 2):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, *shape)), jnp.float32)
    return x, jnp.arange(batch, dtype=jnp.int32) % classes


def _schedule():
    return sj.schedules.polynomial(0.0, 0.8, begin=0, end=4, every=1)


def _pruning(structure=None, scope="layer", prunable=None) -> optax.GradientTransformation:
    return sj.pruning(
        optax.adam(1e-3), score=lambda p, g: sj.scores.magnitude(p), schedule=_schedule(),
        scope=scope, structure=sj.Unstructured() if structure is None else structure,
        prunable=prunable,
    )


def _step(model: nnx.Module | Callable[[], nnx.Module], tx, shape, classes, **step_kw):
    """The train step and its arguments; a model given by its constructor is built
    abstractly (``jax.eval_shape``: only shapes, nothing computed)."""
    if callable(model) and not isinstance(model, nnx.Module):
        state = jax.eval_shape(lambda: create_train_state(model(), tx, key=0))
    else:
        state = create_train_state(model, tx, key=0)
    return make_train_step(jit=False, **step_kw), (state, _xy(shape, classes))


# -- the zoo: every model's train step with sparsejax.pruning (tiny inputs) ---------------
_ZOO_INPUT: dict[str, tuple[int, ...]] = {
    "lenet300100": (16,), "mlp": (16,), "lenet5": (16, 16, 1), "conv2": (8, 8, 3),
    "conv4": (8, 8, 3), "conv6": (8, 8, 3), "mnist1d_cnn": (40,), "resnet20": (8, 8, 3),
    "resnet56": (8, 8, 3), "vgg16": (32, 32, 3), "transformer": (8, 8, 1),
}
_ZOO_KW: dict[str, dict[str, Any]] = {"mlp": {"hidden": (8,)}}
# (structure, scope) per model, rotating so each model runs one and each variant runs
# on a conv, a residual and a dense model; the MLP rows below run every variant.
_ZOO_PRUNING: dict[str, tuple[Any, str]] = {
    "lenet300100": (sj.Unstructured(), "global"), "mlp": (sj.Neurons(), "layer"),
    "lenet5": (sj.Filters(), "global"), "conv2": (sj.Unstructured(), "layer"),
    "conv4": (sj.Filters(), "layer"), "conv6": (sj.Unstructured(), "global"),
    "mnist1d_cnn": (sj.Unstructured(), "layer"), "resnet20": (sj.Filters(), "global"),
    "resnet56": (sj.Unstructured(), "global"), "vgg16": (sj.Unstructured(), "layer"),
    "transformer": (sj.Neurons(), "global"),
}


def _zoo(name: str):
    def build():
        shape = _ZOO_INPUT[name]

        def model():
            return create_model(name, rngs=nnx.Rngs(0), input_shape=shape, num_classes=4,
                                **_ZOO_KW.get(name, {}))

        structure, scope = _ZOO_PRUNING[name]
        return _step(model, _pruning(structure, scope), shape, 4)

    return build


def _mlp_variant(structure, scope):
    def build():
        return _step(_mlp, _pruning(structure, scope), (16,), 4)

    return build


# -- the transforms and techniques --------------------------------------------------------
def _mlp(hidden=(16,)):
    return create_model("mlp", rngs=nnx.Rngs(0), input_shape=(16,), num_classes=4,
                        hidden=hidden)


def _keep_sparse():
    def state():
        pruned = create_train_state(_mlp(), sj.keep_sparse(optax.adam(1e-3)), key=0)
        return pruned.with_mask(sj.prune(sj.scores.magnitude(pruned.params), 0.5))

    return make_train_step(jit=False), (jax.eval_shape(state), _xy((16,), 4))


def _dst(factory, **kw):
    def build():
        return _step(_mlp, factory(optax.sgd(0.1), 0.5, **kw), (16,), 4)

    return build


def _straight_through():
    return _step(_mlp, sj.transforms.straight_through(optax.adam(1e-3)), (16,), 4)


def _group_lasso():
    from sparsejax import regularizers

    def penalty(model, step):
        value = regularizers.group_lasso_penalty(nnx.state(model, nnx.Param), 1e-3)
        return value, {"group_lasso": value}

    tx = regularizers.proximal_group_lasso(0.1, 1e-3)
    return _step(_mlp, tx, (16,), 4, penalty=penalty)


def _variational():
    from sparsejax import variational as vd

    def model():
        return vd.VDLeNet300100(16, 4, rngs=nnx.Rngs(0))

    return _step(model, optax.adam(1e-3), (16,), 4, forward=vd.noisy_forward,
                 penalty=vd.kl_penalty(100, vd.kl_warmup(10, begin=0)))


def _lottery_prune():
    """The lottery driver's pruning of a round: magnitude scores, the previous mask,
    vmapped over seeds, global and per-layer targets."""
    params = nnx.state(_mlp(), nnx.Param)
    seeds = jax.tree.map(lambda p: jnp.stack([p, -p]), params)
    mask = jax.tree.map(lambda m: jnp.broadcast_to(m, (2, *jnp.shape(m))), sj.init_mask(params))

    def round_masks(params, mask):
        def one(p, m):
            scores = sj.scores.magnitude(p)
            return (sj.prune(scores, 0.36, mask=m, scope="global"),
                    sj.prune(scores, 0.2, mask=m, scope="layer"))

        return jax.vmap(one)(params, mask)

    return round_masks, (seeds, mask)


def _gated_model():
    from sparsejax import dynamic as dy

    return dy.GatedMNIST1DCNN(gate="fbs", rngs=nnx.Rngs(0))


def _gated_step():
    from sparsejax import dynamic as dy

    forward = dy.sampled_density_forward(min_density=0.25, penalty=0.1)
    return _step(_gated_model, optax.adam(1e-3), (40,), 10, forward=forward)


def _gated_forward():
    graphdef, state = nnx.split(nnx.eval_shape(_gated_model))

    def forward(state, x):
        return nnx.merge(graphdef, state)(x, 0.5)

    return forward, (state, _xy((40,), 10)[0])


def _gathered():
    from sparsejax import dynamic as dy

    model = nnx.eval_shape(_gated_model)
    graphdef, state = nnx.split(model)
    return dy.make_gathered(graphdef, model.active_k(0.5)), (state, _xy((40,), 10)[0])


def _block_sparse_linear():
    from sparsejax.block_sparse import BlockSparseLinear, BlockSparseMatrix

    w = jnp.asarray(np.random.default_rng(0).standard_normal((32, 32)), jnp.float32)
    block_mask = jnp.asarray([[True, False], [True, True]])
    layer = BlockSparseLinear(BlockSparseMatrix.from_dense(w, block_mask, block=16),
                              jnp.zeros(32))
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def loss_and_grads(params, rest, x):  # forward and backward: the three kernels
        def loss(params):
            return jnp.sum(nnx.merge(graphdef, params, rest)(x) ** 2)

        return jax.value_and_grad(loss)(params)

    return loss_and_grads, (params, rest, _xy((32,), 4, batch=8)[0])


def _shrunk():
    from sparsejax.shrink import shrink

    model = create_model("lenet300100", rngs=nnx.Rngs(0), input_shape=(16,), num_classes=4)
    params = nnx.state(model, nnx.Param)
    mask = sj.prune(sj.scores.magnitude(params), 0.5, structure=sj.Neurons())
    small = shrink(model, mask, strict=False)  # the output layer's units stay whole
    assert small.layers[0].out_features < model.layers[0].out_features
    return _step(small, optax.adam(1e-3), (16,), 4)


def _posttrain():
    from sparsejax import posttrain as pt

    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.standard_normal((32, 16)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((64, 32)), jnp.float32)

    def prune_layer(kernel, x):
        stats = pt.input_statistics(x)
        return (
            pt.magnitude_mask(kernel, 0.5),
            pt.wanda_mask(kernel, pt.input_norms(stats), 0.5),
            pt.wanda_mask(kernel, pt.input_norms(stats), structure=sj.NM(2, 4)),
            pt.sparsegpt(kernel, pt.hessian(stats), 0.5, block_size=16).kernel,
        )

    return prune_layer, (kernel, x)


def _prune_searches():
    scores = {"a": jnp.asarray(np.random.default_rng(0).standard_normal((64, 32)), jnp.float32),
              "b": jnp.arange(48.0).reshape(6, 8)}

    def masks(scores):
        return [sj.prune(scores, 0.5, scope="global", search=s)
                for s in ("auto", "radix", "sort", "sampled")]

    return masks, (scores,)


PATHS: dict[str, Callable[[], tuple[Callable[..., Any], tuple]]] = {
    **{f"zoo/{name}": _zoo(name) for name in MODEL_NAMES},
    **{
        f"pruning/{scope}/{label}": _mlp_variant(structure, scope)
        for scope in ("layer", "global")
        for label, structure in (
            ("unstructured", sj.Unstructured()), ("neurons", sj.Neurons()),
            ("nm", sj.NM(2, 4)), ("blocks", sj.Blocks(4, 4)),
        )
    },
    "prune/searches": _prune_searches,
    "keep_sparse": _keep_sparse,
    "dst/static_sparse": _dst(sj.transforms.static_sparse, key=jax.random.key(0)),
    "dst/sparse_evolutionary": _dst(sj.transforms.sparse_evolutionary, key=0, every=1,
                                    total_steps=10),
    "dst/rigl": _dst(sj.transforms.rigl, key=0, every=1, total_steps=10),
    "dst/sparse_momentum": _dst(sj.transforms.sparse_momentum, key=0, every=1,
                                total_steps=10),
    "dst/straight_through": _straight_through,
    "group_lasso": _group_lasso,
    "variational": _variational,
    "lottery/round_masks": _lottery_prune,
    "dynamic/train_step": _gated_step,
    "dynamic/forward": _gated_forward,
    "dynamic/gathered": _gathered,
    "block_sparse/linear": _block_sparse_linear,
    "shrink/train_step": _shrunk,
    "posttrain/layer": _posttrain,
}


def test_the_table_covers_every_zoo_model():
    assert {name for name in MODEL_NAMES} <= {k.split("/", 1)[1] for k in PATHS if
                                                k.startswith("zoo/")}
    assert set(_ZOO_INPUT) == set(MODEL_NAMES) == set(_ZOO_PRUNING)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_public_path_lowers_for_tpu_and_cuda(path):
    fn, args = PATHS[path]()
    for platform in PLATFORMS:
        text = lower(fn, args, platform)
        if platform == "tpu":  # no GPU kernel, and no Mosaic kernel either (none is shipped)
            assert TRITON not in text and MOSAIC not in text, path


# -- the trace-time choices follow the lowering platform ----------------------------------
def _custom_calls(text: str) -> list[str]:
    return re.findall(r"stablehlo\.custom_call @([\w$.]+)", text)


def _triton_names(text: str) -> list[str]:
    return sorted(re.findall(r'custom_call @__gpu\$xla\.gpu\.triton\(.*?name = "(\w+)"', text))


def test_prune_sorts_on_accelerators_and_runs_radix_passes_on_cpu():
    scores = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((64, 32)), jnp.float32)}
    fn = jax.jit(lambda s: sj.prune(s, 0.5, scope="global"))
    text = {p: lower(fn, (scores,), p) for p in ("cpu", "cuda", "tpu")}
    assert "stablehlo.sort" in text["tpu"] and "stablehlo.sort" in text["cuda"]
    assert "stablehlo.sort" not in text["cpu"]  # 16 counting passes instead
    for p in ("cuda", "tpu"):  # only the lowering platform's branch is kept: no radix passes
        assert text[p].count("stablehlo.reduce") < text["cpu"].count("stablehlo.reduce")
    # the same mask here, whichever branch runs
    expected = sj.prune(scores, 0.5, scope="global", search="sort")
    np.testing.assert_array_equal(fn(scores)["w"], expected["w"])
    assert int(fn(scores)["w"].sum()) == 1024


def test_sampled_search_runs_the_pallas_passes_only_on_cuda():
    scores = {"w": jnp.asarray(np.random.default_rng(1).standard_normal((64, 32)), jnp.float32)}
    fn = jax.jit(lambda s: sj.prune(s, 0.9, scope="global", search="sampled"))
    cuda, tpu, cpu = (lower(fn, (scores,), p) for p in ("cuda", "tpu", "cpu"))
    assert _triton_names(cuda) == [
        "selection_bracket_pass", "selection_compact", "selection_finish_mask"
    ]
    assert TRITON not in tpu and MOSAIC not in tpu and _custom_calls(tpu) == []
    assert TRITON not in cpu
    np.testing.assert_array_equal(
        fn(scores)["w"], sj.prune(scores, 0.9, scope="global", search="radix")["w"]
    )


def test_block_sparse_matmul_is_triton_on_cuda_and_xla_on_tpu():
    from sparsejax.block_sparse import BlockSparseMatrix, KernelConfig, block_sparse_matmul

    w = jnp.asarray(np.random.default_rng(2).standard_normal((64, 32)), jnp.float32)
    m = BlockSparseMatrix.from_dense(w, jnp.asarray([[True, False], [False, True],
                                                     [True, True], [False, False]]), block=16)
    x = jnp.ones((8, 64))

    def step(x, data, config=None):
        def loss(x, data):
            return jnp.sum(block_sparse_matmul(x, m.with_data(data), config=config) ** 2)

        return jax.value_and_grad(loss, argnums=(0, 1))(x, data)

    cuda, tpu = (lower(step, (x, m.data), p) for p in ("cuda", "tpu"))
    assert _triton_names(cuda) == ["block_sparse_sddmm", "block_sparse_spmm", "block_sparse_spmm_t"]
    assert _custom_calls(tpu) == [] and tpu.count("stablehlo.dot_general") == 3
    ref = jax.jit(lambda x, d: step(x, d, KernelConfig(backend="reference")))
    assert TRITON not in lower(ref, (x, m.data), "cuda")  # an explicit backend is kept
    value, _ = jax.jit(step)(x, m.data)
    np.testing.assert_allclose(value, jnp.sum((x @ m.to_dense()) ** 2), rtol=1e-5)


def test_block_sparse_blocks_pallas_cannot_tile_lower_for_cuda_through_xla():
    from sparsejax.block_sparse import BlockSparseMatrix, block_sparse_matmul

    w = jnp.ones((8, 8))
    m = BlockSparseMatrix.from_dense(w, jnp.ones((2, 2), bool), block=4)
    args = (lambda x: block_sparse_matmul(x, m), (jnp.ones((3, 8)),))
    if jax.default_backend() == "gpu":  # on a GPU host the kernels name the block instead
        with pytest.raises(ValueError, match=r"power of two >= 16, got block \(4, 4\)"):
            lower(*args, "cuda")
    else:
        assert TRITON not in lower(*args, "cuda")
        assert TRITON not in lower(*args, "tpu")


def test_half_precision_reference_upcasts_only_on_cpu():
    from sparsejax.block_sparse import BlockSparseMatrix, block_sparse_matmul

    w = jnp.ones((32, 32), jnp.bfloat16)
    m = BlockSparseMatrix.from_dense(w, jnp.ones((2, 2), bool), block=16)
    fn = jax.jit(lambda x: block_sparse_matmul(x, m))
    x = jnp.ones((4, 32), jnp.bfloat16)
    dots = {p: re.findall(r"stablehlo\.dot_general.*?: \((tensor<[^>]*>)", lower(fn, (x,), p))
            for p in ("cpu", "tpu")}
    assert dots["cpu"] and all("f32" in t for t in dots["cpu"])
    assert dots["tpu"] and all("bf16" in t for t in dots["tpu"])


def test_rewiring_sorts_on_tpu():
    fn, args = _dst(sj.transforms.rigl, key=0, every=1, total_steps=10)()
    assert "stablehlo.sort" in lower(fn, args, "tpu")
    assert "stablehlo.sort" not in lower(fn, args, "cpu")


def test_by_platform_stages_a_branch_per_distinct_choice():
    seen = []

    def run(choice, x):
        seen.append((choice, _platform.target_platform()))
        return x + {"a": 1.0, "b": 2.0}[choice]

    def choose():
        return "a" if _platform.target_platform() == "cpu" else "b"

    x = jnp.zeros(())
    jaxpr = jax.make_jaxpr(lambda x: _platform.by_platform(choose, run, x))(x)
    assert "cond" in str(jaxpr)
    assert sorted(seen) == [("a", "cpu"), ("b", "tpu")]  # gpu and tpu share a branch
    assert float(jax.jit(lambda x: _platform.by_platform(choose, run, x))(x)) == 1.0
    assert float(_platform.by_platform(choose, run, x)) == 1.0  # eager: the host's branch
    same = jax.make_jaxpr(lambda x: _platform.by_platform(lambda: "a", run, x))(x)
    assert "cond" not in str(same)  # one choice: no conditional at all


def test_targeting_and_the_device_count_of_an_absent_platform():
    host = _platform.target_platform()
    with _platform.targeting("tpu"):
        assert _platform.target_platform() == "tpu"
        assert _platform.target_device_count() == (jax.device_count() if host == "tpu" else 1)
        with _platform.targeting("gpu"):
            assert _platform.target_platform() == "gpu"
        assert _platform.target_platform() == "tpu"
    assert _platform.target_platform() == host
    with pytest.raises(ValueError, match="'cuda'"):
        with _platform.targeting("cuda"):
            pass


def test_the_plan_never_chooses_pallas_for_tpu(monkeypatch):
    from sparsejax.select import _plan

    monkeypatch.setattr(_plan, "_pallas_passes", lambda: True)  # as if asked everywhere
    scores = {"w": jnp.ones((64, 32))}
    leaves = _plan.collect_leaves(scores, None, None, None, sj.Unstructured())
    plan, _ = _plan.plan_selection(
        leaves, 0.5, scope="global", structure=sj.Unstructured(), distribution="uniform",
        reduction="l1", erk_power_scale=1.0, bits_per_pass=2, normalize=None, search="sampled",
    )
    assert plan.search_for("tpu") == _plan.Search(sampled=True)
    assert plan.search_for("gpu") == _plan.Search(sampled=True, pallas=True)
    assert plan.search_for("cpu").pallas
