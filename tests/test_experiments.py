"""Experiment runner utilities and smoke runs of the experiment scripts."""

import dataclasses
import importlib.util
import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from sparsejax.runner import aggregate, environment, markdown_table, parse_config, write_report

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script(name):
    path = ROOT / f"{name}.py" if name.startswith("benchmarks/") else ROOT / "experiments" / f"{name}.py"
    name = name.replace("/", "_")
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"experiments_{name}"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass(frozen=True)
class _Cfg:
    """A test config."""

    name: str = "x"
    seeds: int = 3
    rate: float = 0.5
    sizes: tuple[float, ...] = (2.0, 4.0)
    flag: bool = True
    data_dir: str | None = None


def test_parse_config_types_and_defaults():
    assert parse_config(_Cfg, []) == _Cfg()
    cfg = parse_config(
        _Cfg, ["--seeds", "5", "--sizes", "8", "16", "--flag", "false", "--data-dir", "d"]
    )
    assert cfg == _Cfg(seeds=5, sizes=(8.0, 16.0), flag=False, data_dir="d")
    assert parse_config(_Cfg, ["--data-dir", "none"]).data_dir is None
    with pytest.raises(SystemExit):
        parse_config(_Cfg, ["--seeds", "many"])
    with pytest.raises(SystemExit):
        parse_config(_Cfg, ["--flag", "maybe"])


def test_aggregate_mean_std_and_table():
    rows = [
        {"m": "a", "c": 2, "acc": 0.5},
        {"m": "a", "c": 2, "acc": 0.7},
        {"m": "b", "c": 2, "acc": 0.9},
    ]
    agg = aggregate(rows, ("m", "c"), ("acc",))
    assert [(a["m"], a["n"]) for a in agg] == [("a", 2), ("b", 1)]
    np.testing.assert_allclose([agg[0]["acc_mean"], agg[0]["acc_std"]], [0.6, 0.1])
    table = markdown_table(agg, [("method", "{m}"), ("acc", "{acc_mean:.1%} ± {acc_std:.1%}")])
    assert table.splitlines() == [
        "| method | acc |",
        "|---|---|",
        "| a | 60.0% ± 10.0% |",
        "| b | 90.0% ± 0.0% |",
    ]


def test_write_report_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=x")
    env = environment()
    assert env["xla_flags"] == "--xla_dump_to=x" and env["backend"] == jax.default_backend()
    assert env["device_count"] == jax.device_count() and env["cpu_count"] >= 1
    assert "load_average_1m" not in env
    load = environment(2.5)["load_average_1m"]
    assert load["start"] == 2.5 and load["end"] >= 0
    path = write_report(tmp_path / "sub" / "bench_t.json",
                        {"rows": [{"ms": np.float32(1.5), "nan": float("nan")}]}, "# t\n\n| a |\n")
    assert path == tmp_path / "sub" / "bench_t.json"
    assert json.loads(path.read_text()) == {"rows": [{"ms": 1.5, "nan": None}]}
    assert (tmp_path / "sub" / "bench_t.md").read_text() == "# t\n\n| a |\n"


def test_weight_sparsity_for_compression_counts_all_params():
    sb = _script("shrinkbench")
    # 1,000 params of which 900 prunable: 10x compression keeps 100 entries in total,
    # i.e. prunes 900 -> every prunable weight.
    assert sb.weight_sparsity_for(10, 1000, 900) == pytest.approx(1.0)
    assert sb.weight_sparsity_for(2, 1000, 900) == pytest.approx(500 / 900)
    with pytest.raises(ValueError, match="compression 20 is unreachable"):
        sb.weight_sparsity_for(20, 1000, 900)


