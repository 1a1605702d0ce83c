"""Budget allocation: per-layer sparsities chosen greedily on the sensitivity curves."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sparsejax.metrics import flops as _flops
from sparsejax.sensitivity._layers import LayerSensitivity
from sparsejax.tree import PyTree, named_leaves


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

    **Greedy.** Every layer starts unpruned and walks up its grid of evaluated
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
