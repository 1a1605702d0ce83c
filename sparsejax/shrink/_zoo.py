"""Handlers of the model zoo's layers (:mod:`sparsejax.models`), registered on import.

Resize: ``MultiHeadSelfAttention`` (``num_heads``, ``head_dim``), ``MLP`` (``features``),
``BasicBlock`` (``out_channels``). Residual blocks: ``BasicBlock`` (stride 1, as many
input as output channels, no projection shortcut) and ``TransformerBlock`` (always).
"""

from __future__ import annotations

from sparsejax.models import MLP, BasicBlock, MultiHeadSelfAttention, TransformerBlock
from sparsejax.shrink._layer_handlers import register_residual_block, register_resize
from sparsejax.shrink._nnx_layers import array_shape


def _resize_attention(node: MultiHeadSelfAttention) -> None:
    _, node.num_heads, node.head_dim = array_shape(node.query.kernel)


def _resize_mlp(node: MLP) -> None:
    widths = [array_shape(layer.kernel)[1] for layer in node.layers]
    node.features = (node.features[0], *widths)


def _resize_basic_block(node: BasicBlock) -> None:
    node.out_channels = array_shape(node.bn2.scale)[0]


def _basic_block_removable(block: BasicBlock) -> str | None:
    in_ch = array_shape(block.conv1.kernel)[-2]
    if block.stride != 1 or block.projection or in_ch != block.out_channels:
        return (
            f"it changes the shape (stride {block.stride}, {in_ch} -> "
            f"{block.out_channels} channels), so it is not a residual identity"
        )
    return None


def _transformer_block_removable(block: TransformerBlock) -> str | None:
    return None  # pre-LN: with every parameter zero, x + 0 + 0


register_resize(MultiHeadSelfAttention, _resize_attention)
register_resize(MLP, _resize_mlp)
register_resize(BasicBlock, _resize_basic_block)
register_residual_block(BasicBlock, _basic_block_removable)
register_residual_block(TransformerBlock, _transformer_block_removable)
