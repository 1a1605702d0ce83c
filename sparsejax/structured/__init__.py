"""Deprecated alias of :mod:`sparsejax.shrink` (structured groups and physical shrinking)."""

import warnings

from sparsejax.shrink import *  # noqa: F403
from sparsejax.shrink import __all__  # noqa: F401

warnings.warn(
    "sparsejax.structured is now sparsejax.shrink; the old name will be removed",
    DeprecationWarning,
    stacklevel=2,
)
