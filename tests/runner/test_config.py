"""Tests of sparsejax.runner's configs: parse_config (tyro), given_fields, ConfigError."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Literal

import pytest

from sparsejax.runner import (
    ConfigError,
    config_to_dict,
    given_fields,
    parse_config,
    with_defaults,
)
from sparsejax.runner._config import check_fraction, field_docs


@dataclasses.dataclass(frozen=True)
class _Cfg:
    """A test config.

    Second paragraph of the description."""

    name: str = "x"
    """The name."""
    seeds: int = 3
    """How many seeds,
    on two lines."""
    rate: float = 0.5
    """A rate."""
    sizes: tuple[float, ...] = (2.0, 4.0)
    """Some sizes."""
    flag: bool = True
    """A flag."""
    data_dir: str | None = None
    """A folder."""


def test_parse_config_types_and_defaults():
    assert parse_config(_Cfg, []) == _Cfg()
    cfg = parse_config(
        _Cfg, ["--seeds", "5", "--sizes", "8", "16", "--no-flag", "--data-dir", "d"]
    )
    assert cfg == _Cfg(seeds=5, sizes=(8.0, 16.0), flag=False, data_dir="d")
    assert type(cfg) is _Cfg and isinstance(cfg.sizes, tuple)
    assert parse_config(_Cfg, ["--data-dir", "None"]).data_dir is None
    assert parse_config(_Cfg, ["--sizes"]).sizes == ()
    for bad in (["--seeds", "many"], ["--flag", "maybe"], ["--se", "2"], ["--unknown", "1"]):
        with pytest.raises(SystemExit) as info:
            parse_config(_Cfg, bad)
        assert info.value.code == 2


def test_older_command_forms_still_parse():
    # `--flag true|false` and `none` of recorded commands
    assert parse_config(_Cfg, ["--flag", "false"]).flag is False
    assert parse_config(_Cfg, ["--flag=no"]).flag is False
    assert parse_config(_Cfg, ["--flag", "true", "--seeds", "2"]) == _Cfg(seeds=2)
    assert parse_config(_Cfg, ["--data-dir", "none"]).data_dir is None
    assert parse_config(_Cfg, ["--flag"]).flag is True
    assert parse_config(_Cfg, ["--sizes", "", "--seeds", "1"]).sizes == ()


def test_help_shows_every_field_with_its_docstring_default_and_choices(capsys):
    @dataclasses.dataclass(frozen=True)
    class Bench:
        """A benchmark-like config."""

        loop: Literal["python", "device"] = "python"
        """Where the loop runs."""
        tag: str = dataclasses.field(default="cpu", metadata={"help": "output name suffix"})
        methods: tuple[str, ...] = ("a",)
        """The methods."""

    with pytest.raises(SystemExit) as info:
        parse_config(Bench, ["--help"], prog="bench", choices={"methods": ("a", "b", "plug")})
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "usage: bench" in text and "A benchmark-like config." in text
    assert "Where the loop runs. (default: python)" in text and "{python,device}" in text
    assert "output name suffix (default: cpu)" in text
    assert "{a,b,plug}" in text and "The methods. (default: a)" in text
    assert field_docs(_Cfg)["seeds"] == "How many seeds, on two lines."
    assert parse_config(Bench, ["--methods", "plug"], choices={"methods": ("a", "plug")}
                        ).methods == ("plug",)
    with pytest.raises(SystemExit):
        parse_config(Bench, ["--methods", "zzz"], choices={"methods": ("a", "plug")})


def test_defaults_can_be_replaced_and_given_fields_are_known():
    assert parse_config(_Cfg, [], defaults={"name": "runs/x"}).name == "runs/x"
    argv = ["--seeds", "4", "--no-flag", "--rate=0.1", "--sizes", "1", "2"]
    assert given_fields(_Cfg, argv) == {"seeds", "flag", "rate", "sizes"}
    cfg = parse_config(_Cfg, argv)
    # a preset (or --smoke) changes only the fields not given
    filled = with_defaults(cfg, {"seeds": 1, "name": "smoke", "flag": True}, given_fields(
        _Cfg, argv))
    assert filled == dataclasses.replace(cfg, name="smoke")


def test_config_error_names_the_flag_and_the_value():
    err = ConfigError("sparsities", (0.5, 2.0), "2 is outside [0, 1)")
    assert str(err) == "--sparsities 0.5 2: 2 is outside [0, 1)"
    assert (err.field, err.value) == ("sparsities", (0.5, 2.0)) and isinstance(err, ValueError)
    with pytest.raises(ConfigError, match=r"^--s 0.5 1: 1 is outside \[0, 1\)$"):
        check_fraction("s", (0.5, 1.0), high_open=True)
    check_fraction("s", (0.0, 1.0))


def test_parse_config_needs_a_dataclass():
    with pytest.raises(TypeError, match="needs a dataclass type"):
        parse_config(dict, [])


def test_config_to_dict_is_json_ready():
    @dataclasses.dataclass(frozen=True)
    class P:
        out: pathlib.Path = pathlib.Path("a/b.json")
        models: tuple[str, ...] = ("gpt",)

    assert config_to_dict(P()) == {"out": "a/b.json", "models": ["gpt"]}
    assert config_to_dict(_Cfg()) == {"name": "x", "seeds": 3, "rate": 0.5, "sizes": [2.0, 4.0],
                                      "flag": True, "data_dir": None}
