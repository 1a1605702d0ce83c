"""Frozen-dataclass experiment configs with a generated command-line interface.

An experiment script declares one frozen dataclass; :func:`parse_config`
builds an ``argparse`` parser from its fields (``--field-name value``), so
every default lives in one place and every run records its full config.

Example:
  >>> @dataclasses.dataclass(frozen=True)
  ... class Config:
  ...     dataset: str = "digits"
  ...     seeds: int = 3
  ...     compressions: tuple[float, ...] = (2, 4, 8)
  >>> parse_config(Config, ["--seeds", "1", "--compressions", "2", "32"])
  Config(dataset='digits', seeds=1, compressions=(2.0, 32.0))
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

C = TypeVar("C")

__all__ = ["config_to_dict", "parse_config"]


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def parse_config(cls: type[C], argv: Sequence[str] | None = None, description: str = "") -> C:
    """Parse command-line arguments into the frozen dataclass ``cls``.

    Supported field types: ``int``, ``float``, ``str``, ``bool`` (``--flag true``),
    ``tuple[T, ...]`` (space-separated values) and ``X | None`` of those
    (``none`` on the command line gives ``None``).

    Raises:
      TypeError: if ``cls`` is not a dataclass or a field type is unsupported.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"parse_config needs a dataclass type, got {cls!r}")
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(
        description=description or (cls.__doc__ or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(cls):
        tp, optional = _unwrap_optional(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        default = (
            field.default
            if field.default is not dataclasses.MISSING
            else field.default_factory()  # type: ignore[misc]
        )
        kwargs: dict[str, Any] = {"dest": field.name, "default": default}
        origin = typing.get_origin(tp)
        if origin is tuple:
            (elem, *_rest) = typing.get_args(tp)
            kwargs.update(nargs="+", type=_bool if elem is bool else elem)
        elif tp is bool:
            kwargs.update(type=_bool)
        elif tp in (int, float, str):
            kwargs.update(type=tp)
        else:
            raise TypeError(f"config field {field.name!r} has unsupported type {tp!r}")
        if optional:
            base = kwargs["type"]
            kwargs["type"] = lambda text, base=base: None if text.lower() == "none" else base(text)
        parser.add_argument(flag, **kwargs)
    ns = vars(parser.parse_args(argv))
    for field in dataclasses.fields(cls):
        if isinstance(ns[field.name], list):
            ns[field.name] = tuple(ns[field.name])
    return cls(**ns)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
