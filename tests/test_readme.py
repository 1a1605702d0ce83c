"""Every code block of the README runs on its own, in a fresh namespace, and does what the
README says."""

import pathlib
import re

import jax
import numpy as np

import sparsejax as sj

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)
NAMES = ["gradual", "one-shot", "plugins", "scores", "structured", "linen", "block-nm",
         "sparse-training", "lottery", "sensitivity", "group-lasso", "posttrain", "deploy",
         "reliability", "parallel", "tpu"]

N_WEIGHTS = 64 * 256 + 256 * 10  # the kernels of the README's MLP: 18,944


def _run(name: str) -> dict:
    """Run the README block ``name`` in a fresh namespace (user code adds biases by
    broadcasting, as everyone writes it)."""
    namespace: dict = {"__name__": f"README-{name}"}
    with jax.numpy_rank_promotion("allow"):
        exec(compile(BLOCKS[NAMES.index(name)], f"README-{name}", "exec"), namespace)
    return namespace


def _printed_ints(line: str) -> list[int]:
    return [int(v) for v in re.findall(r"\d+", line)]


def test_readme_blocks_and_their_names():
    assert len(BLOCKS) == len(NAMES)
    for block in BLOCKS:  # each shows its imports: no name comes from an earlier block
        assert block.lstrip().startswith(("import ", "from "))
    assert "(docs/api.md)" in TEXT and "(LICENSE)" in TEXT and "(CITATION.cff)" in TEXT
    for word in ("issue", "DESIGN.md", "../" + "shared"):
        assert word not in TEXT
    # the two commands: the main job on data shipped with the install, and the tests
    commands = re.findall(r"```bash\n(.*?)```", TEXT, re.S)[:2]
    assert "sparsejax comparison" in commands[0] and "--data-dir" not in commands[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'python -m pytest -q -m "not slow" -n auto' in commands[1] and \
        'python -m pytest -q -m "not slow" -n auto' in ci


def test_gradual(capsys):
    ns = _run("gradual")
    printed = capsys.readouterr().out
    assert "| w1 | (64, 256) | 16,384 | 1,638 | 1,638 | 90.00% |" in printed
    assert "| w2 | (256, 10) | 2,560 | 256 | 256 | 90.00% |" in printed
    mask = sj.current_mask(ns["opt_state"])
    # pruned weights are exactly zero after 1,000 Adam steps
    for p, m in zip(jax.tree.leaves(ns["params"]), jax.tree.leaves(mask), strict=True):
        assert np.all(np.asarray(p)[~np.broadcast_to(np.asarray(m), p.shape)] == 0.0)


def test_one_shot():
    ns = _run("one-shot")
    # the last mask is ERK at 90 %: exactly round(0.9 n) over the two kernels
    erk = ns["mask"]
    kept = int(np.sum(erk["w1"])) + int(np.sum(erk["w2"]))
    assert kept == N_WEIGHTS - round(0.9 * N_WEIGHTS)


def test_plugins(capsys):
    from sparsejax.data import dataset_names, unregister_dataset
    from sparsejax.runner import method_names, unregister_method

    for name, names, drop in (("squared_magnitude", method_names, unregister_method),
                              ("blobs", dataset_names, unregister_dataset)):
        if name in names():  # registered by another test of this process
            drop(name)
    try:
        ns = _run("plugins")
        assert capsys.readouterr().out.strip() == (
            "squared_magnitude Dataset(name='blobs', train=400, test=200, input_shape=(16,), "
            "num_classes=4, normalized=False)")
        assert ns["load_dataset"]("blobs").num_classes == 4
    finally:
        unregister_method("squared_magnitude")
        unregister_dataset("blobs")


def test_scores(capsys):
    _check_scores(BLOCKS[NAMES.index("scores")], _run("scores"), capsys)


def test_structured(capsys):
    _check_structured(BLOCKS[NAMES.index("structured")], _run("structured"), capsys)


def test_linen(capsys):
    _check_linen(BLOCKS[NAMES.index("linen")], _run("linen"), capsys)


def test_sparse_training(capsys):
    ns = _run("sparse-training")
    printed = capsys.readouterr().out.splitlines()
    start, mask, params = ns["start"], ns["mask"], ns["params"]
    kept = N_WEIGHTS - round(0.9 * N_WEIGHTS)
    assert _printed_ints(printed[0]) == [kept, kept] and kept == 1894
    # RigL keeps each layer's ERK count exactly and moves connections: what the comment says
    for name in ("w1", "w2"):
        assert int(np.asarray(mask[name]).sum()) == int(np.asarray(start[name]).sum())
    moved = int(np.sum(np.asarray(mask["w1"]) & ~np.asarray(start["w1"])))
    assert _printed_ints(printed[1])[0] == moved and moved > 0
    for name in ("w1", "w2"):  # pruned weights are exactly zero after 1,000 Adam steps
        assert np.all(np.asarray(params[name])[~np.asarray(mask[name])] == 0.0)


def test_lottery(capsys):
    ns = _run("lottery")
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("imp round") for line in printed) == 4  # progress=True
    # final per-layer sparsities: w1 90% of 1,280, w2 50% of 320: 1,152 + 160 = 1,312 pruned
    assert printed[-1].split(" [")[1] == "0, 752, 1122, 1312]"
    assert printed[-1].startswith("val_accuracy")
    mask = ns["result"].mask
    assert int((~np.asarray(mask["w1"])).sum()) == round(0.9 * 1280)
    assert int((~np.asarray(mask["w2"])).sum()) == round(0.5 * 320)


