"""Save and load pruned or shrunk NNX models: arrays, mask and widths, restored to the same function.

:func:`save_model` writes a model's whole state (parameters, BatchNorm statistics, any
other variable), an optional mask and the blocks removed by
:func:`~sparsejax.shrink.remove_blocks` as one :mod:`sparsejax.checkpoint` step (orbax,
checksummed). :func:`load_model` rebuilds it on a *template*, a freshly constructed
model of the original architecture: removed blocks are dropped, every array takes its
saved shape (the shrunk widths), and the layers' size attributes follow through the
resize handlers of :func:`~sparsejax.shrink.register_resize`, as after
:func:`~sparsejax.shrink.shrink`.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from sparsejax import checkpoint
from sparsejax.masks import validate_mask
from sparsejax.shrink._blocks import remove_blocks
from sparsejax.shrink._layer_handlers import resize_attributes
from sparsejax.shrink._shrink import _check_runs
from sparsejax.tree import PyTree, named_leaves, path_str

__all__ = ["LoadedModel", "load_model", "save_model"]

_KEY = "sparsejax_model"
_FORMAT = 1


class LoadedModel(NamedTuple):
    """What :func:`load_model` returns.

    Attributes:
      model: the restored model (the template's class, the saved widths and values).
      mask: the saved mask (mirroring ``nnx.state(model, nnx.Param)``), or ``None``.
      metadata: the ``metadata`` dict given to :func:`save_model`.
    """

    model: nnx.Module
    mask: PyTree | None
    metadata: dict[str, Any]


def _class_name(model: nnx.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def save_model(
    directory: str | os.PathLike,
    model: nnx.Module,
    *,
    mask: PyTree | None = None,
    removed_blocks: Sequence[int] | None = None,
    blocks_attr: str = "blocks",
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Save a (pruned, shrunk or block-removed) NNX model so :func:`load_model` restores it.

    Args:
      directory: a new checkpoint directory (one :mod:`sparsejax.checkpoint` step).
      model: the model to save; its whole ``nnx.state`` is stored, so the restored model
        computes the same function bit for bit (eval and train mode).
      mask: a mask mirroring ``nnx.state(model, nnx.Param)`` (e.g. the mask that keeps a
        fine-tuned pruned model sparse), restored with the model.
      removed_blocks: the indices :func:`~sparsejax.shrink.remove_blocks` returned, when the
        model lost whole blocks (of the list at ``blocks_attr``); :func:`load_model` removes
        them from the template first.
      blocks_attr: the attribute holding the blocks.
      metadata: a JSON-serialisable dict stored beside (e.g. the sparsity, the config).
      overwrite: replace a checkpoint already in ``directory`` (else an error).

    Returns:
      The step directory written.

    Raises:
      TypeError: ``model`` is not an ``nnx.Module``; non-JSON ``metadata``.
      ValueError: a mask of another tree (naming the path), a directory that already holds
        a checkpoint (without ``overwrite``).

    Example:
      >>> import tempfile
      >>> from sparsejax.models import LeNet300100
      >>> from sparsejax.shrink import prune_units, shrink
      >>> model = LeNet300100(rngs=nnx.Rngs(0))
      >>> small = shrink(model, prune_units(model, 0.5))
      >>> run = tempfile.mkdtemp()
      >>> _ = save_model(run, small)
      >>> load_model(run, LeNet300100(rngs=nnx.Rngs(1))).model.features
      (784, 150, 50, 10)
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    if checkpoint.latest_step(directory) is not None and not overwrite:
        raise ValueError(
            f"{os.fspath(directory)!r} already holds a checkpoint; pass overwrite=True to replace "
            "it or choose a new directory"
        )
    state = nnx.state(model)
    record: dict[str, Any] = {
        "format": _FORMAT,
        "class": _class_name(model),
        "shapes": {name: list(np.shape(x)) for name, x in named_leaves(state)},
        "mask": None,
        "removed_blocks": None,
        "metadata": checkpoint.check_metadata(metadata),
    }
    if mask is not None:
        validate_mask(nnx.state(model, nnx.Param), mask)
        record["mask"] = {name: list(np.shape(m)) for name, m in named_leaves(mask)}
    if removed_blocks is not None:
        ids = sorted(int(i) for i in removed_blocks)
        record["removed_blocks"] = {"attr": blocks_attr, "indices": ids}
    return checkpoint.save(directory, 0, state, extra=mask, metadata={_KEY: record},
                           overwrite=overwrite)


def _read_record(directory: str | os.PathLike) -> dict[str, Any]:
    step = checkpoint.latest_step(directory)
    if step is None:
        raise FileNotFoundError(f"no saved model in {os.fspath(directory)!r}")
    path = pathlib.Path(directory).absolute()
    with ocp.CheckpointManager(path) as manager:
        meta = manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
    record = (meta.metadata or {}).get(_KEY) if isinstance(meta.metadata, dict) else None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise ValueError(
            f"{os.fspath(directory)!r} holds a checkpoint, but not one written by save_model"
        )
    return record


def load_model(
    directory: str | os.PathLike, template: nnx.Module, *, inputs: Any = None
) -> LoadedModel:
    """Restore a model saved by :func:`save_model` onto a template of its architecture.

    Args:
      directory: the directory given to :func:`save_model`.
      template: a model of the *original* architecture (e.g. the dense model's constructor
        called again; its values are not used). Not modified.
      inputs: an example batch to check that the restored model runs (default: the
        template's ``in_shape`` where it has one).

    Returns:
      A :class:`LoadedModel` ``(model, mask, metadata)``; the model has the saved widths
      and values, and computes the saved model's function.

    Raises:
      TypeError: ``template`` is not an ``nnx.Module``.
      ValueError: a template of another class, or whose variables do not match the saved
        ones (the paths are named); a shrunk model whose layer types have no resize handler
        (it does not run).
      CorruptCheckpointError: damaged files (see :func:`sparsejax.checkpoint.restore`).
    """
    if not isinstance(template, nnx.Module):
        raise TypeError(f"template must be an nnx.Module, got {type(template).__name__}")
    record = _read_record(directory)
    if record["class"] != _class_name(template):
        raise ValueError(
            f"{os.fspath(directory)!r} holds a {record['class']}; the template is a "
            f"{_class_name(template)}"
        )
    model = nnx.clone(template)
    if record["removed_blocks"] is not None:
        spec = record["removed_blocks"]
        model, _ = remove_blocks(model, spec["indices"], attr=spec["attr"])
    graphdef, state = nnx.split(model)
    shapes = {k: tuple(v) for k, v in record["shapes"].items()}
    have = [name for name, _ in named_leaves(state)]
    if set(have) != set(shapes):
        raise ValueError(
            f"the template's variables differ from the saved model's: only in the template "
            f"{sorted(set(have) - set(shapes))[:8]}, only saved {sorted(set(shapes) - set(have))[:8]}"
        )

    def target_leaf(kp, x):
        shape = shapes[path_str(kp)]
        return x if tuple(np.shape(x)) == shape else jax.ShapeDtypeStruct(shape, x.dtype)

    target = jax.tree_util.tree_map_with_path(target_leaf, state)
    mask_target = None
    if record["mask"] is not None:
        mask_shapes = {k: tuple(v) for k, v in record["mask"].items()}
        mask_target = jax.tree_util.tree_map_with_path(
            lambda kp, _: jax.ShapeDtypeStruct(mask_shapes[path_str(kp)], np.bool_),
            nnx.state(model, nnx.Param),
        )
    restored = checkpoint.restore(directory, target, extra_target=mask_target)
    new = nnx.merge(graphdef, restored.state)
    resize_attributes(new)
    _check_runs(new, template, inputs)
    return LoadedModel(new, restored.extra, record["metadata"])
