"""Scores → mask: layerwise or global selection with exact counts and any structure.

:func:`prune` turns an importance-score pytree into a mask pytree (see
:mod:`sparsejax.masks` for the mask convention). Low scores are pruned.

**What "sparsity" counts.** For every structure and scope, sparsity is a
fraction of *groups* (:mod:`sparsejax.structures`): single entries for
``Unstructured``/``NM``, output units for ``Neurons``, tiles for ``Blocks``,
whole leaves for ``Layers``. With ``scope="layer"`` a layer with ``n`` groups
loses exactly ``round(s·n)`` of them; with ``scope="global"`` exactly
``round(s·n)`` of the ``n`` groups of all prunable leaves together are pruned,
every group counting once whatever its size (global ``Neurons`` pruning at
``s=0.5`` removes half of all neurons; global ``Layers`` pruning removes half
of the prunable leaves). Groups are ranked by their (reduced) score; ties are
broken by position: the group with the lower flat index inside its leaf, and
for equal positions the leaf that comes first in ``jax.tree.leaves`` order, is
pruned first. NaN scores rank *above* every number (never pruned before a real
score; the order of ``numpy.sort``), and ``-0.0`` ties with ``+0.0``.

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