def test_posttrain(capsys):
    _run("posttrain")
    rows = [line.rsplit(" ", 2) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 6 and all(sparsity == "0.5" for _, sparsity, _ in rows)
    error = {head: float(err) for head, _, err in rows}
    for structure in ("Unstructured()", "NM(n=2, m=4, axis=None)"):
        sparsegpt = error[f"SparseGPT {structure}"]
        assert sparsegpt < error[f"Wanda {structure}"] and sparsegpt < error[f"Magnitude {structure}"]
        assert sparsegpt < 0.75 * error[f"Wanda {structure}"]  # "about half"


def test_deploy(capsys):
    ns = _run("deploy")
    assert capsys.readouterr().out.split() == ["True", "(784,", "150,", "50,", "10)", "True"]
    params, mask = ns["params"], ns["mask"]
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True):
        assert np.all(np.asarray(p)[~np.broadcast_to(np.asarray(m), p.shape)] == 0.0)
    sparse = ns["sparse"]["layers"][0]["kernel"]
    assert int(sparse.nse) == int(np.asarray(mask["layers"][0]["kernel"]).sum())


def test_reliability(capsys):
    ns = _run("reliability")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "0 {'rate': 0.2}" and printed[1] == "[8, 8]"
    w = np.asarray(ns["params"]["w"])
    after = np.asarray(ns["optax"].apply_updates(ns["params"], ns["updates"])["w"])
    pruned = ~np.asarray(ns["mask"]["w"])
    assert np.all(after[pruned] == 0.0) and np.all(np.isfinite(after))
    np.testing.assert_array_equal(after[~pruned], w[~pruned])  # NaN update never applied


def test_block_nm(capsys):
    _check_block_nm(BLOCKS[NAMES.index("block-nm")], _run("block-nm"), capsys)


def test_sensitivity(capsys):
    _check_sensitivity(BLOCKS[NAMES.index("sensitivity")], _run("sensitivity"), capsys)


def test_group_lasso(capsys):
    _check_group_lasso(BLOCKS[NAMES.index("group-lasso")], _run("group-lasso"), capsys)


def test_parallel():
    # the multi-device example: FSDP over the 8 fake CPU devices of conftest
    ns = _run("parallel")
    kernel = ns["state"].params["layers"][0]["kernel"]
    assert kernel.shape == (784, 300) and kernel.sharding.spec[0] == "data"  # 784 = 8 x 98
    assert [s.data.shape for s in kernel.addressable_shards] == [(98, 300)] * 8
    assert np.isfinite(float(ns["metrics"]["loss"]))


def _check_scores(block, ns, capsys):
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["snip", "obd", "fisher"]
    kept = [_printed_ints(line) for line in lines]
    # global selection: exactly round(0.1 n) of all weights kept, layers ranked together
    assert all(w1 + w2 == N_WEIGHTS - round(0.9 * N_WEIGHTS) == 1894 for w1, w2 in kept)
    assert all(w2 != 256 for _, w2 in kept)  # not the layerwise 10 % per layer
    # SNIP's connection sensitivities are normalised: they sum to 1 (Lee et al. 2019, eq. 6)
    snip = ns["sj"].scores.snip(ns["loss_fn"], ns["params0"], (ns["x"], ns["y"]))
    assert np.isclose(sum(float(v.sum()) for v in jax.tree.leaves(snip)), 1.0, atol=1e-5)
    # the last mask (Fisher-OBD): every kept kernel score >= every pruned one, over both layers
    s, mask = ns["s"], ns["mask"]
    kept_scores = np.concatenate([np.asarray(s[k])[np.asarray(mask[k])] for k in ("w1", "w2")])
    pruned = np.concatenate([np.asarray(s[k])[~np.asarray(mask[k])] for k in ("w1", "w2")])
    assert kept_scores.min() >= pruned.max() and pruned.min() >= 0.0  # Fisher is >= 0
    assert mask["b1"].shape == () and bool(mask["b1"])


def _check_structured(block, ns, capsys):
    assert capsys.readouterr().out.split() == ["True", "2293000", "646500", "218330", "109295"]
    small, x = ns["small"], ns["x"]
    # half of the 20 / 50 / 500 units of conv1, conv2, fc1; fc2's logits are left alone
    assert (small.conv1.kernel.shape[-1], small.conv2.kernel.shape[-1],
            small.fc1.kernel.shape[-1]) == (10, 25, 250)
    assert small.fc2.kernel.shape[-1] == 10
    # the mask of everything the units own counts exactly the shrunk model's parameters
    from flax import nnx

    small_params = nnx.state(small, nnx.Param)
    n_small = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(small_params))
    assert sj.count_kept(ns["full"], ns["params"]) == n_small == 109295
    np.testing.assert_allclose(ns["masked"](x), small(x), rtol=1e-5, atol=1e-5)


