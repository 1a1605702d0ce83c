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

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.shrink._coupling import AxisLabel, GroupUnion, LeafAxis
from sparsejax.shrink._groups import Group, Member
from sparsejax.shrink._primitives import JaxprWalker
from sparsejax.tree import PyTree, named_leaves

__all__ = ["coupled_groups", "example_input"]


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


def coupled_groups(
    model: nnx.Module | Callable[..., Any], inputs: Any = None, *, params: PyTree = None
) -> tuple[Group, ...]:
    """Coupled groups of a model, derived by tracing its forward pass (eval mode).

    Each group is a set of units (output channels of a Dense/Conv layer, attention heads,
    residual-stream channels, ...) together with every parameter and running-statistic
    slice that must be removed with them: the producing kernel's output columns (the
    leader), its bias, BatchNorm ``scale``/``bias``/``mean``/``var``, the next layers' input
    rows (``H·W`` rows per channel after an NHWC flatten), the heads axis of
    ``query``/``key``/``value``/``out``. Residual additions merge the groups they add
    (a ResNet stage's stream). Groups that cannot be shrunk are returned with ``blocked``
    set to the reason (they reach the output; a LayerNorm reduces over them; an option-A
    shortcut pads them; an unsupported primitive consumes them).

    Nothing is computed and the model is not modified (an NNX model is traced as a copy,
    in eval mode).

    Args:
      model: an ``nnx.Module`` called as ``model(inputs)``, or a pure function
        ``apply_fn(params, inputs)`` of a parameter pytree in any layout (Linen's
        ``module.apply`` with ``params={"params": ...}``, an Equinox model split with
        ``eqx.partition``, plain JAX); then ``params`` is required and every member path is
        a path of ``params``.
      inputs: one example batch (array or ``jax.ShapeDtypeStruct``); default for NNX: from
        the model's ``in_shape`` / ``features`` / ``in_length`` (the zoo models).
      params: the parameter pytree of ``apply_fn`` (arrays or ``jax.ShapeDtypeStruct``).

    Returns:
      The groups, ordered by their leader's position in the state (``params``); groups of a
      single unit are omitted (they cannot shrink).

    Raises:
      TypeError: neither an ``nnx.Module`` nor a callable with ``params``.
      ValueError: if the forward pass cannot be traced with ``inputs`` (the trace error is
        chained).

    Example (a Linen MLP):
      >>> import flax.linen as nn
      >>> mlp = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
      >>> x = jnp.ones((2, 5))
      >>> params = mlp.init(jax.random.key(0), x)
      >>> [(g.name, g.blocked is None) for g in coupled_groups(mlp.apply, x, params=params)]
      [('params/layers_0/kernel:1', True), ('params/layers_2/kernel:1', False)]

    References:
      Li et al. (2017), Pruning Filters for Efficient ConvNets, ICLR; Liu et al. (2017),
      Network Slimming, ICCV; Michel, Levy & Neubig (2019), Are Sixteen Heads Really Better
      than One?, NeurIPS; Fang et al. (2023), DepGraph, CVPR.
    """
    if isinstance(model, nnx.Module):
        if params is not None:
            raise TypeError("coupled_groups: params= is for a function apply_fn(params, x), "
                            "not for an nnx.Module (its parameters are its own)")
        if inputs is None:
            inputs = example_input(model)
        clone = nnx.clone(model)
        clone.eval()
        graphdef, state, rest = nnx.split(clone, nnx.Param, ...)

        def forward(p, r, x):
            return nnx.merge(graphdef, p, r, copy=True)(x)

        trees, what = (state, rest), type(model).__name__
    elif callable(model) and params is not None:
        if inputs is None:
            raise ValueError("coupled_groups(apply_fn, inputs, params=...) needs inputs= (one batch)")

        def forward(p, x):
            return model(p, x)

        trees, what = (params,), getattr(model, "__qualname__", type(model).__name__)
    else:
        raise TypeError(
            f"coupled_groups needs an nnx.Module, or a function apply_fn(params, x) with "
            f"params=; got {type(model).__name__}"
            + (" without params" if callable(model) else "")
        )
    try:
        closed = jax.make_jaxpr(forward)(*trees, inputs)
    except Exception as err:
        raise ValueError(
            f"coupled_groups: tracing {what} on inputs of shape "
            f"{getattr(inputs, 'shape', None)} failed: {err}"
        ) from err
    leaves = [leaf for tree in trees for leaf in named_leaves(tree)]
    names = [n for n, _ in leaves]
    is_param = [True] * len(named_leaves(trees[0])) + [False] * (len(leaves) - len(named_leaves(trees[0])))
    tracer = GroupUnion(names)
    in_labels: list[dict[int, AxisLabel]] = []
    for i, (_, leaf) in enumerate(leaves):
        lab: dict[int, AxisLabel] = {}
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            for a, n in enumerate(np.shape(leaf)):
                if n > 1:
                    lab[a] = AxisLabel(refs=(LeafAxis(i, a, n),), zero=is_param[i])
        in_labels.append(lab)
    n_inputs = len(closed.jaxpr.invars) - len(leaves)
    in_labels += [{} for _ in range(n_inputs)]
    walker = JaxprWalker(tracer)
    outs = walker.walk(closed.jaxpr, in_labels)
    for lab in outs:
        for a in lab.values():
            tracer.drop(a, "its units reach the model output")
    return _collect(tracer)


def _collect(t: GroupUnion) -> tuple[Group, ...]:
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
