"""Per-layer sparsities of post-training pruning: uniform, a map, or OWL's outlier weighting.

:func:`sparsity_per_layer` gives every pruned layer the uniform sparsity unless a map
``{path_or_regex: sparsity}`` says otherwise (the key rules of :func:`sparsejax.prune`'s
per-layer maps). OWL (Yin et al., ICML 2024) gives blocks with more *outliers* a lower
sparsity: a block's outlier ratio ``D`` is the fraction of its Wanda scores
``|W_ij|·‖X_j‖₂`` above ``M`` times their mean (:func:`outlier_ratio`, paper ``M = 5``);
:func:`owl_sparsities` maps the ratios linearly onto densities spread over ``2λ``
(paper ``λ = 0.08``) around ``1 − s``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.select._distributions import match_layer_map

__all__ = ["outlier_ratio", "owl_sparsities", "sparsity_per_layer"]


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1], got {value!r}")
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {v}")
    return v


def sparsity_per_layer(
    paths: Sequence[str],
    sparsity: float | None,
    overrides: Mapping[str, float] | None = None,
) -> dict[str, float | None]:
    """``{path: sparsity}`` for the layers ``paths``: uniform, with per-layer overrides.

    Args:
      paths: the pruned layers' parameter paths, e.g. ``"blocks/0/qkv/kernel"``.
      sparsity: the uniform sparsity in ``[0, 1]`` (``None``: the full N:M pattern; then
        no overrides are allowed).
      overrides: ``{path_or_regex: sparsity}``: a key equal to a path applies to it,
        otherwise keys are regexes searched in the paths (as in :func:`sparsejax.prune`).

    Returns:
      A dict over ``paths``, in their order.

    Raises:
      ValueError / TypeError: a value outside ``[0, 1]`` (naming its key or path), a key
        matching no path or a path matched by several keys, overrides with ``None``.

    Example:
      >>> sparsity_per_layer(["b/0/fc1/kernel", "b/0/fc2/kernel"], 0.5, {"fc2": 0.7})
      {'b/0/fc1/kernel': 0.5, 'b/0/fc2/kernel': 0.7}
    """
    out: dict[str, float | None] = {
        p: None if sparsity is None else _check_fraction("sparsity", sparsity) for p in paths}
    if overrides:
        if sparsity is None:
            raise ValueError("per-layer sparsities need an unstructured target; the N:M "
                             "pattern fixes every layer's sparsity")
        for path, (key, value) in match_layer_map(overrides, list(paths)).items():
            out[path] = _check_fraction(f"the sparsity of {path!r} (key {key!r})", value)
    return out


def outlier_ratio(scores: Sequence[jax.Array] | jax.Array, m: float = 5.0) -> jax.Array:
    """OWL's layer outlier ratio: the fraction of ``scores`` above ``m`` × their mean.

    Args:
      scores: one array or several (e.g. the Wanda scores of every linear layer of a
        block), counted together.
      m: the outlier threshold ``M`` (paper: 5).

    Returns:
      A float32 scalar in ``[0, 1]``. Pure.

    Example:
      >>> outlier_ratio([jnp.array([1.0, 1.0, 1.0, 9.0])], m=2.0).item()
      0.25
    """
    if isinstance(m, bool) or not isinstance(m, numbers.Real) or not m > 0:
        raise ValueError(f"m must be a positive number, got {m!r}")
    arrays = [scores] if isinstance(scores, jax.Array | np.ndarray) else list(scores)
    if not arrays:
        raise ValueError("outlier_ratio needs at least one score array")
    flat = jnp.concatenate([jnp.ravel(jnp.asarray(a, jnp.float32)) for a in arrays])
    return jnp.mean((flat > m * jnp.mean(flat)).astype(jnp.float32))


def owl_sparsities(
    ratios: Sequence[float] | np.ndarray,
    sparsity: float,
    lam: float = 0.08,
    sizes: Sequence[int] | None = None,
) -> np.ndarray:
    """OWL's per-block sparsities from the blocks' outlier ratios.

    Densities ``d_l = 2λ·(D_l − min D)/(max D − min D)``, shifted so that their mean
    (weighted by ``sizes``, default equal) is ``1 − sparsity``; sparsities ``1 − d_l``.
    With equal block sizes (a transformer's blocks) this is the paper's rule and the
    model's sparsity is exactly ``sparsity``; equal ratios give the uniform sparsity.

    Args:
      ratios: ``D_l`` per block (:func:`outlier_ratio`).
      sparsity: target overall sparsity in ``[0, 1]``.
      lam: half-width λ of the density range (paper: 0.08).
      sizes: weights (parameters) per block for the mean.

    Returns:
      ``float64[num_blocks]``.

    Raises:
      ValueError: empty or non-finite ratios, ``lam < 0``, sizes of another length or
        not positive, or a block sparsity outside ``[0, 1]`` (naming it; lower ``lam``).

    References:
      Yin et al., "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret Sauce for
      Pruning LLMs to High Sparsity", ICML 2024.

    Example:
      >>> owl_sparsities([0.01, 0.02, 0.03], 0.7, lam=0.1).round(3).tolist()
      [0.8, 0.7, 0.6]
    """
    s = _check_fraction("sparsity", sparsity)
    d = np.asarray(ratios, np.float64)
    if d.ndim != 1 or d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"ratios must be a non-empty 1-d array of finite numbers, got {d}")
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not lam >= 0:
        raise ValueError(f"lam must be a number >= 0, got {lam!r}")
    w = np.ones_like(d) if sizes is None else np.asarray(sizes, np.float64)
    if w.shape != d.shape or not np.all(w > 0):
        raise ValueError(f"sizes must be {d.size} positive numbers, got {sizes!r}")
    spread = d.max() - d.min()
    dens = np.zeros_like(d) if spread == 0 else (d - d.min()) / spread * 2.0 * float(lam)
    dens = dens - np.sum(w * dens) / np.sum(w) + (1.0 - s)
    out = 1.0 - dens
    bad = [(i, v) for i, v in enumerate(out) if not -1e-12 <= v <= 1.0 + 1e-12]
    if bad:
        raise ValueError(f"OWL sparsity outside [0, 1] for block(s) {bad} (target {s}, "
                         f"lam {lam}): lower lam")
    return np.clip(out, 0.0, 1.0)
