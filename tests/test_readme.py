"""The README's code examples run and do what the README says."""

import pathlib
import re

import jax
import numpy as np

import sparsejax as sj

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run_and_prune_exactly(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 3
    namespace: dict = {}
    # user code adds biases by broadcasting, as everyone writes it
    with jax.numpy_rank_promotion("allow"):
        exec(compile(blocks[0], "README-gradual", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "| w1 | (64, 256) | 16,384 | 1,638 | 1,638 | 90.00% |" in printed
    assert "| w2 | (256, 10) | 2,560 | 256 | 256 | 90.00% |" in printed
    params = namespace["params"]
    mask = sj.current_mask(namespace["opt_state"])
    # pruned weights are exactly zero after 1,000 Adam steps
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True):
        assert np.all(np.asarray(p)[~np.broadcast_to(np.asarray(m), p.shape)] == 0.0)
    exec(compile(blocks[1], "README-one-shot", "exec"), namespace)
    # the last mask is ERK at 90 %: exactly round(0.9 n) over the two kernels
    erk = namespace["mask"]
    kept = int(np.sum(erk["w1"])) + int(np.sum(erk["w2"]))
    assert kept == (64 * 256 + 256 * 10) - round(0.9 * (64 * 256 + 256 * 10))
    # the multi-device example: FSDP over the 8 fake CPU devices of conftest
    exec(compile(blocks[2], "README-parallel", "exec"), namespace)
    kernel = namespace["state"].params["layers"][0]["kernel"]
    assert kernel.shape == (784, 300) and kernel.sharding.spec[0] == "data"  # 784 = 8 x 98
    assert [s.data.shape for s in kernel.addressable_shards] == [(98, 300)] * 8
    assert np.isfinite(float(namespace["metrics"]["loss"]))
