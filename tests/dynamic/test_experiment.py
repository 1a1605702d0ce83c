"""The dynamic gating study (``sparsejax dynamic``) at smoke size."""

import pytest

from sparsejax.runner.studies import dynamic as module


@pytest.mark.smoke
def test_dynamic_gating_smoke(tmp_path):
    res = module.main(["--smoke", "--out", str(tmp_path), "--no-progress"])
    assert res["dense_macs"] == 31_750
    static = {r["density"]: r["macs"] for r in res["rows"] if r["method"] == "static_l1"}
    # exactly k = 6, 13, 19 filters kept per layer: closed-form MACs, no predictor
    assert static == {0.25: 2_490.0, 0.5: 9_490.0, 0.75: 19_000.0}
    fbs = {r["density"]: r for r in res["rows"] if r["method"] == "fbs"}
    assert set(fbs) == {0.25, 0.5, 0.75, 1.0}
    assert fbs[0.5]["active_conv2"] == pytest.approx(13 / 25)
    # one gated model per density, trained at that density: exactly k channels active
    fixed = {r["density"]: r for r in res["rows"] if r["method"] == "fbs_fixed"}
    assert set(fixed) == {0.25, 0.5, 0.75}
    assert fixed[0.5]["active_conv2"] == pytest.approx(13 / 25)
    assert fixed[0.5]["macs"] == pytest.approx(fbs[0.5]["macs"])
    for r in res["rows"]:
        assert 0.0 <= r["accuracy"] <= 1.0
    assert [r["threshold"] for r in res["adaptive"]] == [0.0, 0.9, 1.0]
    assert res["adaptive"][0]["macs"] == pytest.approx(fbs[0.25]["macs"])
    for name in ("config.json", "results.json", "results.md", "tradeoff.png", "tradeoff.pdf"):
        assert (tmp_path / name).stat().st_size > 0
    assert "Command: `sparsejax dynamic --smoke --out" in (tmp_path / "results.md").read_text()
