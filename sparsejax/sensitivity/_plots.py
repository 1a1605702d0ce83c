"""PNG figures of sensitivity curves (matplotlib, headless ``Agg`` backend, imported lazily)."""

from __future__ import annotations

import pathlib

import numpy as np

from sparsejax.sensitivity._layers import LayerSensitivity


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_sensitivity_curves(
    path: str | pathlib.Path, sens: LayerSensitivity, *, ylabel: str = "metric", title: str = ""
) -> pathlib.Path:
    """One curve per layer: metric vs the layer's sparsity, with the baseline dashed (PNG)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, row in zip(sens.layers, sens.values):
        ax.plot(sens.sparsities, row, marker="o", ms=3, label=name)
    ax.axhline(sens.baseline, color="k", ls="--", lw=1, label="unpruned")
    ax.set_xlabel(f"sparsity of the layer ({type(sens.structure).__name__} groups)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_sensitivity_heatmap(
    path: str | pathlib.Path, sens: LayerSensitivity, *, title: str = ""
) -> pathlib.Path:
    """Heat map of the drop, layers × sparsities, annotated (PNG)."""
    plt = _pyplot()
    drops = sens.drops
    fig, ax = plt.subplots(
        figsize=(max(5, 0.7 * len(sens.sparsities) + 2), max(2.5, 0.45 * len(sens.layers) + 1.5)),
        dpi=120,
    )
    im = ax.imshow(drops, aspect="auto", cmap="magma_r")
    ax.set_xticks(range(len(sens.sparsities)), [f"{s:g}" for s in sens.sparsities])
    ax.set_yticks(range(len(sens.layers)), sens.layers, fontsize=8)
    ax.set_xlabel("sparsity of the layer")
    dark = np.nanmin(drops) + 0.5 * (np.nanmax(drops) - np.nanmin(drops))
    for i in range(drops.shape[0]):
        for j in range(drops.shape[1]):
            color = "white" if drops[i, j] > dark else "black"
            ax.text(j, i, f"{drops[i, j]:.3g}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, label="drop vs unpruned")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
