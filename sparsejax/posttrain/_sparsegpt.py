"""SparseGPT (Frantar & Alistarh, ICML 2023): one-shot pruning with OBS weight reconstruction.

In the paper's orientation ``W (out, in)`` (here ``kernel.T``: a row is one output
unit), columns are pruned left to right. With ``H = 2XXᵀ/n + λI`` (λ = ``damp`` × the
mean diagonal, default 1%) and ``U`` the upper Cholesky factor of ``H⁻¹``, column ``c``
is replaced by its masked copy ``q`` and the error ``(w − q)/U_cc`` is fed back to the
columns not yet processed along ``U_c,:`` (the optimal brain surgeon update, Hassibi &
Stork 1993). Columns go in lazy blocks of ``block_size`` (128): updates inside a block
are rank-1, the rest of the matrix gets one matrix product per block. The mask is chosen
adaptively per block from ``w²/U_cc²`` of the weights as updated so far — over the whole
block (``comparison="block"``, the paper) or per output unit — and, for N:M, per group
of ``m`` columns just before they are processed. Dead inputs (``H_jj = 0``) get
``H_jj = 1`` and zero weights. Everything runs in one jitted program per layer shape:
``lax.fori_loop`` over blocks and columns, products at ``Precision.HIGHEST``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsejax.posttrain._method import LayerResult, Method
from sparsejax.posttrain._selection import check_kernel, check_sparsity, lowest_k
from sparsejax.posttrain._statistics import InputStatistics, hessian
from sparsejax.structures import NM, Structure, Unstructured

__all__ = ["SPARSEGPT_COMPARISONS", "SparseGPT", "block_counts", "sparsegpt"]

#: Where SparseGPT's adaptive mask selection compares scores inside a block of columns.
SPARSEGPT_COMPARISONS = ("block", "row")
_HIGHEST = lax.Precision.HIGHEST


def block_counts(sparsity: float, columns: int, block_size: int, rows: int) -> np.ndarray:
    """How many entries each block of columns prunes: ``int64[num_blocks]``.

    Cumulative rounding, ``k_b = round(s·E_{≤b}) − round(s·E_{<b})`` with ``E`` the
    entries of the blocks so far (``rows`` per column), so the blocks together prune
    exactly ``round(s·rows·columns)`` and each within one of ``s·E_b``. Pass ``rows=1``
    for the count per output unit.
    """
    edges = np.minimum(np.arange(0, columns + block_size, block_size), columns)
    edges = np.unique(edges)
    total = np.array([round(sparsity * rows * int(e)) for e in edges], np.int64)
    return np.diff(total)


def _check_options(block_size: object, damp: object, comparison: str) -> tuple[int, float]:
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    if isinstance(damp, bool) or not isinstance(damp, numbers.Real) or not 0.0 <= damp < math.inf:
        raise ValueError(f"damp must be a finite number >= 0, got {damp!r}")
    if comparison not in SPARSEGPT_COMPARISONS:
        raise ValueError(f"comparison must be one of {SPARSEGPT_COMPARISONS}, got {comparison!r}")
    return int(block_size), float(damp)


def _check_nm_block(structure: Structure, shape: tuple[int, int], block_size: int,
                    path: str) -> None:
    if isinstance(structure, NM):
        structure.validate(shape, path)
        if block_size % structure.m and block_size < shape[0]:
            raise ValueError(f"{path!r}: block_size={block_size} must be a multiple of "
                             f"m={structure.m} for {structure.n}:{structure.m} sparsity")


def sparsegpt(
    kernel: jax.Array,
    hessian: jax.Array,
    sparsity: float | None = None,
    *,
    structure: Structure = Unstructured(),  # noqa: B008 (frozen, immutable)
    block_size: int = 128,
    damp: float = 0.01,
    comparison: str = "block",
    path: str = "kernel",
) -> LayerResult:
    """Prune one ``(in, out)`` kernel with SparseGPT and reconstruct the kept weights.

    Args:
      kernel: ``(in, out)`` float kernel (Flax layout; the paper's ``W`` is ``kernel.T``).
      hessian: ``(in, in)`` layer Hessian ``2XXᵀ/n`` (:func:`sparsejax.posttrain.hessian`);
        only its relative scale matters.
      sparsity: fraction to prune; ``None`` for the full ``NM(n, m)`` pattern.
      structure: ``Unstructured()`` or ``NM(n, m)`` (``m`` must divide ``block_size``).
      block_size: columns per lazy block ``B`` (paper: 128); also the mask-selection
        block. Capped at ``in``; a last, shorter block is padded internally.
      damp: λ as a fraction of the mean of ``diag(H)`` (paper: 0.01).
      comparison: unstructured masks: ``"block"`` (the paper: the ``k_b`` lowest
        ``w²/U_cc²`` of the whole ``(out, B)`` block, :func:`block_counts`) or ``"row"``
        (the same count in every output unit of the block: exactly ``round(s·in)`` per
        unit over the layer).
      path: the kernel's name in errors.

    Returns:
      :class:`LayerResult`: the reconstructed kernel (kernel's dtype; pruned entries
      exactly ``0``), the keep mask ``bool[in, out]`` and the OBS loss estimate.
      Exactly ``round(s·in·out)`` entries are pruned (N:M: ``m − n`` of every ``m``).

    Raises:
      ValueError: bad shapes, options or sparsity (naming ``path``); a Hessian with
        NaN/inf; a Hessian that is not positive definite after damping (raise ``damp``).

    References:
      Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
      One-Shot", ICML 2023 (Algorithm 1).

    Example:
      >>> x = jax.random.normal(jax.random.key(0), (256, 8))
      >>> w = jax.random.normal(jax.random.key(1), (8, 4))
      >>> res = sparsegpt(w, 2 * x.T @ x / 256, 0.5)
      >>> int((~res.mask).sum()), bool(jnp.all(jnp.where(res.mask, True, res.kernel == 0)))
      (16, True)
    """
    d_in, d_out = check_kernel(kernel, path)
    s = check_sparsity(sparsity, structure, path)
    block_size, damp = _check_options(block_size, damp, comparison)
    if tuple(jnp.shape(hessian)) != (d_in, d_in):
        raise ValueError(f"{path!r}: Hessian of shape {tuple(jnp.shape(hessian))} for a kernel "
                         f"with {d_in} inputs (expected ({d_in}, {d_in}))")
    _check_nm_block(structure, (d_in, d_out), block_size, path)
    nm = (structure.n, structure.m) if isinstance(structure, NM) else None
    block = min(block_size, d_in)
    if nm is None:
        counts = block_counts(s, d_in, block, 1 if comparison == "row" else d_out)
    else:
        counts = np.zeros(-(-d_in // block), np.int64)
    new, keep, loss, finite = _sparsegpt_core(
        kernel, hessian, jnp.asarray(counts, jnp.int32), jnp.float32(damp), block=block,
        nm=nm, per_row=comparison == "row")
    if not isinstance(finite, jax.core.Tracer):
        if not bool(finite):
            raise ValueError(f"{path!r}: the Hessian holds NaN or inf")
        if not bool(jnp.isfinite(loss)):
            raise ValueError(f"{path!r}: the damped Hessian is not positive definite "
                             f"(Cholesky failed with damp={damp}); raise damp")
    return LayerResult(new, keep, loss)


def _inverse_cholesky(h: jax.Array, damp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Upper Cholesky factor ``U`` of ``(H + λI)⁻¹`` (``UᵀU = H⁻¹``) and the dead inputs."""
    n = h.shape[0]
    eye = jnp.eye(n, dtype=h.dtype)
    dead = jnp.diag(h) == 0
    h = h + jnp.diag(dead.astype(h.dtype))
    h = h + damp * jnp.mean(jnp.diag(h)) * eye
    lower = jnp.linalg.cholesky(h)
    h_inv = jax.scipy.linalg.cho_solve((lower, True), eye)
    return jnp.triu(jnp.linalg.cholesky(h_inv).T), dead


@functools.partial(jax.jit, static_argnames=("block", "nm", "per_row"))
def _sparsegpt_core(kernel, h, counts, damp, *, block: int, nm: tuple[int, int] | None,
                    per_row: bool):
    """``kernel (in, out)`` -> (new kernel, keep mask, OBS loss, whether H is finite).

    Works on ``w = kernel.T (rows, cols)``, the paper's orientation.
    """
    w = jnp.asarray(kernel, jnp.float32).T
    h = jnp.asarray(h, jnp.float32)
    finite = jnp.all(jnp.isfinite(h))
    cols = w.shape[1]
    num_blocks = -(-cols // block)
    padded = num_blocks * block
    u, dead = _inverse_cholesky(h, damp)
    w = jnp.where(dead[None, :], 0.0, w)
    # Padded columns: zero weights, identity in U (no coupling): they never change.
    w = jnp.pad(w, ((0, 0), (0, padded - cols)))
    u = jax.scipy.linalg.block_diag(u, jnp.eye(padded - cols, dtype=u.dtype)) if padded > cols else u
    real = jnp.arange(padded) < cols

    def column_step(j, carry):
        w1, pruned1, u1, err1, loss = carry
        col = lax.dynamic_index_in_dim(w1, j, axis=1, keepdims=False)
        d = u1[j, j]
        q = jnp.where(lax.dynamic_index_in_dim(pruned1, j, axis=1, keepdims=False), 0.0, col)
        e = (col - q) / d
        w1 = w1 - e[:, None] * u1[j][None, :]          # U upper: only columns >= j change
        w1 = lax.dynamic_update_index_in_dim(w1, q, j, axis=1)  # exactly q (zeros stay zeros)
        err1 = lax.dynamic_update_index_in_dim(err1, e, j, axis=1)
        return w1, pruned1, u1, err1, loss + jnp.sum((col - q) ** 2) / (2.0 * d * d)

    def nm_group(g, carry):
        w1, pruned1, u1, err1, loss = carry
        n, m = nm
        start = g * m
        wg = lax.dynamic_slice_in_dim(w1, start, m, axis=1)
        dg = lax.dynamic_slice_in_dim(jnp.diag(u1), start, m)
        prune_g = lowest_k(wg * wg / (dg * dg)[None, :], m - n, per_row=True)
        pruned1 = lax.dynamic_update_slice_in_dim(pruned1, prune_g, start, axis=1)
        carry = (w1, pruned1, u1, err1, loss)
        return lax.fori_loop(0, m, lambda k, c: column_step(start + k, c), carry,
                             unroll=min(m, 8))

    def block_step(b, carry):
        w, keep, loss = carry
        i1 = b * block
        w1 = lax.dynamic_slice_in_dim(w, i1, block, axis=1)
        u_rows = lax.dynamic_slice_in_dim(u, i1, block, axis=0)      # (block, padded)
        u1 = lax.dynamic_slice_in_dim(u_rows, i1, block, axis=1)     # (block, block)
        if nm is None:
            d = jnp.diag(u1)
            valid = lax.dynamic_slice_in_dim(real, i1, block)
            scores = jnp.where(valid[None, :], w1 * w1 / (d * d)[None, :], jnp.inf)
            pruned1 = lowest_k(scores, counts[b], per_row=per_row)
            body, trips, unroll = column_step, block, math.gcd(block, 4)
        else:
            pruned1 = jnp.zeros(w1.shape, bool)
            body, trips, unroll = nm_group, block // nm[1], 1
        carry1 = (w1, pruned1, u1, jnp.zeros_like(w1), loss)
        q1, pruned1, _, err1, loss = lax.fori_loop(0, trips, body, carry1, unroll=unroll)
        # Lazy update of every later column; U is upper triangular, so the columns before
        # the block are untouched, and the block's own columns are overwritten with q.
        w = w - jnp.matmul(err1, u_rows, precision=_HIGHEST)
        w = lax.dynamic_update_slice_in_dim(w, q1, i1, axis=1)
        keep = lax.dynamic_update_slice_in_dim(keep, ~pruned1, i1, axis=1)
        return w, keep, loss

    init = (w, jnp.ones(w.shape, bool), jnp.zeros((), jnp.float32))
    w, keep, loss = lax.fori_loop(0, num_blocks, block_step, init)
    return w[:, :cols].T.astype(kernel.dtype), keep[:, :cols].T, loss, finite


@dataclasses.dataclass(frozen=True)
class SparseGPT(Method):
    """SparseGPT (Frantar & Alistarh 2023) with the paper's defaults.

    Attributes:
      block_size: lazy / mask-selection block of columns (paper: 128).
      damp: Hessian dampening as a fraction of its mean diagonal (paper: 0.01).
      comparison: ``"block"`` (paper) or ``"row"``; see :func:`sparsegpt`.
    """

    block_size: int = 128
    damp: float = 0.01
    comparison: str = "block"
    statistics: ClassVar[str] = "gram"

    def __post_init__(self):
        _check_options(self.block_size, self.damp, self.comparison)

    def validate(self, shape, structure, path="kernel") -> None:
        _check_nm_block(structure, tuple(shape), self.block_size, path)

    def prune_layer(self, kernel, stats: InputStatistics | None, sparsity, structure,
                    path="kernel") -> LayerResult:
        if stats is None or stats.gram is None:
            raise ValueError(f"{path!r}: SparseGPT needs the Gram matrix of the layer's inputs")
        return sparsegpt(kernel, hessian(stats), sparsity, structure=structure,
                         block_size=self.block_size, damp=self.damp,
                         comparison=self.comparison, path=path)
