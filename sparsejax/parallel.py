"""Training on several devices with JAX's own sharding: data parallel and FSDP.

Masks are pytrees of arrays like the params, so they are placed by the same rule
and every sparsejax function runs on them unchanged (selection reduces per-leaf
counts and never gathers the params; see :func:`sparsejax.prune`).

* :func:`make_mesh` -- a 1-D :class:`jax.sharding.Mesh` over the devices.
* :func:`state_shardings` / :func:`shard_state` -- place a pytree (a train state,
  params, masks, optimizer state): ``"dp"`` replicates every leaf; ``"fsdp"``
  (ZeRO-3 / FSDP) splits each leaf of at least ``min_size`` elements along its
  largest axis divisible by the mesh size. A full-shape mask leaf, like the
  optimizer's moments, gets its parameter's sharding.
* :func:`shard_batch` -- split the batch axis over the mesh (multi-host: each
  process passes its own rows).

The jitted train step needs no change: ``jit`` follows its inputs' shardings (GSPMD
inserts the all-reduce for ``"dp"``, the all-gathers / reduce-scatters for
``"fsdp"``). Multi-host: call ``jax.distributed.initialize()`` first in every
process, build the mesh over ``jax.devices()``, and call
:func:`sparsejax.checkpoint.save` from every process (orbax coordinates the write).

References:
  Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion
  Parameter Models", SC 2020. Zhao et al., "PyTorch FSDP", VLDB 2023. Xu et al.,
  "GSPMD: General and Scalable Parallelization for ML Computation Graphs", 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sparsejax.tree import PyTree, path_str

__all__ = ["STRATEGIES", "make_mesh", "shard_batch", "shard_state", "state_shardings"]

STRATEGIES = ("dp", "fsdp")


def make_mesh(num_devices: int | None = None, axis: str = "data",
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``axis`` over the first ``num_devices`` devices (all by default).

    Args:
      num_devices: how many devices (``None``: all of ``devices``).
      axis: the mesh axis name (batch and FSDP shards split along it).
      devices: the devices to use (default ``jax.devices()``: every process's).

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``(num_devices,)``.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices) if num_devices is None else num_devices
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(devices):
        raise ValueError(f"num_devices must be an int in [1, {len(devices)}], got {num_devices!r}")
    if not isinstance(axis, str) or not axis:
        raise ValueError(f"axis must be a non-empty string, got {axis!r}")
    return Mesh(np.asarray(devices[: int(n)]), (axis,))


def _axis(mesh: Mesh, axis: str) -> int:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis not in mesh.shape:
        raise ValueError(f"axis {axis!r} is not a mesh axis; the mesh has {tuple(mesh.shape)}")
    return int(mesh.shape[axis])


def _fsdp_spec(shape: tuple[int, ...], n: int, axis: str, min_size: int) -> PartitionSpec:
    size = int(np.prod(shape)) if shape else 1
    if n == 1 or size < min_size:
        return PartitionSpec()
    # Largest axis divisible by the mesh size; ties go to the last axis (output units),
    # so a kernel and its full-shape mask and moments all split the same way.
    best = None
    for i, d in enumerate(shape):
        if d % n == 0 and (best is None or d >= shape[best]):
            best = i
    if best is None:
        return PartitionSpec()
    return PartitionSpec(*[axis if i == best else None for i in range(len(shape))])


def state_shardings(
    tree: PyTree, mesh: Mesh, strategy: str = "dp", *, axis: str = "data",
    min_size: int = 2**14,
) -> PyTree:
    """A pytree of :class:`NamedSharding` mirroring ``tree`` for ``strategy``.

    Args:
      tree: any pytree of arrays (or ``ShapeDtypeStruct``): a train state,
        params, a mask, an optimizer state. Typed PRNG keys are replicated.
      mesh: the device mesh (see :func:`make_mesh`).
      strategy: ``"dp"`` (replicate everything) or ``"fsdp"`` (split each
        leaf of ``>= min_size`` elements along its largest axis divisible by
        the mesh size; replicate the others).
      axis: the mesh axis to split along.
      min_size: FSDP leaves smaller than this stay replicated (biases, norms,
        scalars, structured masks).

    Returns:
      A pytree with the structure of ``tree`` and ``NamedSharding`` leaves.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    n = _axis(mesh, axis)
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"min_size must be a positive int, got {min_size!r}")

    def leaf(path, x):
        if not hasattr(x, "shape"):
            raise TypeError(
                f"state_shardings: the leaf at {path_str(path)!r} is a {type(x).__name__}, "
                "not an array"
            )
        if strategy == "dp" or jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, _fsdp_spec(tuple(x.shape), n, axis, int(min_size)))

    return jax.tree_util.tree_map_with_path(leaf, tree)


def shard_state(
    tree: PyTree, mesh: Mesh, strategy: str = "dp", *, axis: str = "data",
    min_size: int = 2**14,
) -> PyTree:
    """``tree`` placed on ``mesh`` by :func:`state_shardings` (a new pytree; pure)."""
    return jax.device_put(tree, state_shardings(tree, mesh, strategy, axis=axis, min_size=min_size))


def shard_batch(batch: PyTree, mesh: Mesh, *, axis: str = "data") -> PyTree:
    """Split the leading (batch) axis of every leaf of ``batch`` over ``mesh``.

    Single process: ``batch`` holds the global batch; its size must be
    divisible by the mesh size. Several processes: each passes its own rows
    (``global batch / process_count``), assembled into one global array with
    :func:`jax.make_array_from_process_local_data` -- no process ever holds
    another's data.

    Returns:
      The batch as global ``jax.Array`` s sharded ``PartitionSpec(axis)``.
    """
    n = _axis(mesh, axis)
    sharding = NamedSharding(mesh, PartitionSpec(axis))
    multi = jax.process_count() > 1

    def leaf(path, x):
        shape = np.shape(x)
        if not shape:
            raise ValueError(f"shard_batch: the leaf at {path_str(path)!r} is a scalar; every "
                             "leaf needs a leading batch axis")
        rows = shape[0] * (jax.process_count() if multi else 1)
        if rows % n:
            raise ValueError(
                f"shard_batch: the batch axis of {path_str(path)!r} has {rows} rows (global), "
                f"not divisible by the {n} devices of mesh axis {axis!r}"
            )
        if multi:
            return jax.make_array_from_process_local_data(sharding, np.asarray(x))
        return jax.device_put(x, sharding)

    return jax.tree_util.tree_map_with_path(leaf, batch)

