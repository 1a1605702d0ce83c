"""Structured criteria computed from the weights: one score per output unit (neuron / filter).

Every criterion returns a **unit-scores pytree** mirroring the params: a prunable kernel
of shape ``(..., out)`` gets float32 scores of the ``Neurons`` mask shape
``(1, …, 1, out)`` (Dense ``(1, out)``, Conv ``(1, 1, 1, out)``), every other leaf the
scalar ``0.0``. So the result goes straight into ``sparsejax.prune(scores, s,
params=params, structure=sparsejax.Neurons(), prunable=...)`` (pass the same
``prunable`` as here). Higher = more important. All functions are pure and work under
``jax.jit`` (the loss function and the path mappings are static).

:func:`filter_norm` (Li et al. 2017), :func:`group_taylor` and :func:`mean_group_taylor`
(Molchanov et al. 2019), :func:`random_units` (the control) and :func:`oracle`, the
exact loss change of removing each unit (Molchanov et al. 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.scores._compile import _jitted_partial
from sparsejax.scores._elementwise import random as _random_scores
from sparsejax.scores._leaves import LossFn
from sparsejax.structures import Neurons
from sparsejax.tree import (
    Prunable,
    PyTree,
    check_same_structure,
    named_leaves,
    path_str,
    prunable_tree,
)

_NEURONS = Neurons()


def _unit_tree(params: PyTree, prunable: Prunable, fn: Callable[[str, Any], jax.Array]) -> PyTree:
    """``fn(path, leaf)`` (already of unit shape) on prunable leaves, scalar 0.0 elsewhere."""
    which = prunable_tree(params, prunable)

    def leaf(path, p, w):
        if not w:
            return jnp.zeros((), jnp.float32)
        name = path_str(path)
        _NEURONS.validate(np.shape(p), name)
        return jnp.asarray(fn(name, p), jnp.float32)

    return jax.tree_util.tree_map_with_path(leaf, params, which)


def _check_float(name: str, x: Any, what: str) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{what} at {name!r} has dtype {jnp.result_type(x)}; expected floats")


def _prunable_names(params: PyTree, prunable: Prunable) -> list[tuple[str, Any]]:
    which = jax.tree.leaves(prunable_tree(params, prunable))
    out = [(n, p) for (n, p), w in zip(named_leaves(params), which, strict=True) if w]
    if not out:
        raise ValueError(f"no prunable parameter: the prunable filter {prunable!r} matched no leaf")
    return out


def filter_norm(params: PyTree, ord: int = 1, *, prunable: Prunable = None) -> PyTree:
    """L1 (``ord=1``) or L2 (``ord=2``) norm of every output unit's weights.

    A Conv filter ``w[..., i]`` of shape ``(kh, kw, in)`` gets ``Σ|w|`` or
    ``√Σw²`` (Li et al. 2017 rank filters by their L1 norm); a Dense neuron, its
    column of ``(in,)`` weights. Pure; works under ``jit``.

    Args:
      params: parameter pytree (Flax layout: units on the last axis).
      ord: 1 or 2.
      prunable: which leaves are scored (default: float leaves with ``ndim >= 2``).

    Returns:
      Unit scores ``(1, …, 1, out)`` float32 on prunable leaves, scalar 0.0 elsewhere.

    Raises:
      ValueError: ``ord`` not 1 or 2, or no prunable leaf.

    References:
      Li, Kadav, Durdanovic, Samet, Graf. "Pruning Filters for Efficient ConvNets",
      ICLR 2017 (Section 3.1).

    Example:
      >>> filter_norm({"w": jnp.array([[1.0, -2.0], [3.0, 0.5]])})["w"]
      Array([[4. , 2.5]], dtype=float32)
    """
    if isinstance(ord, bool) or ord not in (1, 2):
        raise ValueError(f"ord must be 1 or 2, got {ord!r}")
    reduction = "l1" if ord == 1 else "l2"
    _prunable_names(params, prunable)
    return _unit_tree(params, prunable, lambda name, p: _NEURONS.reduce(p, reduction, name))


def group_taylor(params: PyTree, grads: PyTree, *, prunable: Prunable = None) -> PyTree:
    """Group Taylor importance ``(Σ_{s∈unit} g_s·w_s)²`` of one mini-batch.

    The first-order estimate of the squared loss change when the whole unit is
    removed (eq. 8 of Molchanov et al. 2019): the products ``g·w`` of a unit are
    summed *before* squaring, so correlated weights add up. Average it over
    mini-batches with :func:`mean_group_taylor`, as the paper does. The group is
    the unit's kernel column (biases are not included). Pure.

    Args:
      params: parameter pytree.
      grads: gradients of the loss, mirroring ``params`` with equal shapes.
      prunable: which leaves are scored.

    Returns:
      Unit scores ``(1, …, 1, out)`` float32 on prunable leaves, scalar 0.0 elsewhere.

    Raises:
      ValueError: ``grads`` does not mirror ``params`` or a shape differs (path named).

    References:
      Molchanov, Mallya, Tyree, Frosio, Kautz. "Importance Estimation for Neural
      Network Pruning", CVPR 2019 (eq. 8, "Taylor FO on weights").
    """
    check_same_structure(params, grads, "params", "grads")
    _prunable_names(params, prunable)
    g_by_name = dict(named_leaves(grads))

    def score(name, p):
        g = g_by_name[name]
        if np.shape(g) != np.shape(p):
            raise ValueError(
                f"grads at {name!r} have shape {np.shape(g)}, params shape {np.shape(p)}"
            )
        _check_float(name, g, "grads")
        prod = jnp.asarray(p, jnp.float32) * jnp.asarray(g, jnp.float32)
        return jnp.square(_NEURONS.reduce(prod, "sum", name))

    return _unit_tree(params, prunable, score)


def mean_group_taylor(
    loss_fn: LossFn, params: PyTree, batches: PyTree, *, prunable: Prunable = None
) -> PyTree:
    """:func:`group_taylor` averaged over ``B`` mini-batches (Molchanov et al. 2019).

    ``I_unit = (1/B) Σ_b (Σ_{s∈unit} g_s^{(b)} w_s)²`` where ``g^{(b)}`` is the
    gradient of ``loss_fn(params, batch_b)``. Because the square is taken per
    mini-batch, this differs from squaring the full-batch gradient (it adds
    the variance of the per-batch estimates, as in the paper's accumulation).
    Batches are processed sequentially with ``lax.map``. Pure; works under ``jit``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: parameter pytree.
      batches: a pytree whose every leaf has a leading axis of ``B`` mini-batches,
        e.g. ``(x[B, b, ...], y[B, b])``.
      prunable: which leaves are scored.

    Returns:
      Unit scores as :func:`group_taylor`.

    Raises:
      ValueError: ``batches`` has no leaves or leaves with different leading sizes.

    References:
      Molchanov et al. "Importance Estimation for Neural Network Pruning", CVPR 2019.
    """
    named = named_leaves(batches)
    if not named:
        raise ValueError("batches has no array leaves; it needs a leading mini-batch axis")
    leading = {n or "<root>": np.shape(x)[:1] for n, x in named}
    if any(len(s) == 0 for s in leading.values()) or len(set(leading.values())) != 1:
        raise ValueError(
            f"every leaf of batches needs the same leading (mini-batch) axis; got leading "
            f"shapes {leading}"
        )
    _prunable_names(params, prunable)
    return _jitted_partial(_mean_group_taylor_impl, loss_fn, prunable)(params, batches)


def _mean_group_taylor_impl(loss_fn, prunable, params, batches):
    grad_fn = jax.grad(loss_fn)

    def one(batch):
        return group_taylor(params, grad_fn(params, batch), prunable=prunable)

    per_batch = jax.lax.map(one, batches)
    return jax.tree.map(lambda s: jnp.mean(s, axis=0), per_batch)


def random_units(params: PyTree, key: jax.Array, *, prunable: Prunable = None) -> PyTree:
    """Uniform ``U[0, 1)`` unit scores: the random-pruning control.

    Each prunable leaf draws from ``fold_in(key, crc32(path))`` as in
    :func:`sparsejax.scores.random`, so a layer's draws depend only on the key,
    its path and its number of units. Pure; works under ``jit`` / ``vmap`` (keys).

    Returns:
      Unit scores ``(1, …, 1, out)`` float32 on prunable leaves, scalar 0.0 elsewhere.
    """
    which = prunable_tree(params, prunable)
    _prunable_names(params, prunable)
    shapes = jax.tree_util.tree_map_with_path(
        lambda path, p, w: (
            jnp.zeros(_NEURONS.mask_shape(np.shape(p), path_str(path)), jnp.float32)
            if w
            else jnp.zeros((), jnp.float32)
        ),
        params,
        which,
    )
    draws = _random_scores(shapes, key)
    return jax.tree.map(
        lambda d, w: d if w else jnp.zeros((), jnp.float32), draws, which
    )


def _sibling_bias(name: str, leaves: Mapping[str, Any]) -> str | None:
    if not name.endswith("/kernel"):
        return None
    bias = name[: -len("kernel")] + "bias"
    if bias in leaves and np.shape(leaves[bias]) == np.shape(leaves[name])[-1:]:
        return bias
    return None


def oracle(
    loss_fn: LossFn,
    params: PyTree,
    batch: PyTree,
    *,
    prunable: Prunable = None,
    remove_bias: bool = True,
    absolute: bool = True,
    chunk_size: int | None = None,
) -> PyTree:
    """The exact loss change of removing each output unit alone (Molchanov et al. 2017 oracle).

    For every prunable kernel and every unit ``i``: ``ΔL_i = L(w with unit i
    removed, batch) − L(w, batch)``, all other units and layers unchanged. A
    unit is removed by zeroing its kernel column ``w[..., i]`` and, with
    ``remove_bias``, the entry ``i`` of the sibling ``…/bias`` leaf (same
    module, shape ``(out,)``), so the unit's pre-activation is exactly zero —
    the feature-map removal of the paper. The ``out`` removals of a layer are
    evaluated at once with ``jax.vmap`` over one-hot removal masks
    (``chunk_size`` at a time with ``lax.map`` to bound memory). Cost: one loss
    evaluation per unit. Pure; works under ``jit``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: parameter pytree.
      batch: anything ``loss_fn`` accepts.
      prunable: the kernels whose units are scored (default: float leaves with ``ndim >= 2``).
      remove_bias: zero the unit's bias too (if the module has a ``bias`` leaf).
      absolute: ``|ΔL|`` (the paper's oracle ranking) or the signed ``ΔL``.
      chunk_size: removals per vmapped chunk, ``None`` = all units of a layer at once.

    Returns:
      Unit scores ``(1, …, 1, out)`` float32 on prunable leaves, scalar 0.0 elsewhere.

    Raises:
      ValueError: ``chunk_size`` not a positive int, or no prunable leaf.

    References:
      Molchanov, Tyree, Karras, Aila, Kautz. "Pruning Convolutional Neural Networks for
      Resource Efficient Inference", ICLR 2017 (Section 2.1 and the oracle ranking of
      Section 3).
    """
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    _prunable_names(params, prunable)
    # One compiled program for all layers (eager vmaps would dispatch op by op).
    chunk = None if chunk_size is None else int(chunk_size)
    fn = _jitted_partial(_oracle_impl, loss_fn, prunable, bool(remove_bias), bool(absolute), chunk)
    return fn(params, batch)


def _oracle_impl(loss_fn, prunable, remove_bias, absolute, chunk_size, params, batch):
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [path_str(p) for p, _ in flat]
    values = [v for _, v in flat]
    leaves = dict(zip(names, values))
    index = {n: i for i, n in enumerate(names)}
    base = loss_fn(params, batch)

    def layer(name: str, p: Any) -> jax.Array:
        out = int(np.shape(p)[-1])
        bias = _sibling_bias(name, leaves) if remove_bias else None
        positions = [index[name]] + ([index[bias]] if bias is not None else [])

        def removed(i):
            keep = jnp.arange(out) != i
            new = list(values)
            for j in positions:
                v = values[j]
                k = keep.reshape((1,) * (np.ndim(v) - 1) + (out,))
                new[j] = jnp.where(k, v, jnp.zeros((), jnp.result_type(v)))
            return loss_fn(jax.tree.unflatten(treedef, new), batch)

        units = jnp.arange(out)
        if chunk_size is None:
            losses = jax.vmap(removed)(units)
        else:
            losses = jax.lax.map(removed, units, batch_size=min(int(chunk_size), out))
        delta = jnp.asarray(losses, jnp.float32) - jnp.asarray(base, jnp.float32)
        delta = jnp.abs(delta) if absolute else delta
        return delta.reshape(_NEURONS.mask_shape(np.shape(p), name))

    return _unit_tree(params, prunable, layer)
