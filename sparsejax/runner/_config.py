"""Frozen-dataclass configs and their command lines (tyro), checked before any work starts.

A study or benchmark declares one frozen dataclass with a docstring under every field;
:func:`parse_config` turns it into a command line (help text, defaults, choices,
``--flag/--no-flag``), :func:`given_fields` tells which flags were given explicitly (so a
preset or ``--smoke`` changes only the others), :class:`ConfigError` names the flag and the
value of a bad setting, and :func:`config_to_dict` records a config as JSON.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import pathlib
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

C = TypeVar("C")

__all__ = [
    "ConfigError",
    "check_fraction",
    "check_positive",
    "config_to_dict",
    "field_docs",
    "flag_name",
    "given_fields",
    "parse_config",
    "with_defaults",
]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def flag_name(field: str) -> str:
    """The command-line flag of a config field: ``data_dir`` -> ``--data-dir``."""
    return "--" + field.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(_shown(v) for v in value) if value else "(empty)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ConfigError(ValueError):
    """A bad configuration value: ``--flag value: reason`` (one line).

    Attributes:
      field: the config field (``"sparsities"``; its flag is ``--sparsities``).
      value: the offending value.
      reason: what is wrong and what is accepted.
    """

    def __init__(self, field: str, value: Any, reason: str):
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{flag_name(field)} {_shown(value)}: {reason}")


def check_fraction(field: str, values: float | Sequence[float], *, low: float = 0.0,
                   high: float = 1.0, high_open: bool = False) -> None:
    """Raise :class:`ConfigError` unless every value is in ``[low, high]`` (or ``[low, high)``)."""
    for v in values if isinstance(values, (tuple, list)) else (values,):
        if not (low <= v < high if high_open else low <= v <= high):
            bracket = ")" if high_open else "]"
            raise ConfigError(field, values, f"{v:g} is outside [{low:g}, {high:g}{bracket}")


def check_positive(config: Any, *fields: str, minimum: float = 1) -> None:
    """Raise :class:`ConfigError` for the first of ``fields`` of ``config`` below ``minimum``
    (``None`` values are skipped; tuples are checked element by element)."""
    for name in fields:
        value = getattr(config, name)
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if v is not None and v < minimum:
                raise ConfigError(name, value, f"must be >= {minimum:g}")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _field_kinds(cls: type) -> dict[str, tuple[Any, bool]]:
    hints = typing.get_type_hints(cls)
    return {f.name: _unwrap_optional(hints[f.name]) for f in dataclasses.fields(cls)}


def _legacy_argv(cls: type, argv: Sequence[str]) -> list[str]:
    """``--flag true|false`` (older recorded commands) as ``--flag`` / ``--no-flag``,
    ``none`` as ``None`` after the flag of an optional field, and ``--list ""`` as an empty
    list."""
    kinds = _field_kinds(cls)
    bools = {flag_name(n): n for n, (tp, _) in kinds.items() if tp is bool}
    optional = {flag_name(n) for n, (_, opt) in kinds.items() if opt}
    lists = {flag_name(n) for n, (tp, _) in kinds.items() if typing.get_origin(tp) is tuple}
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        flag, eq, inline = token.partition("=")
        if flag in bools:
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else None)
            if value is not None and value.lower() in _TRUE + _FALSE:
                out.append(flag if value.lower() in _TRUE else "--no-" + flag[2:])
                i += 1 if eq else 2
                continue
        out.append(token)
        if token in optional and i + 1 < len(argv) and argv[i + 1] == "none":
            out.append("None")
            i += 1
        elif token in lists and i + 1 < len(argv) and argv[i + 1] == "":
            i += 1
        i += 1
    return out


def given_fields(cls: type, argv: Sequence[str]) -> frozenset[str]:
    """The fields of ``cls`` whose flag appears in ``argv`` (``--x``, ``--x=v``, ``--no-x``).

    Abbreviated flags are refused by :func:`parse_config`, so a field is given exactly when
    its full flag is on the command line.
    """
    flags = {}
    for f in dataclasses.fields(cls):
        flags[flag_name(f.name)] = f.name
        flags["--no-" + flag_name(f.name)[2:]] = f.name
    return frozenset(flags[t.split("=")[0]] for t in argv if t.split("=")[0] in flags)


def with_defaults(config: C, values: Mapping[str, Any], given: Iterable[str]) -> C:
    """``config`` with ``values`` for every field not in ``given`` (presets, ``--smoke``)."""
    given = set(given)
    return dataclasses.replace(config, **{k: v for k, v in values.items() if k not in given})


def _tyro() -> Any:
    try:
        import tyro
    except ImportError as err:
        raise ImportError("the command line needs tyro: pip install 'sparsejax[experiments]'"
                          ) from err
    return tyro


def field_docs(cls: type) -> dict[str, str]:
    """The help text of each field of a dataclass: the docstring under it (searched along
    the class's bases) or ``metadata["help"]``, its whitespace collapsed to single spaces."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    out = {}
    for f in dataclasses.fields(cls):
        text = f.metadata.get("help", docs.get(f.name))
        if text is not None:
            out[f.name] = " ".join(str(text).split())
    return out


def _derived(cls: type, choices: Mapping[str, Sequence[Any]], helps: Mapping[str, str],
             defaults: Mapping[str, Any]) -> type:
    """A frozen subclass of ``cls`` whose fields carry run-time choices and help texts
    (choices known only when the program runs, e.g. registered methods, as ``Literal``)."""
    tyro = _tyro()
    helps = {**field_docs(cls), **helps}
    kinds = _field_kinds(cls)
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__module__": cls.__module__, "__doc__": cls.__doc__,
                                 "__qualname__": cls.__qualname__}
    for f in dataclasses.fields(cls):
        help_text = helps.get(f.name)
        if f.name not in choices and help_text is None and f.name not in defaults:
            continue
        tp, optional = kinds[f.name]
        if f.name in choices:
            literal = Literal[tuple(choices[f.name])]  # type: ignore[valid-type]
            tp = tuple[literal, ...] if typing.get_origin(tp) is tuple else literal
            tp = tp | None if optional else tp
        else:
            tp = typing.get_type_hints(cls)[f.name]
        if help_text is not None:
            tp = Annotated[tp, tyro.conf.arg(help=str(help_text))]
        annotations[f.name] = tp
        if f.name in defaults:
            namespace[f.name] = dataclasses.field(default=defaults[f.name])
        elif f.default is not dataclasses.MISSING:
            namespace[f.name] = dataclasses.field(default=f.default)
        else:
            namespace[f.name] = dataclasses.field(default_factory=f.default_factory)
    if not annotations:
        return cls
    namespace["__annotations__"] = annotations
    params = getattr(cls, "__dataclass_params__", None)
    frozen = bool(params and params.frozen)
    return dataclasses.dataclass(frozen=frozen)(type(cls.__name__, (cls,), namespace))


