"""The dynamic sparse training methods with their papers' defaults: SET, RigL, SNFS."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import optax

from sparsejax.schedules import _check_int, _check_real
from sparsejax.transforms._drop_schedule import DropSchedule, drop_schedule
from sparsejax.transforms._dynamic_sparse import dynamic_sparse
from sparsejax.transforms._mask_leaves import MaskOrFn
from sparsejax.tree import Prunable


def _schedule(
    owner: str,
    total_steps: int | None,
    end: int | None,
    end_fraction: float,
    fraction: float,
    every: int,
    decay: str,
    begin: int,
) -> DropSchedule:
    """The drop schedule of a method: ``end`` given, or ``int(end_fraction * total_steps)``."""
    if end is None:
        if total_steps is None:
            raise ValueError(
                f"{owner}: give total_steps (the length of training; mask updates stop at "
                f"{end_fraction:.0%} of it) or end= (the last update step)"
            )
        total_steps = _check_int(owner, "total_steps", total_steps, 1)
        end = int(_check_real(owner, "end_fraction", end_fraction, 0, 1) * total_steps)
    if isinstance(end, int) and isinstance(begin, int) and end < begin:
        raise ValueError(
            f"{owner}: the first mask update (begin={begin}) would come after the last "
            f"(end={end}{'' if total_steps is None else f', from total_steps={total_steps}'}); "
            "pass a smaller every= or begin=, or a later end="
        )
    return drop_schedule(fraction, every=every, end=end, begin=begin, decay=decay)


def rigl(
    inner: optax.GradientTransformation,
    sparsity: float | None = None,
    *,
    key: jax.Array | int,
    total_steps: int | None = None,
    fraction: float = 0.3,
    every: int = 100,
    end: int | None = None,
    begin: int = 0,
    decay: str = "cosine",
    distribution: str | Mapping[str, float] = "erk",
    prunable: Prunable = None,
    mask: MaskOrFn | None = None,
) -> optax.GradientTransformationExtraArgs:
    """RigL: drop the smallest weights, grow where the dense gradient is largest.

    :func:`dynamic_sparse` with ``grow="gradient"`` and the paper's defaults:
    ERK initial mask, drop fraction ``α = 0.3`` decayed with the cosine
    schedule, an update every ``ΔT = 100`` steps from step 0 until 75 % of
    training, grown weights at ``0.0`` with zero optimizer moments. The dense
    gradient is the gradient the loss already gives at the (zero) inactive
    weights: no extra backward pass. Differences from the reference code: the
    kept weights still take their optimizer step at update steps (the code
    skips it), ties are broken by position instead of a 1e-5 noise, and an
    entry dropped at an update is not regrown by the same update.

    Args:
      inner: the optimizer to wrap (the paper: SGD with momentum 0.9).
      sparsity: overall sparsity of the random initial mask.
      key: PRNG key of the initial mask.
      total_steps: training length; updates stop at ``int(0.75 * total_steps)``.
      fraction: ``α``, the drop fraction at step 0.
      every: ``ΔT``.
      end: the last update step (instead of 75 % of ``total_steps``).
      begin: the first update step (the reference code updates at step 0).
      decay: ``"cosine"`` (paper), ``"constant"`` or ``"linear"``.
      distribution, prunable, mask: as in :func:`dynamic_sparse`.

    Returns:
      The transform (state :class:`SparseTrainingState`).

    References:
      Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All
      Tickets Winners", ICML 2020. https://arxiv.org/abs/1911.11134

    Example:
      >>> import jax, optax, sparsejax as sj
      >>> tx = sj.transforms.rigl(optax.sgd(0.1, momentum=0.9), 0.9, key=jax.random.key(0),
      ...                         total_steps=10_000)
      >>> tx.init({"w": jax.numpy.ones((100, 100))}).schedule.end
      7500
    """
    schedule = _schedule("rigl", total_steps, end, 0.75, fraction, every, decay, begin)
    return dynamic_sparse(inner, sparsity, key=key, schedule=schedule, grow="gradient",
                          distribution=distribution, prunable=prunable, mask=mask, owner="rigl")


def sparse_evolutionary(
    inner: optax.GradientTransformation,
    sparsity: float | None = None,
    *,
    key: jax.Array | int,
    total_steps: int | None = None,
    fraction: float = 0.3,
    every: int = 100,
    end: int | None = None,
    begin: int | None = None,
    decay: str = "constant",
    distribution: str | Mapping[str, float] = "erk",
    prunable: Prunable = None,
    mask: MaskOrFn | None = None,
) -> optax.GradientTransformationExtraArgs:
    """SET: drop the smallest weights, regrow as many at random.

    :func:`dynamic_sparse` with ``grow="random"`` and the paper's defaults:
    a constant fraction ``ζ = 0.3`` of each layer's active weights is moved at
    every update, until the end of training. Mocanu et al. draw the initial
    mask Erdős–Rényi (density ``∝ (in + out) / (in · out)``), which is ERK for
    dense kernels, and rewire once per epoch: pass ``every`` = steps per epoch
    to follow them (RigL's comparison uses ``ΔT = 100``, the default here).
    Growth is uniform over the entries inactive before the update, from
    ``fold_in`` of the state's key and the step.

    Args:
      inner: the optimizer to wrap (the paper: SGD with momentum 0.9).
      sparsity: overall sparsity of the random initial mask.
      key: PRNG key of the initial mask and the growth.
      total_steps: training length (updates continue until its end).
      fraction: ``ζ``.
      every: steps between updates.
      end: the last update step (instead of ``total_steps``).
      begin: the first update step (default ``every``: after the first period).
      decay: ``"constant"`` (paper), ``"cosine"`` or ``"linear"``.
      distribution, prunable, mask: as in :func:`dynamic_sparse`.

    Returns:
      The transform (state :class:`SparseTrainingState`).

    References:
      Mocanu, Mocanu, Stone, Nguyen, Gibescu, Liotta. "Scalable training of
      artificial neural networks with adaptive sparse connectivity inspired by
      network science", Nature Communications 9, 2018.
      https://arxiv.org/abs/1707.04780

    Example:
      >>> import jax, optax, sparsejax as sj
      >>> tx = sj.transforms.sparse_evolutionary(optax.adam(1e-3), 0.9, key=jax.random.key(0),
      ...                                        total_steps=3_000)
      >>> float(tx.init({"w": jax.numpy.ones((100, 100))}).schedule(2_900))
      0.30000001192092896
    """
    schedule = _schedule("sparse_evolutionary", total_steps, end, 1.0, fraction, every, decay,
                         every if begin is None else begin)
    return dynamic_sparse(inner, sparsity, key=key, schedule=schedule, grow="random",
                          distribution=distribution, prunable=prunable, mask=mask,
                          owner="sparse_evolutionary")


def sparse_momentum(
    inner: optax.GradientTransformation,
    sparsity: float | None = None,
    *,
    key: jax.Array | int,
    total_steps: int | None = None,
    fraction: float = 0.5,
    every: int = 100,
    end: int | None = None,
    begin: int | None = None,
    decay: str = "cosine",
    momentum: float = 0.9,
    distribution: str | Mapping[str, float] = "uniform",
    prunable: Prunable = None,
    mask: MaskOrFn | None = None,
) -> optax.GradientTransformationExtraArgs:
    """SNFS (sparse momentum): grow where the gradient's momentum is largest, moving weights
    between layers by their mean momentum.

    :func:`dynamic_sparse` with ``grow="momentum"``, ``redistribute=True`` and
    the paper's defaults: prune rate ``p = 0.5`` annealed to 0 with a cosine
    over the whole training, momentum ``β = 0.9`` (an exponential moving
    average of the dense gradients, proportional to SGD's momentum buffer,
    so the ranking and the shares are the same), a uniform initial
    distribution that the redistribution then reshapes. Each layer drops
    ``floor(p · active)`` weights by magnitude; the total is regrown across
    layers in proportion to each layer's mean momentum magnitude over its
    active weights, each within its inactive entries, by largest ``|m|``.
    The paper updates at the end of each epoch: pass ``every`` = steps per
    epoch to follow it. The moving average costs one ``float32`` copy of the
    prunable parameters in the state.

    Args:
      inner: the optimizer to wrap (the paper: SGD with momentum 0.9).
      sparsity: overall sparsity of the random initial mask.
      key: PRNG key of the initial mask.
      total_steps: training length (updates continue until its end).
      fraction: ``p``, the prune rate at step 0.
      every: steps between updates.
      end: the last update step (instead of ``total_steps``).
      begin: the first update step (default ``every``: after the first period,
        once the momentum has built up).
      decay: ``"cosine"`` (paper), ``"constant"`` or ``"linear"``.
      momentum: ``β`` of the moving average.
      distribution, prunable, mask: as in :func:`dynamic_sparse`.

    Returns:
      The transform (state :class:`SparseTrainingState`).

    References:
      Dettmers & Zettlemoyer. "Sparse Networks from Scratch: Faster Training
      without Losing Performance", 2019. https://arxiv.org/abs/1907.04840

    Example:
      >>> import jax, optax, sparsejax as sj
      >>> tx = sj.transforms.sparse_momentum(optax.sgd(0.1, momentum=0.9), 0.9,
      ...                                    key=jax.random.key(0), total_steps=1_000)
      >>> len(tx.init({"w": jax.numpy.ones((10, 10))}).momentum)  # one average per kernel
      1
    """
    schedule = _schedule("sparse_momentum", total_steps, end, 1.0, fraction, every, decay,
                         every if begin is None else begin)
    return dynamic_sparse(inner, sparsity, key=key, schedule=schedule, grow="momentum",
                          momentum=momentum, redistribute=True, distribution=distribution,
                          prunable=prunable, mask=mask, owner="sparse_momentum")
