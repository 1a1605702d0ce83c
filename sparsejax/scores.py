"""Importance scores: pytrees that say how much each weight (or unit) matters.

Every function here is **pure** and returns a pytree that mirrors its input
parameters, so ``sparsejax.prune(scores, sparsity)`` can consume it directly.
``prune`` removes the entries with the **lowest** scores: higher always means
"more important" here.

Conventions shared by every function:

* A float leaf (``float16``, ``bfloat16``, ``float32``, ``float64``) gets a
  ``float32`` score of the same shape, whatever its own dtype, so that
  selection always works on one float format.
* A non-float leaf (an ``int32`` step counter, a ``bool`` flag, a ``float0``
  gradient) gets ``zeros(shape, float32)``: it has no importance to estimate
  and is never differentiated. Complex leaves raise ``TypeError``.
* Functions of a loss take ``loss_fn(params, batch) -> scalar``; the empirical
  Fisher takes ``per_example_loss_fn(params, example) -> scalar``, where an
  *example* is ``batch`` with its leading axis removed.
* Errors name the offending leaf by its path string (``"layers/0/kernel"``),
  see :func:`sparsejax.tree.path_str`.

The score functions never inspect values (that would break ``jit``), so a NaN
or inf in the inputs flows into the scores. It must not silently decide what
is pruned: :func:`check_finite` raises on it, naming the leaf; call it on
scores before selecting (eagerly: under ``jit`` it cannot raise).

Derivative-based estimators (:func:`snip`, :func:`hessian_diag_hutchinson`,
:func:`exact_hessian_diag`, :func:`fisher_diag`) compile themselves as one
program even when called eagerly, cached on the loss function and the shapes.

Scores at a glance (``w`` weight, ``g`` gradient, ``h`` Hessian diagonal):

=====================================  ==========================  ============================
function                               score                       reference
=====================================  ==========================  ============================
:func:`magnitude`                      ``|w|``                     Han et al. 2015
:func:`random`                         ``U[0, 1)``                 control baseline
:func:`gradient`                       ``|g|``
:func:`taylor`                         ``|w·g|`` or ``(w·g)²``     Molchanov et al. 2017, 2019
:func:`snip`                           ``|w·g| / Σ|w·g|``          Lee et al. 2019
:func:`movement`                       ``−w·g`` (one step)         Sanh et al. 2020
:func:`obd`                            ``½·h·w²``                  LeCun et al. 1990
:func:`activation_mean`                mean ``|a|`` per channel
:func:`apoz` / :func:`apoz_importance` fraction of zeros / 1 − it  Hu et al. 2016
=====================================  ==========================  ============================
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from sparsejax.tree import (
    Prunable,
    PyTree,
    check_same_structure,
    named_leaves,
    path_str,
    prunable_tree,
)

__all__ = [
    "activation_mean",
    "apoz",
    "apoz_importance",
    "check_finite",
    "exact_hessian_diag",
    "fisher_diag",
    "gradient",
    "hessian_diag_hutchinson",
    "magnitude",
    "movement",
    "neuron_scores",
    "obd",
    "random",
    "snip",
    "taylor",
]

LossFn = Callable[[PyTree, PyTree], jax.Array]
"""``loss_fn(params, batch) -> scalar`` loss."""

_SCORE_DTYPE = jnp.float32


# ---------------------------------------------------------------------------
# Leaf helpers
# ---------------------------------------------------------------------------


def _display(name: str) -> str:
    return name if name else "<root>"


def _dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else jnp.asarray(x).dtype


def _is_float(name: str, x: Any, what: str = "params") -> bool:
    """Whether a leaf is a real float array; complex leaves are rejected."""
    dtype = _dtype(x)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"{what} at {_display(name)!r} has complex dtype {dtype}; importance scores are "
            "defined for real parameters only"
        )
    return bool(jnp.issubdtype(dtype, jnp.floating))


def _zeros_like(x: Any) -> jax.Array:
    return jnp.zeros(np.shape(x), _SCORE_DTYPE)


def _f32(x: Any) -> jax.Array:
    return jnp.asarray(x).astype(_SCORE_DTYPE)


def _check_pair(params: PyTree, other: PyTree, other_name: str) -> None:
    """``other`` must mirror ``params`` leaf by leaf, with equal shapes."""
    check_same_structure(params, other, "params", other_name)
    for (name, p), (_, o) in zip(named_leaves(params), named_leaves(other), strict=True):
        if np.shape(p) != np.shape(o):
            raise ValueError(
                f"{other_name} at {_display(name)!r} has shape {np.shape(o)}, but the parameter "
                f"has shape {np.shape(p)}"
            )


def _pairwise(
    params: PyTree, other: PyTree, other_name: str, fn: Callable[[jax.Array, jax.Array], jax.Array]
) -> PyTree:
    """``fn(w, o)`` in float32 on float params, zeros elsewhere."""
    _check_pair(params, other, other_name)

    def leaf(path, p, o):
        name = path_str(path)
        if not _is_float(name, p):
            return _zeros_like(p)
        if not _is_float(name, o, other_name):
            raise TypeError(
                f"{other_name} at {_display(name)!r} has dtype {_dtype(o)}, but the parameter is "
                f"a float ({_dtype(p)}); expected a float {other_name} leaf"
            )
        return fn(_f32(p), _f32(o))

    return jax.tree_util.tree_map_with_path(leaf, params, other)


def _leaf_keys(key: jax.Array, names: Sequence[str]) -> list[jax.Array]:
    """One key per leaf, derived from its *path* (CRC-32), not from its position.

    Adding or removing other leaves therefore leaves a leaf's key unchanged.
    Two leaves whose names hash alike are told apart by their occurrence index.
    """
    seen: dict[int, int] = {}
    keys = []
    for name in names:
        h = zlib.crc32(name.encode("utf-8"))
        k = jax.random.fold_in(key, h)
        n = seen.get(h, 0)
        if n:
            k = jax.random.fold_in(k, n)
        seen[h] = n + 1
        keys.append(k)
    return keys


class _FloatSplit(NamedTuple):
    """The float leaves of a pytree, separated from the rest (which is held constant)."""

    names: list[str]
    leaves: list[Any]
    is_float: list[bool]
    treedef: Any

    @classmethod
    def of(cls, params: PyTree) -> _FloatSplit:
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        names = [path_str(p) for p, _ in flat]
        leaves = [x for _, x in flat]
        is_float = [_is_float(n, x) for n, x in zip(names, leaves)]
        return cls(names, leaves, is_float, treedef)

    @property
    def float_leaves(self) -> list[jax.Array]:
        return [jnp.asarray(x) for x, f in zip(self.leaves, self.is_float) if f]

    @property
    def float_names(self) -> list[str]:
        return [n for n, f in zip(self.names, self.is_float) if f]

    def merge(self, float_leaves: Sequence[Any]) -> PyTree:
        """The full pytree with its float leaves replaced by ``float_leaves``."""
        it = iter(float_leaves)
        return self.treedef.unflatten(
            [next(it) if f else x for x, f in zip(self.leaves, self.is_float)]
        )

    def scores(self, float_scores: Sequence[jax.Array]) -> PyTree:
        """A pytree mirroring params: float32 scores on float leaves, zeros elsewhere."""
        it = iter(float_scores)
        return self.treedef.unflatten(
            [
                next(it).astype(_SCORE_DTYPE) if f else _zeros_like(x)
                for x, f in zip(self.leaves, self.is_float)
            ]
        )


def _check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}"
        )


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


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.core.Tracer, np.ndarray, np.generic))


class _Dynamic:
    """Placeholder for an array leaf in the static layout of :func:`_compiled`."""

    def __repr__(self) -> str:
        return "<dynamic>"


_DYNAMIC = _Dynamic()


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _run_jitted(impl, static_args, layout, arrays):
    treedef, slots = layout
    it = iter(arrays)
    leaves = [next(it) if s is _DYNAMIC else s for s in slots]
    return impl(*static_args, *treedef.unflatten(leaves))


def _compiled(impl: Callable[..., PyTree], static_args: tuple, *args: PyTree) -> PyTree:
    """``impl(*static_args, *args)`` run as ONE compiled computation.

    Derivative-based estimators are dozens of small ops plus ``vmap``/``scan``;
    run eagerly, each op would dispatch and compile on its own. Here they are
    compiled together; the compilation is cached on ``impl``, ``static_args``
    (e.g. the user's ``loss_fn``, ``num_samples``) and the pytree layout, so
    repeated eager calls with the same loss function and shapes compile once.
    Under an outer ``jit`` this is simply inlined. Array leaves of ``args``
    are traced; other leaves (Python numbers, strings, ...) stay static, so a
    ``loss_fn`` may use them for shapes or control flow. If a static part is
    unhashable, ``impl`` runs uncompiled (same result, slower).
    """
    leaves, treedef = jax.tree.flatten(args)
    slots = tuple(_DYNAMIC if _is_array(x) else x for x in leaves)
    try:
        hash((static_args, treedef, slots))
    except TypeError:
        return impl(*static_args, *args)
    return _run_jitted(impl, static_args, (treedef, slots), [x for x in leaves if _is_array(x)])


# ---------------------------------------------------------------------------
# Zeroth and first order
# ---------------------------------------------------------------------------


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
    (no division by zero).

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


# ---------------------------------------------------------------------------
# Second order: Optimal Brain Damage
# ---------------------------------------------------------------------------


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
    ``O(n²)``); otherwise ``lax.map`` runs ``chunk_size`` at a time.

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
    (a last, partial chunk is padded and the padding discarded).

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


# ---------------------------------------------------------------------------
# Activation-based scores for units (neurons / channels / filters)
# ---------------------------------------------------------------------------


def _per_channel(
    acts: PyTree, axis: int, fn: Callable[[jax.Array, tuple[int, ...]], jax.Array]
) -> PyTree:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int, got {axis!r}")

    def leaf(path, a):
        name = _display(path_str(path))
        a = jnp.asarray(a)
        if jnp.issubdtype(a.dtype, jnp.complexfloating):
            raise TypeError(f"activations at {name!r} have complex dtype {a.dtype}")
        if not -a.ndim <= axis < a.ndim:
            raise ValueError(
                f"axis {axis} is out of range for the activations at {name!r} of shape {a.shape}"
            )
        if a.size == 0:
            raise ValueError(f"activations at {name!r} are empty (shape {a.shape})")
        ax = axis % a.ndim
        others = tuple(i for i in range(a.ndim) if i != ax)
        return fn(a.astype(_SCORE_DTYPE), others)

    return jax.tree_util.tree_map_with_path(leaf, acts)


def activation_mean(acts: PyTree, axis: int = -1) -> PyTree:
    """Mean absolute activation per channel.

    Args:
      acts: one array or a pytree of arrays (e.g. ``{"layer1": a1, ...}``)
        recorded by the caller, e.g. ``(batch, features)`` after a Dense layer
        or ``(batch, h, w, channels)`` (NHWC) after a conv.
      axis: the channel axis (default last); all other axes are averaged.

    Returns:
      The same pytree with each array replaced by a float32 vector of shape
      ``(channels,)``: ``mean |a|`` over every other axis. Pure. Higher means
      more important, as :func:`sparsejax.prune` expects.

    Raises:
      ValueError: ``axis`` out of range or an empty array (path and shape named).

    Example:
      >>> activation_mean(jnp.array([[1.0, -2.0], [3.0, 0.0]]))
      Array([2., 1.], dtype=float32)
    """
    return _per_channel(acts, axis, lambda a, ax: jnp.mean(jnp.abs(a), axis=ax))


def apoz(acts: PyTree, axis: int = -1, *, threshold: float = 0.0) -> PyTree:
    """Average Percentage of Zeros (APoZ) per channel.

    ``APoZ_c = (1/(N·M)) Σ_k Σ_j [a_{k,j,c} = 0]`` over ``N`` examples and
    ``M`` positions (all axes but ``axis``), usually of post-ReLU activations.
    A HIGH APoZ marks a channel as unimportant, so this is **not** a score for
    :func:`sparsejax.prune` (which removes the lowest scores): use
    :func:`apoz_importance` (``1 − APoZ``) for that.

    Args:
      acts: one array or a pytree of arrays recorded by the caller.
      axis: the channel axis (default last).
      threshold: count ``|a| ≤ threshold`` as zero (``0.0``: exact zeros, as in
        the paper).

    Returns:
      The same pytree with float32 vectors of shape ``(channels,)`` in
      ``[0, 1]``. Pure.

    References:
      Hu, Peng, Tai & Tang, "Network Trimming: A Data-Driven Neuron Pruning
      Approach towards Efficient Deep Architectures", 2016 (eq. 1).
    """
    return _per_channel(
        acts,
        axis,
        lambda a, ax: jnp.mean((jnp.abs(a) <= threshold).astype(_SCORE_DTYPE), axis=ax),
    )


def apoz_importance(acts: PyTree, axis: int = -1, *, threshold: float = 0.0) -> PyTree:
    """``1 − APoZ`` per channel: the fraction of non-zero activations.

    The importance form of :func:`apoz` (higher = more important), ready for
    :func:`neuron_scores` and ``prune(..., structure=Neurons())``, which
    removes the channels that are most often zero. Same arguments and shapes
    as :func:`apoz`. Pure.

    References:
      Hu et al., "Network Trimming", 2016.
    """
    return jax.tree.map(lambda z: 1.0 - z, apoz(acts, axis, threshold=threshold))


def neuron_scores(
    params: PyTree,
    scores_by_path: Mapping[str, Any],
    prunable: Prunable = None,
) -> PyTree:
    """Place per-output-unit scores into a scores pytree for ``Neurons()`` pruning.

    Activation statistics (:func:`activation_mean`, :func:`apoz_importance`)
    give one number per output unit (neuron, channel, filter). This builds the
    pytree :func:`sparsejax.prune` expects: the kernel at each named path gets
    its vector reshaped to the ``Neurons`` / ``Filters`` mask shape
    ``(1, …, 1, out)`` (Dense ``(1, out)``, Conv ``(1, 1, 1, out)``); every
    other leaf gets a scalar ``0.0``. Pass the same ``prunable`` to ``prune``
    (with ``prunable=None`` here, prune exactly the named paths, e.g.
    ``prunable=[re.escape(p) + "$" for p in scores_by_path]``).

    Args:
      params: the parameter pytree (only paths and shapes are read).
      scores_by_path: ``{path_str: scores}`` with ``scores`` of shape
        ``(out,)`` or ``(1, …, 1, out)``, ``out = kernel.shape[-1]``.
      prunable: optional :data:`~sparsejax.tree.Prunable` spec; when given,
        every prunable leaf must have scores and every named path must be
        prunable (so no prunable kernel is silently scored 0).

    Returns:
      A float32 pytree mirroring ``params``. Pure.

    Raises:
      ValueError: a path that is not in ``params``; a vector whose shape does
        not match the kernel's output units; a scalar parameter; a prunable
        leaf without scores or a named leaf that is not prunable (paths and
        shapes named).

    Example:
      >>> params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}}
      >>> s = neuron_scores(params, {"dense/kernel": jnp.array([0.1, 0.5, 0.2])})
      >>> s["dense"]["kernel"].shape, s["dense"]["bias"].shape
      ((1, 3), ())
    """
    named = named_leaves(params)
    names = [n for n, _ in named]
    unknown = [p for p in scores_by_path if p not in set(names)]
    if unknown:
        raise ValueError(
            f"unit scores given for {unknown[0]!r}, which is not a parameter path; "
            f"the paths are {names}"
        )
    if prunable is not None:
        which = dict(zip(names, jax.tree.leaves(prunable_tree(params, prunable))))
        missing = [n for n in names if which[n] and n not in scores_by_path]
        if missing:
            raise ValueError(
                f"prunable parameter {missing[0]!r} (shape {np.shape(dict(named)[missing[0]])}) "
                f"has no unit scores; scores were given for {sorted(scores_by_path)}"
            )
        excluded = [p for p in scores_by_path if not which[p]]
        if excluded:
            raise ValueError(
                f"unit scores given for {excluded[0]!r}, which the prunable filter "
                f"{prunable!r} excludes"
            )

    def leaf(path, p):
        name = path_str(path)
        if name not in scores_by_path:
            return jnp.zeros((), _SCORE_DTYPE)
        shape = tuple(np.shape(p))
        if not shape:
            raise ValueError(f"parameter {name!r} is a scalar (shape ()); it has no output units")
        out = shape[-1]
        unit_shape = (1,) * (len(shape) - 1) + (out,)
        s = jnp.asarray(scores_by_path[name])
        if s.shape not in {(out,), unit_shape}:
            raise ValueError(
                f"unit scores for {name!r} have shape {s.shape}, but the parameter has shape "
                f"{shape} with {out} output units: expected shape ({out},) or {unit_shape}"
            )
        if jnp.issubdtype(s.dtype, jnp.complexfloating):
            raise TypeError(f"unit scores for {name!r} have complex dtype {s.dtype}")
        return s.astype(_SCORE_DTYPE).reshape(unit_shape)

    return jax.tree_util.tree_map_with_path(leaf, params)


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def check_finite(scores: PyTree, name: str = "scores") -> PyTree:
    """Raise if any float leaf of ``scores`` holds a NaN or an infinity.

    Eager only: under ``jit`` (when any leaf is a tracer) values are unknown
    and the check is skipped, returning ``scores`` unchanged; call it outside
    the compiled function (or use ``jax.experimental.checkify``) to guard a
    traced computation. The counts are reduced on device, so only two
    integers per leaf reach the host.

    Args:
      scores: any pytree of arrays.
      name: what ``scores`` is called in the error message.

    Returns:
      ``scores`` itself, so calls can be chained.

    Raises:
      ValueError: naming the first leaf (in ``jax.tree.leaves`` order) with a
        non-finite entry, its NaN and inf counts, its size and shape.
    """
    named = named_leaves(scores)
    if any(isinstance(x, jax.core.Tracer) for _, x in named):
        return scores
    floats = [(n, x) for n, x in named if _is_float(n, x, name)]
    counts = jax.device_get(
        [(jnp.count_nonzero(jnp.isnan(x)), jnp.count_nonzero(jnp.isinf(x))) for _, x in floats]
    )
    for (leaf_name, x), (nans, infs) in zip(floats, counts):
        if nans or infs:
            raise ValueError(
                f"{name} at {_display(leaf_name)!r} has {int(nans)} NaN and {int(infs)} inf "
                f"entries out of {int(np.size(x))} (shape {np.shape(x)}); non-finite scores "
                "would decide arbitrarily what is pruned"
            )
    return scores