def _check_linen(block, ns, capsys):
    assert capsys.readouterr().out.split() == [
        "(784,", "150)", "(150,", "10)", "True", "(300,", "1)", "(300,", "784)"]
    params, mask, small = ns["params"], ns["mask"], ns["small"]
    kernel = np.asarray(params["params"]["Dense_0"]["kernel"])
    keep = np.sort(np.argsort(-np.abs(kernel).sum(axis=0), kind="stable")[:150])  # top L1
    np.testing.assert_array_equal(np.asarray(small["params"]["Dense_0"]["kernel"]),
                                  kernel[:, keep])
    kept = np.broadcast_to(np.asarray(mask["params"]["Dense_0"]["kernel"]), kernel.shape)
    assert int(kept.sum()) == 784 * 150  # a (1, 300) neuron mask: 150 whole columns


def _check_block_nm(block, ns, capsys):
    assert capsys.readouterr().out.split() == ["2", "4", "True"]
    w, nm, blocks, bsm = np.asarray(ns["w"]), np.asarray(ns["nm"]), np.asarray(ns["blocks"]), ns["bsm"]
    assert np.all(nm.reshape(16, 4, 256).sum(axis=1) == 2)
    # within every run of 4 inputs the 2 largest |w| are kept
    runs = np.abs(w).reshape(16, 4, 256)
    assert np.all(np.where(nm.reshape(16, 4, 256), runs, np.inf).min(axis=1)
                  >= np.where(nm.reshape(16, 4, 256), -np.inf, runs).max(axis=1))
    # 4 of the 16 tiles (16 x 64) kept: those of largest L1 norm
    norms = np.abs(w).reshape(4, 16, 4, 64).sum(axis=(1, 3))
    tiles = blocks.reshape(4, 16, 4, 64).all(axis=(1, 3))
    assert bsm.nnz_blocks == 4 and tiles.sum() == 4 and blocks.sum() == 4 * 16 * 64
    assert norms[tiles].min() > norms[~tiles].max()
    expected = np.asarray(ns["x"]) @ np.where(blocks, w, 0.0)
    # On a GPU, JAX's default precision multiplies float32 in TF32 (10-bit mantissa): the
    # kernel and the dense product of the example agree (the printed True), numpy differs.
    atol = 1e-3 if jax.default_backend() == "cpu" else 3e-2
    np.testing.assert_allclose(ns["y_bs"], expected, rtol=1e-4, atol=atol)


def _check_sensitivity(block, ns, capsys):
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == "947" and 947 == N_WEIGHTS - round(0.95 * N_WEIGHTS)
    sens, budget, mask90, mask95 = ns["sens"], ns["budget"], ns["mask90"], ns["mask95"]
    assert sens.layers == ("w1", "w2") and sens.values.shape == (2, 4)
    # the first grid point is the existing 90 % mask itself: no change from the baseline
    np.testing.assert_array_equal(sens.drops[:, 0], [0.0, 0.0])
    assert sens.pruned[:, 0].tolist() == [round(0.9 * 64 * 256), round(0.9 * 256 * 10)]
    assert set(budget) == {"w1", "w2"} and all(0.9 <= v <= 0.99 for v in budget.values())
    for k in ("w1", "w2"):  # masks only shrink; each layer gets exactly its share
        assert not np.any(np.asarray(mask95[k]) & ~np.asarray(mask90[k]))
        size = ns["params"][k].size
        assert int(np.asarray(mask95[k]).sum()) == size - round(budget[k] * size)


def _check_group_lasso(block, ns, capsys):
    stats = ns["regularizers"].group_stats(ns["p"], prunable="w1")
    assert repr(stats) in capsys.readouterr().out
    (row,) = stats
    units = np.asarray(ns["units_mask"]["w1"])
    w1 = np.asarray(ns["p"]["w1"])
    assert units.shape == (1, 256) and row.groups == 256
    # most units go (215 of 256 with jax 0.10.2 on CPU; the count moves with float rounding)
    assert 150 < row.removed == int((~units).sum()) < 256
    # removed units are exact zeros (proximal step), the kept ones are not
    assert np.all(w1[:, ~units[0]] == 0.0) and np.all(np.abs(w1[:, units[0]]).sum(axis=0) > 0)
    assert ns["units_mask"]["w2"].shape == () and bool(ns["units_mask"]["w2"])


def test_tpu(capsys):
    ns = _run("tpu")
    assert capsys.readouterr().out.strip() == "('tpu',) True"
    assert "tpu_custom_call" not in ns["exported"].mlir_module()
