"""A GPT-style decoder-only language model (Radford et al. 2019), for scale benchmarks.

Pre-LayerNorm blocks (``x + attn(ln(x))``, ``x + mlp(ln(x))``), causal
multi-head attention through :func:`jax.nn.dot_product_attention`, learned
positional embeddings and an output head tied to the token embedding (as in
GPT-2). The default configuration (vocabulary 32,768, width 768, 12 layers,
12 heads, context 1,024) has 111,008,256 parameters -- GPT-2 small with a
smaller vocabulary.

Parameters are ``param_dtype`` (float32 by default); ``dtype`` (e.g.
``jnp.bfloat16``) is the computation dtype. Logits come back in float32.

Layer-by-layer post-training pruning (:mod:`sparsejax.posttrain`) runs the model in
pieces: :meth:`DecoderLM.embed_tokens` (the first block's input), each block's
:meth:`DecoderBlock.linear_inputs` (what every linear layer of the block reads, in the
order of :attr:`DecoderBlock.LINEAR_STAGES`) and :meth:`DecoderLM.head`.
"""

from __future__ import annotations

from typing import ClassVar

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

    :attr:`LINEAR_STAGES` lists the linear layers in the order in which each one's
    input depends on the ones before: ``qkv`` reads ``ln1(x)``; ``proj`` the
    attention output (made from ``qkv``); ``fc1`` reads ``ln2`` of the residual
    stream after ``proj``; ``fc2`` the GELU of ``fc1``'s output.
    :meth:`linear_inputs` returns those four inputs.

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

    #: The block's linear layers, grouped in the order their inputs depend on each other.
    LINEAR_STAGES: ClassVar[tuple[tuple[str, ...], ...]] = (("qkv",), ("proj",), ("fc1",), ("fc2",))

    def _forward(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        b, t, d = x.shape
        inputs = {"qkv": self.ln1(x)}
        qkv = self.qkv(inputs["qkv"]).reshape(b, t, 3, self.num_heads, d // self.num_heads)
        attn = jax.nn.dot_product_attention(
            qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], is_causal=True
        )
        inputs["proj"] = attn.reshape(b, t, d)
        x = x + self.proj(inputs["proj"])
        inputs["fc1"] = self.ln2(x)
        inputs["fc2"] = jax.nn.gelu(self.fc1(inputs["fc1"]))
        return x + self.fc2(inputs["fc2"]), inputs

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x (batch, seq, dim) -> (batch, seq, dim)``, causal."""
        return self._forward(x)[0]

    def linear_inputs(self, x: jax.Array) -> dict[str, jax.Array]:
        """What each linear layer reads when the block runs on ``x (batch, seq, dim)``.

        Returns:
          ``{"qkv": (batch, seq, dim), "proj": (batch, seq, dim), "fc1": (batch, seq,
          dim), "fc2": (batch, seq, mlp_ratio·dim)}``, computed with the block's current
          weights (a pruned ``qkv`` changes the input of ``proj``, and so on).
        """
        return self._forward(x)[1]


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

    def embed_tokens(self, tokens: jax.Array) -> jax.Array:
        """Token plus position embeddings, the first block's input: ``(batch, seq) int ->
        (batch, seq, dim)``.

        Raises:
          ValueError: tokens that are not an integer ``(batch, seq)`` array, or longer
            than ``max_len``.
        """
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"DecoderLM expects integer tokens of shape (batch, seq), got "
                f"{tokens.dtype}{tuple(tokens.shape)}"
            )
        t = tokens.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len={self.max_len}")
        return self.embed(tokens) + self.pos[None, :t].astype(self.embed.dtype or jnp.float32)

    def head(self, x: jax.Array) -> jax.Array:
        """Final LayerNorm and the tied output layer: ``(batch, seq, dim) -> (batch, seq,
        vocab)`` float32 logits."""
        return self.embed.attend(self.ln_f(x)).astype(jnp.float32)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.embed_tokens(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def next_token_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy of each sequence: ``(B, T, V), (B, T) -> (B,)``.

    A per-example loss for :func:`sparsejax.train.make_train_step` (``labels``
    are the tokens shifted by one).
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(axis=-1)
