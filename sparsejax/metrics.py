"""Metrics of pruned networks: size, compression, FLOPs, theoretical speedup, classification.

Size and FLOP metrics follow ShrinkBench (Blalock et al. 2020), the reference for reporting
pruning results:

* **compression ratio** = (number of parameters) / (number of nonzero parameters), over
  *all* parameters, biases and normalisation scales included (``prunable`` narrows it);
* **FLOPs** = multiply-accumulates (MACs) of the dense and convolution layers — one
  multiply-add counts as one FLOP, as in ShrinkBench's ``dense_flops`` / ``conv2d_flops``;
  multiply by 2 for the "two FLOPs per MAC" convention. Biases, activations, normalisation
  and pooling are not counted;
* **nonzero FLOPs** of a layer = FLOPs × density of its weight (ShrinkBench's rule of three:
  every weight takes part in the same number of MACs, exactly so for dense layers and for
  convolutions without padding effects), and **theoretical speedup** = dense FLOPs /
  nonzero FLOPs.

FLOPs are derived *generically* by tracing the model's forward pass with
:func:`jax.make_jaxpr`: no per-layer-type table, so any model built from ``dot_general``
(``Dense``, ``Einsum``, attention projections) and ``conv_general_dilated`` is covered, in
Linen, NNX (``nnx.split`` / ``nnx.merge``) or plain JAX. The per-parameter size table is
:func:`sparsejax.masks.summary` / :func:`sparsejax.masks.format_summary`.

Classification metrics (accuracy, per-class and macro precision / recall / F1, confusion
matrix) are pure, ``jit``-compatible (``num_classes`` static) and follow scikit-learn's
definitions with ``zero_division=0``.

References:
  Blalock, Gonzalez Ortiz, Frankle, Guttag. "What is the State of Neural Network Pruning?".
  MLSys 2020 (ShrinkBench).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

try:  # jax >= 0.8
    from jax.extend.core import jaxprs_in_params
except ImportError:  # jax 0.7: the same walk over an equation's parameters

    def jaxprs_in_params(params):
        """Every ``Jaxpr`` among ``params``' values (also inside tuples / lists)."""
        for value in params.values():
            items = value if isinstance(value, (tuple, list)) else (value,)
            for item in items:
                if isinstance(item, ClosedJaxpr):
                    yield item.jaxpr
                elif isinstance(item, Jaxpr):
                    yield item

from sparsejax.masks import summary
from sparsejax.tree import Prunable, PyTree, named_leaves, prunable_tree

__all__ = [
    "NO_PARAMETER",
    "ClassificationMetrics",
    "FlopsReport",
    "FlopsRow",
    "accuracy",
    "classification_metrics",
    "compression_ratio",
    "confusion_matrix",
    "flops",
    "format_flops",
    "metrics_from_confusion",
    "num_nonzero",
    "num_params",
    "pareto_front",
]


def _all_leaves(path: str, leaf: Any) -> bool:
    del path, leaf
    return True


# --------------------------------------------------------------------------------------------
# Size and compression
# --------------------------------------------------------------------------------------------


def _selected(params: PyTree, prunable: Prunable) -> list[bool]:
    return jax.tree.leaves(prunable_tree(params, prunable))


def num_params(params: PyTree, prunable: Prunable = _all_leaves) -> int:
    """Number of parameter entries (default: every leaf; pass ``prunable`` to restrict).

    Pass only parameters (e.g. ``nnx.state(model, nnx.Param)``), not batch statistics or
    RNG counters. Pure; runs on shapes only, so abstract leaves work too.
    """
    leaves = jax.tree.leaves(params)
    return sum(
        int(np.prod(np.shape(p), dtype=np.int64))
        for p, keep in zip(leaves, _selected(params, prunable), strict=True)
        if keep
    )


def num_nonzero(params: PyTree, mask: PyTree | None = None, prunable: Prunable = _all_leaves) -> int:
    """Number of nonzero entries of ``apply_mask(params, mask)`` (or of ``params``).

    Counts *values*, like ShrinkBench's ``nonzero``: a kept weight that happens to be exactly
    ``0.0`` is not counted. Eager: per-leaf counts of :func:`sparsejax.masks.summary` summed
    into a Python ``int``.
    """
    rows = summary(params, mask)
    return sum(r.nonzero for r, keep in zip(rows, _selected(params, prunable), strict=True) if keep)


