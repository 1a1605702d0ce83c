"""``strip``: plain parameters from a pruning training state (TF-MOT's ``strip_pruning``)."""

from __future__ import annotations

from typing import Any

import optax

from sparsejax.masks import apply_mask
from sparsejax.transforms import current_mask
from sparsejax.tree import PyTree

__all__ = ["strip"]


def strip(params_or_state: Any, opt_state: optax.OptState | None = None) -> PyTree:
    """Plain parameters from a training state: the pruning state's mask applied, nothing else.

    A model trained with :func:`sparsejax.pruning`, :func:`sparsejax.keep_sparse` or a
    sparse-training transform keeps its mask in the optimizer state. ``strip`` returns the parameters with every pruned
    entry exactly ``0.0`` (``apply_mask(params, current_mask(opt_state))``, dtypes kept), a
    pytree like the params with no sparsejax object in it, ready to save, deploy or export
    (:func:`~sparsejax.deploy.export`).

    Args:
      params_or_state: the params, or a training state with ``.params`` and
        ``.opt_state`` (:class:`sparsejax.train.TrainState`).
      opt_state: the optimizer state holding one sparsejax state (the one
        :func:`sparsejax.current_mask` finds, anywhere inside ``optax.chain`` etc.); omit
        it when passing a training state.

    Returns:
      The masked params (same tree as the params; an NNX ``State`` stays a ``State``).

    Raises:
      ValueError: no pruning state in ``opt_state``, or more than one (see
        :func:`sparsejax.current_mask`); a mask of another tree.
      TypeError: neither ``opt_state`` nor a state with ``.params`` / ``.opt_state``.

    Example:
      >>> import jax.numpy as jnp, optax, sparsejax as sj
      >>> params = {"w": jnp.array([[1.0, -3.0], [0.5, 2.0]])}
      >>> tx = sj.keep_sparse(optax.sgd(0.1), sj.prune(sj.scores.magnitude(params), 0.5))
      >>> strip(params, tx.init(params))["w"].tolist()
      [[0.0, -3.0], [0.0, 2.0]]
    """
    if opt_state is None:
        if not (hasattr(params_or_state, "params") and hasattr(params_or_state, "opt_state")):
            raise TypeError(
                "strip(params, opt_state) or strip(state) with a state that has .params and "
                f".opt_state; got a {type(params_or_state).__name__} and no opt_state"
            )
        params, opt_state = params_or_state.params, params_or_state.opt_state
    else:
        params = params_or_state
    return apply_mask(params, current_mask(opt_state))
