"""``sparse_apply``: run an unchanged forward pass on exported sparse parameters.

The forward pass is traced once with dense stand-ins of the sparse leaves, then its
jaxpr is evaluated with the real leaves: a ``dot_general`` whose operand is an exported
leaf runs as a sparse product (``bcoo_dot_general`` for BCOO; the block-sparse kernel
for a :class:`~sparsejax.block_sparse.BlockSparseMatrix` on the right of ``x @ W``);
calls (``jit``, ``custom_jvp``) are entered; any other use of a sparse leaf densifies it
first, so the result always equals the dense masked model's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import sparse
from jax.extend.core import ClosedJaxpr, Literal

from sparsejax.block_sparse import BlockSparseMatrix, block_sparse_matmul
from sparsejax.deploy._export import is_sparse

__all__ = ["sparse_apply"]

_PASS = frozenset({"copy", "copy_p"})
_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def _dense(x: Any) -> Any:
    if isinstance(x, sparse.BCOO):
        return x.todense()
    if isinstance(x, BlockSparseMatrix):
        return x.to_dense()
    return x


def _dot(eqn: Any, lhs: Any, rhs: Any) -> list[Any]:
    dims = eqn.params["dimension_numbers"]
    out_dtype = eqn.outvars[0].aval.dtype
    if isinstance(rhs, BlockSparseMatrix) and not is_sparse(lhs):
        if dims == (((np.ndim(lhs) - 1,), (0,)), ((), ())):
            return [block_sparse_matmul(lhs, rhs).astype(out_dtype)]
    elif isinstance(lhs, sparse.BCOO) or isinstance(rhs, sparse.BCOO):
        lhs = lhs if isinstance(lhs, sparse.BCOO) else _dense(lhs)
        rhs = rhs if isinstance(rhs, sparse.BCOO) else _dense(rhs)
        out = sparse.bcoo_dot_general(
            lhs, rhs, dimension_numbers=dims,
            preferred_element_type=eqn.params.get("preferred_element_type"),
        )
        return [_dense(out).astype(out_dtype)]
    return _bind(eqn, [_dense(lhs), _dense(rhs)])


def _bind(eqn: Any, ins: Sequence[Any]) -> list[Any]:
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns: Sequence[Any] = ()
    if isinstance(params, tuple):  # jax < 0.8: (subfuns, params)
        subfuns, params = params
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
    if ctx is None:
        out = eqn.primitive.bind(*subfuns, *ins, **params)
    else:
        with ctx:
            out = eqn.primitive.bind(*subfuns, *ins, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _sub_jaxpr(eqn: Any, n_in: int) -> ClosedJaxpr | None:
    for name in _CALL_PARAMS:
        sub = eqn.params.get(name)
        if isinstance(sub, ClosedJaxpr) and len(sub.jaxpr.invars) == n_in:
            return sub
    return None


def _eval(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(atom: Any) -> Any:
        return atom.val if isinstance(atom, Literal) else env[atom]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = c
    for v, a in zip(jaxpr.invars, args, strict=True):
        env[v] = a
    for eqn in jaxpr.eqns:
        ins = [read(a) for a in eqn.invars]
        if not any(is_sparse(x) for x in ins):
            outs = _bind(eqn, ins)
        elif eqn.primitive.name == "dot_general":
            outs = _dot(eqn, *ins)
        elif eqn.primitive.name in _PASS or (
            eqn.primitive.name == "convert_element_type"
            and eqn.params.get("new_dtype") == ins[0].dtype
        ):
            outs = [ins[0]]
        elif (sub := _sub_jaxpr(eqn, len(ins))) is not None:
            outs = _eval(sub.jaxpr, sub.consts, ins)
        else:
            outs = _bind(eqn, [_dense(x) for x in ins])
        for v, o in zip(eqn.outvars, outs, strict=True):
            env[v] = o
    return [_dense(read(v)) for v in jaxpr.outvars]


def sparse_apply(apply_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``apply_fn(params, *inputs)`` made to accept parameters from :func:`export`.

    The returned function takes the exported pytree (sparse leaves in place of dense
    ones) and the inputs, and returns what ``apply_fn`` returns for the dense masked
    params: every product with an exported weight is computed from the sparse storage. It
    is pure and can be jitted (``jax.jit(sparse_apply(f))``; BCOO and BlockSparseMatrix are
    pytrees). BCOO leaves multiply through ``jax.experimental.sparse.bcoo_dot_general`` in
    any position; a BlockSparseMatrix through the block-sparse kernel when it is the right
    operand of ``x @ W`` contracting ``x``'s last axis (Flax ``Dense``, ``nnx.Linear``);
    other uses (a convolution, an ``(out, in)`` weight on the left) compute with its dense
    form, still equal.

    Args:
      apply_fn: ``apply_fn(params, *inputs)``, e.g. Linen's ``module.apply`` or
        ``lambda state, x: nnx.merge(graphdef, state)(x)``.

    Returns:
      ``fn(exported_params, *inputs)``.

    Example:
      >>> import jax.numpy as jnp, sparsejax as sj
      >>> from sparsejax.deploy import export
      >>> params = {"w": jnp.array([[1.0, -3.0], [0.5, 2.0]])}
      >>> sp = export(params, sj.prune(sj.scores.magnitude(params), 0.5))
      >>> sparse_apply(lambda p, x: x @ p["w"])(sp, jnp.ones((1, 2))).tolist()
      [[0.0, -1.0]]

    References:
      JAX's ``jax.experimental.sparse.sparsify`` (the same idea for BCOO only).
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {apply_fn!r}")

    def run(params: Any, *inputs: Any) -> Any:
        leaves, treedef = jax.tree_util.tree_flatten(params, is_leaf=is_sparse)
        stand_in = [
            jax.ShapeDtypeStruct(tuple(x.shape), x.dtype) if is_sparse(x) else
            jax.ShapeDtypeStruct(np.shape(x), getattr(x, "dtype", None) or np.result_type(x))
            for x in leaves
        ]
        closed, out_shape = jax.make_jaxpr(apply_fn, return_shape=True)(
            jax.tree_util.tree_unflatten(treedef, stand_in), *inputs
        )
        flat = leaves + jax.tree.leaves(inputs)
        outs = _eval(closed.jaxpr, closed.consts, flat)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return run