def compression_ratio(
    params: PyTree, mask: PyTree | None = None, prunable: Prunable = _all_leaves
) -> float:
    """ShrinkBench's compression ratio: ``num_params / num_nonzero`` (``inf`` if all zero).

    Args:
      params: parameter pytree.
      mask: optional mask pytree (applied before counting).
      prunable: leaves to count; the default (all leaves) is ShrinkBench's whole-model ratio.

    Returns:
      ``>= 1.0`` for any mask; e.g. ``10.0`` when 90 % of all parameters are zero.
    """
    total = num_params(params, prunable)
    if total == 0:
        raise ValueError("compression_ratio: the selected parameters are empty")
    nonzero = num_nonzero(params, mask, prunable)
    return math.inf if nonzero == 0 else total / nonzero


# --------------------------------------------------------------------------------------------
# FLOPs by tracing
# --------------------------------------------------------------------------------------------

NO_PARAMETER = "<no parameter>"
"""Row path for matrix products whose operands are both activations (e.g. attention's
``q @ kᵀ``): counted in the totals, never reduced by weight pruning (density 1)."""

# Primitives whose output is a re-layout / re-typing / slice of their first operand: a
# weight that passes through them is still that weight.
_FOLLOW_FIRST = frozenset(
    {
        "reshape",
        "convert_element_type",
        "transpose",
        "broadcast_in_dim",
        "squeeze",
        "expand_dims",
        "copy",
        "copy_p",
        "reduce_precision",
        "rev",
        "slice",
        "dynamic_slice",
        "sharding_constraint",
        "neg",
    }
)
# Primitives whose outputs correspond one to one to their operands.
_FOLLOW_EACH = frozenset({"optimization_barrier", "device_put"})


@dataclasses.dataclass(frozen=True)
class FlopsRow:
    """FLOPs (multiply-accumulates) attributed to one parameter leaf.

    Attributes:
      path: the parameter's path string (``sparsejax.tree.path_str``), or
        :data:`NO_PARAMETER`.
      flops: dense MACs of every ``dot_general`` / ``conv_general_dilated`` whose weight
        operand is this parameter, for the traced inputs (all examples of the batch).
      nonzero_flops: ``flops * density``.
      density: fraction of the parameter's entries kept (kept by the mask, or nonzero when no
        mask is given).
    """

    path: str
    flops: int
    nonzero_flops: float
    density: float


@dataclasses.dataclass(frozen=True)
class FlopsReport:
    """Per-layer FLOPs of one traced forward pass (see :func:`flops`)."""

    rows: tuple[FlopsRow, ...]

    @property
    def total_flops(self) -> int:
        """Dense MACs of the whole forward pass."""
        return sum(r.flops for r in self.rows)

    @property
    def nonzero_flops(self) -> float:
        """MACs that involve a kept weight (ShrinkBench's nonzero FLOPs)."""
        return float(sum(r.nonzero_flops for r in self.rows))

    @property
    def theoretical_speedup(self) -> float:
        """``total_flops / nonzero_flops`` (ShrinkBench); ``inf`` when nothing is kept."""
        nz = self.nonzero_flops
        return math.inf if nz == 0 else self.total_flops / nz

    def by_path(self) -> dict[str, FlopsRow]:
        """The rows keyed by path."""
        return {r.path: r for r in self.rows}


def _dot_macs(eqn: Any) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    out = int(np.prod(eqn.outvars[0].aval.shape, dtype=np.int64))
    return out * int(np.prod([lhs_shape[d] for d in lhs_contract], dtype=np.int64))


def _conv_macs(eqn: Any) -> int:
    # Each output element is a dot product over the kernel window × input features per group.
    rhs_shape = eqn.invars[1].aval.shape
    out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    out = int(np.prod(eqn.outvars[0].aval.shape, dtype=np.int64))
    per_output = int(np.prod(rhs_shape, dtype=np.int64)) // int(rhs_shape[out_feature_dim])
    return out * per_output


def _unique(origins: Sequence[int | None]) -> int | None:
    found = {o for o in origins if o is not None}
    return found.pop() if len(found) == 1 else None


