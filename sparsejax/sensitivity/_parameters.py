"""Parameter sensitivity: per-weight saliency summarised per layer and compared with magnitude."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import numpy as np

from sparsejax.scores import magnitude, spearman
from sparsejax.tree import Prunable, PyTree, check_same_structure, named_leaves, prunable_tree


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
      prunable: which leaves are summarised (default: float leaves with ``ndim >= 2``).
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
