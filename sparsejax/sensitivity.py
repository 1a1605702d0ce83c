"""Sensitivity analysis: how much each layer (or weight) can be pruned, and budget allocation.

* :func:`layer_sensitivity` — prune one layer at a time to each sparsity of a
  grid (any score, any structure), evaluate ``eval_fn(params) -> metric`` and
  restore: the per-layer sensitivity curves of Han et al. (2015, Fig. 6) and Li
  et al. (2017, Fig. 2). The grid is evaluated in one ``jax.vmap`` per layer
  when ``eval_fn`` is traceable, in a Python loop otherwise.
* :func:`allocate_budget` — per-layer sparsities that remove a target fraction
  of the prunable parameters or FLOPs while every layer's metric drop stays
  under a bound, chosen greedily on the curves; the result is a ``{path:
  sparsity}`` map for ``sparsejax.prune(..., distribution=...)``.
* :func:`parameter_sensitivity` — per-weight saliencies (OBD ``½·h·w²`` or
  Fisher, from :mod:`sparsejax.scores`) summarised per layer and compared with
  magnitude (Spearman's ρ and top-k overlap).
* :func:`plot_sensitivity_curves`, :func:`plot_sensitivity_heatmap` — PNG figures
  (matplotlib, headless ``Agg`` backend, imported lazily).

References:
  Han, Pool, Tran, Dally. "Learning both Weights and Connections for Efficient Neural
  Networks", NeurIPS 2015 (layer sensitivity, Fig. 6).
  Li, Kadav, Durdanovic, Samet, Graf. "Pruning Filters for Efficient ConvNets", ICLR 2017
  (sensitivity of each layer to filter pruning, Section 4.2).
  LeCun, Denker, Solla. "Optimal Brain Damage", NeurIPS 1990.
  Theis, Korshunova, Tejani, Huszár. "Faster gaze prediction with dense networks and Fisher
  pruning", 2018.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.criteria import spearman
from sparsejax.masks import apply_mask, validate_mask
from sparsejax.metrics import flops as _flops
from sparsejax.scores import magnitude
from sparsejax.select import prune
from sparsejax.structures import Structure, Unstructured
from sparsejax.tree import Prunable, PyTree, check_same_structure, named_leaves, prunable_tree

__all__ = [
    "LayerSensitivity",
    "ParameterSensitivity",
    "allocate_budget",
    "format_parameter_sensitivity",
    "layer_flops",
    "layer_sensitivity",
    "parameter_sensitivity",
    "plot_sensitivity_curves",
    "plot_sensitivity_heatmap",
]

EvalFn = Callable[[PyTree], Any]


# --------------------------------------------------------------------------- layer sensitivity


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
        :func:`sparsejax.prune` accepts), e.g. ``criteria.filter_norm(params)``.
      sparsities: strictly increasing grid in ``[0, 1]``.
      prunable: the layers to analyse (default ``ndim >= 2``).
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


# --------------------------------------------------------------------------- budget allocation


def layer_flops(apply_fn: Callable[..., Any], params: PyTree, *inputs: Any) -> dict[str, int]:
    """Dense FLOPs (MACs) of every parameter leaf, ``{path: flops}``, via :func:`sparsejax.metrics.flops`.

    Trace with one example for per-example numbers. Leaves with no matrix
    product are absent. Useful as ``costs`` of :func:`allocate_budget`.
    """
    report = _flops(apply_fn, params, *inputs)
    return {r.path: int(r.flops) for r in report.rows if r.path in dict(named_leaves(params))}


def _bounds(max_drop: float | Mapping[str, float] | None, layers: Sequence[str]) -> list[float]:
    if max_drop is None:
        return [math.inf] * len(layers)
    if isinstance(max_drop, Mapping):
        unknown = [k for k in max_drop if k not in layers]
        if unknown:
            raise ValueError(
                f"max_drop names {unknown[0]!r}, which is not an analysed layer; layers are "
                f"{list(layers)}"
            )
        out = []
        for name in layers:
            v = float(max_drop.get(name, math.inf))
            if math.isnan(v):
                raise ValueError(f"max_drop for {name!r} is NaN")
            out.append(v)
        return out
    v = float(max_drop)
    if math.isnan(v):
        raise ValueError(f"max_drop must be a number, got {max_drop!r}")
    return [v] * len(layers)


def _costs(
    sens: LayerSensitivity, costs: str | Mapping[str, float]
) -> list[float]:
    if isinstance(costs, str):
        if costs != "params":
            raise ValueError(f"costs must be 'params' or a mapping {{path: cost}}, got {costs!r}")
        return [float(s) for s in sens.sizes]
    if not isinstance(costs, Mapping):
        raise TypeError(f"costs must be 'params' or a mapping {{path: cost}}, got {costs!r}")
    unknown = [k for k in costs if k not in sens.layers]
    if unknown:
        raise ValueError(
            f"costs names {unknown[0]!r}, which is not an analysed layer; layers are "
            f"{list(sens.layers)}"
        )
    out = []
    for name in sens.layers:
        if name not in costs:
            raise ValueError(
                f"costs has no entry for layer {name!r}; give every analysed layer a cost "
                "(0 for a layer whose pruning saves nothing)"
            )
        v = float(costs[name])
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"cost of layer {name!r} must be finite and >= 0, got {costs[name]!r}")
        out.append(v)
    return out


def allocate_budget(
    sens: LayerSensitivity,
    target: float,
    *,
    costs: str | Mapping[str, float] = "params",
    max_drop: float | Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Per-layer sparsities that remove a ``target`` fraction of the cost, greedily on the curves.

    **Cost.** ``costs="params"``: a layer costs its number of entries, so
    ``target`` is the overall sparsity of the analysed layers. A mapping
    ``{path: cost}`` (e.g. :func:`layer_flops`): ``target`` is the fraction of
    that total to remove (a FLOPs reduction). Pruning a fraction ``k/n`` of a
    layer's ``n`` groups removes ``k/n`` of its cost (ShrinkBench's nonzero
    FLOPs, as :func:`sparsejax.metrics.flops` counts a masked layer).

    **Greedy.** Every layer starts unpruned and walks up its grid of measured
    points ``(k_j groups pruned, drop_j)``. At each step the layer whose next
    point has the least extra drop per unit of cost removed,
    ``(drop_next − drop_now) / (cost_next − cost_now)``, moves one point (ties:
    smaller drop, then the earlier layer); a point whose drop exceeds the
    layer's ``max_drop`` is never taken, and the layer stops there. Steps stop
    once the removed cost reaches ``target · total``; the last layer moved is
    then set back to the *smallest* group count between its previous and its
    new point that still reaches the target, so the budget is met with
    (nearly) no overshoot: at most one group of one layer.

    Args:
      sens: curves from :func:`layer_sensitivity` (any structure).
      target: fraction of the total cost to remove, in ``[0, 1]``.
      costs: ``"params"`` or ``{path: cost}`` for every analysed layer.
      max_drop: bound on each layer's drop (a float, ``{path: bound}`` or ``None``).

    Returns:
      ``{path: sparsity}`` for every analysed layer (a fraction of groups,
      ``k/n`` exactly), accepted by ``sparsejax.prune(..., distribution=...)``
      with the structure of ``sens``, which then prunes exactly ``k`` groups.

    Raises:
      ValueError: ``target`` outside [0, 1]; a cost or bound naming an unknown
        layer or missing; a target that the bounds make unreachable (the
        reachable fraction is named).
    """
    if isinstance(target, bool) or not isinstance(target, (int, float, np.floating, np.integer)):
        raise TypeError(f"target must be a float in [0, 1], got {target!r}")
    target = float(target)
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be in [0, 1], got {target!r}")
    layers = sens.layers
    cost = _costs(sens, costs)
    bound = _bounds(max_drop, layers)
    total = float(sum(cost))
    if total <= 0:
        raise ValueError(f"the analysed layers have total cost {total}; nothing to allocate")
    goal = target * total
    tol = 1e-9 * total
    drops = sens.drops
    unit = [c / n if n else 0.0 for c, n in zip(cost, sens.groups)]
    # Measured points per layer: (groups pruned, drop), increasing in groups.
    points: list[list[tuple[int, float]]] = []
    for li in range(len(layers)):
        pts: list[tuple[int, float]] = [(0, 0.0)]
        for j in range(len(sens.sparsities)):
            k, d = int(sens.pruned[li, j]), float(drops[li, j])
            if k == pts[-1][0]:
                pts[-1] = (k, max(pts[-1][1], d) if k else 0.0)
            else:
                pts.append((k, d))
        points.append(pts)
    pos = [0] * len(layers)
    blocked = [False] * len(layers)

    def removed() -> float:
        return sum(points[i][pos[i]][0] * unit[i] for i in range(len(layers)))

    last = None
    while removed() < goal - tol:
        best = None
        for i in range(len(layers)):
            if blocked[i] or pos[i] + 1 >= len(points[i]) or unit[i] <= 0:
                continue
            k0, d0 = points[i][pos[i]]
            k1, d1 = points[i][pos[i] + 1]
            if not d1 <= bound[i]:  # NaN drops are never taken either
                blocked[i] = True
                continue
            key = ((d1 - d0) / ((k1 - k0) * unit[i]), d1, i)
            if best is None or key < best:
                best = key
        if best is None:
            raise ValueError(
                f"target {target!r} is unreachable under max_drop={max_drop!r}: the allowed "
                f"points remove at most {removed() / total:.6f} of the cost "
                f"(per layer: {dict(zip(layers, (points[i][pos[i]][0] for i in range(len(layers)))))}"
                " groups)"
            )
        last = best[2]
        pos[last] += 1
    counts = [points[i][pos[i]][0] for i in range(len(layers))]
    if last is not None:
        rest = removed() - counts[last] * unit[last]
        k_prev = points[last][pos[last] - 1][0]
        need = math.ceil((goal - rest - tol) / unit[last])
        counts[last] = min(max(need, k_prev + 1), counts[last])
    return {name: (k / n if n else 0.0) for name, k, n in zip(layers, counts, sens.groups)}


