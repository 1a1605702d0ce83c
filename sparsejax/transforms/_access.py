"""Reading and swapping what the sparsejax states hold, anywhere in an optimizer state."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.transforms._dynamic_sparse import SparseTrainingState
from sparsejax.transforms._keep_sparse import KeepSparseState
from sparsejax.transforms._mask_leaves import _normalise_mask
from sparsejax.transforms._pruning import PruningState
from sparsejax.transforms._static_sparse import _as_key
from sparsejax.transforms._straight_through import StraightThroughState
from sparsejax.tree import PyTree, check_same_structure, named_leaves

_STATES = (KeepSparseState, PruningState, SparseTrainingState, StraightThroughState)
# states whose mask leaves keep the shapes fixed at init
_FIXED_SHAPES = (PruningState, SparseTrainingState)
# states that carry a schedule of mask updates
_SCHEDULED = (PruningState, SparseTrainingState)
State = KeepSparseState | PruningState | SparseTrainingState | StraightThroughState


def _is_state(x: Any) -> bool:
    return isinstance(x, _STATES)


def _all_states(opt_state: optax.OptState) -> list[tuple[str, State]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_state)
    return [(jax.tree_util.keystr(path), x) for path, x in flat if _is_state(x)]


def _find(opt_state: optax.OptState, accessor: str) -> State:
    found = _all_states(opt_state)
    if not found:
        raise ValueError(
            f"{accessor}: no PruningState or KeepSparseState (nor SparseTrainingState, "
            "StraightThroughState) in the optimizer state of type "
            f"{type(opt_state).__name__}; build the optimizer with sparsejax.pruning(...) or "
            "sparsejax.keep_sparse(...), or a sparse training transform of "
            "sparsejax.transforms (rigl, sparse_evolutionary, sparse_momentum, static_sparse, "
            "straight_through)"
        )
    if len(found) > 1:
        raise ValueError(
            f"{accessor}: {len(found)} pruning states in the optimizer state, at "
            f"{[p for p, _ in found]}; pass the sub-state you mean (e.g. opt_state[0])"
        )
    return found[0][1]


def current_mask(opt_state: optax.OptState) -> PyTree:
    """The mask held by the sparsejax state inside ``opt_state``.

    Searches the whole optimizer state, so it works through ``optax.chain``,
    ``optax.inject_hyperparams``, ``optax.MultiSteps`` and nested tuples. Works
    on concrete and traced states (under ``jit`` / ``vmap``). For
    :func:`straight_through`, the mask of the current projection.

    Args:
      opt_state: an optax state containing exactly one :class:`PruningState`,
        :class:`KeepSparseState`, :class:`SparseTrainingState` or
        :class:`StraightThroughState`.

    Returns:
      The mask pytree (mirrors the params).

    Raises:
      ValueError: if there is none, or more than one (their paths are listed).
    """
    return _find(opt_state, "current_mask").mask


def current_step(opt_state: optax.OptState) -> jax.Array:
    """The ``int32`` step counter of the :func:`pruning` or sparse training state in ``opt_state``.

    Raises:
      ValueError: if ``opt_state`` holds no :class:`PruningState` or
        :class:`SparseTrainingState` (:class:`KeepSparseState` and
        :class:`StraightThroughState` count no steps) or more than one.
    """
    state = _find(opt_state, "current_step")
    if not isinstance(state, _SCHEDULED):
        owner = "keep_sparse" if isinstance(state, KeepSparseState) else "straight_through"
        raise ValueError(f"current_step: the optimizer state holds a {type(state).__name__} "
                         f"({owner} counts no steps), not a PruningState or SparseTrainingState")
    return state.step


def with_mask(
    opt_state: optax.OptState, mask: PyTree, params: PyTree | None = None
) -> optax.OptState:
    """``opt_state`` with ``mask`` as the mask of its :func:`keep_sparse` / :func:`pruning` /
    sparse training state.

    Searches the whole optimizer state like :func:`current_mask`; everything
    else (the inner optimizer's state, the pruning step, the score state) is
    kept. The usual use: one optimizer ``keep_sparse(inner)`` for many runs,
    each given its own mask after ``init``; under ``jax.vmap`` over a seed axis
    of the state and the masks, each seed gets its own. Pure; jit- and
    vmap-safe. The params are not touched (``TrainState.with_mask`` of
    :mod:`sparsejax.train` also zeroes them).

    Args:
      opt_state: an optax state containing exactly one :class:`KeepSparseState`,
        :class:`PruningState` or :class:`SparseTrainingState`.
      mask: the new mask, mirroring the params (``bool`` leaves). For a
        :class:`PruningState` or :class:`SparseTrainingState` every leaf must
        keep the shape of the current mask's (fixed at ``init``; give a
        sparse training state full-shape leaves for its sparse layers).
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
        :class:`PruningState` or :class:`SparseTrainingState`, a leaf's shape
        differs (naming the path); a :class:`StraightThroughState` (its mask
        is the projection of its dense weights and cannot be set).

    Example:
      >>> import jax.numpy as jnp, optax, sparsejax
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
      >>> state = sparsejax.keep_sparse(optax.sgd(0.1)).init(params)
      >>> mask = {"w": jnp.array([[True, False], [True, True]]), "b": jnp.array(True)}
      >>> sparsejax.transforms.with_mask(state, mask, params).mask["w"].tolist()
      [[True, False], [True, True]]
    """
    found = _find(opt_state, "with_mask")
    if isinstance(found, StraightThroughState):
        raise ValueError(
            "with_mask: the optimizer state holds a StraightThroughState, whose mask is the "
            "projection of its dense weights at every step and cannot be set; project the "
            "params with sparsejax.apply_mask(params, sparsejax.current_mask(opt_state))"
        )
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
        if isinstance(found, _FIXED_SHAPES) and tuple(new.shape) != tuple(old.shape):
            raise ValueError(
                f"with_mask: mask at {name!r} has shape {tuple(new.shape)}, but the "
                f"{'pruning' if isinstance(found, PruningState) else 'sparse training'} "
                f"state's mask there has shape {tuple(old.shape)} (fixed at init)"
            )
    return _replace(opt_state, found, found.with_mask(mask))


def _replace(opt_state: optax.OptState, found: State, swapped: State) -> optax.OptState:
    return jax.tree.map(
        lambda x: swapped if x is found else x, opt_state, is_leaf=lambda x: x is found
    )


def with_key(opt_state: optax.OptState, key: jax.Array | int) -> optax.OptState:
    """``opt_state`` with ``key`` as the PRNG key of its sparse training state.

    The key drives the random growth of :func:`sparse_evolutionary` (the
    update at step ``t`` draws from ``fold_in`` of it and ``t``); everything
    else is kept. One optimizer then serves many seeds: under ``jax.vmap``
    over a seed axis of the state and the keys, each seed grows from its own
    key. ``rigl(..., key=k).init(p)`` equals
    ``with_mask(with_key(rigl(..., key=k0).init(p), k), random_mask(p, s, k))``
    for any ``k0`` (see :func:`random_mask`). Pure; jit- and vmap-safe.

    Raises:
      ValueError: no :class:`SparseTrainingState` in ``opt_state``, or more
        than one sparsejax state.
      TypeError: ``key`` is not a single PRNG key (or an int seed).

    Example:
      >>> import jax, jax.numpy as jnp, optax, sparsejax as sj
      >>> tx = sj.transforms.rigl(optax.sgd(0.1), 0.5, key=0, total_steps=100)
      >>> state = with_key(tx.init({"w": jnp.ones((4, 4))}), jax.random.key(7))
      >>> bool((jax.random.key_data(state.key) == jax.random.key_data(jax.random.key(7))).all())
      True
    """
    found = _find(opt_state, "with_key")
    if not isinstance(found, SparseTrainingState):
        raise ValueError(f"with_key: the optimizer state holds a {type(found).__name__}, which "
                         "has no key (only a SparseTrainingState does)")
    return _replace(opt_state, found, found._replace(key=_as_key(key, "with_key")))


def pruning_schedules(opt_state: optax.OptState) -> tuple[Any, ...]:
    """The mask-update schedules of every :func:`pruning` and sparse training state inside
    ``opt_state``, in tree order.

    A :class:`KeepSparseState` or :class:`StraightThroughState` has none (the
    latter re-projects at every step, with no schedule); a state assembled by
    hand (not by :func:`pruning`, :func:`dynamic_sparse` or its methods)
    contributes ``None``. The schedules are static data of the states, so this
    works on traced states and on ``jax.eval_shape`` results too.

    Example:
      >>> import jax.numpy as jnp, optax, sparsejax
      >>> sched = sparsejax.schedules.one_shot(0.5, at=3)
      >>> tx = sparsejax.pruning(optax.sgd(0.1), score=lambda p, g: p, schedule=sched)
      >>> pruning_schedules(tx.init({"w": jnp.ones((2, 2))})) == (sched,)
      True
    """
    return tuple(s.schedule for _, s in _all_states(opt_state) if isinstance(s, _SCHEDULED))
