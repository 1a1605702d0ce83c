"""The decoder in pieces (what post-training calibration runs): embed, blocks, head."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.models import DecoderBlock, DecoderLM


def test_pieces_compose_to_the_forward_pass():
    model = DecoderLM(vocab_size=32, dim=16, depth=2, num_heads=4, max_len=8, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (3, 8), 0, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)   # no deprecated Variable access
        logits = model(tokens)
        x = model.embed_tokens(tokens)
    np.testing.assert_allclose(
        np.asarray(x), np.asarray(model.embed(tokens) + model.pos[...][None, :8]), rtol=1e-6)
    for block in model.blocks:
        inputs = block.linear_inputs(x)
        assert {k: v.shape for k, v in inputs.items()} == {
            "qkv": (3, 8, 16), "proj": (3, 8, 16), "fc1": (3, 8, 16), "fc2": (3, 8, 64)}
        np.testing.assert_allclose(np.asarray(inputs["qkv"]), np.asarray(block.ln1(x)), atol=1e-6)
        mid = x + block.proj(inputs["proj"])
        np.testing.assert_allclose(np.asarray(inputs["fc1"]), np.asarray(block.ln2(mid)),
                                   atol=1e-6)
        np.testing.assert_allclose(np.asarray(inputs["fc2"]),
                                   np.asarray(jax.nn.gelu(block.fc1(inputs["fc1"]))), atol=1e-6)
        out = block(x)
        np.testing.assert_allclose(np.asarray(out), np.asarray(mid + block.fc2(inputs["fc2"])),
                                   atol=1e-5)
        x = out
    np.testing.assert_allclose(np.asarray(model.head(x)), np.asarray(logits), atol=1e-5)
    assert DecoderBlock.LINEAR_STAGES == (("qkv",), ("proj",), ("fc1",), ("fc2",))
    assert logits.dtype == jnp.float32
