"""Summarise several seeds of ``experiments/sparsity_learning.py`` against the issue's targets.

Reads every ``<run>/results.json`` under a directory (one run per seed, as
``results/sparsity_learning/gpu_seeds/`` holds them) and writes
``summary.md`` there: per seed and mean ± std over seeds,

* sparse VD: test-error increase over the dense model of the same seed (pp)
  and compression (all parameters / nonzeros); target within 1 pp at
  ≥ 30x (LeNet-300-100) / ≥ 50x (LeNet-5);
  With ``--finetune-steps`` runs, the numbers are those after the masked fine-tuning.
* group lasso: the validation-selected λ (largest λ whose validation
  accuracy is within 1 pp of dense; none if no λ qualifies), the fraction of
  hidden neurons removed and the test-accuracy loss; target ≥ 50 % removed
  at ≤ 1 pp.

Usage::

    python experiments/summarize_sparsity_learning.py results/sparsity_learning/gpu_seeds
"""

from __future__ import annotations

import argparse
import json
import pathlib

from sparsejax.runner import aggregate, markdown_table

VD_TARGET = {"lenet300100": 30.0, "lenet5": 50.0}


def _runs(root: pathlib.Path) -> list[tuple[int, dict, dict]]:
    runs = []
    for path in sorted(root.glob("*/results.json")):
        config = json.loads((path.parent / "config.json").read_text())
        runs.append((int(config["config"]["seed"]), config, json.loads(path.read_text())))
    if not runs:
        raise ValueError(f"no */results.json under {str(root)!r}")
    return runs


def summarize(root: pathlib.Path) -> str:
    vd_rows, gl_rows = [], []
    devices = set()
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
                and r["accuracy_loss_pp"] <= 1.0,
            })
    lines = [f"# Sparsity learning over seeds ({', '.join(sorted(devices))})", ""]
    lines += [f"Command: `python experiments/summarize_sparsity_learning.py {root}`; each run's "
              "own command and config are in its `config.json`.", ""]
    if vd_rows:
        vd_rows.sort(key=lambda r: (r["model"], r["seed"]))
        lines += ["## Sparse variational dropout (MNIST-10k)", "", markdown_table(vd_rows, [
            ("model", "{model}"), ("seed", "{seed}"), ("dense test", "{dense:.2f}%"),
            ("FT steps", "{ft}"), ("VD test", "{test:.2f}%"), ("error +pp", "{pp:+.2f}"),
            ("compression", "{compression:.1f}x"), ("target met", "{met}")]), ""]
        agg = aggregate(vd_rows, ["model"], ["pp", "compression", "met"])
        lines += [markdown_table(agg, [
            ("model", "{model}"), ("seeds", "{n}"), ("error +pp", "{pp_mean:+.2f} ± {pp_std:.2f}"),
            ("compression", "{compression_mean:.1f}x ± {compression_std:.1f}"),
            ("seeds meeting the target", "{met_mean:.0%}")]), ""]
    if gl_rows:
        gl_rows.sort(key=lambda r: (r["dataset"], r["seed"]))
        lines += ["## Group lasso on LeNet-300-100 (validation-selected λ)", "", markdown_table(
            gl_rows, [("data", "{dataset}"), ("seed", "{seed}"), ("λ", "{lam}"),
                      ("hidden neurons removed", "{removed:.1f}%"), ("test loss", "{pp:+.2f} pp"),
                      ("target met", "{met}")]), ""]
        agg = aggregate([r for r in gl_rows if r["lam"] != "none"], ["dataset"], ["removed", "pp"])
        met = aggregate(gl_rows, ["dataset"], ["met"])
        for a, m in zip(agg, met, strict=True):
            a["met_mean"], a["seeds"] = m["met_mean"], m["n"]
        lines += [markdown_table(agg, [
            ("data", "{dataset}"), ("seeds (with a λ selected)", "{seeds} ({n})"),
            ("removed", "{removed_mean:.1f}% ± {removed_std:.1f}"),
            ("test loss", "{pp_mean:+.2f} ± {pp_std:.2f} pp"),
            ("seeds meeting the target", "{met_mean:.0%}")]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=pathlib.Path)
    args = parser.parse_args()
    text = summarize(args.root)
    (args.root / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
