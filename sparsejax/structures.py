"""Pruning granularities: which entries of a parameter are kept or pruned together.

A *structure* partitions every prunable parameter into **groups** that share one
keep/prune decision and gives the mask-leaf shape of that decision (the broadcasting
convention of :mod:`sparsejax.masks`). Flax layout: Dense kernel ``(in, out)``, Conv
kernel ``(kh, kw, in, out)``.

===================  ===========================  ============================  ==========
structure            groups                       group-score shape             mask leaf
===================  ===========================  ============================  ==========
``Unstructured()``   single entries               ``shape``                     ``shape``
``Neurons()``        output units (last axis)     ``(1, …, 1, out)``            same
``InputChannels()``  input channels (axis -2)     ``(1, …, in, 1)``             same
``Layers()``         the whole leaf               ``()``                        ``()``
``Blocks(r, c)``     ``r × c`` tiles, last 2 axes ``(…, in // r, out // c)``    ``shape``
``NM(n, m)``         entries, at most ``n`` of    ``shape``                     ``shape``
                     every ``m`` along axis -2
===================  ===========================  ============================  ==========

Group scores are reductions of per-entry scores (:func:`reduce_scores`: ``"l1"``,
``"l2"``, ``"mean"``, ``"sum"``); ``Unstructured`` and ``NM`` use the scores as they
are. Everything here is pure, shape-static and works under ``jax.jit``/``jax.vmap``.

References:
  Li et al. "Pruning Filters for Efficient ConvNets", ICLR 2017.
  Molchanov et al. "Importance Estimation for Neural Network Pruning", CVPR 2019.
  Mishra et al. "Accelerating Sparse Deep Neural Networks" (NVIDIA 2:4), 2021.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.tree import Prunable, PyTree, path_str, prunable_tree

__all__ = [
    "NM",
    "REDUCTIONS",
    "Blocks",
    "Filters",
    "InputChannels",
    "Layers",
    "Neurons",
    "Structure",
    "Unstructured",
    "reduce_scores",
]

REDUCTIONS: tuple[str, ...] = ("l1", "l2", "mean", "sum")


def _reducer(reduction: str) -> Callable[..., jax.Array]:
    """``f(x, axis, keepdims) -> float32`` for a reduction name (plus the internal ``"any"``)."""
    if reduction == "l1":
        return lambda x, axis, keepdims: jnp.sum(jnp.abs(x), axis=axis, keepdims=keepdims)
    if reduction == "l2":
        return lambda x, axis, keepdims: jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims))
    if reduction == "mean":
        return lambda x, axis, keepdims: jnp.mean(x, axis=axis, keepdims=keepdims)
    if reduction == "sum":
        return lambda x, axis, keepdims: jnp.sum(x, axis=axis, keepdims=keepdims)
    if reduction == "any":
        return lambda x, axis, keepdims: jnp.any(x, axis=axis, keepdims=keepdims)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _as_float32(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x if x.dtype == jnp.float32 else x.astype(jnp.float32)


def _shape_of(param_shape) -> tuple[int, ...]:
    return tuple(int(d) for d in param_shape)


@dataclasses.dataclass(frozen=True)
class Structure(abc.ABC):
    """Base class of the pruning granularities (frozen, hashable: usable as a static arg).

    Subclasses define :meth:`group_shape`, :meth:`mask_shape`, :meth:`reduce`
    and, when the two shapes differ, :meth:`expand`.
    """

    #: Smallest parameter ``ndim`` the structure applies to.
    min_ndim: ClassVar[int] = 0

    def validate(self, param_shape: tuple[int, ...], path: str = "") -> None:
        """Raise a ``ValueError`` naming ``path`` if the structure does not fit ``param_shape``."""
        shape = _shape_of(param_shape)
        if len(shape) < self.min_ndim:
            raise ValueError(
                f"{self!r} needs parameters with at least {self.min_ndim} dimension(s); the "
                f"parameter at {path!r} has shape {shape}"
            )

    def group_shape(self, param_shape: tuple[int, ...], path: str = "") -> tuple[int, ...]:
        """Shape of the group scores (one entry per group) for a parameter of ``param_shape``."""
        return self.mask_shape(param_shape, path)

    @abc.abstractmethod
    def mask_shape(self, param_shape: tuple[int, ...], path: str = "") -> tuple[int, ...]:
        """Shape of the mask leaf; it broadcasts to ``param_shape``."""

    def num_groups(self, param_shape: tuple[int, ...], path: str = "") -> int:
        """Number of groups (selection units) in a parameter of ``param_shape``."""
        return int(np.prod(self.group_shape(param_shape, path), dtype=np.int64))

    @abc.abstractmethod
    def reduce(self, score: jax.Array, reduction: str = "l1", path: str = "") -> jax.Array:
        """Reduce a full-shape score leaf to float32 group scores of :meth:`group_shape`."""

    def expand(self, group_mask: jax.Array, param_shape: tuple[int, ...]) -> jax.Array:
        """Turn a group-shaped bool array into a mask leaf of :meth:`mask_shape`."""
        del param_shape
        return group_mask

    def _group_any(self, mask: jax.Array, path: str = "") -> jax.Array:
        """``True`` for every group with at least one kept entry (``mask`` has the param's shape)."""
        return self._reduce_with(mask, "any", path)

    @abc.abstractmethod
    def _reduce_with(self, x: jax.Array, reduction: str, path: str) -> jax.Array:
        """Apply ``reduction`` (or the internal ``"any"``) over each group of ``x``."""


@dataclasses.dataclass(frozen=True)
class Unstructured(Structure):
    """Every entry is its own group; mask of the parameter's full shape."""

    def mask_shape(self, param_shape, path=""):
        self.validate(param_shape, path)
        return _shape_of(param_shape)

    def reduce(self, score, reduction="l1", path=""):
        _reducer(reduction)
        return _as_float32(score)

    def _reduce_with(self, x, reduction, path):
        return x


@dataclasses.dataclass(frozen=True)
class Neurons(Structure):
    """Output units (Dense neurons, Conv filters): the last axis; mask ``(1, …, 1, out)``.

    References:
      Li et al. "Pruning Filters for Efficient ConvNets", ICLR 2017.
    """

    min_ndim: ClassVar[int] = 1

    def mask_shape(self, param_shape, path=""):
        self.validate(param_shape, path)
        shape = _shape_of(param_shape)
        return (1,) * (len(shape) - 1) + shape[-1:]

    def reduce(self, score, reduction="l1", path=""):
        self.validate(np.shape(score), path)
        return self._reduce_with(_as_float32(score), reduction, path)

    def _reduce_with(self, x, reduction, path):
        return _reducer(reduction)(x, tuple(range(x.ndim - 1)), True)


#: Alias of :class:`Neurons` for convolution kernels.
Filters = Neurons


@dataclasses.dataclass(frozen=True)
class InputChannels(Structure):
    """Input channels / input features: axis ``-2``; mask ``(1, …, in, 1)``."""

    min_ndim: ClassVar[int] = 2

    def mask_shape(self, param_shape, path=""):
        self.validate(param_shape, path)
        shape = _shape_of(param_shape)
        return (1,) * (len(shape) - 2) + (shape[-2], 1)

    def reduce(self, score, reduction="l1", path=""):
        self.validate(np.shape(score), path)
        return self._reduce_with(_as_float32(score), reduction, path)

    def _reduce_with(self, x, reduction, path):
        axes = (*range(x.ndim - 2), x.ndim - 1)
        return _reducer(reduction)(x, axes, True)


@dataclasses.dataclass(frozen=True)
class Layers(Structure):
    """The whole leaf is one group: scalar mask (``False`` prunes the layer)."""

    def mask_shape(self, param_shape, path=""):
        self.validate(param_shape, path)
        return ()

    def reduce(self, score, reduction="l1", path=""):
        return self._reduce_with(_as_float32(score), reduction, path)

    def _reduce_with(self, x, reduction, path):
        return _reducer(reduction)(x, None, False)


@dataclasses.dataclass(frozen=True)
class Blocks(Structure):
    """``rows × cols`` tiles on the last two axes (for block-sparse kernels).

    Group scores have shape ``(…, in // rows, out // cols)``; the mask leaf has
    the parameter's full shape, constant on every tile.

    Raises:
      ValueError: ``rows``/``cols`` not positive integers, or (at use) a parameter
        whose last two dimensions are not divisible by them.
    """

    rows: int = 1
    cols: int = 1
    min_ndim: ClassVar[int] = 2

    def __post_init__(self):
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Blocks.{name} must be a positive integer, got {v!r}")

    def validate(self, param_shape, path=""):
        super().validate(param_shape, path)
        shape = _shape_of(param_shape)
        if shape[-2] % self.rows or shape[-1] % self.cols:
            raise ValueError(
                f"parameter at {path!r} has shape {shape}, whose last two dimensions are not "
                f"divisible by the block ({self.rows}, {self.cols})"
            )

    def group_shape(self, param_shape, path=""):
        self.validate(param_shape, path)
        shape = _shape_of(param_shape)
        return (*shape[:-2], shape[-2] // self.rows, shape[-1] // self.cols)

    def mask_shape(self, param_shape, path=""):
        self.validate(param_shape, path)
        return _shape_of(param_shape)

    def reduce(self, score, reduction="l1", path=""):
        self.validate(np.shape(score), path)
        return self._reduce_with(_as_float32(score), reduction, path)

    def _reduce_with(self, x, reduction, path):
        *lead, r, c = x.shape
        tiles = x.reshape((*lead, r // self.rows, self.rows, c // self.cols, self.cols))
        return _reducer(reduction)(tiles, (len(lead) + 1, len(lead) + 3), False)

    def expand(self, group_mask, param_shape):
        shape = _shape_of(param_shape)
        *lead, gr, gc = group_mask.shape
        tiled = jnp.broadcast_to(
            group_mask.reshape((*lead, gr, 1, gc, 1)), (*lead, gr, self.rows, gc, self.cols)
        )
        return tiled.reshape(shape)


@dataclasses.dataclass(frozen=True)
class NM(Structure):
    """N:M sparsity along the input axis ``-2``: at most ``n`` of every ``m`` consecutive kept.

    ``NM(2, 4)`` is the 2:4 pattern of NVIDIA sparse tensor cores (Dense kernel
    ``(in, out)``: groups of 4 consecutive input features of each output unit).
    Entries are selected one by one, so the mask has the parameter's full shape
    and scores are used without reduction. See :func:`sparsejax.select.prune`
    for how a sparsity below ``1 - n/m`` gives gradual N:M pruning.

    References:
      Mishra et al. "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378, 2021.
      Zhou et al. "Learning N:M Fine-grained Structured Sparse Neural Networks
      From Scratch", ICLR 2021.

    Raises:
      ValueError: unless ``1 <= n <= m``, or (at use) when axis -2 of a
        parameter is not divisible by ``m``.
    """

    n: int = 2
    m: int = 4
    min_ndim: ClassVar[int] = 2

    def __post_init__(self):
        for name in ("n", "m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"NM.{name} must be an integer, got {v!r}")
        if not 1 <= self.n <= self.m:
            raise ValueError(f"NM needs 1 <= n <= m, got n={self.n!r}, m={self.m!r}")

    @property
    def max_sparsity(self) -> float:
        """``1 - n/m``: the sparsity of the full N:M pattern."""
        return 1.0 - self.n / self.m

    def validate(self, param_shape, path=""):
        super().validate(param_shape, path)
        shape = _shape_of(param_shape)
        if shape[-2] % self.m:
            raise ValueError(
                f"{self.n}:{self.m} sparsity groups axis -2 of the parameter at {path!r} "
                f"(shape {shape}) in runs of m={self.m}, but that dimension is {shape[-2]}, "
                f"not divisible by {self.m}"
            )

    def mask_shape(self, param_shape, path=""):
        self.validate(param_shape, path)
        return _shape_of(param_shape)

    def reduce(self, score, reduction="l1", path=""):
        _reducer(reduction)
        self.validate(np.shape(score), path)
        return _as_float32(score)

    def _reduce_with(self, x, reduction, path):
        return x


def reduce_scores(
    scores: PyTree,
    structure: Structure,
    reduction: str = "l1",
    prunable: Prunable = None,
) -> PyTree:
    """Reduce per-entry scores to per-group scores (pure; works under ``jit``).

    Args:
      scores: pytree mirroring the params; each prunable leaf has the param's
        full shape.
      structure: the granularity, e.g. ``Neurons()`` or ``Blocks(4, 4)``.
      reduction: ``"l1"`` (Σ|s|, Li et al. 2017), ``"l2"`` (√Σs²), ``"mean"``
        or ``"sum"`` (Σs; group Taylor of Molchanov et al. 2019 when ``s`` is a
        per-weight Taylor score). Ignored by ``Unstructured`` and ``NM``, which
        select single entries and use the scores as they are (signed scores such
        as movement keep their sign).
      prunable: which leaves are reduced (see :data:`sparsejax.tree.Prunable`);
        the others are returned unchanged.

    Returns:
      A pytree like ``scores``: prunable leaves become float32 arrays of
      ``structure.group_shape(leaf.shape)``.

    Raises:
      ValueError: unknown reduction, or a structure that does not fit a leaf
        (naming the leaf's path and shape).

    Example:
      >>> w = {"kernel": jnp.array([[1.0, -2.0], [3.0, 0.5]])}
      >>> reduce_scores(w, Neurons(), "l1")["kernel"]
      Array([[4. , 2.5]], dtype=float32)
    """
    if not isinstance(structure, Structure):
        raise TypeError(f"structure must be a sparsejax Structure, got {structure!r}")
    _reducer(reduction)
    which = prunable_tree(scores, prunable)

    def one(path, s, w):
        if not w:
            return s
        return structure.reduce(s, reduction, path_str(path))

    return jax.tree_util.tree_map_with_path(one, scores, which)
