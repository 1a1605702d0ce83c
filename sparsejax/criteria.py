"""Deprecated alias: the unit criteria now live in :mod:`sparsejax.scores`."""

import warnings

from sparsejax import scores as _scores

_MOVED = (
    "bn_conv_pairs",
    "bn_scale",
    "filter_norm",
    "group_taylor",
    "mean_group_taylor",
    "oracle",
    "random_units",
    "rank_correlation",
    "spearman",
)
__all__ = list(_MOVED)  # each resolved lazily by __getattr__, with a warning


def __getattr__(name: str):
    # Warns on use, not on import: ``import sparsejax`` still imports this module.
    if name in _MOVED:
        warnings.warn(
            f"sparsejax.criteria.{name} is now sparsejax.scores.{name}; the old name will be "
            "removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_scores, name)
    raise AttributeError(f"module 'sparsejax.criteria' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