def _scan_num_carry(outvars: Sequence[Any], body_outvars: Sequence[Any]) -> int:
    """How many of a ``scan``'s outputs are carries, from the avals alone.

    The outputs are the carries, each with its body output's shape, then the stacked
    ``ys``, each with one more (leading, ``length``) axis than its body output; so the
    carries are the leading outputs whose shape equals the body's. (jax < 0.11 also
    records this as the equation's ``num_carry`` parameter; newer versions do not.)
    """
    n = 0
    for out, body_out in zip(outvars, body_outvars, strict=True):
        if out.aval.shape != body_out.aval.shape:
            break
        n += 1
    return n


def _walk(
    jaxpr: Jaxpr, origins: Sequence[int | None], multiplier: int, acc: collections.Counter
) -> list[int | None]:
    """Accumulate MACs per origin (parameter leaf index or ``None``); return outvar origins."""
    env: dict[Any, int | None] = dict(zip(jaxpr.invars, origins, strict=True))

    def origin(atom: Any) -> int | None:
        return None if isinstance(atom, Literal) else env.get(atom)

    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        ins = [origin(a) for a in eqn.invars]
        outs: list[int | None] = [None] * len(eqn.outvars)
        if name in ("dot_general", "conv_general_dilated"):
            macs = _dot_macs(eqn) if name == "dot_general" else _conv_macs(eqn)
            # The weight is the rhs in Flax's ``x @ kernel`` / ``conv(x, kernel)``; fall back
            # to the lhs for ``kernel @ x`` layouts.
            acc[ins[1] if ins[1] is not None else ins[0]] += macs * multiplier
        elif name in _FOLLOW_FIRST:
            outs[0] = ins[0]
        elif name == "mul":
            outs[0] = _unique(ins)
        elif name == "select_n":  # jnp.where(mask, w, 0) inside a model
            outs[0] = _unique(ins[1:])
        elif name in _FOLLOW_EACH:
            outs = list(ins)
        elif name == "scan":
            body = eqn.params["jaxpr"].jaxpr
            sub_outs = _walk(body, ins, multiplier * eqn.params["length"], acc)
            carries = _scan_num_carry(eqn.outvars, body.outvars)
            outs = sub_outs[:carries] + [None] * (len(outs) - carries)
        elif name == "cond":
            # Data-dependent branch: count the most expensive branch (an upper bound).
            best: collections.Counter | None = None
            for branch in eqn.params["branches"]:
                branch_acc: collections.Counter = collections.Counter()
                _walk(branch.jaxpr, ins[1:], multiplier, branch_acc)
                if best is None or sum(branch_acc.values()) > sum(best.values()):
                    best = branch_acc
            acc.update(best or {})
        elif name == "while":
            probe: collections.Counter = collections.Counter()
            _walk(eqn.params["body_jaxpr"].jaxpr, [None] * len(eqn.params["body_jaxpr"].jaxpr.invars), 1, probe)
            if sum(probe.values()):
                raise ValueError(
                    "flops: a while_loop contains matrix products, but its trip count is not "
                    "static; use lax.scan or fori_loop with Python-int bounds"
                )
        else:
            subs = list(jaxprs_in_params(eqn.params))
            if not subs:
                continue
            sub = subs[0]
            same = len(subs) == 1 and len(sub.invars) == len(eqn.invars) and all(
                getattr(s.aval, "shape", None) == getattr(a.aval, "shape", None)
                for s, a in zip(sub.invars, eqn.invars, strict=True)
            )
            if not same:
                raise ValueError(
                    f"flops: cannot follow the operands of primitive {name!r} into its "
                    "sub-computation (its inputs are not passed one to one)"
                )
            sub_outs = _walk(sub, ins, multiplier, acc)
            if len(sub_outs) == len(outs):
                outs = sub_outs
        for v, o in zip(eqn.outvars, outs, strict=True):
            env[v] = o
    return [origin(v) for v in jaxpr.outvars]


