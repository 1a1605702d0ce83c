"""Every command recorded in a committed benchmark result still parses (flag names kept)."""

from __future__ import annotations

import json
import pathlib
import shlex

import pytest
from script_loader import ROOT, load_script

from sparsejax.runner import parse_config

RESULTS = ROOT / "results" / "benchmarks"
# Commands that were already invalid before the re-layout, and why.
STALE = {
    "global_selection_gpu.json": "--bits-per-pass, replaced by --variants radix-b1/2/4",
}


def _recorded() -> list[tuple[str, str]]:
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        command = json.loads(path.read_text())["environment"]["command"]
        out.append((path.name, command))
    return out


def _config_class(module):
    return getattr(module, "Config", None) or module.BenchConfig


@pytest.mark.parametrize(("result", "command"), _recorded(), ids=[r for r, _ in _recorded()])
def test_recorded_command_parses(result, command):
    script, *argv = shlex.split(command)
    module = load_script(f"benchmarks/{script}")
    cls = _config_class(module)
    if result in STALE:
        with pytest.raises(SystemExit):
            parse_config(cls, argv)
        return
    cfg = parse_config(cls, argv)
    # the flags that say where results go keep their meaning
    if "--tag" in argv:
        assert cfg.tag == argv[argv.index("--tag") + 1]
    for flag in ("--out", "--out-dir", "--suite"):
        if flag in argv:
            assert getattr(cfg, flag[2:].replace("-", "_")) == pathlib.Path(
                argv[argv.index(flag) + 1])


def test_every_benchmark_has_a_config_and_a_main():
    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    assert len(scripts) == 10
    for path in scripts:
        module = load_script(f"benchmarks/{path.name}")
        cls = _config_class(module)
        cfg = parse_config(cls, [])
        assert cfg.tag  # the backend by default: part of the results file name
        assert callable(module.main)
