"""Optax transformations that keep pruned weights at exactly zero and prune gradually.

Both transformations wrap an arbitrary optax optimizer ``inner`` and follow
the same four-step update (DESIGN.md, "How pruning enters a training step"):

1. zero the incoming gradients at pruned positions (``where(mask, g, 0)``),
2. run ``inner``,
3. (:func:`pruning` only) on the schedule's update steps, re-score the
   parameters and shrink the mask, inside ``jax.lax.cond``,
4. return ``where(mask, u, -p)``, so that after ``optax.apply_updates`` every
   pruned weight is exactly ``0.0`` -- whatever ``inner`` did (momentum,
   Adam's moments, decoupled weight decay, ...), and even if it was not zero
   before.

The user writes an ordinary train step; no extra call per step is needed.
The mask lives in the optimizer state (:class:`KeepSparseState`,
:class:`PruningState`); :func:`current_mask` finds it anywhere in a nested
optax state. Masks are pytrees mirroring the params whose leaves are ``bool``
arrays broadcasting to the param (see :mod:`sparsejax.masks`).

Because step 4 writes ``-p`` into the updates, the pruning transformation must
be the **last** one to touch the updates: wrap the whole optimizer
(``pruning(optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)), ...)``)
or put it at the end of an ``optax.chain``. A transformation after it (e.g.
``optax.scale``) would rescale ``-p`` and un-zero pruned weights.

All functions are pure; ``update`` needs ``params``. Everything works under
``jax.jit`` (the mask is an array in the state: changing it never retraces),
``jax.vmap`` (a batched step turns ``lax.cond`` into a select, so both branches
run) and with params sharded over a mesh.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.masks import validate_mask
from sparsejax.select import prune
from sparsejax.structures import Structure, Unstructured
from sparsejax.tree import Prunable, PyTree, check_same_structure, named_leaves, prunable_tree

__all__ = [
    "KeepSparseState",
    "MaskLeaves",
    "PruningState",
    "Score",
    "accumulated",
    "current_mask",
    "current_step",
    "keep_sparse",
    "pruning",
]

MaskOrFn = PyTree | Callable[[PyTree], PyTree]

_UNSTRUCTURED = Unstructured()


# --------------------------------------------------------------------------- shared helpers


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
    """Step 4: ``where(mask, u, -p)``; ``p + (-p)`` is exactly ``+0.0`` for finite ``p``."""
    return jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, mask)


# --------------------------------------------------------------------------- keep_sparse


class KeepSparseState(NamedTuple):
    """State of :func:`keep_sparse`.

    Attributes:
      mask_leaves: the fixed mask, stored flat (:class:`MaskLeaves`); the
        ``mask`` property gives it as a pytree mirroring the params with
        ``bool`` leaves broadcasting to them (rank 0 or the param's rank).
      inner_state: the state of the wrapped optimizer.
    """

    mask_leaves: MaskLeaves
    inner_state: optax.OptState

    @property
    def mask(self) -> PyTree:
        """The mask, mirroring the params."""
        return self.mask_leaves.tree()

    def with_mask(self, mask: PyTree) -> KeepSparseState:
        """This state with ``mask`` (same tree and leaf shapes as the current one) swapped in."""
        return self._replace(mask_leaves=MaskLeaves.of(mask))


def keep_sparse(
    inner: optax.GradientTransformation, mask: MaskOrFn
) -> optax.GradientTransformationExtraArgs:
    """Wrap any optax optimizer so that pruned weights stay exactly ``0.0`` forever.

    ``update`` zeroes the incoming gradients where ``mask`` is ``False``, runs
    ``inner`` and returns ``where(mask, u, -p)``: after ``optax.apply_updates``
    the pruned weights are exactly ``0.0`` at every step, whatever state
    ``inner`` carries (momentum built up before pruning, Adam moments,
    decoupled weight decay, injected hyperparameters). Weights that are not
    zero when training starts are zeroed by the first update. The inner state
    at pruned positions is left as ``inner`` computes it; it never reaches the
    params.

    Args:
      inner: the optimizer to wrap, e.g. ``optax.adamw(1e-3)``.
      mask: a mask pytree mirroring the params (``bool`` leaves broadcasting
        to them, ``True`` = keep), or a function ``params -> mask`` called once
        by ``init`` (like ``optax.masked``), e.g.
        ``lambda p: sparsejax.prune(sparsejax.scores.magnitude(p), 0.9)``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`KeepSparseState`. ``update`` requires ``params`` and passes extra
      keyword arguments on to ``inner``. Pure; jit-, vmap- and shard-safe.

    Raises:
      ValueError: at ``init`` if the mask does not mirror the params (naming the
        path) or a leaf is not a broadcastable ``bool`` array; at ``update`` if
        ``params`` is ``None`` or the trees differ.

    Example:
      >>> params = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "b": jnp.zeros(2)}
      >>> mask = {"w": jnp.array([[True, False], [False, True]]), "b": jnp.array(True)}
      >>> tx = keep_sparse(optax.sgd(0.5, momentum=0.9), mask)
      >>> state = tx.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = tx.update(grads, state, params)
      >>> optax.apply_updates(params, updates)["w"]
      Array([[0.5, 0. ],
             [0. , 3.5]], dtype=float32)
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return KeepSparseState(
            mask_leaves=MaskLeaves.of(_resolve_mask(params, mask)), inner_state=inner.init(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        _require_params("keep_sparse", params)
        mask_tree = state.mask
        _check_update_trees("keep_sparse", updates, params, mask_tree)
        grads = _zero_pruned(updates, mask_tree)
        new_updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
        new_updates = _pin_pruned(new_updates, params, mask_tree)
        return new_updates, KeepSparseState(mask_leaves=state.mask_leaves, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------- scores


class Score(NamedTuple):
    """An importance score for :func:`pruning` that may accumulate statistics across steps.

    ``update`` runs at every step (keep it cheap); ``compute`` runs only on the
    schedule's update steps, inside ``lax.cond``. A plain function
    ``(params, grads) -> scores`` given to :func:`pruning` becomes a ``Score``
    with empty state whose ``compute`` calls it; :func:`accumulated` sums a
    per-step score over training (movement pruning).

    Attributes:
      init: ``params -> score_state`` (any pytree of arrays, ``()`` if none).
      update: ``(score_state, params, grads) -> score_state``, at every step.
      compute: ``(score_state, params, grads) -> scores``, a pytree mirroring
        the params (higher = more important), on update steps only.
    """

    init: Callable[[PyTree], PyTree]
    update: Callable[[PyTree, PyTree, PyTree], PyTree]
    compute: Callable[[PyTree, PyTree, PyTree], PyTree]


def accumulated(fn: Callable[[PyTree, PyTree], PyTree]) -> Score:
    r"""A :class:`Score` that sums ``fn(params, grads)`` over every step since ``init``.

    The state is a ``float32`` pytree mirroring the params (one extra copy of
    them). With ``fn = sparsejax.scores.movement`` (:math:`-w \cdot g`) this is
    the movement score :math:`S = -\sum_t (\partial L / \partial W)^{(t)} W^{(t)}`
    of Sanh et al. (2020): weights moving away from zero are kept.

    Args:
      fn: ``(params, grads) -> per-step scores``, a pytree mirroring the params.

    Returns:
      A :class:`Score`; ``compute`` returns the running sum, including the
      current step.

    References:
      Sanh, Wolf & Rush, "Movement Pruning: Adaptive Sparsity by
      Fine-Tuning", NeurIPS 2020. https://arxiv.org/abs/2005.07683

    Example:
      >>> import sparsejax
      >>> tx = pruning(
      ...     optax.adam(1e-3),
      ...     score=accumulated(sparsejax.scores.movement),
      ...     schedule=sparsejax.schedules.polynomial(0.0, 0.9, begin=0, end=1_000, every=100),
      ... )
    """

    def init(params):
        return jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), params)

    def update(state, params, grads):
        return jax.tree.map(lambda s, x: s + jnp.asarray(x, jnp.float32), state, fn(params, grads))

    def compute(state, params, grads):
        del params, grads
        return state

    return Score(init, update, compute)


def _as_score(score: Score | Callable[[PyTree, PyTree], PyTree]) -> Score:
    if isinstance(score, Score):
        return score
    if not callable(score):
        raise TypeError(f"pruning: score must be a Score or a function (params, grads) -> scores, "
                        f"got {score!r}")
    try:
        inspect.signature(score).bind(None, None)
    except TypeError as e:
        raise TypeError(
            f"pruning: score {score!r} must accept (params, grads); wrap a one-argument score, "
            "e.g. score=lambda p, g: sparsejax.scores.magnitude(p)"
        ) from e
    except ValueError:  # no introspectable signature (some builtins): trust the caller
        pass

    def compute(state, params, grads):
        del state
        return score(params, grads)

    return Score(init=lambda params: (), update=lambda state, params, grads: state, compute=compute)


# --------------------------------------------------------------------------- pruning


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
    """

    step: jax.Array
    mask_leaves: MaskLeaves
    inner_state: optax.OptState
    score_state: PyTree

    @property
    def mask(self) -> PyTree:
        """The current mask, mirroring the params."""
        return self.mask_leaves.tree()

    def with_mask(self, mask: PyTree) -> PruningState:
        """This state with ``mask`` (same tree and leaf shapes as the current one) swapped in."""
        return self._replace(mask_leaves=MaskLeaves.of(mask))


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
    step number equal to ``state.step``.

    Args:
      inner: the optimizer to wrap, e.g. ``optax.adam(1e-3)``.
      score: a function ``(params, grads) -> scores`` (a pytree mirroring the
        params; higher = keep), e.g. ``lambda p, g: sparsejax.scores.magnitude(p)``,
        or a :class:`Score` that accumulates across steps, e.g.
        ``accumulated(sparsejax.scores.movement)``.
      schedule: a :mod:`sparsejax.schedules` schedule (or any object with
        ``__call__(step) -> sparsity`` and ``is_update(step) -> bool``).
      prunable: which leaves may be pruned (``None``: ``ndim >= 2``; a
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
      :class:`PruningState`. Use it as the last transformation of a chain.

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
      >>> current_mask(state)["w"].sum()
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

    def init_fn(params):
        return PruningState(
            step=jnp.zeros((), jnp.int32),
            mask_leaves=MaskLeaves.of(_initial_mask(params, mask, prunable, structure)),
            inner_state=inner.init(params),
            score_state=score_t.init(params),
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
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------- accessors


def _find(opt_state: optax.OptState, accessor: str) -> KeepSparseState | PruningState:
    types = (KeepSparseState, PruningState)
    flat, _ = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=lambda x: isinstance(x, types))
    found = [(jax.tree_util.keystr(path), x) for path, x in flat if isinstance(x, types)]
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