# --------------------------------------------------------------------------- parameter sensitivity


@dataclasses.dataclass(frozen=True)
class ParameterSensitivity:
    """One layer's row of :func:`parameter_sensitivity`.

    Attributes:
      path: the layer's path.
      size: entries.
      mean: mean saliency of its entries.
      total: summed saliency.
      fraction: ``total`` / the summed saliency of all analysed layers.
      rank_correlation: Spearman's ρ between the saliency and the reference (magnitude).
      top_overlap: ``|top-k(saliency) ∩ top-k(reference)| / k`` with ``k = max(1,
        round(top_fraction · size))`` (ties to the lower flat index).
    """

    path: str
    size: int
    mean: float
    total: float
    fraction: float
    rank_correlation: float
    top_overlap: float


def _top_k(x: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-x, kind="stable")[:k]


def parameter_sensitivity(
    saliency: PyTree,
    params: PyTree,
    *,
    reference: PyTree | None = None,
    prunable: Prunable = None,
    top_fraction: float = 0.1,
) -> tuple[ParameterSensitivity, ...]:
    """Per-weight saliency summarised per layer and compared with magnitude.

    ``saliency`` is a per-weight score pytree, typically OBD
    ``scores.obd(params, scores.exact_hessian_diag(...))`` / Hutchinson, or
    Fisher pruning ``scores.obd(params, scores.fisher_diag(...))``. For each
    prunable layer: its mean and total saliency, its share of the total
    (which layers the loss is sensitive to), and how well the magnitude
    ``|w|`` (or ``reference``) ranks the same weights: Spearman's ρ and the
    overlap of the top ``top_fraction`` sets. Eager (returns Python numbers).

    Args:
      saliency: per-weight scores mirroring ``params`` (full shapes).
      params: the weights.
      reference: the score to compare with (default ``scores.magnitude(params)``).
      prunable: which leaves are summarised (default ``ndim >= 2``).
      top_fraction: the fraction defining the top-k sets, in ``(0, 1]``.

    Returns:
      One :class:`ParameterSensitivity` per prunable layer, in ``jax.tree.leaves`` order.

    Raises:
      ValueError: mismatched trees or shapes (path named), NaN saliency (path
        named), ``top_fraction`` outside ``(0, 1]``.

    References:
      LeCun, Denker, Solla. "Optimal Brain Damage", NeurIPS 1990.
      Theis et al. "Faster gaze prediction with dense networks and Fisher pruning", 2018.
    """
    if not 0.0 < float(top_fraction) <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction!r}")
    check_same_structure(params, saliency, "params", "saliency")
    ref = magnitude(params) if reference is None else reference
    check_same_structure(params, ref, "params", "reference")
    which = jax.tree.leaves(prunable_tree(params, prunable))
    rows = []
    for (name, p), (_, s), (_, r), w in zip(
        named_leaves(params), named_leaves(saliency), named_leaves(ref), which, strict=True
    ):
        if not w:
            continue
        for what, x in (("saliency", s), ("reference", r)):
            if np.shape(x) != np.shape(p):
                raise ValueError(
                    f"{what} at {name!r} has shape {np.shape(x)}, the parameter {np.shape(p)}"
                )
        s_np = np.asarray(jax.device_get(s), np.float64).ravel()
        r_np = np.asarray(jax.device_get(r), np.float64).ravel()
        if np.isnan(s_np).any():
            raise ValueError(f"saliency at {name!r} has {int(np.isnan(s_np).sum())} NaN entries")
        k = max(1, round(float(top_fraction) * s_np.size))
        overlap = len(np.intersect1d(_top_k(s_np, k), _top_k(r_np, k))) / k
        rho = float(spearman(s_np, r_np)) if s_np.size >= 2 else math.nan
        rows.append((name, s_np.size, float(s_np.mean()), float(s_np.sum()), rho, overlap))
    if not rows:
        raise ValueError(f"no prunable parameter: the prunable filter {prunable!r} matched no leaf")
    grand = sum(r[3] for r in rows)
    return tuple(
        ParameterSensitivity(
            path=n, size=size, mean=mean, total=tot,
            fraction=tot / grand if grand else math.nan, rank_correlation=rho, top_overlap=ov,
        )
        for n, size, mean, tot, rho, ov in rows
    )


