"""``sparsejax sparsity_learning_summary ROOT``: several seeds of ``sparsejax
sparsity_learning`` against the study's targets.

Reads every ``<run>/results.json`` (with its ``config.json``) under ``ROOT``, one run per
seed, and writes ``ROOT/summary.md``: per seed and mean ± std over the seeds,

* sparse VD: the test-error increase over the dense model of the same seed (pp) and the
  compression (all parameters / nonzeros; after the masked fine-tuning where the run had
  one); target within 1 pp at >= 30x (LeNet-300-100) / >= 50x (LeNet-5);
* group lasso: the validation-selected lambda (none if no lambda qualifies), the fraction
  of hidden neurons removed and the test-accuracy loss; target >= 50 % removed within the
  run's ``tolerance``.

Each table ends with the number of seeds that meet the target, ``k of n``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

from sparsejax.runner._output import write_text
from sparsejax.runner._tables import aggregate, markdown_table

__all__ = ["main", "summarize"]

VD_TARGET = {"lenet300100": 30.0, "lenet5": 50.0}


def _runs(root: pathlib.Path) -> list[tuple[int, dict, dict]]:
    """``(seed, config.json, results.json)`` of every run folder under ``root``."""
    runs = []
    for path in sorted(root.glob("*/results.json")):
        config = json.loads((path.parent / "config.json").read_text())
        runs.append((int(config["config"]["seed"]), config, json.loads(path.read_text())))
    if not runs:
        raise ValueError(f"no */results.json under {str(root)!r}")
    return runs


def _met(rows: list[dict], keys: list[str]) -> list[dict]:
    """Per group of ``keys``: how many seeds meet the target, as ``k of n``."""
    groups: dict[tuple, list[bool]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(bool(r["met"]))
    return [{**dict(zip(keys, g, strict=True)), "met_count": f"{sum(v)} of {len(v)}"}
            for g, v in groups.items()]


def summarize(root: str | pathlib.Path) -> str:
    """The markdown summary of every ``<run>/results.json`` under ``root`` (module docstring).

    Raises:
      ValueError: ``root`` holds no run.
    """
    root = pathlib.Path(root)
    vd_rows, gl_rows = [], []
    devices, rules = set(), set()
    for seed, config, results in _runs(root):
        devices.add(results.get("device") or config["environment"].get("device", "?"))
        for r in results["sparse_vd"]:
            test = r.get("finetuned_test_accuracy", r["test_accuracy"])
            pp = 100 * (r["dense_test_accuracy"] - test)
            comp = r.get("finetuned_compression", r["compression"])
            vd_rows.append({
                "model": r["model"], "seed": seed, "dense": 100 * r["dense_test_accuracy"],
                "test": 100 * test, "pp": pp, "compression": comp,
                "ft": r.get("finetune_steps", 0),
                "met": pp <= 1.0 and comp >= VD_TARGET[r["model"]],
            })
        selected = {}
        cfg = config["config"]
        tolerance = cfg.get("tolerance", 0.01)
        if results["group_lasso"]:
            rules.add(f"within {100 * tolerance:g} pp with a margin of "
                      f"{cfg['select_z']:g} SE" if "select_z" in cfg
                      else "largest λ within 1 pp on validation (no margin)")
        for r in results["group_lasso"]:
            if r["selected"]:
                selected[r["dataset"]] = r
        datasets = {r["dataset"] for r in results["group_lasso"]}
        for dataset in sorted(datasets):
            r = selected.get(dataset)
            if r is not None and "finetuned_test_accuracy" in r:
                r = r | {"accuracy_loss_pp": 100 * (r["dense_test_accuracy"]
                                                    - r["finetuned_test_accuracy"])}
            gl_rows.append({
                "dataset": dataset, "seed": seed,
                "lam": "none" if r is None else f"{r['lam']:g}",
                "removed": float("nan") if r is None else 100 * r["removed_fraction"],
                "pp": float("nan") if r is None else r["accuracy_loss_pp"],
                "met": r is not None and r["removed_fraction"] >= 0.5
                and r["accuracy_loss_pp"] <= 100 * tolerance,
            })
    lines = [f"# Sparsity learning over seeds ({', '.join(sorted(devices))})", ""]
    lines += [f"Command: `sparsejax sparsity_learning_summary {root}`; each run's "
              "own command and config are in its `config.json`.", ""]
    if vd_rows:
        vd_rows.sort(key=lambda r: (r["model"], r["seed"]))
        lines += ["## Sparse variational dropout (MNIST-10k)", "", markdown_table(vd_rows, [
            ("model", "{model}"), ("seed", "{seed}"), ("dense test", "{dense:.2f}%"),
            ("FT steps", "{ft}"), ("VD test", "{test:.2f}%"), ("error +pp", "{pp:+.2f}"),
            ("compression", "{compression:.1f}x"), ("target met", "{met}")]), ""]
        agg = aggregate(vd_rows, ["model"], ["pp", "compression"])
        met = {r["model"]: r["met_count"] for r in _met(vd_rows, ["model"])}
        for a in agg:
            a["met_count"] = met[a["model"]]
        lines += [markdown_table(agg, [
            ("model", "{model}"), ("seeds", "{n}"), ("error +pp", "{pp_mean:+.2f} ± {pp_std:.2f}"),
            ("compression", "{compression_mean:.1f}x ± {compression_std:.1f}"),
            ("seeds meeting the target", "{met_count}")]), ""]
    if gl_rows:
        gl_rows.sort(key=lambda r: (r["dataset"], r["seed"]))
        for r in gl_rows:  # no λ met the rule: nothing to report for that seed
            r["removed_s"] = "—" if r["lam"] == "none" else f"{r['removed']:.1f}%"
            r["pp_s"] = "—" if r["lam"] == "none" else f"{r['pp']:+.2f} pp"
        lines += ["## Group lasso on LeNet-300-100 (validation-selected λ)", "",
                  f"Selection rule: {'; '.join(sorted(rules))}.", "", markdown_table(
            gl_rows, [("data", "{dataset}"), ("seed", "{seed}"), ("λ", "{lam}"),
                      ("hidden neurons removed", "{removed_s}"), ("test loss", "{pp_s}"),
                      ("target met", "{met}")]), ""]
        agg = {a["dataset"]: a for a in aggregate(
            [r for r in gl_rows if r["lam"] != "none"], ["dataset"], ["removed", "pp"])}
        table = []
        for m in _met(gl_rows, ["dataset"]):
            a = agg.get(m["dataset"], {"n": 0, "removed_mean": float("nan"),
                                       "removed_std": float("nan"), "pp_mean": float("nan"),
                                       "pp_std": float("nan")})
            seeds = sum(r["dataset"] == m["dataset"] for r in gl_rows)
            table.append({**a, **m, "seeds": seeds})
        lines += [markdown_table(table, [
            ("data", "{dataset}"), ("seeds (with a λ selected)", "{seeds} ({n})"),
            ("removed", "{removed_mean:.1f}% ± {removed_std:.1f}"),
            ("test loss", "{pp_mean:+.2f} ± {pp_std:.2f} pp"),
            ("seeds meeting the target", "{met_count}")]), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    """``sparsejax sparsity_learning_summary ROOT``: write ``ROOT/summary.md`` and print it.

    A ``ROOT`` holding no run exits with code 2 and one line naming it.
    """
    parser = argparse.ArgumentParser(
        prog="sparsejax sparsity_learning_summary",
        description="Summarise one sparsity_learning run per seed (ROOT/<run>/results.json) "
                    "against the study's targets; writes ROOT/summary.md.")
    parser.add_argument("root", type=pathlib.Path, help="folder of the run folders")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        text = summarize(args.root)
    except (ValueError, OSError) as err:
        print(f"sparsejax sparsity_learning_summary: error: ROOT {args.root}: {err}",
              file=sys.stderr)
        raise SystemExit(2) from None
    write_text(args.root / "summary.md", text)
    print(text)
    return text
