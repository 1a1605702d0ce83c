"""The plan of a selection: checked arguments, prunable leaves, targets and the search.

:func:`~sparsejax.select.prune` validates its arguments (:func:`check_options`),
collects the prunable leaves (:func:`collect_leaves`) and turns the sparsities into a
static :class:`Plan` (hashable: the jitted core compiles once per plan) plus the
targets, which are arguments (:func:`plan_selection`). Python-float sparsities become
exact counts; array sparsities float32 fractions, rounded inside the core. The search
that ``search="auto"`` picks, and whether the Pallas passes read the scores, are planned
per platform (:data:`~sparsejax._platform.PLATFORMS`); the core runs the choice of the
platform it is lowered for (``sparsejax._platform.by_platform``), never Pallas on a TPU.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax._gpu_kernels import default_backend
from sparsejax._platform import PLATFORMS, target_device_count, target_platform, targeting
from sparsejax.masks import validate_mask
from sparsejax.select._distributions import DISTRIBUTIONS, layer_sparsities, parse_sparsity
from sparsejax.select._radix import default_bits_per_pass
from sparsejax.structures import NM, REDUCTIONS, Structure, Unstructured
from sparsejax.tree import Prunable, PyTree, check_same_structure, named_leaves, prunable_tree

__all__ = [
    "NORMALIZATIONS",
    "SCOPES",
    "SEARCHES",
    "LeafPlan",
    "Plan",
    "PrunableLeaves",
    "Search",
    "SegmentPlan",
    "Targets",
    "check_options",
    "collect_leaves",
    "plan_selection",
]

SCOPES: tuple[str, ...] = ("layer", "global")
NORMALIZATIONS: tuple[str, ...] = ("l1", "l2", "max", "mean")
SEARCHES: tuple[str, ...] = ("auto", "radix", "sampled", "sort")

_MAX_GROUPS_PER_LEAF = 2**32 - 2  # per-leaf counts and flat indices are uint32
_MAX_LEAVES = 2**16 - 1  # 16-bit halves of uint32 counts summed in uint32
_NM_TOLERANCE = 1e-6  # float32 slack when comparing a sparsity with 1 - n/m
_SORT_MAX = 2**20  # search="auto" sorts up to this many groups on one accelerator
_SAMPLED_MIN = 2**22  # search="auto" samples from this many selectable groups on

#: Whether the sampled search may read the scores with the Pallas passes where they run
#: (:func:`_pallas_passes`). ``benchmarks/global_selection.py`` sets it to ``False`` to
#: time the XLA passes on a GPU; the masks are the same either way.
pallas_passes_allowed = True


def _sampling_pays() -> bool:
    """Whether ``search="auto"`` may sample: not on XLA:CPU, where the scatter of the
    histogram pass materializes its indices and the radix passes are faster
    (timings: docs/results.md)."""
    return target_platform() != "cpu"


def _sorting_pays(total_groups: int) -> bool:
    """Whether ``search="auto"`` sorts: at most ``_SORT_MAX`` groups on a single
    accelerator, where one sort of so few keys costs less than the radix search's 16
    counting passes (:mod:`~sparsejax.select._sort`). Not on XLA:CPU, where the passes
    are cheaper than a sort, and not with several devices, where a sort would gather
    sharded scores."""
    return total_groups <= _SORT_MAX and _sampling_pays() and target_device_count() == 1


def _pallas_passes() -> bool:
    """Whether the sampled search reads the scores once with the Pallas kernels of
    :mod:`sparsejax.select._pallas`: on a single NVIDIA GPU (and while
    :data:`pallas_passes_allowed`). With several devices the XLA passes run instead:
    XLA cannot partition a Pallas call, so a sharded leaf would be gathered onto one
    device."""
    return pallas_passes_allowed and default_backend() == "pallas" and target_device_count() == 1


class Search(NamedTuple):
    """The search of one platform: ``sort`` (one stable sort per segment), else
    ``sampled`` (a sampled bracket and a histogram), else the radix passes; ``pallas``:
    the sampled search reads the scores with the Pallas passes, in Pallas interpret
    mode where ``interpret``."""

    sort: bool = False
    sampled: bool = False
    pallas: bool = False
    interpret: bool = False


@dataclasses.dataclass(frozen=True)
class LeafPlan:
    """A prunable leaf: its parameter shape, and whether its score is reduced to groups
    (``False``: the score already has the group shape)."""

    param_shape: tuple[int, ...]
    reduce: bool


@dataclasses.dataclass(frozen=True)
class SegmentPlan:
    """Leaves ranked together (one leaf with ``scope="layer"``, all with ``"global"``).

    ``kind``: ``"none"`` prunes nothing new, ``"all"`` every selectable group,
    ``"select"`` a target; ``n``: groups in the segment; ``cap``: selectable groups
    (``n``, or the N:M candidates).
    """

    leaves: tuple[int, ...]
    kind: str
    n: int
    cap: int


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything static about a selection (a static argument of the jitted core)."""

    leaves: tuple[LeafPlan, ...]
    segments: tuple[SegmentPlan, ...]
    structure: Structure
    reduction: str
    bits_per_pass: int
    joint: bool  # scope="global": one segment holding every leaf
    fractions: bool  # some target is a float32 array (else all are exact Python counts)
    normalize: str | None = None  # per-leaf rescaling of the group scores
    # (platform, Search) for each platform of PLATFORMS: the core runs the lowering
    # platform's (radix passes where missing)
    searches: tuple[tuple[str, Search], ...] = ()

    def search_for(self, platform: str) -> Search:
        """The :class:`Search` planned for ``platform`` (``"cpu"``, ``"gpu"``, ``"tpu"``)."""
        return dict(self.searches).get(platform, Search())


