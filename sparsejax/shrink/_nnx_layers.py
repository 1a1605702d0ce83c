"""Resize handlers of the Flax layers: Linear, Conv, LinearGeneral, Embed and the norms."""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

from sparsejax.shrink._layer_handlers import register_resize


def array_shape(v: Any) -> tuple[int, ...]:
    """The shape of a variable's value."""
    return tuple(np.shape(v[...]))


def _resize_linear(node: nnx.Linear) -> None:
    node.in_features, node.out_features = array_shape(node.kernel)


def _resize_conv(node: nnx.Conv) -> None:
    shape = array_shape(node.kernel)
    node.in_features = shape[-2] * node.feature_group_count
    node.out_features = shape[-1]


def _resize_linear_general(node: nnx.LinearGeneral) -> None:
    shape = array_shape(node.kernel)
    nb, ni = len(node.batch_axis), len(node.in_features)
    node.in_features = shape[nb : nb + ni]
    node.out_features = shape[nb + ni :]


def _resize_embed(node: nnx.Embed) -> None:
    node.num_embeddings, node.features = array_shape(node.embedding)


def _resize_norm(node: nnx.Module) -> None:
    for name in ("scale", "bias", "mean"):
        var = getattr(node, name, None)
        if isinstance(var, nnx.Variable):
            node.num_features = array_shape(var)[-1]
            break


register_resize(nnx.Linear, _resize_linear)
register_resize(nnx.Conv, _resize_conv)
register_resize(nnx.LinearGeneral, _resize_linear_general)
register_resize(nnx.Embed, _resize_embed)
for _norm in (nnx.BatchNorm, nnx.LayerNorm, nnx.RMSNorm, nnx.GroupNorm):
    register_resize(_norm, _resize_norm)
