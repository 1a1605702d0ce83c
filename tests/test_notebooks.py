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
        r"layer widths \(64, 300, 100, 10\) -> \(64, \d+, \d+, 10\)",
        r"sparse VD: test accuracy \d+\.\d\d% \(dense \d+\.\d\d%\), compression \d+\.\dx",
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