class PrunableLeaves(NamedTuple):
    """The leaves :func:`prune` works on, from :func:`collect_leaves`.

    Attributes:
      ref: the tree whose structure the mask takes (``params``, else ``scores``).
      which: per leaf of ``ref`` (``jax.tree.leaves`` order), whether it is prunable.
      index: positions of the prunable leaves among all leaves.
      names: their paths.
      plans: their :class:`LeafPlan`.
      scores: their score leaves.
      masks: their leaves of the existing mask (``None`` without one).
      all_masks: every leaf of the existing mask (``None`` entries without one).
    """

    ref: PyTree
    which: list[bool]
    index: list[int]
    names: list[str]
    plans: list[LeafPlan]
    scores: list[Any]
    masks: list[Any]
    all_masks: list[Any]


class Targets(NamedTuple):
    """Per ``"select"`` segment, the target: an exact count (``counts_hi``/``counts_lo``,
    uint32 words) or, where ``use_fraction``, a float32 fraction rounded in the core."""

    counts_hi: np.ndarray
    counts_lo: np.ndarray
    fractions: Any
    use_fraction: np.ndarray


def check_options(
    scope: str,
    structure: Any,
    distribution: Any,
    reduction: str,
    normalize: str | None,
    bits_per_pass: int | None,
    search: str,
) -> int:
    """Validate :func:`prune`'s options; returns the bits per pass to use.

    Raises:
      ValueError / TypeError: an unknown scope, structure, distribution, reduction,
        normalization, bits per pass or search, or a combination ``prune`` rejects.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not isinstance(structure, Structure):
        raise TypeError(f"structure must be a sparsejax Structure, got {structure!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if normalize is not None and normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be None or one of {NORMALIZATIONS}, got {normalize!r}")
    if isinstance(distribution, str):
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {DISTRIBUTIONS} or a mapping {{path: sparsity}}, "
                f"got {distribution!r}"
            )
    elif not isinstance(distribution, Mapping):
        raise TypeError(f"distribution must be a string or a mapping, got {distribution!r}")
    if scope == "global" and not (isinstance(distribution, str) and distribution == "uniform"):
        raise ValueError(
            f"scope='global' ranks all layers together; distribution={distribution!r} sets "
            "per-layer sparsities and needs scope='layer'"
        )
    bits = default_bits_per_pass() if bits_per_pass is None else bits_per_pass
    if bits not in (1, 2, 4):
        raise ValueError(f"bits_per_pass must be 1, 2 or 4, got {bits_per_pass!r}")
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    if search == "sampled" and scope != "global":
        raise ValueError(f"search='sampled' needs scope='global', got scope={scope!r}")
    return bits


def collect_leaves(
    scores: PyTree,
    params: PyTree | None,
    mask: PyTree | None,
    prunable: Prunable,
    structure: Structure,
) -> PrunableLeaves:
    """The prunable leaves and their plans, after checking the trees against each other.

    Raises:
      ValueError: mismatched trees or mask, a score of neither the parameter's nor the
        group shape, a structure that does not fit a leaf (naming the path), too many
        groups in a leaf or too many leaves, or no prunable leaf.
    """
    ref_name = "scores" if params is None else "params"
    ref = scores if params is None else params
    if params is not None:
        check_same_structure(params, scores, "params", "scores")
    if mask is not None:
        check_same_structure(ref, mask, ref_name, "mask")
        validate_mask(ref, mask)
    which = jax.tree.leaves(prunable_tree(ref, prunable))
    named = named_leaves(ref)
    score_leaves = jax.tree.leaves(scores)
    mask_leaves = jax.tree.leaves(mask) if mask is not None else [None] * len(named)

    plans, names, index = [], [], []
    for i, ((name, p), s, w) in enumerate(zip(named, score_leaves, which)):
        if not w:
            continue
        pshape = tuple(int(d) for d in np.shape(p))
        gshape = structure.group_shape(pshape, name)
        sshape = tuple(int(d) for d in np.shape(s))
        if sshape == pshape:
            reduce = True
        elif sshape == gshape:
            reduce = False
        else:
            raise ValueError(
                f"scores at {name!r} have shape {sshape}; expected the parameter's shape {pshape} "
                f"or the group shape {gshape} of {structure!r}"
            )
        if math.prod(gshape) > _MAX_GROUPS_PER_LEAF:
            raise ValueError(
                f"parameter at {name!r} has {math.prod(gshape)} groups; at most "
                f"{_MAX_GROUPS_PER_LEAF} per leaf are supported (split the leaf)"
            )
        plans.append(LeafPlan(pshape, reduce))
        names.append(name)
        index.append(i)
    if not plans:
        raise ValueError(f"no prunable parameter: the prunable filter {prunable!r} matched no leaf")
    if len(plans) > _MAX_LEAVES:
        raise ValueError(f"at most {_MAX_LEAVES} prunable leaves are supported, got {len(plans)}")
    return PrunableLeaves(
        ref,
        list(which),
        index,
        names,
        plans,
        [score_leaves[i] for i in index],
        [mask_leaves[i] for i in index],
        list(mask_leaves),
    )


def _segments(
    seg_leaves: list[tuple[int, ...]],
    values: list[Any],
    wheres: list[str],
    groups: list[int],
    caps: list[int],
    structure: Structure,
) -> tuple[list[SegmentPlan], list[int], list[Any]]:
    """Segment plans, and per ``"select"`` segment an exact count or a float32 fraction."""
    is_nm = isinstance(structure, NM)
    segments, counts, fractions = [], [], []  # counts: Python ints; fractions: float32 arrays
    for leaves, v, where in zip(seg_leaves, values, wheres):
        n = sum(groups[i] for i in leaves)
        cap = sum(caps[i] for i in leaves)
        if v is None:
            if not is_nm:
                raise ValueError(f"sparsity is required for {structure!r}, got None")
            kind = "all"
        else:
            if is_nm and not isinstance(v, jax.core.Tracer):
                f = float(np.asarray(v))
                if f > structure.max_sparsity + _NM_TOLERANCE:
                    raise ValueError(
                        f"sparsity{where} is {f!r}, above 1 - n/m = {structure.max_sparsity!r} "
                        f"for {structure.n}:{structure.m} sparsity"
                    )
            if isinstance(v, float) and v == 0.0:
                kind = "none"
            else:
                kind = "select"
                if isinstance(v, float):
                    counts.append(min(round(v * n), cap))
                    fractions.append(None)
                else:
                    counts.append(0)
                    fractions.append(v)
        segments.append(SegmentPlan(tuple(leaves), kind, n, cap))
    return segments, counts, fractions


def _choose_search(search: str, scope: str, total_groups: int) -> tuple[bool, bool]:
    """``(sort, sampled)``: which search finds the threshold (the radix search if neither),
    on the target platform (:func:`~sparsejax._platform.target_platform`)."""
    if search == "sampled" and total_groups >= 2**32:
        raise ValueError(
            f"search='sampled' needs fewer than 2**32 groups, got {total_groups}; "
            "use search='radix'"
        )
    if search == "sort" and total_groups >= 2**31:
        raise ValueError(
            f"search='sort' needs fewer than 2**31 groups, got {total_groups}; use search='radix'"
        )
    sort = search == "sort" or (search == "auto" and _sorting_pays(total_groups))
    sampled = not sort and scope == "global" and (
        search == "sampled"
        or (search == "auto" and _SAMPLED_MIN <= total_groups < 2**32 and _sampling_pays())
    )
    return sort, sampled


def _targets(counts: list[int], fractions: list[Any]) -> Targets:
    counts_hi = np.asarray([k >> 32 for k in counts] or [0], np.uint32)
    counts_lo = np.asarray([k & 0xFFFFFFFF for k in counts] or [0], np.uint32)
    if any(f is not None for f in fractions):
        zero = jnp.zeros((), jnp.float32)
        fracs = jnp.stack([zero if f is None else f for f in fractions])
    else:
        fracs = np.zeros(max(len(fractions), 1), np.float32)
    use_fraction = np.asarray([f is not None for f in fractions] or [False])
    return Targets(counts_hi, counts_lo, fracs, use_fraction)


def plan_selection(
    leaves: PrunableLeaves,
    sparsity: Any,
    *,
    scope: str,
    structure: Structure,
    distribution: str | Mapping[str, Any],
    reduction: str,
    erk_power_scale: float,
    bits_per_pass: int,
    normalize: str | None,
    search: str,
) -> tuple[Plan, Targets]:
    """The static :class:`Plan` of a selection and its :class:`Targets` (arguments as in
    :func:`prune`, already checked by :func:`check_options`).

    Raises:
      ValueError / TypeError: a sparsity outside [0, 1] (naming the path for per-layer
        values), a missing sparsity, an N:M sparsity above ``1 - n/m``, a map key
        matching no layer, or a search that cannot take this many groups.
    """
    groups = [structure.num_groups(lp.param_shape) for lp in leaves.plans]
    is_nm = isinstance(structure, NM)
    caps = [g * (structure.m - structure.n) // structure.m if is_nm else g for g in groups]
    # Per-segment sparsity values (Python float, float32 array or None = structure default).
    if scope == "global":
        seg_leaves = [tuple(range(len(leaves.plans)))]
        values, wheres = [parse_sparsity(sparsity, "sparsity")], [""]
    else:
        seg_leaves = [(i,) for i in range(len(leaves.plans))]
        shapes = [lp.param_shape for lp in leaves.plans]
        values, wheres = layer_sparsities(
            sparsity, distribution, leaves.names, shapes, is_nm, erk_power_scale
        )
    segments, counts, fractions = _segments(seg_leaves, values, wheres, groups, caps, structure)
    searches = []
    for platform in PLATFORMS:
        with targeting(platform):
            sort, sampled = _choose_search(search, scope, sum(groups))
            # Pallas/Triton kernels never on a TPU (no Mosaic version of the passes).
            pallas = sampled and platform != "tpu" and _pallas_passes()
            interpret = pallas and default_backend() != "pallas"
            searches.append((platform, Search(sort, sampled, pallas, interpret)))
    # Single-entry structures ignore the reduction: one compiled plan for all of them.
    plan_reduction = "l1" if isinstance(structure, (Unstructured, NM)) else reduction
    plan = Plan(
        tuple(leaves.plans),
        tuple(segments),
        structure,
        plan_reduction,
        bits_per_pass,
        scope == "global",
        any(f is not None for f in fractions),
        normalize,
        tuple(searches),
    )
    return plan, _targets(counts, fractions)
