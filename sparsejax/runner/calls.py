"""Jitted calls for benchmarks: a model state passed as a flat list of arrays."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

__all__ = ["jit_flat_state"]


def jit_flat_state(fn: Callable[..., Any], state: Any) -> tuple[Callable[..., Any], list]:
    """``(g, leaves)`` with ``g(leaves, *args) == fn(state, *args)``, jitted.

    The state (e.g. an ``nnx.State``) is flattened once here; a call of ``g`` then takes
    a plain list of arrays, so timing it measures no host-side pytree flattening.

    Args:
      fn: ``fn(state, *args)``, traceable.
      state: any pytree.

    Returns:
      The jitted ``g`` and ``state``'s leaves (pass them as the first argument).
    """
    leaves, treedef = jax.tree.flatten(state)

    def g(leaves, *args):
        return fn(jax.tree.unflatten(treedef, leaves), *args)

    return jax.jit(g), leaves
