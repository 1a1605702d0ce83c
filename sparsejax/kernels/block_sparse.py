"""Block-sparse matrix products on the compressed block format: Pallas kernels + jnp reference.

These are the array-level operations behind :mod:`sparsejax.block_sparse`. A
block-sparse weight ``W : (K, N)`` with ``bk × bn`` blocks (``nbr = K // bk``
block rows, ``nbc = N // bn`` block columns) is stored as its ``nnzb`` kept
blocks plus int32 indices, **column-major** (blocks sorted by block column, then
block row — a block-CSC layout, i.e. BSR of ``Wᵀ``):

=============  ==================  ==================================================
array          shape               meaning
=============  ==================  ==================================================
``data``       ``(nnzb, bk, bn)``  the kept blocks, sorted by (column, row)
``rows``       ``(nnzb,)``         block row of each stored block
``cols``       ``(nnzb,)``         block column of each stored block
``col_ptr``    ``(nbc + 1,)``      blocks of column ``j`` are ``col_ptr[j]:col_ptr[j+1]``
``row_ptr``    ``(nbr + 1,)``      row-major view: blocks of row ``r`` are the
                                   entries ``row_ptr[r]:row_ptr[r+1]`` of ``t_*``
``t_cols``     ``(nnzb,)``         row-major order: block column of each entry
``t_blocks``   ``(nnzb,)``         row-major order: position of the block in ``data``
``col_order``  ``(nbc,)``          block columns by kept-block count, descending
``row_order``  ``(nbr,)``          block rows by kept-block count, descending
=============  ==================  ==================================================

Three products (``x : (M, K)``, ``dy : (M, N)``), each with two backends:

* :func:`spmm` — ``y = x @ W : (M, N)``; grid ``(M / bm, nbc)``, program
  ``(i, p)`` computes the ``bm × bn`` tile of block column ``j = col_order[p]``
  by one flat loop over the kept blocks of column ``j`` (``col_ptr``) and the
  ``bk / ck`` chunks of each: it loads the matching ``bm × ck`` slice of ``x``
  (by the block row index) and ``ck`` rows of ``data[t]``, accumulating in
  float32 — zero blocks are never read or multiplied, and an empty block column
  stores zeros. ``col_order`` launches the heaviest columns first (longest
  processing time first: the last wave holds the short programs, not the long
  ones); the row tiles of one column are consecutive programs, so they share
  the column's blocks in L2.
* :func:`spmm_t` — ``dx = dy @ Wᵀ : (M, K)``; the same kernel on the row-major
  view (``row_ptr``/``t_cols``/``t_blocks``, launched in ``row_order``),
  multiplying by ``bk × ck`` column chunks of the blocks, transposed.
* :func:`sddmm` — ``d data[t] = x[:, rows[t]]ᵀ @ dy[:, cols[t]] : (bk, bn)``;
  grid ``(nnzb,)``, each program loops over ``M`` in ``ck``-row chunks. This is the
  gradient with respect to the kept blocks (block-sparse fine-tuning).

Backends: ``"pallas"`` (``jax.experimental.pallas``; on NVIDIA GPUs
``pallas_call`` lowers through Triton; ``interpret=True`` runs the same kernel
on any backend, which is how the CPU tests exercise it) and ``"reference"``
(gather + ``einsum`` + scatter-add in plain ``jnp``, the default off GPU).
Accumulation is float32 in both; results are cast to the input dtype.

Pallas constraints (Triton): ``bk``, ``bn``, the row tile ``bm`` and the
chunk ``ck`` are powers of two ≥ 16.

Launch configuration (:class:`Tiling`, one per kernel, resolved by
:func:`choose_launch`): the rows per program ``bm``, the contraction chunk
``ck`` per loop step, ``num_warps`` and ``num_stages``. Triton's software
pipeliner keeps ``num_stages`` chunks of both operands in shared memory, so a
launch needs about (:func:`smem_bytes`)::

    num_stages · (rows + cols) · ck · itemsize  +  rows · cols · out_itemsize

for an output tile ``rows × cols`` (``spmm``: ``bm × bn``; ``spmm_t``:
``bm × bk``; ``sddmm``: ``bk × bn``, with ``ck`` rows of ``x``/``dy`` per step).
This is an upper bound of what Triton allocated on an H200 for these kernels
(bf16, 128 × 128 blocks, ``bm = 128``, 3 stages: 229 376 B estimated, ran;
float32, same tiles: 458 752 B estimated, Triton asked for 327 680 B and
failed against the 232 448 B limit). Unset fields are chosen as the largest
configuration that fits the device's per-block limit (:func:`smem_limit`:
227 KiB on H100/H200, 163 KiB on A100); a configuration given in full that
does not fit raises ``ValueError`` before anything is compiled.

TPU: the same grid/loop design maps to Mosaic TPU with the index arrays passed
by scalar prefetch (``PrefetchScalarGridSpec``) and the ``x`` / ``data``
slices brought in by data-dependent ``BlockSpec`` index maps; that variant is
**not implemented or tested** here — on TPU use ``backend="reference"`` (or
``interpret=True`` for debugging).

All functions are pure and jit-compatible (the index arrays may be traced; the
shapes and block sizes are static).

References:
  Gray, Radford, Kingma. "GPU Kernels for Block-Sparse Weights", OpenAI, 2017.
  Gale, Zaharia, Young, Elsen. "Sparse GPU Kernels for Deep Learning" (Sputnik),
  SC 2020 — the row-swizzle / per-row-loop SpMM and the SDDMM for the weight
  gradient follow the same split.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from sparsejax._platform import target_platform

__all__ = [
    "BACKENDS",
    "KERNELS",
    "SHORT_LOOP_BLOCKS",
    "KernelConfig",
    "Launch",
    "Tiling",
    "check_pallas_block",
    "choose_launch",
    "default_backend",
    "sddmm",
    "smem_bytes",
    "smem_limit",
    "spmm",
    "spmm_t",
]

BACKENDS: tuple[str, ...] = ("pallas", "reference")
#: The three kernels, named as in :class:`KernelConfig`: ``y = x W``, ``dx = dy Wᵀ``, ``d data``.
KERNELS: tuple[str, ...] = ("fwd", "dx", "ddata")

#: Opt-in shared memory per thread block (bytes) by CUDA compute capability (CUDA C
#: Programming Guide, "Technical Specifications per Compute Capability").
_SMEM_BY_CC: dict[str, int] = {
    "7.0": 98304, "7.2": 98304, "7.5": 65536, "8.0": 166912, "8.6": 101376, "8.7": 166912,
    "8.9": 101376, "9.0": 232448, "10.0": 232448, "10.3": 232448, "12.0": 101376,
}
_HOPPER_SMEM = 232448


def _triton_compiler_params(num_warps: int | None, num_stages: int | None) -> Any:
    """``CompilerParams`` of the Pallas Triton backend, robust to the jax 0.7–0.11 renames.

    Always returned when the Triton module imports: passing Triton params makes
    ``pallas_call`` pick the Triton lowering on GPU whatever
    ``jax_pallas_use_mosaic_gpu`` says. ``None`` when the module or class is
    missing (the kernel then runs with ``pallas_call``'s default GPU lowering).
    """
    try:
        from jax.experimental.pallas import triton as plgpu
    except ImportError:  # pragma: no cover - jax builds without the Triton module
        return None
    cls = getattr(plgpu, "CompilerParams", None) or getattr(plgpu, "TritonCompilerParams", None)
    if cls is None:  # pragma: no cover - future renames: fall back to the default lowering
        return None
    return cls(num_warps=num_warps, num_stages=num_stages)


def _is_pow2(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0 and (v & (v - 1)) == 0


def _pow2_ceil(v: int) -> int:
    return 1 << max(0, v - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Triton launch settings of one kernel; ``None`` fields are chosen by :func:`choose_launch`.

    Attributes:
      block_m: rows of ``x`` (``fwd``) / ``dy`` (``dx``) per program, a power of
        two ≥ 16 (shrunk to the next power of two ≥ ``M`` for small ``M``).
        Must be ``None`` for ``ddata`` (its output tile is one block).
      block_k: contraction chunk per loop step, a power of two ≥ 16: ``fwd``
        ``≤ bk`` (rows of a block), ``dx`` ``≤ bn``; ``ddata``: rows of ``x`` and
        ``dy`` per step.
      num_warps: Triton warps per program (power of two ≤ 16).
      num_stages: Triton software-pipelining stages (≥ 1).
    """

    block_m: int | None = None
    block_k: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None

    def __post_init__(self):
        for name in ("block_m", "block_k"):
            v = getattr(self, name)
            if v is not None and (not _is_pow2(v) or v < 16):
                raise ValueError(f"Tiling.{name} must be a power of two >= 16 or None, got {v!r}")
        if self.num_warps is not None and (not _is_pow2(self.num_warps) or self.num_warps > 16):
            raise ValueError(
                f"Tiling.num_warps must be a power of two <= 16 or None, got {self.num_warps!r}"
            )
        s = self.num_stages
        if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise ValueError(f"Tiling.num_stages must be a positive int or None, got {s!r}")

    @classmethod
    def from_string(cls, text: str) -> Tiling:
        """``"256:64:8:3"`` → ``Tiling(256, 64, 8, 3)``; empty fields and ``"auto"`` → ``None``."""
        if text.strip() == "auto":
            return cls()
        parts = text.split(":")
        if len(parts) > 4:
            raise ValueError(
                f"a tiling string looks like block_m:block_k:num_warps:num_stages, got {text!r}"
            )
        try:
            vals = [int(p) if p.strip() else None for p in parts]
        except ValueError:
            raise ValueError(
                f"a tiling string looks like block_m:block_k:num_warps:num_stages, got {text!r}"
            ) from None
        return cls(*vals)

    def __str__(self) -> str:
        values = dataclasses.astuple(self)
        if all(v is None for v in values):
            return "auto"
        return ":".join("" if v is None else str(v) for v in values)


@dataclasses.dataclass(frozen=True)
class Launch:
    """A resolved launch: every field set, and the estimated shared memory (bytes)."""

    block_m: int
    block_k: int
    num_warps: int
    num_stages: int
    smem_bytes: int

    def __str__(self) -> str:
        return f"{self.block_m}:{self.block_k}:{self.num_warps}:{self.num_stages}"


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Static settings of the block-sparse products (hashable; a static jit argument).

    Attributes:
      backend: ``"pallas"`` or ``"reference"``; ``None`` → :func:`default_backend`.
      interpret: run the Pallas kernels in interpret mode (any device; slow).
      fwd, dx, ddata: :class:`Tiling` of the three kernels (``y = x W``,
        ``dx = dy Wᵀ``, ``d data = xᵀ dy`` on the kept blocks); unset fields
        are chosen per dtype and block size by :func:`choose_launch`.
      smem_limit: shared memory per thread block in bytes; ``None`` →
        :func:`smem_limit` of the default device.
      balance: launch the block columns (``fwd``) / rows (``dx``) with the most
        kept blocks first (``col_order`` / ``row_order``); ``False`` keeps the
        natural order.
      precision: ``jax.lax.Precision`` of the block products. ``None`` /
        ``DEFAULT`` lets float32 inputs use TF32 on the GPU kernel;
        ``HIGHEST`` forces IEEE float32. bf16 inputs always multiply in bf16
        with float32 accumulation.
    """

    backend: str | None = None
    interpret: bool = False
    fwd: Tiling = Tiling()
    dx: Tiling = Tiling()
    ddata: Tiling = Tiling()
    smem_limit: int | None = None
    balance: bool = True
    precision: lax.Precision | None = None

    def __post_init__(self):
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {self.backend!r}")
        for name in ("interpret", "balance"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in KERNELS:
            if not isinstance(getattr(self, name), Tiling):
                raise TypeError(f"{name} must be a Tiling, got {getattr(self, name)!r}")
        if self.ddata.block_m is not None:
            raise ValueError(
                f"ddata.block_m must be None (the d data output tile is one block); set "
                f"ddata.block_k (rows of x per step) instead, got {self.ddata}"
            )
        v = self.smem_limit
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"smem_limit must be a positive int (bytes) or None, got {v!r}")

    def resolved_backend(self) -> str:
        """The backend actually used (``backend`` or :func:`default_backend`)."""
        if self.backend is not None:
            return self.backend
        return "pallas" if self.interpret else default_backend()

    def resolved_smem_limit(self) -> int:
        """``smem_limit`` or the default device's (:func:`smem_limit`)."""
        return self.smem_limit if self.smem_limit is not None else smem_limit()


def default_backend() -> str:
    """``"pallas"`` on NVIDIA GPUs (Triton lowering), ``"reference"`` elsewhere (CPU, TPU).

    The platform is that of ``jax.default_device`` where one is set, else the default
    backend's (see ``sparsejax._platform.target_platform``).
    """
    return "pallas" if target_platform() == "gpu" else "reference"


def smem_limit(device: Any = None) -> int:
    """Opt-in shared memory per thread block (bytes) of a GPU (default: ``jax.devices()[0]``).

    227 KiB (232 448 B) on compute capability 9.0/10.x (H100, H200, B200),
    163 KiB on 8.0 (A100), 99 KiB on 8.6/8.9/12.0. Off GPU (CPU tests, interpret
    mode, cross-platform lowering) the Hopper value, so configurations are
    chosen as on an H100. Unknown GPUs: 64 KiB.
    """
    device = jax.devices()[0] if device is None else device
    if device.platform != "gpu":
        return _HOPPER_SMEM
    return _SMEM_BY_CC.get(str(getattr(device, "compute_capability", "")), 65536)


def smem_bytes(
    rows: int, cols: int, block_k: int, num_stages: int, itemsize: int, out_itemsize: int
) -> int:
    """Estimated shared memory of one launch (bytes).

    ``num_stages · (rows + cols) · block_k · itemsize`` (the pipelined
    ``rows × block_k`` and ``block_k × cols`` operand chunks) plus
    ``rows · cols · out_itemsize`` (the output tile staged for the store).

    Args:
      rows, cols: output tile of one program.
      block_k: contraction chunk per loop step.
      num_stages: Triton pipelining stages.
      itemsize, out_itemsize: bytes per operand / output element.
    """
    return num_stages * (rows + cols) * block_k * itemsize + rows * cols * out_itemsize


def _kernel_dims(kernel: str, block: tuple[int, int]) -> tuple[int | None, int, int | None]:
    """``(cols, contraction dim of a block or None, fixed rows or None)`` of a kernel."""
    bk, bn = block
    if kernel == "fwd":
        return bn, bk, None
    if kernel == "dx":
        return bk, bn, None
    if kernel == "ddata":
        return bn, None, bk
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


#: Kept blocks per program (``fwd``: per block column, ``dx``: per block row) at or below
#: which unset ``num_stages`` prefer 2: a loop of a few blocks gains nothing from a deeper
#: software pipeline, whose prologue it pays in full.
SHORT_LOOP_BLOCKS = 4.0


def choose_launch(
    kernel: str, tiling: Tiling, *, m: int, block: tuple[int, int], itemsize: int,
    out_itemsize: int | None = None, limit: int = _HOPPER_SMEM,
    blocks_per_program: float | None = None,
) -> Launch:
    """Resolve a :class:`Tiling` into a :class:`Launch` that fits ``limit`` bytes of shared memory.

    Pure Python (no device work). Given fields are kept (``block_m`` and a
    ``ddata`` ``block_k`` are capped at the next power of two ≥ ``max(M, 16)``);
    unset ones are searched, largest first: ``block_m`` from 128 down, then
    ``num_stages`` 4, 3 (then 2, then 1), then ``block_k`` from the whole block
    (``fwd``/``dx``) or 128 rows (``ddata``) down to 16 — the first that fits
    wins (more rows per program reuse each loaded block over more rows of ``x``;
    a deeper pipeline of smaller chunks hides more latency than a shallow one
    of whole blocks: on an H200, bf16, 128 x 128 blocks, ``128:64:4:4`` ran
    1.5x faster than ``128:128:4:3`` at 75% block sparsity, see
    ``results/benchmarks/block_sparse_matmul_gpu.md``). With at most
    :data:`SHORT_LOOP_BLOCKS` kept blocks per program on average
    (``blocks_per_program``; ``fwd``/``dx`` only), ``num_stages`` 2 with chunks of at
    most 64 rows comes first: on
    an H100, 4096² at 90% block sparsity (3.2 blocks per column, bf16),
    ``128:64:4:2`` ran in 37–45 µs vs 41–49 µs for ``128:64:4:4`` in three runs,
    while at 75% (8 blocks) the two tied (``results/benchmarks/``
    ``block_sparse_sweep_4096_gpu-h100-stages.md``, ``block_sparse_sweep2_…``,
    ``block_sparse_auto_4096_gpu-h100.md``).
    ``num_warps``: 8 for output tiles of ≥ 32768 elements (e.g. 256 × 128), else 4.

    Args:
      kernel: ``"fwd"``, ``"dx"`` or ``"ddata"``.
      tiling: the requested settings.
      m: rows of ``x`` (``M``).
      block: ``(bk, bn)``.
      itemsize: bytes per element of the operands.
      out_itemsize: bytes per output element (default ``itemsize``).
      limit: shared memory per thread block (bytes), see :func:`smem_limit`.
      blocks_per_program: average kept blocks each program loops over
        (``nnzb / block columns`` for ``fwd``, ``nnzb / block rows`` for ``dx``);
        ``None``: unknown (long loops assumed).

    Returns:
      The launch, with its :func:`smem_bytes` estimate.

    Raises:
      ValueError: a ``block_k`` larger than the block's contraction dimension,
        or no configuration with the given fields fits (the message names the
        configuration, the bytes it needs and the limit).
    """
    cols, inner, fixed_rows = _kernel_dims(kernel, block)
    out_itemsize = itemsize if out_itemsize is None else out_itemsize
    cap = _pow2_ceil(max(int(m), 16))
    if fixed_rows is not None:  # ddata: output tile = one block, contraction over M
        if tiling.block_m is not None:
            raise ValueError(f"ddata tiling must leave block_m unset, got {tiling}")
        rows_opts = [fixed_rows]
        top = min(128, cap)
        if tiling.block_k is not None:
            chunk_opts = [min(tiling.block_k, cap)]
        else:
            chunk_opts = [c for c in (128, 64, 32, 16) if c <= top] or [16]
    else:
        if tiling.block_m is not None:
            rows_opts = [min(tiling.block_m, cap)]
        else:
            rows_opts = [r for r in (128, 64, 32, 16) if r <= min(128, cap)] or [16]
        if tiling.block_k is not None:
            if tiling.block_k > inner:
                raise ValueError(
                    f"{kernel} tiling {tiling}: block_k={tiling.block_k} exceeds the block's "
                    f"contraction dimension {inner} (block {tuple(block)})"
                )
            chunk_opts = [tiling.block_k]
        else:
            chunk_opts = [c for c in (inner >> s for s in range(8)) if c >= 16]
    short = (
        fixed_rows is None and blocks_per_program is not None
        and blocks_per_program <= SHORT_LOOP_BLOCKS
    )
    if tiling.num_stages is not None:
        stage_groups = [[tiling.num_stages]]
    else:
        stage_groups = [[2], [1]] if short else [[4, 3], [2], [1]]
    if short and tiling.block_k is None:  # 64-row chunks first: a 2-deep pipeline of halves
        chunk_opts = [c for c in chunk_opts if c <= 64] + [c for c in chunk_opts if c > 64]
    for rows in rows_opts:
        for group in stage_groups:
            for stages in group:
                for chunk in chunk_opts:
                    need = smem_bytes(rows, cols, chunk, stages, itemsize, out_itemsize)
                    if need <= limit:
                        warps = tiling.num_warps or (8 if rows * cols >= 32768 else 4)
                        return Launch(rows, chunk, warps, stages, need)
    rows, chunk = rows_opts[-1], chunk_opts[-1]
    stages = stage_groups[-1][-1]
    need = smem_bytes(rows, cols, chunk, stages, itemsize, out_itemsize)
    searched = len(rows_opts) * len(chunk_opts) * sum(map(len, stage_groups)) > 1
    raise ValueError(
        f"{kernel} tiling {tiling} (block_m:block_k:num_warps:num_stages; block "
        f"{tuple(block)}, {itemsize}-byte operands) does not fit in shared memory: "
        f"{'even ' if searched else ''}block_m={rows}, block_k={chunk}, num_stages={stages} "
        f"needs {need} bytes "
        f"({stages} stages x ({rows} + {cols}) x {chunk} x {itemsize} B + {rows} x {cols} x "
        f"{out_itemsize} B output tile) > the limit of {limit} bytes; use fewer stages, a "
        f"smaller block_m or block_k (or leave them unset to choose automatically)"
    )


def check_pallas_block(block: tuple[int, int]) -> None:
    """Raise ``ValueError`` unless both block dimensions are powers of two ≥ 16 (Triton dot)."""
    for name, v in zip(("rows", "cols"), block):
        if not _is_pow2(v) or v < 16:
            raise ValueError(
                f"the Pallas backend needs block {name} to be a power of two >= 16, got block "
                f"{tuple(block)}; use backend='reference' for other block sizes"
            )


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
        compiler_params=_triton_compiler_params(launch.num_warps, launch.num_stages),
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
        compiler_params=_triton_compiler_params(launch.num_warps, launch.num_stages),
        name="block_sparse_sddmm",
    )(rows, cols, x, dy)
    return out.reshape(nnzb, bk, bn)


