"""What :func:`~sparsejax.shrink.shrink` and the block functions know about each layer type.

Two registries, keyed by ``nnx.Module`` subclass, looked up along the module's MRO (the
most specific registered type wins, so a subclass inherits its base's handler unless it
registers its own; registering a type again replaces its handler):

* :func:`register_resize`: how a layer's size attributes (``in_features``,
  ``num_heads``, ...) follow its arrays after :func:`~sparsejax.shrink.shrink` cut them;
* :func:`register_residual_block`: whether a block can be deleted by
  :func:`~sparsejax.shrink.remove_blocks` (its output can replace its input).

The Flax layers (``nnx.Linear``, ``nnx.Conv``, norms, ...) and the model zoo's layers
are registered the same way a user registers their own layer types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import nnx

__all__ = ["register_residual_block", "register_resize"]

ResizeHandler = Callable[[nnx.Module], None]
ResidualBlockHandler = Callable[[nnx.Module], str | None]

_RESIZE: dict[type, ResizeHandler] = {}
_RESIDUAL_BLOCKS: dict[type, ResidualBlockHandler] = {}


def _check(module_type: Any, handler: Any, what: str) -> None:
    if not isinstance(module_type, type) or not issubclass(module_type, nnx.Module):
        raise TypeError(f"{what}: module_type must be an nnx.Module subclass, got {module_type!r}")
    if not callable(handler):
        raise TypeError(f"{what}: handler must be callable, got {handler!r}")


def _lookup(registry: dict[type, Any], module: Any) -> Any:
    for cls in type(module).__mro__:
        if cls in registry:
            return registry[cls]
    return None


def register_resize(module_type: type[nnx.Module], handler: ResizeHandler) -> None:
    """Register how a layer type's size attributes follow its arrays after shrinking.

    :func:`~sparsejax.shrink.shrink` cuts the arrays of the new model, then calls
    ``handler(module)`` on every module of its graph whose type is ``module_type`` or a
    subclass (the most specific registered type wins). The handler contract:

    * it reads the shapes of the module's (already cut) arrays and sets the attributes
      that state sizes (``in_features``, ``num_features``, ``num_heads``, a tuple of
      widths, ...) so that the module's forward pass and ``repr`` agree with them;
    * it changes attributes in place and returns ``None``; it must not replace or modify
      arrays, and must not rely on the order in which modules are visited;
    * it is called on unchanged modules too, where it must leave the attributes as they
      are.

    Layer types without a handler keep their attributes; if their forward pass reads a
    stale size, :func:`~sparsejax.shrink.shrink` raises (the shrunk model does not run).

    Args:
      module_type: an ``nnx.Module`` subclass.
      handler: ``module -> None``, as above. Replaces a handler registered before.

    Raises:
      TypeError: ``module_type`` is not an ``nnx.Module`` subclass, or ``handler`` is not
        callable.

    Example:
      >>> from flax import nnx
      >>> class Dense(nnx.Module):
      ...     def __init__(self, din, dout, rngs):
      ...         self.dout = dout
      ...         self.w = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (din, dout)))
      ...     def __call__(self, x):
      ...         return (x @ self.w).reshape(-1, self.dout)
      >>> def resize_dense(m):
      ...     m.dout = m.w[...].shape[1]
      >>> register_resize(Dense, resize_dense)
    """
    _check(module_type, handler, "register_resize")
    _RESIZE[module_type] = handler


def register_residual_block(module_type: type[nnx.Module], handler: ResidualBlockHandler) -> None:
    """Register a residual block type for :func:`~sparsejax.shrink.remove_blocks`.

    ``handler(block) -> None | str`` says whether one block of this type (or a
    subclass; the most specific registered type wins) can be removed: ``None`` when its
    output can be its input (same shape) *and* the block computes the identity once every
    one of its parameters is zero (the :func:`~sparsejax.shrink.block_mask` equivalence,
    e.g. ``relu(0 + x) = x`` after a ReLU, or a pre-LN ``x + f(0)`` with zeroed biases);
    otherwise a short reason, used in the error message (``"blocks/3 cannot be removed:
    <reason>"``). The handler must not modify the block.

    Blocks of unregistered types are never removable.

    Args:
      module_type: an ``nnx.Module`` subclass.
      handler: ``block -> None | str``, as above. Replaces a handler registered before.

    Raises:
      TypeError: ``module_type`` is not an ``nnx.Module`` subclass, or ``handler`` is not
        callable.
    """
    _check(module_type, handler, "register_residual_block")
    _RESIDUAL_BLOCKS[module_type] = handler


def resize_attributes(model: nnx.Module) -> None:
    """Make size attributes match the arrays: the registered resize handler of every module."""
    for _, node in nnx.iter_graph(model):
        handler = _lookup(_RESIZE, node)
        if handler is not None:
            handler(node)


def why_not_removable(block: nnx.Module) -> str | None:
    """``None`` if ``block`` is a removable residual block, else the reason (see the registry)."""
    handler = _lookup(_RESIDUAL_BLOCKS, block)
    if handler is None:
        known = ", ".join(t.__name__ for t in _RESIDUAL_BLOCKS)
        return f"{type(block).__name__} is not a known residual block ({known})"
    return handler(block)