def format_parameter_sensitivity(rows: Sequence[ParameterSensitivity]) -> str:
    """A markdown table of :func:`parameter_sensitivity` rows."""
    lines = [
        "| layer | size | mean saliency | total | share | ρ vs magnitude | top-k overlap |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.path} | {r.size:,} | {r.mean:.3e} | {r.total:.3e} | {r.fraction:.1%} | "
            f"{r.rank_correlation:.3f} | {r.top_overlap:.1%} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_sensitivity_curves(
    path: str | pathlib.Path, sens: LayerSensitivity, *, ylabel: str = "metric", title: str = ""
) -> pathlib.Path:
    """One curve per layer: metric vs the layer's sparsity, with the baseline dashed (PNG)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, row in zip(sens.layers, sens.values):
        ax.plot(sens.sparsities, row, marker="o", ms=3, label=name)
    ax.axhline(sens.baseline, color="k", ls="--", lw=1, label="unpruned")
    ax.set_xlabel(f"sparsity of the layer ({type(sens.structure).__name__} groups)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_sensitivity_heatmap(
    path: str | pathlib.Path, sens: LayerSensitivity, *, title: str = ""
) -> pathlib.Path:
    """Heat map of the drop, layers × sparsities, annotated (PNG)."""
    plt = _pyplot()
    drops = sens.drops
    fig, ax = plt.subplots(
        figsize=(max(5, 0.7 * len(sens.sparsities) + 2), max(2.5, 0.45 * len(sens.layers) + 1.5)),
        dpi=120,
    )
    im = ax.imshow(drops, aspect="auto", cmap="magma_r")
    ax.set_xticks(range(len(sens.sparsities)), [f"{s:g}" for s in sens.sparsities])
    ax.set_yticks(range(len(sens.layers)), sens.layers, fontsize=8)
    ax.set_xlabel("sparsity of the layer")
    dark = np.nanmin(drops) + 0.5 * (np.nanmax(drops) - np.nanmin(drops))
    for i in range(drops.shape[0]):
        for j in range(drops.shape[1]):
            color = "white" if drops[i, j] > dark else "black"
            ax.text(j, i, f"{drops[i, j]:.3g}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, label="drop vs unpruned")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
