"""Generate ``docs/api.md``: every public name of sparsejax with its signature and summary.

For each module of :data:`MODULES` that imports, every name of its ``__all__``
is listed with its signature (classes: the constructor's) and the first
paragraph of its docstring. The top-level package re-exports names from the
submodules; they are listed there as links to the submodule's entry.
Modules that do not import (e.g. a missing optional dependency) are skipped
with a note on stderr, so run it in the environment of the test extra.

``tests/test_notebooks.py`` checks that the committed ``docs/api.md`` equals
this script's output, so it never goes stale: after changing a docstring or a
signature, run::

    python docs/build_api.py            # rewrite docs/api.md
    python docs/build_api.py --check    # exit 1 if docs/api.md is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import inspect
import pathlib
import re
import sys
import types
import typing
from typing import Any

API_MD = pathlib.Path(__file__).resolve().parent / "api.md"

MODULES = (
    # the core
    "sparsejax",
    "sparsejax.tree",
    "sparsejax.masks",
    "sparsejax.structures",
    "sparsejax.scores",
    "sparsejax.select",
    "sparsejax.schedules",
    "sparsejax.transforms",
    # jax-only tools
    "sparsejax.metrics",
    "sparsejax.sensitivity",
    "sparsejax.regularizers",
    "sparsejax.parallel",
    "sparsejax.block_sparse",
    # the Flax layer's ground
    "sparsejax.models",
    "sparsejax.data",
    "sparsejax.checkpoint",
    # techniques on models
    "sparsejax.lottery",
    "sparsejax.variational",
    "sparsejax.dynamic",
    "sparsejax.shrink",
    "sparsejax.deploy",
    "sparsejax.posttrain",
    # training and the experiment runner
    "sparsejax.train",
    "sparsejax.runner",
)

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_VALUE = 80


def _clean(text: str) -> str:
    """Drop memory addresses (``<function f at 0x...>``): the output must be reproducible."""
    return _ADDRESS.sub("", text)


def _summary(obj: Any) -> str:
    """First paragraph of the object's own docstring, on one line ('' if none)."""
    doc = obj.__doc__ if isinstance(obj, (type, types.FunctionType, types.ModuleType)) else None
    if doc is None and callable(obj) and not isinstance(obj, type):
        doc = getattr(obj, "__doc__", None)
    doc = inspect.cleandoc(doc or "")
    first = doc.split("\n\n", 1)[0]
    return " ".join(line.strip() for line in first.splitlines()).strip()


