"""Tests of sparsejax.runner's configs: parse_config and config_to_dict."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Literal

import pytest

from sparsejax.runner import config_to_dict, parse_config


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


_CALLS = []


def _backend() -> str:
    _CALLS.append(1)
    return "fake-backend"


@dataclasses.dataclass(frozen=True)
class _BenchCfg:
    """A benchmark-like config."""

    profile: bool = False
    no_bcsr: bool = False
    loop: Literal["python", "device"] = "python"
    models: tuple[Literal["mlp", "gpt"], ...] = ("mlp",)
    variants: tuple[str, ...] | None = None
    deadline_s: float | None = None
    out: pathlib.Path | None = None
    out_dir: pathlib.Path = pathlib.Path("results")
    tag: str = dataclasses.field(default_factory=_backend,
                                 metadata={"help": "output name suffix, here a help text"})


def test_parse_config_bare_bool_flags_as_in_recorded_benchmark_commands():
    # `--profile --no-bcsr` (no value) as store_true flags took them; `--x true` still works
    cfg = parse_config(_BenchCfg, ["--profile", "--no-bcsr", "--loop", "device"])
    assert (cfg.profile, cfg.no_bcsr, cfg.loop) == (True, True, "device")
    assert parse_config(_BenchCfg, ["--profile", "false"]).profile is False
    assert parse_config(_BenchCfg, ["--profile", "true", "--no-bcsr"]).no_bcsr is True
    assert parse_config(_BenchCfg, []).profile is False


def test_parse_config_literal_choices():
    assert parse_config(_BenchCfg, ["--models", "gpt", "mlp"]).models == ("gpt", "mlp")
    with pytest.raises(SystemExit):
        parse_config(_BenchCfg, ["--loop", "gpu"])
    with pytest.raises(SystemExit):
        parse_config(_BenchCfg, ["--models", "mlp", "resnet"])


def test_parse_config_optional_lists_paths_and_factories():
    _CALLS.clear()
    cfg = parse_config(_BenchCfg, ["--variants", "dense", "every100", "--out", "a/b.json",
                                   "--out-dir", "/tmp/r", "--deadline-s", "240"])
    assert cfg.variants == ("dense", "every100")
    assert cfg.out == pathlib.Path("a/b.json") and isinstance(cfg.out, pathlib.Path)
    assert cfg.out_dir == pathlib.Path("/tmp/r") and cfg.deadline_s == 240.0
    assert cfg.tag == "fake-backend" and len(_CALLS) == 1  # the factory, called once
    assert parse_config(_BenchCfg, ["--variants", "none"]).variants is None
    assert parse_config(_BenchCfg, ["--out", "none"]).out is None
    assert parse_config(_BenchCfg, []).variants is None
    with pytest.raises(SystemExit):
        parse_config(_BenchCfg, ["--variants", "dense", "none"])


def test_parse_config_help_texts(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(_BenchCfg, ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "A benchmark-like config." in text
    assert "output name suffix, here a help text" in text
    assert "{python,device}" in text


def test_parse_config_rejects_unsupported_types():
    @dataclasses.dataclass(frozen=True)
    class Bad:
        table: dict = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match="config field 'table' has unsupported type"):
        parse_config(Bad, [])

    @dataclasses.dataclass(frozen=True)
    class Mixed:
        mode: Literal["a", 1] = "a"

    with pytest.raises(TypeError, match="a Literal needs values of one type"):
        parse_config(Mixed, [])
    with pytest.raises(TypeError, match="needs a dataclass type"):
        parse_config(dict, [])


def test_config_to_dict_is_json_ready():
    cfg = parse_config(_BenchCfg, ["--out", "a/b.json", "--models", "gpt"])
    d = config_to_dict(cfg)
    assert d["out"] == "a/b.json" and d["out_dir"] == "results"
    assert d["models"] == ["gpt"] and d["variants"] is None and d["tag"] == "fake-backend"
    assert config_to_dict(_Cfg()) == {"name": "x", "seeds": 3, "rate": 0.5, "sizes": [2.0, 4.0],
                                      "flag": True, "data_dir": None}
