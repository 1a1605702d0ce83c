"""``straight_through``: dense weights trained through their N:M or top-k projection (STE, SR-STE)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparsejax.scores import magnitude
from sparsejax.select import prune
from sparsejax.select._distributions import parse_sparsity
from sparsejax.structures import NM, Structure
from sparsejax.transforms._mask_leaves import (
    MaskLeaves,
    _check_update_trees,
    _require_params,
)
from sparsejax.tree import Prunable, PyTree, named_leaves, prunable_tree

_TWO_FOUR = NM(2, 4)


class StraightThroughState(NamedTuple):
    """State of :func:`straight_through`.

    Attributes:
      dense: the dense weights of the prunable leaves (a tuple in leaf order, in
        the params' dtype): what the optimizer trains.
      mask_leaves: the mask of their current projection (:class:`MaskLeaves`;
        full-shape ``bool`` for prunable leaves, scalar ``True`` otherwise). The
        params the loss sees are ``where(mask, dense, 0)``.
      inner_state: the state of the wrapped optimizer (over the dense weights).
    """

    dense: tuple
    mask_leaves: MaskLeaves
    inner_state: optax.OptState

    @property
    def mask(self) -> PyTree:
        """The mask of the projection, mirroring the params."""
        return self.mask_leaves.tree()


def straight_through(
    inner: optax.GradientTransformation,
    *,
    structure: Structure = _TWO_FOUR,
    sparsity: float | None = None,
    decay: float = 2e-4,
    prunable: Prunable = None,
    scope: str = "layer",
    distribution: str | Mapping[str, float] = "uniform",
) -> optax.GradientTransformationExtraArgs:
    r"""Sparse-refined straight-through training: the loss sees the projection, the dense weights learn.

    The state keeps dense weights :math:`W`; the params the user's loss sees
    are their projection :math:`\tilde W = \text{where}(m(W), W, 0)`, with
    :math:`m(W)` the mask of the largest ``|W|``: N:M (``structure=NM(n, m)``,
    default 2:4, each run of ``m`` inputs keeps ``n``) or top-k
    (``structure=Unstructured()`` with a ``sparsity``, layerwise or global, any
    distribution), recomputed from the dense weights at every step. The
    gradient of the loss at :math:`\tilde W` passes *straight through* to
    :math:`W` (pruned entries included), with SR-STE's sparse-refined decay
    on the pruned weights (Zhou et al. 2021, Eq. 6):

    .. math::
      W_{t+1} = W_t - \gamma \left(g(\tilde W_t) + \lambda_W\, \bar m_t \odot W_t\right),

    where the bracket is handed to ``inner`` as the gradient, :math:`\bar m`
    marks the pruned entries and :math:`\lambda_W` = ``decay`` (the paper's
    ``2e-4``; ``0`` is the plain STE of Bengio et al. 2013). ``update``
    returns ``projection(W_{t+1}) - params``: after ``optax.apply_updates``
    the pruned params are exactly ``0.0`` and the kept ones equal
    :math:`W_{t+1}` up to the one rounding of that addition. The first
    forward sees the params as given; project them first with
    ``sparsejax.apply_mask(params, sparsejax.current_mask(state))``.

    **Memory:** one copy of the prunable parameters (their dtype) in the
    state, besides ``inner``'s state over them; nothing else.

    Args:
      inner: the optimizer of the dense weights (the paper: SGD with momentum).
      structure: ``NM(n, m)`` (default ``NM(2, 4)``) or ``Unstructured()``.
      sparsity: the top-k sparsity (``None`` with ``NM``: the full ``1 - n/m``).
      decay: :math:`\lambda_W`, ``>= 0``.
      prunable: which leaves are projected (default: float leaves with ``ndim >= 2``); the others
        train as with ``inner`` alone.
      scope, distribution: of the top-k selection (see :func:`sparsejax.prune`).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`StraightThroughState`; ``update`` needs ``params``. Pure; jit-,
      vmap- and shard-safe.

    Raises:
      ValueError / TypeError: a negative or non-numeric ``decay``, a missing
        sparsity for a structure other than ``NM``, a structure that does not
        fit a layer (e.g. ``NM(2, 4)`` on an axis not divisible by 4, naming
        the path; at ``init``), ``params=None`` or mismatched trees.

    References:
      Zhou, Ma, Zhu, Liu, Zhang, Yuan, Sun, Li. "Learning N:M Fine-grained
      Structured Sparse Neural Networks From Scratch", ICLR 2021.
      https://arxiv.org/abs/2102.04010. Bengio, Léonard, Courville, 2013
      (straight-through estimator).

    Example:
      >>> import jax.numpy as jnp, optax, sparsejax as sj
      >>> params = {"w": jnp.array([[4.0], [-1.0], [3.0], [2.0]])}
      >>> tx = sj.transforms.straight_through(optax.sgd(1.0), decay=0.0)
      >>> state = tx.init(params)
      >>> params = sj.apply_mask(params, sj.current_mask(state))   # 2:4 of the input axis
      >>> params["w"].ravel().tolist()
      [4.0, 0.0, 3.0, 0.0]
      >>> updates, state = tx.update({"w": jnp.array([[0.0], [-5.0], [0.0], [0.0]])}, state, params)
      >>> optax.apply_updates(params, updates)["w"].ravel().tolist()  # -1 + 5 = 4 now kept
      [4.0, 4.0, 0.0, 0.0]
    """
    inner = optax.with_extra_args_support(inner)
    if not isinstance(structure, Structure):
        raise TypeError(f"straight_through: structure must be a sparsejax Structure, got "
                        f"{structure!r}")
    if sparsity is None and not isinstance(structure, NM):
        raise ValueError(f"straight_through: structure={structure!r} needs a sparsity")
    if sparsity is not None:
        parse_sparsity(sparsity, "straight_through: sparsity")
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not decay >= 0:
        raise ValueError(f"straight_through: decay must be a number >= 0, got {decay!r}")
    decay = float(decay)

    def project(dense_tree):
        return prune(magnitude(dense_tree), sparsity, prunable=prunable, scope=scope,
                     structure=structure, distribution=distribution)

    def which_of(params):
        return [bool(k) for _, k in named_leaves(prunable_tree(params, prunable))]

    def init_fn(params):
        which = which_of(params)
        mask = project(params)
        leaves = [
            jnp.broadcast_to(m, jnp.shape(p)) if w else jnp.ones((), bool)
            for m, p, w in zip(jax.tree.leaves(mask), jax.tree.leaves(params), which, strict=True)
        ]
        return StraightThroughState(
            dense=tuple(jnp.asarray(p) for p, w in zip(jax.tree.leaves(params), which) if w),
            mask_leaves=MaskLeaves(tuple(leaves), jax.tree.structure(params)),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        _require_params("straight_through", params)
        mask_tree = state.mask
        _check_update_trees("straight_through", updates, params, mask_tree)
        which = which_of(params)
        treedef = jax.tree.structure(params)
        p_leaves = jax.tree.leaves(params)
        it = iter(state.dense)
        dense_leaves = [next(it) if w else p for p, w in zip(p_leaves, which, strict=True)]
        dense_tree = jax.tree.unflatten(treedef, dense_leaves)
        grads = jax.tree.map(
            lambda g, m, d: g + jnp.where(m, jnp.zeros((), g.dtype), decay * d).astype(g.dtype)
            if decay else g,
            updates, mask_tree, dense_tree,
        )
        inner_updates, inner_state = inner.update(grads, state.inner_state, dense_tree,
                                                  **extra_args)
        new_dense = optax.apply_updates(dense_tree, inner_updates)
        new_mask = jax.tree.leaves(project(new_dense))
        out, masks, dense = [], [], []
        for p, u, d, m, w in zip(p_leaves, jax.tree.leaves(inner_updates),
                                 jax.tree.leaves(new_dense), new_mask, which, strict=True):
            if w:
                m = jnp.broadcast_to(m, jnp.shape(p))
                out.append(jnp.where(m, d - p, -p))
                masks.append(m)
                dense.append(d)
            else:
                out.append(u)
                masks.append(jnp.ones((), bool))
        new_state = StraightThroughState(
            dense=tuple(dense),
            mask_leaves=MaskLeaves(tuple(masks), treedef),
            inner_state=inner_state,
        )
        return jax.tree.unflatten(treedef, out), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
