"""``pruning``: gradual pruning on a schedule inside any optax optimizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.select import prune
from sparsejax.structures import Structure, Unstructured
from sparsejax.transforms._mask_leaves import (
    MaskLeaves,
    MaskOrFn,
    _check_update_trees,
    _pin_pruned,
    _require_params,
    _resolve_mask,
    _zero_pruned,
)
from sparsejax.transforms._score import Score, _as_score
from sparsejax.tree import Prunable, PyTree, check_same_structure, named_leaves, prunable_tree

_UNSTRUCTURED = Unstructured()


class StaticSchedule:
    """A schedule held by a :class:`PruningState` as static data (its tree's aux data).

    The state carries its schedule in this form, so a training loop can read
    the update steps from the optimizer state (``sparsejax.train.make_train_loop``)
    while the state's leaves and their paths stay those of a state without it
    (checkpoints do not see it). It is compared by the *identity* of the
    schedule, so the states of one optimizer share one tree structure and a
    jitted step compiles once for them.

    Attributes:
      schedule: the schedule (``None`` for a state built without one).
    """

    __slots__ = ("schedule",)

    def __init__(self, schedule: Any):
        self.schedule = schedule

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StaticSchedule) and other.schedule is self.schedule

    def __hash__(self) -> int:
        return id(self.schedule)

    def __copy__(self) -> StaticSchedule:
        return self

    def __deepcopy__(self, memo: dict) -> StaticSchedule:
        return self  # a copy would be a different schedule to the tree structure

    def __repr__(self) -> str:
        return f"StaticSchedule({self.schedule!r})"


_NO_SCHEDULE = StaticSchedule(None)


class PruningState(NamedTuple):
    """State of :func:`pruning`.

    Attributes:
      step: ``int32`` scalar, the number of updates applied so far (the step
        the schedule is asked about at the next update).
      mask_leaves: the current mask, stored flat (:class:`MaskLeaves`); the
        ``mask`` property gives it mirroring the params. Leaf shapes are fixed
        at ``init`` (``structure.mask_shape(param.shape)`` for prunable leaves,
        ``()`` for the others) and entries only ever turn ``False``.
      inner_state: the state of the wrapped optimizer.
      score_state: the :class:`Score`'s state (``()`` for a plain function).
      static_schedule: the schedule of :func:`pruning` (:class:`StaticSchedule`),
        static data of the pytree node, not a child: the leaves and their
        paths are those of a state without it, so checkpoints do not change.
        The ``schedule`` property gives the schedule itself.
    """

    step: jax.Array
    mask_leaves: MaskLeaves
    inner_state: optax.OptState
    score_state: PyTree
    static_schedule: StaticSchedule = _NO_SCHEDULE

    @property
    def mask(self) -> PyTree:
        """The current mask, mirroring the params."""
        return self.mask_leaves.tree()

    @property
    def schedule(self) -> Any:
        """The schedule of the :func:`pruning` that built this state (``None`` if unknown)."""
        return self.static_schedule.schedule

    def with_mask(self, mask: PyTree) -> PruningState:
        """This state with ``mask`` (same tree and leaf shapes as the current one) swapped in.

        Unchecked; :func:`sparsejax.transforms.with_mask` does the same on a
        whole optimizer state, with checks.
        """
        return self._replace(mask_leaves=MaskLeaves.of(mask))


# A pytree node of its own (not a plain NamedTuple): the children and their keys are those of
# the 0.1 NamedTuple (step, mask_leaves, inner_state, score_state), the schedule is aux data.
_CHILDREN = ("step", "mask_leaves", "inner_state", "score_state")
jax.tree_util.register_pytree_with_keys(
    PruningState,
    lambda s: (
        tuple((jax.tree_util.GetAttrKey(name), getattr(s, name)) for name in _CHILDREN),
        s.static_schedule,
    ),
    lambda static_schedule, children: PruningState(*children, static_schedule=static_schedule),
    # the fast path of every jitted call: no per-name lookups
    flatten_func=lambda s: (
        (s.step, s.mask_leaves, s.inner_state, s.score_state),
        s.static_schedule,
    ),
)


def _initial_mask(
    params: PyTree, mask: MaskOrFn | None, prunable: Prunable, structure: Structure
) -> PyTree:
    """The mask at init: all-keep by default; leaf shapes fixed by ``structure`` from here on."""
    which = [keep for _, keep in named_leaves(prunable_tree(params, prunable))]
    named = named_leaves(params)
    shapes = [
        tuple(structure.mask_shape(tuple(np.shape(p)), name)) if keep else ()
        for (name, p), keep in zip(named, which, strict=True)
    ]
    if mask is None:
        leaves = [
            # ones_like keeps the sharding of a (committed) sharded param.
            jnp.ones_like(p, bool) if shape == np.shape(p) and shape else jnp.ones(shape, bool)
            for (_, p), shape in zip(named, shapes, strict=True)
        ]
        return jax.tree.unflatten(jax.tree.structure(params), leaves)
    mask = _resolve_mask(params, mask)
    for (name, p), (_, m), keep, shape in zip(named, named_leaves(mask), which, shapes, strict=True):
        if keep and tuple(m.shape) != shape:
            raise ValueError(
                f"pruning: the initial mask at {name!r} has shape {tuple(m.shape)}, but "
                f"{structure!r} gives masks of shape {shape} for this parameter of shape "
                f"{tuple(np.shape(p))}"
            )
    return mask


def _with_live(stored: MaskLeaves, which: list[bool], live: tuple) -> MaskLeaves:
    """``stored`` with its prunable leaves (``which``) replaced by ``live``, in order."""
    it = iter(live)
    leaves = tuple(next(it) if keep else m for m, keep in zip(stored.leaves, which, strict=True))
    return MaskLeaves(leaves, stored.treedef)


def _shrink(mask: PyTree, selected: PyTree) -> PyTree:
    """``mask & selected`` leaf by leaf, keeping each leaf's shape (masks only shrink)."""
    check_same_structure(mask, selected, "mask", "prune(...) result")
    treedef = jax.tree.structure(mask)
    out = []
    for (name, m), s in zip(named_leaves(mask), jax.tree.leaves(selected), strict=True):
        s = jnp.asarray(s)
        if np.broadcast_shapes(tuple(m.shape), tuple(s.shape)) != tuple(m.shape):
            raise ValueError(
                f"pruning: prune(...) returned a mask of shape {tuple(s.shape)} at {name!r}, which "
                f"does not fit the state's mask of shape {tuple(m.shape)} (fixed at init)"
            )
        out.append(jnp.logical_and(m, s))
    return jax.tree.unflatten(treedef, out)


def _check_prune_now(prune_now: Any) -> bool | None:
    if prune_now is None or isinstance(prune_now, (bool, np.bool_)):
        return None if prune_now is None else bool(prune_now)
    raise TypeError(
        "pruning: prune_now must be None or a Python bool known when the step is traced "
        "(make it a static argument of the jitted step, e.g. "
        "make_train_step(host_schedule=True)), got "
        f"{prune_now!r} of type {type(prune_now).__name__}"
    )


def pruning(
    inner: optax.GradientTransformation,
    *,
    score: Score | Callable[[PyTree, PyTree], PyTree],
    schedule: Any,
    prunable: Prunable = None,
    scope: str = "layer",
    structure: Structure = _UNSTRUCTURED,
    distribution: Any = "uniform",
    reduction: str = "l1",
    mask: MaskOrFn | None = None,
    normalize: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Gradual pruning inside the optimizer: prune on schedule, keep pruned weights at ``0.0``.

    ``update(grads, state, params)`` at step ``t = state.step``:

    1. zeroes ``grads`` where the current mask is ``False``;
    2. advances the score state (``score.update``) and runs ``inner``;
    3. if ``schedule.is_update(t)``, inside ``lax.cond`` (the cost of scoring
       and selection is paid on update steps only): scores ``params``
       (``score.compute``, which sees the params and the raw incoming
       ``grads``) and selects
       ``prune(scores, schedule(t), params=params, mask=mask, ...)``,
       cumulatively: entries pruned before stay pruned and count toward the
       target, so the mask only shrinks. With a deterministic selection the
       mask after the update at ``t`` prunes exactly ``round(schedule(t) * n)``
       entries of each layer (``scope="layer"``) or of all ``n`` prunable
       entries (``scope="global"``) -- unless more were pruned already;
    4. returns ``where(mask, u, -p)`` with the new mask, so the weights pruned
       at this step are exactly ``0.0`` after ``optax.apply_updates``, and so
       are all earlier ones, with any ``inner`` (momentum, Adam, AdamW, Lion,
       ``inject_hyperparams``, ...).

    The mask is an array in the state, so a new mask never retraces a jitted
    step, and nothing goes to the host. Mask leaf shapes are fixed at ``init``.
    (Called eagerly, outside any transformation, the step is concrete and a
    plain Python ``if`` replaces ``lax.cond``; the result is the same.)

    **The schedule on the host** (``update(..., prune_now=b)``, an extra
    argument that ``optax.chain`` forwards): a ``lax.cond`` in a jitted GPU
    step makes XLA read the predicate back to the host on every step, which
    stalls launch-bound steps. A training loop knows its step number, so it
    can say whether the step updates the mask: ``prune_now=False`` traces no
    selection at all (the step is exactly a :func:`keep_sparse` step),
    ``prune_now=True`` selects without a conditional (and keeps the old mask
    if ``schedule.is_update(t)`` is false after all). Compile the step once per
    value (a static argument, e.g.
    ``sparsejax.train.make_train_step(host_schedule=True)``) and pass
    ``t in update_steps`` with
    ``update_steps = set(sparsejax.schedules.update_steps(schedule, num_steps))``.
    ``prune_now=False`` at an update step skips that update: keep the host's
    step number equal to ``state.step``. The state carries its schedule
    (:attr:`PruningState.schedule`), so ``sparsejax.train.make_train_loop()``
    places the updates on the host without being given the schedule again.

    Args:
      inner: the optimizer to wrap, e.g. ``optax.adam(1e-3)``.
      score: a function ``(params, grads) -> scores`` (a pytree mirroring the
        params; higher = keep), e.g. ``lambda p, g: sparsejax.scores.magnitude(p)``,
        or a :class:`Score` that accumulates across steps, e.g.
        ``accumulated(sparsejax.scores.movement)``.
      schedule: a :mod:`sparsejax.schedules` schedule (or any object with
        ``__call__(step) -> sparsity`` and ``is_update(step) -> bool``).
      prunable: which leaves may be pruned (``None``: float leaves with ``ndim >= 2``; a
        predicate ``f(path, leaf)``, a regex or a list of regexes).
      scope: ``"layer"`` (each layer to the target) or ``"global"``.
      structure: granularity, e.g. ``Unstructured()``, ``Neurons()``,
        ``NM(2, 4)`` (see :mod:`sparsejax.structures`).
      distribution: ``"uniform"``, ``"erk"`` or a mapping
        ``{path_regex: sparsity}`` (see :func:`sparsejax.prune`).
      reduction: how full-shape scores are reduced to structured groups
        (``"l1"``, ``"l2"``, ``"mean"``, ``"sum"``).
      mask: an initial mask (pytree or ``params -> mask`` function), e.g. from
        a previous run; by default nothing is pruned. Prunable leaves must
        have the structure's mask shape.
      normalize: per-layer rescaling of the group scores before a global
        ranking (``None``, ``"l1"``, ``"l2"``, ``"max"``, ``"mean"``; see
        :func:`sparsejax.prune`).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`PruningState`. Use it as the last transformation of a chain, or
      wrap the whole optimizer
      (``pruning(optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)), ...)``):
      a transformation after it would rescale the ``-p`` of step 4.

    Raises:
      ValueError: at ``init`` for a bad initial mask (naming the path); at
        ``update`` if ``params`` is ``None`` or trees differ; configuration
        errors of :func:`sparsejax.prune` surface when ``update`` is first
        traced.

    References:
      Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of
      pruning for model compression", 2017. https://arxiv.org/abs/1710.01878

    Example:
      >>> import sparsejax
      >>> params = {"w": jnp.arange(1.0, 9.0).reshape(4, 2), "b": jnp.zeros(2)}
      >>> tx = pruning(
      ...     optax.sgd(0.1, momentum=0.9),
      ...     score=lambda p, g: sparsejax.scores.magnitude(p),
      ...     schedule=sparsejax.schedules.one_shot(0.5, at=1),
      ... )
      >>> state = tx.init(params)
      >>> grads = jax.tree.map(jnp.zeros_like, params)
      >>> for _ in range(2):   # normally inside a jitted train step
      ...     updates, state = tx.update(grads, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> params["w"]
      Array([[0., 0.],
             [0., 0.],
             [5., 6.],
             [7., 8.]], dtype=float32)
      >>> state.mask["w"].sum()
      Array(4, dtype=int32)
    """
    inner = optax.with_extra_args_support(inner)
    score_t = _as_score(score)
    for method in ("__call__", "is_update"):
        if not callable(getattr(schedule, method, None)):
            raise TypeError(
                f"pruning: schedule must have {method}(step), got {schedule!r}; use "
                "sparsejax.schedules (one_shot, constant, periodic, polynomial, iterative)"
            )

    static_schedule = StaticSchedule(schedule)

    def init_fn(params):
        return PruningState(
            step=jnp.zeros((), jnp.int32),
            mask_leaves=MaskLeaves.of(_initial_mask(params, mask, prunable, structure)),
            inner_state=inner.init(params),
            score_state=score_t.init(params),
            static_schedule=static_schedule,
        )

    def update_fn(updates, state, params=None, *, prune_now=None, **extra_args):
        _require_params("pruning", params)
        prune_now = _check_prune_now(prune_now)
        mask_tree = state.mask
        _check_update_trees("pruning", updates, params, mask_tree)
        step = state.step
        grads = _zero_pruned(updates, mask_tree)
        score_state = score_t.update(state.score_state, params, updates)
        new_updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)

        # Only prunable leaves can change (the others stay as init made them), so only
        # they pass through lax.cond: a conditional's outputs are fresh buffers, and
        # every leaf through it costs a copy on the steps that do not update.
        which = [keep for _, keep in named_leaves(prunable_tree(params, prunable))]
        old = state.mask_leaves.leaves
        live = tuple(m for m, keep in zip(old, which, strict=True) if keep)

        def reselect(operand):
            params, updates, score_state, live = operand
            mask = _with_live(state.mask_leaves, which, live).tree()
            scores = score_t.compute(score_state, params, updates)
            selected = prune(
                scores,
                schedule(step),
                params=params,
                mask=mask,
                prunable=prunable,
                scope=scope,
                structure=structure,
                distribution=distribution,
                reduction=reduction,
                normalize=normalize,
            )
            new = jax.tree.leaves(_shrink(mask, selected))
            return tuple(m for m, keep in zip(new, which, strict=True) if keep)

        def keep(operand):
            return operand[3]

        operand = (params, updates, score_state, live)
        is_update = jnp.asarray(schedule.is_update(step), bool)
        if prune_now is False:  # the caller knows: not an update step, no selection traced
            pass
        elif prune_now:  # the caller knows: an update step, no lax.cond
            # where(is_update, ...): a wrong hint on a non-update step changes nothing
            live = tuple(
                jnp.where(is_update, n, o) for n, o in zip(reselect(operand), live, strict=True)
            )
        else:
            try:  # Eager call: the step is concrete, select only when it is an update step.
                concrete = bool(is_update)
            except jax.errors.ConcretizationTypeError:  # under jit / vmap: no host round trip
                live = jax.lax.cond(is_update, reselect, keep, operand)
            else:
                live = reselect(operand) if concrete else keep(operand)
        new_leaves = _with_live(state.mask_leaves, which, live)
        new_updates = _pin_pruned(new_updates, params, new_leaves.tree())
        new_state = PruningState(
            step=optax.safe_increment(step),
            mask_leaves=new_leaves,
            inner_state=inner_state,
            score_state=score_state,
            static_schedule=state.static_schedule,
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
