"""Sequential calibration of a decoder: block-by-block equivalence, masks, reports, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import sparsejax as sj
from sparsejax.models import DecoderLM
from sparsejax.posttrain import (
    Magnitude,
    SparseGPT,
    Wanda,
    evaluate_language_model,
    input_statistics,
    linear_layers,
    owl_layer_sparsities,
    prune_sequential,
)
from sparsejax.tree import named_leaves

STAGES = (("qkv",), ("proj",), ("fc1",), ("fc2",))


def _model(depth=2, seed=0):
    return DecoderLM(vocab_size=64, dim=16, depth=depth, num_heads=2, max_len=12,
                     rngs=nnx.Rngs(seed))


def _tokens(n=5, seed=1):
    return np.asarray(jax.random.randint(jax.random.key(seed), (n, 12), 0, 64))


def _kernels(model):
    return {p: np.asarray(getattr(model.blocks[i], n).kernel[...])
            for i, n, p in linear_layers(model)}


def _by_hand(model, tokens, method, sparsity, structure=None, dense_inputs=False,
             true_sequential=True):
    """Prune block 1 from its inputs, recompute block 2's inputs with it, prune block 2."""
    structure = structure or sj.Unstructured()
    work = nnx.clone(model)
    dense = nnx.clone(model)
    x = work.embed_tokens(jnp.asarray(tokens))
    for i, block in enumerate(work.blocks):
        stages = STAGES if true_sequential else (tuple(n for s in STAGES for n in s),)
        for stage in stages:
            inputs = block.linear_inputs(x)
            for name in stage:
                layer = getattr(block, name)
                res = method.prune_layer(layer.kernel[...], input_statistics(inputs[name]),
                                         sparsity, structure)
                layer.kernel.set_value(res.kernel)
        x = dense.blocks[i](x) if dense_inputs else block(x)
    return work


@pytest.mark.parametrize(("method", "sparsity", "structure"), [
    (SparseGPT(block_size=8), 0.5, sj.Unstructured()),
    (Wanda(), 0.6, sj.Unstructured()),
    (SparseGPT(block_size=8), None, sj.NM(2, 4)),
])
def test_two_blocks_equal_block_by_block_by_hand(method, sparsity, structure):
    model, tokens = _model(), _tokens()
    # 5 sequences in micro-batches of 2: the last one is padded, padding weighs nothing
    out = prune_sequential(model, tokens, method, sparsity, structure=structure, batch_size=2)
    got, want = _kernels(out.model), _kernels(_by_hand(model, tokens, method, sparsity, structure))
    for path in want:
        np.testing.assert_array_equal(got[path] == 0, want[path] == 0, err_msg=path)
        np.testing.assert_allclose(got[path], want[path], atol=2e-5, err_msg=path)
    # and not what pruning block 2 from the *dense* block 1's outputs gives
    stale = _kernels(_by_hand(model, tokens, method, sparsity, structure, dense_inputs=True))
    assert not np.allclose(got["blocks/1/qkv/kernel"], stale["blocks/1/qkv/kernel"], atol=1e-4)


def test_parallel_within_a_block_matches_by_hand():
    model, tokens = _model(), _tokens(4)
    out = prune_sequential(model, tokens, SparseGPT(block_size=8), 0.5, batch_size=4,
                           true_sequential=False, errors=False)
    want = _kernels(_by_hand(model, tokens, SparseGPT(block_size=8), 0.5, true_sequential=False))
    for path, w in _kernels(out.model).items():
        np.testing.assert_allclose(w, want[path], atol=2e-5, err_msg=path)
    assert all(r.error is None for r in out.layers)


def test_result_mask_reports_and_the_model_left_alone():
    model, tokens = _model(), _tokens(4)
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    out = prune_sequential(model, tokens, SparseGPT(block_size=8), 0.5, batch_size=4)
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    assert all(np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True))
    params = nnx.state(out.model, nnx.Param)
    sj.validate_mask(params, out.mask)
    masked = sj.apply_mask(params, out.mask)
    assert all(bool(jnp.array_equal(a, b)) for a, b in
               zip(jax.tree.leaves(masked), jax.tree.leaves(params), strict=True))
    kernels = {p for _, _, p in linear_layers(model)}
    for path, m in named_leaves(out.mask):
        assert (np.shape(m) != ()) == (path in kernels), path
    assert [r.path for r in out.layers] == [p for _, _, p in linear_layers(model)]
    for r in out.layers:  # exactly half of every kernel, errors in (0, 1)
        assert r.sparsity == 0.5 and r.target == 0.5 and 0.0 < r.error < 1.0 and r.loss > 0
    assert out.sparsity == 0.5
    # only the block kernels changed: embeddings, norms and biases are the model's
    for (path, a), (_, b) in zip(named_leaves(before), named_leaves(params), strict=True):
        if path not in kernels:
            np.testing.assert_array_equal(a, np.asarray(b), err_msg=path)


