"""Matplotlib figures every pruning paper needs (PNG, headless ``Agg`` backend)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["layer_sparsity_bars", "tradeoff_curve"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def tradeoff_curve(
    path: str | pathlib.Path,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    *,
    xlabel: str = "compression ratio",
    ylabel: str = "test accuracy",
    title: str = "",
    logx: bool = True,
    baseline: float | None = None,
    baseline_label: str = "dense",
) -> pathlib.Path:
    """Accuracy-vs-compression curves with ±std error bars, one line per method.

    Args:
      path: output PNG.
      curves: ``{method: (x, y_mean, y_std)}``.
      baseline: optional horizontal reference line (e.g. the dense accuracy).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, (x, y, s) in curves.items():
        ax.errorbar(x, y, yerr=s, marker="o", ms=4, capsize=3, label=name)
    if baseline is not None:
        ax.axhline(baseline, color="k", ls="--", lw=1, label=baseline_label)
    if logx:
        ax.set_xscale("log", base=2)
        xs = sorted({float(v) for x, _, _ in curves.values() for v in x})
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def layer_sparsity_bars(
    path: str | pathlib.Path,
    layers: Sequence[str],
    sparsities: Mapping[str, Sequence[float]],
    *,
    title: str = "",
) -> pathlib.Path:
    """Grouped bars: per-layer sparsity for each method (``{method: [s_layer, ...]}``)."""
    plt = _pyplot()
    n = len(sparsities)
    x = np.arange(len(layers))
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(layers) * max(n, 1) * 0.4), 4), dpi=120)
    for i, (name, vals) in enumerate(sparsities.items()):
        ax.bar(x + (i - (n - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x, layers, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("sparsity")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
