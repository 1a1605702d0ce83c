"""Reading and swapping what the sparsejax states hold, anywhere in an optimizer state."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.transforms._keep_sparse import KeepSparseState
from sparsejax.transforms._mask_leaves import _normalise_mask
from sparsejax.transforms._pruning import PruningState
from sparsejax.tree import PyTree, check_same_structure, named_leaves

_STATES = (KeepSparseState, PruningState)


def _is_state(x: Any) -> bool:
    return isinstance(x, _STATES)


def _all_states(opt_state: optax.OptState) -> list[tuple[str, KeepSparseState | PruningState]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_state)
    return [(jax.tree_util.keystr(path), x) for path, x in flat if _is_state(x)]


def _find(opt_state: optax.OptState, accessor: str) -> KeepSparseState | PruningState:
    found = _all_states(opt_state)
    if not found:
        raise ValueError(
            f"{accessor}: no PruningState or KeepSparseState in the optimizer state of type "
            f"{type(opt_state).__name__}; build the optimizer with sparsejax.pruning(...) or "
            "sparsejax.keep_sparse(...)"
        )
    if len(found) > 1:
        raise ValueError(
            f"{accessor}: {len(found)} pruning states in the optimizer state, at "
            f"{[p for p, _ in found]}; pass the sub-state you mean (e.g. opt_state[0])"
        )
    return found[0][1]


def current_mask(opt_state: optax.OptState) -> PyTree:
    """The mask held by the :func:`pruning` or :func:`keep_sparse` state inside ``opt_state``.

    Searches the whole optimizer state, so it works through ``optax.chain``,
    ``optax.inject_hyperparams``, ``optax.MultiSteps`` and nested tuples. Works
    on concrete and traced states (under ``jit`` / ``vmap``).

    Args:
      opt_state: an optax state containing exactly one :class:`PruningState`
        or :class:`KeepSparseState`.

    Returns:
      The mask pytree (mirrors the params).

    Raises:
      ValueError: if there is none, or more than one (their paths are listed).
    """
    return _find(opt_state, "current_mask").mask


def current_step(opt_state: optax.OptState) -> jax.Array:
    """The ``int32`` step counter of the :func:`pruning` state inside ``opt_state``.

    Raises:
      ValueError: if ``opt_state`` holds no :class:`PruningState` (a
        :class:`KeepSparseState` has no step) or more than one.
    """
    state = _find(opt_state, "current_step")
    if not isinstance(state, PruningState):
        raise ValueError("current_step: the optimizer state holds a KeepSparseState (keep_sparse "
                         "counts no steps), not a PruningState")
    return state.step


def with_mask(
    opt_state: optax.OptState, mask: PyTree, params: PyTree | None = None
) -> optax.OptState:
    """``opt_state`` with ``mask`` as the mask of its :func:`keep_sparse` / :func:`pruning` state.

    Searches the whole optimizer state like :func:`current_mask`; everything
    else (the inner optimizer's state, the pruning step, the score state) is
    kept. The usual use: one optimizer ``keep_sparse(inner)`` for many runs,
    each given its own mask after ``init``; under ``jax.vmap`` over a seed axis
    of the state and the masks, each seed gets its own. Pure; jit- and
    vmap-safe. The params are not touched (``TrainState.with_mask`` of
    :mod:`sparsejax.train` also zeroes them).

    Args:
      opt_state: an optax state containing exactly one :class:`KeepSparseState`
        or :class:`PruningState`.
      mask: the new mask, mirroring the params (``bool`` leaves). For a
        :class:`PruningState` every leaf must keep the shape of the current
        mask's (fixed by the structure at ``init``).
      params: the params the mask belongs to; if given, the mask is validated
        against them and stored exactly as ``init`` stores a mask (leaves of
        rank 0 or the parameter's rank), so that
        ``with_mask(keep_sparse(inner).init(p), m, p)`` equals
        ``keep_sparse(inner, m).init(p)`` whenever ``inner.init`` reads only the
        shapes of ``p`` (all of optax's optimizers).

    Returns:
      The optimizer state with the new mask.

    Raises:
      ValueError: no sparsejax state or more than one; the mask's tree differs
        from the current mask's; a leaf is not ``bool``; for a
        :class:`PruningState`, a leaf's shape differs (naming the path).

    Example:
      >>> import jax.numpy as jnp, optax, sparsejax
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
      >>> state = sparsejax.keep_sparse(optax.sgd(0.1)).init(params)
      >>> mask = {"w": jnp.array([[True, False], [True, True]]), "b": jnp.array(True)}
      >>> sparsejax.transforms.with_mask(state, mask, params).mask["w"].tolist()
      [[True, False], [True, True]]
    """
    found = _find(opt_state, "with_mask")
    if params is not None:
        mask = _normalise_mask(params, mask)
    else:
        mask = jax.tree.map(jnp.asarray, mask)
    check_same_structure(found.mask, mask, "the state's mask", "mask")
    for (name, old), (_, new) in zip(named_leaves(found.mask), named_leaves(mask), strict=True):
        if new.dtype != np.bool_:
            raise ValueError(
                f"with_mask: mask at {name!r} has dtype {new.dtype}; masks must be bool"
            )
        if isinstance(found, PruningState) and tuple(new.shape) != tuple(old.shape):
            raise ValueError(
                f"with_mask: mask at {name!r} has shape {tuple(new.shape)}, but the pruning "
                f"state's mask there has shape {tuple(old.shape)} (fixed by the structure at init)"
            )
    swapped = found.with_mask(mask)
    return jax.tree.map(
        lambda x: swapped if x is found else x, opt_state, is_leaf=lambda x: x is found
    )


def pruning_schedules(opt_state: optax.OptState) -> tuple[Any, ...]:
    """The schedules of every :func:`pruning` state inside ``opt_state``, in tree order.

    A :class:`KeepSparseState` has none; a :class:`PruningState` assembled by
    hand (not by :func:`pruning`) contributes ``None``. The schedules are
    static data of the states, so this works on traced states and on
    ``jax.eval_shape`` results too.

    Example:
      >>> import jax.numpy as jnp, optax, sparsejax
      >>> sched = sparsejax.schedules.one_shot(0.5, at=3)
      >>> tx = sparsejax.pruning(optax.sgd(0.1), score=lambda p, g: p, schedule=sched)
      >>> pruning_schedules(tx.init({"w": jnp.ones((2, 2))})) == (sched,)
      True
    """
    return tuple(s.schedule for _, s in _all_states(opt_state) if isinstance(s, PruningState))