def flops(
    apply_fn: Callable[..., Any], params: PyTree, *inputs: Any, mask: PyTree | None = None
) -> FlopsReport:
    """Dense and nonzero FLOPs (multiply-accumulates) of ``apply_fn(params, *inputs)``.

    The call is traced once with :func:`jax.make_jaxpr` (nothing is computed). Every
    ``dot_general`` and ``conv_general_dilated`` of the jaxpr — inside ``jit``,
    ``custom_jvp`` / ``custom_vjp``, ``remat`` and ``scan`` bodies (× trip count) — is
    counted as MACs: ``prod(output shape) × contraction size``. It is attributed to the
    parameter leaf feeding its weight operand, followed back through reshapes, casts,
    transposes, broadcasts, slices and masking (``mul``, ``select_n``) to a floating-point
    leaf of ``params``. A ``cond`` counts its most expensive branch.

    Counts cover the whole traced batch: trace with **one example** for ShrinkBench's
    per-example numbers. For an MLP ``784-300-10`` on a batch of 1: ``784·300 + 300·10 =
    238,200``; a 3×3 SAME convolution on 8×8×1 → 4 channels: ``8·8·9·1·4 = 2,304`` (padding
    taps counted, as ShrinkBench does).

    Args:
      apply_fn: ``apply_fn(params, *inputs)``; e.g. ``model.apply`` (Linen) or
        ``lambda state, x: nnx.merge(graphdef, state)(x)`` (NNX). Parameters must be passed
        in ``params``, not closed over (closed-over weights appear as :data:`NO_PARAMETER`).
      params: the parameter pytree (concrete arrays: densities are read from them).
      *inputs: example inputs (arrays or ``jax.ShapeDtypeStruct``).
      mask: optional mask mirroring ``params``. A layer's density is the fraction of entries
        the mask keeps; without a mask, the fraction of nonzero weights (ShrinkBench's
        ``w != 0``).

    Returns:
      A :class:`FlopsReport`: one :class:`FlopsRow` per parameter with FLOPs, in
      ``jax.tree.leaves`` order, then one :data:`NO_PARAMETER` row if any product had no
      parameter operand; ``total_flops``, ``nonzero_flops`` and ``theoretical_speedup``.

    Raises:
      ValueError: a ``while_loop`` containing matrix products, or a primitive whose
        sub-computation cannot be followed.

    References:
      Blalock et al. "What is the State of Neural Network Pruning?". MLSys 2020.
    """
    closed = jax.make_jaxpr(apply_fn)(params, *inputs)
    names = named_leaves(params)
    origins: list[int | None] = [
        i if jnp.issubdtype(jnp.result_type(leaf), jnp.floating) else None
        for i, (_, leaf) in enumerate(names)
    ]
    input_leaves = len(closed.jaxpr.invars) - len(origins)
    acc: collections.Counter = collections.Counter()
    _walk(closed.jaxpr, origins + [None] * input_leaves, 1, acc)
    stats = summary(params, mask)
    rows = []
    for i, (name, _) in enumerate(names):
        if acc.get(i, 0):
            s = stats[i]
            kept = s.kept if mask is not None else s.nonzero
            density = kept / s.size if s.size else 1.0
            rows.append(FlopsRow(name, int(acc[i]), acc[i] * density, density))
    if acc.get(None, 0):
        rows.append(FlopsRow(NO_PARAMETER, int(acc[None]), float(acc[None]), 1.0))
    return FlopsReport(tuple(rows))


