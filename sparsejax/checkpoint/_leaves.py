"""The leaves of a checkpoint: their savable form, abstract targets, checksums, inventory.

Typed PRNG keys (``jax.random.key``) are stored as their ``uint32`` key data and
rewrapped on restore; every leaf gets a ``uint32`` checksum of its bytes, listed with its
path, shape and dtype in the manifest (:func:`inventory`), and a restore target is
compared with that inventory before orbax reads anything (:func:`check_target`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.tree import PyTree, named_leaves


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def to_savable(tree: PyTree) -> PyTree:
    """Typed PRNG keys -> their ``uint32`` key data; every other leaf unchanged."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _key_impl(leaf: Any) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        found = []

        def probe(k):
            found.append(jax.random.key_impl(k))
            return k

        jax.eval_shape(probe, leaf)
        return found[0]
    return jax.random.key_impl(leaf)


def from_savable(restored: PyTree, target: PyTree) -> PyTree:
    """Rewrap the key data of ``restored`` where ``target`` holds typed PRNG keys."""

    def leaf(r, t):
        return jax.random.wrap_key_data(r, impl=_key_impl(t)) if _is_key(t) else r

    return jax.tree.map(leaf, restored, target)


def _default_sharding() -> jax.sharding.Sharding:
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def abstract(target: PyTree) -> PyTree:
    """``ShapeDtypeStruct`` leaves (with sharding) of the savable form of ``target``."""

    def leaf(x):
        sharding = getattr(x, "sharding", None) or _default_sharding()
        if _is_key(x):
            data = jax.eval_shape(jax.random.key_data, x)
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
        arr = x if isinstance(x, jax.Array) else np.asarray(x)
        return jax.ShapeDtypeStruct(arr.shape, arr.dtype, sharding=sharding)

    return jax.tree.map(leaf, target)


def _leaf_checksum(x: jax.Array) -> jax.Array:
    """Position-weighted ``uint32`` sum of the bit patterns of ``x`` (wraps modulo 2**32)."""
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        return _leaf_checksum(jnp.real(x)) * jnp.uint32(3) + _leaf_checksum(jnp.imag(x))
    if x.dtype == jnp.bool_:
        bits = x.astype(jnp.uint32)
    else:
        width = jnp.dtype(x.dtype).itemsize
        unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[width]
        bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    bits = bits.reshape(-1)
    weights = jnp.arange(bits.shape[0], dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    return jnp.sum(bits * weights, dtype=jnp.uint32)


@jax.jit
def checksums(tree: PyTree) -> list[jax.Array]:
    """One ``uint32`` checksum per leaf of ``tree`` (jitted; leaves in tree order)."""
    return [_leaf_checksum(x) for x in jax.tree.leaves(tree)]


def inventory(tree: PyTree) -> list[dict[str, Any]]:
    """``[{path, shape, dtype, checksum}]`` of every leaf (checksums of the savable form)."""
    sums = jax.device_get(checksums(to_savable(tree)))
    return [
        {
            "path": name,
            "shape": [int(d) for d in np.shape(x)],
            "dtype": str(x.dtype) if hasattr(x, "dtype") else str(np.asarray(x).dtype),
            "checksum": int(s),
        }
        for (name, x), s in zip(named_leaves(tree), sums, strict=True)
    ]


def check_target(what: str, target: PyTree, saved: list[dict[str, Any]], where: str) -> None:
    """Raise a ValueError naming the first leaf where ``target`` differs from the manifest."""
    got = named_leaves(target)
    names_t = [n for n, _ in got]
    names_s = [e["path"] for e in saved]
    if names_t != names_s:
        only_t = [n for n in names_t if n not in set(names_s)]
        only_s = [n for n in names_s if n not in set(names_t)]
        raise ValueError(
            f"the {what} target does not match the checkpoint {where}: paths only in the target: "
            f"{only_t[:5]}, paths only in the checkpoint: {only_s[:5]}"
            + ("" if only_t or only_s else " (same paths in a different order or node types)")
        )
    for (name, x), e in zip(got, saved, strict=True):
        shape = [int(d) for d in np.shape(x)]
        dtype = str(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
        if shape != e["shape"] or dtype != e["dtype"]:
            raise ValueError(
                f"the {what} target at {name!r} is {dtype}{shape}, but the checkpoint {where} "
                f"holds {e['dtype']}{e['shape']}"
            )
