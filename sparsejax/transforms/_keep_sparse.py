"""``keep_sparse``: a fixed mask inside any optax optimizer (pruned weights stay ``0.0``)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparsejax.transforms._mask_leaves import (
    MaskLeaves,
    MaskOrFn,
    _check_update_trees,
    _pin_pruned,
    _require_params,
    _resolve_mask,
    _zero_pruned,
)
from sparsejax.tree import PyTree


class KeepSparseState(NamedTuple):
    """State of :func:`keep_sparse`.

    Attributes:
      mask_leaves: the fixed mask, stored flat (:class:`MaskLeaves`); the
        ``mask`` property gives it as a pytree mirroring the params with
        ``bool`` leaves broadcasting to them (rank 0 or the param's rank).
      inner_state: the state of the wrapped optimizer.
    """

    mask_leaves: MaskLeaves
    inner_state: optax.OptState

    @property
    def mask(self) -> PyTree:
        """The mask, mirroring the params."""
        return self.mask_leaves.tree()

    def with_mask(self, mask: PyTree) -> KeepSparseState:
        """This state with ``mask`` (a mask mirroring the params) swapped in, unchecked.

        :func:`sparsejax.transforms.with_mask` does the same on a whole
        optimizer state, with checks.
        """
        return self._replace(mask_leaves=MaskLeaves.of(mask))


def _all_keep(params: PyTree) -> PyTree:
    """The scalar ``True`` at every leaf: the mask that prunes nothing."""
    return jax.tree.map(lambda p: jnp.ones((), bool), params)


def keep_sparse(
    inner: optax.GradientTransformation, mask: MaskOrFn | None = None
) -> optax.GradientTransformationExtraArgs:
    """Wrap any optax optimizer so that pruned weights stay exactly ``0.0`` forever.

    ``update`` zeroes the incoming gradients where ``mask`` is ``False``, runs
    ``inner`` and returns ``where(mask, u, -p)``: after ``optax.apply_updates``
    the pruned weights are exactly ``0.0`` at every step, whatever state
    ``inner`` carries (momentum built up before pruning, Adam moments,
    decoupled weight decay, injected hyperparameters). Weights that are not
    zero when training starts are zeroed by the first update. The inner state
    at pruned positions is left as ``inner`` computes it; it never reaches the
    params.

    **Non-finite values.** A NaN or ±inf gradient at a pruned position is
    zeroed before ``inner`` sees it. A NaN or ±inf entry of ``inner``'s update
    at a kept position is dropped (that weight keeps its value for the step),
    so no non-finite value ever enters a weight: pruned weights stay exactly
    ``0.0`` and a later mask is chosen from real values. ``inner``'s own state
    keeps what it computed (Adam moments fed a NaN gradient stay NaN, which
    freezes those weights); to skip whole steps with non-finite gradients and
    count them, wrap the inner optimizer:
    ``keep_sparse(optax.apply_if_finite(optax.adamw(1e-3), 5), mask)``.

    **Nothing pruned.** With an all-``True`` mask ``update`` returns exactly
    ``inner``'s updates and state, bit for bit, when the operations run one by
    one (eagerly). Compiled (``jax.jit``), XLA fuses the masking selects with
    the surrounding arithmetic; it contracts a multiply followed by an add into
    one fused multiply-add (one rounding) only where no select sits between
    them, so a jitted step of the bare ``inner`` can differ from this one in
    the last bit of the weights. Runs that must match bit for bit (a dense
    baseline and a run pruned at 0 %) should both use ``keep_sparse``, the
    dense one with an all-``True`` mask of the same leaf shapes: they then run
    the same program.

    ``update`` reads the mask from the state only, so one optimizer serves
    every mask: build it without a mask (``keep_sparse(inner)``, all-keep) and
    give each run its own with :func:`sparsejax.transforms.with_mask` or
    ``TrainState.with_mask`` (also under ``jax.vmap`` over a seed axis); a
    jitted step then compiles once for all of them.

    Args:
      inner: the optimizer to wrap, e.g. ``optax.adamw(1e-3)``.
      mask: a mask pytree mirroring the params (``bool`` leaves broadcasting
        to them, ``True`` = keep), or a function ``params -> mask`` called once
        by ``init`` (like ``optax.masked``), e.g.
        ``lambda p: sparsejax.prune(sparsejax.scores.magnitude(p), 0.9)``.
        ``None`` (default): keep everything (a scalar ``True`` per leaf) until
        a mask is swapped in.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`KeepSparseState`. ``update`` requires ``params`` and passes extra
      keyword arguments on to ``inner``. Pure; jit-, vmap- and shard-safe.

    Raises:
      ValueError: at ``init`` if the mask does not mirror the params (naming the
        path) or a leaf is not a broadcastable ``bool`` array; at ``update`` if
        ``params`` is ``None`` or the trees differ.

    Example:
      >>> params = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "b": jnp.zeros(2)}
      >>> mask = {"w": jnp.array([[True, False], [False, True]]), "b": jnp.array(True)}
      >>> tx = keep_sparse(optax.sgd(0.5, momentum=0.9), mask)
      >>> state = tx.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = tx.update(grads, state, params)
      >>> optax.apply_updates(params, updates)["w"]
      Array([[0.5, 0. ],
             [0. , 3.5]], dtype=float32)
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        initial = _all_keep(params) if mask is None else _resolve_mask(params, mask)
        return KeepSparseState(mask_leaves=MaskLeaves.of(initial), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        _require_params("keep_sparse", params)
        mask_tree = state.mask
        _check_update_trees("keep_sparse", updates, params, mask_tree)
        grads = _zero_pruned(updates, mask_tree)
        new_updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
        new_updates = _pin_pruned(new_updates, params, mask_tree)
        return new_updates, KeepSparseState(mask_leaves=state.mask_leaves, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
