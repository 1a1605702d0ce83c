"""The NNX variable type of a mask kept inside a module: never a parameter, never trained."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class Mask(nnx.Variable[jax.Array]):
    """A bool mask stored in an ``nnx.Module``; not an ``nnx.Param``, so nothing trains it.

    sparsejax hands masks around as plain bool arrays in a tree apart from the
    parameters (``sparsejax.prune``, ``regularizers.groups_to_mask``,
    ``variational.to_plain``). A module that keeps its mask with its weights (a masked
    layer, a model saved with its mask) stores it as a ``Mask``: the filters every NNX
    user writes then do the right thing. ``nnx.split(model, nnx.Param, ...)`` puts it in
    the rest (``TrainState.rest``), ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and
    ``jax.grad`` over ``nnx.Param`` never see it, ``nnx.state(model, Mask)`` collects
    the masks, and ``mask[...]`` reads it (``.value`` is deprecated in Flax). It follows
    the sparsejax mask format: a bool array that broadcasts to its parameter's shape.

    Args:
      value: a bool array (or anything ``numpy.asarray`` makes a bool array of, or a
        ``jax.ShapeDtypeStruct`` of dtype bool under ``nnx.eval_shape``).
      **metadata: passed to ``nnx.Variable``.

    Raises:
      TypeError: a value whose dtype is not bool (a mask is never a float array: use
        ``nnx.Param`` for trainable gates).

    Example:
      >>> import jax.numpy as jnp
      >>> class MaskedLinear(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.kernel = nnx.Param(jnp.ones((3, 2)))
      ...         self.kernel_mask = Mask(jnp.array([[True, False]]))
      ...     def __call__(self, x):
      ...         return x @ jnp.where(self.kernel_mask[...], self.kernel[...], 0.0)
      >>> _, params, rest = nnx.split(MaskedLinear(nnx.Rngs(0)), nnx.Param, ...)
      >>> list(params), list(rest)
      (['kernel'], ['kernel_mask'])
    """

    def __init__(self, value: Any, **metadata: Any):
        if not hasattr(value, "dtype") and not isinstance(
            value, nnx.variablelib.VariableMetadata
        ):
            value = jnp.asarray(value)  # Python bools and lists
        dtype = getattr(value, "dtype", None)
        if dtype is not None and np.dtype(dtype) != np.bool_:
            raise TypeError(f"a Mask holds a bool array, got dtype {np.dtype(dtype)}")
        super().__init__(value, **metadata)
