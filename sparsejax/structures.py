"""Pruning granularities: which entries of a parameter are kept or pruned together.

A *structure* partitions every prunable parameter into **groups** that share one
keep/prune decision and gives the mask-leaf shape of that decision (the broadcasting
convention of :mod:`sparsejax.masks`). Structures that depend on the weight layout take
the axis they act on (``axis=``, ``axes=``) or a ``layout`` preset (:data:`LAYOUTS`):
``"flax"`` (default: Dense ``(in, out)``, Conv ``(kh, kw, in, out)``) or ``"equinox"`` /
``"torch"`` (Linear ``(out, in)``, Conv ``(out, in, kh, kw)``).

===================  ====================================  ==========================
structure            groups (Flax layout)                  mask leaf (Dense kernel)
===================  ====================================  ==========================
``Unstructured()``   single entries                        ``(in, out)``
``Neurons()``        output units (``axis``, default -1)   ``(1, out)``
``Filters()``        the same, named for conv kernels      ``(1, 1, 1, out)`` (conv)
``InputChannels()``  input channels (``axis``, -2)         ``(in, 1)``
``Layers()``         the whole leaf                        ``()``
``Blocks(r, c)``     ``r × c`` tiles (``axes``, (-2, -1))  ``(in, out)``
``NM(n, m)``         ≤ n of every m along ``axis`` (-2)    ``(in, out)``
===================  ====================================  ==========================

Without an ``axis`` or ``layout``, ``Neurons``, ``InputChannels`` and ``NM`` refuse a
leaf named ``…/weight`` of ndim ≥ 2 (the ``(out, in)`` weights of Equinox and PyTorch).
Group scores are reductions of per-entry scores (:func:`reduce_scores`). Everything here
is pure, shape-static and works under ``jax.jit``/``jax.vmap``.

References:
  Li et al. "Pruning Filters for Efficient ConvNets", ICLR 2017.
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
    "LAYOUTS",
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

#: Layout presets: ``name -> (out_axis, in_axis)`` of a weight. ``"flax"`` (also ``"linen"``,
#: ``"nnx"``, ``"haiku"``, ``"in_out"``): Dense ``(in, out)``, Conv ``(kh, kw, in, out)``;
#: ``"equinox"`` (also ``"torch"``, ``"pytorch"``, ``"out_in"``): Linear ``(out, in)``,
#: Conv ``(out, in, kh, kw)``.
LAYOUTS: dict[str, tuple[int, int]] = {
    **dict.fromkeys(("flax", "linen", "nnx", "haiku", "in_out"), (-1, -2)),
    **dict.fromkeys(("equinox", "torch", "pytorch", "out_in"), (0, 1)),
}


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


def _check_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r}")
    return int(value)


def _layout_axes(owner: str, layout) -> tuple[int, int]:
    if layout not in LAYOUTS:
        raise ValueError(f"{owner}: layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    return LAYOUTS[layout]


def _resolve_axis(obj, name: str, role: int) -> None:
    """Set ``obj.<name>`` from ``obj.layout`` (``role``: 0 = out axis, 1 = in axis)."""
    owner = type(obj).__name__
    value = getattr(obj, name)
    if obj.layout is not None:
        from_layout = _layout_axes(owner, obj.layout)[role]
        if value is not None and value != from_layout:
            raise ValueError(
                f"{owner}: {name}={value!r} contradicts layout={obj.layout!r} "
                f"({name} {from_layout}); give one of them"
            )
        object.__setattr__(obj, name, from_layout)
    elif value is not None:
        object.__setattr__(obj, name, _check_int(owner, name, value))


def _norm_axis(structure, axis: int, shape: tuple[int, ...], path: str) -> int:
    if not -len(shape) <= axis < len(shape):
        raise ValueError(
            f"{structure!r} acts on axis {axis}, but the parameter at {path!r} has shape "
            f"{shape} ({len(shape)} dimension(s))"
        )
    return axis % len(shape)


def _refuse_weight_leaf(structure, axis, default: int, shape: tuple[int, ...], path: str) -> int:
    """The axis to use; a ``…/weight`` leaf with ndim >= 2 and no explicit axis is refused."""
    if axis is not None:
        return axis
    if len(shape) >= 2 and path.rsplit("/", 1)[-1] == "weight":
        cls = type(structure).__name__
        raise ValueError(
            f"{structure!r} has no axis for the parameter at {path!r} (shape {shape}): a leaf "
            f"named 'weight' is usually stored (out, in) (Equinox, PyTorch), while the default "
            f"is the Flax layout (in, out) and would act on the wrong axis. Pass "
            f"{cls}(layout='equinox') for (out, in) weights, or layout='flax' (or axis=) to "
            f"confirm the default"
        )
    return default


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
class _AxisUnits(Structure):
    """Units along one axis: every other axis is reduced; mask ``1`` except on that axis."""

    axis: int | None = None
    layout: str | None = dataclasses.field(default=None, kw_only=True, compare=False, repr=False)

    _ROLE: ClassVar[int] = 0  # 0: the layout's out axis, 1: its in axis
    _DEFAULT: ClassVar[int] = -1

    def __post_init__(self):
        _resolve_axis(self, "axis", self._ROLE)

    def _axis(self, shape: tuple[int, ...], path: str) -> int:
        self.validate(shape, path)
        axis = _refuse_weight_leaf(self, self.axis, self._DEFAULT, shape, path)
        return _norm_axis(self, axis, shape, path)

    def mask_shape(self, param_shape, path=""):
        shape = _shape_of(param_shape)
        axis = self._axis(shape, path)
        return tuple(d if i == axis else 1 for i, d in enumerate(shape))

    def reduce(self, score, reduction="l1", path=""):
        _reducer(reduction)
        self._axis(_shape_of(np.shape(score)), path)
        return self._reduce_with(_as_float32(score), reduction, path)

    def _reduce_with(self, x, reduction, path):
        axis = self._axis(_shape_of(x.shape), path)
        return _reducer(reduction)(x, tuple(i for i in range(x.ndim) if i != axis), True)


@dataclasses.dataclass(frozen=True)
class Neurons(_AxisUnits):
    """Output units (Dense neurons, Conv filters): mask ``1`` except on the output axis.

    Args:
      axis: the output axis; default the last (Flax ``(in, out)``, ``(kh, kw, in, out)``),
        refusing ``…/weight`` leaves of ndim ≥ 2 (see :mod:`sparsejax.structures`).
      layout: a preset of :data:`LAYOUTS` instead of ``axis`` (``"equinox"``: axis 0).

    Example:
      >>> Neurons().mask_shape((784, 300)), Neurons(layout="equinox").mask_shape((300, 784))
      ((1, 300), (300, 1))

    References:
      Li et al. "Pruning Filters for Efficient ConvNets", ICLR 2017.
    """

    min_ndim: ClassVar[int] = 1


@dataclasses.dataclass(frozen=True)
class Filters(Neurons):
    """Convolution filters (output channels): :class:`Neurons` under its conv name.

    Same groups, masks and scores as :class:`Neurons` (``isinstance(Filters(), Neurons)``);
    mask ``(1, 1, 1, out)`` for a Flax conv kernel ``(kh, kw, in, out)``, ``(out, 1, 1, 1)``
    for an Equinox / PyTorch one with ``layout="equinox"``.

    References:
      Li et al. "Pruning Filters for Efficient ConvNets", ICLR 2017.
    """


@dataclasses.dataclass(frozen=True)
class InputChannels(_AxisUnits):
    """Input channels / input features: mask ``1`` except on the input axis.

    Args:
      axis: the input axis; default ``-2`` (Flax), refusing ``…/weight`` leaves.
      layout: a preset of :data:`LAYOUTS` (``"equinox"``: axis 1).
    """

    min_ndim: ClassVar[int] = 2
    _ROLE: ClassVar[int] = 1
    _DEFAULT: ClassVar[int] = -2


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
    """``rows × cols`` tiles on two axes (for block-sparse kernels).

    ``rows`` runs along ``axes[0]`` (default ``-2``, the Flax input axis), ``cols`` along
    ``axes[1]`` (default ``-1``); ``layout="equinox"`` puts them on axes ``(1, 0)``, so a
    block means ``rows`` inputs × ``cols`` outputs in either layout. Group scores have
    shape ``(…other axes, n0 // rows, n1 // cols)``; the mask leaf has the parameter's
    full shape, constant on every tile.

    Raises:
      ValueError: ``rows``/``cols`` not positive integers, equal axes, or (at use) a
        parameter whose two axes are not divisible by them.
    """

    rows: int = 1
    cols: int = 1
    axes: tuple[int, int] | None = None
    layout: str | None = dataclasses.field(default=None, kw_only=True, compare=False, repr=False)
    min_ndim: ClassVar[int] = 2

    def __post_init__(self):
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Blocks.{name} must be a positive integer, got {v!r}")
        axes = self.axes
        if self.layout is not None:
            out_axis, in_axis = _layout_axes("Blocks", self.layout)
            if axes is not None and tuple(axes) != (in_axis, out_axis):
                raise ValueError(
                    f"Blocks: axes={axes!r} contradicts layout={self.layout!r} (axes "
                    f"{(in_axis, out_axis)}); give one of them"
                )
            axes = (in_axis, out_axis)
        if axes is None or tuple(axes) == (-2, -1):
            object.__setattr__(self, "axes", None)  # the default: Blocks(2, 2) == Blocks(2, 2, (-2, -1))
            return
        if len(tuple(axes)) != 2:
            raise ValueError(f"Blocks.axes must be a pair of axes, got {axes!r}")
        pair = tuple(_check_int("Blocks", "axes", a) for a in axes)
        object.__setattr__(self, "axes", pair)

    def _pair(self, shape: tuple[int, ...], path: str) -> tuple[int, int]:
        a, b = (-2, -1) if self.axes is None else self.axes
        a, b = _norm_axis(self, a, shape, path), _norm_axis(self, b, shape, path)
        if a == b:
            raise ValueError(f"{self!r}: both block axes are axis {a} of the parameter at {path!r}")
        return a, b

    def _moved(self, x: jax.Array, path: str) -> jax.Array:
        if self.axes is None:
            return x
        return jnp.moveaxis(x, self._pair(_shape_of(x.shape), path), (-2, -1))

    def validate(self, param_shape, path=""):
        super().validate(param_shape, path)
        shape = _shape_of(param_shape)
        a, b = self._pair(shape, path)
        if shape[a] % self.rows or shape[b] % self.cols:
            where = "last two dimensions" if self.axes is None else f"axes {(a, b)}"
            raise ValueError(
                f"parameter at {path!r} has shape {shape}, whose {where} are not "
                f"divisible by the block ({self.rows}, {self.cols})"
            )

    def group_shape(self, param_shape, path=""):
        self.validate(param_shape, path)
        shape = _shape_of(param_shape)
        a, b = self._pair(shape, path)
        lead = tuple(d for i, d in enumerate(shape) if i not in (a, b))
        return (*lead, shape[a] // self.rows, shape[b] // self.cols)

    def mask_shape(self, param_shape, path=""):
        self.validate(param_shape, path)
        return _shape_of(param_shape)

    def reduce(self, score, reduction="l1", path=""):
        self.validate(np.shape(score), path)
        return self._reduce_with(_as_float32(score), reduction, path)

    def _reduce_with(self, x, reduction, path):
        x = self._moved(x, path)
        *lead, r, c = x.shape
        tiles = x.reshape((*lead, r // self.rows, self.rows, c // self.cols, self.cols))
        return _reducer(reduction)(tiles, (len(lead) + 1, len(lead) + 3), False)

    def expand(self, group_mask, param_shape):
        shape = _shape_of(param_shape)
        a, b = self._pair(shape, "")
        moved = (*(d for i, d in enumerate(shape) if i not in (a, b)), shape[a], shape[b])
        *lead, gr, gc = group_mask.shape
        tiled = jnp.broadcast_to(
            group_mask.reshape((*lead, gr, 1, gc, 1)), (*lead, gr, self.rows, gc, self.cols)
        ).reshape(moved)
        return tiled if self.axes is None else jnp.moveaxis(tiled, (-2, -1), (a, b))


@dataclasses.dataclass(frozen=True)
class NM(Structure):
    """N:M sparsity along the input axis: at most ``n`` of every ``m`` consecutive kept.

    ``NM(2, 4)`` is the 2:4 pattern of NVIDIA sparse tensor cores: runs of 4 consecutive
    input features of each output unit (axis ``-2`` of a Flax kernel ``(in, out)``, axis
    ``1`` of an Equinox / PyTorch weight ``(out, in)`` with ``layout="equinox"``). Entries
    are selected one by one, so the mask has the parameter's full shape and scores are
    used without reduction (group scores are the scores with ``axis`` moved to ``-2``).
    See :func:`sparsejax.select.prune` for how a sparsity below ``1 - n/m`` gives gradual
    N:M pruning.

    References:
      Mishra et al. "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378, 2021.
      Zhou et al. "Learning N:M Fine-grained Structured Sparse Neural Networks
      From Scratch", ICLR 2021.

    Raises:
      ValueError: unless ``1 <= n <= m``, or (at use) when ``axis`` of a parameter is
        not divisible by ``m``.
    """

    n: int = 2
    m: int = 4
    axis: int | None = None
    layout: str | None = dataclasses.field(default=None, kw_only=True, compare=False, repr=False)
    min_ndim: ClassVar[int] = 2

    def __post_init__(self):
        for name in ("n", "m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"NM.{name} must be an integer, got {v!r}")
        if not 1 <= self.n <= self.m:
            raise ValueError(f"NM needs 1 <= n <= m, got n={self.n!r}, m={self.m!r}")
        _resolve_axis(self, "axis", 1)

    @property
    def max_sparsity(self) -> float:
        """``1 - n/m``: the sparsity of the full N:M pattern."""
        return 1.0 - self.n / self.m

    def _axis(self, shape: tuple[int, ...], path: str) -> int:
        axis = _refuse_weight_leaf(self, self.axis, -2, shape, path)
        return _norm_axis(self, axis, shape, path)

    def validate(self, param_shape, path=""):
        super().validate(param_shape, path)
        shape = _shape_of(param_shape)
        axis = self._axis(shape, path)
        if shape[axis] % self.m:
            name = "axis -2" if self.axis is None else f"axis {axis}"
            raise ValueError(
                f"{self.n}:{self.m} sparsity groups {name} of the parameter at {path!r} "
                f"(shape {shape}) in runs of m={self.m}, but that dimension is {shape[axis]}, "
                f"not divisible by {self.m}"
            )

    def group_shape(self, param_shape, path=""):
        self.validate(param_shape, path)
        shape = _shape_of(param_shape)
        axis = self._axis(shape, path)
        rest = [d for i, d in enumerate(shape) if i != axis]
        return (*rest[:-1], shape[axis], rest[-1])

    def mask_shape(self, param_shape, path=""):
        self.validate(param_shape, path)
        return _shape_of(param_shape)

    def reduce(self, score, reduction="l1", path=""):
        _reducer(reduction)
        self.validate(np.shape(score), path)
        return self._reduce_with(_as_float32(score), reduction, path)

    def _reduce_with(self, x, reduction, path):
        if self.axis is None:
            return x
        return jnp.moveaxis(x, self._axis(_shape_of(x.shape), path), -2)

    def expand(self, group_mask, param_shape):
        if self.axis is None:
            return group_mask
        axis = self._axis(_shape_of(param_shape), "")
        return jnp.moveaxis(group_mask, -2, axis)


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
