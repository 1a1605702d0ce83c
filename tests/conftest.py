"""Strict test configuration shared by every test module.

* 8 fake CPU devices, so sharding tests run on any machine (set before any
  backend is initialised).
* ``jax_numpy_rank_promotion="raise"``: implicit rank promotion is a bug here.
* Warnings are errors (see ``filterwarnings`` in pyproject.toml).
"""

import os

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")

import pathlib  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=50, deadline=None)
# the dependency-floor job (.ci/floor) re-runs the core tests: fewer examples there
settings.register_profile("floor", max_examples=8, deadline=None, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def mnist_dir() -> pathlib.Path:
    """The real MNIST test split that lies in ``../shared/data/mnist``."""
    path = SHARED / "data" / "mnist"
    if not (path / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST test split not found at {path}; ../shared must sit beside the repo")
    return path