def _dot(a: jax.Array, b: jax.Array, spec: str, cfg: KernelConfig) -> jax.Array:
    """Reference block products, float32 accumulation.

    XLA:CPU has no ``bf16 × bf16 → f32`` dot for every layout the gradients
    produce, so on CPU half-precision operands are upcast first (exact: a
    product of two bf16/f16 numbers is representable in float32).
    """
    if target_platform() == "cpu" and jnp.dtype(a.dtype).itemsize < 4:
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return jnp.einsum(spec, a, b, precision=cfg.precision, preferred_element_type=jnp.float32)


def _order(order: jax.Array | None, n: int, cfg: KernelConfig) -> jax.Array:
    if order is None or not cfg.balance:
        return jnp.arange(n, dtype=jnp.int32)
    if order.shape != (n,):
        raise ValueError(f"the launch order must have shape ({n},), got {order.shape}")
    return order


def spmm(
    x: jax.Array, data: jax.Array, rows: jax.Array, cols: jax.Array, col_ptr: jax.Array,
    cfg: KernelConfig = KernelConfig(), col_order: jax.Array | None = None,
) -> jax.Array:
    """``x @ W`` for ``W`` in the block-column format (see the module docstring).

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
    if cfg.resolved_backend() == "pallas":
        check_pallas_block((bk, bn))
        launch = _launch(cfg, "fwd", m, (bk, bn), x.dtype, blocks_per_program=nnzb / nbc)
        return _pallas_spmm(
            x, data, rows, None, col_ptr, _order(col_order, nbc, cfg), bk_in=bk, bn_out=bn,
            transpose=False, launch=launch, cfg=cfg,
        )
    xg = x.reshape(m, -1, bk)[:, rows, :]  # (M, nnzb, bk)
    contrib = _dot(xg, data, "mtk,tkn->tmn", cfg)  # (nnzb, M, bn)
    out = jnp.zeros((nbc, m, bn), jnp.float32).at[cols].add(contrib)
    return out.transpose(1, 0, 2).reshape(m, nbc * bn).astype(x.dtype)


def spmm_t(
    dy: jax.Array, data: jax.Array, rows: jax.Array, cols: jax.Array, row_ptr: jax.Array,
    t_cols: jax.Array, t_blocks: jax.Array, cfg: KernelConfig = KernelConfig(),
    row_order: jax.Array | None = None,
) -> jax.Array:
    """``dy @ Wᵀ`` (the input gradient of :func:`spmm`).

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
    if cfg.resolved_backend() == "pallas":
        check_pallas_block((bk, bn))
        launch = _launch(cfg, "dx", m, (bk, bn), dy.dtype, blocks_per_program=nnzb / nbr)
        return _pallas_spmm(
            dy, data, t_cols, t_blocks, row_ptr, _order(row_order, nbr, cfg), bk_in=bn,
            bn_out=bk, transpose=True, launch=launch, cfg=cfg,
        )
    dyg = dy.reshape(m, -1, bn)[:, cols, :]  # (M, nnzb, bn)
    contrib = _dot(dyg, data, "mtn,tkn->tmk", cfg)  # (nnzb, M, bk)
    out = jnp.zeros((nbr, m, bk), jnp.float32).at[rows].add(contrib)
    return out.transpose(1, 0, 2).reshape(m, nbr * bk).astype(dy.dtype)


def sddmm(
    x: jax.Array, dy: jax.Array, rows: jax.Array, cols: jax.Array, block: tuple[int, int],
    out_dtype: Any, cfg: KernelConfig = KernelConfig(),
) -> jax.Array:
    """Gradient of the kept blocks: ``out[t] = x[:, rows[t]]ᵀ @ dy[:, cols[t]]``.

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
    if cfg.resolved_backend() == "pallas":
        check_pallas_block((bk, bn))
        launch = _launch(cfg, "ddata", x.shape[0], (bk, bn), x.dtype, out_dtype)
        return _pallas_sddmm(
            x, dy, rows, cols, bk=bk, bn=bn, out_dtype=out_dtype, launch=launch, cfg=cfg
        )
    m = x.shape[0]
    xg = x.reshape(m, -1, bk)[:, rows, :]
    dyg = dy.reshape(m, -1, bn)[:, cols, :]
    return _dot(xg, dyg, "mtk,mtn->tkn", cfg).astype(out_dtype)
