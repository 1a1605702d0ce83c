"""Scores → mask: layerwise or global selection with exact counts and any structure.

:func:`prune` turns an importance-score pytree into a mask pytree (see
:mod:`sparsejax.masks` for the mask convention). Low scores are pruned.

**What "sparsity" counts.** Sparsity is a fraction of *groups*
(:mod:`sparsejax.structures`): entries for ``Unstructured``/``NM``, output units for
``Neurons``, tiles for ``Blocks``, whole leaves for ``Layers``. With
``scope="layer"`` a layer of ``n`` groups loses exactly ``round(s·n)``; with
``scope="global"`` exactly ``round(s·n)`` of the ``n`` groups of all prunable leaves
together go, every group counting once whatever its size.

**Order.** Groups rank by their (reduced) score. Ties go by *relative position*:
group ``i`` of a leaf of ``n`` groups sits at ``i · ⌊2**32 / n⌋`` (about ``i / n``),
the lower first, then the leaf first in ``jax.tree.leaves`` order. In one leaf that
is the flat index; across leaves, tied layers lose the same fraction, so heavy ties
never strip a whole layer. NaN ranks *above* every number, eagerly and under ``jit``
alike (:func:`sparsejax.scores.check_finite` makes it an error); ``-0.0`` ties with
``+0.0``.

No search sorts all parameters: a radix search by counting passes (``_radix``), one
sort for small models on one accelerator (``_sort``), or a sampled bracket for large
global selections (``_sampled``; Pallas passes on one NVIDIA GPU, ``_pallas``) give
the same mask bit for bit. Rounding and cumulative pruning: :func:`prune`.

References:
  Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All Tickets
  Winners", ICML 2020 (ERK distribution).
  Zhu & Gupta. "To prune, or not to prune", 2017 (layerwise magnitude pruning).
  Frankle & Carbin. "The Lottery Ticket Hypothesis", ICLR 2019 (global pruning).
"""

from sparsejax.select._distributions import DISTRIBUTIONS, erk_sparsities
from sparsejax.select._plan import NORMALIZATIONS, SCOPES, SEARCHES
from sparsejax.select._prune import prune
from sparsejax.select._radix import default_bits_per_pass

__all__ = [
    "DISTRIBUTIONS",
    "NORMALIZATIONS",
    "SCOPES",
    "SEARCHES",
    "default_bits_per_pass",
    "erk_sparsities",
    "prune",
]
