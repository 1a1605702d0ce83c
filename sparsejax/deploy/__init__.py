"""From a pruning run to a deployable model: strip the training state, export sparse weights.

:func:`strip` returns plain parameters from a training state (the mask of the
:func:`sparsejax.pruning` / :func:`sparsejax.keep_sparse` state applied; TF-MOT's
``strip_pruning``). :func:`export` stores masked parameters sparse: each prunable leaf a
``jax.experimental.sparse.BCOO`` of exactly its kept entries, or a
:class:`~sparsejax.block_sparse.BlockSparseMatrix` of the kept tiles of a
``Blocks``-pruned weight. :func:`sparse_apply` runs the model's unchanged forward
function on them, with sparse products where the weights are multiplied. Saving a pruned
or shrunk NNX model with its mask and widths is :func:`sparsejax.shrink.save_model`.
Structured pruning followed by :func:`sparsejax.shrink.shrink` is the path to speed on
standard XLA kernels; BCOO is a compact storage and reference, not a fast kernel.

Example:
  >>> import jax.numpy as jnp, sparsejax as sj
  >>> from sparsejax.deploy import export, sparse_apply
  >>> params = {"w": jnp.array([[1.0, -3.0], [0.5, 2.0]]), "b": jnp.zeros(2)}
  >>> sp = export(params, sj.prune(sj.scores.magnitude(params), 0.5))
  >>> fwd = lambda p, x: x @ p["w"] + p["b"]
  >>> sparse_apply(fwd)(sp, jnp.ones((1, 2))).tolist()
  [[0.0, -1.0]]
"""

from sparsejax.deploy._apply import sparse_apply
from sparsejax.deploy._export import FORMATS, export, is_sparse
from sparsejax.deploy._strip import strip

__all__ = ["FORMATS", "export", "is_sparse", "sparse_apply", "strip"]
