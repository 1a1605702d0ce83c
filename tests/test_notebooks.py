"""The Colab notebooks run (smoke size), their .ipynb match their sources, docs/api.md is fresh.

Each ``notebooks/NN_*.py`` (jupytext percent source of truth) runs as a script
in its own interpreter with ``SPARSEJAX_SMOKE=1``, all three at once (module
fixture), with matplotlib's ``Agg`` backend and ``plt.show`` replaced by a
function that saves the open figures, so the test sees every plot the
notebook shows. Implicit rank promotion raises, as in the rest of the suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TIMEOUT_S = 600
# Smoke runs are dominated by XLA compilation: cheaper CPU code generation halves it.
XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _load(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load(NOTEBOOKS / "build.py")
build_api = _load(ROOT / "docs" / "build_api.py")

# notebook -> (figures shown, regexes its smoke-size output must match)
EXPECTED = {
    "01_quickstart": (1, [
        # one-shot global magnitude pruning at 90 %: exactly round(0.9 · 50,200) kernel weights
        r"global: exactly 45,180 of 50,200 kernel weights pruned",
        r"\| layers/1/kernel \| \(300, 100\) \| 30,000 \| 3,000 \| 3,000 \| 90\.00% \|",
        r"gradual to 90%: test accuracy \d+\.\d\d%",
    ]),
    "02_lottery_tickets": (1, [
        # hidden kernels at rate 0.5, output layer at 0.25: 50.5 % then 25.6 % remaining
        r"1 +ticket +50\.5%",
        r"2 +reinit +25\.6%",
        r"2 +random_mask +25\.6%",
        r"\| layers/2/kernel \| \(100, 10\) \| 1,000 \| 562 \| 562 \| 43\.80% \|",
    ]),
    "03_sparsity_learning": (2, [
        r"λ=0.3 +test accuracy \d+\.\d\d%, hidden neurons removed [1-9]\d*\.\d%",
        # λ chosen with a margin of 1 SE on the last 20 % of the 1,438 training digits
        r"λ=0.3 +validation loss [+-]\d+\.\d\d ± \d+\.\d\d pp",
        r"selected λ = (?:None|0\.3) on 287 validation images",
        r"layer widths \(64, 300, 100, 10\) -> \(64, \d+, \d+, 10\)",
        r"sparse VD: test accuracy \d+\.\d\d% \(dense \d+\.\d\d%\), compression \d+\.\dx",
    ]),
    "04_structured_pruning": (3, [
        # half the neurons of each hidden layer: 64·150+150 + 150·50+50 + 50·10+10 = 17,810
        r"layer widths \(64, 300, 100, 10\) -> \(64, 150, 50, 10\)",
        r"parameters 50,610 -> 17,810 \(masked model: 17,810 nonzero\)",
        # MACs 64·150 + 150·50 + 50·10 = 17,600; the masked model's nonzero FLOPs equal them
        r"FLOPs 50,200 -> 17,600 \(2\.85x fewer\)",
        r"\| \*\*total\*\* \| 50,200 \| \| 17,600 \|",
        r"max \|shrunk − masked\| over the test logits: "
        r"(?:\d\.\de-(?:0[6-9]|[1-9]\d)|0\.0e\+00) \(< 1e-5\)",
        r"(\d+\.\d\d)% after fine-tuning the shrunk model \(\1% fine-tuning the masked one",
        r"group Taylor +0\.\d{3} +0\.\d{3}\n",
        r"allocation for a 80% FLOPs reduction of the pruned layers: "
        r"layers/0/kernel \d+\.\d%, layers/1/kernel \d+\.\d%",
        # 64·60 + 60·20 + 20·10 = 5,240 of 50,200 MACs
        r"target 80% L1, uniform +widths \(64, 60, 20, 10\) +FLOPs kept +10\.4%, "
        r"test accuracy \d+\.\d\d%",
        r"target 80% L1, sensitivity allocation +widths \(64, \d+, \d+, 10\) +FLOPs kept",
    ]),
    "05_dynamic_gating": (2, [
        # MNIST-1D CNN: 31,750 dense MACs; k = floor(d·25 + ½) channels per layer and input
        r"31,750 dense MACs per example, predictors 1,275 MACs",
        r"d=0\.25: k per layer \('conv1', 'conv2', 'conv3'\) = \(6, 6, 6\); selected per input: "
        r"conv1 6\.\.6, conv2 6\.\.6, conv3 6\.\.6; computed per input: conv1 6\.\.6, "
        r"conv2 6\.\.6, conv3 6\.\.6",
        r"d=0\.5: k per layer \('conv1', 'conv2', 'conv3'\) = \(13, 13, 13\); selected per "
        r"input: conv1 13\.\.13, conv2 13\.\.13, conv3 13\.\.13;",
        r"d=1\.0: k per layer \('conv1', 'conv2', 'conv3'\) = \(25, 25, 25\); selected per "
        r"input: conv1 25\.\.25, conv2 25\.\.25, conv3 25\.\.25;",
        r"conv3 computes (?:[2-9]|[1-9]\d+) different channel subsets over the 1,000 test inputs",
        # the gathered fast path gives the masked path's logits: relative difference < 1e-6,
        # probabilities < 1e-5 apart (printed as %.1e), the same class for all 100 inputs
        *(rf"d={d}: gathered \(k=\({k}\)\) vs masked on 100 single test inputs: max "
          r"\|Δlogit\| = \d\.\de[-+]\d\d = (?:0\.0e\+00|\d\.\de-0[7-9]|\d\.\de-[1-9]\d) × max "
          r"\|logit\| \(\d+\.\d\); max \|Δprobability\| = (?:0\.0e\+00|\d\.\de-0[6-9]|"
          r"\d\.\de-[1-9]\d) \(< 1e-5\); same class 100/100"
          for d, k in ((r"0\.25", "6, 6, 6"), (r"0\.5", "13, 13, 13"), (r"1\.0", "25, 25, 25"))),
        # effective MACs at k = 6: 2,490 conv/linear + 325 predictor MACs; static: no predictor
        r"FBS: .*\n +0\.25 +6/6/6 +0\.24/0\.24/0\.24 +2,815 +8\.9% ",
        r"L0 : .*\n +0\.25 +6/6/6 +0\.24/0\.24/0\.24 +2,815 +8\.9% ",
        r" 0\.00 +2,815 +8\.9% +\d+\.\d\d% +100% / 0% / 0%",  # threshold 0: lowest level only
        r" 1\.00 +[\d,]+ +\d+\.\d% +\d+\.\d\d% +0% / 0% / 100%",  # threshold 1: every level
        r"static L1 d=0\.25: k=\(6, 6, 6\), 2,490 MACs \(7\.8%\)",
        r"static L1 d=0\.5: k=\(13, 13, 13\), 9,490 MACs \(29\.9%\)",
        r"static L1 d=0\.75: k=\(19, 19, 19\), 19,000 MACs \(59\.8%\)",
        r"gathered +0\.25 +6/6/6 +2,815 +\d+\.\dµs",
    ]),
    "06_sparse_training": (1, [
        # ERK at 90 % of the 50,200 kernel weights of LeNet-300-100 on digits: the small output
        # layer keeps 632 of 1,000
        r"ERK at 90%: 5,020 of 50,200 kernel weights kept",
        r"\| layers/2/kernel \| \(100, 10\) \| 1,000 \| 632 \| 632 \| 36\.80% \|",
        r"RigL: updates at steps \[0, 10, 20, 30\]\.\.\. until 40, drop fraction 0\.30 -> 0\.01",
        r"static at 90%: test accuracy \d+\.\d\d%, 0 connections moved in 0 updates, 5,020 kept",
        # SET: floor(0.3 a) of every layer (627 + 689 + 189 = 1,505) at each of 5 updates
        r"SET at 90%: test accuracy \d+\.\d\d%, 7,525 connections moved in 5 updates, 5,020 kept",
        # RigL: the cosine-decayed fraction at steps 0, 10, 20, 30, 40 (end 45)
        r"RigL at 90%: test accuracy \d+\.\d\d%, 4,134 connections moved in 5 updates, 5,020 "
        r"kept",
    ]),
    "07_post_training": (2, [
        # 2 blocks of 32: 12·32² = 12,288 weights each in qkv, proj, fc1, fc2
        r"24,576 weights in the blocks' linear layers",
        r"block 0 fc1 at 50%, SparseGPT: 2,048 of 4,096 weights zero, relative output error "
        r"0\.\d{4}",
        r"\| dense +\| — +\| 0\.0000 +\| \d\.\d{3} +\| +\d+\.\d{3} \|",
        *(rf"\| {m} +\| {t} +\| {s} +\| \d\.\d{{3}} +\|"
          for m in ("magnitude", "wanda", "sparsegpt")
          for t, s in (("50%", r"0\.5000"), ("2:4", r"0\.5000"))),
        r"\| sparsegpt +\| 70% +\| 0\.7000 +\|",   # Wanda: round(0.7·32) = 22 per unit
        r"2:4 check: every run of 4 inputs of every output unit keeps exactly 2 weights in "
        r"all 8 pruned kernels: True",
        r"SparseGPT 2:4: 12,288 of 24,576 weights pruned",
        r"OWL block sparsities at 70%: 0\.\d{3}, 0\.\d{3} \(mean 0\.700\)",
    ]),
}

# Runs a notebook source as __main__ with plt.show() saving every open figure to $FIG_DIR.
RUNNER = """
import os, runpy, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
shown = []
def show(*args, **kwargs):
    for num in plt.get_fignums():
        path = os.path.join(os.environ["FIG_DIR"], f"figure-{len(shown):02d}.png")
        plt.figure(num).savefig(path, dpi=50)
        shown.append(path)
    plt.close("all")
