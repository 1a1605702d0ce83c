"""The bookkeeping of the coupling analysis: axis labels and the union-find of groups.

Each axis of every traced value carries an :class:`AxisLabel`: a *group* label ("this
axis indexes the units of group ``g``", possibly flattened with other axes:
``outer``/``inner``, and whether the removed units are exactly zero there in the masked
model) and *parameter* labels (:class:`LeafAxis`: "this axis is axis ``a`` of leaf
``p``"). :class:`GroupUnion` merges groups that meet, collects their member slices, and
records why a group is blocked or a parameter axis cannot be followed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class LeafAxis:
    """Axis ``axis`` (``n`` entries) of leaf ``leaf``, seen on an activation axis."""

    leaf: int
    axis: int
    n: int
    outer: int = 1
    inner: int = 1


@dataclasses.dataclass(frozen=True)
class AxisLabel:
    """Labels of one axis of one traced value."""

    group: int | None = None
    outer: int = 1
    inner: int = 1
    refs: tuple[LeafAxis, ...] = ()
    zero: bool = False


class GroupUnion:
    """Union-find of groups plus the label environment of one trace."""

    def __init__(self, names: list[str]):
        self.names = names
        self.parent: list[int] = []
        self.size: list[int] = []
        self.members: list[list[LeafAxis]] = []
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

    def absorb(self, g: int, ax: AxisLabel, ref: LeafAxis, where: str) -> int:
        """Make ``ref`` (seen on an axis labelled ``g`` with ``ax.outer/inner``) a member."""
        g = self.find(g)
        n = self.size[g]
        if ref.outer == 1 and ref.inner == 1 and ref.n == ax.outer * n * ax.inner:
            member = LeafAxis(ref.leaf, ref.axis, n, ax.outer, ax.inner)
        elif (ref.outer, ref.inner, ref.n) == (ax.outer, ax.inner, n):
            member = LeafAxis(ref.leaf, ref.axis, n)
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

    def make_opaque(self, ax: AxisLabel | None, reason: str) -> None:
        if ax is None:
            return
        for r in ax.refs:
            self.opaque.setdefault((r.leaf, r.axis), reason)

    def drop(self, ax: AxisLabel | None, reason: str) -> None:
        """A label that cannot be followed: block its group, freeze its parameters."""
        if ax is None:
            return
        if ax.group is not None:
            self.block(ax.group, reason)
        self.make_opaque(ax, reason)

    # -- combining labels on one axis ---------------------------------------------
    def merge_axis(self, axs: Sequence[AxisLabel], unowned: bool, zero: bool, where: str) -> AxisLabel | None:
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
            return AxisLabel(refs=tuple(dict.fromkeys(refs)), zero=zero)
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
        return AxisLabel(self.find(g), first.outer, first.inner, (), zero)
