"""``dynamic_sparse``: train sparse from the start and move connections on a schedule."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.select._distributions import parse_sparsity
from sparsejax.transforms._mask_leaves import (
    MaskLeaves,
    MaskOrFn,
    _check_update_trees,
    _pin_pruned,
    _require_params,
    _resolve_mask,
    _zero_pruned,
)
from sparsejax.transforms._pruning import StaticSchedule, _with_live
from sparsejax.transforms._rewire import mean_active_magnitude, rewire
from sparsejax.transforms._static_sparse import _as_key, random_mask
from sparsejax.tree import Prunable, PyTree, named_leaves, prunable_tree

GROWTHS: tuple[str, ...] = ("random", "gradient", "momentum")
# fold_in tag of the growth keys: above any leaf index, so it never meets random_mask's keys
_GROW_TAG = 0x67726F77  # "grow"
_NO_SCHEDULE = StaticSchedule(None)


class SparseTrainingState(NamedTuple):
    """State of :func:`dynamic_sparse` (and of :func:`rigl`, :func:`sparse_evolutionary`,
    :func:`sparse_momentum`).

    Attributes:
      step: ``int32`` scalar, the number of updates applied so far.
      key: the PRNG key of the random choices (typed key); the update at step
        ``t`` grows at random from ``fold_in(fold_in(key, tag), t)``.
      mask_leaves: the current mask, stored flat (:class:`MaskLeaves`); the
        ``mask`` property mirrors the params. Prunable leaves are full-shape
        ``bool``, the others as at ``init`` (scalar ``True`` by default).
      inner_state: the state of the wrapped optimizer.
      momentum: SNFS's exponential moving average of the dense gradients of
        the prunable leaves (``float32``, a tuple in leaf order); ``()`` when
        the growth does not use it.
      static_schedule: the :class:`DropSchedule` (static data of the pytree
        node, not a child: checkpoints see only the arrays). The ``schedule``
        property gives it.
    """

    step: jax.Array
    key: jax.Array
    mask_leaves: MaskLeaves
    inner_state: optax.OptState
    momentum: tuple
    static_schedule: StaticSchedule = _NO_SCHEDULE

    @property
    def mask(self) -> PyTree:
        """The current mask, mirroring the params."""
        return self.mask_leaves.tree()

    @property
    def schedule(self) -> Any:
        """The drop schedule of the transform that built this state (``None`` if unknown)."""
        return self.static_schedule.schedule

    def with_mask(self, mask: PyTree) -> SparseTrainingState:
        """This state with ``mask`` (same tree and leaf shapes) swapped in, unchecked.

        :func:`sparsejax.transforms.with_mask` does the same on a whole optimizer
        state, with checks.
        """
        return self._replace(mask_leaves=MaskLeaves.of(mask))


_CHILDREN = ("step", "key", "mask_leaves", "inner_state", "momentum")
jax.tree_util.register_pytree_with_keys(
    SparseTrainingState,
    lambda s: (
        tuple((jax.tree_util.GetAttrKey(name), getattr(s, name)) for name in _CHILDREN),
        s.static_schedule,
    ),
    lambda static_schedule, children: SparseTrainingState(
        *children, static_schedule=static_schedule
    ),
    flatten_func=lambda s: (
        (s.step, s.key, s.mask_leaves, s.inner_state, s.momentum),
        s.static_schedule,
    ),
)


def _prunable_flags(params: PyTree, prunable: Prunable) -> list[bool]:
    return [bool(keep) for _, keep in named_leaves(prunable_tree(params, prunable))]


def _reset_at(inner: optax.GradientTransformation, inner_state: Any, changed: PyTree) -> Any:
    """``inner_state`` with every parameter-shaped leaf set to 0 where ``changed``."""

    def zero(x, c):
        if not hasattr(x, "shape"):
            return x
        if jnp.ndim(c) and tuple(jnp.shape(x)) != tuple(jnp.shape(c)):
            raise ValueError(
                f"a leaf of shape {tuple(jnp.shape(x))} stands where a parameter of shape "
                f"{tuple(jnp.shape(c))} was expected (a factored or reshaped moment)"
            )
        return jnp.where(c, jnp.zeros((), x.dtype), x)

    return optax.tree_utils.tree_map_params(inner, zero, inner_state, changed)


def _check_hint(owner: str, prune_now: Any) -> bool | None:
    if prune_now is None or isinstance(prune_now, (bool, np.bool_)):
        return None if prune_now is None else bool(prune_now)
    raise TypeError(
        f"{owner}: prune_now must be None or a Python bool known when the step is traced "
        "(make it a static argument of the jitted step, e.g. make_train_step(host_schedule=True)), "
        f"got {prune_now!r} of type {type(prune_now).__name__}"
    )


def _check_options(owner, schedule, grow, momentum, redistribute) -> float:
    for method in ("__call__", "is_update"):
        if not callable(getattr(schedule, method, None)):
            raise TypeError(
                f"{owner}: schedule must have {method}(step), got {schedule!r}; use "
                "sparsejax.transforms.drop_schedule(...)"
            )
    if grow not in GROWTHS:
        raise ValueError(f"{owner}: grow must be one of {GROWTHS}, got {grow!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not (
        0.0 <= float(momentum) < 1.0
    ):
        raise ValueError(f"{owner}: momentum must be a number in [0, 1), got {momentum!r}")
    if redistribute and grow != "momentum":
        raise ValueError(
            f"{owner}: redistribute=True shares the regrowth by mean momentum (SNFS) and needs "
            f"grow='momentum', got grow={grow!r}"
        )
    return float(momentum)


def dynamic_sparse(
    inner: optax.GradientTransformation,
    sparsity: float | None = None,
    *,
    key: jax.Array | int,
    schedule: Any,
    grow: str,
    distribution: str | Mapping[str, float] = "erk",
    prunable: Prunable = None,
    mask: MaskOrFn | None = None,
    momentum: float = 0.9,
    redistribute: bool = False,
    reset_inner: bool = True,
    owner: str = "dynamic_sparse",
) -> optax.GradientTransformationExtraArgs:
    """Dynamic sparse training: a sparse mask from the start, rewired by drop-and-grow.

    ``init`` draws :func:`random_mask` ``(params, sparsity, key, distribution=...)``
    (or takes ``mask``). ``update(grads, state, params)`` at step ``t``:

    1. zeroes ``grads`` where the mask is ``False`` and runs ``inner`` (every
       step, update steps included, so ``inner``'s step count stays that of
       the loop; RigL's and JaxPruner's code skip the optimizer step at update
       steps);
    2. if ``schedule.is_update(t)`` (inside ``lax.cond``, or as the host says
       with ``prune_now``): in each prunable layer with ``a`` active of ``n``
       entries, drops the ``k = min(floor(f(t)·a), n - a)`` active weights of
       lowest ``|w|`` (``f = schedule``, ``w`` the params received) and grows
       ``k`` entries among those inactive before the update, ranked by
       ``grow``: ``"random"`` (SET), ``"gradient"`` (``|g|`` of the raw, dense
       gradient: RigL) or ``"momentum"`` (``|m|``, ``m`` the moving average
       ``m ← β m + (1 - β) g`` of the dense gradients: SNFS). With
       ``redistribute`` the total dropped is regrown across layers in
       proportion to their mean momentum magnitude over active weights (SNFS;
       layer counts then change, the total stays). Drop and grow never pick
       the same entry; ties go to the lower flat index;
    3. resets ``inner``'s parameter-shaped state (Adam's moments, momentum
       traces, through ``optax.chain`` and ``inject_hyperparams``) to 0 at
       every grown and dropped position (``optax.tree_utils.tree_map_params``);
    4. returns ``where(kept, u, -p)``: dropped weights are exactly ``0.0`` from
       this update on and grown ones start at exactly ``0.0`` (RigL's
       ``grow_init="zeros"``); kept weights take their ordinary step.

    The mask, the key and the step live in the state (:class:`SparseTrainingState`,
    which also carries ``schedule``), so a new mask never retraces and
    ``sparsejax.train.make_train_loop()`` places the updates on the host
    (``prune_now=False`` traces no drop/grow at all; ``prune_now=True`` no
    ``lax.cond``), as for :func:`~sparsejax.transforms.pruning`.

    Args:
      inner: the optimizer to wrap; must be the last transformation to touch
        the updates (as :func:`~sparsejax.transforms.pruning`).
      sparsity: overall sparsity of the initial random mask, in ``[0, 1]``.
      key: PRNG key of the initial mask and the random growth
        (:func:`sparsejax.transforms.with_key` swaps it per seed).
      schedule: a :class:`DropSchedule` (:func:`drop_schedule`), or any object
        with ``__call__(step) -> fraction`` and ``is_update(step)``.
      grow: ``"random"``, ``"gradient"`` or ``"momentum"``.
      distribution: per-layer sparsities of the initial mask (``"erk"``,
        ``"uniform"`` or a map; see :func:`random_mask`).
      prunable: which leaves are sparse (default: float leaves with ``ndim >= 2``).
      mask: an initial mask (pytree or ``params -> mask``) instead of a random
        one (then leave ``sparsity`` out); its counts are kept.
      momentum: ``β`` of the gradient moving average (``grow="momentum"``).
      redistribute: SNFS's momentum redistribution across layers.
      reset_inner: zero ``inner``'s parameter-shaped state at rewired
        positions (leave ``True`` unless ``inner``'s state cannot be mapped).
      owner: the name used in error messages.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`SparseTrainingState`; ``update`` needs ``params``. Pure; jit-,
      vmap- and shard-safe; extra keyword arguments go to ``inner``.

    Raises:
      ValueError / TypeError: a bad option, key or sparsity (at construction);
        a mask that does not fit the params, or an ``inner`` whose state
        :func:`optax.tree_utils.tree_map_params` cannot map (at ``init``);
        ``params=None`` or mismatched trees (at ``update``).

    References:
      Mocanu et al. "Scalable training of artificial neural networks with
      adaptive sparse connectivity inspired by network science", Nature
      Communications 2018. Evci et al. "Rigging the Lottery: Making All
      Tickets Winners", ICML 2020. Dettmers & Zettlemoyer, "Sparse Networks
      from Scratch: Faster Training without Losing Performance", 2019.

    Example:
      >>> import jax, jax.numpy as jnp, optax, sparsejax as sj
      >>> params = {"w": jnp.arange(1.0, 17.0).reshape(4, 4)}
      >>> tx = sj.transforms.dynamic_sparse(
      ...     optax.sgd(0.1), 0.5, key=jax.random.key(0), grow="gradient",
      ...     schedule=sj.transforms.drop_schedule(0.5, every=1, end=1, decay="constant"))
      >>> state = tx.init(params)
      >>> grads = {"w": jnp.ones((4, 4))}
      >>> updates, state = tx.update(grads, state, params)
      >>> int(state.mask["w"].sum())  # 4 dropped, 4 grown: still 8 active
      8
    """
    inner = optax.with_extra_args_support(inner)
    beta = _check_options(owner, schedule, grow, momentum, redistribute)
    key = _as_key(key, owner)
    if mask is None:
        if sparsity is None:
            raise ValueError(f"{owner}: give sparsity (a random initial mask) or mask=")
        parse_sparsity(sparsity, f"{owner}: sparsity")
    elif sparsity is not None:
        raise ValueError(f"{owner}: give either sparsity (a random initial mask) or mask=, not both")
    uses_momentum = grow == "momentum" or redistribute
    static_schedule = StaticSchedule(schedule)

    def init_fn(params):
        which = _prunable_flags(params, prunable)
        if mask is None:
            initial = random_mask(params, sparsity, key, distribution=distribution,
                                  prunable=prunable)
        else:
            initial = _resolve_mask(params, mask)
        leaves = [
            jnp.broadcast_to(m, jnp.shape(p)) if w else m
            for m, p, w in zip(jax.tree.leaves(initial), jax.tree.leaves(params), which,
                               strict=True)
        ]
        treedef = jax.tree.structure(params)
        inner_state = inner.init(params)
        if reset_inner:
            changed = jax.tree.unflatten(treedef, [
                jax.ShapeDtypeStruct(jnp.shape(m), jnp.bool_) for m in leaves])
            try:
                reset = jax.eval_shape(lambda s, c: _reset_at(inner, s, c), inner_state, changed)
                if jax.tree.structure(reset) != jax.tree.structure(inner_state) or any(
                    jnp.shape(a) != jnp.shape(b)
                    for a, b in zip(jax.tree.leaves(reset), jax.tree.leaves(inner_state))
                ):
                    raise ValueError("the mapped state differs in structure or shapes")
            except Exception as e:  # any failure of the mapping is the same user error
                raise ValueError(
                    f"{owner}: cannot find the parameter-shaped leaves of the inner optimizer's "
                    f"state (optax.tree_utils.tree_map_params failed: {type(e).__name__}: {e}); "
                    "its moments could not be reset at rewired positions. Use another inner "
                    "optimizer or pass reset_inner=False"
                ) from e
        live_params = [p for p, w in zip(jax.tree.leaves(params), which, strict=True) if w]
        return SparseTrainingState(
            step=jnp.zeros((), jnp.int32),
            key=key,
            mask_leaves=MaskLeaves(tuple(leaves), treedef),
            inner_state=inner_state,
            momentum=tuple(jnp.zeros(jnp.shape(p), jnp.float32) for p in live_params)
            if uses_momentum else (),
            static_schedule=static_schedule,
        )

    def update_fn(updates, state, params=None, *, prune_now=None, **extra_args):
        _require_params(owner, params)
        hint = _check_hint(owner, prune_now)
        mask_tree = state.mask
        _check_update_trees(owner, updates, params, mask_tree)
        which = _prunable_flags(params, prunable)
        step = state.step
        new_updates, inner_state = inner.update(
            _zero_pruned(updates, mask_tree), state.inner_state, params, **extra_args
        )

        def live(leaves):
            return tuple(x for x, w in zip(leaves, which, strict=True) if w)

        old = live(state.mask_leaves.leaves)
        raw_grads = live(jax.tree.leaves(updates))
        moments = state.momentum
        if uses_momentum:
            moments = tuple(
                beta * m + (1.0 - beta) * jnp.asarray(g, jnp.float32)
                for m, g in zip(moments, raw_grads, strict=True)
            )
        operand = (old, live(jax.tree.leaves(params)), raw_grads, moments)

        def select(operand):
            masks, live_params, grads, moments = operand
            fraction = schedule(step)
            options: dict[str, Any] = {}
            if grow == "random":
                options["grow_key"] = jax.random.fold_in(
                    jax.random.fold_in(state.key, _GROW_TAG), step
                )
            elif grow == "gradient":
                options["grow_scores"] = [jnp.abs(g) for g in grads]
            else:
                options["grow_scores"] = [jnp.abs(m) for m in moments]
            if redistribute:
                options["redistribution"] = mean_active_magnitude(masks, moments)
            return tuple(rewire(list(masks), list(live_params), fraction, **options))

        def reset(inner_state, new):
            if not reset_inner:
                return inner_state
            changed = _with_live(
                MaskLeaves([jnp.zeros((), bool)] * len(which), state.mask_leaves.treedef),
                which,
                tuple(jnp.logical_xor(o, n) for o, n in zip(old, new, strict=True)),
            ).tree()
            return _reset_at(inner, inner_state, changed)

        def rewire_branch(operand, inner_state):
            new = select(operand)
            return new, reset(inner_state, new)

        is_update = jnp.asarray(schedule.is_update(step), bool)
        if hint is False:  # the host knows: no update at this step, nothing traced
            new = old
        elif hint:  # the host knows: an update step, no lax.cond
            new = tuple(
                jnp.where(is_update, n, o) for n, o in zip(select(operand), old, strict=True)
            )
            inner_state = reset(inner_state, new)
        else:
            try:  # eagerly the step is concrete: rewire only on update steps
                concrete = bool(is_update)
            except jax.errors.ConcretizationTypeError:  # jit / vmap: no host round trip
                new, inner_state = jax.lax.cond(
                    is_update,
                    rewire_branch,
                    lambda operand, inner_state: (operand[0], inner_state),
                    operand,
                    inner_state,
                )
            else:
                new, inner_state = rewire_branch(operand, inner_state) if concrete else (
                    old, inner_state)
        new_leaves = _with_live(state.mask_leaves, which, new)
        if new is old:
            kept = mask_tree
        else:
            kept = _with_live(
                state.mask_leaves,
                which,
                tuple(jnp.logical_and(o, n) for o, n in zip(old, new, strict=True)),
            ).tree()
        new_state = SparseTrainingState(
            step=optax.safe_increment(step),
            key=state.key,
            mask_leaves=new_leaves,
            inner_state=inner_state,
            momentum=moments,
            static_schedule=state.static_schedule,
        )
        return _pin_pruned(new_updates, params, kept), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
