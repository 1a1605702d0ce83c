"""Helpers the studies share: cached data, stacking vmapped seeds, checks, the result header."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from sparsejax.data import Dataset, dataset_info, load_dataset
from sparsejax.runner._config import ConfigError

__all__ = ["check_lr", "device_line", "load_data", "spread_label", "stack", "unstack"]


@functools.lru_cache(maxsize=8)
def _cached(name: str, data_dir: str | None) -> Dataset:
    return load_dataset(name, data_dir=data_dir)


def load_data(name: str, data_dir: str | None = None) -> Dataset:
    """``load_dataset(name, data_dir)``, kept for the process for built-in data sets (a
    study's check and its run load it once). A load error names ``--dataset``."""
    try:
        if dataset_info(name).builtin:
            return _cached(name, data_dir)
        return load_dataset(name, data_dir=data_dir)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise ConfigError("dataset", name, f"cannot load it: {err}") from err


def stack(trees: list[Any]) -> Any:
    """Stack pytrees along a new leading (seed / run) axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, i: int) -> Any:
    """Entry ``i`` of a pytree stacked by :func:`stack`."""
    return jax.tree.map(lambda x: x[i], tree)


def check_lr(cfg: Any, *fields: str) -> None:
    """Learning rates must be positive (``None`` skipped: filled by a preset)."""
    for name in fields:
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise ConfigError(name, value, "a learning rate must be > 0")


def device_line() -> str:
    """``"<device kind> (<backend>, jax <version>)"`` for result headers."""
    return f"{jax.devices()[0].device_kind} ({jax.default_backend()}, jax {jax.__version__})"


def spread_label(seeds: int) -> str:
    """What a figure's error bars are: ``±1 std over N seeds``, or none for one seed."""
    return f"±1 std over {seeds} seeds" if seeds > 1 else "none (1 seed)"
