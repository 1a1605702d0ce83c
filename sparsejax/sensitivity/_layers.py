"""Layer sensitivity: prune one layer at a time over a grid of sparsities and evaluate."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.masks import apply_mask, validate_mask
from sparsejax.select import prune
from sparsejax.structures import Structure, Unstructured
from sparsejax.tree import Prunable, PyTree, check_same_structure, named_leaves, prunable_tree

EvalFn = Callable[[PyTree], Any]


@dataclasses.dataclass(frozen=True, eq=False)
class LayerSensitivity:
    """Sensitivity curves of :func:`layer_sensitivity` (immutable; arrays are read-only).

    Attributes:
      layers: prunable paths, in ``jax.tree.leaves`` order.
      sparsities: the grid ``(S,)``, as given (ascending).
      values: ``(L, S)`` float64: the metric with layer ``l`` alone pruned to ``sparsities[j]``.
      baseline: the metric with nothing (more) pruned.
      groups: selection units per layer (entries, neurons, blocks, ... of ``structure``).
      sizes: parameter entries per layer.
      pruned: ``(L, S)`` int64: groups pruned at each point, ``round(s·groups)`` (with a
        ``mask``, the groups it already prunes count toward this target, as in ``prune``).
      structure: the granularity used.
      higher_is_better: whether a larger metric is better (accuracy) or worse (loss).
    """

    layers: tuple[str, ...]
    sparsities: tuple[float, ...]
    values: np.ndarray
    baseline: float
    groups: tuple[int, ...]
    sizes: tuple[int, ...]
    pruned: np.ndarray
    structure: Structure
    higher_is_better: bool = True

    @property
    def drops(self) -> np.ndarray:
        """``(L, S)`` metric degradation: ``baseline − values`` (or ``values − baseline``)."""
        d = self.baseline - self.values if self.higher_is_better else self.values - self.baseline
        d = np.asarray(d, np.float64)
        d.flags.writeable = False
        return d

    def curve(self, path: str) -> np.ndarray:
        """The ``(S,)`` metric values of one layer."""
        if path not in self.layers:
            raise ValueError(f"layer {path!r} is not in the sensitivity table; layers are {self.layers}")
        return self.values[self.layers.index(path)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists, floats) of every field."""
        return {
            "layers": list(self.layers),
            "sparsities": list(self.sparsities),
            "values": self.values.tolist(),
            "drops": self.drops.tolist(),
            "baseline": self.baseline,
            "groups": list(self.groups),
            "sizes": list(self.sizes),
            "pruned": self.pruned.tolist(),
            "structure": repr(self.structure),
            "higher_is_better": self.higher_is_better,
        }


def _check_grid(sparsities: Sequence[float]) -> tuple[float, ...]:
    try:
        grid = [float(s) for s in sparsities]
    except TypeError as err:
        raise TypeError(f"sparsities must be a sequence of floats, got {sparsities!r}") from err
    if not grid:
        raise ValueError("sparsities is empty; give at least one sparsity in [0, 1]")
    for s in grid:
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"every sparsity must be in [0, 1], got {s!r} in {grid}")
    if any(b <= a for a, b in itertools.pairwise(grid)):
        raise ValueError(f"sparsities must be strictly increasing, got {grid}")
    return tuple(grid)


def _scalar_metric(value: Any, where: str) -> Any:
    if np.ndim(value) != 0:
        raise ValueError(f"eval_fn must return a scalar metric; got shape {np.shape(value)} {where}")
    return value


def _swap_eval(eval_fn, treedef, i, params, base_leaves, leaf_mask):
    """``eval_fn`` of ``params`` under ``base_leaves`` with leaf ``i`` replaced by ``leaf_mask``."""
    leaves = list(base_leaves)
    leaves[i] = leaf_mask
    return eval_fn(apply_mask(params, jax.tree.unflatten(treedef, leaves)))


