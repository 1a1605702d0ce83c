"""Sequential calibration: prune a model's blocks in order, each from the pruned ones' outputs.

:func:`prune_sequential` streams a calibration batch through a model block by block, as
SparseGPT and Wanda do: the embeddings of all calibration sequences are computed, then
for each block its linear layers are pruned from statistics of the inputs they read
(accumulated in micro-batches of ``batch_size`` sequences, so only one block's
activations are held), and the block's outputs with its pruned weights become the next
block's inputs. With ``true_sequential`` (default) the layers of a block go stage by
stage (the decoder's ``qkv`` | ``proj`` | ``fc1`` | ``fc2``): each stage's inputs are
recomputed with the stages before it already pruned ("true sequential" of SparseGPT's
LLaMA code); without it every layer of a block sees the unpruned block (SparseGPT's OPT
code, Wanda). The model is not changed; the result holds a pruned copy, its mask and a
per-layer report (sparsity, relative output error ``‖XW − XŴ‖²/‖XW‖²`` on the layer's
own calibration inputs, the method's loss estimate).

The model protocol (met by :class:`sparsejax.models.DecoderLM`): ``model.embed_tokens
(tokens) -> x``, a sequence ``model.blocks``; every block is called as ``block(x)``, has
``block.linear_inputs(x) -> {name: input}`` and ``LINEAR_STAGES`` (tuples of names of
``nnx.Linear`` attributes). Layer paths are those of ``nnx.state(model, nnx.Param)``,
e.g. ``"blocks/3/fc1/kernel"``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.posttrain._layer_sparsity import sparsity_per_layer
from sparsejax.posttrain._method import Method
from sparsejax.posttrain._selection import check_sparsity
from sparsejax.posttrain._statistics import (
    InputStatistics,
    input_statistics,
    reconstruction_error,
)
from sparsejax.structures import Structure, Unstructured
from sparsejax.tree import named_leaves, path_str

__all__ = ["LayerReport", "PrunedModel", "check_model", "linear_layers", "prune_sequential"]


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """One pruned linear layer of :func:`prune_sequential`.

    Attributes:
      path: the kernel's parameter path, e.g. ``"blocks/0/qkv/kernel"``.
      shape: the kernel's ``(in, out)``.
      target: the requested sparsity (``None``: the full N:M pattern).
      sparsity: the fraction of the kernel's entries the mask prunes.
      error: ``‖XW − XŴ‖²/‖XW‖²`` on the calibration inputs the layer was pruned from
        (``None`` when ``errors=False``).
      loss: the method's own error estimate (SparseGPT's OBS loss), or ``None``.
    """

    path: str
    shape: tuple[int, int]
    target: float | None
    sparsity: float
    error: float | None
    loss: float | None


@dataclasses.dataclass(frozen=True)
class PrunedModel:
    """Result of :func:`prune_sequential`.

    Attributes:
      model: a pruned copy of the model (pruned entries exactly ``0``).
      mask: a mask mirroring ``nnx.state(model, nnx.Param)``: full ``bool`` arrays on
        the pruned kernels, scalar ``True`` elsewhere.
      layers: one :class:`LayerReport` per pruned layer, in pruning order.
    """

    model: nnx.Module
    mask: Any
    layers: tuple[LayerReport, ...]

    @property
    def sparsity(self) -> float:
        """Fraction of the pruned layers' entries that are pruned."""
        total = sum(r.shape[0] * r.shape[1] for r in self.layers)
        return sum(r.sparsity * r.shape[0] * r.shape[1] for r in self.layers) / max(total, 1)


