"""Interrupted saves and damaged steps: moved aside into ``<directory>/aside/``, never deleted.

A step counts only once committed (:mod:`~sparsejax.checkpoint._record`). A save killed
before orbax's commit leaves ``<step>.orbax-checkpoint-tmp-*``; one killed between orbax's
commit and sparsejax's record leaves ``<step>/`` without its record. Both are
*incomplete*: never listed, never restored, and moved aside by the next save (so a killed
run always saves again, also one killed during its first save). A committed step that
fails its checks is moved aside by a restore that falls back over it. Each move warns
with the entry's new path, ``aside/<name>.<reason>.<UTC time>``.
"""

from __future__ import annotations

import datetime
import os
import re
import warnings

from etils import epath

from sparsejax.checkpoint._record import has_record

__all__ = ["ASIDE", "incomplete_entries", "set_aside"]

ASIDE = "aside"
_ORBAX_TMP = re.compile(r"\d+\.orbax-checkpoint-tmp.*")


def incomplete_entries(path: epath.Path) -> list[epath.Path]:
    """The interrupted saves in a checkpoint directory: orbax tmp directories and step
    directories without a commit record, sorted by name."""
    if not path.is_dir():
        return []
    out = []
    for entry in path.iterdir():
        name = entry.name
        if _ORBAX_TMP.fullmatch(name) or (
            name.isdigit() and entry.is_dir() and not has_record(entry)
        ):
            out.append(entry)
    return sorted(out, key=lambda p: p.name)


def set_aside(
    path: epath.Path, entry: epath.Path, reason: str, *, warn: bool = True, stacklevel: int = 3
) -> epath.Path:
    """Move ``entry`` (a child of the checkpoint directory ``path``) to
    ``path/aside/<name>.<reason>.<UTC time>`` and return the new path; with ``warn``, a
    ``RuntimeWarning`` names both."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path / ASIDE
    aside.mkdir(parents=True, exist_ok=True)
    target = aside / f"{entry.name}.{reason}.{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = aside / f"{entry.name}.{reason}.{stamp}-{n}"
    entry.rename(target)
    if not warn:
        return target
    warnings.warn(
        f"checkpoint entry {os.fspath(entry)!r} ({reason}) moved aside to "
        f"{os.fspath(target)!r}; it is kept, not deleted",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
    return target
