"""Load a repository script (``benchmarks/*.py``, ``experiments/*.py``) as a module in tests."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_script(relative: str, name: str | None = None) -> ModuleType:
    """The script at ``ROOT / relative``, executed as a module named ``name``.

    The module is registered in ``sys.modules`` first, so that its dataclasses resolve
    their (string) annotations through it.
    """
    name = name or "experiments_" + relative.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
