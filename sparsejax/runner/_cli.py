"""The ``sparsejax`` command: ``sparsejax <study> [flags]``, plus ``methods``, ``datasets``,
``replot`` and ``sparsity_learning_summary``.

Studies load on demand (``sparsejax --help`` imports none of them). :data:`STUDIES` maps
each name to its module under :mod:`sparsejax.runner.studies`; a new study adds one entry.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from sparsejax.runner._config import ConfigError
from sparsejax.runner._output import as_path
from sparsejax.runner._study import Study, _fail, load_plugins, save_figures

__all__ = ["STUDIES", "get_study", "main"]

#: study name -> (module, one-line summary)
STUDIES: dict[str, tuple[str, str]] = {
    "comparison": ("sparsejax.runner.studies.comparison",
                   "ShrinkBench-style comparison of pruning methods on LeNet-300-100"),
    "lottery": ("sparsejax.runner.studies.lottery",
                "lottery tickets by iterative magnitude pruning, with controls"),
    "structured": ("sparsejax.runner.studies.structured",
                   "filter / neuron pruning: criteria, allocation, one-shot vs iterative"),
    "dynamic": ("sparsejax.runner.studies.dynamic",
                "dynamic channel gating vs static filter pruning at equal compute"),
    "dense": ("sparsejax.runner.studies.dense",
              "dense baselines of every data set / model pair the studies use"),
    "sparsity_learning": ("sparsejax.runner.studies.sparsity_learning",
                          "sparse variational dropout, group lasso, structured sparsity "
                          "learning"),
    "sparse_training": ("sparsejax.runner.studies.sparse_training",
                        "dynamic sparse training (SET, RigL, SNFS, SR-STE) vs static, "
                        "gradual, dense"),
    "posttrain": ("sparsejax.runner.studies.posttrain",
                  "post-training pruning of a byte-level decoder: magnitude, Wanda, "
                  "SparseGPT, OWL"),
}
#: earlier script names, still accepted
ALIASES = {"shrinkbench": "comparison", "structured_pruning": "structured",
           "dynamic_gating": "dynamic", "dense_baselines": "dense"}
_COMMANDS = {"methods": "list the pruning methods (built-in and from --plugin modules)",
             "datasets": "list the data sets (built-in and from --plugin modules)",
             "replot": "redraw a finished run's figures from its results.json",
             "sparsity_learning_summary": "summarise sparsity_learning runs over seeds "
                                          "(ROOT/<run>/): ROOT/summary.md"}


def get_study(name: str) -> Study:
    """The :class:`Study` called ``name`` (or an earlier alias), its module imported."""
    name = ALIASES.get(name, name)
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; known: {', '.join(STUDIES)}")
    return importlib.import_module(STUDIES[name][0]).STUDY


def _usage() -> str:
    width = max(map(len, [*STUDIES, *_COMMANDS]))
    lines = ["usage: sparsejax <study> [flags]    (sparsejax <study> --help: its flags)",
             "       sparsejax {" + ",".join(_COMMANDS) + "} ...", "",
             "Pruning studies on real data: each trains, prunes, fine-tunes and writes",
             "config.json, results.json, results.md, metrics.jsonl and figures (PNG, PDF)",
             "into --out.", "", "studies:"]
    lines += [f"  {n:<{width}}  {summary}" for n, (_, summary) in STUDIES.items()]
    lines += ["", "commands:"] + [f"  {n:<{width}}  {s}" for n, s in _COMMANDS.items()]
    lines += ["", "options:", "  -h, --help  show this message", "  --version   the version"]
    return "\n".join(lines)


def _listing(kind: str, argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog=f"sparsejax {kind}", description=_COMMANDS[kind])
    parser.add_argument("--plugin", nargs="*", default=[], metavar="MODULE",
                        help="modules or .py files to import first (they register more)")
    args = parser.parse_args(argv)
    try:
        load_plugins(args.plugin)
    except ConfigError as err:
        _fail(f"sparsejax {kind}", err)
    if kind == "datasets":
        from sparsejax.data import dataset_info, dataset_names

        rows = [(n, "built-in" if dataset_info(n).builtin else "registered",
                 dataset_info(n).description) for n in dataset_names()]
    else:
        from sparsejax.runner._methods import get_method, method_names

        rows = []
        for n in method_names():
            m = get_method(n)
            what = f"{m.kind}, {m.scope}, {m.schedule}"
            rows.append((n, what, f"{m.description} ({m.reference})" if m.reference
                         else m.description))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}")


def _replot(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="sparsejax replot", description=_COMMANDS["replot"] + " (PNG and PDF, replaced "
        "atomically); the study is read from config.json or given with --study")
    parser.add_argument("runs", nargs="+", help="run folders (holding results.json)")
    parser.add_argument("--study", choices=[*STUDIES, *ALIASES], default=None,
                        help="the study that made the runs (runs from before it was recorded)")
    args = parser.parse_args(argv)
    for run in args.runs:
        folder = as_path(run)
        try:
            config = json.loads((folder / "config.json").read_text())
            results = json.loads((folder / "results.json").read_text())
        except (OSError, ValueError) as err:
            _fail("sparsejax replot", ConfigError("runs", run, f"not a finished run: {err}"))
        name = args.study or config.get("study")
        if name is None:
            _fail("sparsejax replot", ConfigError("study", None, f"{run} does not record its "
                                                  "study: give --study"))
        study = get_study(name)
        figures = study.figures(results, config.get("config", {}))
        save_figures(folder, figures)
        print(f"{run}: " + ", ".join(f"{stem}.png/.pdf" for stem in figures))


def main(argv: Sequence[str] | None = None) -> int:
    """``sparsejax <study> [flags]``: run a study; ``sparsejax --help``: list them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    head, rest = argv[0], argv[1:]
    if head == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"sparsejax {version('sparsejax')}")
        except PackageNotFoundError:
            print("sparsejax (not installed)")
        return 0
    if head in ("methods", "datasets"):
        _listing(head, rest)
        return 0
    if head == "replot":
        _replot(rest)
        return 0
    if head == "sparsity_learning_summary":
        from sparsejax.runner.studies.sparsity_learning_summary import main as summary

        summary(rest)
        return 0
    if ALIASES.get(head, head) not in STUDIES:
        print(f"sparsejax: error: unknown study or command {head!r}; studies: "
              f"{', '.join(STUDIES)}; commands: {', '.join(_COMMANDS)}", file=sys.stderr)
        return 2
    from sparsejax.runner._study import run_study

    run_study(get_study(head), rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
