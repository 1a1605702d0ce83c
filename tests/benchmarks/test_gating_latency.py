"""Smoke test of benchmarks/gating_latency.py at CI size, with its MACs cost model by hand."""

import json

import pytest
from script_loader import load_script


def test_gating_latency_benchmark_smoke_and_cost_model(tmp_path):
    # benchmarks/gating_latency.py at CI size: MNIST-1D CNN of 8 channels, density
    # 0.5 -> k = floor(0.5·8 + ½) = 4 per layer. MACs per example by hand (lengths 19/10/5):
    # dense 19·5·8 + 10·3·8·8 + 5·3·8·8 + 5·8·10 = 4,040; gathered 19·5·4 + 10·3·4·4 +
    # 5·3·4·4 + 5·4·10 = 1,300 plus predictors 1·8 + 4·8 + 4·8 = 72; masked 4,040 + 8 + 64 + 64.
    bench = load_script("benchmarks/gating_latency.py")
    out = tmp_path / "gl.json"
    rows = bench.main(["--models", "mnist1d_cnn", "--widths", "8", "--batch-sizes", "1",
                       "--densities", "0.5", "--repeats", "1", "--iters", "2",
                       "--out", str(out)])
    assert [(r["model"], r["path"], r["ks"]) for r in rows] == [
        ("mnist1d_cnn C=8", "dense", ""), ("mnist1d_cnn C=8", "masked", "4/4/4"),
        ("mnist1d_cnn C=8", "gathered", "4/4/4")]
    assert rows[1]["rel_macs"] == pytest.approx(4176 / 4040, rel=1e-12)
    assert rows[2]["rel_macs"] == pytest.approx(1372 / 4040, rel=1e-12)
    assert all(r["latency_s"] > 0 for r in rows)
    assert json.loads(out.read_text())["rows"][2]["ks"] == "4/4/4"
    assert "| mnist1d_cnn C=8 | 1 | gathered | 0.5 | 4/4/4 | 34.0% |" in out.with_suffix(".md").read_text()
