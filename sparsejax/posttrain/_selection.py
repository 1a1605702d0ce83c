"""Which weights of one kernel to prune: per layer, per output unit, or N:M.

Flax kernels are ``(in, out)``: one *row* of the papers' weight matrix ``W (out, in)``,
the weights of one output unit, is a **column** here. :func:`kernel_mask` turns scores
of a kernel into its keep mask through :func:`sparsejax.prune`, so ties, NaN handling
and rounding are the core's: ``"layer"`` prunes ``round(s·in·out)`` entries of the
kernel, ``"row"`` prunes ``round(s·in)`` of every output unit (``prune`` ``vmap``-ed over
the output axis), and ``NM(n, m)`` keeps ``n`` of every ``m`` consecutive inputs of each
output unit. :func:`lowest_k` selects an exact, possibly traced, count (SparseGPT's
per-block masks inside its loop).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from sparsejax.select import prune
from sparsejax.structures import NM, Structure, Unstructured

__all__ = ["COMPARISONS", "check_kernel", "check_sparsity", "kernel_mask", "lowest_k"]

#: Where scores compete: the whole kernel, or each output unit (a row of the papers).
COMPARISONS = ("layer", "row")


def check_kernel(kernel: jax.Array, path: str) -> tuple[int, int]:
    """``(in, out)`` of a 2-d float kernel, or a ``ValueError`` naming ``path``."""
    shape = tuple(jnp.shape(kernel))
    dtype = jnp.result_type(kernel)
    if len(shape) != 2 or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{path!r}: post-training pruning needs a float (in, out) kernel, got "
                         f"{dtype}{shape}")
    return shape[0], shape[1]


def check_sparsity(sparsity: object, structure: Structure, path: str) -> float | None:
    """The sparsity as a float, checked against the structure (``None`` only for N:M).

    Raises:
      ValueError / TypeError: naming ``path``: not a number, outside ``[0, 1]``, ``None``
        without N:M, or an N:M sparsity other than ``1 - n/m``.
    """
    if not isinstance(structure, Unstructured | NM):
        raise ValueError(f"post-training pruning supports Unstructured() and NM(n, m), got "
                         f"{structure!r}")
    if isinstance(structure, NM) and getattr(structure, "axis", None) not in (None, 0, -2):
        raise ValueError(f"post-training N:M runs along the input axis of (in, out) kernels; "
                         f"got {structure!r}")
    if sparsity is None:
        if not isinstance(structure, NM):
            raise ValueError(f"{path!r}: sparsity is required for unstructured pruning")
        return None
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise TypeError(f"{path!r}: sparsity must be a float in [0, 1], got {sparsity!r}")
    s = float(sparsity)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"{path!r}: sparsity must be in [0, 1], got {s}")
    if isinstance(structure, NM) and abs(s - structure.max_sparsity) > 1e-9:
        raise ValueError(f"{path!r}: {structure.n}:{structure.m} sparsity is "
                         f"{structure.max_sparsity:g}; got sparsity={s} (pass None)")
    return s


def kernel_mask(
    scores: jax.Array,
    sparsity: float | None,
    *,
    comparison: str = "layer",
    structure: Structure = Unstructured(),  # noqa: B008 (frozen, immutable)
    path: str = "kernel",
) -> jax.Array:
    """Keep mask of the lowest-scoring entries of one ``(in, out)`` kernel.

    Args:
      scores: ``(in, out)`` importance (low = pruned first).
      sparsity: fraction to prune; ``None`` for the full ``NM(n, m)`` pattern.
      comparison: ``"layer"`` (exactly ``round(s·in·out)`` pruned) or ``"row"``
        (exactly ``round(s·in)`` in every output unit). Ignored for N:M, which is
        per output unit by construction.
      structure: ``Unstructured()`` or ``NM(n, m)`` (along the input axis).
      path: the kernel's name in errors.

    Returns:
      ``bool[in, out]``, ``True`` = kept. Pure; works under ``jit``.

    Raises:
      ValueError: a bad kernel shape, sparsity or comparison (naming ``path``), or
        ``in`` not divisible by ``m``.
    """
    check_kernel(scores, path)
    s = check_sparsity(sparsity, structure, path)
    if comparison not in COMPARISONS:
        raise ValueError(f"comparison must be one of {COMPARISONS}, got {comparison!r}")
    # One stable sort per kernel (or output unit): the same mask as every other search of
    # the core, bit for bit, and the cheapest program to compile for one layer.
    if isinstance(structure, NM):
        return prune({path: scores}, s, structure=structure)[path]
    if comparison == "layer":
        return prune({path: scores}, s, search="sort")[path]

    def one_unit(column: jax.Array) -> jax.Array:
        return prune({path: column[:, None]}, s, search="sort")[path][:, 0]

    return jax.vmap(one_unit, in_axes=1, out_axes=1)(scores)


def lowest_k(scores: jax.Array, k: jax.Array, *, per_row: bool) -> jax.Array:
    """``True`` at the ``k`` lowest scores (all of them, or of each row with ``per_row``).

    Exact for a traced integer ``k``; ties go to the lower index (a stable sort, as in
    :func:`sparsejax.prune`); NaN ranks above every number.

    Returns:
      ``bool`` of ``scores.shape``: the entries to **prune**.
    """
    if per_row:
        order = jnp.argsort(scores, axis=-1, stable=True)
        n = scores.shape[-1]
        ranks = jnp.zeros(scores.shape, jnp.int32)
        ranks = jnp.put_along_axis(
            ranks, order, jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), scores.shape),
            axis=-1, inplace=False)
        return ranks < k
    flat = scores.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
    return (ranks < k).reshape(scores.shape)
