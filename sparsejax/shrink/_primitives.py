"""How each jaxpr primitive carries unit labels: the walk of the coupling analysis.

:class:`JaxprWalker` visits the equations of a traced forward pass in order. Elementwise
operations, broadcasts, reshapes (flattens), transposes, pools and reductions over
*other* axes carry labels; ``dot_general`` / ``conv_general_dilated`` contract them
(making the next layer's input rows members) and start new groups on their free weight
axes; call-like primitives (``jit``, ``custom_jvp``, remat) are walked into. Whatever
cannot be followed blocks the group it touches, naming the primitive.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

from sparsejax.shrink._coupling import AxisLabel, GroupUnion, LeafAxis

# Unary primitives with f(0) = 0 (the removed units stay exactly zero).
_ZERO_KEEPING = frozenset(
    """neg tanh sin tan asin atan sinh asinh atanh sqrt cbrt abs sign erf erf_inv expm1 log1p
    round floor ceil convert_element_type copy copy_p stop_gradient reduce_precision real
    square integer_pow optimization_barrier""".split()
)
_OTHER_UNARY = frozenset(
    """exp exp2 log logistic cos cosh acos acosh rsqrt is_finite not imag conj erfc lgamma
    digamma bessel_i0e bessel_i1e population_count clz""".split()
)
_MUL_LIKE = frozenset({"mul", "and"})
_ADD_LIKE = frozenset({"add", "sub", "max", "min", "or", "xor", "add_any", "nextafter"})
_OTHER_BINARY = frozenset(
    """pow atan2 rem eq ne lt le gt ge shift_left shift_right_logical shift_right_arithmetic
    polygamma igamma igammac zeta""".split()
)
_REDUCE = frozenset(
    {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
     "argmax", "argmin"}
)  # fmt: skip
_CUMULATIVE = frozenset({"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})
_LOOPS = frozenset({"scan", "while", "cond"})


def _is_zero_literal(atom: Any) -> bool:
    return isinstance(atom, Literal) and bool(np.all(np.asarray(atom.val) == 0))


def _zero_of(atom: Any, ax: AxisLabel | None) -> bool:
    """Whether an operand is exactly zero at the removed units (literal 0 or a zero label)."""
    if isinstance(atom, Literal):
        return _is_zero_literal(atom)
    return bool(ax is not None and ax.zero)


def _reshape_component(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...], a: int, outer: int, n: int, inner: int
) -> tuple[int, int, int] | None:
    """New ``(axis, outer, inner)`` of a unit pattern on axis ``a`` after a reshape."""
    cin = [1]
    for s in in_shape:
        cin.append(cin[-1] * s)
    cout = [1]
    for s in out_shape:
        cout.append(cout[-1] * s)
    outs = set(cout)
    s = max(i for i in range(a + 1) if cin[i] in outs)
    e = min(i for i in range(a + 1, len(in_shape) + 1) if cin[i] in outs)
    bs = cout.index(cin[s])
    be = len(cout) - 1 - cout[::-1].index(cin[e])
    out_axes = [b for b in range(bs, be) if out_shape[b] != 1]
    if e - s >= 1 and len(out_axes) == 1:  # identity, merge or size-1 insertions
        return out_axes[0], outer * math.prod(in_shape[s:a]), inner * math.prod(in_shape[a + 1 : e])
    if e - s == 1 and len(out_axes) > 1:  # split of axis a: find the unit factor
        prod = 1
        for b in out_axes:
            if prod == outer and out_shape[b] == n and prod * n * inner == in_shape[a]:
                return b, 1, 1
            prod *= out_shape[b]
    return None


class JaxprWalker:
    def __init__(self, tracer: GroupUnion):
        self.t = tracer

    def labels(self, env: dict, atom: Any) -> dict[int, AxisLabel]:
        if isinstance(atom, Literal):
            return {}
        return env.get(atom, {})

    def walk(self, jaxpr: Jaxpr, in_labels: Sequence[dict[int, AxisLabel]]) -> list[dict[int, AxisLabel]]:
        env: dict[Any, dict[int, AxisLabel]] = {}
        for v, lab in zip(jaxpr.invars, in_labels, strict=True):
            env[v] = lab
        for eqn in jaxpr.eqns:
            outs = self.eqn(eqn, env)
            for v, lab in zip(eqn.outvars, outs, strict=True):
                env[v] = lab
        return [self.labels(env, v) for v in jaxpr.outvars]

    # ---------------------------------------------------------------------------
    def eqn(self, eqn: Any, env: dict) -> list[dict[int, AxisLabel]]:
        name = eqn.primitive.name
        ins = [self.labels(env, a) for a in eqn.invars]
        nout = len(eqn.outvars)
        if not any(ins):
            return [{} for _ in range(nout)]
        where = f"primitive {name!r}"
        t = self.t
        if name in _ZERO_KEEPING or name in _OTHER_UNARY:
            keep = name in _ZERO_KEEPING and not (
                name == "integer_pow" and eqn.params.get("y", 1) <= 0
            )
            return [{k: dataclasses.replace(a, zero=a.zero and keep) for k, a in ins[0].items()}]
        if (
            name in _MUL_LIKE
            or name in _ADD_LIKE
            or name in _OTHER_BINARY
            or name in ("div", "select_n", "clamp")
        ):
            return [self.elementwise(eqn, ins, name)]
        if name == "broadcast_in_dim":
            out_shape = eqn.outvars[0].aval.shape
            in_shape = eqn.invars[0].aval.shape
            dims = eqn.params["broadcast_dimensions"]
            res = {}
            for k, a in ins[0].items():
                if in_shape[k] == out_shape[dims[k]]:
                    res[dims[k]] = a
            return [res]
        if name == "transpose":
            perm = eqn.params["permutation"]
            inv = {p: k for k, p in enumerate(perm)}
            return [{inv[k]: a for k, a in ins[0].items()}]
        if name == "squeeze":
            dims = {d % eqn.invars[0].aval.ndim for d in eqn.params["dimensions"]}
            kept = [k for k in range(eqn.invars[0].aval.ndim) if k not in dims]
            return [{kept.index(k): a for k, a in ins[0].items() if k in kept}]
        if name == "expand_dims":
            return [self.reshape(eqn, ins[0])]
        if name == "reshape":
            if eqn.params.get("dimensions") is not None:
                return [self.fallback(eqn, ins, f"{where} with dimensions")]
            return [self.reshape(eqn, ins[0])]
        if name in _REDUCE:
            axes = {int(x) for x in eqn.params["axes"]}
            kept = [k for k in range(eqn.invars[0].aval.ndim) if k not in axes]
            res = {}
            for k, a in ins[0].items():
                if k in axes:
                    t.drop(a, f"{where} reduces over its units (a LayerNorm or softmax over them?)")
                else:
                    res[kept.index(k)] = (
                        a if name.startswith("reduce") else dataclasses.replace(a, zero=False)
                    )
            return [res]
        if name in _CUMULATIVE:
            axis = eqn.params["axis"]
            res = {}
            for k, a in ins[0].items():
                if k == axis:
                    t.drop(a, f"{where} accumulates over its units")
                else:
                    res[k] = dataclasses.replace(a, zero=False)
            return [res]
        if name in ("reduce_window_max", "reduce_window_min", "reduce_window_sum"):
            p = eqn.params
            res = {}
            for k, a in ins[0].items():
                trivial = (
                    p["window_dimensions"][k] == 1
                    and p["window_strides"][k] == 1
                    and tuple(p["padding"][k]) == (0, 0)
                    and p["base_dilation"][k] == 1
                    and p["window_dilation"][k] == 1
                )
                if trivial:
                    res[k] = a
                else:
                    t.drop(a, f"{where} pools across its units")
            return [res]
        if name == "pad":
            cfg = eqn.params["padding_config"]
            zero_pad = _is_zero_literal(eqn.invars[1])
            res = {}
            for k, a in ins[0].items():
                if tuple(cfg[k]) == (0, 0, 0):
                    res[k] = dataclasses.replace(a, zero=a.zero and zero_pad)
                else:
                    t.drop(a, f"{where} pads along its units (an option-A shortcut?)")
            return [res]
        if name == "slice":
            shape = eqn.invars[0].aval.shape
            start, limit = eqn.params["start_indices"], eqn.params["limit_indices"]
            strides = eqn.params["strides"] or (1,) * len(shape)
            res = {}
            for k, a in ins[0].items():
                if start[k] == 0 and limit[k] == shape[k] and strides[k] == 1:
                    res[k] = a
                else:
                    t.drop(a, f"{where} selects part of its units")
            return [res]
        if name == "concatenate":
            return [self.concatenate(eqn, ins)]
        if name == "dot_general":
            return [self.dot_general(eqn, ins)]
        if name == "conv_general_dilated":
            return [self.conv(eqn, ins)]
        sub = self.sub_jaxpr(eqn)
        if sub is not None:
            return self.walk(sub, ins)
        return [self.fallback(eqn, ins, where) for _ in range(nout)]

    # ---------------------------------------------------------------------------
    def sub_jaxpr(self, eqn: Any) -> Jaxpr | None:
        """The sub-computation of a call-like primitive (jit, custom_jvp/vjp, remat), if any."""
        if eqn.primitive.name in _LOOPS:  # iterated bodies: one pass would miss loop-carried ties
            return None
        for value in eqn.params.values():
            jaxpr = value.jaxpr if isinstance(value, ClosedJaxpr) else value
            if (
                isinstance(jaxpr, Jaxpr)
                and len(jaxpr.invars) == len(eqn.invars)
                and len(jaxpr.outvars) == len(eqn.outvars)
                and all(
                    getattr(v.aval, "shape", None) == getattr(a.aval, "shape", None)
                    for v, a in zip(jaxpr.invars, eqn.invars, strict=True)
                )
            ):
                return jaxpr
        return None

    def fallback(self, eqn: Any, ins: list, where: str) -> dict[int, AxisLabel]:
        for lab in ins:
            for a in lab.values():
                self.t.drop(a, f"{where} (not supported by the coupling analysis) consumes it")
        return {}

    def elementwise(self, eqn: Any, ins: list, name: str) -> dict[int, AxisLabel]:
        out_shape = eqn.outvars[0].aval.shape
        operands = list(eqn.invars)
        first_case = 1 if name == "select_n" else 0
        res = {}
        for k in range(len(out_shape)):
            axs, zeros, unowned = [], [], False
            for j, atom in enumerate(operands):
                shape = getattr(atom.aval, "shape", ())
                neutral = len(shape) != len(out_shape) or shape[k] != out_shape[k]
                ax = ins[j].get(k)
                if ax is not None and not neutral:
                    axs.append(ax)
                elif not neutral and out_shape[k] > 1:
                    unowned = True
                if j >= first_case:
                    zeros.append(_zero_of(atom, None if neutral else ax))
            if not axs:
                continue
            if name in _MUL_LIKE:
                zero = any(zeros)
            elif name == "div":
                zero = zeros[0]
            elif name in _ADD_LIKE or name in ("select_n",):
                zero = all(zeros)
            else:
                zero = False
            merged = self.t.merge_axis(axs, unowned, zero, f"primitive {name!r}")
            if merged is not None:
                res[k] = merged
        return res

    def reshape(self, eqn: Any, lab: dict[int, AxisLabel]) -> dict[int, AxisLabel]:
        in_shape = tuple(eqn.invars[0].aval.shape)
        out_shape = tuple(eqn.outvars[0].aval.shape)
        res: dict[int, list[AxisLabel]] = {}
        where = "primitive 'reshape'"
        for k, a in lab.items():
            if in_shape[k] == 1:
                continue
            group_ax, refs = None, []
            target = None
            if a.group is not None:
                n = self.t.size[self.t.find(a.group)]
                comp = _reshape_component(in_shape, out_shape, k, a.outer, n, a.inner)
                if comp is None:
                    self.t.block(a.group, f"{where} {in_shape} -> {out_shape} splits its units")
                else:
                    target = comp[0]
                    group_ax = AxisLabel(a.group, comp[1], comp[2], (), a.zero)
            for r in a.refs:
                comp = _reshape_component(in_shape, out_shape, k, r.outer, r.n, r.inner)
                if comp is None or (target is not None and comp[0] != target):
                    self.t.opaque.setdefault((r.leaf, r.axis), f"{where} splits it")
                    continue
                target = comp[0]
                refs.append(LeafAxis(r.leaf, r.axis, r.n, comp[1], comp[2]))
            if target is None:
                continue
            new = AxisLabel(
                group_ax.group if group_ax else None,
                group_ax.outer if group_ax else 1,
                group_ax.inner if group_ax else 1,
                tuple(refs),
                a.zero,
            )
            res.setdefault(target, []).append(new)
        out = {}
        for b, axs in res.items():
            if len(axs) == 1:
                out[b] = axs[0]
            else:  # two labelled axes merged into one: cannot follow either
                for a in axs:
                    self.t.drop(a, f"{where} {in_shape} -> {out_shape} merges two unit axes")
        return out

    def concatenate(self, eqn: Any, ins: list) -> dict[int, AxisLabel]:
        dim = eqn.params["dimension"]
        out_shape = eqn.outvars[0].aval.shape
        res = {}
        for k in range(len(out_shape)):
            axs = [lab[k] for lab in ins if k in lab]
            if not axs:
                continue
            if k == dim:
                for a in axs:
                    self.t.drop(a, "primitive 'concatenate' joins along its units")
                continue
            unowned = any(k not in lab for lab in ins) and out_shape[k] > 1
            zero = all(lab[k].zero if k in lab else False for lab in ins)
            merged = self.t.merge_axis(axs, unowned, zero, "primitive 'concatenate'")
            if merged is not None:
                res[k] = merged
        return res

    def contract(self, la: AxisLabel | None, ra: AxisLabel | None, size: int, where: str) -> None:
        """A contracted pair of axes (lhs, rhs): the units must vanish from the sum."""
        t = self.t
        if la is None and ra is None:
            return
        lg = la is not None and la.group is not None
        rg = ra is not None and ra.group is not None
        if lg and rg:
            g = t.union(la.group, ra.group, where)
            if (la.outer, la.inner) != (ra.outer, ra.inner):
                t.block(g, f"{where} contracts it with a differently flattened copy")
            if not (la.zero or ra.zero):
                t.block(
                    g,
                    f"{where} contracts it with another activation while its units are "
                    "not zero in the masked model",
                )
            return
        if lg or rg:
            ga, other = (la, ra) if lg else (ra, la)
            if other is None or not other.refs:
                if size > 1:
                    t.block(
                        ga.group, f"{where} contracts its units with a tensor not derived from them"
                    )
                return
            g = ga.group
            for r in other.refs:
                g = t.absorb(g, ga, r, where)
            if not (ga.zero or other.zero):
                t.block(g, f"{where} contracts it with a tensor that is not masked")
            return
        for a in (la, ra):
            t.make_opaque(a, f"{where} contracts it with a tensor not tied to any group")

    def start_or_carry(self, ax: AxisLabel | None, size: int) -> AxisLabel | None:
        """A free axis of a product: carry a group, or start one from parameter labels."""
        if ax is None:
            return None
        if ax.group is not None:
            return ax
        if size < 2:
            return None
        g = self.t.new_group(size)
        lead = AxisLabel(g, 1, 1, (), ax.zero)
        for r in ax.refs:
            if (r.outer, r.inner) != (1, 1) or r.n != size:
                self.t.block(g, f"its weight {self.t.names[r.leaf]!r} is reshaped before use")
                self.t.opaque.setdefault((r.leaf, r.axis), "reshaped weight")
                continue
            g = self.t.absorb(g, lead, r, "a matrix product")
        return AxisLabel(self.t.find(g), 1, 1, (), ax.zero)

    def dot_general(self, eqn: Any, ins: list) -> dict[int, AxisLabel]:
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        lhs, rhs = ins
        ls, rs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
        where = "primitive 'dot_general'"
        for a, b in zip(lc, rc, strict=True):
            self.contract(lhs.get(a), rhs.get(b), ls[a], where)
        out: dict[int, AxisLabel] = {}
        pos = 0
        for a, b in zip(lb, rb, strict=True):
            axs = [x for x in (lhs.get(a), rhs.get(b)) if x is not None]
            unowned = len(axs) < 2 and ls[a] > 1
            zero = any(x.zero for x in axs)
            merged = self.t.merge_axis(axs, unowned, zero, where) if axs else None
            if merged is not None:
                out[pos] = merged
            pos += 1
        for a in range(len(ls)):
            if a in lc or a in lb:
                continue
            c = self.start_or_carry(lhs.get(a), ls[a])
            if c is not None:
                out[pos] = c
            pos += 1
        for b in range(len(rs)):
            if b in rc or b in rb:
                continue
            c = self.start_or_carry(rhs.get(b), rs[b])
            if c is not None:
                out[pos] = c
            pos += 1
        return out

    def conv(self, eqn: Any, ins: list) -> dict[int, AxisLabel]:
        dn = eqn.params["dimension_numbers"]
        lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
        lhs, rhs = ins
        where = "primitive 'conv_general_dilated'"
        if eqn.params["feature_group_count"] != 1 or eqn.params["batch_group_count"] != 1:
            return self.fallback(eqn, ins, f"{where} with feature or batch groups")
        ls = eqn.invars[0].aval.shape
        rs = eqn.invars[1].aval.shape
        self.contract(lhs.get(lhs_spec[1]), rhs.get(rhs_spec[1]), ls[lhs_spec[1]], where)
        for k in lhs_spec[2:]:
            self.t.drop(lhs.get(k), f"{where} slides over its units")
        for k in rhs_spec[2:]:
            self.t.drop(rhs.get(k), f"{where} slides its kernel window over it")
        out: dict[int, AxisLabel] = {}
        if lhs_spec[0] in lhs:
            out[out_spec[0]] = lhs[lhs_spec[0]]
        c = self.start_or_carry(rhs.get(rhs_spec[0]), rs[rhs_spec[0]])
        if c is not None:
            out[out_spec[1]] = c
        return out
