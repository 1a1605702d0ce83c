"""Coupled groups: which parameter slices must be removed together, and their keep sets.

A :class:`Group` of ``size`` units lists :class:`Member` slices, one per
``(parameter path, axis)``: removing unit ``u`` of the group removes, along
``axis`` of every member, the entries

    o · (size · inner) + u · inner + i     for o < outer, i < inner,

so a member's axis has ``outer · size · inner`` entries. ``outer = inner = 1``
is the plain case (a Dense/Conv output column, its bias, a BatchNorm channel,
the next layer's input rows); a convolution channel flattened in NHWC order
into a Dense layer has ``outer = H·W`` (channel ``c`` owns rows ``p·C + c``),
one flattened channel-major has ``inner = L`` (rows ``c·L .. c·L + L - 1``).

The first member is the group's *leader* (the kernel whose output units define
the group); keep sets are read from its mask.

All functions here are pure and work on concrete NumPy / JAX arrays (they are
bookkeeping before and after training, not meant to be traced).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.tree import PyTree, check_broadcastable, named_leaves, path_str

__all__ = ["Group", "Member", "check_groups", "group_mask", "keep_sets", "member_indices"]


@dataclasses.dataclass(frozen=True)
class Member:
    """One coupled slice of a parameter (or running statistic): ``axis`` of the leaf at ``path``.

    Attributes:
      path: the leaf's path string (:func:`sparsejax.tree.path_str`, e.g.
        ``"blocks/0/conv1/kernel"`` or ``"blocks/0/bn1/mean"``).
      axis: non-negative axis of the leaf that the group's units index.
      outer: repetitions of the unit pattern before it along ``axis`` (e.g. ``H·W`` for an
        NHWC flatten into a Dense layer).
      inner: consecutive entries per unit along ``axis`` (e.g. ``L`` for a channel-major
        flatten).
    """

    path: str
    axis: int
    outer: int = 1
    inner: int = 1

    def __post_init__(self):
        if not isinstance(self.path, str):
            raise TypeError(f"Member.path must be a path string, got {self.path!r}")
        for name in ("axis", "outer", "inner"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"Member {self.path!r}: {name} must be an int, got {value!r}")
        if self.axis < 0:
            raise ValueError(f"Member {self.path!r}: axis must be >= 0, got {self.axis}")
        if self.outer < 1 or self.inner < 1:
            raise ValueError(
                f"Member {self.path!r}: outer and inner must be >= 1, got {self.outer}, {self.inner}"
            )


@dataclasses.dataclass(frozen=True)
class Group:
    """Units that are kept or removed together across several parameters.

    Attributes:
      size: number of units (e.g. filters of the leading convolution, attention heads).
      members: the coupled slices; ``members[0]`` is the leader.
      blocked: ``None`` if the units may be removed, otherwise why not (e.g. the units reach
        the model's output, or a LayerNorm reduces over them). Pruning a unit of a blocked
        group is an error.

    Example (an explicit spec for ``x @ w1 + b1 -> relu -> @ w2``):
      >>> Group(300, (Member("w1", 1), Member("b1", 0), Member("w2", 0))).name
      'w1:1'
    """

    size: int
    members: tuple[Member, ...]
    blocked: str | None = None

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)):
            raise TypeError(f"Group.size must be an int, got {self.size!r}")
        if self.size < 1:
            raise ValueError(f"Group.size must be >= 1, got {self.size}")
        members = tuple(self.members)
        if not members or not all(isinstance(m, Member) for m in members):
            raise TypeError(
                f"Group.members must be a non-empty sequence of Member, got {members!r}"
            )
        keys = [(m.path, m.axis) for m in members]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"group {members[0].path!r} lists axis {dup[1]} of {dup[0]!r} twice")
        object.__setattr__(self, "members", members)

    @property
    def leader(self) -> Member:
        """The member whose mask decides which units are kept."""
        return self.members[0]

    @property
    def name(self) -> str:
        """``"{leader path}:{leader axis}"``, the key of keep-set mappings."""
        return f"{self.leader.path}:{self.leader.axis}"


def member_indices(member: Member, size: int, keep: np.ndarray) -> np.ndarray:
    """Entries along ``member.axis`` that units ``keep`` (sorted unit indices) own, in order."""
    o = np.arange(member.outer)[:, None, None] * (size * member.inner)
    u = np.asarray(keep, np.int64)[None, :, None] * member.inner
    i = np.arange(member.inner)[None, None, :]
    return (o + u + i).reshape(-1)


def _leaf_table(*trees: PyTree) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for tree in trees:
        table.update(named_leaves(tree))
    return table


def check_groups(groups: Sequence[Group], *trees: PyTree) -> None:
    """Validate groups against parameter (and running-statistic) pytrees.

    Checks that every member names a leaf of ``trees``, that its axis exists and has
    ``outer · size · inner`` entries, and that no ``(path, axis)`` belongs to two groups.

    Raises:
      TypeError: if ``groups`` is not a sequence of :class:`Group`.
      ValueError: naming the member's path and the offending value.
    """
    if isinstance(groups, Group) or not all(isinstance(g, Group) for g in groups):
        raise TypeError(f"groups must be a sequence of Group, got {groups!r}")
    table = _leaf_table(*trees)
    owner: dict[tuple[str, int], str] = {}
    for g in groups:
        for m in g.members:
            if m.path not in table:
                raise ValueError(
                    f"group {g.name!r}: member path {m.path!r} is not a leaf of the model; "
                    f"paths are {sorted(table)[:20]}"
                )
            shape = np.shape(table[m.path])
            if m.axis >= len(shape):
                raise ValueError(
                    f"group {g.name!r}: member {m.path!r} has shape {shape}, no axis {m.axis}"
                )
            if shape[m.axis] != m.outer * g.size * m.inner:
                raise ValueError(
                    f"group {g.name!r}: member {m.path!r} axis {m.axis} has {shape[m.axis]} entries, "
                    f"expected outer·size·inner = {m.outer}·{g.size}·{m.inner} = "
                    f"{m.outer * g.size * m.inner}"
                )
            key = (m.path, m.axis)
            if key in owner:
                raise ValueError(
                    f"axis {m.axis} of {m.path!r} belongs to two groups, {owner[key]!r} and "
                    f"{g.name!r}; merge them into one group"
                )
            owner[key] = g.name


def _unit_any(
    mask: np.ndarray, member: Member, size: int, param_shape: tuple[int, ...]
) -> np.ndarray:
    """``bool[size]``: whether the mask keeps any entry of each unit's slice."""
    mask = np.asarray(mask, bool)
    axis_len = param_shape[member.axis]
    offset = len(param_shape) - mask.ndim
    full = mask.reshape((1,) * offset + mask.shape)
    along = full.shape[member.axis]
    others = tuple(a for a in range(full.ndim) if a != member.axis)
    per_entry = full.any(axis=others) if others else full
    per_entry = np.broadcast_to(per_entry.reshape(along), (axis_len,))
    return per_entry.reshape(member.outer, size, member.inner).any(axis=(0, 2))


def keep_sets(
    groups: Sequence[Group],
    params: PyTree,
    mask_or_keep: PyTree | Mapping[Any, Sequence[int]],
    *,
    strict: bool = True,
) -> dict[str, tuple[int, ...]]:
    """Group-level keep sets from a structured mask or from explicit keep indices.

    **From a mask** (a pytree mirroring ``params``, e.g. from
    ``sparsejax.prune(..., structure=sparsejax.Neurons())`` with leaves ``(1, …, 1, out)``,
    a head mask ``(1, H, 1)``, or any full-shape mask): unit ``u`` of a group is kept iff
    the leader's mask keeps *any* entry of the leader's slice of unit ``u`` (so a unit is
    removed exactly when its whole leader slice is pruned). A scalar mask leaf keeps
    (``True``) or prunes (``False``) every unit.

    Consistency (``strict=True``, the default) raises a ``ValueError`` when

    * a *non-leader* member's mask prunes a whole unit slice that the leader keeps
      (e.g. a Neurons mask on ``key/kernel`` that disagrees with the one on
      ``query/kernel``, whose units are coupled by ``q·kᵀ``);
    * a unit of a blocked group (one that reaches the model output, or is reduced over
      by a LayerNorm, ...) is pruned;
    * every unit of a group is pruned (a layer of width 0 is not a model).

    With ``strict=False`` the leader decides, blocked groups keep every unit, and a group
    with every unit pruned keeps its first unit. Entries pruned by the mask but not
    removed by a keep set stay pruned in :func:`shrink` (it applies the mask first).

    **From keep indices**: a mapping ``{group: unit indices}`` whose keys are group names
    (``"{leader path}:{axis}"``), leader paths (when only one group has that leader) or
    group positions in ``groups``. Groups not listed keep every unit.

    Args:
      groups: the coupled groups (:func:`coupled_groups` or an explicit spec).
      params: the parameter pytree the mask mirrors (``nnx.state(model, nnx.Param)``).
      mask_or_keep: a mask pytree or a keep-index mapping (see above).
      strict: raise on inconsistent masks (see above).

    Returns:
      ``{group.name: sorted unit indices kept}`` for every group.

    Raises:
      ValueError: naming the group's leader path and the offending units.

    References:
      Li et al. (2017), Pruning Filters for Efficient ConvNets, ICLR (filters removed with
      the next layer's input channels and the BatchNorm channel).
    """
    groups = tuple(groups)
    names = [g.name for g in groups]
    if isinstance(mask_or_keep, Mapping) and not _is_mask_like(mask_or_keep, params):
        return _keep_from_indices(groups, names, mask_or_keep)
    table = dict(named_leaves(mask_or_keep))
    shapes = {p: np.shape(x) for p, x in named_leaves(params)}
    missing = [g.leader.path for g in groups if g.leader.path not in shapes]
    if missing:
        raise ValueError(f"mask mode needs the leaders in params; not found: {missing[:5]}")
    out: dict[str, tuple[int, ...]] = {}
    for g in groups:
        kept = _mask_units(g, g.leader, table, shapes)
        if kept is None:
            kept = np.ones(g.size, bool)
        if strict:
            for m in g.members[1:]:
                if m.path not in table or m.path not in shapes:
                    continue
                other = _mask_units(g, m, table, shapes)
                if other is not None and np.any(kept & ~other):
                    bad = np.flatnonzero(kept & ~other)[:8].tolist()
                    raise ValueError(
                        f"inconsistent mask: group {g.name!r} keeps units {bad} (its leader "
                        f"{g.leader.path!r} keeps them) but the mask of the coupled member "
                        f"{m.path!r} (axis {m.axis}) prunes them entirely; prune coupled "
                        f"parameters together, restrict `prunable` to the leaders, or pass "
                        f"strict=False to let the leader decide"
                    )
        if g.blocked is not None and not kept.all():
            if strict:
                raise ValueError(
                    f"group {g.name!r} cannot be shrunk: {g.blocked}; but the mask prunes its "
                    f"units {np.flatnonzero(~kept)[:8].tolist()}. Exclude {g.leader.path!r} from "
                    f"`prunable` or pass strict=False to keep blocked groups whole"
                )
            kept = np.ones(g.size, bool)
        if not kept.any():
            if strict:
                raise ValueError(
                    f"the mask prunes every unit of group {g.name!r} ({g.size} units); a "
                    f"layer of width 0 is not supported (remove whole blocks with remove_blocks)"
                )
            kept = np.zeros(g.size, bool)
            kept[0] = True
        out[g.name] = tuple(int(i) for i in np.flatnonzero(kept))
    return out


def _is_mask_like(tree: Mapping, params: PyTree) -> bool:
    try:
        return jax.tree.structure(tree) == jax.tree.structure(params)
    except Exception:
        return False


def _mask_units(g: Group, m: Member, table: dict, shapes: dict) -> np.ndarray | None:
    if m.path not in table:
        return None
    leaf = np.asarray(table[m.path])
    if leaf.dtype != np.bool_:
        raise ValueError(f"mask at {m.path!r} must be bool, got dtype {leaf.dtype}")
    check_broadcastable(m.path, leaf.shape, shapes[m.path])
    if leaf.ndim == 0:
        return np.full(g.size, bool(leaf))
    return _unit_any(leaf, m, g.size, shapes[m.path])


def _keep_from_indices(
    groups: tuple[Group, ...], names: list[str], keep: Mapping[Any, Sequence[int]]
) -> dict[str, tuple[int, ...]]:
    out = {g.name: tuple(range(g.size)) for g in groups}
    by_leader: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_leader.setdefault(g.leader.path, []).append(i)
    for key, idx in keep.items():
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not 0 <= key < len(groups):
                raise ValueError(f"keep: group index {key} out of range [0, {len(groups)})")
            pos = int(key)
        elif isinstance(key, str) and key in names:
            pos = names.index(key)
        elif isinstance(key, str) and key in by_leader:
            if len(by_leader[key]) > 1:
                raise ValueError(
                    f"keep: leader path {key!r} leads several groups "
                    f"{[names[i] for i in by_leader[key]]}; use one of these names"
                )
            pos = by_leader[key][0]
        else:
            raise ValueError(
                f"keep: {key!r} names no group; group names are {names} (a mask must mirror "
                "nnx.state(model, nnx.Param) exactly, node types included)"
            )
        g = groups[pos]
        arr = np.asarray(idx)
        if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"keep[{key!r}] must be a 1-D sequence of unit indices, got {idx!r}")
        if arr.size == 0:
            raise ValueError(f"keep[{key!r}] is empty: group {g.name!r} needs at least one unit")
        if arr.min() < 0 or arr.max() >= g.size:
            raise ValueError(f"keep[{key!r}] has indices outside [0, {g.size}): {arr.tolist()}")
        uniq = np.unique(arr)
        if uniq.size != arr.size:
            raise ValueError(f"keep[{key!r}] repeats unit indices: {arr.tolist()}")
        if g.blocked is not None and uniq.size < g.size:
            raise ValueError(f"group {g.name!r} cannot be shrunk: {g.blocked}")
        out[g.name] = tuple(int(i) for i in uniq)
    return out


