"""Compiling a score's computation as one program, also when it is called eagerly.

:func:`_compiled` runs an estimator (SNIP, the Hessian and Fisher diagonals) as one
cached computation; :func:`_jitted_partial` returns ``jit(partial(impl, *static))``,
cached on the static arguments (the unit criteria: mean group Taylor, the oracle).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from sparsejax.tree import PyTree


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.core.Tracer, np.ndarray, np.generic))


class _Dynamic:
    """Placeholder for an array leaf in the static layout of :func:`_compiled`."""

    def __repr__(self) -> str:
        return "<dynamic>"


_DYNAMIC = _Dynamic()


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _run_jitted(impl, static_args, layout, arrays):
    treedef, slots = layout
    it = iter(arrays)
    leaves = [next(it) if s is _DYNAMIC else s for s in slots]
    return impl(*static_args, *treedef.unflatten(leaves))


def _compiled(impl: Callable[..., PyTree], static_args: tuple, *args: PyTree) -> PyTree:
    """``impl(*static_args, *args)`` run as ONE compiled computation.

    Derivative-based estimators are dozens of small ops plus ``vmap``/``scan``;
    run eagerly, each op would dispatch and compile on its own. Here they are
    compiled together; the compilation is cached on ``impl``, ``static_args``
    (e.g. the user's ``loss_fn``, ``num_samples``) and the pytree layout, so
    repeated eager calls with the same loss function and shapes compile once.
    Under an outer ``jit`` this is simply inlined. Array leaves of ``args``
    are traced; other leaves (Python numbers, strings, ...) stay static, so a
    ``loss_fn`` may use them for shapes or control flow. If a static part is
    unhashable, ``impl`` runs uncompiled (same result, slower).
    """
    leaves, treedef = jax.tree.flatten(args)
    slots = tuple(_DYNAMIC if _is_array(x) else x for x in leaves)
    try:
        hash((static_args, treedef, slots))
    except TypeError:
        return impl(*static_args, *args)
    return _run_jitted(impl, static_args, (treedef, slots), [x for x in leaves if _is_array(x)])


class _ListKey(tuple):
    """A list static argument, frozen to be hashable (turned back into a list for the call)."""


def _static_key(x: Any) -> Any:
    return _ListKey(x) if isinstance(x, list) else x


@functools.lru_cache(maxsize=64)
def _cached_jitted_partial(impl: Callable[..., Any], *static: Any) -> Callable[..., Any]:
    args = [list(s) if isinstance(s, _ListKey) else s for s in static]
    return jax.jit(functools.partial(impl, *args))


def _jitted_partial(impl: Callable[..., Any], *static: Any) -> Callable[..., Any]:
    """``jit(partial(impl, *static))``, cached on the static arguments when they are hashable."""
    key = tuple(_static_key(s) for s in static)
    try:
        hash(key)
    except TypeError:
        return jax.jit(functools.partial(impl, *static))
    return _cached_jitted_partial(impl, *key)
