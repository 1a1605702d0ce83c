"""Launch configuration: default backend, shared memory, tilings, launch order."""

import jax
import jax.numpy as jnp
import pytest
from block_sparse_cases import HIGHEST, check_matmul, random_case

from sparsejax.block_sparse import (
    BlockSparseMatrix,
    KernelConfig,
    Launch,
    Tiling,
    block_sparse_matmul,
    choose_launch,
    default_backend,
    smem_bytes,
    smem_limit,
)


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
    from sparsejax.block_sparse import SHORT_LOOP_BLOCKS

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
    w, bmask = random_case(6, 256, 256, (128, 128), 0.5, jnp.float32)
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
    w, bmask = random_case(8, 96, 128, block, 0.5, jnp.float32, empty_row=1, empty_col=2)
    bmask[:, 3] = True  # the heaviest column is last: heavy-first really permutes
    t = Tiling(block_m=16, block_k=16)
    cfg = KernelConfig(backend="pallas", interpret=True, fwd=t, dx=t, ddata=Tiling(block_k=16),
                       balance=balance, precision=HIGHEST)
    m = BlockSparseMatrix.from_dense(w, bmask, block=block)
    assert int(m.col_order[0]) == 3
    assert choose_launch("fwd", t, m=40, block=block, itemsize=4).block_k == 16  # 2 steps/block
    x = jax.random.normal(jax.random.key(9), (40, 96))
    check_matmul(w, bmask, block, x, cfg, jit=False)
