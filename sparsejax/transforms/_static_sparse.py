"""Sparse from the start: a random mask with exact per-layer counts, kept fixed (``static_sparse``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.select import prune
from sparsejax.select._distributions import parse_sparsity
from sparsejax.transforms._keep_sparse import keep_sparse
from sparsejax.transforms._mask_leaves import MaskOrFn
from sparsejax.tree import Prunable, PyTree


def _as_key(key: Any, owner: str) -> jax.Array:
    """A typed PRNG key from a typed key, a raw ``uint32[2]`` key or an int seed (checked)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    if dtype is not None:
        if jnp.issubdtype(dtype, jax.dtypes.prng_key) and jnp.ndim(key) == 0:
            return key
        if dtype == jnp.uint32 and tuple(jnp.shape(key)) == (2,):
            return jax.random.wrap_key_data(key)
    raise TypeError(
        f"{owner}: key must be one jax.random.key(...) (a raw uint32[2] PRNGKey or an int seed "
        f"also do), got {key!r}; random masks and random growth take an explicit key"
    )


def random_mask(
    params: PyTree,
    sparsity: float | jax.Array,
    key: jax.Array,
    *,
    distribution: str | Mapping[str, float] = "erk",
    prunable: Prunable = None,
) -> PyTree:
    """A uniformly random mask with exactly ``round(s_l · n_l)`` pruned entries per layer.

    Layer ``l`` (the ``i``-th prunable leaf in ``jax.tree.leaves`` order) ranks
    its entries by uniform draws from ``fold_in(key, i)`` and prunes the lowest
    ``round(s_l · n_l)`` with :func:`sparsejax.prune`, where ``s_l`` follows
    ``distribution``: ``"erk"`` (Erdős–Rényi-Kernel, Evci et al. 2020: overall
    sparsity ``sparsity`` over the prunable entries, small layers denser),
    ``"uniform"`` (every layer ``sparsity``) or a per-layer map. Pure; the same
    mask eagerly, under ``jit`` and for each seed of a ``jax.vmap`` over keys.

    Args:
      params: parameter pytree (only shapes are read).
      sparsity: overall sparsity in ``[0, 1]``.
      key: a PRNG key (``jax.random.key``), possibly traced.
      distribution: ``"erk"`` (default, as RigL), ``"uniform"`` or
        ``{path_regex: sparsity}`` (see :func:`sparsejax.prune`).
      prunable: which leaves are sparse (default: float leaves with ``ndim >= 2``); the others
        get the scalar ``True``.

    Returns:
      A mask pytree mirroring ``params`` (full-shape ``bool`` leaves for the
      prunable parameters).

    Raises:
      TypeError: ``key`` is not a PRNG key. ValueError: a sparsity outside
        ``[0, 1]``, an unknown distribution or a filter matching nothing
        (from :func:`sparsejax.prune`).

    References:
      Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All
      Tickets Winners", ICML 2020 (ERK; the "Static" baseline).

    Example:
      >>> import jax, jax.numpy as jnp, sparsejax as sj
      >>> params = {"w": jnp.zeros((100, 100)), "v": jnp.zeros((100, 10)), "b": jnp.zeros(10)}
      >>> mask = sj.transforms.random_mask(params, 0.9, jax.random.key(0))
      >>> {k: int(m.sum()) for k, m in mask.items()}  # ERK: the small layer is denser
      {'b': 1, 'v': 390, 'w': 710}
    """
    key = _as_key(key, "random_mask")
    parse_sparsity(sparsity, "random_mask: sparsity")
    leaves, treedef = jax.tree.flatten(params)
    scores = [
        jax.random.uniform(jax.random.fold_in(key, i), jnp.shape(p), jnp.float32)
        for i, p in enumerate(leaves)
    ]
    return prune(
        jax.tree.unflatten(treedef, scores),
        sparsity,
        params=params,
        prunable=prunable,
        distribution=distribution,
    )


def static_sparse(
    inner: optax.GradientTransformation,
    sparsity: float | None = None,
    *,
    key: jax.Array | None = None,
    distribution: str | Mapping[str, float] = "erk",
    prunable: Prunable = None,
    mask: MaskOrFn | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Train sparse from the start with a fixed random mask: the "Static" baseline of RigL.

    ``init`` draws :func:`random_mask` ``(params, sparsity, key, distribution=...,
    prunable=...)`` (or takes ``mask``) and the transform is
    :func:`~sparsejax.transforms.keep_sparse` with it: gradients are zeroed at
    pruned positions and pruned weights are exactly ``0.0`` after every update,
    with any ``inner``. The first update zeroes the pruned weights; to start the
    forward pass sparse too, mask the params with
    ``sparsejax.apply_mask(params, sparsejax.current_mask(state))`` (or
    ``TrainState.with_mask``).

    Args:
      inner: the optimizer to wrap.
      sparsity: overall sparsity in ``[0, 1]`` of the random mask.
      key: PRNG key of the random mask.
      distribution: per-layer sparsities, ``"erk"`` (default) or ``"uniform"``
        or a map (see :func:`random_mask`).
      prunable: which leaves are sparse (default: float leaves with ``ndim >= 2``).
      mask: a given mask (pytree or ``params -> mask``) instead of a random
        one; then ``sparsity`` and ``key`` must be left out.

    Returns:
      ``keep_sparse(inner, mask)`` (state :class:`KeepSparseState`).

    Raises:
      ValueError: both or neither of ``mask`` and (``sparsity``, ``key``).
      TypeError: ``key`` is not a PRNG key.

    References:
      Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All
      Tickets Winners", ICML 2020 (Static baseline, ERK).

    Example:
      >>> import jax, jax.numpy as jnp, optax, sparsejax as sj
      >>> params = {"w": jnp.ones((10, 10)), "b": jnp.zeros(10)}
      >>> tx = sj.transforms.static_sparse(optax.sgd(0.1), 0.8, key=jax.random.key(0))
      >>> int(sj.current_mask(tx.init(params))["w"].sum())
      20
    """
    if mask is not None:
        if sparsity is not None or key is not None:
            raise ValueError(
                "static_sparse: give either mask= or (sparsity, key=) for a random mask, not both"
            )
        return keep_sparse(inner, mask)
    if sparsity is None or key is None:
        raise ValueError(
            f"static_sparse: a random mask needs sparsity and key=, got sparsity={sparsity!r}, "
            f"key={key!r} (or pass mask=)"
        )
    key = _as_key(key, "static_sparse")
    parse_sparsity(sparsity, "static_sparse: sparsity")
    return keep_sparse(
        inner,
        lambda params: random_mask(
            params, sparsity, key, distribution=distribution, prunable=prunable
        ),
    )
