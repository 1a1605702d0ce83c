"""Matplotlib figures every pruning paper needs: tradeoff curves and per-layer sparsity bars.

The helpers draw on a given ``ax`` (or a new figure) and return the ``Figure``; they never
choose or change the backend, so in Jupyter the figure shows inline and a script saves it
with :func:`sparsejax.runner.save_figure` (PNG and PDF). Every series gets its own marker
and line style, error bars are named in the legend, and the y-range follows the data:
points far below the rest are drawn as arrows at the bottom edge with their value.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["MARKERS", "layer_sparsity_bars", "tradeoff_curve"]

#: Marker cycle: every series of a figure gets its own (then line styles change too).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_LINES = ("-", "--", "-.", ":")
_HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")


def _new_axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def styles() -> Any:
    """An endless iterator of ``(marker, linestyle)`` pairs, all distinct for 48 series."""
    return ((m, ls) for ls, m in itertools.cycle(itertools.product(_LINES, MARKERS)))


def _legacy_save(path: Any, fig: Any) -> Any:
    from sparsejax.runner._output import as_path, save_figure

    warnings.warn("passing a path to a plot helper is deprecated: it returns the Figure; save "
                  "it with sparsejax.runner.save_figure", DeprecationWarning, stacklevel=3)
    save_figure(fig, path, formats=("png",))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return as_path(path)


def _focus_ylim(values: np.ndarray, spreads: np.ndarray, baseline: float | None,
                focus: float | None) -> tuple[float, float, float | None]:
    """``(low, high, clip)``: the y-range, and the level below which points are clipped."""
    finite = np.isfinite(values)
    low = float(np.min((values - spreads)[finite])) if finite.any() else 0.0
    high = float(np.max((values + spreads)[finite])) if finite.any() else 1.0
    if baseline is not None:
        low, high = min(low, baseline), max(high, baseline)
    clip = None
    if focus is not None:
        top = high if baseline is None else max(high, baseline)
        if top - low > focus:
            # the informative band: `focus` below the best point (or the baseline)
            clip = top - focus
            low = clip
    pad = 0.06 * max(high - low, 1e-6)
    return low - pad, high + pad, clip


def tradeoff_curve(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]] | Any,
    legacy_curves: Mapping[str, Any] | None = None,
    *,
    ax: Any = None,
    xlabel: str = "compression ratio",
    ylabel: str = "test accuracy",
    title: str = "",
    logx: bool = True,
    baseline: float | None = None,
    baseline_label: str = "dense",
    error_label: str | None = "±1 std",
    focus: float | None = 0.25,
) -> Any:
    """One line per method of a metric vs compression (or sparsity, FLOPs), with error bars.

    Args:
      curves: ``{method: (x, y_mean, y_spread)}``; the spread is drawn as error bars.
      legacy_curves: deprecated call form ``tradeoff_curve(path, curves)`` (saves a PNG
        and returns the path).
      ax: draw on this matplotlib Axes (default: a new figure).
      xlabel, ylabel, title: labels.
      logx: log₂ x-axis with the x values as ticks.
      baseline: a horizontal reference (e.g. the dense accuracy), dashed.
      baseline_label: its legend entry.
      error_label: what the error bars are (e.g. ``"±1 std over 3 seeds"``), shown as the
        legend's title; ``None`` when the spreads are zero or not errors.
      focus: the y-range spans at most this much below the best point or the baseline;
        points under it are drawn as arrows at the bottom edge, labelled with their value
        (``None``: the full range).

    Returns:
      The matplotlib ``Figure``.

    Example:
      >>> fig = tradeoff_curve({"magnitude": ([2, 4, 8], [0.98, 0.97, 0.95], [0.0, 0.01, 0.01])},
      ...                      baseline=0.98, error_label="±1 std over 3 seeds")
      >>> save_figure(fig, "runs/tradeoff")     # doctest: +SKIP
    """
    path = None
    if legacy_curves is not None:
        path, curves = curves, legacy_curves
    fig, ax = _new_axes(ax, (8.5, 4.8))
    values = np.concatenate([np.asarray(y, np.float64) for _, y, _ in curves.values()] or
                            [np.zeros(0)])
    spreads = np.concatenate([np.nan_to_num(np.asarray(s, np.float64)) for _, _, s in
                              curves.values()] or [np.zeros(0)])
    low, high, clip = _focus_ylim(values, spreads, baseline, focus)
    clipped: dict[float, int] = {}
    for (name, (x, y, s)), (marker, ls) in zip(curves.items(), styles()):
        x, y, s = (np.asarray(v, np.float64) for v in (x, y, s))
        line = ax.errorbar(x, y, yerr=s, marker=marker, ls=ls, ms=5, capsize=3, label=name)
        if clip is not None:
            below = y < clip
            color = line[0].get_color()
            for xi, yi in zip(x[below], y[below]):
                k = clipped[float(xi)] = clipped.get(float(xi), -1) + 1
                ax.annotate(f"{yi:.2f}", (xi, low), xytext=(0, 14 + 9 * k),
                            textcoords="offset points", ha="center", fontsize=7, color=color,
                            arrowprops={"arrowstyle": "->", "color": color, "lw": 0.8})
    if baseline is not None:
        ax.axhline(baseline, color="k", ls="--", lw=1, label=baseline_label)
    if logx:
        ax.set_xscale("log", base=2)
        xs = sorted({float(v) for x, _, _ in curves.values() for v in x})
        if xs:
            ax.set_xticks(xs, [f"{v:.3g}" for v in xs])
            ax.minorticks_off()
    ax.set_ylim(low, high)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    notes = [f"error bars: {error_label}"] if error_label else []
    if clipped:
        notes.append("↓ value: a point below the axis")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              title="\n".join(notes) or None, title_fontsize=8, alignment="left")
    if path is not None:
        return _legacy_save(path, fig)
    return fig


def layer_sparsity_bars(
    layers: Sequence[str] | Any,
    sparsities: Mapping[str, Sequence[float]] | Sequence[str],
    legacy: Mapping[str, Sequence[float]] | None = None,
    *,
    ax: Any = None,
    title: str = "",
) -> Any:
    """Grouped bars: the sparsity of each layer for each method, the legend beside the axes.

    Args:
      layers: the layer names (x axis).
      sparsities: ``{method: [sparsity of each layer]}`` in ``[0, 1]``.
      legacy: deprecated call form ``layer_sparsity_bars(path, layers, sparsities)``.
      ax: draw on this Axes (default: a new figure).
      title: the title.

    Returns:
      The matplotlib ``Figure``.
    """
    path = None
    if legacy is not None:
        path, layers, sparsities = layers, sparsities, legacy
    n = len(sparsities)
    x = np.arange(len(layers))
    width = 0.8 / max(n, 1)
    fig, ax = _new_axes(ax, (max(6.0, 0.5 * len(layers) * max(n, 1) * 0.4 + 4), 4.2))
    for i, (name, vals) in enumerate(sparsities.items()):
        ax.bar(x + (i - (n - 1) / 2) * width, vals, width, label=name,
               hatch=_HATCHES[(i // 10) % len(_HATCHES)], edgecolor="white", linewidth=0.3)
    ax.set_xticks(x, layers, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("sparsity of the layer")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(axis="y", alpha=0.3)
    if path is not None:
        return _legacy_save(os.fspath(path), fig)
    return fig
