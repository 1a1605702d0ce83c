"""Gate values: the density check, top-k selection, hard-concrete gates and :class:`Gate`.

Two gate kinds (:data:`GATE_KINDS`) select the active output channels of a layer from its
predictor's logits (see :class:`~sparsejax.dynamic.GatedConv`):

* ``"fbs"`` — Feature Boosting and Suppression (Gao et al. 2019): saliency
  ``g = relu(logit)``; k-winner-take-all keeps the ``k`` largest saliencies and zeroes the
  rest; the kept saliencies *scale* their channels.
* ``"hard_concrete"`` — input-dependent L0 gates (Louizos et al. 2018): the logit is the
  ``log α`` of a hard-concrete variable (:func:`hard_concrete_sample` in training,
  :func:`hard_concrete_mean` at test time), with the paper's constants ``β = 2/3``,
  ``γ = −0.1``, ``ζ = 1.1``.

Ties between equal scores go to the lower channel index, on the masked and the gathered
paths alike.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.models import _shapes

BETA = 2.0 / 3.0
"""Hard-concrete temperature β (Louizos et al. 2018)."""
GAMMA = -0.1
"""Hard-concrete stretch lower end γ (Louizos et al. 2018)."""
ZETA = 1.1
"""Hard-concrete stretch upper end ζ (Louizos et al. 2018)."""
GATE_KINDS = ("fbs", "hard_concrete")
"""The gate kinds: FBS saliency with k-winner-take-all, and input-dependent hard-concrete L0."""
_EPS = 1e-6


def _is_traced(x: Any) -> bool:
    try:
        np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return True
    return False


def check_density(density: Any, name: str = "density") -> Any:
    """Validate a density ``d ∈ (0, 1]`` (fraction of channels kept).

    Args:
      density: a Python/numpy number, a concrete array of any shape (every entry
        checked) or a traced array (not checkable; clipped by :func:`active_count`).
      name: the argument's name for the error message.

    Returns:
      A Python ``float`` for scalar numbers, otherwise the array as ``float32``.

    Raises:
      TypeError: a bool, string or other non-numeric value.
      ValueError: a value ``<= 0``, ``> 1`` or NaN, naming ``name`` and the value.
    """
    if isinstance(density, bool) or isinstance(density, (str, bytes)):
        raise TypeError(f"{name} must be a number in (0, 1], got {density!r}")
    if isinstance(density, numbers.Real):
        d = float(density)
        if not (0.0 < d <= 1.0):  # NaN fails both comparisons
            raise ValueError(f"{name} must be in (0, 1], got {density!r}")
        return d
    if _is_traced(density):
        return jnp.asarray(density, jnp.float32)
    arr = np.asarray(density)
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype} ({density!r})")
    bad = ~((arr > 0) & (arr <= 1))
    if np.any(bad):
        raise ValueError(f"{name} must be in (0, 1], got {arr[bad].reshape(-1)[0]!r} in {density!r}")
    if arr.ndim == 0:
        return float(arr)
    return jnp.asarray(arr, jnp.float32)


def num_active(density: float, channels: int) -> int:
    """Static number of active channels ``k = clip(floor(d·C + ½), 1, C)`` (f32 arithmetic).

    The density is a runtime argument, so one trained model serves every operating point;
    this static ``k`` is what the gathered path compiles for (one compilation per distinct
    ``k``, not per density). Computed in float32 exactly like :func:`active_count`, so the
    gathered and the masked paths always agree. Pure.

    Example:
      >>> num_active(0.2, 25)                           # floor(0.2·25 + ½)
      5

    Raises:
      ValueError: ``density`` outside ``(0, 1]`` or NaN; ``channels < 1``.
    """
    d = check_density(density)
    if not isinstance(d, float):
        raise TypeError(f"num_active needs a Python scalar density, got {density!r}")
    channels = _shapes.positive_int("channels", channels)
    k = math.floor(np.float32(d) * np.float32(channels) + np.float32(0.5))
    return int(min(max(k, 1), channels))


def active_count(density: Any, channels: int) -> jax.Array:
    """:func:`num_active` for traced or per-example densities: ``int32`` of ``density``'s shape."""
    d = jnp.asarray(density, jnp.float32)
    k = jnp.floor(d * jnp.float32(channels) + jnp.float32(0.5))
    return jnp.clip(k, 1, channels).astype(jnp.int32)


def _descending_order(scores: jax.Array) -> jax.Array:
    # 0 - s turns -0.0 into 0.0, so signed zeros never change the order; stable sort: ties
    # go to the lower channel index.
    return jnp.argsort(jnp.float32(0.0) - scores, axis=-1, stable=True)


def topk_mask(scores: jax.Array, k: Any) -> jax.Array:
    """Boolean mask of the ``k`` largest scores along the last axis, exactly ``k`` per row.

    Args:
      scores: ``(..., C)`` float scores.
      k: int, or an int array of shape ``scores.shape[:-1]`` (one ``k`` per row); may be
        traced (selection is by rank from one stable sort, so ``k`` is not static).

    Returns:
      ``bool (..., C)``; ties go to the lower index. Pure; jit/vmap-safe.
    """
    scores = jnp.asarray(scores)
    order = _descending_order(scores)
    rank = jnp.argsort(order, axis=-1)  # inverse permutation: rank of each channel
    k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), scores.shape[:-1])
    return rank < k[..., None]


