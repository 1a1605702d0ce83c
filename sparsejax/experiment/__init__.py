"""Deprecated alias of :mod:`sparsejax.runner` (the experiment runner's new name)."""

import warnings

from sparsejax.runner import *  # noqa: F403
from sparsejax.runner import __all__  # noqa: F401

warnings.warn(
    "sparsejax.experiment is now sparsejax.runner; the old name will be removed",
    DeprecationWarning,
    stacklevel=2,
)
