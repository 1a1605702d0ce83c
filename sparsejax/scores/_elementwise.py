"""Scores of single weights from the weights and their gradients.

:func:`magnitude` ``|w|`` (Han et al. 2015), :func:`random` ``U[0, 1)`` (the control),
:func:`gradient` ``|g|``, :func:`taylor` ``|w·g|`` or ``(w·g)²`` (Molchanov et al. 2017,
2019), :func:`movement` ``−w·g`` (Sanh et al. 2020) and :func:`snip` ``|w·g| / Σ|w·g|``
(Lee et al. 2019). Leaf conventions: see :mod:`sparsejax.scores`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.scores._compile import _compiled
from sparsejax.scores._leaves import (
    _SCORE_DTYPE,
    LossFn,
    _f32,
    _FloatSplit,
    _is_float,
    _leaf_keys,
    _pairwise,
    _zeros_like,
)
from sparsejax.tree import PyTree, path_str


def magnitude(params: PyTree) -> PyTree:
    """Magnitude score ``|w|``, the criterion of magnitude pruning.

    Args:
      params: any pytree of arrays.

    Returns:
      A pytree mirroring ``params``: ``|w|`` as float32 for float leaves (same
      shape), ``zeros(shape, float32)`` for non-float leaves. Pure.

    References:
      Han, Pool, Tran & Dally, "Learning both Weights and Connections for
      Efficient Neural Networks", NeurIPS 2015.

    Example:
      >>> magnitude({"w": jnp.array([[-2.0, 1.0]])})
      {'w': Array([[2., 1.]], dtype=float32)}
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, p: jnp.abs(_f32(p)) if _is_float(path_str(path), p) else _zeros_like(p),
        params,
    )


def random(params: PyTree, key: jax.Array) -> PyTree:
    """Uniform random scores in ``[0, 1)``: the random-pruning control.

    Each leaf draws from its own key ``fold_in(key, crc32(path))``, derived
    from the leaf's path string rather than its position, so a leaf's scores
    depend only on ``key``, its path and its shape: adding a layer elsewhere
    does not change them. Works under ``jit`` and ``vmap`` (over keys).

    Args:
      params: any pytree of arrays (only shapes and dtypes are read).
      key: a PRNG key (``jax.random.key`` or legacy ``jax.random.PRNGKey``).

    Returns:
      A pytree mirroring ``params``: float32 uniform ``[0, 1)`` of each float
      leaf's shape, zeros for non-float leaves. Pure.
    """
    split = _FloatSplit.of(params)
    keys = _leaf_keys(key, split.float_names)
    draws = [
        jax.random.uniform(k, np.shape(x), _SCORE_DTYPE) for k, x in zip(keys, split.float_leaves)
    ]
    return split.scores(draws)


def gradient(grads: PyTree) -> PyTree:
    """Gradient magnitude ``|g|`` (sensitivity of the loss to each weight).

    Args:
      grads: gradients, a pytree mirroring the params (``float0`` leaves from
        ``jax.grad(..., allow_int=True)`` get zero scores).

    Returns:
      ``|g|`` as float32 for float leaves, zeros elsewhere. Pure.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, g: (
            jnp.abs(_f32(g)) if _is_float(path_str(path), g, "grads") else _zeros_like(g)
        ),
        grads,
    )


def taylor(params: PyTree, grads: PyTree, *, squared: bool = False) -> PyTree:
    """First-order Taylor importance: the loss change when a weight is removed.

    Removing ``w`` changes the loss by ``≈ −w·g`` to first order, so the score
    is ``|w·g|`` (``squared=False``) or ``(w·g)²`` (``squared=True``, Molchanov
    et al. 2019, eq. 4, whose group-sums ``reduce_scores(..., "sum")`` give the
    paper's filter importance). Both rank single weights identically. With
    gradients taken at initialisation ``|w·g|`` is SNIP's (unnormalised)
    connection sensitivity; see :func:`snip`.

    Args:
      params: pytree of weights.
      grads: pytree of gradients mirroring ``params`` (same shapes).

    Returns:
      A float32 pytree mirroring ``params``; zeros on non-float leaves. Pure.

    Raises:
      ValueError: ``grads`` does not mirror ``params`` or a shape differs (the
        path and both shapes are named).

    References:
      Molchanov, Tyree, Karras, Aila & Kautz, "Pruning Convolutional Neural
      Networks for Resource Efficient Inference", ICLR 2017.
      Molchanov, Mallya, Tyree, Frosio & Kautz, "Importance Estimation for
      Neural Network Pruning", CVPR 2019.
    """
    if squared:
        return _pairwise(params, grads, "grads", lambda w, g: jnp.square(w * g))
    return _pairwise(params, grads, "grads", lambda w, g: jnp.abs(w * g))


def movement(params: PyTree, grads: PyTree) -> PyTree:
    """Movement score for one step: ``−w·g``.

    Movement pruning keeps weights that move *away* from zero during
    fine-tuning. Its score is the accumulated ``S = −Σ_t w_t·g_t``; this
    function returns one term of that sum. To use the accumulated score, sum
    it over steps: the gradual-pruning transform (``sparsejax.pruning`` with a
    movement score) keeps the running sum in its state and prunes on it. A
    one-step score is large when gradient descent (``w ← w − ηg``) grows
    ``|w|``. Scores can be negative.

    Args:
      params: pytree of weights.
      grads: pytree of gradients mirroring ``params``.

    Returns:
      A float32 pytree mirroring ``params``; zeros on non-float leaves. Pure.

    References:
      Sanh, Wolf & Rush, "Movement Pruning: Adaptive Sparsity by Fine-Tuning",
      NeurIPS 2020 (eq. for ``S`` in Section 4).
    """
    return _pairwise(params, grads, "grads", lambda w, g: -(w * g))


def _snip_impl(loss_fn, params, batch):
    split = _FloatSplit.of(params)
    leaves = split.float_leaves
    if not leaves:
        return split.scores([])
    grads = jax.grad(lambda fl: loss_fn(split.merge(fl), batch))(leaves)
    sens = [jnp.abs(_f32(w) * _f32(g)) for w, g in zip(leaves, grads)]
    total = sum((jnp.sum(s) for s in sens), jnp.zeros((), _SCORE_DTYPE))
    safe = jnp.where(total > 0, total, jnp.ones((), _SCORE_DTYPE))
    zero = jnp.zeros((), _SCORE_DTYPE)
    return split.scores([jnp.where(total > 0, s / safe, zero) for s in sens])


def snip(loss_fn: LossFn, params: PyTree, batch: PyTree) -> PyTree:
    """SNIP connection sensitivity ``|w·g| / Σ|w·g|`` at ``params``.

    The gradient of ``loss_fn(params, batch)`` is taken with respect to every
    float leaf (other leaves are held constant); the score ``|w·∂L/∂w|`` is
    ``|∂L/∂c|`` for a multiplicative connection gate ``c = 1``, normalised to
    sum to 1 over **all** leaves as in the paper. Call it at initialisation to
    prune before training. If every product is zero the scores are all zero
    (no division by zero). Compiled as one program even when called eagerly
    (cached on ``loss_fn`` and the shapes).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: pytree of weights (usually at initialisation).
      batch: anything ``loss_fn`` accepts (a mini-batch of data).

    Returns:
      A float32 pytree mirroring ``params`` summing to 1. Pure; works under
      ``jit`` (close over ``loss_fn``).

    References:
      Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on
      Connection Sensitivity", ICLR 2019 (eq. 6).
    """
    return _compiled(_snip_impl, (loss_fn,), params, batch)