def test_layer_sparsity_map_and_owl():
    model, tokens = _model(), _tokens(4)
    out = prune_sequential(model, tokens, Wanda(), 0.5, batch_size=4, errors=False,
                           layer_sparsity={"fc2": 0.75, "blocks/1/qkv/kernel": 0.25})
    got = {r.path: r.sparsity for r in out.layers}
    assert got["blocks/0/fc2/kernel"] == got["blocks/1/fc2/kernel"] == 0.75
    assert got["blocks/1/qkv/kernel"] == 0.25 and got["blocks/0/qkv/kernel"] == 0.5
    owl = owl_layer_sparsities(model, tokens, 0.6, lam=0.1, batch_size=4)
    assert set(owl) == set(got)
    per_block = [owl[f"blocks/{i}/qkv/kernel"] for i in range(2)]
    assert sorted(per_block) == pytest.approx([0.5, 0.7])  # two blocks: the ends of ±λ
    assert all(owl[f"blocks/{i}/{n}/kernel"] == per_block[i] for i in range(2)
               for n in ("proj", "fc1", "fc2"))
    out = prune_sequential(model, tokens, Wanda(), 0.6, batch_size=4, layer_sparsity=owl,
                           errors=False)
    # Wanda prunes round(s·in) of every output unit: the overall sparsity is 0.6 up to that
    exact = sum(r.shape[1] * round(owl[r.path] * r.shape[0]) for r in out.layers)
    assert out.sparsity * sum(r.shape[0] * r.shape[1] for r in out.layers) == exact
    assert out.sparsity == pytest.approx(0.6, abs=0.01)


def test_magnitude_needs_no_calibration_data():
    model = _model()
    out = prune_sequential(model, None, Magnitude(), 0.5, errors=False)
    for path, w in _kernels(out.model).items():
        assert np.sum(w == 0) == w.size // 2, path


def test_evaluate_language_model_equals_the_direct_loss():
    model = _model()
    seqs = _tokens(6, seed=2)
    dense = evaluate_language_model(model, seqs, batch_size=4)
    logits = model(jnp.asarray(seqs[:, :-1]))
    ref = -np.mean(np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                                      seqs[:, 1:, None], axis=-1))
    assert dense.nll == pytest.approx(float(ref), rel=1e-5) and dense.tokens == 66
    assert dense.perplexity == pytest.approx(np.exp(dense.nll))
    assert dense.bits_per_token == pytest.approx(dense.nll / np.log(2))
    assert evaluate_language_model(model, seqs, batch_size=5).nll == pytest.approx(dense.nll)


def test_bad_inputs_raise_before_pruning():
    model, tokens = _model(), _tokens(4)
    with pytest.raises(TypeError, match="method must be a posttrain Method"):
        prune_sequential(model, tokens, "wanda", 0.5)
    with pytest.raises(TypeError, match="Linear has no 'embed_tokens'"):
        prune_sequential(nnx.Linear(4, 4, rngs=nnx.Rngs(0)), tokens, Wanda(), 0.5)
    with pytest.raises(ValueError, match="calibration tokens must be a non-empty"):
        prune_sequential(model, tokens.astype(np.float32), Wanda(), 0.5)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        prune_sequential(model, tokens, Wanda(), 0.5, batch_size=0)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\], got 1.5"):
        prune_sequential(model, tokens, Wanda(), 1.5)
    with pytest.raises(ValueError, match=r"sparsity of 'blocks/0/fc1/kernel' \(key 'fc1'\) must"):
        prune_sequential(model, tokens, Wanda(), 0.5, layer_sparsity={"fc1": 2.0})
    with pytest.raises(ValueError, match="key 'attention' matches no prunable parameter"):
        prune_sequential(model, tokens, Wanda(), 0.5, layer_sparsity={"attention": 0.1})
    with pytest.raises(ValueError, match=r"'blocks/0/qkv/kernel' \(shape \(16, 48\)\).*not "
                                         r"divisible by 32"):
        prune_sequential(model, tokens, Wanda(), structure=sj.NM(16, 32))
    with pytest.raises(ValueError, match="'blocks/0/qkv/kernel': block_size=6 must be a "
                                         "multiple of m=4"):
        prune_sequential(model, tokens, SparseGPT(block_size=6), structure=sj.NM(2, 4))
    with pytest.raises(ValueError, match="sequence length 13 exceeds max_len=12"):
        prune_sequential(model, np.zeros((2, 13), np.int32), Wanda(), 0.5)
