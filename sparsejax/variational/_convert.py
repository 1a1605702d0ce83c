"""Sparse VD to and from plain models: the warm start (:func:`from_dense`), :func:`to_plain`."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sparsejax.tree import check_same_structure, path_str
from sparsejax.variational._training import vd_layers

# log σ² of a warm start: the ard_init of the paper's layers (see from_dense).
WARM_START_LOG_SIGMA2 = -10.0


def _child(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name  # a VD layer at the root has path ""


def _named_params(model: nnx.Module) -> dict[str, jax.Array]:
    state = nnx.state(model, nnx.Param)
    return {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(state)[0]}


def from_dense(
    vd_model: nnx.Module,
    dense_model: nnx.Module,
    *,
    log_sigma2: float = WARM_START_LOG_SIGMA2,
) -> nnx.Module:
    """A copy of ``vd_model`` that starts from a trained dense model (the warm start of sparse VD).

    Every VD layer at path ``P`` takes ``θ = dense P/kernel`` and ``bias = dense P/bias``;
    its ``log_sigma2`` is set to ``log_sigma2`` everywhere and a structured layer's
    ``scale`` to 1; every other ``nnx.Param`` of ``vd_model`` is copied from the same path
    of ``dense_model``. So ``log α = clip(log σ² − log θ², −8, 8)`` starts where the dense
    weights put it: small weights noisy, large ones nearly deterministic; as
    ``log_sigma2 → −∞`` every ``log α`` is −8 (far below the threshold 3), and the VD model
    in evaluation mode computes exactly the dense model's outputs (in training mode, the
    dense output plus noise of variance ``x²·e⁻⁸·θ² + 10⁻⁸``).

    The recipe of Molchanov et al. (2017) for LeNet-300-100 / LeNet-5: θ from the trained
    dense network, ``log σ² = −10`` (the ``ard_init`` of the authors' VD layers; their
    warm start of the VGG-like network used −15), the KL weight warmed up from 0
    (:func:`kl_warmup`), Adam; weights with ``log α ≥ 3`` removed at the end.

    Args:
      vd_model: a VD model, e.g. ``VDLeNet300100(rngs=nnx.Rngs(0))`` (not modified).
      dense_model: the trained plain model with ``kernel``/``bias`` at the VD layers'
        paths, e.g. a trained ``LeNet300100`` (not modified).
      log_sigma2: the initial ``log σ²`` of every VD layer (a finite float; −10).

    Returns:
      A new VD model (``nnx.clone`` of ``vd_model``, same train/eval mode) with the dense
      weights.

    Raises:
      ValueError: ``vd_model`` has no VD layer; a parameter of either model has no
        counterpart in the other (VD noise parameters aside) or another shape (the path
        is named); ``log_sigma2`` not a finite float.

    Example:
      >>> from sparsejax.models import LeNet300100
      >>> dense = LeNet300100(rngs=nnx.Rngs(0))  # trained in practice
      >>> vd = from_dense(VDLeNet300100(rngs=nnx.Rngs(1)), dense)
      >>> bool(jnp.all(vd.layers[0].kernel[...] == dense.layers[0].kernel[...]))
      True
    """
    if isinstance(log_sigma2, bool) or not isinstance(log_sigma2, (int, float)) or not (
        math.isfinite(log_sigma2)
    ):
        raise ValueError(f"log_sigma2 must be a finite float, got {log_sigma2!r}")
    layers = vd_layers(vd_model)
    if not layers:
        raise ValueError(f"vd_model ({type(vd_model).__name__}) has no VD layer (VDLinear/VDConv)")
    noise = {_child(p, "log_sigma2") for p, _ in layers} | {
        _child(p, "scale") for p, layer in layers if layer.structured
    }
    vd = _named_params(vd_model)
    dense = _named_params(dense_model)
    missing = [n for n in vd if n not in noise and n not in dense]
    if missing:
        raise ValueError(f"vd_model parameters {missing} have no counterpart in dense_model; its "
                         f"parameter paths are {sorted(dense)}")
    extra = [n for n in dense if n not in vd]
    if extra:
        raise ValueError(f"dense_model parameters {extra} have no counterpart in vd_model; its "
                         f"parameter paths are {sorted(vd)}")
    for name, value in dense.items():
        if jnp.shape(value) != jnp.shape(vd[name]):
            raise ValueError(f"parameter {name!r}: dense_model has shape {jnp.shape(value)}, "
                             f"vd_model {jnp.shape(vd[name])}")
    new = nnx.clone(vd_model)
    for path, node in nnx.iter_graph(new):
        if not isinstance(node, nnx.Param):
            continue
        name = "/".join(str(k) for k in path)
        old = node.get_value()
        if name in dense:
            node.set_value(jnp.asarray(dense[name], old.dtype))
        elif name.rpartition("/")[2] == "log_sigma2":
            node.set_value(jnp.full(old.shape, log_sigma2, old.dtype))
        else:  # a structured layer's scale
            node.set_value(jnp.ones(old.shape, old.dtype))
    return new


def to_plain(vd_model: nnx.Module, plain_model: nnx.Module) -> tuple[nnx.State, nnx.State]:
    """Deterministic parameters and mask of a trained VD model, for a plain model.

    Every VD layer at path ``P`` of ``vd_model`` provides ``P/kernel`` and
    ``P/bias`` (:meth:`VDLinear.deterministic_params`); every other ``nnx.Param``
    of ``plain_model`` is copied from the same path of ``vd_model``.

    Args:
      vd_model: e.g. a trained :class:`VDLeNet300100` (not modified).
      plain_model: a model with ``nnx.Linear``/``nnx.Conv`` at the VD layers'
        paths, e.g. ``LeNet300100(rngs=nnx.Rngs(0))`` (only its structure and
        shapes are read; it is not modified).

    Returns:
      ``(params, mask)``, two ``nnx.State`` trees of plain arrays at the paths of
      ``nnx.state(plain_model, nnx.Param)`` (the form of ``nnx.as_pure`` and of
      ``create_train_state(..., plain_arrays=True)``; nothing in them is an
      ``nnx.Param``, so no optimizer takes the mask for a parameter). ``params`` has the
      removed weights at ``0.0``; ``mask`` holds bool arrays: kernel masks of full
      shape, or ``(1, …, out)`` with ``bias`` masks ``(out,)`` for structured layers,
      scalar ``True`` elsewhere. ``nnx.update(plain_model, params)`` gives a model whose
      outputs equal ``vd_model`` in eval mode; the mask is in the format of
      :mod:`sparsejax.masks`, so metrics, ``apply_mask`` and fine-tuning work unchanged.

    Raises:
      ValueError: a plain parameter path missing from ``vd_model``, a VD layer
        with no counterpart in ``plain_model``, or a shape mismatch (the path is named).
    """
    converted: dict[str, tuple[jax.Array, jax.Array]] = {}
    for name, layer in vd_layers(vd_model):
        kernel, bias, kmask, bmask = layer.deterministic_params()
        converted[_child(name, "kernel")] = (kernel, kmask)
        converted[_child(name, "bias")] = (bias, bmask)
    vd_flat = _named_params(vd_model)
    params = nnx.as_pure(nnx.state(plain_model, nnx.Param))
    names = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    unused = [n for n in converted if n not in set(names)]
    if unused:
        raise ValueError(f"VD parameters {unused} have no counterpart in plain_model; its "
                         f"parameter paths are {names}")

    def value(path: Any, leaf: jax.Array) -> jax.Array:
        name = path_str(path)
        if name in converted:
            new = converted[name][0]
        elif name in vd_flat:
            new = vd_flat[name]
        else:
            raise ValueError(f"plain_model parameter {name!r} not found in vd_model")
        if jnp.shape(new) != jnp.shape(leaf):
            raise ValueError(f"parameter {name!r}: vd_model gives shape {jnp.shape(new)}, "
                             f"plain_model has {jnp.shape(leaf)}")
        return jnp.asarray(new, jnp.result_type(leaf))

    def mask(path: Any, leaf: jax.Array) -> jax.Array:
        name = path_str(path)
        return converted[name][1] if name in converted else jnp.ones((), bool)

    new_params = jax.tree_util.tree_map_with_path(value, params)
    new_mask = jax.tree_util.tree_map_with_path(mask, params)
    check_same_structure(new_params, new_mask)
    return new_params, new_mask
