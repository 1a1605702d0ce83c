"""Figures of layer sensitivity: one curve per layer, and a heat map of the drops.

Both take a :class:`LayerSensitivity` (or its ``to_dict()``, e.g. read back from a results
file), draw on a given ``ax`` or a new figure, and return the matplotlib ``Figure``; they
never choose or change the backend (matplotlib is imported when they are called).
"""

from __future__ import annotations

import os
import types
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from sparsejax.sensitivity._layers import LayerSensitivity

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_LINES = ("-", "--", "-.", ":")


def _table(sens: LayerSensitivity | Mapping[str, Any]) -> Any:
    if isinstance(sens, LayerSensitivity):
        return types.SimpleNamespace(layers=sens.layers, sparsities=sens.sparsities,
                                     values=np.asarray(sens.values), drops=sens.drops,
                                     baseline=sens.baseline,
                                     structure=type(sens.structure).__name__)
    values = np.asarray(sens["values"], np.float64)
    return types.SimpleNamespace(layers=tuple(sens["layers"]), sparsities=tuple(sens["sparsities"]),
                                 values=values, drops=np.asarray(sens["drops"], np.float64),
                                 baseline=float(sens["baseline"]),
                                 structure=str(sens.get("structure", "")).split("(")[0])


def _axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def _legacy(args: tuple, kwargs: dict, name: str) -> tuple[Any, Any]:
    """``(path, sens)`` of the deprecated call ``plot_...(path, sens)``, else ``(None, sens)``."""
    if len(args) == 2:
        warnings.warn(f"{name}(path, sens) is deprecated: {name}(sens) returns the Figure",
                      DeprecationWarning, stacklevel=3)
        return args[0], args[1]
    return None, args[0]


def _save(path: Any, fig: Any) -> Any:
    import pathlib

    import matplotlib.pyplot as plt

    path = pathlib.Path(os.fspath(path))
    fig.savefig(path, dpi=200, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_sensitivity_curves(*args: Any, ax: Any = None, ylabel: str = "metric",
                            title: str = "") -> Any:
    """``plot_sensitivity_curves(sens)``: the metric vs one layer's sparsity, one curve per
    layer (each its own marker and line style), the unpruned baseline dashed.

    Args:
      sens: a :class:`LayerSensitivity` or its ``to_dict()``.
      ax: draw on this Axes (default: a new figure).
      ylabel, title: labels.

    Returns:
      The matplotlib ``Figure``.
    """
    path, sens = _legacy(args, {}, "plot_sensitivity_curves")
    t = _table(sens)
    fig, ax = _axes(ax, (8.0, 4.5))
    for i, (name, row) in enumerate(zip(t.layers, t.values)):
        ax.plot(t.sparsities, row, marker=_MARKERS[i % len(_MARKERS)],
                ls=_LINES[(i // len(_MARKERS)) % len(_LINES)], ms=4, label=name)
    ax.axhline(t.baseline, color="k", ls="--", lw=1, label="unpruned")
    ax.set_xlabel(f"sparsity of the layer ({t.structure} groups)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig if path is None else _save(path, fig)


def plot_sensitivity_heatmap(*args: Any, ax: Any = None, title: str = "") -> Any:
    """``plot_sensitivity_heatmap(sens)``: the drop vs the unpruned metric, layers ×
    sparsities, each cell annotated.

    Args:
      sens: a :class:`LayerSensitivity` or its ``to_dict()``.
      ax: draw on this Axes (default: a new figure).
      title: the title.

    Returns:
      The matplotlib ``Figure``.
    """
    path, sens = _legacy(args, {}, "plot_sensitivity_heatmap")
    t = _table(sens)
    drops = t.drops
    fig, ax = _axes(ax, (max(5, 0.7 * len(t.sparsities) + 2), max(2.5, 0.45 * len(t.layers) + 1.5)))
    im = ax.imshow(drops, aspect="auto", cmap="magma_r")
    ax.set_xticks(range(len(t.sparsities)), [f"{s:g}" for s in t.sparsities])
    ax.set_yticks(range(len(t.layers)), t.layers, fontsize=8)
    ax.set_xlabel("sparsity of the layer")
    dark = np.nanmin(drops) + 0.5 * (np.nanmax(drops) - np.nanmin(drops))
    for i in range(drops.shape[0]):
        for j in range(drops.shape[1]):
            color = "white" if drops[i, j] > dark else "black"
            ax.text(j, i, f"{drops[i, j]:.3g}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, label="drop vs unpruned")
    if title:
        ax.set_title(title)
    return fig if path is None else _save(path, fig)
