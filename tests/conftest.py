"""Strict test configuration shared by every test module.

* 8 fake CPU devices, so sharding tests run on any machine (set before any
  backend is initialised); the ``devices8`` fixture hands them out where the
  default backend has fewer than 8 devices (a one-GPU machine).
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

from sparsejax.data import mnist10k_dir  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=50, deadline=None)
# the dependency-floor job (.ci/floor) re-runs the core tests: fewer examples there
settings.register_profile("floor", max_examples=8, deadline=None, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

@pytest.fixture(scope="session")
def mnist_dir() -> pathlib.Path:
    """The real MNIST test split shipped inside the package (MD5-checked): the tests need
    nothing outside the repository."""
    return mnist10k_dir()


@pytest.fixture
def devices8():
    """8 devices for the sharding tests: the default backend's where it has 8 or more
    (a TPU slice, an 8-GPU host), else the 8 fake CPU devices set above. The test runs
    with the first of them as its default device, so its unsharded references are
    computed on the same backend as the sharded runs."""
    devices = jax.devices()
    if len(devices) < 8:
        devices = jax.devices("cpu")
    if len(devices) < 8:
        pytest.fail(f"the sharding tests need 8 devices; found {devices}")
    with jax.default_device(devices[0]):
        yield devices[:8]