def format_flops(report: FlopsReport) -> str:
    """A markdown table of a :class:`FlopsReport` with a total line and the speedup."""
    lines = [
        "| path | FLOPs (MACs) | density | nonzero FLOPs |",
        "|---|---:|---:|---:|",
    ]
    for r in report.rows:
        lines.append(f"| {r.path} | {r.flops:,} | {r.density:.2%} | {r.nonzero_flops:,.0f} |")
    lines.append(
        f"| **total** | {report.total_flops:,} | | {report.nonzero_flops:,.0f} |\n\n"
        f"theoretical speedup: {report.theoretical_speedup:.2f}×"
    )
    return "\n".join(lines)


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points when *both* coordinates are to be maximised.

    For trade-off curves such as (compression ratio, accuracy) or (theoretical speedup,
    accuracy) over a sweep of sparsities and methods (ShrinkBench, Blalock et al. 2020, Fig.
    5). Point ``i`` is dominated when some ``j`` has ``x_j >= x_i`` and ``y_j >= y_i`` with
    one inequality strict; of exactly equal points only the first is kept. Pure.

    Returns:
      The indices of the front, ordered by increasing ``x`` (hence decreasing ``y``).

    Example:
      >>> pareto_front([1, 2, 3, 2], [0.9, 0.8, 0.5, 0.7])
      [0, 1, 2]
    """
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"xs and ys must be 1-D of equal length, got {x.shape} and {y.shape}")
    bad = np.flatnonzero(np.isnan(x) | np.isnan(y))
    if bad.size:
        raise ValueError(f"pareto_front: NaN coordinate at index {int(bad[0])}")
    order = np.lexsort((np.arange(x.size), -y, -x))  # x desc, then y desc, then index asc
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(int(i))
            best = y[i]
    return front[::-1]


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


class ClassificationMetrics(NamedTuple):
    """Classification metrics (a pytree: returnable from ``jit``).

    Attributes:
      accuracy: ``f32[]`` fraction of correct predictions (= micro-averaged P = R = F1).
      precision: ``f32[C]`` ``tp / (tp + fp)``, 0 for a class never predicted.
      recall: ``f32[C]`` ``tp / (tp + fn)``, 0 for a class absent from the labels.
      f1: ``f32[C]`` ``2 tp / (2 tp + fp + fn)``, 0 when the denominator is 0.
      support: ``i32[C]`` number of examples of each true class.
      macro_precision: ``f32[]`` unweighted mean of ``precision`` over all ``C`` classes.
      macro_recall: ``f32[]``.
      macro_f1: ``f32[]`` mean of the per-class F1 (scikit-learn's ``average="macro"``).
      confusion: ``i32[C, C]``, rows = true class, columns = predicted class.
    """

    accuracy: jax.Array
    precision: jax.Array
    recall: jax.Array
    f1: jax.Array
    support: jax.Array
    macro_precision: jax.Array
    macro_recall: jax.Array
    macro_f1: jax.Array
    confusion: jax.Array


def _as_predictions(logits_or_predictions: Any, labels: Any) -> tuple[jax.Array, jax.Array, bool]:
    """Validate shapes / dtypes; return ``(outputs, labels, outputs_are_logits)``."""
    out = jnp.asarray(logits_or_predictions)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if out.shape == labels.shape:
        if not jnp.issubdtype(out.dtype, jnp.integer):
            raise TypeError(
                f"predictions with the labels' shape {labels.shape} must be integer class "
                f"indices, got dtype {out.dtype}; pass logits with a trailing class axis"
            )
        return out, labels, False
    if out.shape[:-1] == labels.shape:
        return out, labels, True
    raise ValueError(
        f"logits_or_predictions has shape {out.shape}; expected the labels' shape "
        f"{labels.shape} (predictions) or {(*labels.shape, 'C')} (logits)"
    )


def _check_where(where: Any, labels: jax.Array) -> jax.Array:
    if where is None:
        return jnp.ones(labels.shape, bool)
    where = jnp.asarray(where)
    if where.shape != labels.shape or where.dtype != jnp.bool_:
        raise ValueError(
            f"where must be a bool array of the labels' shape {labels.shape}, "
            f"got {where.dtype}{list(where.shape)}"
        )
    return where


def _check_range(arr: jax.Array, what: str, num_classes: int) -> None:
    """Eagerly (never under a trace) reject class indices outside ``[0, num_classes)``."""
    if isinstance(arr, jax.core.Tracer) or arr.size == 0:
        return
    host = np.asarray(arr)
    lo, hi = int(host.min()), int(host.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{what} take values in [{lo}, {hi}], outside [0, num_classes={num_classes})"
        )


# The array work is jitted as a whole (one compilation per shape) so that eager calls do not
# dispatch and compile a dozen small ops; under an outer ``jit`` these inline.
@functools.partial(jax.jit, static_argnames=("logits",))
def _accuracy(out: jax.Array, labels: jax.Array, where: jax.Array, logits: bool) -> jax.Array:
    preds = jnp.argmax(out, axis=-1) if logits else out
    correct = jnp.sum((preds == labels) & where, dtype=jnp.int32)
    count = jnp.sum(where, dtype=jnp.int32)
    return jnp.where(count > 0, correct / jnp.maximum(count, 1), 0.0).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("num_classes", "logits"))
def _confusion(
    out: jax.Array, labels: jax.Array, where: jax.Array, num_classes: int, logits: bool
) -> jax.Array:
    preds = jnp.argmax(out, axis=-1) if logits else out
    preds, labels, where = preds.reshape(-1), labels.reshape(-1), where.reshape(-1)
    valid = where & (labels >= 0) & (labels < num_classes) & (preds >= 0) & (preds < num_classes)
    index = jnp.where(valid, labels * num_classes + preds, 0)
    counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index].add(valid.astype(jnp.int32))
    return counts.reshape(num_classes, num_classes)


def accuracy(logits_or_predictions: Any, labels: Any, where: Any | None = None) -> jax.Array:
    """Fraction of correct predictions (``f32[]``; 0 when ``where`` selects nothing).

    Args:
      logits_or_predictions: ``float[..., C]`` logits (argmax taken, first maximum on ties)
        or ``int[...]`` predicted classes.
      labels: ``int[...]`` true classes.
      where: optional ``bool[...]``: examples to count (e.g. to ignore padding of a last
        evaluation batch).

    Pure and ``jit``-compatible.
    """
    out, labels, logits = _as_predictions(logits_or_predictions, labels)
    return _accuracy(out, labels, _check_where(where, labels), logits)


def confusion_matrix(
    logits_or_predictions: Any, labels: Any, num_classes: int, where: Any | None = None
) -> jax.Array:
    """Confusion counts ``i32[C, C]``: entry ``[i, j]`` = examples of true class ``i``
    predicted as ``j`` (scikit-learn's layout).

    Confusion matrices of several batches add up; :func:`metrics_from_confusion` turns the
    sum into metrics. Pure and ``jit``-compatible with ``num_classes`` static. Eagerly, labels
    or predictions outside ``[0, num_classes)`` raise a ``ValueError``; under ``jit`` they are
    not counted.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive Python int (static), got {num_classes!r}")
    out, labels, logits = _as_predictions(logits_or_predictions, labels)
    where = _check_where(where, labels)
    if logits and out.shape[-1] != num_classes:
        raise ValueError(f"logits have {out.shape[-1]} classes, num_classes={num_classes}")
    _check_range(labels, "labels", num_classes)
    if not logits:
        _check_range(out, "predictions", num_classes)
    return _confusion(out, labels, where, num_classes, logits)


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    num, den = num.astype(jnp.float32), den.astype(jnp.float32)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


@jax.jit
def _from_confusion(cm: jax.Array) -> ClassificationMetrics:
    cm = cm.astype(jnp.int32)
    tp = jnp.diagonal(cm)
    predicted = jnp.sum(cm, axis=0)
    support = jnp.sum(cm, axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, predicted + support)
    return ClassificationMetrics(
        accuracy=_safe_div(jnp.sum(tp), jnp.sum(cm)),
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        macro_precision=jnp.mean(precision),
        macro_recall=jnp.mean(recall),
        macro_f1=jnp.mean(f1),
        confusion=cm,
    )


def metrics_from_confusion(confusion: Any) -> ClassificationMetrics:
    """:class:`ClassificationMetrics` from a confusion matrix ``int[C, C]`` (rows = true).

    Zero-division convention: a ratio with a zero denominator is 0 (scikit-learn's
    ``zero_division=0``); macro averages include every one of the ``C`` classes (like
    scikit-learn with ``labels=range(C)``). Pure and ``jit``-compatible.
    """
    cm = jnp.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be a square [C, C] matrix, got shape {cm.shape}")
    return _from_confusion(cm)


def classification_metrics(
    logits_or_predictions: Any, labels: Any, num_classes: int, where: Any | None = None
) -> ClassificationMetrics:
    """Accuracy, per-class and macro precision / recall / F1, support and confusion matrix.

    ``metrics_from_confusion(confusion_matrix(...))``; see :func:`confusion_matrix` for the
    arguments. Matches ``sklearn.metrics.precision_recall_fscore_support(labels, preds,
    labels=range(C), zero_division=0)``. Pure and ``jit``-compatible (``num_classes``
    static: ``jax.jit(classification_metrics, static_argnames="num_classes")``).
    """
    return metrics_from_confusion(confusion_matrix(logits_or_predictions, labels, num_classes, where))
