"""The KL term of sparse variational dropout: ``log α``, Molchanov's approximation, warm-up."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sparsejax.models import _shapes

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_MIN, LOG_ALPHA_MAX = -8.0, 8.0
_EPS = 1e-8


def log_alpha(theta: jax.Array, log_sigma2: jax.Array) -> jax.Array:
    """``clip(log σ² − log(θ² + 1e-8), −8, 8)``; broadcasts ``log_sigma2`` to ``theta``. Pure.

    Raises:
      ValueError: ``log_sigma2`` of another rank than ``theta``.
    """
    theta, log_sigma2 = jnp.asarray(theta), jnp.asarray(log_sigma2)
    if log_sigma2.ndim != theta.ndim:
        raise ValueError(
            f"log_sigma2 of shape {log_sigma2.shape} must have the rank of theta {theta.shape}"
        )
    la = log_sigma2 - jnp.log(jnp.square(theta) + _EPS)
    return jnp.clip(la, LOG_ALPHA_MIN, LOG_ALPHA_MAX)


def neg_kl_approx(log_alpha: jax.Array) -> jax.Array:
    """Elementwise ``−KL ≈ k₁·σ(k₂ + k₃·log α) − ½·log1p(e^{−log α}) − k₁`` (Molchanov eq. 14).

    ``k₁ = 0.63576``, ``k₂ = 1.87320``, ``k₃ = 1.48695`` (:data:`K1`, :data:`K2`, :data:`K3`).
    ``½·log1p(e^{−log α})`` is computed as ``½·softplus(−log α)`` (stable for any
    ``log α``). Tends to 0 as ``log α → ∞``. Pure; same shape as the input.
    """
    la = jnp.asarray(log_alpha, jnp.float32)
    return K1 * jax.nn.sigmoid(K2 + K3 * la) - 0.5 * jax.nn.softplus(-la) - K1


def kl_divergence(log_alpha: jax.Array) -> jax.Array:
    """``Σ KL(q(w|θ, α) ‖ p(w))`` over all entries: ``−sum(neg_kl_approx(log_alpha))`` (f32[])."""
    return -jnp.sum(neg_kl_approx(log_alpha))


def kl_warmup(steps: int, begin: int = 0) -> optax.Schedule:
    """KL weight β rising linearly from 0 to 1 over ``steps`` steps from ``begin``, then 1.

    The warm-up of Molchanov et al. (2017) (after Sønderby et al. 2016): the
    ELBO starts as the plain likelihood and the prior is switched in gradually.
    An ``optax.linear_schedule``.

    Raises:
      ValueError: ``steps`` not a positive int, or ``begin`` not an int >= 0.
    """
    steps = _shapes.positive_int("steps", steps)
    if isinstance(begin, bool) or not isinstance(begin, int) or begin < 0:
        raise ValueError(f"begin must be an int >= 0, got {begin!r}")
    return optax.linear_schedule(0.0, 1.0, transition_steps=steps, transition_begin=begin)