def _sweep_impl(eval_fn, treedef, i, chunk_size, params, base_leaves, stacked):
    def at(leaf_mask):
        return _swap_eval(eval_fn, treedef, i, params, base_leaves, leaf_mask)

    if chunk_size is None:
        return jax.vmap(at)(stacked)
    return jax.lax.map(at, stacked, batch_size=min(int(chunk_size), stacked.shape[0]))


@functools.lru_cache(maxsize=64)
def _cached_sweep(eval_fn, treedef, i, chunk_size):
    return jax.jit(functools.partial(_sweep_impl, eval_fn, treedef, i, chunk_size))


def _sweep(eval_fn, treedef, i, chunk_size):
    """The jitted, vmapped sweep of one layer; compiled once per ``eval_fn``/layer/shapes."""
    try:
        return _cached_sweep(eval_fn, treedef, i, chunk_size)
    except TypeError:  # an unhashable eval_fn: compile for this call only
        return jax.jit(functools.partial(_sweep_impl, eval_fn, treedef, i, chunk_size))


def layer_sensitivity(
    eval_fn: EvalFn,
    params: PyTree,
    scores: PyTree,
    sparsities: Sequence[float],
    *,
    prunable: Prunable = None,
    structure: Structure = Unstructured(),  # noqa: B008 (frozen, immutable)
    reduction: str = "l1",
    mask: PyTree | None = None,
    higher_is_better: bool = True,
    vectorize: bool | None = None,
    chunk_size: int | None = None,
) -> LayerSensitivity:
    """Prune each layer alone to each sparsity of a grid and evaluate: sensitivity curves.

    For layer ``l`` and sparsity ``s``: ``mask_ls = prune(scores, s, prunable=<l only>,
    structure=structure, mask=mask)`` prunes exactly ``round(s·n_l)`` of
    the layer's ``n_l`` groups (lowest scores first, every other layer as
    ``mask`` leaves it), and ``values[l, s] = eval_fn(apply_mask(params,
    mask_ls))``. Nothing is modified in place, so "restoring" is free.

    The masks are selected eagerly (one layerwise ``prune`` per grid point). With
    ``vectorize`` (``None``: try, fall back on a tracing error), ``eval_fn`` then
    runs over the grid of one layer as one jitted ``jax.vmap`` over that
    layer's stacked mask leaves (``chunk_size`` at a time via ``lax.map``);
    ``eval_fn`` must be traceable (jnp only, no ``float(...)``). Otherwise a
    Python loop calls ``eval_fn`` eagerly on the same masks.

    Structured grids mask only the analysed leaf: with ``Neurons()`` a pruned
    unit's kernel column is zero but its bias (and a following BatchNorm's
    shift) still reach the next layer, so the curve measures "kernel zeroed",
    not "unit removed" as :func:`sparsejax.shrink.shrink` removes it. For
    the latter, zero the coupled slices inside ``eval_fn`` (e.g. the bias of
    every unit whose kernel column is all zero, as
    ``notebooks/04_structured_pruning.py`` does).

    Args:
      eval_fn: ``eval_fn(params) -> scalar`` (e.g. accuracy on a held-out batch).
      params: parameter pytree.
      scores: importance scores mirroring ``params`` (full or group shape, as
        :func:`sparsejax.prune` accepts), e.g. ``scores.filter_norm(params)``.
      sparsities: strictly increasing grid in ``[0, 1]``.
      prunable: the layers to analyse (default: float leaves with ``ndim >= 2``).
      structure: granularity, e.g. ``Neurons()`` for filter pruning.
      reduction: group reduction for full-shape scores (see ``prune``).
      mask: an existing mask kept on every layer (analyse an already-pruned net).
      higher_is_better: direction of the metric (``drops`` is computed accordingly).
      vectorize: ``True`` (vmap, errors propagate), ``False`` (loop) or ``None``.
      chunk_size: sparsities per vmapped chunk (``None``: the whole grid).

    Returns:
      A :class:`LayerSensitivity`.

    Raises:
      ValueError: a grid value outside [0, 1] or a grid not increasing, a
        non-scalar metric, ``chunk_size`` not positive, and every error of
        ``prune`` (mismatched trees, bad structure, naming the path).

    References:
      Han et al. 2015 (Fig. 6); Li et al. 2017 (Section 4.2, Fig. 2).

    Example:
      >>> params = {"w": jnp.arange(1.0, 5.0).reshape(2, 2)}
      >>> sens = layer_sensitivity(lambda p: jnp.sum(p["w"]), params, params, (0.5, 1.0))
      >>> sens.values.tolist(), sens.pruned.tolist()
      ([[7.0, 0.0]], [[2, 4]])
      >>> allocate_budget(sens, 0.25)
      {'w': 0.25}
    """
    grid = _check_grid(sparsities)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if not isinstance(structure, Structure):
        raise TypeError(f"structure must be a sparsejax Structure, got {structure!r}")
    check_same_structure(params, scores, "params", "scores")
    if mask is not None:
        validate_mask(params, mask)
    which = jax.tree.leaves(prunable_tree(params, prunable))
    layers = [(n, p) for (n, p), w in zip(named_leaves(params), which, strict=True) if w]
    if not layers:
        raise ValueError(f"no prunable parameter: the prunable filter {prunable!r} matched no leaf")

    base_params = params if mask is None else apply_mask(params, mask)
    baseline = float(_scalar_metric(eval_fn(base_params), "for the unpruned params"))
    treedef = jax.tree.structure(params)
    index = {n: i for i, (n, _) in enumerate(named_leaves(params))}
    # Layerwise selection treats every layer independently, so one layerwise ``prune`` per
    # grid point gives the mask of every layer at that sparsity (exact Python counts; one
    # compiled selection for the whole grid). Layer l's sweep swaps only its own leaf into
    # the unpruned (or given) mask, so only that leaf is batched.
    grid_masks = [
        jax.tree.leaves(
            prune(scores, s, params=params, mask=mask, prunable=prunable, structure=structure,
                  reduction=reduction)
        )
        for s in grid
    ]
    if mask is None:
        base_leaves = [jnp.ones((), bool)] * len(index)
    else:
        base_leaves = [jnp.asarray(m, bool) for m in jax.tree.leaves(mask)]

    values, pruned, groups, sizes = [], [], [], []
    vmapped = vectorize is None or vectorize
    for name, p in layers:
        shape = tuple(int(d) for d in np.shape(p))
        n = structure.num_groups(shape, name)
        groups.append(n)
        sizes.append(math.prod(shape))
        pruned.append([round(s * n) for s in grid])
        i = index[name]
        stacked = jnp.stack([jnp.asarray(leaves[i]) for leaves in grid_masks])

        row = None
        if vmapped:
            try:
                row = np.asarray(
                    _sweep(eval_fn, treedef, i, chunk_size)(params, base_leaves, stacked),
                    np.float64,
                )
            except jax.errors.JAXTypeError:
                if vectorize:
                    raise
                vmapped = False  # eval_fn is not traceable: loop from now on
        if row is None:
            row = np.asarray(
                [
                    float(_scalar_metric(_swap_eval(eval_fn, treedef, i, params, base_leaves,
                                                    stacked[j]),
                                         f"for {name!r} at sparsity {s}"))
                    for j, s in enumerate(grid)
                ],
                np.float64,
            )
        if row.shape != (len(grid),):
            raise ValueError(
                f"eval_fn must return a scalar metric; got {row.shape[1:]}-shaped values for {name!r}"
            )
        values.append(row)
    vals = np.stack(values)
    vals.flags.writeable = False
    cnt = np.asarray(pruned, np.int64)
    cnt.flags.writeable = False
    return LayerSensitivity(
        layers=tuple(n for n, _ in layers),
        sparsities=grid,
        values=vals,
        baseline=baseline,
        groups=tuple(groups),
        sizes=tuple(sizes),
        pruned=cnt,
        structure=structure,
        higher_is_better=bool(higher_is_better),
    )
