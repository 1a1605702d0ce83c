"""Group lasso: structured sparsity learned during training (penalty and proximal step).

A *group* is a set of entries kept or removed together: the groups of
:mod:`sparsejax.structures` on every prunable leaf (``Neurons``: a unit's incoming
weights ``kernel[..., j]``; ``InputChannels``: an input's outgoing weights;
``Layers``: the leaf; ``Blocks``: a tile; ``Unstructured``: one entry, where the group
lasso is the L1). With ``include_bias=True`` and ``Neurons``, the sibling ``…/bias``
joins its units' groups, so a removed unit outputs exactly ``activation(0)``.

The (sparse) group lasso penalty is

    Ω(w) = λ · Σ_g √|g| · ‖w_g‖₂ + λ₁ · Σ_i |w_i|

(group weights √|g| as in Yuan & Lin 2006; the L1 term makes it the sparse group
lasso of Simon et al. 2013). It is not differentiable at ``w_g = 0``, so plain
(sub)gradient descent only drives groups *near* zero: :func:`proximal_group_lasso`,
the proximal operator of ``lr · Ω`` as an optax transform placed **last** in the
chain, makes the step proximal gradient descent with exact zeros, and
:func:`groups_to_mask` turns the zero groups into a structured mask (plain bool arrays:
``nnx.Variable`` wrappers of the params are not carried over, so a mask is never an
``nnx.Param``). :func:`select_lambda` picks λ on a validation set with a margin of
standard errors. Everything here is pure and works under ``jax.jit``.

References:
  Yuan & Lin (2006), Model selection and estimation in regression with grouped
  variables. Simon, Friedman, Hastie & Tibshirani (2013), A sparse-group lasso.
  Wen et al. (2016), Learning Structured Sparsity in Deep Neural Networks, NeurIPS.
  Scardapane et al. (2017), Group sparse regularization for deep neural networks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax.structures import NM, Neurons, Structure
from sparsejax.tree import Prunable, PyTree, named_leaves, prunable_tree

__all__ = [
    "GroupStats",
    "LambdaSelection",
    "ProximalGroupLassoState",
    "group_lasso_penalty",
    "group_norms",
    "group_stats",
    "groups_to_mask",
    "proximal_group_lasso",
    "select_lambda",
]

ScalarOrSchedule = float | Callable[[jax.Array], jax.Array]


# --------------------------------------------------------------------------------------------
# group layout
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Which leaf is grouped how (static: computed from paths and shapes only)."""

    names: tuple[str, ...]
    grouped: tuple[bool, ...]  # leaf i is a prunable leaf with groups
    bias_of: tuple[int | None, ...]  # leaf i is the bias joined to the groups of kernel bias_of[i]
    bias_for: tuple[int | None, ...]  # kernel i's groups include leaf bias_for[i]
    group_shape: tuple[tuple[int, ...] | None, ...]
    group_size: tuple[int, ...]  # entries per group (bias included), 0 for ungrouped leaves


