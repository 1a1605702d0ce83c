"""A small pre-LN transformer classifier for patches of images / sequences, or token ids.

Attention kernels keep an explicit heads axis so that heads can be pruned with
broadcast masks and removed by slicing one axis:

==================  ===============================  =====================  ===============
leaf                shape                            head ``h``             head mask
==================  ===============================  =====================  ===============
``query/kernel``    ``(dim, num_heads, head_dim)``   ``kernel[:, h, :]``    ``(1, H, 1)``
``key/kernel``      ``(dim, num_heads, head_dim)``   ``kernel[:, h, :]``    ``(1, H, 1)``
``value/kernel``    ``(dim, num_heads, head_dim)``   ``kernel[:, h, :]``    ``(1, H, 1)``
``out/kernel``      ``(num_heads, head_dim, dim)``   ``kernel[h]``          ``(H, 1, 1)``
==================  ===============================  =====================  ===============

(with ``qkv_bias=True`` the q/k/v biases have shape ``(num_heads, head_dim)``).
Masking ``out/kernel[h]`` alone removes head ``h``'s contribution; masking
``value/kernel[:, h, :]`` does too. A model with heads ``{0..H-1} \\ {h}`` kept
equals the model built with ``num_heads=H - 1`` (same ``head_dim``) holding the
sliced kernels.

Default-prunable note: the default ``prunable`` filter (``ndim >= 2``) also
selects ``pos_embedding`` ``(tokens, dim)``, ``embed/embedding`` (token input) and,
with ``qkv_bias=True``, the q/k/v biases; pass ``prunable=r"kernel$"`` to prune
only the kernels.

Train / eval mode: Dropout (when ``dropout_rate > 0``) starts in training mode;
``model.eval()`` / ``model.train()`` switch it. There is no BatchNorm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.nn.initializers import Initializer
from jax.typing import DTypeLike

from sparsejax.models import _shapes

__all__ = ["MultiHeadSelfAttention", "TransformerBlock", "TransformerClassifier", "patchify"]

XAVIER_UNIFORM = nnx.initializers.xavier_uniform()
POS_INIT = nnx.initializers.normal(0.02)
EMBED_INIT = nnx.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
POOLS = ("cls", "mean")


def _head_dim(dim: int, num_heads: int, head_dim: int | None) -> int:
    if head_dim is None:
        if dim % num_heads:
            raise ValueError(
                f"dim ({dim}) must be divisible by num_heads ({num_heads}) unless head_dim is given"
            )
        return dim // num_heads
    return _shapes.positive_int("head_dim", head_dim)


class MultiHeadSelfAttention(nnx.Module):
    """Multi-head scaled dot-product self-attention with separate q / k / v / out projections.

    ``softmax(q kᵀ / sqrt(head_dim)) v`` per head (``jax.nn.dot_product_attention``),
    heads concatenated by ``out``. Kernel layout per head: see the module
    docstring (``query``/``key``/``value`` kernels ``(dim, H, head_dim)``, ``out``
    kernel ``(H, head_dim, dim)``). The kernels are initialised as the flattened
    ``(dim, H·head_dim)`` matrix would be, so the initial distribution equals that
    of separate ``nnx.Linear`` layers.

    Args:
      dim: model width (input and output features).
      num_heads: number of heads ``H``.
      head_dim: width of each head (default ``dim // num_heads``; must then divide).
      qkv_bias: whether q / k / v have biases (``out`` always has one).
      kernel_init: kernel initializer.
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``.

    References:
      Vaswani et al. (2017), Attention Is All You Need (Section 3.2.2); Michel,
      Levy & Neubig (2019), Are Sixteen Heads Really Better than One? (head pruning).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        *,
        qkv_bias: bool = False,
        kernel_init: Initializer = XAVIER_UNIFORM,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dim = _shapes.positive_int("dim", dim)
        self.num_heads = _shapes.positive_int("num_heads", num_heads)
        self.head_dim = _head_dim(self.dim, self.num_heads, head_dim)
        heads = (self.num_heads, self.head_dim)
        kw = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.query = nnx.LinearGeneral(self.dim, heads, use_bias=qkv_bias, **kw)
        self.key = nnx.LinearGeneral(self.dim, heads, use_bias=qkv_bias, **kw)
        self.value = nnx.LinearGeneral(self.dim, heads, use_bias=qkv_bias, **kw)
        self.out = nnx.LinearGeneral(heads, self.dim, axis=(-2, -1), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, tokens, dim) -> (batch, tokens, dim)``."""
        q, k, v = self.query(x), self.key(x), self.value(x)  # (batch, tokens, H, head_dim)
        return self.out(jax.nn.dot_product_attention(q, k, v))


class TransformerBlock(nnx.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``.

    The MLP is ``fc1`` (dim → mlp_dim) → GELU → Dropout → ``fc2`` (mlp_dim → dim) →
    Dropout; the attention output also goes through Dropout before the residual add.

    Args:
      dim: model width.
      num_heads: attention heads.
      mlp_dim: hidden width of the MLP.
      head_dim: width of each head (default ``dim // num_heads``).
      dropout_rate: dropout on the residual branches.
      qkv_bias: q / k / v biases.
      kernel_init: kernel initializer.
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``.

    References:
      Xiong et al. (2020), On Layer Normalization in the Transformer Architecture
      (pre-LN); Dosovitskiy et al. (2021), An Image is Worth 16x16 Words (ViT).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        head_dim: int | None = None,
        dropout_rate: float = 0.0,
        qkv_bias: bool = False,
        kernel_init: Initializer = XAVIER_UNIFORM,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.ln1 = nnx.LayerNorm(dim, **common)
        self.attn = MultiHeadSelfAttention(
            dim, num_heads, head_dim, qkv_bias=qkv_bias, kernel_init=kernel_init, **common
        )
        self.ln2 = nnx.LayerNorm(dim, **common)
        self.fc1 = nnx.Linear(dim, mlp_dim, kernel_init=kernel_init, **common)
        self.fc2 = nnx.Linear(mlp_dim, dim, kernel_init=kernel_init, **common)
        self.dropout = nnx.Dropout(_shapes.rate("dropout_rate", dropout_rate), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, tokens, dim) -> (batch, tokens, dim)``."""
        x = x + self.dropout(self.attn(self.ln1(x)))
        h = self.dropout(jax.nn.gelu(self.fc1(self.ln2(x))))
        return x + self.dropout(self.fc2(h))


def patchify(x: jax.Array, patch_shape: Sequence[int]) -> jax.Array:
    """Cut each example into non-overlapping patches and flatten them.

    Args:
      x: ``(batch, *shape)`` with ``shape[i] % patch_shape[i] == 0``.
      patch_shape: patch size along every axis of ``shape``.

    Returns:
      ``(batch, prod(shape[i] // patch_shape[i]), prod(patch_shape))``: patches in
      row-major order of their grid position, each flattened row-major. For a
      ``(b, 28, 28, 1)`` batch and ``(7, 7, 1)``: ``(b, 16, 49)``; for ``(1, 28, 1)``
      the 28 image rows.
    """
    batch, shape = x.shape[0], x.shape[1:]
    grid = tuple(s // p for s, p in zip(shape, patch_shape, strict=True))
    split = [batch]
    for g, p in zip(grid, patch_shape):
        split += [g, p]
    k = len(grid)
    perm = (0, *range(1, 2 * k, 2), *range(2, 2 * k + 1, 2))
    x = x.reshape(split).transpose(perm)
    return x.reshape(batch, math.prod(grid), math.prod(patch_shape))


class TransformerClassifier(nnx.Module):
    """Small pre-LN transformer classifier (ViT-style) for images, sequences or tokens.

    Input → tokens ``(batch, N, dim)``:

    * patches (default): ``in_shape`` is the per-example shape of a float input
      (``(28, 28, 1)`` MNIST, ``(40,)`` MNIST-1D, ``(32, 32, 3)`` CIFAR);
      :func:`patchify` with ``patch_shape`` (one entry per axis of ``in_shape``;
      default ``(1, *in_shape[1:])``: one token per entry of the first axis, i.e.
      image rows, or single values of a 1-D sequence), then ``embed``, a Linear
      ``prod(patch_shape) → dim``. MNIST as 7x7 patches: ``patch_shape=(7, 7, 1)``
      (16 tokens of 49 values);
    * tokens: with ``vocab_size``, ``in_shape == (length,)`` and the input is
      integer ids ``(batch, length)`` embedded by ``embed`` (``nnx.Embed``).

    Then a learned ``cls_token`` ``(dim,)`` is prepended (``pool="cls"``), a learned
    ``pos_embedding`` ``(N [+1], dim)`` added, ``depth`` :class:`TransformerBlock`
    applied, a final LayerNorm ``norm``, the CLS token or the mean over tokens
    (``pool="mean"``) taken, and ``head`` maps ``dim → num_classes``.

    Parameter count (``pool="cls"``, ``qkv_bias=False``):
    ``(P·dim + dim) + dim + (N+1)·dim + depth·(2·2·dim + 3·dim·H·hd + H·hd·dim + dim
    + dim·m + m + m·dim + dim) + 2·dim + dim·C + C`` with ``P = prod(patch_shape)``,
    ``hd = head_dim``, ``m = mlp_dim``. MNIST 7x7 patches, ``dim=64, depth=2,
    num_heads=4, mlp_dim=256``: 104,714.

    Attention layout per head and the prunable-leaf caveat: module docstring.
    Train / eval: Dropout only (``model.eval()`` / ``model.train()``).

    Args:
      in_shape: per-example input shape.
      num_classes: number of logits.
      patch_shape: patch size per axis of ``in_shape`` (must divide it).
      vocab_size: if given, integer token input (see above).
      dim: model width.
      depth: number of blocks.
      num_heads: heads per block.
      head_dim: width of each head (default ``dim // num_heads``).
      mlp_dim: MLP hidden width (default ``4·dim``).
      pool: ``"cls"`` or ``"mean"``.
      dropout_rate: dropout on the embeddings and residual branches.
      qkv_bias: q / k / v biases.
      kernel_init: Linear kernel initializer (default Xavier uniform, as ViT).
      pos_init: ``pos_embedding`` initializer (default ``normal(0.02)``, as ViT).
      embedding_init: token embedding initializer (``nnx.Embed``'s default).
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` (a ``dropout`` stream, or ``default``, feeds Dropout).

    References:
      Vaswani et al. (2017), Attention Is All You Need; Dosovitskiy et al. (2021),
      An Image is Worth 16x16 Words, ICLR; Xiong et al. (2020), pre-LN.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int = 10,
        *,
        patch_shape: Sequence[int] | None = None,
        vocab_size: int | None = None,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        head_dim: int | None = None,
        mlp_dim: int | None = None,
        pool: str = "cls",
        dropout_rate: float = 0.0,
        qkv_bias: bool = False,
        kernel_init: Initializer = XAVIER_UNIFORM,
        pos_init: Initializer = POS_INIT,
        embedding_init: Initializer = EMBED_INIT,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_shape = _shapes.positive_ints("in_shape", in_shape)
        num_classes = _shapes.positive_int("num_classes", num_classes)
        dim = _shapes.positive_int("dim", dim)
        depth = _shapes.positive_int("depth", depth)
        mlp_dim = _shapes.positive_int("mlp_dim", 4 * dim if mlp_dim is None else mlp_dim)
        num_heads = _shapes.positive_int("num_heads", num_heads)
        head_dim = _head_dim(dim, num_heads, head_dim)
        dropout_rate = _shapes.rate("dropout_rate", dropout_rate)
        if pool not in POOLS:
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if vocab_size is not None:
            vocab_size = _shapes.positive_int("vocab_size", vocab_size)
            if len(self.in_shape) != 1:
                raise ValueError(
                    f"with vocab_size, in_shape must be (length,) of token ids, got {in_shape!r}"
                )
            if patch_shape is not None:
                raise ValueError("patch_shape and vocab_size are exclusive: tokens are not patched")
            self.patch_shape = None
            num_tokens = self.in_shape[0]
            self.embed = nnx.Embed(vocab_size, dim, embedding_init=embedding_init, **common)
        else:
            if patch_shape is None:
                patch_shape = (1, *self.in_shape[1:])
            self.patch_shape = _shapes.positive_ints("patch_shape", patch_shape)
            if len(self.patch_shape) != len(self.in_shape) or any(
                s % p for s, p in zip(self.in_shape, self.patch_shape)
            ):
                raise ValueError(
                    f"patch_shape {tuple(patch_shape)!r} must have one entry per axis of in_shape "
                    f"{self.in_shape!r}, each dividing it"
                )
            num_tokens = math.prod(s // p for s, p in zip(self.in_shape, self.patch_shape))
            patch_dim = math.prod(self.patch_shape)
            self.embed = nnx.Linear(patch_dim, dim, kernel_init=kernel_init, **common)
        self.num_tokens = num_tokens
        if pool == "cls":
            self.cls_token = nnx.Param(jnp.zeros((dim,), param_dtype))
            num_tokens += 1
        self.pos_embedding = nnx.Param(pos_init(rngs.params(), (num_tokens, dim), param_dtype))
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.blocks = nnx.List(
            [
                TransformerBlock(
                    dim,
                    num_heads,
                    mlp_dim,
                    head_dim=head_dim,
                    dropout_rate=dropout_rate,
                    qkv_bias=qkv_bias,
                    kernel_init=kernel_init,
                    **common,
                )
                for _ in range(depth)
            ]
        )
        self.norm = nnx.LayerNorm(dim, **common)
        self.head = nnx.Linear(dim, num_classes, kernel_init=kernel_init, **common)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(batch, num_classes)`` for ``x`` of shape ``(batch, *in_shape)``."""
        x = _shapes.check_input("TransformerClassifier", x, self.in_shape)
        if self.patch_shape is None:
            if not jnp.issubdtype(x.dtype, jnp.integer):
                raise TypeError(f"token input must be integer ids, got dtype {x.dtype}")
            h = self.embed(x)
        else:
            h = self.embed(patchify(x, self.patch_shape))
        if self.pool == "cls":
            cls = jnp.broadcast_to(self.cls_token[...], (h.shape[0], 1, h.shape[-1]))
            h = jnp.concatenate([cls.astype(h.dtype), h], axis=1)
        h = self.dropout(h + self.pos_embedding[...][None].astype(h.dtype))
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        h = h[:, 0] if self.pool == "cls" else jnp.mean(h, axis=1)
        return self.head(h)
