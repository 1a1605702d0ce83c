"""The mask as optimizer states hold it (:class:`MaskLeaves`) and the masked update's steps.

Step 1 (:func:`_zero_pruned`) zeroes gradients at pruned positions; step 4
(:func:`_pin_pruned`) returns ``-p`` there and drops non-finite update entries elsewhere,
so pruned weights are exactly ``0.0`` and no NaN or inf reaches any weight.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.masks import validate_mask
from sparsejax.tree import PyTree, check_same_structure

MaskOrFn = PyTree | Callable[[PyTree], PyTree]


def _require_params(owner: str, params: Any) -> None:
    if params is None:
        raise ValueError(
            f"{owner}: update(updates, state, params) needs params (got params=None): pruned "
            "weights are zeroed by returning -params at pruned positions. Call "
            "tx.update(grads, opt_state, params)."
        )


def _normalise_mask(params: PyTree, mask: PyTree) -> PyTree:
    """Validate ``mask`` against ``params``; return it with ``jax.Array`` leaves of rank 0 or ``p.ndim``.

    Full-shape leaves are built with ``jnp.asarray`` (a sharded array keeps its
    sharding); a leaf of intermediate rank such as ``(out,)`` for an
    ``(in, out)`` kernel gets leading unit axes, so that no implicit rank
    promotion happens later.
    """
    validate_mask(params, mask)

    def leaf(m, p):
        m = jnp.asarray(m)
        if 0 < m.ndim < np.ndim(p):
            m = m.reshape((1,) * (np.ndim(p) - m.ndim) + m.shape)
        return m

    return jax.tree.map(leaf, mask, params)


def _resolve_mask(params: PyTree, mask: MaskOrFn) -> PyTree:
    return _normalise_mask(params, mask(params) if callable(mask) else mask)


class MaskLeaves:
    """A mask stored flat: its leaves as one tuple, its tree structure as static data.

    Optimizer states keep the mask in this form. Passing a state to a jitted
    step flattens it on the host at every call; the leaves of a nested
    parameter container (an NNX ``State``, a Flax ``FrozenDict``) are reached
    through one Python call per node, while a tuple flattens in C++. Storing the
    mask flat keeps that host cost at one call, whatever the model's depth, so
    a masked step dispatches as fast as a dense one. :meth:`tree` (or the
    states' ``mask`` property) gives the mask back mirroring the params.

    Attributes:
      leaves: the mask's leaves in ``jax.tree.leaves`` order.
      treedef: the mask's (= the params') tree structure.
    """

    __slots__ = ("leaves", "treedef")

    def __init__(self, leaves: tuple, treedef: Any):
        self.leaves = tuple(leaves)
        self.treedef = treedef

    @classmethod
    def of(cls, mask: PyTree) -> MaskLeaves:
        leaves, treedef = jax.tree.flatten(mask)
        return cls(tuple(leaves), treedef)

    def tree(self) -> PyTree:
        """The mask as a pytree mirroring the params."""
        return jax.tree.unflatten(self.treedef, self.leaves)

    def __repr__(self) -> str:
        return f"MaskLeaves({len(self.leaves)} leaves)"


jax.tree_util.register_pytree_with_keys(
    MaskLeaves,
    lambda m: (tuple((jax.tree_util.SequenceKey(i), x) for i, x in enumerate(m.leaves)), m.treedef),
    lambda treedef, leaves: MaskLeaves(tuple(leaves), treedef),
    flatten_func=lambda m: (m.leaves, m.treedef),
)


def _check_update_trees(owner: str, updates: PyTree, params: PyTree, mask: PyTree) -> None:
    check_same_structure(params, updates, "params", "updates")
    check_same_structure(params, mask, "params", f"{owner} mask")


def _zero_pruned(updates: PyTree, mask: PyTree) -> PyTree:
    """Step 1: ``where(mask, g, 0)`` (a NaN gradient at a pruned position becomes 0)."""
    return jax.tree.map(lambda g, m: jnp.where(m, g, jnp.zeros((), g.dtype)), updates, mask)


def _pin_pruned(updates: PyTree, params: PyTree, mask: PyTree) -> PyTree:
    """Step 4: ``where(mask, finite(u), -p)``: pruned weights become exactly ``0.0``.

    ``p + (-p)`` is exactly ``+0.0`` for finite ``p``. A NaN or ±inf entry of the inner
    update at a kept position becomes ``-0.0`` (``p + (-0.0) == p``: the weight keeps its
    value), so no non-finite value ever enters a weight -- one that a later mask may
    prune, whose ``-p`` would then be NaN, or whose NaN score would decide the mask.
    For finite ``u`` the result is ``u`` bit for bit (an all-keep mask changes nothing).
    Every transform that pins pruned weights (``keep_sparse``, ``pruning``, the dynamic
    sparse transforms) calls this.
    """

    def leaf(u, p, m):
        if jnp.issubdtype(u.dtype, jnp.inexact):
            u = jnp.where(jnp.isfinite(u), u, jnp.asarray(-0.0, u.dtype))
        if jnp.asarray(p).dtype == jnp.bool_:  # a flag carried in the params: nothing to negate
            return jnp.where(m, u, jnp.zeros_like(u))
        return jnp.where(m, u, -p)

    return jax.tree.map(leaf, updates, params, mask)
