"""Sparsity values and their distribution over layers: uniform, ERK, per-layer maps.

A sparsity is a Python float (rounded exactly as Python rounds ``s * n``) or a float32
0-d array, possibly traced under ``jit``. With ``scope="layer"``, :func:`prune`'s
``distribution`` gives every layer its own value: the same for all (``"uniform"``),
Erdős–Rényi-Kernel (``"erk"``, :func:`erk_sparsities`), or a mapping
``{path_or_regex: sparsity}``.

References:
  Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All Tickets
  Winners", ICML 2020 (ERK distribution).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.tree import Prunable, PyTree, named_leaves, prunable_tree

__all__ = [
    "DISTRIBUTIONS",
    "erk_densities",
    "erk_sparsities",
    "layer_sparsities",
    "match_layer_map",
    "parse_sparsity",
]

DISTRIBUTIONS: tuple[str, ...] = ("uniform", "erk")


def parse_sparsity(value: Any, what: str) -> float | jax.Array | None:
    """A Python float (exact Python rounding) or a float32 0-d array (possibly traced).

    Raises:
      TypeError: a bool or a non-number; ValueError: a concrete value outside [0, 1]
        or an array that is not a scalar (``what`` names the value in the message).
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a number in [0, 1], got the bool {value!r}")
    if isinstance(value, (int, float)):
        f = float(value)
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"{what} must be in [0, 1], got {value!r}")
        return f
    if not hasattr(value, "shape") and not isinstance(value, np.generic):
        raise TypeError(f"{what} must be a float or a 0-d array, got {value!r}")
    if np.ndim(value) != 0:
        raise ValueError(f"{what} must be a scalar, got an array of shape {np.shape(value)}")
    if not isinstance(value, jax.core.Tracer):
        f = float(np.asarray(value))
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"{what} must be in [0, 1], got {f!r}")
    return jnp.asarray(value, jnp.float32)


def erk_densities(shapes: Sequence[tuple[int, ...]], s, power: float, xp) -> Any:
    """RigL's iterative ERK densities (fixed number of rounds so that it also runs traced).

    ``xp`` is ``numpy`` (float64, for a Python float ``s``) or ``jax.numpy`` (float32,
    for an array ``s``, possibly traced). Returns the ``(L,)`` densities.
    """
    sizes = np.array([math.prod(sh) for sh in shapes], np.float64)
    raw_np = np.array(
        [(sum(sh) / math.prod(sh)) ** power if math.prod(sh) else 0.0 for sh in shapes], np.float64
    )
    dtype = np.float64 if xp is np else jnp.float32
    n = xp.asarray(sizes, dtype)
    raw = xp.asarray(raw_np, dtype)
    dense = xp.zeros(len(shapes), bool)

    def epsilon(dense):
        rhs = xp.sum(xp.where(dense, -n * s, n * (1 - s)))
        divisor = xp.sum(xp.where(dense, 0.0, raw * n))
        return rhs / xp.where(divisor > 0, divisor, 1.0)

    for _ in range(len(shapes)):
        eps = epsilon(dense)
        max_prob = xp.max(xp.where(dense, -np.inf, raw))
        dense = dense | ((~dense) & (raw == max_prob) & (max_prob * eps > 1))
    return xp.where(dense, 1.0, epsilon(dense) * raw)


def _erk_python(shapes: Sequence[tuple[int, ...]], s: float, power: float) -> list[float]:
    """ERK sparsities as Python floats (float64 arithmetic)."""
    if s == 0.0:
        return [0.0] * len(shapes)
    dens = erk_densities(shapes, s, power, np)
    return [float(min(max(1.0 - d, 0.0), 1.0)) for d in dens]


