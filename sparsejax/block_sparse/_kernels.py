"""Block-sparse matrix products on the compressed block format: Pallas kernels + jnp reference.

Three products of ``x : (M, K)`` or ``dy : (M, N)`` with a block-sparse ``W : (K, N)``
stored as its kept ``bk × bn`` blocks (layout: :mod:`~sparsejax.block_sparse._matrix`):

* :func:`spmm` — ``y = x @ W : (M, N)``;
* :func:`spmm_t` — ``dx = dy @ Wᵀ : (M, K)``;
* :func:`sddmm` — ``d data[t] = x[:, rows[t]]ᵀ @ dy[:, cols[t]] : (bk, bn)``, the
  gradient with respect to the kept blocks (block-sparse fine-tuning).

Each has two backends: ``"pallas"`` (``jax.experimental.pallas``; on NVIDIA GPUs
``pallas_call`` lowers through Triton; ``interpret=True`` runs the same kernel on any
backend, which is how the CPU tests exercise it) and ``"reference"`` (gather +
``einsum`` + scatter-add in plain ``jnp``, the default off GPU). The default backend
is chosen for the platform the program is *lowered* for (``sparsejax._platform``), so
a program exported for a TPU holds the reference even when traced on a GPU host.
Accumulation is float32 in both; results are cast to the input dtype. Launch settings:
:mod:`~sparsejax.block_sparse._launch`. Pallas is imported only when a kernel launches.

TPU: the reference (XLA gather + batched dot + scatter-add) **is** the TPU path; a
Mosaic TPU variant (index arrays by scalar prefetch, data-dependent ``BlockSpec``
index maps) is not implemented. All functions are pure and jit-compatible (the
index arrays may be traced; the shapes and block sizes are static).

References:
  Gray, Radford, Kingma. "GPU Kernels for Block-Sparse Weights", OpenAI, 2017.
  Gale, Zaharia, Young, Elsen. "Sparse GPU Kernels for Deep Learning" (Sputnik),
  SC 2020 — the row-swizzle / per-row-loop SpMM and the SDDMM for the weight
  gradient follow the same split.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from sparsejax._gpu_kernels import triton_compiler_params
from sparsejax._platform import by_platform, target_platform
from sparsejax.block_sparse._launch import KernelConfig, Launch, check_pallas_block, choose_launch

__all__ = ["sddmm", "spmm", "spmm_t"]

def _launch(
    cfg: KernelConfig, kernel: str, m: int, block, dtype, out_dtype=None,
    blocks_per_program: float | None = None,
) -> Launch:
    return choose_launch(
        kernel, getattr(cfg, kernel), m=m, block=block, itemsize=jnp.dtype(dtype).itemsize,
        out_itemsize=jnp.dtype(out_dtype if out_dtype is not None else dtype).itemsize,
        limit=cfg.resolved_smem_limit(), blocks_per_program=blocks_per_program,
    )


def _pad_rows(a: jax.Array, bm: int) -> jax.Array:
    m = a.shape[0]
    extra = -m % bm
    return a if extra == 0 else jnp.pad(a, ((0, extra), (0, 0)))


def _pallas_spmm(
    a: jax.Array,
    blocks: jax.Array,
    kidx: jax.Array,
    bidx: jax.Array | None,
    ptr: jax.Array,
    order: jax.Array,
    *,
    bk_in: int,
    bn_out: int,
    transpose: bool,
    launch: Launch,
    cfg: KernelConfig,
) -> jax.Array:
    """``out[:, j] = Σ_{t ∈ ptr[j]:ptr[j+1]} a[:, kidx[t]] @ op(blocks[bidx[t]])`` (blockwise).

    ``a : (M, nb_in·bk_in)``, ``blocks : (nnzb, bk, bn)``, ``op`` is the
    identity (``transpose=False``, ``(bk_in, bn_out) = (bk, bn)``) or the
    transpose (``(bk_in, bn_out) = (bn, bk)``). ``bidx=None`` means ``bidx[t] = t``.
    ``order : (len(ptr) - 1,)`` is the launch order of the output block columns.
    Each program runs one flat loop over ``(t, chunk)`` pairs, ``launch.block_k``
    of the contraction per step. Returns ``(M, (len(ptr) - 1)·bn_out)`` in ``a.dtype``.
    """
    from jax.experimental import pallas as pl

    m = a.shape[0]
    nb_out = ptr.shape[0] - 1
    bm, ck = launch.block_m, launch.block_k
    nsub = bk_in // ck
    a = _pad_rows(a, bm)
    mp = a.shape[0]
    nnzb, bk, bn = blocks.shape
    flat = blocks.reshape(nnzb * bk, bn)
    indirect = bidx is not None
    precision = cfg.precision
    dims = (((1,), (1,)), ((), ())) if transpose else (((1,), (0,)), ((), ()))

    def kernel(ptr_ref, order_ref, kidx_ref, *refs):
        if indirect:
            bidx_ref, a_ref, w_ref, o_ref = refs
        else:
            a_ref, w_ref, o_ref = refs
        i = pl.program_id(0)
        j = order_ref[pl.program_id(1)]
        row0 = pl.multiple_of(i * bm, bm)

        def body(u, acc):
            if nsub > 1:  # u = t·nsub + s: kept block t, chunk s of it
                t, s = lax.div(u, jnp.int32(nsub)), lax.rem(u, jnp.int32(nsub))
            else:
                t, s = u, 0
            k = kidx_ref[t]
            b = bidx_ref[t] if indirect else t
            koff = k * bk_in + s * ck if nsub > 1 else k * bk_in
            lhs = a_ref[pl.ds(row0, bm), pl.ds(pl.multiple_of(koff, ck), ck)]
            if transpose:  # the (bk, ck) column chunk of block b
                c0 = pl.multiple_of(s * ck, ck) if nsub > 1 else 0
                w = w_ref[pl.ds(pl.multiple_of(b * bk, bk), bk), pl.ds(c0, ck)]
            else:  # the (ck, bn) row chunk of block b
                roff = b * bk + s * ck if nsub > 1 else b * bk
                w = w_ref[pl.ds(pl.multiple_of(roff, ck), ck), :]
            return acc + lax.dot_general(
                lhs, w, dims, precision=precision, preferred_element_type=jnp.float32
            )

        acc = lax.fori_loop(
            ptr_ref[j] * nsub, ptr_ref[j + 1] * nsub, body, jnp.zeros((bm, bn_out), jnp.float32)
        )
        col0 = pl.multiple_of(j * bn_out, bn_out)
        o_ref[pl.ds(row0, bm), pl.ds(col0, bn_out)] = acc.astype(o_ref.dtype)

    operands = (ptr, order, kidx, *((bidx,) if indirect else ()), a, flat)
    out = pl.pallas_call(
        kernel,
        grid=(mp // bm, nb_out),
        out_shape=jax.ShapeDtypeStruct((mp, nb_out * bn_out), a.dtype),
        interpret=cfg.interpret,
        compiler_params=triton_compiler_params(launch.num_warps, launch.num_stages),
        name="block_sparse_spmm_t" if transpose else "block_sparse_spmm",
    )(*operands)
    return out[:m]


def _pallas_sddmm(
    x: jax.Array, dy: jax.Array, rows: jax.Array, cols: jax.Array, *, bk: int, bn: int,
    out_dtype: Any, launch: Launch, cfg: KernelConfig,
) -> jax.Array:
    """``out[t] = x[:, rows[t]·bk : +bk]ᵀ @ dy[:, cols[t]·bn : +bn]`` → ``(nnzb, bk, bn)``.

    Grid ``(nnzb,)``; each program loops over ``M`` in ``launch.block_k`` rows.
    """
    from jax.experimental import pallas as pl

    nnzb = rows.shape[0]
    ck = launch.block_k
    x = _pad_rows(x, ck)  # zero rows add nothing to xᵀ·dy
    dy = _pad_rows(dy, ck)
    steps = x.shape[0] // ck
    precision = cfg.precision
    dims = (((0,), (0,)), ((), ()))

    def kernel(rows_ref, cols_ref, x_ref, dy_ref, o_ref):
        t = pl.program_id(0)
        c0 = pl.multiple_of(rows_ref[t] * bk, bk)
        c1 = pl.multiple_of(cols_ref[t] * bn, bn)

        def body(s, acc):
            r0 = pl.multiple_of(s * ck, ck)
            xs = x_ref[pl.ds(r0, ck), pl.ds(c0, bk)]
            gs = dy_ref[pl.ds(r0, ck), pl.ds(c1, bn)]
            return acc + lax.dot_general(
                xs, gs, dims, precision=precision, preferred_element_type=jnp.float32
            )

        acc = lax.fori_loop(0, steps, body, jnp.zeros((bk, bn), jnp.float32))
        o_ref[...] = acc.astype(o_ref.dtype)

    out = pl.pallas_call(
        kernel,
        grid=(nnzb,),
        out_specs=pl.BlockSpec((bk, bn), lambda t: (t, 0)),
        out_shape=jax.ShapeDtypeStruct((nnzb * bk, bn), out_dtype),
        interpret=cfg.interpret,
        compiler_params=triton_compiler_params(launch.num_warps, launch.num_stages),
        name="block_sparse_sddmm",
    )(rows, cols, x, dy)
    return out.reshape(nnzb, bk, bn)


def _dot(a: jax.Array, b: jax.Array, spec: str, cfg: KernelConfig, upcast: bool) -> jax.Array:
    """Reference block products, float32 accumulation.

    XLA:CPU has no ``bf16 × bf16 → f32`` dot for every layout the gradients
    produce, so on CPU half-precision operands are upcast first (``upcast``; exact:
    a product of two bf16/f16 numbers is representable in float32).
    """
    if upcast:
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return jnp.einsum(spec, a, b, precision=cfg.precision, preferred_element_type=jnp.float32)


def _choice(cfg: KernelConfig, block: tuple[int, int], dtype: Any) -> tuple[str, bool]:
    """``(backend, upcast)`` on the target platform: :meth:`KernelConfig.resolved_backend`,
    and whether the reference upcasts half-precision operands (XLA:CPU)."""
    upcast = target_platform() == "cpu" and jnp.dtype(dtype).itemsize < 4
    return cfg.resolved_backend(block), upcast


def _order(order: jax.Array | None, n: int, cfg: KernelConfig) -> jax.Array:
    if order is None or not cfg.balance:
        return jnp.arange(n, dtype=jnp.int32)
    if order.shape != (n,):
        raise ValueError(f"the launch order must have shape ({n},), got {order.shape}")
    return order


def spmm(
    x: jax.Array, data: jax.Array, rows: jax.Array, cols: jax.Array, col_ptr: jax.Array,
    cfg: KernelConfig = KernelConfig(),  # noqa: B008 (frozen, immutable)
    col_order: jax.Array | None = None,
) -> jax.Array:
    """``x @ W`` for ``W`` in the block-column format (:mod:`~sparsejax.block_sparse._matrix`).

    Pallas: grid ``(M / bm, nbc)``; program ``(i, p)`` computes the ``bm × bn`` tile of
    block column ``j = col_order[p]`` by one flat loop over the kept blocks of column
    ``j`` (``col_ptr``) and the ``bk / ck`` chunks of each: it loads the matching
    ``bm × ck`` slice of ``x`` (by the block row index) and ``ck`` rows of ``data[t]``,
    accumulating in float32 — zero blocks are never read or multiplied, and an empty
    block column stores zeros. ``col_order`` launches the heaviest columns first
    (longest processing time first: the last wave holds the short programs, not the
    long ones); the row tiles of one column are consecutive programs, so they share
    the column's blocks in L2.

    Args:
      x: ``(M, K)`` with ``K = nbr·bk``.
      data: ``(nnzb, bk, bn)`` kept blocks, sorted by (column, row).
      rows, cols: ``(nnzb,)`` int32 block row / column of each stored block.
      col_ptr: ``(nbc + 1,)`` int32 column pointers.
      cfg: backend and tiling (``cfg.fwd``).
      col_order: ``(nbc,)`` int32 launch order of the block columns (a
        permutation; heaviest first); ``None``: natural order.

    Returns:
      ``(M, nbc·bn)`` in ``x.dtype`` (float32 accumulation).

    Raises:
      ValueError: a block the Pallas backend cannot tile, or a ``cfg.fwd`` that
        does not fit in shared memory.
    """
    m = x.shape[0]
    nnzb, bk, bn = data.shape
    nbc = col_ptr.shape[0] - 1
    if nnzb == 0:
        return jnp.zeros((m, nbc * bn), x.dtype)

    def run(choice, x, data, rows, cols, col_ptr, col_order):
        backend, upcast = choice
        if backend == "pallas":
            check_pallas_block((bk, bn))
            launch = _launch(cfg, "fwd", m, (bk, bn), x.dtype, blocks_per_program=nnzb / nbc)
            return _pallas_spmm(
                x, data, rows, None, col_ptr, _order(col_order, nbc, cfg), bk_in=bk,
                bn_out=bn, transpose=False, launch=launch, cfg=cfg,
            )
        xg = x.reshape(m, -1, bk)[:, rows, :]  # (M, nnzb, bk)
        contrib = _dot(xg, data, "mtk,tkn->tmn", cfg, upcast)  # (nnzb, M, bn)
        out = jnp.zeros((nbc, m, bn), jnp.float32).at[cols].add(contrib)
        return out.transpose(1, 0, 2).reshape(m, nbc * bn).astype(x.dtype)

    return by_platform(
        lambda: _choice(cfg, (bk, bn), x.dtype), run, x, data, rows, cols, col_ptr, col_order
    )


def spmm_t(
    dy: jax.Array, data: jax.Array, rows: jax.Array, cols: jax.Array, row_ptr: jax.Array,
    t_cols: jax.Array, t_blocks: jax.Array,
    cfg: KernelConfig = KernelConfig(),  # noqa: B008 (frozen, immutable)
    row_order: jax.Array | None = None,
) -> jax.Array:
    """``dy @ Wᵀ`` (the input gradient of :func:`spmm`).

    Pallas: the kernel of :func:`spmm` on the row-major view (``row_ptr`` /
    ``t_cols`` / ``t_blocks``, launched in ``row_order``), multiplying by ``bk × ck``
    column chunks of the blocks, transposed.

    Args:
      dy: ``(M, N)`` with ``N = nbc·bn``.
      data, rows, cols: as in :func:`spmm`.
      row_ptr: ``(nbr + 1,)`` int32 pointers of the row-major view.
      t_cols, t_blocks: ``(nnzb,)`` int32 block column / position in ``data`` of
        the blocks in row-major order.
      cfg: backend and tiling (``cfg.dx``).
      row_order: ``(nbr,)`` int32 launch order of the block rows; ``None``: natural.

    Returns:
      ``(M, nbr·bk)`` in ``dy.dtype``; block rows without kept blocks are zero.
    """
    m = dy.shape[0]
    nnzb, bk, bn = data.shape
    nbr = row_ptr.shape[0] - 1
    if nnzb == 0:
        return jnp.zeros((m, nbr * bk), dy.dtype)

    def run(choice, dy, data, rows, cols, row_ptr, t_cols, t_blocks, row_order):
        backend, upcast = choice
        if backend == "pallas":
            check_pallas_block((bk, bn))
            launch = _launch(cfg, "dx", m, (bk, bn), dy.dtype, blocks_per_program=nnzb / nbr)
            return _pallas_spmm(
                dy, data, t_cols, t_blocks, row_ptr, _order(row_order, nbr, cfg), bk_in=bn,
                bn_out=bk, transpose=True, launch=launch, cfg=cfg,
            )
        dyg = dy.reshape(m, -1, bn)[:, cols, :]  # (M, nnzb, bn)
        contrib = _dot(dyg, data, "mtn,tkn->tmk", cfg, upcast)  # (nnzb, M, bk)
        out = jnp.zeros((nbr, m, bk), jnp.float32).at[rows].add(contrib)
        return out.transpose(1, 0, 2).reshape(m, nbr * bk).astype(dy.dtype)

    return by_platform(
        lambda: _choice(cfg, (bk, bn), dy.dtype),
        run, dy, data, rows, cols, row_ptr, t_cols, t_blocks, row_order,
    )


def sddmm(
    x: jax.Array, dy: jax.Array, rows: jax.Array, cols: jax.Array, block: tuple[int, int],
    out_dtype: Any, cfg: KernelConfig = KernelConfig(),  # noqa: B008 (frozen, immutable)
) -> jax.Array:
    """Gradient of the kept blocks: ``out[t] = x[:, rows[t]]ᵀ @ dy[:, cols[t]]``.

    Pallas: grid ``(nnzb,)``; each program loops over ``M`` in ``ck``-row chunks.

    Args:
      x: ``(M, K)``; dy: ``(M, N)``.
      rows, cols: ``(nnzb,)`` int32 block coordinates.
      block: ``(bk, bn)``.
      out_dtype: dtype of the result (the dtype of ``data``).
      cfg: backend and tiling (``cfg.ddata``).

    Returns:
      ``(nnzb, bk, bn)`` in ``out_dtype`` (float32 accumulation).
    """
    bk, bn = block
    nnzb = rows.shape[0]
    if nnzb == 0:
        return jnp.zeros((0, bk, bn), out_dtype)

    def run(choice, x, dy, rows, cols):
        backend, upcast = choice
        if backend == "pallas":
            check_pallas_block((bk, bn))
            launch = _launch(cfg, "ddata", x.shape[0], (bk, bn), x.dtype, out_dtype)
            return _pallas_sddmm(
                x, dy, rows, cols, bk=bk, bn=bn, out_dtype=out_dtype, launch=launch, cfg=cfg
            )
        m = x.shape[0]
        xg = x.reshape(m, -1, bk)[:, rows, :]
        dyg = dy.reshape(m, -1, bn)[:, cols, :]
        return _dot(xg, dyg, "mtk,mtn->tkn", cfg, upcast).astype(out_dtype)

    return by_platform(lambda: _choice(cfg, (bk, bn), x.dtype), run, x, dy, rows, cols)