class _Source:
    """An annotation kept as the source text (``from __future__ import annotations``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _unquote(annotation: Any) -> Any:
    if isinstance(annotation, typing.ForwardRef):  # NamedTuple fields of string annotations
        annotation = annotation.__forward_arg__
    return _Source(annotation) if isinstance(annotation, str) else annotation


def _default(value: Any) -> Any:
    """A class or callable default by name (``relu``, not ``<...custom_jvp object at 0x...>``)."""
    if value is inspect.Parameter.empty:
        return value
    if isinstance(value, type):
        return _Source(f"{value.__module__}.{value.__qualname__}")
    if callable(value) and "<" in repr(value):
        name = getattr(value, "__name__", None)
        if isinstance(name, str):
            return _Source(name)
    return value


def _generic(sig: inspect.Signature) -> bool:
    kinds = [p.kind for p in sig.parameters.values()]
    return kinds == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]


def _signature(name: str, obj: Any) -> str | None:
    try:
        sig = inspect.signature(obj)
        if isinstance(obj, type) and _generic(sig) and obj.__init__ is not object.__init__:
            # e.g. flax.nnx.Module's metaclass hides the constructor: read __init__, drop self
            init = inspect.signature(obj.__init__)
            sig = init.replace(parameters=list(init.parameters.values())[1:])
    except (TypeError, ValueError):
        return None
    sig = sig.replace(
        parameters=[p.replace(annotation=_unquote(p.annotation), default=_default(p.default))
                    for p in sig.parameters.values()],
        return_annotation=(inspect.Signature.empty if isinstance(obj, type)
                           else _unquote(sig.return_annotation)),
    )
    return _clean(f"{name}{sig}")


def _kind(obj: Any) -> str:
    if isinstance(obj, type):
        if issubclass(obj, enum.Enum):
            return "enum"
        if issubclass(obj, tuple) and hasattr(obj, "_fields"):
            return "namedtuple"
        if dataclasses.is_dataclass(obj):
            return "dataclass"
        return "class"
    if isinstance(obj, types.ModuleType):
        return "module"
    if callable(obj):
        return "function"
    return "constant"


def _value(obj: Any) -> str:
    text = _clean(repr(obj))
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def _anchor(dotted: str) -> str:
    """HTML anchor of a module or ``module.name`` (explicit ``<a id>``: renderer-independent)."""
    return re.sub(r"[^a-z0-9_-]", "", dotted.lower().replace(".", "-"))


def _entry(module: str, name: str, obj: Any) -> list[str]:
    kind = _kind(obj)
    lines = [f'<a id="{_anchor(f"{module}.{name}")}"></a>', f"### `{module}.{name}` ({kind})", ""]
    if kind == "constant":
        lines += [f"`{name} = {_value(obj)}`", ""]
    else:
        sig = _signature(name, obj)
        if sig is not None:
            lines += ["```python", sig, "```", ""]
    summary = _summary(obj)
    if summary and kind != "constant":
        lines += [summary, ""]
    return lines


def _import(module: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(module)
    except Exception as err:  # a module under construction or a missing optional dependency
        print(f"build_api: skipping {module}: {type(err).__name__}: {err}", file=sys.stderr)
        return None


def generate() -> str:
    """The Markdown text of ``docs/api.md``."""
    mods = {name: mod for name in MODULES if (mod := _import(name)) is not None}
    # where each object is documented: the first submodule that lists it
    home: dict[int, tuple[str, str]] = {}
    for modname, mod in mods.items():
        if modname == "sparsejax":
            continue
        for name in getattr(mod, "__all__", ()):
            home.setdefault(id(getattr(mod, name)), (modname, name))
    out = [
        "# API reference",
        "",
        "Generated by `python docs/build_api.py` from the docstrings (do not edit by hand;",
        "`tests/test_notebooks.py` checks it is up to date). Each entry gives the signature",
        "and the first paragraph of the docstring; `help(name)` shows the rest: arguments,",
        "shapes, examples and the paper it implements. The layers and what each folder",
        "holds: [architecture.md](architecture.md).",
        "",
        "Modules: " + ", ".join(f"[`{m}`](#{_anchor(m)})" for m in mods),
        "",
    ]
    for modname, mod in mods.items():
        out += [f'<a id="{_anchor(modname)}"></a>', f"## `{modname}`", ""]
        summary = _summary(mod)
        if summary:
            out += [summary, ""]
        names = list(getattr(mod, "__all__", ()))
        if modname == "sparsejax":
            rows = []
            for name in names:
                obj = getattr(mod, name)
                where = home.get(id(obj))
                if isinstance(obj, types.ModuleType):
                    target = f"[`{obj.__name__}`](#{_anchor(obj.__name__)})"
                elif where is not None:
                    target = f"[`{where[0]}.{where[1]}`](#{_anchor('.'.join(where))})"
                else:
                    out += _entry(modname, name, obj)
                    continue
                rows.append(f"| `sparsejax.{name}` | {target} |")
            if rows:
                out += ["| name | documented at |", "|---|---|", *rows, ""]
            continue
        for name in names:
            out += _entry(modname, name, getattr(mod, name))
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether it is stale")
    args = parser.parse_args(argv)
    text = generate()
    current = API_MD.read_text(encoding="utf-8") if API_MD.exists() else None
    if args.check:
        if current != text:
            print(f"{API_MD} is out of date: run python docs/build_api.py")
            return 1
        return 0
    API_MD.write_text(text, encoding="utf-8")
    print(f"wrote {API_MD} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