def erk_sparsities(
    params: PyTree,
    sparsity: float,
    prunable: Prunable = None,
    erk_power_scale: float = 1.0,
) -> dict[str, float]:
    """Per-layer sparsities of the Erdős–Rényi-Kernel distribution (Evci et al. 2020).

    A layer's density is proportional to ``(sum of its dims / product of its
    dims) ** erk_power_scale`` (Dense ``(in, out)``: ``(in + out) / (in·out)``;
    Conv ``(kh, kw, in, out)``: ``(kh + kw + in + out) / (kh·kw·in·out)``),
    scaled so that the prunable parameters have overall sparsity ``sparsity``.
    Layers whose density would exceed 1 are made dense and the scale is solved
    again for the others, as in the RigL code.

    Args:
      params: parameter pytree (only shapes are read).
      sparsity: overall sparsity in [0, 1] (Python number or concrete array).
      prunable: which leaves count (default: float leaves with ``ndim >= 2``).
      erk_power_scale: exponent of the raw probabilities (1.0: ERK; 0.0: uniform).

    Returns:
      ``{path: sparsity}`` for the prunable leaves, in ``jax.tree.leaves`` order.

    Raises:
      ValueError: sparsity outside [0, 1] or no prunable leaf.

    Example:
      >>> params = {"a": jnp.zeros((10, 10)), "b": jnp.zeros((100, 100))}
      >>> {k: round(v, 3) for k, v in erk_sparsities(params, 0.5).items()}
      {'a': 0.0, 'b': 0.505}

    References:
      Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All Tickets
      Winners", ICML 2020. google-research/rigl, ``sparse_utils.get_sparsities_erdos_renyi``.
    """
    s = parse_sparsity(sparsity, "sparsity")
    if s is None:
        raise ValueError("erk_sparsities needs a sparsity, got None")
    if not isinstance(s, float):
        s = float(np.asarray(s))
    which = prunable_tree(params, prunable)
    named = [
        (name, tuple(int(d) for d in np.shape(leaf)))
        for (name, leaf), w in zip(named_leaves(params), jax.tree.leaves(which))
        if w
    ]
    if not named:
        raise ValueError("no prunable parameter: the prunable filter matched no leaf")
    values = _erk_python([sh for _, sh in named], s, float(erk_power_scale))
    return {name: v for (name, _), v in zip(named, values)}


def match_layer_map(dist: Mapping[str, Any], names: Sequence[str]) -> dict[str, tuple[str, Any]]:
    """``{path: (key, value)}`` for the prunable paths matched by a per-layer map.

    A key equal to a path applies to it; otherwise keys are regexes searched in the path.

    Raises:
      TypeError: a key that is not a string. ValueError: an invalid regex, a path that
        several keys match, or a key that matches no prunable path.
    """
    compiled = {}
    for key in dist:
        if not isinstance(key, str):
            raise TypeError(f"distribution keys must be path strings or regexes, got {key!r}")
        try:
            compiled[key] = re.compile(key)
        except re.error as err:
            raise ValueError(
                f"distribution key {key!r} is not a valid regular expression: {err}"
            ) from err
    found: dict[str, tuple[str, Any]] = {}
    for name in names:
        if name in dist:
            found[name] = (name, dist[name])
            continue
        hits = [k for k, pat in compiled.items() if pat.search(name)]
        if len(hits) > 1:
            raise ValueError(
                f"parameter {name!r} is matched by several distribution keys {hits}; "
                "use its exact path as a key to choose"
            )
        if hits:
            found[name] = (hits[0], dist[hits[0]])
    for key, pat in compiled.items():
        if key not in names and not any(pat.search(n) for n in names):
            raise ValueError(
                f"distribution key {key!r} matches no prunable parameter; prunable paths are "
                f"{list(names)}"
            )
    return found


def layer_sparsities(
    sparsity: Any,
    distribution: str | Mapping[str, Any],
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    nm: bool,
    erk_power_scale: float,
) -> tuple[list[float | jax.Array | None], list[str]]:
    """Per prunable leaf, its sparsity under ``scope="layer"``, and how errors name it.

    Args:
      sparsity: the ``sparsity`` argument of :func:`prune` (``None`` allowed).
      distribution: ``"uniform"``, ``"erk"`` or a map ``{path_or_regex: sparsity}``
        (layers no key matches get ``sparsity``; with ``sparsity=None`` they keep
        all, or get the N:M default when ``nm``).
      names, shapes: the prunable leaves' paths and parameter shapes.
      nm: the structure is N:M (``None`` then means ``1 - n/m``).
      erk_power_scale: exponent of ERK's raw densities.

    Returns:
      ``(values, wheres)``: per leaf a Python float, a float32 0-d array or ``None``,
      and a suffix such as ``" for 'w'"`` for error messages. With a traced sparsity
      the ERK solve runs in float32 (float64 for a Python float).
    """
    default = parse_sparsity(sparsity, "sparsity")
    if isinstance(distribution, Mapping):
        found = match_layer_map(distribution, names)
        values, wheres = [], []
        for name in names:
            if name in found:
                key, v = found[name]
                via = "" if key == name else f" (from distribution key {key!r})"
                values.append(parse_sparsity(v, f"sparsity for {name!r}{via}"))
                wheres.append(f" for {name!r}{via}")
            else:
                values.append(default if default is not None else (None if nm else 0.0))
                wheres.append(f" for {name!r}")
        return values, wheres
    if distribution == "erk":
        if default is None:
            raise ValueError("distribution='erk' needs a sparsity, got None")
        if isinstance(default, float):
            values = list(_erk_python(shapes, default, float(erk_power_scale)))
        else:
            dens = erk_densities(shapes, default, float(erk_power_scale), jnp)
            values = list(jnp.where(default > 0, jnp.clip(1.0 - dens, 0.0, 1.0), 0.0))
        return values, [f" for {name!r} (ERK)" for name in names]
    return [default] * len(names), [f" for {name!r}" for name in names]