@pytest.mark.smoke
def test_shrinkbench_smoke(tmp_path):
    sb = _script("shrinkbench")
    out = tmp_path / "sb"
    methods = ("global_magnitude", "global_obd", "random", "gradual_magnitude")
    res = sb.main(
        ["--smoke", "true", "--out", str(out), "--progress", "false", "--methods", *methods]
    )
    rows = res["rows"]
    assert len(rows) == len(methods) * 2 * 2  # methods x compressions (2, 8) x seeds (2)
    for row in rows:
        # the measured whole-model compression hits the target (exact counts, 0.5% slack
        # only for rounding on 50,610 parameters)
        assert row["compression_measured"] == pytest.approx(row["compression"], rel=5e-3)
        assert row["theoretical_speedup"] >= row["compression"] * 0.95
        assert 0.0 <= row["accuracy"] <= 1.0
    for name in ("config.json", "results.json", "results.md", "tradeoff.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["dataset"] == "digits"
    assert "| global_magnitude | 8× |" in (out / "results.md").read_text()


@pytest.mark.smoke
def test_dense_baselines_smoke_on_real_mnist(tmp_path, mnist_dir):
    db = _script("dense_baselines")
    rows = db.main(
        ["--smoke", "true", "--pairs", "mnist10k:lenet300100", "--data-dir", str(mnist_dir),
         "--out", str(tmp_path), "--progress", "false"]
    )
    (row,) = rows
    assert row["dataset"] == "mnist10k" and row["params"] == 266_610
    assert row["accuracy_mean"] > 0.5  # 20 Adam steps on real digits already beat chance by far


@pytest.mark.slow
def test_shrinkbench_full_digits_reproduces_committed_shape(tmp_path):
    """The full main job: global magnitude keeps dense accuracy to 8x and beats random at 16x."""
    sb = _script("shrinkbench")
    res = sb.main(["--out", str(tmp_path), "--progress", "false"])
    agg = {(a["method"], a["compression"]): a["accuracy_mean"] for a in res["aggregate"]}
    dense = float(np.mean(res["dense"]["accuracy"]))
    assert agg[("global_magnitude", 8.0)] > dense - 0.02
    assert agg[("global_magnitude", 16.0)] > agg[("random", 16.0)] + 0.1


def test_shrink_benchmark_traffic_bound_closed_form():
    # benchmarks/shrink_speedup.py: activation bytes of a conv-by-conv ResNet-56
    # forward, summed by hand per block (stem 32·32·(3+16); 5 tensors per block, stride-2
    # blocks read their input at full resolution and the shortcut strided).
    from flax import nnx

    import sparsejax as sj
    from sparsejax.models import CifarResNet
    from sparsejax.shrink import shrink

    bench = _script("benchmarks/shrink_speedup")
    dense = CifarResNet(56, (32, 32, 3), 10, rngs=nnx.Rngs(0))
    assert bench.conv_traffic(dense, 1, 4)["bytes"] == 4 * 1_315_840
    params = nnx.state(dense, nnx.Param)
    mask = sj.prune(sj.scores.magnitude(params), 0.5, structure=sj.Neurons(),
                    prunable=bench.PRUNABLE, reduction="l1")
    small = shrink(dense, mask)
    # conv1 outputs 8 / 16 / 32 channels: 1,057,792 elements per image
    assert bench.conv_traffic(small, 256, 2)["bytes"] == 2 * 256 * 1_057_792


def test_gating_latency_benchmark_smoke_and_cost_model(tmp_path):
    # benchmarks/gating_latency.py at CI size: MNIST-1D CNN of 8 channels, density
    # 0.5 -> k = floor(0.5·8 + ½) = 4 per layer. MACs per example by hand (lengths 19/10/5):
    # dense 19·5·8 + 10·3·8·8 + 5·3·8·8 + 5·8·10 = 4,040; gathered 19·5·4 + 10·3·4·4 +
    # 5·3·4·4 + 5·4·10 = 1,300 plus predictors 1·8 + 4·8 + 4·8 = 72; masked 4,040 + 8 + 64 + 64.
    bench = _script("benchmarks/gating_latency")
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


def test_jit_flat_state_calls_fn_on_the_rebuilt_state():
    import jax.numpy as jnp

    from sparsejax.runner import jit_flat_state

    state = {"w": jnp.arange(6.0).reshape(2, 3), "b": {"c": jnp.asarray([1.0, 2.0, 3.0])}}
    traces = []

    def fn(s, x, scale):
        traces.append(1)  # once per trace
        return (x @ s["w"].T) * scale + s["b"]["c"].sum()

    g, leaves = jit_flat_state(fn, state)
    assert isinstance(leaves, list) and len(leaves) == 2
    x = jnp.asarray([[1.0, 0.0, 2.0]])
    np.testing.assert_allclose(g(leaves, x, 2.0), [[14.0, 32.0]])  # (4, 13)·2 + 6
    g(leaves, x + 1.0, 3.0)
    assert len(traces) == 1
