"""The figure helpers return Figures, draw on a given Axes and never touch the backend."""

import matplotlib
import numpy as np
import pytest
from sensitivity_table import two_layer_table

from sparsejax.runner import layer_sparsity_bars, save_figure, tradeoff_curve
from sparsejax.runner._plots import MARKERS
from sparsejax.sensitivity import plot_sensitivity_curves, plot_sensitivity_heatmap

CURVES = {f"method{i}": ([2, 4, 8], [0.98 - 0.01 * i, 0.97 - 0.01 * i, 0.9 - 0.3 * (i % 2)],
                         [0.002, 0.003, 0.01]) for i in range(14)}


def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_helpers_leave_the_backend_alone():
    """A user's backend (Jupyter's inline one, say) is never switched to Agg."""
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a backend no helper would pick
    try:
        sens = two_layer_table()
        figs = [tradeoff_curve(CURVES), layer_sparsity_bars(["a", "b"], {"m": [0.1, 0.9]}),
                plot_sensitivity_curves(sens), plot_sensitivity_heatmap(sens),
                plot_sensitivity_curves(sens.to_dict())]
        assert matplotlib.get_backend() == "svg"
        for fig in figs:
            assert isinstance(fig, matplotlib.figure.Figure)
            _close(fig)
    finally:
        matplotlib.use(before)


def test_tradeoff_curve_markers_labels_and_range():
    fig = tradeoff_curve(CURVES, baseline=0.985, error_label="±1 std over 3 seeds")
    ax = fig.axes[0]
    lines = [c[0] for c in ax.containers]
    styles = {(line.get_marker(), line.get_linestyle()) for line in lines}
    assert len(lines) == 14 and len(styles) == 14  # every series its own marker / line style
    assert {line.get_marker() for line in lines[:12]} == set(MARKERS)
    legend = ax.get_legend()
    assert "error bars: ±1 std over 3 seeds" in legend.get_title().get_text()
    assert "↓ value" in legend.get_title().get_text()  # points at 0.6 are below the axis
    low, high = ax.get_ylim()
    # the informative band: at most 0.25 below the best point, not down to chance level
    assert 0.985 - 0.25 - 0.02 < low < 0.75 and 0.985 < high < 1.01
    arrows = [t for t in ax.texts if t.get_text() in ("0.60", "0.59", "0.58")]
    assert arrows and all(t.xy[1] == low for t in arrows)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "8"]
    _close(fig)
    full = tradeoff_curve(CURVES, focus=None)
    assert full.axes[0].get_ylim()[0] < 0.6
    _close(full)


def test_helpers_draw_on_a_given_axes_and_save_png_and_pdf(tmp_path):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2)
    assert tradeoff_curve({"m": ([2, 4], [0.9, 0.8], [0.0, 0.0])}, ax=a) is fig
    assert layer_sparsity_bars(["l1", "l2"], {"m": [0.5, 0.7], "n": [0.2, 0.4]}, ax=b) is fig
    legend = b.get_legend()
    # the legend sits beside the axes, not over the bars
    assert legend._loc == 2 and legend.get_bbox_to_anchor().x0 > b.get_window_extent().x1 - 1
    written = save_figure(fig, tmp_path / "panel.png")
    assert [p.name for p in written] == ["panel.png", "panel.pdf"]
    assert (tmp_path / "panel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "panel.pdf").read_bytes()[:5] == b"%PDF-"
    plt.close(fig)


def test_sensitivity_figures_from_a_results_dict():
    sens = two_layer_table()
    fig = plot_sensitivity_curves(sens.to_dict(), ylabel="acc", title="t")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == [*sens.layers, "unpruned"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), sens.values[0])
    assert len({line.get_marker() for line in ax.lines[:-1]}) == len(sens.layers)
    _close(fig)
    heat = plot_sensitivity_heatmap(sens)
    texts = [t.get_text() for t in heat.axes[0].texts]
    assert texts == [f"{d:.3g}" for d in sens.drops.reshape(-1)]
    _close(heat)


def test_the_old_path_form_still_saves_a_png(tmp_path):
    with pytest.warns(DeprecationWarning, match="returns the Figure"):
        path = tradeoff_curve(tmp_path / "t.png", {"m": ([2], [0.9], [0.0])})
    assert path.read_bytes()[:4] == b"\x89PNG"
