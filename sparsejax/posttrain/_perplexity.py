"""Language-model evaluation: next-token loss, perplexity and bits per token.

As the SparseGPT and Wanda papers evaluate: the held-out text cut into sequences, the
mean next-token negative log-likelihood ``nll`` (nats) over every predicted token,
perplexity ``exp(nll)``; for a byte-level model ``nll / ln 2`` is bits per byte.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

__all__ = ["LanguageModelEval", "evaluate_language_model"]


class LanguageModelEval(NamedTuple):
    """Held-out next-token loss.

    Attributes:
      nll: mean negative log-likelihood per predicted token, in nats.
      perplexity: ``exp(nll)``.
      bits_per_token: ``nll / ln 2`` (bits per byte for a byte-level model).
      tokens: the number of predicted tokens.
    """

    nll: float
    perplexity: float
    bits_per_token: float
    tokens: int


@functools.partial(jax.jit, static_argnums=0)
def _nll_sum(graphdef, state, batch, weight):
    logits = nnx.merge(graphdef, state)(batch[:, :-1])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:])
    return jnp.sum(nll * weight[:, None])


def evaluate_language_model(model: nnx.Module, sequences: Any, *, batch_size: int = 16
                            ) -> LanguageModelEval:
    """Mean next-token loss of ``model`` on ``sequences (n, seq_len + 1)``.

    Every sequence predicts its tokens ``1..seq_len`` from the ones before; the last
    batch is padded (padding rows weigh 0), so one program serves every batch.

    Args:
      model: ``model(tokens (batch, seq)) -> logits (batch, seq, vocab)``.
      sequences: int ``(n, seq_len + 1)``, e.g. :func:`sparsejax.data.contiguous_windows`.
      batch_size: sequences per forward pass.

    Returns:
      :class:`LanguageModelEval` (Python numbers; sums in float32 on the device,
      accumulated in float64 on the host).

    Raises:
      ValueError: sequences that are not a non-empty 2-d integer array of length >= 2,
        or a bad ``batch_size``.
    """
    seqs = np.asarray(sequences)
    if seqs.ndim != 2 or seqs.shape[0] == 0 or seqs.shape[1] < 2 \
            or not np.issubdtype(seqs.dtype, np.integer):
        raise ValueError(f"sequences must be a non-empty (n, seq_len + 1) integer array with "
                         f"seq_len >= 1, got {seqs.dtype}{seqs.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    graphdef, state = nnx.split(model)
    sums = []
    for i in range(0, seqs.shape[0], batch_size):
        chunk = seqs[i:i + batch_size]
        rows = chunk.shape[0]
        weight = np.zeros(batch_size, np.float32)
        weight[:rows] = 1.0
        if rows < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - rows, axis=0)])
        sums.append(_nll_sum(graphdef, state, jnp.asarray(chunk), jnp.asarray(weight)))
    total = float(np.sum(np.asarray(jax.device_get(sums), np.float64)))
    count = seqs.shape[0] * (seqs.shape[1] - 1)
    nll = total / count
    return LanguageModelEval(nll, math.exp(min(nll, 700.0)), nll / math.log(2.0), count)
