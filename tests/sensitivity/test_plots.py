"""Sensitivity figures are written as PNG files."""



from sensitivity_table import two_layer_table as _table

from sparsejax.sensitivity import (
    plot_sensitivity_curves,
    plot_sensitivity_heatmap,
)


def test_plots_write_pngs(tmp_path):
    sens = _table()
    for fn, name in ((plot_sensitivity_curves, "c.png"), (plot_sensitivity_heatmap, "h.png")):
        out = fn(tmp_path / name, sens, title="t")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
