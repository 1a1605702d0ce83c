"""Training gated models: a sampled-density forward for the ordinary train step.

:func:`sampled_density_forward` builds the ``forward(model, inputs, key)`` that
:func:`sparsejax.train.make_train_step` takes: the step's key draws the densities and the
gate noise, and the weighted gate penalty is returned as an extra loss term, so gated
models need no train step of their own.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sparsejax.dynamic._cost import gate_penalty
from sparsejax.dynamic._gates import check_density

GatedForward = Callable[[nnx.Module, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def _check_range(min_density: float, max_density: float, penalty: float) -> tuple[float, float]:
    lo = check_density(min_density, "min_density")
    hi = check_density(max_density, "max_density")
    if hi < lo:
        raise ValueError(f"max_density={max_density!r} is below min_density={min_density!r}")
    if isinstance(penalty, bool) or not isinstance(penalty, numbers.Real) or not penalty >= 0:
        raise ValueError(f"penalty must be a number >= 0, got {penalty!r}")
    return lo, hi


def sampled_density_forward(
    *,
    min_density: float = 0.25,
    max_density: float = 1.0,
    penalty: float = 0.0,
    sandwich: bool = True,
) -> GatedForward:
    """A training forward for gated models that samples a density per example.

    Each example runs at its own density ``d ~ U(min_density, max_density)``
    (slimmable-style sampled widths, so one model serves every density in that range);
    with ``sandwich`` (default) examples ``i ≡ 0 (mod 4)`` run at ``min_density`` and
    ``i ≡ 1 (mod 4)`` at ``max_density`` instead, so both ends of the range are trained at
    every step (the sandwich rule of Yu & Huang 2019). Hard-concrete gates are sampled.
    ``key`` is split into the densities' key and the gates' key, so the forward is a pure
    function of ``(model, inputs, key)``.

    Pass it to :func:`sparsejax.train.make_train_step` (``forward=...``), which hands it
    the step's PRNG key and adds the returned term to the objective: loss
    ``= mean(loss_fn) + penalty · gate_penalty``, with the metrics ``loss`` (the
    objective), ``data_loss``, ``penalty`` (the weighted term ``penalty · gate_penalty``)
    and ``accuracy``. Evaluate at a fixed density instead, e.g.
    ``make_eval_step(forward=lambda model, x: model(x, 0.5))``.

    Args:
      min_density: lower end of the sampled densities, in ``(0, 1]``.
      max_density: upper end, in ``[min_density, 1]``.
      penalty: λ of :func:`~sparsejax.dynamic.gate_penalty` (FBS L1 / expected L0), ``>= 0``.
      sandwich: pin a quarter of each batch to each end of the density range.

    Returns:
      ``forward(model, inputs, key) -> (logits, {"penalty": λ · gate_penalty})`` for a
      gated model (:class:`~sparsejax.dynamic.GatedLeNet5`,
      :class:`~sparsejax.dynamic.GatedMNIST1DCNN`) and ``inputs (batch, ...)``.

    Raises:
      ValueError: a density outside ``(0, 1]``, ``max_density < min_density`` or a
        negative penalty (naming the argument and the value).

    References:
      Yu et al. (2019), Slimmable Neural Networks, ICLR; Yu & Huang (2019), Universally
      Slimmable Networks and Improved Training Techniques (sandwich rule); Gao et al.
      (2019), FBS; Louizos et al. (2018), L0.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import sparsejax.train as train
      >>> from flax import nnx
      >>> from sparsejax.dynamic import GatedMNIST1DCNN, sampled_density_forward
      >>> state = train.create_train_state(GatedMNIST1DCNN(rngs=nnx.Rngs(0)),
      ...                                  optax.adam(1e-3), key=0)
      >>> step = train.make_train_step(
      ...     forward=sampled_density_forward(min_density=0.2, penalty=1e-3))
      >>> sorted(step(state, (jnp.ones((8, 40)), jnp.zeros(8, jnp.int32)))[1])
      ['accuracy', 'data_loss', 'loss', 'penalty']
    """
    lo, hi = _check_range(min_density, max_density, penalty)
    lam = float(penalty)

    def forward(
        model: nnx.Module, inputs: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        k_density, k_gate = jax.random.split(key)
        batch = inputs.shape[0]
        density = jax.random.uniform(k_density, (batch,), jnp.float32, lo, hi)
        if sandwich:
            slot = jnp.arange(batch) % 4
            density = jnp.where(slot == 0, lo, jnp.where(slot == 1, hi, density))
        logits, gates = model.with_gates(inputs, density, key=k_gate)
        return logits, {"penalty": lam * gate_penalty(gates, model.gate_kind)}

    return forward


def make_gated_train_step(
    *,
    min_density: float = 0.25,
    max_density: float = 1.0,
    penalty: float = 0.0,
    sandwich: bool = True,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = (
        optax.softmax_cross_entropy_with_integer_labels
    ),
    jit: bool = True,
) -> Callable[..., Any]:
    """Deprecated: use ``make_train_step(loss_fn, forward=sampled_density_forward(...))``.

    Builds exactly that step (:func:`sparsejax.train.make_train_step` with
    :func:`sampled_density_forward`); arguments as there. Its metrics are
    ``make_train_step``'s: ``loss``, ``data_loss``, ``penalty`` (the weighted term
    ``penalty · gate_penalty``; before the 0.2 layout it was the unweighted
    ``gate_penalty``) and ``accuracy``. The randomness is the step's forward key (derived
    from ``state.key`` and ``state.step``).
    """
    warnings.warn(
        "sparsejax.dynamic.make_gated_train_step is deprecated: use "
        "sparsejax.train.make_train_step(forward=sparsejax.dynamic.sampled_density_forward(...))",
        DeprecationWarning,
        stacklevel=2,
    )
    forward = sampled_density_forward(
        min_density=min_density, max_density=max_density, penalty=penalty, sandwich=sandwich
    )
    from sparsejax.train import make_train_step  # deprecated alias: imports up a layer

    return make_train_step(loss_fn, forward=forward, jit=jit)
