"""A GPT-style decoder-only language model (Radford et al. 2019), for scale benchmarks.

Pre-LayerNorm blocks (``x + attn(ln(x))``, ``x + mlp(ln(x))``), causal
multi-head attention through :func:`jax.nn.dot_product_attention`, learned
positional embeddings and an output head tied to the token embedding (as in
GPT-2). The default configuration (vocabulary 32,768, width 768, 12 layers,
12 heads, context 1,024) has 111,008,256 parameters -- GPT-2 small with a
smaller vocabulary.

Parameters are ``param_dtype`` (float32 by default); ``dtype`` (e.g.
``jnp.bfloat16``) is the computation dtype. Logits come back in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.typing import DTypeLike

from sparsejax.models import _shapes

__all__ = ["DecoderBlock", "DecoderLM", "next_token_loss"]

INIT = nnx.initializers.normal(0.02)


class DecoderBlock(nnx.Module):
    """One pre-LN decoder block: causal self-attention and a GELU MLP.

    Kernels: ``qkv (dim, 3·dim)`` (queries, keys, values of all heads side by
    side), ``proj (dim, dim)``, ``fc1 (dim, mlp_ratio·dim)``,
    ``fc2 (mlp_ratio·dim, dim)``; each with a bias.

    Args:
      dim: model width (divisible by ``num_heads``).
      num_heads: attention heads.
      mlp_ratio: hidden width of the MLP over ``dim``.
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: int = 4,
        *,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dim = _shapes.positive_int("dim", dim)
        self.num_heads = _shapes.positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        hidden = _shapes.positive_int("mlp_ratio", mlp_ratio) * dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.ln1 = nnx.LayerNorm(dim, **kw)
        self.qkv = nnx.Linear(dim, 3 * dim, kernel_init=INIT, **kw)
        self.proj = nnx.Linear(dim, dim, kernel_init=INIT, **kw)
        self.ln2 = nnx.LayerNorm(dim, **kw)
        self.fc1 = nnx.Linear(dim, hidden, kernel_init=INIT, **kw)
        self.fc2 = nnx.Linear(hidden, dim, kernel_init=INIT, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x (batch, seq, dim) -> (batch, seq, dim)``, causal."""
        b, t, d = x.shape
        qkv = self.qkv(self.ln1(x)).reshape(b, t, 3, self.num_heads, d // self.num_heads)
        attn = jax.nn.dot_product_attention(
            qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], is_causal=True
        )
        x = x + self.proj(attn.reshape(b, t, d))
        return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))


class DecoderLM(nnx.Module):
    """Decoder-only language model: ``tokens (batch, seq) int -> logits (batch, seq, vocab)``.

    Args:
      vocab_size: tokens.
      dim: model width.
      depth: number of :class:`DecoderBlock`.
      num_heads: attention heads per block.
      max_len: longest sequence (size of the positional embedding).
      mlp_ratio: MLP hidden width over ``dim``.
      dtype: computation dtype (``jnp.bfloat16`` for speed on accelerators).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``.

    References:
      Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2).
    """

    def __init__(
        self,
        vocab_size: int = 32768,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        max_len: int = 1024,
        mlp_ratio: int = 4,
        *,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.vocab_size = _shapes.positive_int("vocab_size", vocab_size)
        self.max_len = _shapes.positive_int("max_len", max_len)
        _shapes.positive_int("depth", depth)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embed = nnx.Embed(vocab_size, dim, embedding_init=INIT, **kw)
        self.pos = nnx.Param(INIT(rngs.params(), (max_len, dim), param_dtype))
        self.blocks = nnx.List(
            [DecoderBlock(dim, num_heads, mlp_ratio, **kw) for _ in range(depth)]
        )
        self.ln_f = nnx.LayerNorm(dim, **kw)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"DecoderLM expects integer tokens of shape (batch, seq), got "
                f"{tokens.dtype}{tuple(tokens.shape)}"
            )
        t = tokens.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={self.max_len}")
        x = self.embed(tokens) + self.pos.value[None, :t].astype(self.embed.dtype or jnp.float32)
        for block in self.blocks:
            x = block(x)
        return self.embed.attend(self.ln_f(x)).astype(jnp.float32)


def next_token_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy of each sequence: ``(B, T, V), (B, T) -> (B,)``.

    A per-example loss for :func:`sparsejax.train.make_train_step` (``labels``
    are the tokens shifted by one).
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(axis=-1)