def group_mask(
    groups: Sequence[Group], params: PyTree, keep: Mapping[str, Sequence[int]]
) -> PyTree:
    """The mask that zeroes every member slice of the removed units: the "masked model".

    For each group and each member that is a leaf of ``params``, the entries owned by the
    removed units are pruned: the leader's output columns, the biases, the BatchNorm /
    LayerNorm scale and bias, the next layers' input rows, the head slices of
    ``query``/``key``/``value``/``out``. Running statistics (not in ``params``) are not
    masked. :func:`shrink` is exactly equivalent to this mask: the model holding
    ``apply_mask(params, group_mask(...))`` computes the same function as the shrunk model
    (a removed unit then contributes nothing to any kept computation, whatever its
    activation after a BatchNorm).

    Args:
      groups: coupled groups.
      params: parameter pytree.
      keep: keep sets as :func:`keep_sets` returns them.

    Returns:
      A mask pytree mirroring ``params``: members of groups that lose units get a bool
      leaf of their parameter's rank with the kept pattern along the member axes (size 1
      elsewhere), other leaves the scalar ``True``.
    """
    by_path: dict[str, list[tuple[Group, Member]]] = {}
    for g in groups:
        for m in g.members:
            by_path.setdefault(m.path, []).append((g, m))

    def leaf_mask(path: str, p: Any) -> jax.Array:
        entries = by_path.get(path)
        if not entries:
            return jnp.ones((), bool)
        shape = np.shape(p)
        out = np.ones((1,) * len(shape), bool)
        cut = False
        for g, m in entries:
            kept = np.zeros(g.size, bool)
            kept[list(keep[g.name])] = True
            if kept.all():
                continue
            cut = True
            along = np.broadcast_to(kept[None, :, None], (m.outer, g.size, m.inner)).reshape(-1)
            view = [1] * len(shape)
            view[m.axis] = shape[m.axis]
            out = out & along.reshape(view)
        return jnp.asarray(out) if cut else jnp.ones((), bool)

    return jax.tree_util.tree_map_with_path(lambda kp, p: leaf_mask(path_str(kp), p), params)
