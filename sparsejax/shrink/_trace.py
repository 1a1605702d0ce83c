"""Derive coupled groups automatically by following unit axes through a model's jaxpr.

The model's forward pass is traced once with :func:`jax.make_jaxpr`, every variable
(``nnx.Param``, ``nnx.BatchStat``, ...) an input of the trace. Each axis of every
intermediate value carries a label:

* a *group* label: "this axis indexes the units of group ``g``" (possibly flattened with
  other axes: ``outer``/``inner``), plus whether the removed units are exactly zero there
  in the masked model;
* *parameter* labels: "this axis is axis ``a`` of leaf ``p``" (a bias or a BatchNorm
  scale broadcast to the activation, a kernel's input axis).

A ``dot_general`` / ``conv_general_dilated`` whose weight operand has a free axis starts a
group (its output units). Elementwise operations, broadcasts, reshapes (flattens),
transposes, pools and reductions over *other* axes carry labels; a parameter label meeting
a group label (bias add, BatchNorm, the next layer's kernel rows in a contraction) makes
that parameter axis a member; two group labels meeting (a residual addition, a batch
dimension of the attention einsum, ``q·kᵀ``) merge the groups. Whatever cannot be
followed *blocks* the group it touches, with the reason: a reduction over the units
(LayerNorm, softmax over them), the model output, a concatenation or pad along the units
(option-A shortcuts), a contraction with a tensor unrelated to the units, an unknown
primitive (named).

References:
  Li et al. (2017), Pruning Filters for Efficient ConvNets, ICLR; Liu et al. (2017),
  Learning Efficient Convolutional Networks through Network Slimming, ICCV (BatchNorm
  channels); Fang et al. (2023), DepGraph: Towards Any Structural Pruning, CVPR
  (dependency graphs of coupled parameters).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

from sparsejax.shrink._groups import Group, Member
from sparsejax.tree import named_leaves

__all__ = ["coupled_groups", "example_input"]


@dataclasses.dataclass(frozen=True)
class _Ref:
    """Axis ``axis`` (``n`` entries) of leaf ``leaf``, seen on an activation axis."""

    leaf: int
    axis: int
    n: int
    outer: int = 1
    inner: int = 1


@dataclasses.dataclass(frozen=True)
class _Ax:
    """Labels of one axis of one traced value."""

    group: int | None = None
    outer: int = 1
    inner: int = 1
    refs: tuple[_Ref, ...] = ()
    zero: bool = False


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


class _Tracer:
    """Union-find of groups plus the label environment of one trace."""

    def __init__(self, names: list[str]):
        self.names = names
        self.parent: list[int] = []
        self.size: list[int] = []
        self.members: list[list[_Ref]] = []
        self.blocked: list[list[str]] = []
        self.owner: dict[tuple[int, int], int] = {}
        self.opaque: dict[tuple[int, int], str] = {}

    # -- groups -----------------------------------------------------------------
    def new_group(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.members.append([])
        self.blocked.append([])
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int, where: str) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if a > b:
            a, b = b, a
        if self.size[a] != self.size[b]:
            self.block(a, f"{where} ties it to a group of {self.size[b]} units")
            self.block(b, f"{where} ties it to a group of {self.size[a]} units")
        self.parent[b] = a
        self.members[a].extend(self.members[b])
        self.blocked[a].extend(self.blocked[b])
        return a

    def block(self, g: int, reason: str) -> None:
        g = self.find(g)
        if reason not in self.blocked[g]:
            self.blocked[g].append(reason)

    def absorb(self, g: int, ax: _Ax, ref: _Ref, where: str) -> int:
        """Make ``ref`` (seen on an axis labelled ``g`` with ``ax.outer/inner``) a member."""
        g = self.find(g)
        n = self.size[g]
        if ref.outer == 1 and ref.inner == 1 and ref.n == ax.outer * n * ax.inner:
            member = _Ref(ref.leaf, ref.axis, n, ax.outer, ax.inner)
        elif (ref.outer, ref.inner, ref.n) == (ax.outer, ax.inner, n):
            member = _Ref(ref.leaf, ref.axis, n)
        else:
            self.block(
                g,
                f"{self.names[ref.leaf]!r} axis {ref.axis} meets its units at {where} "
                "through a reshape that does not align with them",
            )
            return g
        key = (member.leaf, member.axis)
        if key in self.owner and self.find(self.owner[key]) != g:
            g = self.union(self.owner[key], g, f"{self.names[ref.leaf]!r} axis {ref.axis}")
        self.owner[key] = g
        if member not in self.members[g]:
            self.members[g].append(member)
        return g

    def make_opaque(self, ax: _Ax | None, reason: str) -> None:
        if ax is None:
            return
        for r in ax.refs:
            self.opaque.setdefault((r.leaf, r.axis), reason)

    def drop(self, ax: _Ax | None, reason: str) -> None:
        """A label that cannot be followed: block its group, freeze its parameters."""
        if ax is None:
            return
        if ax.group is not None:
            self.block(ax.group, reason)
        self.make_opaque(ax, reason)

    # -- combining labels on one axis ---------------------------------------------
    def merge_axis(self, axs: Sequence[_Ax], unowned: bool, zero: bool, where: str) -> _Ax | None:
        """Labels of one axis where several operands meet (elementwise / batch dims)."""
        groups = [a for a in axs if a.group is not None]
        refs = [r for a in axs for r in a.refs]
        if not groups:
            if not refs:
                return None
            if unowned:
                for a in axs:
                    self.make_opaque(a, f"{where} combines it with an unrelated tensor")
                return None
            return _Ax(refs=tuple(dict.fromkeys(refs)), zero=zero)
        first = groups[0]
        g = self.find(first.group)
        for other in groups[1:]:
            if (other.outer, other.inner) != (first.outer, first.inner):
                self.block(g, f"{where} meets it flattened differently")
                self.block(other.group, f"{where} meets it flattened differently")
            g = self.union(g, other.group, where)
        for a in axs:
            for r in a.refs:
                g = self.absorb(g, first, r, where)
        if unowned:
            self.block(g, f"{where} combines its units with a tensor not derived from them")
        return _Ax(self.find(g), first.outer, first.inner, (), zero)


def _zero_of(atom: Any, ax: _Ax | None) -> bool:
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


class _Walker:
    def __init__(self, tracer: _Tracer):
        self.t = tracer

    def labels(self, env: dict, atom: Any) -> dict[int, _Ax]:
        if isinstance(atom, Literal):
            return {}
        return env.get(atom, {})

    def walk(self, jaxpr: Jaxpr, in_labels: Sequence[dict[int, _Ax]]) -> list[dict[int, _Ax]]:
        env: dict[Any, dict[int, _Ax]] = {}
        for v, lab in zip(jaxpr.invars, in_labels, strict=True):
            env[v] = lab
        for eqn in jaxpr.eqns:
            outs = self.eqn(eqn, env)
            for v, lab in zip(eqn.outvars, outs, strict=True):
                env[v] = lab
        return [self.labels(env, v) for v in jaxpr.outvars]

    # ---------------------------------------------------------------------------
    def eqn(self, eqn: Any, env: dict) -> list[dict[int, _Ax]]:
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

    def fallback(self, eqn: Any, ins: list, where: str) -> dict[int, _Ax]:
        for lab in ins:
            for a in lab.values():
                self.t.drop(a, f"{where} (not supported by the coupling analysis) consumes it")
        return {}

    def elementwise(self, eqn: Any, ins: list, name: str) -> dict[int, _Ax]:
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

    def reshape(self, eqn: Any, lab: dict[int, _Ax]) -> dict[int, _Ax]:
        in_shape = tuple(eqn.invars[0].aval.shape)
        out_shape = tuple(eqn.outvars[0].aval.shape)
        res: dict[int, list[_Ax]] = {}
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
                    group_ax = _Ax(a.group, comp[1], comp[2], (), a.zero)
            for r in a.refs:
                comp = _reshape_component(in_shape, out_shape, k, r.outer, r.n, r.inner)
                if comp is None or (target is not None and comp[0] != target):
                    self.t.opaque.setdefault((r.leaf, r.axis), f"{where} splits it")
                    continue
                target = comp[0]
                refs.append(_Ref(r.leaf, r.axis, r.n, comp[1], comp[2]))
            if target is None:
                continue
            new = _Ax(
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

    def concatenate(self, eqn: Any, ins: list) -> dict[int, _Ax]:
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

    def contract(self, la: _Ax | None, ra: _Ax | None, size: int, where: str) -> None:
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

    def start_or_carry(self, ax: _Ax | None, size: int) -> _Ax | None:
        """A free axis of a product: carry a group, or start one from parameter labels."""
        if ax is None:
            return None
        if ax.group is not None:
            return ax
        if size < 2:
            return None
        g = self.t.new_group(size)
        lead = _Ax(g, 1, 1, (), ax.zero)
        for r in ax.refs:
            if (r.outer, r.inner) != (1, 1) or r.n != size:
                self.t.block(g, f"its weight {self.t.names[r.leaf]!r} is reshaped before use")
                self.t.opaque.setdefault((r.leaf, r.axis), "reshaped weight")
                continue
            g = self.t.absorb(g, lead, r, "a matrix product")
        return _Ax(self.t.find(g), 1, 1, (), ax.zero)

    def dot_general(self, eqn: Any, ins: list) -> dict[int, _Ax]:
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        lhs, rhs = ins
        ls, rs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
        where = "primitive 'dot_general'"
        for a, b in zip(lc, rc, strict=True):
            self.contract(lhs.get(a), rhs.get(b), ls[a], where)
        out: dict[int, _Ax] = {}
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

    def conv(self, eqn: Any, ins: list) -> dict[int, _Ax]:
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
        out: dict[int, _Ax] = {}
        if lhs_spec[0] in lhs:
            out[out_spec[0]] = lhs[lhs_spec[0]]
        c = self.start_or_carry(rhs.get(rhs_spec[0]), rs[rhs_spec[0]])
        if c is not None:
            out[out_spec[1]] = c
        return out


def example_input(model: nnx.Module) -> jax.ShapeDtypeStruct:
    """A two-example input for the zoo models (from ``in_shape``, ``features`` or ``in_length``).

    Raises:
      ValueError: if the model does not say its input shape (pass ``inputs=`` then).
    """
    if getattr(model, "in_shape", None) is not None:
        dtype = jnp.float32
        if getattr(model, "patch_shape", 0) is None:  # token-id transformer
            dtype = jnp.int32
        return jax.ShapeDtypeStruct((2, *model.in_shape), dtype)
    if getattr(model, "features", None) is not None:
        return jax.ShapeDtypeStruct((2, model.features[0]), jnp.float32)
    if getattr(model, "in_length", None) is not None:
        return jax.ShapeDtypeStruct((2, model.in_length), jnp.float32)
    raise ValueError(
        f"cannot tell the input shape of a {type(model).__name__}; pass inputs= (an array or "
        "jax.ShapeDtypeStruct of one batch)"
    )


def coupled_groups(model: nnx.Module, inputs: Any = None) -> tuple[Group, ...]:
    """Coupled groups of an NNX model, derived by tracing its forward pass (eval mode).

    Each group is a set of units (output channels of a Dense/Conv layer, attention heads,
    residual-stream channels, ...) together with every parameter and running-statistic
    slice that must be removed with them: the producing kernel's output columns (the
    leader), its bias, BatchNorm ``scale``/``bias``/``mean``/``var``, the next layers' input
    rows (``H·W`` rows per channel after an NHWC flatten), the heads axis of
    ``query``/``key``/``value``/``out``. Residual additions merge the groups they add
    (a ResNet stage's stream). Groups that cannot be shrunk are returned with ``blocked``
    set to the reason (they reach the output; a LayerNorm reduces over them; an option-A
    shortcut pads them; an unsupported primitive consumes them).

    The model is not modified (a copy is traced in eval mode; nothing is computed).

    Args:
      model: an ``nnx.Module`` called as ``model(inputs)``.
      inputs: one example batch (array or ``jax.ShapeDtypeStruct``); default: from the
        model's ``in_shape`` / ``features`` / ``in_length`` (the zoo models).

    Returns:
      The groups, ordered by their leader's position in ``nnx.state(model)``; groups of a
      single unit are omitted (they cannot shrink).

    Raises:
      ValueError: if the model cannot be traced with ``inputs`` (the trace error is chained).

    References:
      Li et al. (2017), Pruning Filters for Efficient ConvNets, ICLR; Liu et al. (2017),
      Network Slimming, ICCV; Michel, Levy & Neubig (2019), Are Sixteen Heads Really Better
      than One?, NeurIPS; Fang et al. (2023), DepGraph, CVPR.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    if inputs is None:
        inputs = example_input(model)
    clone = nnx.clone(model)
    clone.eval()
    graphdef, params, rest = nnx.split(clone, nnx.Param, ...)

    def forward(p, r, x):
        return nnx.merge(graphdef, p, r, copy=True)(x)

    try:
        closed = jax.make_jaxpr(forward)(params, rest, inputs)
    except Exception as err:
        raise ValueError(
            f"coupled_groups: tracing {type(model).__name__} on inputs of shape "
            f"{getattr(inputs, 'shape', None)} failed: {err}"
        ) from err
    leaves = named_leaves(params) + named_leaves(rest)
    names = [n for n, _ in leaves]
    is_param = [True] * len(named_leaves(params)) + [False] * len(named_leaves(rest))
    tracer = _Tracer(names)
    in_labels: list[dict[int, _Ax]] = []
    for i, (_, leaf) in enumerate(leaves):
        lab: dict[int, _Ax] = {}
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            for a, n in enumerate(np.shape(leaf)):
                if n > 1:
                    lab[a] = _Ax(refs=(_Ref(i, a, n),), zero=is_param[i])
        in_labels.append(lab)
    n_inputs = len(closed.jaxpr.invars) - len(leaves)
    in_labels += [{} for _ in range(n_inputs)]
    walker = _Walker(tracer)
    outs = walker.walk(closed.jaxpr, in_labels)
    for lab in outs:
        for a in lab.values():
            tracer.drop(a, "its units reach the model output")
    return _collect(tracer)


def _collect(t: _Tracer) -> tuple[Group, ...]:
    groups = []
    for g in range(len(t.parent)):
        if t.find(g) != g or t.size[g] < 2 or not t.members[g]:
            continue
        members, seen = [], {}
        reasons = list(t.blocked[g])
        for r in t.members[g]:
            key = (r.leaf, r.axis)
            if key in seen:
                if seen[key] != (r.outer, r.inner):
                    reasons.append(f"{t.names[r.leaf]!r} axis {r.axis} is tied to it twice")
                continue
            seen[key] = (r.outer, r.inner)
            members.append(Member(t.names[r.leaf], r.axis, r.outer, r.inner))
            if key in t.opaque:
                reasons.append(f"{t.names[r.leaf]!r} axis {r.axis}: {t.opaque[key]}")
        groups.append(Group(t.size[g], tuple(members), "; ".join(dict.fromkeys(reasons)) or None))
    order = {n: i for i, n in enumerate(t.names)}
    groups.sort(key=lambda gr: (order[gr.leader.path], gr.leader.axis))
    return tuple(groups)
