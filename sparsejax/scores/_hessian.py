"""Second-order scores: Optimal Brain Damage and the Hessian diagonals it needs.

:func:`obd` ``½·h·w²`` (LeCun et al. 1990) takes a Hessian diagonal ``h`` from
:func:`exact_hessian_diag` (one Hessian-vector product per coordinate),
:func:`hessian_diag_hutchinson` (Rademacher probes) or :func:`fisher_diag` (the
empirical Fisher, as in Fisher pruning). Functions of a loss take
``loss_fn(params, batch) -> scalar``; the empirical Fisher takes
``per_example_loss_fn(params, example) -> scalar``, where an *example* is ``batch``
with its leading axis removed.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from sparsejax.scores._compile import _compiled
from sparsejax.scores._leaves import (
    _SCORE_DTYPE,
    LossFn,
    _check_positive_int,
    _display,
    _f32,
    _FloatSplit,
    _pairwise,
)
from sparsejax.tree import PyTree, named_leaves


def obd(params: PyTree, hessian_diag: PyTree) -> PyTree:
    """Optimal Brain Damage saliency ``½·h·w²``.

    The second-order loss increase from deleting ``w`` at a minimum when the
    Hessian is approximated by its diagonal ``h``. ``hessian_diag`` may come
    from :func:`exact_hessian_diag`, :func:`hessian_diag_hutchinson`, or the
    empirical Fisher :func:`fisher_diag` (a positive Gauss–Newton-like
    substitute, as in Fisher pruning). A non-convex loss can have ``h < 0``;
    the score is then negative and that weight is pruned first, as the
    formula says.

    Args:
      params: pytree of weights.
      hessian_diag: pytree mirroring ``params`` with the same shapes.

    Returns:
      A float32 pytree mirroring ``params``; zeros on non-float leaves. Pure.

    References:
      LeCun, Denker & Solla, "Optimal Brain Damage", NeurIPS 1990 (eq. 6).
      Theis, Korshunova, Tejani & Huszár, "Faster gaze prediction with dense
      networks and Fisher pruning", 2018 (Fisher in place of the Hessian).
    """
    return _pairwise(params, hessian_diag, "hessian_diag", lambda w, h: 0.5 * h * jnp.square(w))


def _chunked_mean(
    fn: Callable[[jax.Array], list[jax.Array]], n: int, chunk_size: int | None
) -> list[jax.Array]:
    """``(1/n) Σ_{i<n} fn(i)`` for an int32 index ``i``, ``chunk_size`` items vmapped at a time.

    With ``chunk_size=None`` all ``n`` items are vmapped at once. Otherwise the
    indices are padded up to a multiple of ``chunk_size`` and ``lax.scan`` folds
    the chunks into a running sum (peak memory: one chunk). Padded items
    re-evaluate index ``n - 1`` and are discarded with ``where`` (never by
    multiplication, so a NaN there cannot leak). One compiled body in all cases.
    """
    size = n if chunk_size is None else min(chunk_size, n)
    num_chunks = -(-n // size)

    def masked(i):
        out = fn(jnp.minimum(i, n - 1))
        return [jnp.where(i < n, o, jnp.zeros((), o.dtype)) for o in out]

    def chunk_total(idx):
        return [jnp.sum(o, axis=0) for o in jax.vmap(masked)(idx)]

    if num_chunks == 1:
        total = chunk_total(jnp.arange(size, dtype=jnp.int32))
    else:
        shapes = jax.eval_shape(masked, jnp.zeros((), jnp.int32))
        init = [jnp.zeros(o.shape, o.dtype) for o in shapes]
        idx = jnp.arange(num_chunks * size, dtype=jnp.int32).reshape(num_chunks, size)

        def step(carry, chunk_idx):
            return [c + t for c, t in zip(carry, chunk_total(chunk_idx))], None

        total, _ = jax.lax.scan(step, init, idx)
    return [t / n for t in total]


def _hutchinson_impl(loss_fn, num_samples, chunk_size, params, batch, key):
    split = _FloatSplit.of(params)
    leaves = split.float_leaves
    if not leaves:
        return split.scores([])
    sizes = [w.size for w in leaves]
    offsets = np.cumsum([0, *sizes])
    grad_fn = jax.grad(lambda fl: loss_fn(split.merge(fl), batch))

    def one_probe(i):
        # One draw for all leaves: few RNG ops keep the compiled body small.
        flat = jax.random.rademacher(jax.random.fold_in(key, i), (int(offsets[-1]),), _SCORE_DTYPE)
        zs = [
            flat[lo:hi].reshape(w.shape).astype(w.dtype)
            for lo, hi, w in zip(offsets[:-1], offsets[1:], leaves)
        ]
        _, hz = jax.jvp(grad_fn, (leaves,), (zs,))
        return [_f32(z) * _f32(h) for z, h in zip(zs, hz)]

    return split.scores(_chunked_mean(one_probe, num_samples, chunk_size))


def hessian_diag_hutchinson(
    loss_fn: LossFn,
    params: PyTree,
    batch: PyTree,
    key: jax.Array,
    num_samples: int = 100,
    *,
    chunk_size: int | None = None,
) -> PyTree:
    """Hutchinson's stochastic estimate of the Hessian diagonal, ``E[z ⊙ Hz]``.

    For Rademacher probes ``z`` (entries ±1), ``E[z_i (Hz)_i] = H_ii``, with
    variance ``Σ_{j≠i} H_ij²`` per probe: the estimate is exact for a diagonal
    Hessian and its error shrinks like ``1/√num_samples`` otherwise. Each
    ``Hz`` is a Hessian-vector product computed forward-over-reverse
    (``jax.jvp`` of ``jax.grad``), at about the cost of two gradients and
    without forming ``H``. Probes are vmapped ``chunk_size`` at a time (all at
    once by default); chunks are accumulated with ``lax.scan``, so peak memory
    is that of ``chunk_size`` simultaneous HVPs (when ``chunk_size`` does not
    divide ``num_samples`` the last chunk is padded and its extra probes are
    discarded). Probe ``i`` is drawn from ``fold_in(key, i)`` as one
    Rademacher vector over all float leaves in ``jax.tree.leaves`` order, so
    the result does not depend on ``chunk_size`` (up to float summation order).

    Non-float leaves are held constant and get zero scores. The whole
    estimator is compiled as one program (cached on ``loss_fn`` and shapes)
    even when called eagerly.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, twice differentiable.
      params: pytree of weights.
      batch: anything ``loss_fn`` accepts.
      key: PRNG key for the probes.
      num_samples: number of probes (static Python int ≥ 1).
      chunk_size: probes per vmapped chunk (static int ≥ 1) or ``None``.

    Returns:
      A float32 pytree mirroring ``params``: the estimated ``diag(H)``. Pure;
      works under ``jit`` with ``num_samples``/``chunk_size`` static.

    References:
      Hutchinson, "A stochastic estimator of the trace of the influence matrix
      for Laplacian smoothing splines", 1990.
      Bekas, Kokiopoulou & Saad, "An estimator for the diagonal of a matrix",
      Applied Numerical Mathematics, 2007.
      Pearlmutter, "Fast exact multiplication by the Hessian", 1994.
    """
    _check_positive_int("num_samples", num_samples)
    _check_positive_int("chunk_size", chunk_size, allow_none=True)
    return _compiled(_hutchinson_impl, (loss_fn, num_samples, chunk_size), params, batch, key)


def _exact_impl(loss_fn, chunk_size, params, batch):
    split = _FloatSplit.of(params)
    leaves = split.float_leaves
    if not leaves:
        return split.scores([])
    flat, unravel = ravel_pytree(leaves)
    n = flat.shape[0]
    grad_fn = jax.grad(lambda v: loss_fn(split.merge(unravel(v)), batch))

    def coordinate(i):
        e = jax.nn.one_hot(i, n, dtype=flat.dtype)
        return jax.jvp(grad_fn, (flat,), (e,))[1][i]

    idx = jnp.arange(n)
    if chunk_size is None:
        diag = jax.vmap(coordinate)(idx)
    else:
        diag = jax.lax.map(coordinate, idx, batch_size=min(chunk_size, n))
    out, offset = [], 0
    for w in leaves:
        out.append(diag[offset : offset + w.size].reshape(w.shape))
        offset += w.size
    return split.scores(out)


def exact_hessian_diag(
    loss_fn: LossFn, params: PyTree, batch: PyTree, *, chunk_size: int | None = None
) -> PyTree:
    """The exact Hessian diagonal, one Hessian-vector product per coordinate.

    ``H_ii = e_iᵀ H e_i`` with ``H e_i`` computed forward-over-reverse over the
    concatenation of all float leaves (so cross-leaf terms are those of the full
    Hessian). Costs ``n`` HVPs for ``n`` float parameters: meant for small
    models, as a reference for :func:`hessian_diag_hutchinson` and in tests.
    With ``chunk_size=None`` all ``n`` HVPs are vmapped at once (memory
    ``O(n²)``); otherwise ``lax.map`` runs ``chunk_size`` at a time. Compiled
    as one program even when called eagerly (cached on ``loss_fn`` and the shapes).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, twice differentiable.
      params: pytree of weights.
      batch: anything ``loss_fn`` accepts.
      chunk_size: coordinates per vmapped chunk (static int ≥ 1) or ``None``.

    Returns:
      A float32 pytree mirroring ``params``: ``diag(H)``; zeros on non-float
      leaves. Pure; works under ``jit``.

    References:
      LeCun, Denker & Solla, "Optimal Brain Damage", NeurIPS 1990.
      Pearlmutter, "Fast exact multiplication by the Hessian", 1994.
    """
    _check_positive_int("chunk_size", chunk_size, allow_none=True)
    return _compiled(_exact_impl, (loss_fn, chunk_size), params, batch)


def _fisher_impl(per_example_loss_fn, n, chunk_size, params, batch):
    split = _FloatSplit.of(params)
    leaves = split.float_leaves
    if not leaves:
        return split.scores([])
    grad_fn = jax.grad(lambda fl, ex: per_example_loss_fn(split.merge(fl), ex))

    xs = jax.tree.map(jnp.asarray, batch)

    def squared_grad(i):
        example = jax.tree.map(lambda a: a[i], xs)
        return [jnp.square(_f32(g)) for g in grad_fn(leaves, example)]

    return split.scores(_chunked_mean(squared_grad, n, chunk_size))


def fisher_diag(
    per_example_loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    *,
    chunk_size: int | None = None,
) -> PyTree:
    """Diagonal of the empirical Fisher: mean of squared per-example gradients.

    ``F_ii = (1/B) Σ_b (∂ℓ(params, x_b)/∂w_i)²`` with per-example gradients from
    ``jax.vmap(jax.grad(per_example_loss_fn))`` over the leading axis of every
    leaf of ``batch``. For a negative log-likelihood with the observed labels
    this approximates the Hessian of the mean loss (Gauss–Newton / Fisher), and
    is always ≥ 0: ``obd(params, fisher_diag(...))`` is Fisher pruning. (It is
    the *empirical* Fisher — labels from the data, not sampled from the model;
    see Kunstner et al. 2019 for where the two differ.) Examples are vmapped
    ``chunk_size`` at a time (all by default), chunks summed with ``lax.scan``
    (a last, partial chunk is padded and the padding discarded). Compiled as
    one program even when called eagerly (cached on the loss function and the shapes).

    Args:
      per_example_loss_fn: ``fn(params, example) -> scalar`` on ONE example,
        i.e. ``batch`` with the leading axis of every leaf removed.
      params: pytree of weights; non-float leaves are held constant and get
        zero scores.
      batch: pytree of arrays (array, tuple, dict, ...) sharing a leading
        example axis of size ``B ≥ 1``.
      chunk_size: examples per vmapped chunk (static int ≥ 1) or ``None``.

    Returns:
      A float32 pytree mirroring ``params``. Pure; works under ``jit``.

    Raises:
      ValueError: ``batch`` has no leaves, a scalar leaf, or leaves whose
        leading sizes differ (their paths and shapes are named).

    References:
      Theis et al., "Faster gaze prediction with dense networks and Fisher
      pruning", 2018. Kunstner, Hennig & Balles, "Limitations of the empirical
      Fisher approximation for natural gradient descent", NeurIPS 2019.
    """
    _check_positive_int("chunk_size", chunk_size, allow_none=True)
    batch_leaves = named_leaves(batch)
    if not batch_leaves:
        raise ValueError("batch has no array leaves; fisher_diag needs a leading example axis")
    sizes = {}
    for name, x in batch_leaves:
        if np.ndim(x) == 0:
            raise ValueError(
                f"batch leaf {_display(name)!r} is a scalar (shape ()); every leaf of batch needs "
                "a leading example axis"
            )
        sizes[_display(name)] = np.shape(x)
    leading = {s[0] for s in sizes.values()}
    if len(leading) != 1:
        raise ValueError(
            f"batch leaves have different leading (example) sizes: {sizes}; every leaf needs the "
            "same leading axis"
        )
    (n,) = leading
    if n == 0:
        raise ValueError(f"batch has 0 examples (leaf shapes {sizes})")
    return _compiled(_fisher_impl, (per_example_loss_fn, n, chunk_size), params, batch)
