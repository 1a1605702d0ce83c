"""The cost of a gated model: :class:`LayerCost`, active channels, MACs, gate penalties.

Compute is counted as multiply-accumulates (MACs) per example that an ideal gathered
kernel performs: ``Σ macs_per_pair · a_in · a_out`` over the layers, with ``a`` the
active channels of a layer and of its input, plus each gated layer's predictor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from sparsejax.dynamic._gates import Gate, _check_kind, expected_l0


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """How the MACs of one layer depend on the active channels (per example).

    ``MACs = macs_per_pair · a_in · a_out`` where ``a_in`` is the number of active channels
    of ``source`` (``in_channels`` when ``source`` is None) and ``a_out`` the active
    channels of this layer (``out_channels`` when not ``gated``). A gated layer's predictor
    adds ``a_in · out_channels`` MACs.

    Attributes:
      name: the layer's attribute name (its parameter path prefix).
      macs_per_pair: output positions × kernel window (conv) or input positions (dense).
      source: the gated layer whose channels feed this one, or None.
      in_channels: input channels.
      out_channels: output channels.
      gated: whether this layer's outputs are gated.
    """

    name: str
    macs_per_pair: int
    source: str | None
    in_channels: int
    out_channels: int
    gated: bool


def dense_flops(costs: Sequence[LayerCost]) -> int:
    """Dense MACs per example (no predictor): ``Σ macs_per_pair · C_in · C_out``.

    Equals :func:`sparsejax.metrics.flops` of the matching zoo model on one example.
    """
    return sum(c.macs_per_pair * c.in_channels * c.out_channels for c in costs)


def effective_flops(
    costs: Sequence[LayerCost],
    counts: Mapping[str, Any],
    *,
    include_predictor: bool = True,
) -> jax.Array:
    """Multiply-accumulates per example given the active channels of each gated layer.

    Args:
      costs: the model's ``costs`` table (:class:`LayerCost`).
      counts: ``{layer: int (batch,) or scalar}`` active output channels of every gated
        layer (:func:`active_counts`, or the kept filters of a statically pruned model).
      include_predictor: add the predictors' MACs (``a_in · C_out`` per gated layer);
        ``False`` for a statically pruned model, which has no predictor.

    Returns:
      ``float32`` MACs, of the broadcast shape of the counts (``(batch,)``). Pure.

    Raises:
      ValueError: a gated layer missing from ``counts``.
    """
    total = jnp.zeros((), jnp.float32)
    for c in costs:
        if c.gated and c.name not in counts:
            raise ValueError(f"counts has no entry for gated layer {c.name!r}; got {list(counts)}")
        a_in = (
            jnp.asarray(counts[c.source], jnp.float32)
            if c.source is not None
            else jnp.float32(c.in_channels)
        )
        a_out = jnp.asarray(counts[c.name], jnp.float32) if c.gated else jnp.float32(c.out_channels)
        total = total + c.macs_per_pair * a_in * a_out
        if c.gated and include_predictor:
            total = total + a_in * c.out_channels
    return total


def active_counts(gates: Mapping[str, Gate]) -> dict[str, jax.Array]:
    """``{layer: int32 (batch,)}`` number of nonzero gates (channels computed) per example."""
    return {name: jnp.sum(g.values != 0, axis=-1, dtype=jnp.int32) for name, g in gates.items()}


def active_fraction(gates: Mapping[str, Gate]) -> dict[str, jax.Array]:
    """``{layer: float32 (batch,)}`` fraction of channels computed per example."""
    return {
        name: jnp.mean((g.values != 0).astype(jnp.float32), axis=-1) for name, g in gates.items()
    }


def gate_penalty(gates: Mapping[str, Gate], kind: str) -> jax.Array:
    """Sparsity regularizer averaged over every gate of every example and layer (f32[]).

    ``"fbs"``: ``mean(relu(logits))``, the L1 norm of the saliency (Gao et al. 2019).
    ``"hard_concrete"``: ``mean(P(z ≠ 0))`` (:func:`expected_l0`; Louizos et al. eq. 12).
    Multiply by the regularization strength λ. Pure.
    """
    _check_kind(kind)
    parts = []
    for g in gates.values():
        parts.append(jnp.mean(jax.nn.relu(g.logits) if kind == "fbs" else expected_l0(g.logits)))
    return jnp.mean(jnp.stack(parts))

