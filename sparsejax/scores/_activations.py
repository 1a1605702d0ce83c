"""Activation statistics per channel, and placing per-unit scores into a scores pytree.

:func:`activation_mean` (mean ``|a|``) and :func:`apoz` / :func:`apoz_importance`
(Average Percentage of Zeros, Hu et al. 2016) reduce recorded activations to one
number per channel; :func:`neuron_scores` puts such vectors on the kernels they
belong to, in the ``Neurons`` mask shape, for ``prune(..., structure=Neurons())``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.scores._leaves import _SCORE_DTYPE, _display
from sparsejax.tree import Prunable, PyTree, named_leaves, path_str, prunable_tree


def _per_channel(
    acts: PyTree, axis: int, fn: Callable[[jax.Array, tuple[int, ...]], jax.Array]
) -> PyTree:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int, got {axis!r}")

    def leaf(path, a):
        name = _display(path_str(path))
        a = jnp.asarray(a)
        if jnp.issubdtype(a.dtype, jnp.complexfloating):
            raise TypeError(f"activations at {name!r} have complex dtype {a.dtype}")
        if not -a.ndim <= axis < a.ndim:
            raise ValueError(
                f"axis {axis} is out of range for the activations at {name!r} of shape {a.shape}"
            )
        if a.size == 0:
            raise ValueError(f"activations at {name!r} are empty (shape {a.shape})")
        ax = axis % a.ndim
        others = tuple(i for i in range(a.ndim) if i != ax)
        return fn(a.astype(_SCORE_DTYPE), others)

    return jax.tree_util.tree_map_with_path(leaf, acts)


def activation_mean(acts: PyTree, axis: int = -1) -> PyTree:
    """Mean absolute activation per channel.

    Args:
      acts: one array or a pytree of arrays (e.g. ``{"layer1": a1, ...}``)
        recorded by the caller, e.g. ``(batch, features)`` after a Dense layer
        or ``(batch, h, w, channels)`` (NHWC) after a conv.
      axis: the channel axis (default last); all other axes are averaged.

    Returns:
      The same pytree with each array replaced by a float32 vector of shape
      ``(channels,)``: ``mean |a|`` over every other axis. Pure. Higher means
      more important, as :func:`sparsejax.prune` expects.

    Raises:
      ValueError: ``axis`` out of range or an empty array (path and shape named).

    Example:
      >>> activation_mean(jnp.array([[1.0, -2.0], [3.0, 0.0]]))
      Array([2., 1.], dtype=float32)
    """
    return _per_channel(acts, axis, lambda a, ax: jnp.mean(jnp.abs(a), axis=ax))


def apoz(acts: PyTree, axis: int = -1, *, threshold: float = 0.0) -> PyTree:
    """Average Percentage of Zeros (APoZ) per channel.

    ``APoZ_c = (1/(N·M)) Σ_k Σ_j [a_{k,j,c} = 0]`` over ``N`` examples and
    ``M`` positions (all axes but ``axis``), usually of post-ReLU activations.
    A HIGH APoZ marks a channel as unimportant, so this is **not** a score for
    :func:`sparsejax.prune` (which removes the lowest scores): use
    :func:`apoz_importance` (``1 − APoZ``) for that.

    Args:
      acts: one array or a pytree of arrays recorded by the caller.
      axis: the channel axis (default last).
      threshold: count ``|a| ≤ threshold`` as zero (``0.0``: exact zeros, as in
        the paper).

    Returns:
      The same pytree with float32 vectors of shape ``(channels,)`` in
      ``[0, 1]``. Pure.

    References:
      Hu, Peng, Tai & Tang, "Network Trimming: A Data-Driven Neuron Pruning
      Approach towards Efficient Deep Architectures", 2016 (eq. 1).
    """
    return _per_channel(
        acts,
        axis,
        lambda a, ax: jnp.mean((jnp.abs(a) <= threshold).astype(_SCORE_DTYPE), axis=ax),
    )


def apoz_importance(acts: PyTree, axis: int = -1, *, threshold: float = 0.0) -> PyTree:
    """``1 − APoZ`` per channel: the fraction of non-zero activations.

    The importance form of :func:`apoz` (higher = more important), ready for
    :func:`neuron_scores` and ``prune(..., structure=Neurons())``, which
    removes the channels that are most often zero. Same arguments and shapes
    as :func:`apoz`. Pure.

    References:
      Hu et al., "Network Trimming", 2016.
    """
    return jax.tree.map(lambda z: 1.0 - z, apoz(acts, axis, threshold=threshold))


def neuron_scores(
    params: PyTree,
    scores_by_path: Mapping[str, Any],
    prunable: Prunable = None,
) -> PyTree:
    """Place per-output-unit scores into a scores pytree for ``Neurons()`` pruning.

    Activation statistics (:func:`activation_mean`, :func:`apoz_importance`)
    give one number per output unit (neuron, channel, filter). This builds the
    pytree :func:`sparsejax.prune` expects: the kernel at each named path gets
    its vector reshaped to the ``Neurons`` / ``Filters`` mask shape
    ``(1, …, 1, out)`` (Dense ``(1, out)``, Conv ``(1, 1, 1, out)``); every
    other leaf gets a scalar ``0.0``. Pass the same ``prunable`` to ``prune``
    (with ``prunable=None`` here, prune exactly the named paths, e.g.
    ``prunable=[re.escape(p) + "$" for p in scores_by_path]``).

    Args:
      params: the parameter pytree (only paths and shapes are read).
      scores_by_path: ``{path_str: scores}`` with ``scores`` of shape
        ``(out,)`` or ``(1, …, 1, out)``, ``out = kernel.shape[-1]``.
      prunable: optional :data:`~sparsejax.tree.Prunable` spec; when given,
        every prunable leaf must have scores and every named path must be
        prunable (so no prunable kernel is silently scored 0).

    Returns:
      A float32 pytree mirroring ``params``. Pure.

    Raises:
      ValueError: a path that is not in ``params``; a vector whose shape does
        not match the kernel's output units; a scalar parameter; a prunable
        leaf without scores or a named leaf that is not prunable (paths and
        shapes named).

    Example:
      >>> params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}}
      >>> s = neuron_scores(params, {"dense/kernel": jnp.array([0.1, 0.5, 0.2])})
      >>> s["dense"]["kernel"].shape, s["dense"]["bias"].shape
      ((1, 3), ())
    """
    named = named_leaves(params)
    names = [n for n, _ in named]
    unknown = [p for p in scores_by_path if p not in set(names)]
    if unknown:
        raise ValueError(
            f"unit scores given for {unknown[0]!r}, which is not a parameter path; "
            f"the paths are {names}"
        )
    if prunable is not None:
        which = dict(zip(names, jax.tree.leaves(prunable_tree(params, prunable))))
        missing = [n for n in names if which[n] and n not in scores_by_path]
        if missing:
            raise ValueError(
                f"prunable parameter {missing[0]!r} (shape {np.shape(dict(named)[missing[0]])}) "
                f"has no unit scores; scores were given for {sorted(scores_by_path)}"
            )
        excluded = [p for p in scores_by_path if not which[p]]
        if excluded:
            raise ValueError(
                f"unit scores given for {excluded[0]!r}, which the prunable filter "
                f"{prunable!r} excludes"
            )

    def leaf(path, p):
        name = path_str(path)
        if name not in scores_by_path:
            return jnp.zeros((), _SCORE_DTYPE)
        shape = tuple(np.shape(p))
        if not shape:
            raise ValueError(f"parameter {name!r} is a scalar (shape ()); it has no output units")
        out = shape[-1]
        unit_shape = (1,) * (len(shape) - 1) + (out,)
        s = jnp.asarray(scores_by_path[name])
        if s.shape not in {(out,), unit_shape}:
            raise ValueError(
                f"unit scores for {name!r} have shape {s.shape}, but the parameter has shape "
                f"{shape} with {out} output units: expected shape ({out},) or {unit_shape}"
            )
        if jnp.issubdtype(s.dtype, jnp.complexfloating):
            raise TypeError(f"unit scores for {name!r} have complex dtype {s.dtype}")
        return s.astype(_SCORE_DTYPE).reshape(unit_shape)

    return jax.tree_util.tree_map_with_path(leaf, params)
