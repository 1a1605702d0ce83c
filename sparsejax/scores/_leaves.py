"""How every score treats a leaf: float32 scores for float leaves, zeros for the rest.

* A float leaf (``float16``, ``bfloat16``, ``float32``, ``float64``) gets a ``float32``
  score of the same shape, whatever its own dtype, so that selection always works on
  one float format.
* A non-float leaf (an ``int32`` step counter, a ``bool`` flag, a ``float0`` gradient)
  gets ``zeros(shape, float32)``: it has no importance to estimate and is never
  differentiated. Complex leaves raise ``TypeError``.
* Errors name the offending leaf by its path string (``"layers/0/kernel"``), see
  :func:`sparsejax.tree.path_str`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.tree import PyTree, check_same_structure, named_leaves, path_str

LossFn = Callable[[PyTree, PyTree], jax.Array]
"""``loss_fn(params, batch) -> scalar`` loss."""

_SCORE_DTYPE = jnp.float32


def _display(name: str) -> str:
    return name if name else "<root>"


def _dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else jnp.asarray(x).dtype


def _is_float(name: str, x: Any, what: str = "params") -> bool:
    """Whether a leaf is a real float array; complex leaves are rejected."""
    dtype = _dtype(x)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"{what} at {_display(name)!r} has complex dtype {dtype}; importance scores are "
            "defined for real parameters only"
        )
    return bool(jnp.issubdtype(dtype, jnp.floating))


def _zeros_like(x: Any) -> jax.Array:
    return jnp.zeros(np.shape(x), _SCORE_DTYPE)


def _f32(x: Any) -> jax.Array:
    return jnp.asarray(x).astype(_SCORE_DTYPE)


def _check_pair(params: PyTree, other: PyTree, other_name: str) -> None:
    """``other`` must mirror ``params`` leaf by leaf, with equal shapes."""
    check_same_structure(params, other, "params", other_name)
    for (name, p), (_, o) in zip(named_leaves(params), named_leaves(other), strict=True):
        if np.shape(p) != np.shape(o):
            raise ValueError(
                f"{other_name} at {_display(name)!r} has shape {np.shape(o)}, but the parameter "
                f"has shape {np.shape(p)}"
            )


def _pairwise(
    params: PyTree, other: PyTree, other_name: str, fn: Callable[[jax.Array, jax.Array], jax.Array]
) -> PyTree:
    """``fn(w, o)`` in float32 on float params, zeros elsewhere."""
    _check_pair(params, other, other_name)

    def leaf(path, p, o):
        name = path_str(path)
        if not _is_float(name, p):
            return _zeros_like(p)
        if not _is_float(name, o, other_name):
            raise TypeError(
                f"{other_name} at {_display(name)!r} has dtype {_dtype(o)}, but the parameter is "
                f"a float ({_dtype(p)}); expected a float {other_name} leaf"
            )
        return fn(_f32(p), _f32(o))

    return jax.tree_util.tree_map_with_path(leaf, params, other)


def _leaf_keys(key: jax.Array, names: Sequence[str]) -> list[jax.Array]:
    """One key per leaf, derived from its *path* (CRC-32), not from its position.

    Adding or removing other leaves therefore leaves a leaf's key unchanged.
    Two leaves whose names hash alike are told apart by their occurrence index.
    """
    seen: dict[int, int] = {}
    keys = []
    for name in names:
        h = zlib.crc32(name.encode("utf-8"))
        k = jax.random.fold_in(key, h)
        n = seen.get(h, 0)
        if n:
            k = jax.random.fold_in(k, n)
        seen[h] = n + 1
        keys.append(k)
    return keys


class _FloatSplit(NamedTuple):
    """The float leaves of a pytree, separated from the rest (which is held constant)."""

    names: list[str]
    leaves: list[Any]
    is_float: list[bool]
    treedef: Any

    @classmethod
    def of(cls, params: PyTree) -> _FloatSplit:
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        names = [path_str(p) for p, _ in flat]
        leaves = [x for _, x in flat]
        is_float = [_is_float(n, x) for n, x in zip(names, leaves)]
        return cls(names, leaves, is_float, treedef)

    @property
    def float_leaves(self) -> list[jax.Array]:
        return [jnp.asarray(x) for x, f in zip(self.leaves, self.is_float) if f]

    @property
    def float_names(self) -> list[str]:
        return [n for n, f in zip(self.names, self.is_float) if f]

    def merge(self, float_leaves: Sequence[Any]) -> PyTree:
        """The full pytree with its float leaves replaced by ``float_leaves``."""
        it = iter(float_leaves)
        return self.treedef.unflatten(
            [next(it) if f else x for x, f in zip(self.leaves, self.is_float)]
        )

    def scores(self, float_scores: Sequence[jax.Array]) -> PyTree:
        """A pytree mirroring params: float32 scores on float leaves, zeros elsewhere."""
        it = iter(float_scores)
        return self.treedef.unflatten(
            [
                next(it).astype(_SCORE_DTYPE) if f else _zeros_like(x)
                for x, f in zip(self.leaves, self.is_float)
            ]
        )


def _check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}"
        )
