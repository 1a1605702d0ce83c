"""Per-layer sparsities: ERK (closed forms), per-layer maps and their errors."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from select_reference import npt, pruned_count

from sparsejax.select import erk_sparsities, prune


def test_erk_closed_form_two_layers():
    params = {"a": jnp.zeros((100, 10)), "b": jnp.zeros((10, 10))}
    # raw densities: a: 110/1000, b: 20/100; eps = 0.5·1100 / (0.11·1000 + 0.2·100) = 550/130.
    sp = erk_sparsities(params, 0.5)
    assert sp["a"] == pytest.approx(1 - 121 / 260, abs=1e-12)
    assert sp["b"] == pytest.approx(1 - 11 / 13, abs=1e-12)
    # At 20 %, b would need density 0.2·880/130 > 1: it is made dense, a takes all 220 zeros.
    sp = erk_sparsities(params, 0.2)
    assert sp["b"] == 0.0 and sp["a"] == pytest.approx(0.22, abs=1e-12)
    # Conv: raw densities are sum of dims over product of dims: c: 18/288, d: 10/16. At 50 %,
    # d would get 0.625 · (152/28) > 1, so it is dense and c holds all zeros: 1 - 136/288 dense.
    conv = {"c": jnp.zeros((3, 3, 4, 8)), "d": jnp.zeros((8, 2))}
    sp = erk_sparsities(conv, 0.5)
    assert sp["d"] == 0.0 and sp["c"] == pytest.approx(1 - 136 / 288, abs=1e-12)
    sp = erk_sparsities(conv, 0.9)  # 0.625 · 0.1 · 304 / 28 < 1: nothing dense
    eps = 0.1 * 304 / 28
    assert sp["c"] == pytest.approx(1 - eps / 16, abs=1e-12)
    assert sp["d"] == pytest.approx(1 - eps * 0.625, abs=1e-12)
    assert erk_sparsities(conv, 0.5, erk_power_scale=0.0) == pytest.approx({"c": 0.5, "d": 0.5})


def test_prune_with_erk_counts_match_layer_sparsities_eager_and_traced():
    rng = np.random.default_rng(2)
    scores = {
        "a": jnp.asarray(rng.random((100, 10), np.float32)),
        "b": jnp.asarray(rng.random((10, 10), np.float32)),
    }
    want = {"a": round((1 - 121 / 260) * 1000), "b": round((1 - 11 / 13) * 100)}
    m = prune(scores, 0.5, distribution="erk")
    assert {k: pruned_count(v, scores[k].shape) for k, v in m.items()} == want
    mt = jax.jit(lambda t, s: prune(t, s, distribution="erk"))(scores, jnp.float32(0.5))
    assert {k: pruned_count(v, scores[k].shape) for k, v in mt.items()} == want


def test_per_layer_map_exact_paths_and_regexes():
    rng = np.random.default_rng(4)
    tree = {
        "enc": {"kernel": jnp.asarray(rng.random((10, 10), np.float32))},
        "dec": {"kernel": jnp.asarray(rng.random((4, 5), np.float32))},
        "head": {"kernel": jnp.asarray(rng.random((5, 2), np.float32))},
    }
    m = npt(prune(tree, distribution={"enc/kernel": 0.3, "^dec": 0.5}))
    assert pruned_count(m["enc"]["kernel"], (10, 10)) == 30
    assert pruned_count(m["dec"]["kernel"], (4, 5)) == 10
    assert bool(m["head"]["kernel"].all())  # unmatched, no default sparsity: kept
    m = prune(tree, 0.2, distribution={"enc/kernel": 0.3})
    assert pruned_count(m["head"]["kernel"], (5, 2)) == 2  # unmatched: the default 0.2


def test_per_layer_map_errors_name_path_key_and_value():
    tree = {"enc": {"kernel": jnp.ones((4, 4))}, "dec": {"kernel": jnp.ones((4, 4))}}
    with pytest.raises(ValueError, match=r"'enc/kernel'.*got 1.5"):
        prune(tree, distribution={"enc/kernel": 1.5})
    with pytest.raises(ValueError, match=r"'dec/kernel' \(from distribution key 'de'\).*got -0.1"):
        prune(tree, distribution={"de": -0.1})
    with pytest.raises(ValueError, match=r"key 'decoder' matches no prunable parameter"):
        prune(tree, distribution={"enc/kernel": 0.5, "decoder": 0.5})
    with pytest.raises(ValueError, match=r"'enc/kernel' is matched by several"):
        prune(tree, distribution={"enc": 0.5, "kernel": 0.2})
