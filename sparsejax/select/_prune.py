"""``prune``: the mask of the lowest-scoring groups, from a validated plan.

:func:`prune` checks its arguments and plans the selection
(:mod:`~sparsejax.select._plan`), runs the jitted core :func:`_prune_core` (group
scores, keys, one of the searches, masks expanded to the parameter shapes) and
assembles the mask pytree (:func:`_assemble_mask`).

References:
  Zhu & Gupta. "To prune, or not to prune", 2017 (layerwise magnitude pruning).
  Frankle & Carbin. "The Lottery Ticket Hypothesis", ICLR 2019 (global pruning).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from sparsejax._platform import by_platform, target_platform
from sparsejax.select._keys import KEY_EXCLUDED, KEY_PRUNED, float_key, nm_candidate_keys
from sparsejax.select._plan import (
    Plan,
    PrunableLeaves,
    Search,
    check_options,
    collect_leaves,
    plan_selection,
)
from sparsejax.select._radix import select_lowest
from sparsejax.select._sampled import Source, select_lowest_sampled
from sparsejax.select._sort import select_lowest_sorted
from sparsejax.select._wide import round_product, wide_lt, wide_where
from sparsejax.structures import NM, Structure, Unstructured
from sparsejax.tree import Prunable, PyTree

__all__ = ["prune"]

_U32 = jnp.uint32


def prune(
    scores: PyTree,
    sparsity: float | jax.Array | None = None,
    *,
    params: PyTree | None = None,
    mask: PyTree | None = None,
    prunable: Prunable = None,
    scope: str = "layer",
    structure: Structure = Unstructured(),  # noqa: B008 (frozen, immutable)
    distribution: str | Mapping[str, float | jax.Array] = "uniform",
    reduction: str = "l1",
    erk_power_scale: float = 1.0,
    bits_per_pass: int | None = None,
    normalize: str | None = None,
    search: str = "auto",
) -> PyTree:
    """Mask that prunes the lowest-scoring groups: exactly ``round(s·n)`` of ``n``.

    Pure; works eagerly, under ``jax.jit`` (sparsity may be traced, e.g. a
    schedule value inside ``lax.cond``), under ``jax.vmap`` and on sharded
    arrays (mask leaves follow the scores' sharding; only counts are
    all-reduced). Mask leaf shapes never depend on the sparsity value.

    **Rounding.** ``round`` is round-half-to-even, evaluated exactly for the value
    given: a Python ``float`` sparsity gives ``round(s * n)`` exactly as Python
    computes it; a jax/numpy array sparsity (possibly traced under ``jit``) gives
    the exact round-half-even of ``float32(s) · n``, equal to Python's
    ``round(float(s) * n)`` (for ``n < 2**29``, where that product is exact). So
    ``jit(prune)`` with a traced sparsity and eager ``prune`` with the same array
    agree bit for bit.

    **Cumulative pruning.** With an existing ``mask``, groups it prunes completely
    get the lowest possible rank: they stay pruned and count toward the target.
    If they already exceed the target, the mask is returned unchanged (masks
    only shrink). Entries the existing mask prunes inside groups that are not
    completely pruned stay pruned too, on top of the count (the result is always
    ``new_mask & mask``).

    Args:
      scores: importance pytree mirroring the params; low = pruned first. A
        prunable leaf has the param's full shape (reduced to the structure's
        groups with ``reduction``) or already the group shape
        ``structure.group_shape(param.shape)`` (then ``params`` is required
        to know the param shapes; where both shapes coincide the score counts
        as full-shape). Cast to float32 (bf16 etc. exactly).
      sparsity: fraction of groups to prune, in [0, 1]: Python float or 0-d
        array (may be traced; a traced value outside [0, 1] is clipped, NaN
        counts as 0). ``None``: ``1 - n/m`` for ``NM(n, m)``; required
        otherwise, except with a per-layer map (unmatched layers then keep all).
      params: parameter pytree (shapes only); default: shapes of ``scores``.
      mask: existing mask (cumulative pruning): pruned groups stay pruned and
        count toward the target; the result is ``new & mask``, so masks only
        shrink. Output leaf shape: broadcast of ``mask``'s leaf and the
        structure's mask shape.
      prunable: which leaves may be pruned (default: float leaves with
        ``ndim >= 2``, judged on ``params`` when given, else on ``scores``); the
        others get the scalar ``True`` (or their leaf of ``mask``).
      scope: ``"layer"`` (every leaf separately) or ``"global"`` (all prunable
        leaves ranked together; only with ``distribution="uniform"``).
      structure: granularity (:mod:`sparsejax.structures`). For ``NM(n, m)`` a
        sparsity ``s < 1 - n/m`` prunes ``round(s·N)`` entries chosen only among
        the ``m - n`` lowest of every run of ``m`` (gradual N:M); ``s > 1 - n/m``
        is an error (a traced one is clamped to ``1 - n/m``). The exact count assumes an existing mask that is itself
        N:M-compatible (≤ ``m - n`` pruned per run); extra entries it prunes
        stay pruned on top.
      distribution: per-layer sparsities for ``scope="layer"``: ``"uniform"``
        (every layer ``sparsity``), ``"erk"`` (Evci et al. 2020, overall
        ``sparsity`` over the prunable entries, see :func:`erk_sparsities`) or a
        mapping ``{path_or_regex: sparsity}``: a key equal to a path applies to
        it, otherwise keys are regexes searched in the path (like
        ``prunable``); layers no key matches get ``sparsity``. With a traced
        sparsity the ERK solve runs in float32 (float64 for a Python float), so
        a layer's count can differ by one at a rounding boundary.
      reduction: group reduction, ``"l1"``, ``"l2"``, ``"mean"`` or ``"sum"``
        (see :func:`sparsejax.structures.reduce_scores`).
      erk_power_scale: exponent of ERK's raw densities.
      bits_per_pass: threshold bits fixed per counting pass (1, 2 or 4);
        default :func:`default_bits_per_pass`. Changes speed only.
      normalize: ``None`` or ``"l1"``, ``"l2"``, ``"max"``, ``"mean"``: divide
        each leaf's group scores (after ``reduction``) by that statistic of
        the leaf's groups still alive in ``mask``, before ranking. With
        ``scope="global"`` this puts layers of different scale on one footing
        (``"l2"``: the layer-wise normalisation of Molchanov et al. 2017,
        Pruning CNNs for Resource Efficient Inference, Eq. 9); without it,
        unnormalised global filter norms can remove a whole layer (layer
        collapse). Within one leaf the ranking is unchanged, so layerwise
        results do not change.
      search: how the threshold is found; the mask is the same bit for bit.
        ``"radix"``: ``32 / bits_per_pass`` counting passes
        (:mod:`~sparsejax.select._radix`).
        ``"sampled"``: a sorted strided sample of about ``2**20`` scores
        brackets the threshold, and one pass (a count below the bracket plus a
        ``2**18``-bin histogram of the entries inside it, scattered) usually
        fixes it; a bracket that misses falls back to the radix passes. On a
        single NVIDIA GPU, Pallas kernels read the scores only once
        (:mod:`~sparsejax.select._sampled`). Needs ``scope="global"`` and fewer
        than ``2**32`` groups. ``"sort"`` (:mod:`~sparsejax.select._sort`):
        one stable sort of the group keys per target (all leaves together for
        ``scope="global"``, each leaf for ``"layer"``); fewer than ``2**31``
        groups. ``"auto"``: ``"sort"`` for at most ``2**20`` groups on a single
        accelerator (one sort costs less there than the 16 radix passes);
        ``"sampled"``
        for global selection over at least ``2**22`` groups on an accelerator;
        else ``"radix"``.

    Returns:
      A mask pytree with the structure of ``scores``.

    Raises:
      ValueError / TypeError: unknown scope, distribution or reduction; a
        sparsity outside [0, 1] (naming the path for per-layer values);
        mismatched trees; a structure that does not fit a leaf; a map key
        matching no layer. Non-finite scores are not an error: NaN ranks above
        every number (pruned only after every real score), ``+inf`` below NaN,
        ``-inf`` below every finite score -- eagerly and under ``jit`` alike;
        :func:`sparsejax.scores.check_finite` raises on them (naming the
        path and the counts) when called eagerly.

    Example:
      >>> scores = {"w": jnp.array([[0.3, 0.1], [0.2, 0.4]]), "b": jnp.ones(2)}
      >>> prune(scores, 0.5)["w"]
      Array([[ True, False],
             [False,  True]], dtype=bool)
    """
    bits = check_options(scope, structure, distribution, reduction, normalize, bits_per_pass, search)
    leaves = collect_leaves(scores, params, mask, prunable, structure)
    plan, targets = plan_selection(
        leaves,
        sparsity,
        scope=scope,
        structure=structure,
        distribution=distribution,
        reduction=reduction,
        erk_power_scale=erk_power_scale,
        bits_per_pass=bits,
        normalize=normalize,
        search=search,
    )
    new = _prune_core(leaves.scores, leaves.masks, *targets, plan=plan)
    return _assemble_mask(leaves, new, with_mask=mask is not None)


def _left_pad(x: jax.Array, ndim: int) -> jax.Array:
    x = jnp.asarray(x)
    return x.reshape((1,) * (ndim - x.ndim) + x.shape)


def _normalize_groups(g, already, how: str) -> jax.Array:
    """Group scores divided by their layer's L1 / L2 norm, max or mean over the groups
    still alive (not ``already`` pruned; the score unchanged if that statistic is 0)."""
    alive = jnp.ones(g.shape, bool) if already is None else jnp.broadcast_to(~already, g.shape)
    a = jnp.where(alive, jnp.abs(g), 0.0)
    if how == "l1":
        scale = jnp.sum(a)
    elif how == "l2":
        scale = jnp.sqrt(jnp.sum(a * a))
    elif how == "max":
        scale = jnp.max(a)
    else:
        scale = jnp.sum(a) / jnp.maximum(jnp.sum(alive), 1)
    return jnp.where(scale > 0, g / jnp.where(scale > 0, scale, 1.0), g)


@functools.partial(jax.jit, static_argnames=("plan",))
def _prune_core(scores, masks, counts_hi, counts_lo, fractions, use_fraction, *, plan: Plan):
    """The jitted selection: per prunable leaf, the new keep mask.

    Group scores (reduced, normalized) become keys; segments of kind ``"select"`` go
    through the plan's search (sort, sampled or radix), the others keep or prune every
    selectable group; the selection is expanded to the parameter shape and intersected
    with the existing mask.
    """
    structure = plan.structure
    key_fns: list[Callable[..., jax.Array]] = []
    sources: list[Source | None] = []
    for lp, score, m in zip(plan.leaves, scores, masks):
        g = structure.reduce(score, plan.reduction) if lp.reduce else score
        g = jnp.asarray(g, jnp.float32)
        already = None
        if m is not None:
            full = jnp.broadcast_to(_left_pad(m, len(lp.param_shape)), lp.param_shape)
            already = ~structure._group_any(full)
        if plan.normalize is not None:
            g = _normalize_groups(g, already, plan.normalize)
        if lp.reduce or plan.normalize is not None:
            # Materialise the group scores once. Every radix pass and the final comparison
            # must see the same floats; XLA:GPU otherwise may fuse a copy of the reduction
            # into several consumers, whose sums can round differently (seen on a GPU for
            # a (5, 1, 25) kernel: a wrong count).
            g = lax.optimization_barrier(g)
        if isinstance(structure, NM):
            key = nm_candidate_keys(float_key(g, already), structure.n, structure.m)
            key_fns.append(lambda zero=None, key=key: key)
            sources.append(None)
        else:
            key_fns.append(lambda zero=None, g=g, already=already: float_key(g, already, zero))
            sources.append((g, already))

    pruned: list[jax.Array | None] = [None] * len(plan.leaves)
    search_leaves: list[int] = []
    selecting = [seg for seg in plan.segments if seg.kind == "select"]
    for seg in plan.segments:
        if seg.kind == "select":
            search_leaves.extend(seg.leaves)
            continue
        for i in seg.leaves:
            key = key_fns[i]()
            if seg.kind == "none":
                pruned[i] = key == _U32(KEY_PRUNED)
            else:
                pruned[i] = key != _U32(KEY_EXCLUDED)
    if selecting:
        # Python floats arrive as exact counts, arrays as float32 fractions.
        k = (counts_hi, counts_lo)
        if plan.fractions:
            k = wide_where(use_fraction, round_product(fractions, [seg.n for seg in selecting]), k)
        cap = (
            jnp.asarray([seg.cap >> 32 for seg in selecting], _U32),
            jnp.asarray([seg.cap & 0xFFFFFFFF for seg in selecting], _U32),
        )
        target = wide_where(wide_lt(cap, k), cap, k)

        def search(choice: Search, target) -> list[jax.Array]:
            if choice.sort:
                return select_lowest_sorted(
                    [key_fns[i]() for i in search_leaves], plan.joint, target
                )
            if choice.sampled:
                return select_lowest_sampled(
                    [key_fns[i] for i in search_leaves],
                    target,
                    plan.bits_per_pass,
                    [sources[i] for i in search_leaves],
                    choice.pallas,
                )
            return select_lowest(
                [key_fns[i] for i in search_leaves], plan.joint, target, plan.bits_per_pass
            )

        # The search planned for the platform this program is lowered for.
        selected = by_platform(lambda: plan.search_for(target_platform()), search, target)
        for i, sel in zip(search_leaves, selected):
            pruned[i] = sel

    out = []
    for lp, p, m in zip(plan.leaves, pruned, masks):
        keep = structure.expand(~p, lp.param_shape)
        if m is not None:
            keep = jnp.logical_and(
                _left_pad(keep, len(lp.param_shape)), _left_pad(m, len(lp.param_shape))
            )
        out.append(keep)
    return out


def _assemble_mask(leaves: PrunableLeaves, new: list[jax.Array], with_mask: bool) -> PyTree:
    """The mask pytree: the new masks of the prunable leaves; the others keep their leaf
    of the existing mask, or get the scalar ``True``."""
    out = []
    it = iter(new)
    for i, w in enumerate(leaves.which):
        if w:
            out.append(next(it))
        elif with_mask:
            out.append(jnp.asarray(leaves.all_masks[i], bool))
        else:
            out.append(jnp.ones((), bool))
    return jax.tree.unflatten(jax.tree.structure(leaves.ref), out)
