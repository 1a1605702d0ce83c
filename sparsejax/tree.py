"""Pytree paths, prunable-leaf filters and structure checks shared by the core.

Every error that concerns one leaf names it by its *path string*: the
``jax.tree_util`` key path joined with ``/`` (``"params/Dense_0/kernel"``,
``"layers/0/kernel"``). The trailing ``.value`` that ``flax.nnx.Variable``
leaves add is dropped, so a Linen dict and an NNX ``State`` of the same model
give the same names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Prunable",
    "PyTree",
    "as_predicate",
    "check_broadcastable",
    "check_same_structure",
    "default_prunable",
    "named_leaves",
    "path_names",
    "path_str",
    "prunable_tree",
]

PyTree: TypeAlias = Any
Path: TypeAlias = tuple[Any, ...]

# A prunable-leaf filter: ``None`` (default: float arrays with ndim >= 2), a
# predicate ``f(path_str, leaf) -> bool``, a regular expression matched with
# ``re.search`` against the path string, or a sequence of such expressions.
Prunable: TypeAlias = Callable[[str, Any], bool] | str | Sequence[str] | None


def path_str(path: Path) -> str:
    """Return the ``/``-joined name of a key path, without NNX's trailing ``value``."""
    keys = list(path)
    if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
        keys = keys[:-1]
    parts = []
    for k in keys:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(str(k.name))
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            parts.append(str(k.key))
        else:
            parts.append(str(k))
    return "/".join(parts)


def named_leaves(tree: PyTree) -> list[tuple[str, Any]]:
    """``[(path_str, leaf), ...]`` in ``jax.tree.leaves`` order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_str(p), leaf) for p, leaf in flat]


def path_names(tree: PyTree) -> PyTree:
    """A pytree like ``tree`` whose leaves are their own path strings."""
    return jax.tree_util.tree_map_with_path(lambda p, _: path_str(p), tree)


def default_prunable(path: str, leaf: Any) -> bool:
    """Default filter: float weight matrices and conv kernels, not biases, norms or counters.

    A leaf is prunable when it has ``ndim >= 2`` and a floating dtype (``float32``,
    ``bfloat16``, ``float8_*``, ...). Integer and ``bool`` leaves (step counters, index
    tables, flags) and complex leaves are not: they have no magnitude to rank, and their
    all-zero scores would otherwise be pruned first by a global selection. Pass
    ``prunable=`` (a regex or a predicate) to prune such a leaf on purpose.

    Example:
      >>> import numpy as np
      >>> default_prunable("w", np.ones((2, 3), np.float32)), default_prunable("b", np.ones(3))
      (True, False)
      >>> default_prunable("table", np.ones((2, 3), np.int32))
      False
    """
    del path
    if np.ndim(leaf) < 2:
        return False
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        dtype = np.asarray(leaf).dtype
    return bool(jnp.issubdtype(dtype, jnp.floating))


def as_predicate(prunable: Prunable) -> Callable[[str, Any], bool]:
    """Turn any :data:`Prunable` spec into a predicate ``f(path_str, leaf) -> bool``."""
    if prunable is None:
        return default_prunable
    if isinstance(prunable, str):
        pattern = re.compile(prunable)
        return lambda path, leaf: pattern.search(path) is not None
    if callable(prunable):
        return prunable
    if isinstance(prunable, Sequence):
        patterns = []
        for i, p in enumerate(prunable):
            if not isinstance(p, str):
                raise TypeError(f"prunable[{i}] must be a regular expression string, got {p!r}")
            patterns.append(re.compile(p))
        return lambda path, leaf: any(q.search(path) for q in patterns)
    raise TypeError(
        f"prunable must be None, a predicate, a regex string or a sequence of them; got {prunable!r}"
    )


def prunable_tree(params: PyTree, prunable: Prunable = None) -> PyTree:
    """A pytree like ``params`` of Python bools: which leaves may be pruned.

    Raises:
      ValueError: if a path pattern was given and matches no leaf (a typo in a
        layer name must not silently prune nothing).
    """
    pred = as_predicate(prunable)
    tree = jax.tree_util.tree_map_with_path(lambda p, x: bool(pred(path_str(p), x)), params)
    if isinstance(prunable, (str, Sequence)) and not callable(prunable):
        patterns = [prunable] if isinstance(prunable, str) else list(prunable)
        names = [n for n, _ in named_leaves(params)]
        for pat in patterns:
            if not any(re.search(pat, n) for n in names):
                raise ValueError(
                    f"prunable pattern {pat!r} matches no parameter path; paths are {names}"
                )
    return tree


def check_same_structure(a: PyTree, b: PyTree, name_a: str = "params", name_b: str = "mask") -> None:
    """Raise a ValueError naming the first path where two pytrees differ."""
    ta, tb = jax.tree.structure(a), jax.tree.structure(b)
    if ta == tb:
        return
    na = [n for n, _ in named_leaves(a)]
    nb = [n for n, _ in named_leaves(b)]
    only_a = [n for n in na if n not in set(nb)]
    only_b = [n for n in nb if n not in set(na)]
    if only_a or only_b:
        raise ValueError(
            f"{name_a} and {name_b} have different trees: paths only in {name_a}: {only_a[:5]}, "
            f"paths only in {name_b}: {only_b[:5]}"
        )
    raw_a = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(a)[0]]
    raw_b = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(b)[0]]
    for name, ra, rb in zip(na, raw_a, raw_b, strict=False):
        if ra != rb:
            raise ValueError(
                f"{name_a} and {name_b} differ at {name!r}: {ra} vs {rb} (a leaf wrapped in an "
                f"nnx.Variable on one side and a raw array on the other? Use variable.replace(...) "
                f"to change a State leaf)"
            )
    raise ValueError(
        f"{name_a} and {name_b} have the same paths but different pytree node types: "
        f"{ta} vs {tb}"
    )


def check_broadcastable(name: str, mask_shape: tuple[int, ...], param_shape: tuple[int, ...]) -> None:
    """Raise a ValueError if a mask leaf does not broadcast to its parameter."""
    if len(mask_shape) > len(param_shape) or any(
        m not in (1, p) for m, p in zip(mask_shape[::-1], param_shape[::-1], strict=False)
    ):
        raise ValueError(
            f"mask at {name!r} has shape {mask_shape}, which does not broadcast to the "
            f"parameter's shape {param_shape}"
        )
