"""Block-sparse format, matmul (reference + Pallas interpret) and the NNX layer vs masked dense."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsejax as sj
from sparsejax.block_sparse import BlockSparseMatrix, block_mask_of, block_sparse_matmul
from sparsejax.kernels.block_sparse import (
    KernelConfig,
    Launch,
    Tiling,
    choose_launch,
    default_backend,
    smem_bytes,
    smem_limit,
)
from sparsejax.kernels.linear import BlockIndex, BlockSparseLinear

HIGHEST = jax.lax.Precision.HIGHEST
BACKENDS = [
    pytest.param(("reference", False), id="reference"),
    pytest.param(("pallas", True), id="pallas-interpret"),
]


def _full(bmask: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    return np.repeat(np.repeat(bmask, block[0], 0), block[1], 1)


def _case(seed, k, n, block, density, dtype, *, empty_row=None, empty_col=None):
    rng = np.random.default_rng(seed)
    bmask = rng.random((k // block[0], n // block[1])) < density
    if empty_row is not None:
        bmask[empty_row, :] = False
    if empty_col is not None:
        bmask[:, empty_col] = False
    w = jnp.asarray(rng.standard_normal((k, n)), dtype)
    return w, bmask


def _tol(dtype, ref):
    scale = float(jnp.max(jnp.abs(ref))) + 1.0
    return (1e-5 if dtype == jnp.float32 else 2.0**-7) * scale


def _cfg(backend_interpret):
    backend, interpret = backend_interpret
    t16 = Tiling(block_m=16)
    return KernelConfig(backend=backend, interpret=interpret, fwd=t16, dx=t16, precision=HIGHEST)


# --------------------------------------------------------------------------- format


def test_layout_of_a_known_mask():
    bmask = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1]], bool)  # block column 1 empty
    w = jnp.arange(6 * 9, dtype=jnp.float32).reshape(6, 9)
    m = BlockSparseMatrix.from_dense(w, bmask, block=(2, 3))
    assert m.nnz_blocks == 4 and m.grid == (3, 3) and m.shape == (6, 9)
    # column-major: (r, c) = (0, 0), (1, 0), (0, 2), (2, 2)
    np.testing.assert_array_equal(m.rows, [0, 1, 0, 2])
    np.testing.assert_array_equal(m.cols, [0, 0, 2, 2])
    np.testing.assert_array_equal(m.col_ptr, [0, 2, 2, 4])
    # row-major view: (0, 0)=block 0, (0, 2)=block 2, (1, 0)=block 1, (2, 2)=block 3
    np.testing.assert_array_equal(m.row_ptr, [0, 2, 3, 4])
    np.testing.assert_array_equal(m.t_cols, [0, 2, 0, 2])
    np.testing.assert_array_equal(m.t_blocks, [0, 2, 1, 3])
    np.testing.assert_array_equal(m.data[3], w[4:6, 6:9])
    # launch orders: columns by kept count (2, 0, 2) and rows (2, 1, 1), descending, stable
    np.testing.assert_array_equal(m.col_order, [0, 2, 1])
    np.testing.assert_array_equal(m.row_order, [0, 1, 2])
    assert m.rows.dtype == jnp.int32 and m.density == pytest.approx(4 / 9)
    np.testing.assert_array_equal(m.to_dense(), jnp.where(_full(bmask, (2, 3)), w, 0))
    np.testing.assert_array_equal(m.block_mask(), bmask)
    np.testing.assert_array_equal(m.mask(), _full(bmask, (2, 3)))


@pytest.mark.parametrize("sparsity", [0.75, 1.0])
def test_roundtrip_from_prune(sparsity):
    w = jax.random.normal(jax.random.key(0), (128, 64))
    mask = sj.prune({"w": jnp.abs(w)}, sparsity, structure=sj.Blocks(16, 32))["w"]
    m = BlockSparseMatrix.from_dense(w, mask, block=(16, 32))
    assert m.nnz_blocks == 16 - round(sparsity * 16)
    np.testing.assert_array_equal(m.to_dense(), jnp.where(mask, w, 0))
    np.testing.assert_array_equal(m.mask(), mask)
    # the pytree flattens to its 7 arrays and rebuilds under jit
    assert len(jax.tree.leaves(m)) == 9
    np.testing.assert_array_equal(jax.jit(lambda a: a.to_dense())(m), jnp.where(mask, w, 0))


def test_mask_forms_agree():
    w, bmask = _case(1, 64, 64, (16, 16), 0.5, jnp.float32)
    full = _full(bmask, (16, 16))
    a = BlockSparseMatrix.from_dense(w, full, block=16)
    b = BlockSparseMatrix.from_dense(w, bmask, block=16)
    c = BlockSparseMatrix.from_dense(jnp.where(full, w, 0), block=16)  # mask=None: nonzero blocks
    for other in (b, c):
        chex.assert_trees_all_equal(a, other)
    neuron = np.zeros((1, 64), bool)
    neuron[0, 16:48] = True  # neuron mask broadcasting over rows, aligned to blocks
    np.testing.assert_array_equal(
        block_mask_of(neuron, (64, 64), 16), np.tile([False, True, True, False], (4, 1))
    )
    np.testing.assert_array_equal(block_mask_of(jnp.array(True), (64, 32), (32, 16)), np.ones((2, 2)))


def test_from_dense_with_traced_weight():
    w, bmask = _case(2, 32, 32, (16, 16), 0.5, jnp.float32)
    dense = jax.jit(lambda w: BlockSparseMatrix.from_dense(w, bmask, block=16).to_dense())(w)
    np.testing.assert_array_equal(dense, jnp.where(_full(bmask, (16, 16)), w, 0))


def test_bad_inputs_raise():
    w = jnp.ones((32, 32))
    mixed = np.ones((32, 32), bool)
    mixed[17, 3] = False
    with pytest.raises(ValueError, match=r"block \(1, 0\) \(rows 16:32, cols 0:16\)"):
        BlockSparseMatrix.from_dense(w, mixed, block=16)
    with pytest.raises(ValueError, match=r"not divisible by the block \(16, 24\)"):
        BlockSparseMatrix.from_dense(w, np.ones((32, 32), bool), block=(16, 24))
    with pytest.raises(ValueError, match="neither broadcasts"):
        BlockSparseMatrix.from_dense(w, np.ones((3, 32), bool), block=16)
    with pytest.raises(TypeError, match="must be a bool array"):
        BlockSparseMatrix.from_dense(w, np.ones((32, 32)), block=16)
    with pytest.raises(ValueError, match="block must be a positive int"):
        BlockSparseMatrix.from_dense(w, np.ones((32, 32), bool), block=(0, 16))
    with pytest.raises(TypeError, match="must be concrete"):
        jax.jit(lambda m: BlockSparseMatrix.from_dense(w, m, block=16).data)(jnp.ones((32, 32), bool))
    m = BlockSparseMatrix.from_dense(w, np.ones((32, 32), bool), block=16)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 32\).*\(4, 16\)"):
        block_sparse_matmul(jnp.ones((4, 16)), m)
    with pytest.raises(TypeError, match="BlockSparseMatrix"):
        block_sparse_matmul(jnp.ones((4, 32)), w)
    with pytest.raises(ValueError, match="backend must be one of"):
        block_sparse_matmul(jnp.ones((4, 32)), m, backend="cuda")
    with pytest.raises(ValueError, match="data must have shape"):
        m.with_data(jnp.ones((3, 16, 16)))
    small = BlockSparseMatrix.from_dense(jnp.ones((16, 16)), np.ones((2, 2), bool), block=8)
    with pytest.raises(ValueError, match=r"power of two >= 16, got block \(8, 8\)"):
        block_sparse_matmul(jnp.ones((4, 16)), small, backend="pallas", interpret=True)
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        Tiling(block_m=48)
    with pytest.raises(ValueError, match="num_warps"):
        Tiling(num_warps=3)
    with pytest.raises(ValueError, match="num_stages"):
        Tiling(num_stages=0)
    with pytest.raises(TypeError, match="fwd must be a Tiling"):
        KernelConfig(fwd=(128, 64))
    with pytest.raises(ValueError, match="ddata.block_m must be None"):
        KernelConfig(ddata=Tiling(block_m=64))
    with pytest.raises(ValueError, match="smem_limit"):
        KernelConfig(smem_limit=0)


def test_default_backend_is_pallas_on_gpu_and_follows_the_default_device():
    from sparsejax._platform import target_device_count, target_platform

    assert default_backend() == ("pallas" if jax.default_backend() == "gpu" else "reference")
    assert target_platform() == jax.default_backend()
    # Placed on the CPU (also on a GPU host): the jnp reference, as for every CPU program.
    for device in (jax.devices("cpu")[0], "cpu"):
        with jax.default_device(device):
            assert target_platform() == "cpu" and target_device_count() == 8
            assert default_backend() == "reference"
            assert KernelConfig().resolved_backend() == "reference"
    assert KernelConfig(interpret=True).resolved_backend() == "pallas"


# --------------------------------------------------------------------------- matmul + grads


def _check_matmul(w, bmask, block, x, cfg, *, jit):
    dtype = w.dtype
    full = jnp.asarray(_full(bmask, block))
    m = BlockSparseMatrix.from_dense(w, bmask, block=block)
    ct = jax.random.normal(jax.random.key(7), (*x.shape[:-1], w.shape[1])).astype(dtype)

    def sparse_loss(x, data):
        y = block_sparse_matmul(x, m.with_data(data), config=cfg)
        return jnp.sum(y.astype(jnp.float32) * ct.astype(jnp.float32)), y

    def dense_loss(x, w):
        y = jnp.einsum("...k,kn->...n", x.astype(jnp.float32), jnp.where(full, w, 0).astype(
            jnp.float32), precision=HIGHEST)
        return jnp.sum(y * ct.astype(jnp.float32)), y

    grad = jax.value_and_grad(sparse_loss, argnums=(0, 1), has_aux=True)
    grad_ref = jax.value_and_grad(dense_loss, argnums=(0, 1), has_aux=True)
    if jit:
        grad, grad_ref = jax.jit(grad), jax.jit(grad_ref)
    (_, y), (dx, ddata) = grad(x, m.data)
    (_, y_ref), (dx_ref, dw_ref) = grad_ref(x, w)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert dx.dtype == dtype and ddata.dtype == dtype and ddata.shape == m.data.shape
    y32 = y.astype(jnp.float32)
    np.testing.assert_allclose(y32, y_ref, atol=_tol(dtype, y_ref), rtol=0)
    np.testing.assert_allclose(dx.astype(jnp.float32), dx_ref, atol=_tol(dtype, dx_ref), rtol=0)
    ddense = m.with_data(ddata).to_dense().astype(jnp.float32)
    dw_masked = jnp.where(full, dw_ref, 0)
    np.testing.assert_allclose(ddense, dw_masked, atol=_tol(dtype, dw_masked), rtol=0)
    # empty block columns give exact zeros; empty block rows give exact zero input gradients
    for c in np.flatnonzero(~bmask.any(axis=0)):
        assert not np.any(np.asarray(y32)[..., c * block[1] : (c + 1) * block[1]])
    for r in np.flatnonzero(~bmask.any(axis=1)):
        assert not np.any(np.asarray(dx.astype(jnp.float32))[..., r * block[0] : (r + 1) * block[0]])


@pytest.mark.parametrize(
    ("backend", "dtype", "m", "k", "n", "block", "density"),
    [
        (("pallas", True), jnp.float32, 40, 64, 96, (16, 16), 0.5),
        (("pallas", True), jnp.bfloat16, 16, 96, 64, (32, 16), 0.3),
        (("reference", False), jnp.float32, 16, 96, 64, (32, 16), 0.3),
        (("reference", False), jnp.bfloat16, 40, 64, 96, (16, 16), 0.5),
    ],
    ids=["pallas-f32-square-padded-M", "pallas-bf16-rect", "reference-f32-rect",
         "reference-bf16-square-padded-M"],
)
def test_matmul_and_grads_match_masked_dense(backend, dtype, m, k, n, block, density):
    w, bmask = _case(m + k, k, n, block, density, dtype, empty_row=1, empty_col=2)
    x = jax.random.normal(jax.random.key(m), (m, k)).astype(dtype)
    _check_matmul(w, bmask, block, x, _cfg(backend), jit=True)


def test_reference_unjitted_with_batch_dims():
    w, bmask = _case(3, 64, 32, (16, 16), 0.6, jnp.float32, empty_col=0)
    m = BlockSparseMatrix.from_dense(w, bmask, block=16)
    x = jax.random.normal(jax.random.key(3), (2, 5, 64))
    y = block_sparse_matmul(x, m, config=KernelConfig(precision=HIGHEST))  # eager, no jit
    ref = jnp.einsum("bmk,kn->bmn", x, jnp.where(_full(bmask, (16, 16)), w, 0), precision=HIGHEST)
    assert y.shape == (2, 5, 32)
    np.testing.assert_allclose(y, ref, atol=_tol(jnp.float32, ref), rtol=0)
    assert not np.any(np.asarray(y)[..., :16])  # block column 0 is empty


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_pruned_and_all_kept(backend):
    cfg = _cfg(backend)
    x = jax.random.normal(jax.random.key(0), (8, 32))
    w = jax.random.normal(jax.random.key(1), (32, 48))
    empty = BlockSparseMatrix.from_dense(w, np.zeros((2, 3), bool), block=16)
    full = BlockSparseMatrix.from_dense(w, np.ones((2, 3), bool), block=16)
    assert (empty.nnz_blocks, full.nnz_blocks) == (0, 6)

    @jax.jit
    def run(x, e, f):
        y_empty, dx_empty = jax.value_and_grad(
            lambda x: jnp.sum(block_sparse_matmul(x, e, config=cfg) ** 2))(x)
        return y_empty, dx_empty, block_sparse_matmul(x, f, config=cfg)

    y_empty, dx_empty, y_full = run(x, empty, full)
    assert float(y_empty) == 0.0
    np.testing.assert_array_equal(dx_empty, jnp.zeros_like(x))
    np.testing.assert_allclose(y_full, jnp.dot(x, w, precision=HIGHEST), atol=1e-5)


def test_rmatmul_uses_default_backend():
    w, bmask = _case(4, 32, 32, (16, 16), 0.5, jnp.float32)
    m = BlockSparseMatrix.from_dense(w, bmask, block=16)
    x = jnp.ones((3, 32))
    chex.assert_trees_all_close(x @ m, block_sparse_matmul(x, m), atol=0)


@settings(max_examples=5)
@given(
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(1, 9), st.integers(1, 5), st.integers(1, 5)),
    block=st.sampled_from([(4, 4), (8, 4), (2, 8)]),
    density=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]),
)
def test_reference_random_shapes(seed, shape, block, density):
    m, kb, nb = shape
    k, n = kb * block[0], nb * block[1]
    w, bmask = _case(seed, k, n, block, density, jnp.float32)
    x = jnp.asarray(np.random.default_rng(seed + 1).standard_normal((m, k)), jnp.float32)
    mat = BlockSparseMatrix.from_dense(w, bmask, block=block)
    cfg = KernelConfig(backend="reference", precision=HIGHEST)
    y = jax.jit(lambda x, mat: block_sparse_matmul(x, mat, config=cfg))(x, mat)
    ref = jnp.dot(x, jnp.where(_full(bmask, block), w, 0), precision=HIGHEST)
    np.testing.assert_allclose(y, ref, atol=1e-4 * (1 + float(jnp.max(jnp.abs(ref)))), rtol=0)
    assert mat.nnz_blocks == int(bmask.sum())


# --------------------------------------------------------------------------- NNX layer


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



@pytest.mark.parametrize(
    ("dtype", "tiling"),
    [(jnp.bfloat16, Tiling()), (jnp.float32, Tiling(num_warps=4, num_stages=3)),
     (jnp.bfloat16, Tiling(block_m=128, block_k=32, num_warps=8, num_stages=4))],
    ids=["bf16-auto", "f32-4-warps-3-stages", "bf16-chunked"],
)
def test_pallas_kernels_lower_to_triton_for_cuda(dtype, tiling):
    """Cross-platform lowering (no GPU needed) runs the Pallas → Triton IR lowering."""
    w, bmask = _case(5, 128, 192, (64, 64), 0.5, dtype, empty_col=0)
    m = BlockSparseMatrix.from_dense(w, bmask, block=64)
    cfg = KernelConfig(backend="pallas", fwd=tiling, dx=tiling, ddata=Tiling(block_k=32))

    def fwd_bwd(x, data, ct):
        y, pull = jax.vjp(lambda a, d: block_sparse_matmul(a, m.with_data(d), config=cfg), x, data)
        return y, pull(ct)

    x, ct = jnp.ones((300, 128), dtype), jnp.ones((300, 192), dtype)
    text = jax.jit(fwd_bwd).trace(x, m.data, ct).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("xla.gpu.triton") == 3  # spmm, spmm_t, sddmm


# --------------------------------------------------------------------------- launch configuration

H100 = 232448  # opt-in shared memory per block, compute capability 9.0
A100 = 166912  # 8.0


def test_smem_bytes_exact():
    # stages · (rows + cols) · chunk · itemsize + rows · cols · out_itemsize
    assert smem_bytes(128, 128, 128, 3, 2, 2) == 3 * 256 * 128 * 2 + 128 * 128 * 2 == 229376
    assert smem_bytes(128, 128, 128, 3, 4, 4) == 458752  # the f32 launch that crashed on an H200
    assert smem_bytes(256, 128, 64, 3, 2, 2) == 147456 + 65536 == 212992
    assert smem_bytes(64, 32, 16, 1, 4, 2) == 96 * 16 * 4 + 64 * 32 * 2 == 10240


@pytest.mark.parametrize(
    ("kernel", "tiling", "m", "block", "itemsize", "limit", "want"),
    [
        # bf16 128-blocks: 4 stages of 64-row chunks (4·256·64·2 + 128·128·2), the best
        # measured on an H200; whole blocks at 4 stages would need 294912 B
        ("fwd", Tiling(), 2048, (128, 128), 2, H100, Launch(128, 64, 4, 4, 163840)),
        # float32 128-blocks: 3 stages of whole blocks need 458752 B -> chunks of 32 rows
        ("fwd", Tiling(), 2048, (128, 128), 4, H100, Launch(128, 32, 4, 4, 196608)),
        ("dx", Tiling(), 2048, (128, 128), 4, H100, Launch(128, 32, 4, 4, 196608)),
        ("ddata", Tiling(), 2048, (128, 128), 4, H100, Launch(128, 32, 4, 4, 196608)),
        # A100: 163 KiB -> 64-row chunks, 4 stages: 4·256·64·2 + 128·128·2
        ("fwd", Tiling(), 2048, (128, 128), 2, A100, Launch(128, 64, 4, 4, 163840)),
        # 256 rows per program: 8 warps, 4 stages of 32-row chunks (4·384·32·2 + 256·128·2)
        ("fwd", Tiling(block_m=256), 2048, (128, 128), 2, H100, Launch(256, 32, 8, 4, 163840)),
        # dx of a (64, 128) block: output tile bm × bk = 128 × 64, contraction over bn = 128
        ("dx", Tiling(), 2048, (64, 128), 2, H100, Launch(128, 128, 4, 4, 212992)),
        ("fwd", Tiling(), 2048, (32, 32), 4, H100, Launch(128, 32, 4, 4, 98304)),
        # small M: 40 rows -> a 64-row tile / 64-row ddata chunks
        ("fwd", Tiling(), 40, (128, 128), 2, H100, Launch(64, 128, 4, 4, 4 * 192 * 128 * 2 + 64 * 128 * 2)),
        ("ddata", Tiling(), 40, (32, 32), 2, H100, Launch(32, 64, 4, 4, 4 * 64 * 64 * 2 + 2048)),
        # a given field is kept: 2 stages -> the whole block fits
        ("fwd", Tiling(num_stages=2, num_warps=8), 2048, (128, 128), 4, H100,
         Launch(128, 64, 8, 2, 2 * 256 * 64 * 4 + 65536)),
    ],
)
def test_choose_launch_picks_the_largest_fitting(kernel, tiling, m, block, itemsize, limit, want):
    got = choose_launch(kernel, tiling, m=m, block=block, itemsize=itemsize, limit=limit)
    assert got == want
    assert got.smem_bytes <= limit
    rows = block[0] if kernel == "ddata" else got.block_m
    cols = {"fwd": block[1], "dx": block[0], "ddata": block[1]}[kernel]
    assert got.smem_bytes == smem_bytes(rows, cols, got.block_k, got.num_stages, itemsize, itemsize)


def test_choose_launch_prefers_two_stages_for_short_loops():
    """At most SHORT_LOOP_BLOCKS kept blocks per program: 2 pipeline stages come first."""
    from sparsejax.kernels.block_sparse import SHORT_LOOP_BLOCKS

    kw = dict(m=2048, block=(128, 128), itemsize=2, limit=H100)
    long = choose_launch("fwd", Tiling(), **kw, blocks_per_program=8.0)
    assert long == choose_launch("fwd", Tiling(), **kw) == Launch(128, 64, 4, 4, 163840)
    # 4096² at 90%: 3.2 blocks per column -> 2 stages of 64-row chunks
    short = choose_launch("fwd", Tiling(), **kw, blocks_per_program=3.2)
    assert short == Launch(128, 64, 4, 2, 2 * 256 * 64 * 2 + 128 * 128 * 2)
    assert choose_launch("dx", Tiling(), **kw, blocks_per_program=SHORT_LOOP_BLOCKS).num_stages == 2
    # a given num_stages wins; ddata (a loop over M) ignores the hint
    assert choose_launch("fwd", Tiling(num_stages=4), **kw, blocks_per_program=1.0).num_stages == 4
    assert choose_launch("ddata", Tiling(), **kw, blocks_per_program=1.0).num_stages == 4


def test_choose_launch_rejects_configs_that_cannot_fit():
    full = Tiling(block_m=128, block_k=128, num_warps=4, num_stages=3)
    with pytest.raises(ValueError, match=r"fwd tiling 128:128:4:3 .* needs 458752 bytes .* 232448"):
        choose_launch("fwd", full, m=2048, block=(128, 128), itemsize=4, limit=H100)
    # the same launch fits in bf16
    assert choose_launch("fwd", full, m=2048, block=(128, 128), itemsize=2, limit=H100) == Launch(
        128, 128, 4, 3, 229376
    )
    with pytest.raises(ValueError, match=r"block_m=256, block_k=16, num_stages=1 needs 155648"):
        choose_launch("dx", Tiling(block_m=256), m=4096, block=(128, 128), itemsize=4,
                      limit=65536)
    with pytest.raises(ValueError, match="block_k=64 exceeds the block's contraction dimension 32"):
        choose_launch("fwd", Tiling(block_k=64), m=64, block=(32, 64), itemsize=2)
    with pytest.raises(ValueError, match="ddata tiling must leave block_m unset"):
        choose_launch("ddata", Tiling(block_m=64), m=64, block=(32, 64), itemsize=2)


@pytest.mark.parametrize("kernel", ["fwd", "dx", "ddata"])
def test_matmul_raises_before_compiling_a_launch_that_cannot_fit(kernel):
    w, bmask = _case(6, 256, 256, (128, 128), 0.5, jnp.float32)
    m = BlockSparseMatrix.from_dense(w, bmask, block=128)
    big = Tiling(block_m=None if kernel == "ddata" else 128, block_k=128, num_warps=4,
                 num_stages=3)
    cfg = KernelConfig(backend="pallas", **{kernel: big})

    def loss(x, data):
        return jnp.sum(block_sparse_matmul(x, m.with_data(data), config=cfg))

    x = jnp.ones((256, 256), jnp.float32)
    with pytest.raises(ValueError, match=rf"{kernel} tiling {big} .* needs 458752 bytes"):
        jax.eval_shape(jax.grad(loss, argnums=(0, 1)), x, m.data)
    # a larger limit (e.g. a future GPU) accepts it
    cfg = KernelConfig(backend="pallas", smem_limit=458752, **{kernel: big})
    jax.eval_shape(jax.grad(loss, argnums=(0, 1)), x, m.data)


def test_smem_limit_by_compute_capability():
    import types

    gpu = lambda cc: types.SimpleNamespace(platform="gpu", compute_capability=cc)  # noqa: E731
    assert smem_limit(gpu("9.0")) == 232448 == 227 * 1024
    assert smem_limit(gpu("8.0")) == 166912 == 163 * 1024
    assert smem_limit(gpu("8.9")) == 101376
    assert smem_limit(gpu("1.0")) == 65536
    assert smem_limit() == 232448  # CPU: configurations chosen as on an H100
    assert KernelConfig(smem_limit=1000).resolved_smem_limit() == 1000


def test_tiling_from_string():
    assert Tiling.from_string("256:64:8:3") == Tiling(256, 64, 8, 3)
    assert Tiling.from_string("128::8") == Tiling(128, None, 8, None)
    assert Tiling.from_string("auto") == Tiling()
    assert str(Tiling(128, None, 8, None)) == "128::8:"
    assert str(Tiling()) == "auto"
    with pytest.raises(ValueError, match="block_m:block_k:num_warps:num_stages"):
        Tiling.from_string("a:b")
    with pytest.raises(ValueError, match="block_m:block_k:num_warps:num_stages"):
        Tiling.from_string("1:2:3:4:5")


@pytest.mark.parametrize("balance", [True, False], ids=["heavy-first", "natural-order"])
def test_pallas_chunked_loop_and_launch_order(balance):
    """32×32 blocks in 16-row chunks (two loop steps per block), columns launched heavy first."""
    block = (32, 32)
    w, bmask = _case(8, 96, 128, block, 0.5, jnp.float32, empty_row=1, empty_col=2)
    bmask[:, 3] = True  # the heaviest column is last: heavy-first really permutes
    t = Tiling(block_m=16, block_k=16)
    cfg = KernelConfig(backend="pallas", interpret=True, fwd=t, dx=t, ddata=Tiling(block_k=16),
                       balance=balance, precision=HIGHEST)
    m = BlockSparseMatrix.from_dense(w, bmask, block=block)
    assert int(m.col_order[0]) == 3
    assert choose_launch("fwd", t, m=40, block=block, itemsize=4).block_k == 16  # 2 steps/block
    x = jax.random.normal(jax.random.key(9), (40, 96))
    _check_matmul(w, bmask, block, x, cfg, jit=False)
