"""Frozen-dataclass configs with a generated command-line interface.

A study or benchmark script declares one frozen dataclass; :func:`parse_config`
builds an ``argparse`` parser from its fields (``--field-name value``), so
every default lives in one place and every run records its full config
(:func:`config_to_dict`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

C = TypeVar("C")

__all__ = ["config_to_dict", "parse_config"]

_SCALARS = (int, float, str, pathlib.Path)


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


def _scalar(name: str, tp: Any) -> dict[str, Any]:
    """``argparse`` keywords (``type``, maybe ``choices``) of one value of type ``tp``."""
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        kinds = {type(c) for c in choices}
        if len(kinds) != 1 or not kinds <= set(_SCALARS):
            raise TypeError(f"config field {name!r}: a Literal needs values of one type, "
                            f"int, float or str; got {tp!r}")
        return {"type": kinds.pop(), "choices": choices}
    if tp is bool:
        return {"type": _bool}
    if tp in _SCALARS:
        return {"type": tp}
    raise TypeError(f"config field {name!r} has unsupported type {tp!r}")


def parse_config(cls: type[C], argv: Sequence[str] | None = None, description: str = "") -> C:
    """Parse command-line arguments into the frozen dataclass ``cls``.

    Every field ``name`` becomes the flag ``--name`` (underscores as dashes) with
    the field's default. Supported field types:

    * ``int``, ``float``, ``str``, ``pathlib.Path``;
    * ``bool``: ``--flag true`` / ``--flag false``, or ``--flag`` alone for true;
    * ``typing.Literal["a", "b"]``: one of the listed values (argparse ``choices``);
    * ``tuple[T, ...]`` of any of these: space-separated values (``--sizes 8 16``);
    * ``X | None`` of any of the above: ``none`` on the command line gives ``None``.

    A field's ``metadata["help"]`` (``dataclasses.field(metadata={"help": ...})``)
    becomes the flag's help text; ``default_factory`` is called once, here (a
    default such as the JAX backend is taken when the script runs).

    Args:
      cls: a dataclass type (usually frozen).
      argv: the arguments (default ``sys.argv[1:]``).
      description: the ``--help`` description (default: first line of ``cls``'s docstring).

    Returns:
      An instance of ``cls``.

    Raises:
      TypeError: if ``cls`` is not a dataclass or a field type is unsupported.
      SystemExit: on a bad command line (argparse's behaviour).

    Example:
      >>> @dataclasses.dataclass(frozen=True)
      ... class Config:
      ...     dataset: str = "digits"
      ...     seeds: int = 3
      ...     compressions: tuple[float, ...] = (2, 4, 8)
      >>> parse_config(Config, ["--seeds", "1", "--compressions", "2", "32"])
      Config(dataset='digits', seeds=1, compressions=(2.0, 32.0))
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"parse_config needs a dataclass type, got {cls!r}")
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(
        description=description or ((cls.__doc__ or "").strip().splitlines() or [""])[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    optional_lists = set()
    for field in dataclasses.fields(cls):
        tp, optional = _unwrap_optional(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        default = (
            field.default
            if field.default is not dataclasses.MISSING
            else field.default_factory()  # type: ignore[misc]
        )
        kwargs: dict[str, Any] = {"dest": field.name, "default": default}
        if "help" in field.metadata:
            kwargs["help"] = str(field.metadata["help"]).replace("%", "%%")
        if typing.get_origin(tp) is tuple:
            (elem, *_rest) = typing.get_args(tp)
            kwargs.update(nargs="+", **_scalar(field.name, elem))
            if optional:
                optional_lists.add(field.name)
        else:
            kwargs.update(_scalar(field.name, tp))
            if tp is bool:
                kwargs.update(nargs="?", const=True, metavar="{true,false}")
        if optional:
            base = kwargs["type"]
            kwargs["type"] = lambda text, base=base: None if text.lower() == "none" else base(text)
            if "choices" in kwargs:
                kwargs["choices"] = (*kwargs["choices"], None)
        parser.add_argument(flag, **kwargs)
    ns = vars(parser.parse_args(argv))
    for field in dataclasses.fields(cls):
        value = ns[field.name]
        if isinstance(value, list):
            if field.name in optional_lists and None in value:
                if value != [None]:
                    parser.error(f"--{field.name.replace('_', '-')}: 'none' must stand alone")
                value = None
            ns[field.name] = value if value is None else tuple(value)
    return cls(**ns)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass config (tuples become lists, paths strings)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=_path_to_str))


def _path_to_str(obj: Any) -> str:
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    raise TypeError(f"config_to_dict: {type(obj).__name__} is not JSON-serialisable")
