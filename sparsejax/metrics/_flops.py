"""FLOPs (multiply-accumulates) of a forward pass, counted by tracing it to a jaxpr."""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

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
from sparsejax.tree import PyTree, named_leaves

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


def _nnx_module(x: Any) -> Any:
    """``flax.nnx`` if ``x`` is an NNX module (without importing Flax otherwise), else None."""
    nnx = sys.modules.get("flax.nnx")
    return nnx if nnx is not None and isinstance(x, nnx.Module) else None


def flops(
    apply_fn: Callable[..., Any], params: PyTree = None, *inputs: Any, mask: PyTree | None = None
) -> FlopsReport:
    """Dense and nonzero FLOPs (multiply-accumulates) of ``apply_fn(params, *inputs)``.

    An NNX model is counted directly: ``flops(model, x)`` (or ``flops(model, x,
    mask=mask)`` with a mask mirroring ``nnx.state(model, nnx.Param)``) traces
    ``model(x)`` in eval mode with its parameters as ``params``.

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
        ``lambda state, x: nnx.merge(graphdef, state)(x)``; or an ``nnx.Module`` (then
        the positional arguments after it are its inputs). Parameters must be passed in
        ``params``, not closed over (closed-over weights appear as :data:`NO_PARAMETER`).
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

    Example:
      >>> from flax import nnx
      >>> from sparsejax.models import LeNet300100
      >>> flops(LeNet300100(rngs=nnx.Rngs(0)), jnp.ones((1, 784))).total_flops
      266200

    References:
      Blalock et al. "What is the State of Neural Network Pruning?". MLSys 2020.
    """
    nnx = _nnx_module(apply_fn)
    if nnx is not None:
        model = nnx.clone(apply_fn)
        model.eval()
        inputs = inputs if params is None else (params, *inputs)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def apply_fn(p, *xs):
            return nnx.merge(graphdef, p, rest, copy=True)(*xs)

    elif params is None:
        raise TypeError("flops(apply_fn, params, *inputs): params is required for a function")
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