# --------------------------------------------------------------------------- hard concrete


def hard_concrete_sample(
    log_alpha: jax.Array,
    key: jax.Array,
    *,
    beta: float = BETA,
    gamma: float = GAMMA,
    zeta: float = ZETA,
) -> jax.Array:
    """A hard-concrete sample ``z ∈ [0, 1]`` of ``log_alpha``'s shape (Louizos et al. eq. 10).

    ``u ~ U(ε, 1−ε)``, ``s = sigmoid((log u − log(1−u) + log α)/β)``,
    ``z = clip(s·(ζ − γ) + γ, 0, 1)``. Reparameterized: differentiable in ``log_alpha``.
    Pure given ``key``. Exact zeros and ones occur with positive probability (a "hard"
    gate), trained with the expected-L0 penalty (:func:`expected_l0`).

    References:
      Louizos, Welling & Kingma (2018), Learning Sparse Neural Networks through L0
      Regularization, ICLR (hard concrete, β = 2/3, γ = −0.1, ζ = 1.1).
    """
    log_alpha = jnp.asarray(log_alpha, jnp.float32)
    u = jax.random.uniform(key, log_alpha.shape, jnp.float32, _EPS, 1.0 - _EPS)
    s = jax.nn.sigmoid((jnp.log(u) - jnp.log1p(-u) + log_alpha) / beta)
    return jnp.clip(s * (zeta - gamma) + gamma, 0.0, 1.0)


def hard_concrete_mean(
    log_alpha: jax.Array, *, gamma: float = GAMMA, zeta: float = ZETA
) -> jax.Array:
    """Test-time gate ``clip(sigmoid(log α)·(ζ − γ) + γ, 0, 1)`` (Louizos et al. §3). Pure."""
    return jnp.clip(jax.nn.sigmoid(jnp.asarray(log_alpha)) * (zeta - gamma) + gamma, 0.0, 1.0)


def expected_l0(
    log_alpha: jax.Array, *, beta: float = BETA, gamma: float = GAMMA, zeta: float = ZETA
) -> jax.Array:
    """``P(z ≠ 0) = sigmoid(log α − β·log(−γ/ζ))`` per gate (Louizos et al. eq. 12). Pure."""
    return jax.nn.sigmoid(jnp.asarray(log_alpha) - beta * math.log(-gamma / zeta))


class Gate(NamedTuple):
    """The gate of one layer for a batch.

    Attributes:
      values: ``(batch, C)`` multipliers of the output channels; exactly ``0.0`` for a
        skipped channel (FBS: the winners' saliencies; hard concrete: ``z``).
      logits: ``(batch, C)`` raw predictor outputs (FBS: pre-ReLU saliency; hard concrete:
        ``log α``), used by :func:`gate_penalty`.
    """

    values: jax.Array
    logits: jax.Array


def _check_kind(gate: str) -> str:
    if gate not in GATE_KINDS:
        raise ValueError(f"gate must be one of {GATE_KINDS}, got {gate!r}")
    return gate


def _select(kind: str, logits: jax.Array, density: Any, key: jax.Array | None) -> jax.Array:
    """Gate values ``(batch, C)`` of ``kind`` at ``density`` (masked path).

    ``k = active_count(density, C)`` per example; FBS keeps the ``k`` largest saliencies
    ``relu(logits)``. Hard concrete takes the top ``k`` of ``log α`` and multiplies by ``z``
    (sampled with ``key``, else the test-time mean): a gate that is exactly 0 skips its
    channel even inside the top ``k``, so at ``density=1`` the gates are the plain,
    naturally sparse L0 gates.
    """
    channels = logits.shape[-1]
    k = active_count(density, channels)
    if k.ndim == 1:
        if k.shape[0] != logits.shape[0]:
            raise ValueError(
                f"a per-example density needs shape (batch,) = ({logits.shape[0]},), "
                f"got {k.shape}"
            )
    elif k.ndim != 0:
        raise ValueError(f"density must be a scalar or a (batch,) array, got shape {k.shape}")
    if kind == "fbs":
        saliency = jax.nn.relu(logits)
        return jnp.where(topk_mask(saliency, k), saliency, 0.0)
    z = hard_concrete_sample(logits, key) if key is not None else hard_concrete_mean(logits)
    return jnp.where(topk_mask(logits, k), z, 0.0)


def _gathered_select(kind: str, logits: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Static-k selection for the gathered path: sorted indices ``(k,)`` and their gates.

    The same channels as :func:`topk_mask` (ties to the lower index, ``-0.0 == 0.0``) from
    one ``lax.top_k`` and the sort of its ``k`` indices instead of a full stable sort, which
    is cheaper at batch 1 (timings: docs/results.md).
    """
    scores = jax.nn.relu(logits) if kind == "fbs" else logits
    _, top = jax.lax.top_k(jnp.where(scores == 0, jnp.zeros_like(scores), scores), k)
    idx = jnp.sort(top, axis=-1)
    values = jnp.take(scores if kind == "fbs" else hard_concrete_mean(logits), idx, axis=-1)
    return idx, values