def parse_config(
    cls: type[C],
    argv: Sequence[str] | None = None,
    description: str = "",
    *,
    prog: str | None = None,
    choices: Mapping[str, Sequence[Any]] | None = None,
    helps: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> C:
    """Parse command-line arguments into the (frozen) dataclass ``cls`` with tyro.

    Every field ``name`` becomes the flag ``--name`` (underscores as dashes). Its help text is
    the docstring under the field (or ``metadata["help"]``, or ``helps[name]``), shown with
    its default and, for ``Literal`` types and ``choices``, the accepted values. Booleans are
    ``--flag`` / ``--no-flag`` (``--flag true|false``, the form of older recorded commands,
    is still read); tuples take space-separated values (``--sizes 8 16``); an optional
    field takes ``None``. Abbreviated flags are refused. ``default_factory`` is called here.

    Args:
      cls: a dataclass type.
      argv: the arguments (default ``sys.argv[1:]``).
      description: the ``--help`` description (default: ``cls``'s docstring).
      prog: the program name in the usage line.
      choices: field -> accepted values known only at run time (e.g. registered methods);
        the field's type becomes a ``Literal`` of them.
      helps: field -> help text that replaces the field's docstring.
      defaults: field -> default that replaces the class's (shown in ``--help``).

    Returns:
      An instance of ``cls``.

    Raises:
      TypeError: ``cls`` is not a dataclass.
      SystemExit: ``--help`` (code 0) or a bad command line (code 2, the flag named).

    Example:
      >>> @dataclasses.dataclass(frozen=True)
      ... class Config:
      ...     seeds: int = 3
      ...     '''Training seeds.'''
      ...     compressions: tuple[float, ...] = (2, 4, 8)
      ...     '''Target compression ratios.'''
      >>> parse_config(Config, ["--seeds", "1", "--compressions", "2", "32"])
      Config(seeds=1, compressions=(2.0, 32.0))
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"parse_config needs a dataclass type, got {cls!r}")
    tyro = _tyro()
    argv = list(sys.argv[1:] if argv is None else argv)
    target = _derived(cls, choices or {}, helps or {}, defaults or {})
    parsed = tyro.cli(
        target,
        args=_legacy_argv(cls, argv),
        prog=prog,
        description=description or inspect.cleandoc(cls.__doc__ or "") or None,
    )
    if type(parsed) is cls:
        return parsed
    return cls(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(cls)})


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass config (tuples become lists, paths strings)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=_path_to_str))


def _path_to_str(obj: Any) -> str:
    if isinstance(obj, pathlib.PurePath) or hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"config_to_dict: {type(obj).__name__} is not JSON-serialisable")


def check_config(config: Any, check: Callable[[Any], None] | None) -> None:
    """Run ``config.validate()`` (when defined) and ``check(config)``."""
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    if check is not None:
        check(config)