def check_model(model: Any) -> None:
    """Raise a ``TypeError`` naming what ``model`` lacks of the calibration protocol."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    for attr in ("embed_tokens", "blocks"):
        if not hasattr(model, attr):
            raise TypeError(f"{type(model).__name__} has no {attr!r}: sequential calibration "
                            "needs model.embed_tokens(tokens) and model.blocks")
    if len(model.blocks) == 0:
        raise TypeError(f"{type(model).__name__}.blocks is empty")
    for i, block in enumerate(model.blocks):
        stages = getattr(block, "LINEAR_STAGES", None)
        if not callable(getattr(block, "linear_inputs", None)) or not stages:
            raise TypeError(f"block {i} ({type(block).__name__}) needs linear_inputs(x) and "
                            "LINEAR_STAGES")
        for name in (n for stage in stages for n in stage):
            kernel = getattr(getattr(block, name, None), "kernel", None)
            if kernel is None or np.ndim(kernel) != 2:
                raise TypeError(f"block {i}: LINEAR_STAGES names {name!r}, which is not a "
                                "layer with a 2-d kernel")


def linear_layers(model: nnx.Module) -> list[tuple[int, str, str]]:
    """``[(block index, layer name, kernel path), ...]`` in pruning order.

    Raises:
      TypeError: a model outside the protocol; a kernel whose path is not
        ``blocks/<i>/<name>/kernel`` in ``nnx.state(model, nnx.Param)``.
    """
    check_model(model)
    paths = {p for p, _ in named_leaves(nnx.state(model, nnx.Param))}
    out = []
    for i, block in enumerate(model.blocks):
        for name in (n for stage in type(block).LINEAR_STAGES for n in stage):
            path = f"blocks/{i}/{name}/kernel"
            if path not in paths:
                raise TypeError(f"no parameter {path!r} in the model's nnx.Param state")
            out.append((i, name, path))
    return out


@functools.partial(jax.jit, static_argnums=0)
def _embed(graphdef, state, tokens):
    return nnx.merge(graphdef, state).embed_tokens(tokens)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _accumulate(graphdef, state, x, weight, names, stats):
    inputs = nnx.merge(graphdef, state).linear_inputs(x)
    out = {}
    for n in names:
        # inputs (batch, ..., features): padding sequences (weight 0) add nothing, and only
        # the real ones' vectors are counted
        x_n = inputs[n]
        w = weight.reshape((-1,) + (1,) * (x_n.ndim - 1)).astype(x_n.dtype)
        add = input_statistics(x_n * w, gram=stats[n].gram is not None)
        tokens = jnp.sum(weight) * (x_n.size // (x_n.shape[0] * x_n.shape[-1]))
        out[n] = InputStatistics(stats[n].count + tokens, stats[n].sum_squares + add.sum_squares,
                                 None if add.gram is None else stats[n].gram + add.gram)
    return out


@jax.jit
def _layer_summary(kernel, new_kernel, mask, stats):
    """(fraction pruned, relative output error or None) of one pruned layer."""
    err = None if stats is None else reconstruction_error(kernel, new_kernel, stats)
    return jnp.mean(~mask), err


def _empty_stats(features: int, gram: bool) -> InputStatistics:
    return InputStatistics(jnp.zeros((), jnp.float32), jnp.zeros((features,), jnp.float32),
                           jnp.zeros((features, features), jnp.float32) if gram else None)


class Chunks(NamedTuple):
    """A calibration batch's activations in equal chunks of sequences.

    Attributes:
      xs: ``(batch_size, seq, dim)`` arrays; the last chunk is padded by repeating its
        last sequence.
      weights: ``float32[batch_size]`` per chunk: 1 for real sequences, 0 for padding.
    """

    xs: list[jax.Array]
    weights: list[jax.Array]


def stage_statistics(block: nnx.Module, chunks: Chunks, names: tuple[str, ...],
                     gram: bool) -> dict[str, InputStatistics]:
    """Statistics of the inputs of the layers ``names`` of ``block`` over ``chunks``."""
    graphdef, state = nnx.split(block)
    stats = {n: _empty_stats(int(getattr(block, n).kernel.shape[0]), gram) for n in names}
    for x, w in zip(chunks.xs, chunks.weights, strict=True):
        stats = _accumulate(graphdef, state, x, w, names, stats)
    return stats


def embed_chunks(model: nnx.Module, tokens: Any, batch_size: int) -> Chunks:
    """The first block's inputs of ``tokens (n, seq)``, in chunks of ``batch_size`` sequences.

    Raises:
      ValueError: tokens that are not a non-empty 2-d integer array; ``batch_size`` not
        a positive integer.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] == 0 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"calibration tokens must be a non-empty (num_sequences, seq_len) "
                         f"integer array, got {tokens.dtype}{tokens.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = min(batch_size, tokens.shape[0])
    graphdef, state = nnx.split(model)
    xs, weights = [], []
    for i in range(0, tokens.shape[0], batch_size):
        chunk = tokens[i:i + batch_size]
        weight = np.zeros(batch_size, np.float32)
        weight[:chunk.shape[0]] = 1.0
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - chunk.shape[0], 0)])
        xs.append(_embed(graphdef, state, jnp.asarray(chunk)))
        weights.append(jnp.asarray(weight))
    return Chunks(xs, weights)


def forward_chunks(block: nnx.Module, chunks: Chunks) -> Chunks:
    """``block(x)`` for every chunk."""
    graphdef, state = nnx.split(block)
    return Chunks([_forward(graphdef, state, x) for x in chunks.xs], chunks.weights)


