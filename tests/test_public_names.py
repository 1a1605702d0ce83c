"""Every public name of the 0.1 layout still resolves (re-exports after the re-layout)."""

import importlib
import pathlib
import warnings

import pytest

# The public names of docs/api.md before the package was split into subpackages.
NAMES = pathlib.Path(__file__).with_name("public_names_v01.txt").read_text().split()


def _resolve(name: str):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


@pytest.mark.parametrize("name", NAMES)
def test_public_name_resolves(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert _resolve(name) is not None