def _check_scalar(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a non-negative float, got {value!r}")
    if not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative float, got {value!r}")
    return float(value)


def _layout(params: PyTree, structure: Structure, prunable: Prunable, include_bias: bool) -> _Layout:
    if not isinstance(structure, Structure):
        raise TypeError(f"structure must be a sparsejax Structure (Neurons(), ...), got {structure!r}")
    if isinstance(structure, NM):
        raise ValueError(
            f"structure {structure!r} does not partition a leaf into groups that are removed "
            "together; use Neurons(), InputChannels(), Layers(), Blocks(...) or Unstructured()"
        )
    leaves = named_leaves(params)
    names = tuple(n for n, _ in leaves)
    which = jax.tree.leaves(prunable_tree(params, prunable))
    index = {n: i for i, n in enumerate(names)}
    n = len(leaves)
    bias_of: list[int | None] = [None] * n
    bias_for: list[int | None] = [None] * n
    group_shape: list[tuple[int, ...] | None] = [None] * n
    group_size = [0] * n
    for i, ((name, leaf), keep) in enumerate(zip(leaves, which, strict=True)):
        if not keep:
            continue
        shape = tuple(int(d) for d in np.shape(leaf))
        gshape = tuple(structure.mask_shape(shape, name))
        group_shape[i] = gshape
        group_size[i] = math.prod(shape) // max(math.prod(gshape), 1)
        if include_bias and isinstance(structure, Neurons) and name.endswith("kernel"):
            j = index.get(name[: -len("kernel")] + "bias")
            if j is not None and not which[j]:
                bshape = tuple(int(d) for d in np.shape(leaves[j][1]))
                if bshape != shape[-1:]:
                    raise ValueError(
                        f"bias {names[j]!r} has shape {bshape}, but the units of {name!r} "
                        f"{shape} need shape {shape[-1:]}; pass include_bias=False"
                    )
                bias_of[j], bias_for[i] = i, j
                group_size[i] += 1
    return _Layout(names, tuple(g is not None for g in group_shape), tuple(bias_of),
                   tuple(bias_for), tuple(group_shape), tuple(group_size))


def _squared_norms(layout: _Layout, leaves: list[jax.Array], structure: Structure) -> list:
    """Per grouped leaf: float32 ``‖w_g‖²`` of shape ``group_shape`` (bias included)."""
    out: list[jax.Array | None] = []
    for i, leaf in enumerate(leaves):
        if not layout.grouped[i]:
            out.append(None)
            continue
        sq = structure.reduce(jnp.square(leaf.astype(jnp.float32)), "sum", layout.names[i])
        j = layout.bias_for[i]
        if j is not None:
            b = leaves[j].astype(jnp.float32)
            sq = sq + jnp.square(b).reshape(sq.shape)
        out.append(sq)
    return out


def _leaves(params: PyTree) -> list[jax.Array]:
    return [jnp.asarray(x) for x in jax.tree.leaves(params)]


def _is_variable(x: Any) -> bool:
    """A ``flax.nnx.Variable`` (duck-typed: this layer does not import Flax)."""
    return any(c.__name__ == "Variable" and c.__module__.startswith("flax.")
               for c in type(x).__mro__)


def _plain_structure(params: PyTree) -> Any:
    """The tree structure of ``params`` with every ``nnx.Variable`` node replaced by a leaf."""
    return jax.tree.structure(jax.tree.map(lambda v: 0, params, is_leaf=_is_variable))


# --------------------------------------------------------------------------------------------
# penalty, norms, masks
# --------------------------------------------------------------------------------------------


def group_norms(
    params: PyTree,
    *,
    structure: Structure = Neurons(),  # noqa: B008 (frozen, immutable)
    prunable: Prunable = None,
    include_bias: bool = True,
) -> PyTree:
    """The L2 norm of every group.

    Args:
      params: parameter pytree (Linen dict, ``nnx.State``, ...).
      structure: the groups (see the module table).
      prunable: which leaves carry groups (``None``: float leaves with ``ndim >= 2``).
      include_bias: with ``Neurons``, a kernel's sibling ``bias`` joins its units' groups.

    Returns:
      A pytree at the paths of ``params`` (plain arrays: ``nnx.Variable`` wrappers are
      not carried over): a grouped leaf gets ``float32[group_shape]`` (``(1, out)`` for
      ``Neurons`` on a Dense kernel), every other leaf a ``float32[]`` zero. Pure.
    """
    layout = _layout(params, structure, prunable, include_bias)
    leaves = _leaves(params)
    sq = _squared_norms(layout, leaves, structure)
    out = [jnp.sqrt(s) if s is not None else jnp.zeros((), jnp.float32) for s in sq]
    return jax.tree.unflatten(_plain_structure(params), out)


def group_lasso_penalty(
    params: PyTree,
    lam: float | jax.Array,
    *,
    structure: Structure = Neurons(),  # noqa: B008 (frozen, immutable)
    prunable: Prunable = None,
    include_bias: bool = True,
    l1: float | jax.Array = 0.0,
) -> jax.Array:
    """Sparse group lasso ``λ·Σ_g √|g|·‖w_g‖₂ + λ₁·Σ_i |w_i|`` (add it to the loss).

    The L1 term runs over the grouped entries (prunable leaves and, with
    ``include_bias``, their biases). ``jax.grad`` of ``‖w_g‖`` at ``w_g = 0``
    would be NaN, so the norm is taken as ``sqrt(max(‖w_g‖², tiny))`` there and
    the gradient of a zero group is 0 (a valid subgradient).

    Args:
      params: parameter pytree.
      lam: group strength λ ≥ 0 (may be traced).
      structure: the groups.
      prunable: which leaves carry groups.
      include_bias: with ``Neurons``, biases join their units' groups.
      l1: L1 strength λ₁ ≥ 0 (sparse group lasso; may be traced).

    Returns:
      ``float32[]``. Pure.

    Example:
      >>> params = {"kernel": jnp.array([[3.0, 0.0], [4.0, 0.0]]), "bias": jnp.zeros(2)}
      >>> float(group_lasso_penalty(params, 1.0))  # √3·‖(3, 4, 0)‖ + √3·0
      8.660253524780273
    """
    layout = _layout(params, structure, prunable, include_bias)
    leaves = _leaves(params)
    tiny = jnp.finfo(jnp.float32).tiny
    total = jnp.zeros((), jnp.float32)
    abs_sum = jnp.zeros((), jnp.float32)
    for i, sq in enumerate(_squared_norms(layout, leaves, structure)):
        if sq is None:
            continue
        norm = jnp.where(sq > 0, jnp.sqrt(jnp.maximum(sq, tiny)), 0.0)
        total = total + math.sqrt(layout.group_size[i]) * jnp.sum(norm)
        abs_sum = abs_sum + jnp.sum(jnp.abs(leaves[i].astype(jnp.float32)))
        j = layout.bias_for[i]
        if j is not None:
            abs_sum = abs_sum + jnp.sum(jnp.abs(leaves[j].astype(jnp.float32)))
    return jnp.asarray(lam, jnp.float32) * total + jnp.asarray(l1, jnp.float32) * abs_sum


def groups_to_mask(
    params: PyTree,
    *,
    structure: Structure = Neurons(),  # noqa: B008 (frozen, immutable)
    prunable: Prunable = None,
    include_bias: bool = True,
    atol: float = 0.0,
) -> PyTree:
    """Structured mask that removes the groups whose norm is ``<= atol``.

    After :func:`proximal_group_lasso` the removed groups are exact zeros, so the
    default ``atol=0`` is exact. For a model trained with the penalty only
    (:func:`group_lasso_penalty` with a gradient method) choose ``atol`` on a
    validation set: subgradient steps leave groups near, not at, zero.

    Returns:
      A mask pytree (see :mod:`sparsejax.masks`) at the paths of ``params``, of plain
      bool arrays (an ``nnx.State`` of ``nnx.Param`` gives an ``nnx.State`` of arrays,
      like ``nnx.as_pure``: the mask is never an ``nnx.Param``): grouped leaves get
      ``bool[group_shape]`` (``(1, out)`` for ``Neurons`` on a Dense kernel), the joined
      bias of a kernel ``bool[out]`` (same groups), every other leaf scalar ``True``. Pure.

    Raises:
      ValueError: ``atol`` negative or not finite; ``structure`` or ``prunable`` as in
        :func:`group_norms`.
    """
    atol = _check_scalar("atol", atol)
    layout = _layout(params, structure, prunable, include_bias)
    sq = _squared_norms(layout, _leaves(params), structure)
    keep = [s > atol * atol if s is not None else None for s in sq]
    out = []
    for i in range(len(sq)):
        if keep[i] is not None:
            out.append(keep[i])
        elif layout.bias_of[i] is not None:
            out.append(keep[layout.bias_of[i]].reshape(-1))
        else:
            out.append(jnp.ones((), bool))
    return jax.tree.unflatten(_plain_structure(params), out)


@dataclasses.dataclass(frozen=True)
class GroupStats:
    """Groups of one leaf: how many there are and how many are zero (removed)."""

    path: str
    groups: int
    removed: int

    @property
    def fraction(self) -> float:
        """Fraction of the groups removed."""
        return self.removed / self.groups if self.groups else 0.0


def group_stats(
    params: PyTree,
    *,
    structure: Structure = Neurons(),  # noqa: B008 (frozen, immutable)
    prunable: Prunable = None,
    include_bias: bool = True,
    atol: float = 0.0,
) -> list[GroupStats]:
    """Per grouped leaf: number of groups and of removed (norm ``<= atol``) groups.

    With ``Neurons`` on conv kernels these are the filters removed per layer,
    with ``InputChannels`` the input channels (the columns of Wen et al. 2016,
    Table 1). Runs eagerly (returns Python numbers).
    """
    mask = groups_to_mask(params, structure=structure, prunable=prunable,
                          include_bias=include_bias, atol=atol)
    layout = _layout(params, structure, prunable, include_bias)
    rows = []
    for i, (name, m) in enumerate(named_leaves(mask)):
        if layout.grouped[i]:
            m = np.asarray(jax.device_get(m))
            rows.append(GroupStats(name, int(m.size), int(m.size - np.count_nonzero(m))))
    return rows


# --------------------------------------------------------------------------------------------
# proximal step
# --------------------------------------------------------------------------------------------


class ProximalGroupLassoState(NamedTuple):
    """State of :func:`proximal_group_lasso`: the step count (for a learning-rate schedule)."""

    count: jax.Array


def _value(x: ScalarOrSchedule, count: jax.Array) -> jax.Array:
    return jnp.asarray(x(count) if callable(x) else x, jnp.float32)


def proximal_group_lasso(
    learning_rate: ScalarOrSchedule,
    lam: float,
    *,
    structure: Structure = Neurons(),  # noqa: B008 (frozen, immutable)
    prunable: Prunable = None,
    include_bias: bool = True,
    l1: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Proximal step of the sparse group lasso, as the last transform of an optax chain.

    Let ``u`` be the incoming updates (the inner optimizer's step, already
    multiplied by ``-lr``) and ``z = params + u``. The transform returns
    ``prox(z) - params``, so that ``optax.apply_updates`` gives ``prox(z)``:

    1. L1 (if ``l1 > 0``): ``z_i ← sign(z_i)·max(0, |z_i| − lr·λ₁)`` on the grouped entries;
    2. group soft-thresholding: ``w_g ← max(0, 1 − lr·λ·√|g| / ‖z_g‖₂) · z_g``.

    Groups with ``‖z_g‖₂ ≤ lr·λ·√|g|`` become exact zeros (``p + (0 − p)`` is
    exactly ``0.0`` in IEEE arithmetic). Composed in this order, the two steps
    are the exact proximal operator of the sparse group lasso. With a plain SGD
    inner optimizer this is proximal gradient descent on
    ``loss + group_lasso_penalty``; with Adam it is the common "proximal Adam"
    heuristic (the threshold uses ``lr``, not Adam's per-coordinate step).

    ``learning_rate`` **must be the learning rate of the chain** (the same
    float or schedule given to the inner optimizer): the threshold of the
    proximal operator of ``lr·Ω`` is ``lr·λ``. The schedule is evaluated at
    this transform's own step count, which equals the inner optimizer's when
    both start together.

    Leaves that carry no group (and are not a joined bias) pass through unchanged.

    Args:
      learning_rate: float or optax schedule ``count -> lr``.
      lam: group strength λ ≥ 0.
      structure: the groups (see the module table).
      prunable: which leaves carry groups (``None``: float leaves with ``ndim >= 2``).
      include_bias: with ``Neurons``, biases join their units' groups.
      l1: L1 strength λ₁ ≥ 0 (sparse group lasso).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
      >>> tx = optax.chain(optax.sgd(0.1),
      ...                  proximal_group_lasso(0.1, 1e-3, prunable=r"layers/[01]/kernel"))

    References:
      Parikh & Boyd (2014), Proximal Algorithms, §6.5.4 (block soft thresholding).
      Simon et al. (2013), A sparse-group lasso (prox = L1 then group shrinkage).
      Scardapane et al. (2017), Group sparse regularization for deep neural networks.
    """
    lam = _check_scalar("lam", lam)
    l1 = _check_scalar("l1", l1)
    if not callable(learning_rate):
        _check_scalar("learning_rate", learning_rate)

    def init_fn(params):
        _layout(params, structure, prunable, include_bias)  # validate early
        return ProximalGroupLassoState(count=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("proximal_group_lasso needs params: call tx.update(grads, state, params)")
        layout = _layout(params, structure, prunable, include_bias)
        lr = _value(learning_rate, state.count)
        p_leaves = _leaves(params)
        u_leaves = jax.tree.leaves(updates)
        if len(u_leaves) != len(p_leaves):
            raise ValueError("updates and params have different trees")
        z = [(p.astype(jnp.float32) + jnp.asarray(u).astype(jnp.float32)) for p, u in
             zip(p_leaves, u_leaves, strict=True)]
        in_group = [g or (b is not None) for g, b in zip(layout.grouped, layout.bias_of, strict=True)]
        if l1 > 0:
            t1 = lr * l1
            z = [jnp.sign(x) * jnp.maximum(jnp.abs(x) - t1, 0.0) if g else x
                 for x, g in zip(z, in_group, strict=True)]
        sq = _squared_norms(layout, z, structure)
        factors: list[jax.Array | None] = [None] * len(z)
        for i, s in enumerate(sq):
            if s is None:
                continue
            thresh = lr * lam * math.sqrt(layout.group_size[i])
            norm = jnp.sqrt(s)
            factors[i] = jnp.where(norm > thresh, 1.0 - thresh / jnp.where(norm > 0, norm, 1.0), 0.0)
            j = layout.bias_for[i]
            if j is not None:
                factors[j] = factors[i].reshape(-1)
        out = []
        for p, u, x, f, g in zip(p_leaves, u_leaves, z, factors, in_group, strict=True):
            if not g:
                out.append(u)
                continue
            new = jnp.where(f > 0, f * x, 0.0).astype(p.dtype)
            out.append((new - p).astype(jnp.asarray(u).dtype))
        return jax.tree.unflatten(jax.tree.structure(updates), out), ProximalGroupLassoState(
            count=optax.safe_increment(state.count)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# choosing λ on a validation set
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LambdaSelection:
    """What :func:`select_lambda` chose, with every candidate's evidence (fractions, not pp).

    Attributes:
      lam: the selected λ, or ``None`` when no candidate passes.
      index: its position in the candidates as given (``None`` with ``lam``).
      lams: the candidates, in the order given.
      drops: validation accuracy of the reference minus the candidate's (negative: better).
      standard_errors: the standard error of each drop, paired over the examples.
      upper_bounds: ``drops + z · standard_errors``.
      accepted: ``upper_bound <= tolerance`` (and, ``sequential``, every smaller λ too).
      tolerance: the accuracy loss allowed.
      z: the margin in standard errors.
      num_examples: validation examples.
    """

    lam: float | None
    index: int | None
    lams: tuple[float, ...]
    drops: tuple[float, ...]
    standard_errors: tuple[float, ...]
    upper_bounds: tuple[float, ...]
    accepted: tuple[bool, ...]
    tolerance: float
    z: float
    num_examples: int


def _correctness(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(jax.device_get(value))
    if arr.dtype != np.bool_ or arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D bool array (per-example correctness, e.g. "
                         f"argmax(logits) == labels), got dtype {arr.dtype} and shape {arr.shape}")
    return arr


def select_lambda(
    lams: Any,
    correct: Any,
    reference_correct: Any,
    *,
    tolerance: float = 0.01,
    z: float = 1.645,
    sequential: bool = False,
) -> LambdaSelection:
    """The largest λ whose validation accuracy loss is within ``tolerance``, with a noise margin.

    "The largest λ within 1 pp of the dense model on validation" lets noise decide: on
    ``n`` validation examples one candidate's accuracy moves by ``1/n`` per example, and
    the strongest λ that looks fine is usually one that is lucky on this split. Here a
    candidate passes only if its loss is within ``tolerance`` *with a margin of* ``z``
    standard errors: with ``d_i = reference_correct_i − correct_i`` (in {−1, 0, 1}, both
    models scored on the same examples), ``drop = mean(d)``, ``SE = std(d, ddof=1)/√n``
    (the paired standard error, smaller than the unpaired one when the models agree on
    most examples) and the test is ``drop + z·SE <= tolerance`` (``z = 1.645``: a one-sided
    95 % upper confidence bound on the loss). The margin shrinks as ``1/√n``: with a
    disagreement rate ``q`` (the fraction of examples where exactly one model is right),
    ``z·SE ≈ z·√(q/n)``, so a margin of ``m`` needs ``n ≈ z²·q/m²`` validation examples
    (``q = 4 %``, ``z = 1.645``, ``m = 0.5 pp``: about 4,300).

    With ``sequential=True`` the candidates are tested in increasing λ and the first
    failure stops the search (fixed-sequence testing: the chance that any accepted λ has a
    true loss above ``tolerance`` stays at the one-sided level of ``z``, as in the
    "Learn then Test" calibration of Angelopoulos et al. 2021); the default accepts every
    λ whose own bound holds.

    Args:
      lams: the candidate strengths (finite, ``>= 0``, distinct; any order).
      correct: per candidate, ``bool[n]`` per-example correctness on the validation set
        (a sequence of arrays or a ``bool[len(lams), n]`` array).
      reference_correct: ``bool[n]``, the reference (dense) model on the same examples.
      tolerance: accuracy loss allowed, a fraction in ``[0, 1)`` (0.01 = 1 pp).
      z: margin in standard errors, ``>= 0`` (0 gives the plain rule).
      sequential: fixed-sequence testing in increasing λ.

    Returns:
      A :class:`LambdaSelection`.

    Raises:
      ValueError: empty or non-distinct ``lams``, a λ negative or not finite, a
        correctness array that is not ``bool[n]`` with the reference's ``n >= 2``, one per
        λ; ``tolerance`` outside ``[0, 1)``, ``z`` negative or not finite.

    Example:
      >>> ref = np.ones(1000, bool)
      >>> cands = [ref, np.arange(1000) >= 5, np.arange(1000) >= 20]  # 0, 0.5, 2 pp worse
      >>> select_lambda([0.01, 0.03, 0.1], cands, ref).lam  # 0.5 + 1.645 · 0.22 <= 1 pp
      0.03

    References:
      Angelopoulos, Bates, Candès, Jordan & Lei (2021), Learn then Test: Calibrating
      Predictive Algorithms to Achieve Risk Control (fixed-sequence testing).
    """
    lam_list = [_check_scalar(f"lams[{i}]", v) for i, v in enumerate(np.ravel(lams).tolist())]
    if not lam_list:
        raise ValueError("lams is empty: give at least one candidate λ")
    if len(set(lam_list)) != len(lam_list):
        raise ValueError(f"lams must be distinct, got {lam_list}")
    tolerance = _check_scalar("tolerance", tolerance)
    if tolerance >= 1:
        raise ValueError(f"tolerance is a fraction of accuracy in [0, 1), got {tolerance!r}")
    z = _check_scalar("z", z)
    if not isinstance(sequential, bool):
        raise TypeError(f"sequential must be a bool, got {sequential!r}")
    ref = _correctness("reference_correct", reference_correct)
    n = ref.shape[0]
    if n < 2:
        raise ValueError(f"reference_correct has {n} examples; a standard error needs >= 2")
    rows = list(correct)
    if len(rows) != len(lam_list):
        raise ValueError(f"correct has {len(rows)} rows for {len(lam_list)} lams: one per λ")
    drops, ses = [], []
    for i, row in enumerate(rows):
        c = _correctness(f"correct[{i}]", row)
        if c.shape[0] != n:
            raise ValueError(f"correct[{i}] has {c.shape[0]} examples, reference_correct {n}")
        d = ref.astype(np.float64) - c.astype(np.float64)
        drops.append(float(d.mean()))
        ses.append(float(d.std(ddof=1) / math.sqrt(n)))
    bounds = [d + z * se for d, se in zip(drops, ses, strict=True)]
    passes = [b <= tolerance for b in bounds]
    if sequential:
        for i in sorted(range(len(lam_list)), key=lam_list.__getitem__):
            if not passes[i]:
                passes = [p and lam_list[j] < lam_list[i] for j, p in enumerate(passes)]
                break
    chosen = [i for i, ok in enumerate(passes) if ok]
    index = max(chosen, key=lam_list.__getitem__) if chosen else None
    return LambdaSelection(
        lam=None if index is None else lam_list[index], index=index, lams=tuple(lam_list),
        drops=tuple(drops), standard_errors=tuple(ses), upper_bounds=tuple(bounds),
        accepted=tuple(passes), tolerance=tolerance, z=z, num_examples=n,
    )