def prune_sequential(
    model: nnx.Module,
    tokens: Any,
    method: Method,
    sparsity: float | None = None,
    *,
    structure: Structure = Unstructured(),  # noqa: B008 (frozen, immutable)
    layer_sparsity: Mapping[str, float] | None = None,
    batch_size: int = 8,
    true_sequential: bool = True,
    errors: bool = True,
    log: Callable[[str], None] | None = None,
) -> PrunedModel:
    """Prune every linear layer of every block, in order, from calibration data.

    Args:
      model: an ``nnx.Module`` following the protocol above (e.g. ``DecoderLM``); not
        modified.
      tokens: calibration inputs ``(num_sequences, seq_len)`` int (papers: 128 × 2,048);
        may be ``None`` for magnitude pruning with ``errors=False``.
      method: :class:`Magnitude`, :class:`Wanda` or :class:`SparseGPT`.
      sparsity: fraction of every layer to prune; ``None`` with ``NM(n, m)``.
      structure: ``Unstructured()`` or ``NM(n, m)`` (along each kernel's input axis).
      layer_sparsity: ``{path_or_regex: sparsity}`` overrides (e.g. from
        :func:`owl_layer_sparsities`); unmatched layers get ``sparsity``.
      batch_size: calibration sequences per forward pass (memory vs speed).
      true_sequential: prune a block's stages in order, each from inputs recomputed
        with the earlier stages pruned (default); ``False``: all from the unpruned block.
      errors: record each layer's relative output error (collects the Gram matrix of
        every layer's inputs, which SparseGPT collects anyway).
      log: called with one line per block (e.g. ``print``).

    Returns:
      :class:`PrunedModel`.

    Raises:
      TypeError / ValueError: before any forward pass, naming the problem: a model
        outside the protocol, bad tokens or batch size, a sparsity outside ``[0, 1]``
        (naming the layer), a map key matching no layer, N:M on a layer whose input
        width ``m`` does not divide; SparseGPT's errors (naming the layer).

    Example:
      >>> from flax import nnx
      >>> from sparsejax.models import DecoderLM
      >>> from sparsejax.posttrain import SparseGPT
      >>> lm = DecoderLM(vocab_size=256, dim=32, depth=2, num_heads=2, max_len=16,
      ...                rngs=nnx.Rngs(0))
      >>> tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, 256)
      >>> out = prune_sequential(lm, tokens, SparseGPT(), 0.5)
      >>> [r.sparsity for r in out.layers][:2], round(out.sparsity, 3)
      ([0.5, 0.5], 0.5)
    """
    if not isinstance(method, Method):
        raise TypeError(f"method must be a posttrain Method (Magnitude(), Wanda(), "
                        f"SparseGPT()), got {method!r}")
    layers = linear_layers(model)
    kernels = {p: getattr(model.blocks[i], n).kernel for i, n, p in layers}
    targets = sparsity_per_layer([p for *_, p in layers], sparsity, layer_sparsity)
    for path, s in targets.items():
        check_sparsity(s, structure, path)
        if not isinstance(structure, Unstructured):
            structure.validate(tuple(kernels[path].shape), path)
        method.validate(tuple(kernels[path].shape), structure, path)
    gram = method.statistics == "gram" or errors
    need_inputs = method.statistics != "none" or errors
    # the first forward pass also validates the tokens, before any pruning
    xs = embed_chunks(model, tokens, batch_size) if need_inputs else Chunks([], [])
    graphdef, state = nnx.split(model)
    work = nnx.merge(graphdef, state, copy=True)  # the caller's model is not changed
    masks: dict[str, jax.Array] = {}
    records: list[tuple[str, tuple[int, int], Any, Any, Any, Any]] = []
    for i, block in enumerate(work.blocks):
        stages = type(block).LINEAR_STAGES
        if not true_sequential:
            stages = (tuple(n for stage in stages for n in stage),)
        for stage in stages:
            stats = stage_statistics(block, xs, stage, gram) if need_inputs else {}
            for name in stage:
                path = f"blocks/{i}/{name}/kernel"
                layer = getattr(block, name)
                kernel = layer.kernel[...]
                res = method.prune_layer(kernel, stats.get(name), targets[path], structure, path)
                layer.kernel.set_value(res.kernel)
                masks[path] = res.mask
                pruned, err = _layer_summary(kernel, res.kernel, res.mask,
                                             stats[name] if errors else None)
                records.append((path, tuple(kernel.shape), targets[path], pruned, err, res.loss))
        if need_inputs and i + 1 < len(work.blocks):
            xs = forward_chunks(block, xs)
        if log is not None:
            done = [r for r in records if r[0].startswith(f"blocks/{i}/")]
            log(f"block {i + 1}/{len(work.blocks)}: " + ", ".join(
                f"{r[0].split('/')[2]} {float(r[3]):.3f}"
                + ("" if r[4] is None else f" (err {float(r[4]):.4f})") for r in done))
    params = nnx.state(work, nnx.Param)
    mask = jax.tree_util.tree_map_with_path(
        lambda p, _: masks.get(path_str(p), jnp.ones((), bool)), params)
    reports = tuple(
        LayerReport(path, shape, target, float(s), None if e is None else float(e),
                    None if loss is None else float(loss))
        for path, shape, target, s, e, loss in records)
    return PrunedModel(work, mask, reports)