plt.show = show
runpy.run_path(sys.argv[1], run_name="__main__")
print(f"FIGURES SHOWN: {len(shown)}")
"""


def test_sources_found():
    assert [p.stem for p in build.sources()] == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ipynb_in_sync_with_source_and_outputs_cleared(name):
    source = (NOTEBOOKS / f"{name}.py").read_text(encoding="utf-8")
    committed = (NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8")
    notebook = json.loads(committed)
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 5
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    # same cells as the percent source, byte for byte what notebooks/build.py writes
    cells = [(c["cell_type"], "".join(c["source"])) for c in notebook["cells"]]
    assert cells == build.parse_percent(source, name)
    assert committed == build.render(build.to_notebook(source, name)), (
        f"notebooks/{name}.ipynb is stale: run python notebooks/build.py")
    # opens with the guarded Colab install cell and the SMOKE size switch
    assert notebook["cells"][0]["cell_type"] == "markdown"
    first_code = "".join(code[0]["source"])
    assert 'REPO_URL = "https://github.com/sparsejax/sparsejax"' in first_code
    assert 'importlib.util.find_spec("sparsejax") is None' in first_code
    assert 'os.environ.get("SPARSEJAX_SMOKE", "0") == "1"' in "".join(code[1]["source"])
    assert f"colab.research.google.com/github/sparsejax/sparsejax/blob/main/notebooks/{name}" \
        f".ipynb" in "".join(notebook["cells"][0]["source"])


def test_percent_parser_rejects_malformed_sources():
    assert build.parse_percent("# %%\nx = 1\n\n\n# %% [markdown]\n# # Title\n#\n# text\n") == [
        ("code", "x = 1"), ("markdown", "# Title\n\ntext")]
    with pytest.raises(ValueError, match=r"nb:1: text before the first"):
        build.parse_percent("x = 1\n# %%\ny = 2\n", "nb")
    with pytest.raises(ValueError, match=r"nb:3: markdown lines must start with '# '"):
        build.parse_percent("# %% [markdown]\n# ok\nnot a comment\n", "nb")
    with pytest.raises(ValueError, match=r"nb:1: unknown cell marker"):
        build.parse_percent("# %% [raw]\n# x\n", "nb")
    with pytest.raises(ValueError, match=r"nb:1: empty cell"):
        build.parse_percent("# %%\n# %%\nx = 1\n", "nb")
    with pytest.raises(ValueError, match=r"nb: jupytext header opened on line 1 is never closed"):
        build.parse_percent("# ---\n# jupyter:\n# %%\nx = 1\n", "nb")


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Start every notebook at smoke size in its own interpreter, all at once."""
    runs = {}
    for name in sorted(EXPECTED):
        work = tmp_path_factory.mktemp(name)
        (work / "figures").mkdir()
        env = dict(os.environ, SPARSEJAX_SMOKE="1", MPLBACKEND="Agg", JAX_PLATFORMS="cpu",
                   JAX_NUMPY_RANK_PROMOTION="raise", FIG_DIR=str(work / "figures"),
                   PYTHONHASHSEED="0", XLA_FLAGS=XLA_FLAGS)
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(NOTEBOOKS / f"{name}.py")], cwd=work, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8")
        runs[name] = (proc, work)
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.smoke
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_at_smoke_size(name, smoke_runs):
    proc, work = smoke_runs[name]
    output, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"notebooks/{name}.py failed:\n{output[-6000:]}"
    figures, patterns = EXPECTED[name]
    assert "SMOKE=True" in output
    for pattern in patterns:
        assert re.search(pattern, output), f"{pattern!r} not in the output of {name}:\n{output}"
    assert f"FIGURES SHOWN: {figures}" in output
    pngs = sorted((work / "figures").glob("*.png"))
    assert len(pngs) == figures and all(p.stat().st_size > 5_000 for p in pngs)
    assert sorted(p.name for p in work.iterdir()) == ["figures"]  # writes nothing else


def test_api_md_is_up_to_date():
    committed = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert committed == build_api.generate(), "docs/api.md is stale: run python docs/build_api.py"


def test_api_md_lists_every_public_name():
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    import sparsejax
    import sparsejax.lottery
    import sparsejax.regularizers

    for name in sparsejax.__all__:
        assert f"| `sparsejax.{name}` |" in text
    for module in (sparsejax.lottery, sparsejax.regularizers, sparsejax.masks):
        for name in module.__all__:
            assert f"### `{module.__name__}.{name}` (" in text
    # signatures without memory addresses, annotations unquoted, and the first paragraph
    assert " at 0x" not in text
    assert re.search(r"^prune\(scores: PyTree, sparsity: [^\n]*, \*, params: PyTree \| None = None",
                     text, re.M)
    assert "'PyTree'" not in text
    assert "Gradual pruning inside the optimizer: prune on schedule" in text
