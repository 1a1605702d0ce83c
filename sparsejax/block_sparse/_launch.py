"""Launch configuration of the block-sparse Pallas kernels: tilings that fit in shared memory.

:class:`Tiling` (one per kernel; unset fields chosen) is resolved by
:func:`choose_launch` into a :class:`Launch`: the rows per program ``bm``, the
contraction chunk ``ck`` per loop step, ``num_warps`` and ``num_stages``. Triton's
software pipeliner keeps ``num_stages`` chunks of both operands in shared memory, so
a launch needs about (:func:`smem_bytes`)::

    num_stages · (rows + cols) · ck · itemsize  +  rows · cols · out_itemsize

for an output tile ``rows × cols`` (``spmm``: ``bm × bn``; ``spmm_t``:
``bm × bk``; ``sddmm``: ``bk × bn``, with ``ck`` rows of ``x``/``dy`` per step).
This is an upper bound of what Triton allocated for these kernels (a float32
launch it estimates above the limit also failed to compile; see
docs/results.md). Unset fields are chosen as the largest configuration that fits
the device's per-block limit (:func:`smem_limit`, by compute capability); a
configuration given in full that does not fit raises ``ValueError`` before anything
is compiled. :class:`KernelConfig` holds the backend and the three tilings.

Pallas constraints (Triton): ``bk``, ``bn``, the row tile ``bm`` and the
chunk ``ck`` are powers of two ≥ 16 (:func:`check_pallas_block`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jax import lax

from sparsejax._gpu_kernels import default_backend
from sparsejax._platform import host_platform

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
    "smem_bytes",
    "smem_limit",
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

    def resolved_backend(self, block: tuple[int, int] | None = None) -> str:
        """The backend used on the target platform (``sparsejax._platform.target_platform``).

        ``backend`` where set, ``"pallas"`` with ``interpret``, else
        :func:`default_backend` of the target platform: the Triton kernels on a GPU,
        the XLA reference on CPU and TPU (Pallas is never chosen for a TPU). The kernels
        resolve it per lowering platform (a program exported for a TPU from a GPU host
        gets the reference). Given the ``block``, a GPU lowered for from a host without
        one takes the reference where the Pallas kernels cannot tile it (on a GPU host
        the kernels raise instead, naming the block).
        """
        if self.backend is not None:
            return self.backend
        if self.interpret:
            return "pallas"
        backend = default_backend()
        if (
            backend == "pallas"
            and block is not None
            and host_platform() != "gpu"
            and not all(_is_pow2(v) and v >= 16 for v in block)
        ):
            return "reference"
        return backend

    def resolved_smem_limit(self) -> int:
        """``smem_limit`` or the default device's (:func:`smem_limit`)."""
        return self.smem_limit if self.smem_limit is not None else smem_limit()


def smem_limit(device: Any = None) -> int:
    """Opt-in shared memory per thread block (bytes) of a GPU (default: ``jax.devices()[0]``).

    227 KiB (232 448 B) on compute capability 9.0/10.x, 163 KiB on 8.0, 99 KiB
    on 8.6/8.9/12.0. Off GPU (CPU tests, interpret mode, cross-platform
    lowering) the compute capability 9.0 value, so configurations are chosen as
    on a Hopper GPU. Unknown GPUs: 64 KiB.
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
    of whole blocks). With at most :data:`SHORT_LOOP_BLOCKS` kept blocks per
    program on average (``blocks_per_program``; ``fwd``/``dx`` only),
    ``num_stages`` 2 with chunks of at most 64 rows comes first (a short loop
    gains nothing from a deeper pipeline; timings: docs/results.md).
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

