"""Structured importance criteria: one score per output unit (neuron / filter).

Every criterion here returns a **unit-scores pytree** mirroring the params: a
prunable kernel of shape ``(..., out)`` gets float32 scores of the ``Neurons``
mask shape ``(1, …, 1, out)`` (Dense ``(1, out)``, Conv ``(1, 1, 1, out)``),
every other leaf the scalar ``0.0``. So the result goes straight into
``sparsejax.prune(scores, s, params=params, structure=sparsejax.Neurons(),
prunable=...)`` (pass the same ``prunable`` as here). Higher = more important.

=========================  ===========================================  ==========================
criterion                  unit score                                   reference
=========================  ===========================================  ==========================
:func:`filter_norm`        ``Σ|w|`` (``ord=1``) or ``√Σw²`` (``ord=2``)   Li et al. 2017
:func:`group_taylor`       ``(Σ_{s∈unit} g_s·w_s)²``                    Molchanov et al. 2019
:func:`mean_group_taylor`  the above averaged over mini-batches         Molchanov et al. 2019
:func:`bn_scale`           ``|γ|`` of the BatchNorm after the unit      Liu et al. 2017
:func:`random_units`       ``U[0, 1)``                                  control
:func:`oracle`             ``|L(w without unit) − L(w)|``, exact        Molchanov et al. 2017
=========================  ===========================================  ==========================

Activation criteria (mean activation, APoZ) are :func:`sparsejax.scores.activation_mean`
and :func:`sparsejax.scores.apoz_importance`, placed into a pytree with
:func:`sparsejax.scores.neuron_scores`. :func:`rank_correlation` compares any of
them with the oracle (Spearman's ρ per layer, the evaluation of Molchanov et al.
2017, Table 1).

All functions are pure and work under ``jax.jit`` (the loss function and the
path mappings are static).

References:
  Li, Kadav, Durdanovic, Samet, Graf. "Pruning Filters for Efficient ConvNets", ICLR 2017.
  Molchanov, Tyree, Karras, Aila, Kautz. "Pruning Convolutional Neural Networks for
  Resource Efficient Inference", ICLR 2017.
  Molchanov, Mallya, Tyree, Frosio, Kautz. "Importance Estimation for Neural Network
  Pruning", CVPR 2019.
  Liu, Li, Shen, Huang, Yan, Zhang. "Learning Efficient Convolutional Networks through
  Network Slimming", ICCV 2017.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.scores import neuron_scores
from sparsejax.scores import random as _random_scores
from sparsejax.structures import Neurons
from sparsejax.tree import (
    Prunable,
    PyTree,
    check_same_structure,
    named_leaves,
    path_str,
    prunable_tree,
)

__all__ = [
    "bn_conv_pairs",
    "bn_scale",
    "filter_norm",
    "group_taylor",
    "mean_group_taylor",
    "oracle",
    "random_units",
    "rank_correlation",
    "spearman",
]

LossFn = Callable[[PyTree, PyTree], jax.Array]

_NEURONS = Neurons()


# --------------------------------------------------------------------------- helpers


def _unit_tree(params: PyTree, prunable: Prunable, fn: Callable[[str, Any], jax.Array]) -> PyTree:
    """``fn(path, leaf)`` (already of unit shape) on prunable leaves, scalar 0.0 elsewhere."""
    which = prunable_tree(params, prunable)

    def leaf(path, p, w):
        if not w:
            return jnp.zeros((), jnp.float32)
        name = path_str(path)
        _NEURONS.validate(np.shape(p), name)
        return jnp.asarray(fn(name, p), jnp.float32)

    return jax.tree_util.tree_map_with_path(leaf, params, which)


def _check_float(name: str, x: Any, what: str) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{what} at {name!r} has dtype {jnp.result_type(x)}; expected floats")


def _prunable_names(params: PyTree, prunable: Prunable) -> list[tuple[str, Any]]:
    which = jax.tree.leaves(prunable_tree(params, prunable))
    out = [(n, p) for (n, p), w in zip(named_leaves(params), which, strict=True) if w]
    if not out:
        raise ValueError(f"no prunable parameter: the prunable filter {prunable!r} matched no leaf")
    return out


class _ListKey(tuple):
    """A list static argument, frozen to be hashable (turned back into a list for the call)."""


def _static_key(x: Any) -> Any:
    return _ListKey(x) if isinstance(x, list) else x


@functools.lru_cache(maxsize=64)
def _jitted(impl: Callable[..., Any], *static: Any) -> Callable[..., Any]:
    args = [list(s) if isinstance(s, _ListKey) else s for s in static]
    return jax.jit(functools.partial(impl, *args))


def _compiled(impl: Callable[..., Any], *static: Any) -> Callable[..., Any]:
    """``jit(partial(impl, *static))``, cached on the static arguments when they are hashable."""
    key = tuple(_static_key(s) for s in static)
    try:
        hash(key)
    except TypeError:
        return jax.jit(functools.partial(impl, *static))
    return _jitted(impl, *key)


# --------------------------------------------------------------------------- weight criteria


def filter_norm(params: PyTree, ord: int = 1, *, prunable: Prunable = None) -> PyTree:
    """L1 (``ord=1``) or L2 (``ord=2``) norm of every output unit's weights.

    A Conv filter ``w[..., i]`` of shape ``(kh, kw, in)`` gets ``Σ|w|`` or
    ``√Σw²`` (Li et al. 2017 rank filters by their L1 norm); a Dense neuron, its
    column of ``(in,)`` weights. Pure; works under ``jit``.

    Args:
      params: parameter pytree (Flax layout: units on the last axis).
      ord: 1 or 2.
      prunable: which leaves are scored (default ``ndim >= 2``).

    Returns:
      Unit scores ``(1, …, 1, out)`` float32 on prunable leaves, scalar 0.0 elsewhere.

    Raises:
      ValueError: ``ord`` not 1 or 2, or no prunable leaf.

    References:
      Li, Kadav, Durdanovic, Samet, Graf. "Pruning Filters for Efficient ConvNets",
      ICLR 2017 (Section 3.1).

    Example:
      >>> filter_norm({"w": jnp.array([[1.0, -2.0], [3.0, 0.5]])})["w"]
      Array([[4. , 2.5]], dtype=float32)
    """
    if isinstance(ord, bool) or ord not in (1, 2):
        raise ValueError(f"ord must be 1 or 2, got {ord!r}")
    reduction = "l1" if ord == 1 else "l2"
    _prunable_names(params, prunable)
    return _unit_tree(params, prunable, lambda name, p: _NEURONS.reduce(p, reduction, name))


def group_taylor(params: PyTree, grads: PyTree, *, prunable: Prunable = None) -> PyTree:
    """Group Taylor importance ``(Σ_{s∈unit} g_s·w_s)²`` of one mini-batch.

    The first-order estimate of the squared loss change when the whole unit is
    removed (eq. 8 of Molchanov et al. 2019): the products ``g·w`` of a unit are
    summed *before* squaring, so correlated weights add up. Average it over
    mini-batches with :func:`mean_group_taylor`, as the paper does. The group is
    the unit's kernel column (biases are not included). Pure.

    Args:
      params: parameter pytree.
      grads: gradients of the loss, mirroring ``params`` with equal shapes.
      prunable: which leaves are scored.

    Returns:
      Unit scores ``(1, …, 1, out)`` float32 on prunable leaves, scalar 0.0 elsewhere.

    Raises:
      ValueError: ``grads`` does not mirror ``params`` or a shape differs (path named).

    References:
      Molchanov, Mallya, Tyree, Frosio, Kautz. "Importance Estimation for Neural
      Network Pruning", CVPR 2019 (eq. 8, "Taylor FO on weights").
    """
    check_same_structure(params, grads, "params", "grads")
    _prunable_names(params, prunable)
    g_by_name = dict(named_leaves(grads))

    def score(name, p):
        g = g_by_name[name]
        if np.shape(g) != np.shape(p):
            raise ValueError(
                f"grads at {name!r} have shape {np.shape(g)}, params shape {np.shape(p)}"
            )
        _check_float(name, g, "grads")
        prod = jnp.asarray(p, jnp.float32) * jnp.asarray(g, jnp.float32)
        return jnp.square(_NEURONS.reduce(prod, "sum", name))

    return _unit_tree(params, prunable, score)


def mean_group_taylor(
    loss_fn: LossFn, params: PyTree, batches: PyTree, *, prunable: Prunable = None
) -> PyTree:
    """:func:`group_taylor` averaged over ``B`` mini-batches (Molchanov et al. 2019).

    ``I_unit = (1/B) Σ_b (Σ_{s∈unit} g_s^{(b)} w_s)²`` where ``g^{(b)}`` is the
    gradient of ``loss_fn(params, batch_b)``. Because the square is taken per
    mini-batch, this differs from squaring the full-batch gradient (it adds
    the variance of the per-batch estimates, as in the paper's accumulation).
    Batches are processed sequentially with ``lax.map``. Pure; works under ``jit``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: parameter pytree.
      batches: a pytree whose every leaf has a leading axis of ``B`` mini-batches,
        e.g. ``(x[B, b, ...], y[B, b])``.
      prunable: which leaves are scored.

    Returns:
      Unit scores as :func:`group_taylor`.

    Raises:
      ValueError: ``batches`` has no leaves or leaves with different leading sizes.

    References:
      Molchanov et al. "Importance Estimation for Neural Network Pruning", CVPR 2019.
    """
    named = named_leaves(batches)
    if not named:
        raise ValueError("batches has no array leaves; it needs a leading mini-batch axis")
    leading = {n or "<root>": np.shape(x)[:1] for n, x in named}
    if any(len(s) == 0 for s in leading.values()) or len(set(leading.values())) != 1:
        raise ValueError(
            f"every leaf of batches needs the same leading (mini-batch) axis; got leading "
            f"shapes {leading}"
        )
    _prunable_names(params, prunable)
    return _compiled(_mean_group_taylor_impl, loss_fn, prunable)(params, batches)


def _mean_group_taylor_impl(loss_fn, prunable, params, batches):
    grad_fn = jax.grad(loss_fn)

    def one(batch):
        return group_taylor(params, grad_fn(params, batch), prunable=prunable)

    per_batch = jax.lax.map(one, batches)
    return jax.tree.map(lambda s: jnp.mean(s, axis=0), per_batch)


def random_units(params: PyTree, key: jax.Array, *, prunable: Prunable = None) -> PyTree:
    """Uniform ``U[0, 1)`` unit scores: the random-pruning control.

    Each prunable leaf draws from ``fold_in(key, crc32(path))`` as in
    :func:`sparsejax.scores.random`, so a layer's draws depend only on the key,
    its path and its number of units. Pure; works under ``jit`` / ``vmap`` (keys).

    Returns:
      Unit scores ``(1, …, 1, out)`` float32 on prunable leaves, scalar 0.0 elsewhere.
    """
    which = prunable_tree(params, prunable)
    _prunable_names(params, prunable)
    shapes = jax.tree_util.tree_map_with_path(
        lambda path, p, w: (
            jnp.zeros(_NEURONS.mask_shape(np.shape(p), path_str(path)), jnp.float32)
            if w
            else jnp.zeros((), jnp.float32)
        ),
        params,
        which,
    )
    draws = _random_scores(shapes, key)
    return jax.tree.map(
        lambda d, w: d if w else jnp.zeros((), jnp.float32), draws, which
    )


# --------------------------------------------------------------------------- BatchNorm scale

_BN_TOKEN = re.compile(r"^(batch_?norm|bn|norm)(.*)$", re.IGNORECASE)


def _conventional_conv(bn_path: str) -> str | None:
    """``blocks/0/bn1/scale`` -> ``blocks/0/conv1/kernel``; ``norms/3/scale`` -> ``convs/3/kernel``."""
    parts = bn_path.split("/")
    if len(parts) < 2 or parts[-1] != "scale":
        return None
    module = parts[:-1]
    for i in range(len(module) - 1, -1, -1):
        m = _BN_TOKEN.match(module[i])
        if m:
            token = m.group(1)
            conv = "Conv" if token[:1].isupper() else "conv"
            return "/".join([*module[:i], conv + m.group(2), *module[i + 1 :], "kernel"])
    return None


def bn_conv_pairs(
    params: PyTree, bn_to_conv: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The BatchNorm scale → conv kernel pairing used by :func:`bn_scale`.

    With ``bn_to_conv`` given, its keys are BatchNorm scale paths (or module
    paths, ``"/scale"`` is appended) and its values conv kernel paths (or module
    paths, ``"/kernel"`` appended). Otherwise the *same-module convention* pairs
    every leaf ``…/<bn-name>/scale`` whose module name starts with ``bn``,
    ``norm`` or ``batchnorm``/``batch_norm`` (any case) with the kernel of the
    module of the same name with that token replaced by ``conv``: ``bn1`` →
    ``conv1``, ``bn`` → ``conv``, ``norms/3`` → ``convs/3``, Linen's
    ``BatchNorm_0`` → ``Conv_0``.

    Returns:
      ``{bn_scale_path: conv_kernel_path}`` in ``jax.tree.leaves`` order of the scales.

    Raises:
      ValueError: a given path that is not a parameter, a scale whose size
        differs from the conv's output units, or (convention) no pair found or a
        BatchNorm scale whose conventional conv does not exist — the message
        names the paths and asks for an explicit ``bn_to_conv``.
    """
    leaves = dict(named_leaves(params))
    names = list(leaves)

    def resolve(path: str, suffix: str, what: str) -> str:
        if path in leaves:
            return path
        if f"{path}/{suffix}" in leaves:
            return f"{path}/{suffix}"
        raise ValueError(f"bn_to_conv {what} {path!r} is not a parameter path; paths are {names}")

    pairs: dict[str, str] = {}
    if bn_to_conv is not None:
        if not isinstance(bn_to_conv, Mapping):
            raise TypeError(f"bn_to_conv must be a mapping {{bn_path: conv_path}}, got {bn_to_conv!r}")
        if not bn_to_conv:
            raise ValueError("bn_to_conv is empty; give at least one {bn_path: conv_path} pair")
        for bn, conv in bn_to_conv.items():
            pairs[resolve(bn, "scale", "key")] = resolve(conv, "kernel", "value")
    else:
        for name in names:
            conv = _conventional_conv(name)
            if conv is None:
                continue
            if conv not in leaves:
                raise ValueError(
                    f"BatchNorm scale {name!r} has no conv kernel at the conventional path "
                    f"{conv!r}; pass bn_to_conv={{{name!r}: <conv kernel path>}}"
                )
            pairs[name] = conv
        if not pairs:
            raise ValueError(
                "no BatchNorm scale found by the same-module convention (a leaf "
                "'.../bn*/scale', '.../norm*/scale' or '.../BatchNorm*/scale'); pass "
                f"bn_to_conv={{bn_scale_path: conv_kernel_path}} explicitly. Paths are {names}"
            )
    seen: dict[str, str] = {}
    for bn, conv in pairs.items():
        if conv in seen:
            raise ValueError(
                f"conv kernel {conv!r} is paired with two BatchNorm scales, {seen[conv]!r} and "
                f"{bn!r}"
            )
        seen[conv] = bn
        g_shape, k_shape = np.shape(leaves[bn]), np.shape(leaves[conv])
        if len(g_shape) != 1 or not k_shape or g_shape[0] != k_shape[-1]:
            raise ValueError(
                f"BatchNorm scale {bn!r} has shape {g_shape} but conv kernel {conv!r} has shape "
                f"{k_shape}: the scale must be a vector of its {k_shape[-1:] or '?'} output units"
            )
    return pairs


def bn_scale(
    params: PyTree,
    bn_to_conv: Mapping[str, str] | None = None,
    *,
    prunable: Prunable = None,
) -> PyTree:
    """Network slimming: ``|γ|`` of a BatchNorm as the score of the conv filters it normalizes.

    Liu et al. (2017) train with an L1 penalty on the BatchNorm scales ``γ`` and
    prune the channels with small ``|γ|``. Here ``|γ|`` of each BatchNorm is
    placed on the conv kernel whose output it normalizes, in the ``Neurons``
    mask shape. Pairing: :func:`bn_conv_pairs` (explicit ``bn_to_conv`` or the
    same-module convention). Kernels with no BatchNorm get the scalar 0.0: prune
    only the paired kernels, e.g. ``prunable=[re.escape(c) + "$" for c in
    bn_conv_pairs(params).values()]``. Pure.

    Args:
      params: parameter pytree holding the BatchNorm scales and conv kernels.
      bn_to_conv: optional ``{bn_scale_path: conv_kernel_path}``.
      prunable: if given, every prunable leaf must be a paired kernel and vice
        versa (checked by :func:`sparsejax.scores.neuron_scores`).

    Returns:
      Unit scores ``(1, …, 1, out)`` on paired kernels, scalar 0.0 elsewhere.

    Raises:
      ValueError: see :func:`bn_conv_pairs`; a prunable kernel without BatchNorm.

    References:
      Liu, Li, Shen, Huang, Yan, Zhang. "Learning Efficient Convolutional Networks
      through Network Slimming", ICCV 2017.
    """
    pairs = bn_conv_pairs(params, bn_to_conv)
    leaves = dict(named_leaves(params))
    for bn in pairs:
        _check_float(bn, leaves[bn], "BatchNorm scale")
    by_conv = {conv: jnp.abs(jnp.asarray(leaves[bn], jnp.float32)) for bn, conv in pairs.items()}
    return neuron_scores(params, by_conv, prunable)


# --------------------------------------------------------------------------- the oracle


def _sibling_bias(name: str, leaves: Mapping[str, Any]) -> str | None:
    if not name.endswith("/kernel"):
        return None
    bias = name[: -len("kernel")] + "bias"
    if bias in leaves and np.shape(leaves[bias]) == np.shape(leaves[name])[-1:]:
        return bias
    return None


def oracle(
    loss_fn: LossFn,
    params: PyTree,
    batch: PyTree,
    *,
    prunable: Prunable = None,
    remove_bias: bool = True,
    absolute: bool = True,
    chunk_size: int | None = None,
) -> PyTree:
    """The exact loss change of removing each output unit alone (Molchanov et al. 2017 oracle).

    For every prunable kernel and every unit ``i``: ``ΔL_i = L(w with unit i
    removed, batch) − L(w, batch)``, all other units and layers unchanged. A
    unit is removed by zeroing its kernel column ``w[..., i]`` and, with
    ``remove_bias``, the entry ``i`` of the sibling ``…/bias`` leaf (same
    module, shape ``(out,)``), so the unit's pre-activation is exactly zero —
    the feature-map removal of the paper. The ``out`` removals of a layer are
    evaluated at once with ``jax.vmap`` over one-hot removal masks
    (``chunk_size`` at a time with ``lax.map`` to bound memory). Cost: one loss
    evaluation per unit. Pure; works under ``jit``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: parameter pytree.
      batch: anything ``loss_fn`` accepts.
      prunable: the kernels whose units are scored (default ``ndim >= 2``).
      remove_bias: zero the unit's bias too (if the module has a ``bias`` leaf).
      absolute: ``|ΔL|`` (the paper's oracle ranking) or the signed ``ΔL``.
      chunk_size: removals per vmapped chunk, ``None`` = all units of a layer at once.

    Returns:
      Unit scores ``(1, …, 1, out)`` float32 on prunable leaves, scalar 0.0 elsewhere.

    Raises:
      ValueError: ``chunk_size`` not a positive int, or no prunable leaf.

    References:
      Molchanov, Tyree, Karras, Aila, Kautz. "Pruning Convolutional Neural Networks for
      Resource Efficient Inference", ICLR 2017 (Section 2.1 and the oracle ranking of
      Section 3).
    """
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    _prunable_names(params, prunable)
    # One compiled program for all layers (eager vmaps would dispatch op by op).
    chunk = None if chunk_size is None else int(chunk_size)
    fn = _compiled(_oracle_impl, loss_fn, prunable, bool(remove_bias), bool(absolute), chunk)
    return fn(params, batch)


def _oracle_impl(loss_fn, prunable, remove_bias, absolute, chunk_size, params, batch):
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [path_str(p) for p, _ in flat]
    values = [v for _, v in flat]
    leaves = dict(zip(names, values))
    index = {n: i for i, n in enumerate(names)}
    base = loss_fn(params, batch)

    def layer(name: str, p: Any) -> jax.Array:
        out = int(np.shape(p)[-1])
        bias = _sibling_bias(name, leaves) if remove_bias else None
        positions = [index[name]] + ([index[bias]] if bias is not None else [])

        def removed(i):
            keep = jnp.arange(out) != i
            new = list(values)
            for j in positions:
                v = values[j]
                k = keep.reshape((1,) * (np.ndim(v) - 1) + (out,))
                new[j] = jnp.where(k, v, jnp.zeros((), jnp.result_type(v)))
            return loss_fn(jax.tree.unflatten(treedef, new), batch)

        units = jnp.arange(out)
        if chunk_size is None:
            losses = jax.vmap(removed)(units)
        else:
            losses = jax.lax.map(removed, units, batch_size=min(int(chunk_size), out))
        delta = jnp.asarray(losses, jnp.float32) - jnp.asarray(base, jnp.float32)
        delta = jnp.abs(delta) if absolute else delta
        return delta.reshape(_NEURONS.mask_shape(np.shape(p), name))

    return _unit_tree(params, prunable, layer)


# --------------------------------------------------------------------------- rank correlation


def _average_ranks(x: jax.Array) -> jax.Array:
    """1-based ranks of a vector, ties getting the mean of their ranks (float32)."""
    s = jnp.sort(x)
    lo = jnp.searchsorted(s, x, side="left")
    hi = jnp.searchsorted(s, x, side="right")
    return (lo + hi + 1).astype(jnp.float32) / 2.0


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman's rank correlation of two equally long vectors (average ranks for ties).

    The Pearson correlation of the average ranks, so ties follow
    ``scipy.stats.spearmanr``. ``NaN`` when either input is constant (the
    correlation is undefined). Pure; works under ``jit``; ``O(n log n)``.
    """
    a = jnp.ravel(jnp.asarray(a, jnp.float32))
    b = jnp.ravel(jnp.asarray(b, jnp.float32))
    if a.shape != b.shape:
        raise ValueError(f"spearman needs two vectors of equal size, got {a.shape} and {b.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"spearman needs at least 2 entries, got {a.shape[0]}")
    return _spearman_impl(a, b)


@jax.jit
def _spearman_impl(a: jax.Array, b: jax.Array) -> jax.Array:
    ra = _average_ranks(a)
    rb = _average_ranks(b)
    ra = ra - jnp.mean(ra)
    rb = rb - jnp.mean(rb)
    den = jnp.sqrt(jnp.sum(ra * ra) * jnp.sum(rb * rb))
    return jnp.where(den > 0, jnp.sum(ra * rb) / jnp.where(den > 0, den, 1.0), jnp.nan)


def rank_correlation(
    criterion_scores: PyTree, oracle_scores: PyTree, *, prunable: Prunable = None
) -> dict[str, jax.Array]:
    """Spearman's ρ between a criterion and the oracle, layer by layer.

    The evaluation of Molchanov et al. (2017, Table 1): how well a cheap
    criterion ranks the units of each layer like the exact loss change
    (:func:`oracle`). Both pytrees must have the same structure and, on every
    prunable leaf, the same shape (typically the unit shape ``(1, …, 1, out)``).

    Args:
      criterion_scores: unit scores of a criterion.
      oracle_scores: :func:`oracle` scores (same structure).
      prunable: which leaves are compared (default ``ndim >= 2``; note that
        unit-score leaves ``(1, out)`` have ``ndim >= 2``).

    Returns:
      ``{path: ρ}`` (float32 scalars, ``NaN`` for a constant layer), in
      ``jax.tree.leaves`` order.

    Raises:
      ValueError: different trees, or a leaf whose shapes differ (path and shapes named).
    """
    check_same_structure(criterion_scores, oracle_scores, "criterion_scores", "oracle_scores")
    which = jax.tree.leaves(prunable_tree(criterion_scores, prunable))
    out: dict[str, jax.Array] = {}
    for (name, c), (_, o), w in zip(
        named_leaves(criterion_scores), named_leaves(oracle_scores), which, strict=True
    ):
        if not w:
            continue
        if np.shape(c) != np.shape(o):
            raise ValueError(
                f"criterion_scores at {name!r} have shape {np.shape(c)} but oracle_scores "
                f"shape {np.shape(o)}"
            )
        out[name] = spearman(c, o)
    if not out:
        raise ValueError(f"no prunable leaf to compare: the filter {prunable!r} matched none")
    return out
