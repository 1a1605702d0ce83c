"""The commit record of a step: what makes a step committed, and how its files are checked.

After orbax's commit, :func:`write_record` writes ``sparsejax_commit.json`` last (a
temporary file renamed over it): every file of the step with its size, a SHA-256 of each
small file -- the metadata and manifest items, orbax's JSON and tree metadata, small
arrays -- and a SHA-256 of the record itself. A step directory without the record is
*incomplete* (the save was interrupted); :func:`check_record` rejects a record that is
unreadable, of the wrong shape or altered, and a listed file that is missing, resized
or altered, with :class:`CorruptCheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from etils import epath

from sparsejax.checkpoint._paths import is_local

__all__ = [
    "RECORD",
    "CorruptCheckpointError",
    "check_record",
    "has_record",
    "remove_record",
    "write_record",
]

RECORD = "sparsejax_commit.json"
_FORMAT = "sparsejax.checkpoint.commit/2"
_LEGACY_FORMAT = "sparsejax.checkpoint/1"  # sizes only, no digests (sparsejax <= 0.2)
_HASHED_MAX_BYTES = 16 * 2**20  # files up to this size get a SHA-256 (large arrays: checksums)
_ALWAYS_HASHED = ("metadata/", "manifest/")  # the caller's metadata and the leaf manifest
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 2**20


class CorruptCheckpointError(RuntimeError):
    """A checkpoint step directory is incomplete, unreadable or fails its checksums."""


def _digest(path: epath.Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _record_digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _hashed(name: str, size: int) -> bool:
    return size <= _HASHED_MAX_BYTES or name.startswith(_ALWAYS_HASHED)


def _step_files(step_dir: epath.Path) -> dict[str, int]:
    """Every file under ``step_dir`` (relative POSIX name -> size), the record excluded."""
    files = {}
    for root, _, names in step_dir.walk():
        for name in names:
            path = epath.Path(root) / name
            rel = path.relative_to(step_dir).as_posix()
            if rel == RECORD or rel.startswith(RECORD + "."):
                continue
            files[rel] = int(path.stat().length)
    return dict(sorted(files.items()))


def has_record(step_dir: epath.Path) -> bool:
    """Whether the step directory holds its commit record (the step is committed)."""
    return (step_dir / RECORD).exists()


def write_record(step_dir: epath.Path, step: int) -> None:
    """Record every file of a finalised step (sizes, digests) and commit it: written last.

    Locally the record goes to a temporary file, is flushed to disk and renamed over
    ``sparsejax_commit.json``; on an object store one upload publishes it whole.
    """
    files = {}
    for name, size in _step_files(step_dir).items():
        entry: dict[str, Any] = {"bytes": size}
        if _hashed(name, size):
            entry["sha256"] = _digest(step_dir / name)
        files[name] = entry
    record: dict[str, Any] = {"format": _FORMAT, "step": int(step), "files": files}
    record["sha256"] = _record_digest(record)
    text = json.dumps(record, indent=1, sort_keys=True)
    target = step_dir / RECORD
    if not is_local(step_dir):
        target.write_text(text)
        return
    tmp = step_dir / (RECORD + ".tmp")
    with open(os.fspath(tmp), "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(os.fspath(tmp), os.fspath(target))
    try:  # make the rename itself durable
        fd = os.open(os.fspath(step_dir), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_record(step_dir: epath.Path) -> None:
    """Uncommit a step: its record goes first, so a removal killed half-way leaves an
    incomplete step (never listed), not a damaged committed one."""
    record = step_dir / RECORD
    if record.exists():
        record.unlink()


def _invalid(where: str, step: int, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"checkpoint {where} (step {step}): {RECORD} {what}")


def _parse(step_dir: epath.Path, step: int) -> dict[str, dict[str, Any]]:
    """The validated ``files`` of the record: ``{name: {"bytes": n[, "sha256": h]}}``."""
    where = os.fspath(step_dir)
    try:
        text = (step_dir / RECORD).read_text()
    except FileNotFoundError:
        raise CorruptCheckpointError(
            f"checkpoint {where} (step {step}) is incomplete: no {RECORD} (the save did not "
            "finish)"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise _invalid(where, step, f"cannot be read ({type(err).__name__}: {err})") from None
    try:
        record = json.loads(text)
    except ValueError as err:
        raise _invalid(where, step, f"is not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise _invalid(where, step, f"is a {type(record).__name__}, not a JSON object")
    fmt = record.get("format")
    if fmt == _FORMAT:
        keys = {"format", "step", "files", "sha256"}
    elif fmt == _LEGACY_FORMAT:
        keys = {"format", "step", "files"}
    else:
        raise _invalid(where, step, f"has an unknown format {fmt!r}")
    if set(record) != keys:
        raise _invalid(where, step, f"has the keys {sorted(record)}, expected {sorted(keys)}")
    if fmt == _FORMAT and record["sha256"] != _record_digest(record):
        raise _invalid(where, step, "fails its own checksum (altered after it was written)")
    saved_step = record["step"]
    if isinstance(saved_step, bool) or saved_step != step:
        raise _invalid(where, step, f"belongs to step {saved_step!r}")
    files = record["files"]
    if not isinstance(files, dict) or not files:
        raise _invalid(where, step, f"lists no files: {files!r}")
    out = {}
    for name, entry in files.items():
        if not isinstance(name, str) or name.startswith("/") or ".." in name.split("/"):
            raise _invalid(where, step, f"lists an invalid file name {name!r}")
        if fmt == _LEGACY_FORMAT:
            entry = {"bytes": entry}
        size = entry.get("bytes") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or size < 0
            or not set(entry) <= {"bytes", "sha256"}
            or (digest is not None and not (isinstance(digest, str) and _SHA256.fullmatch(digest)))
        ):
            raise _invalid(where, step, f"has a malformed entry for {name!r}: {entry!r}")
        out[name] = entry
    return out


def check_record(step_dir: epath.Path, step: int) -> None:
    """Raise :class:`CorruptCheckpointError` unless the step's record is intact and every
    file it lists is there, of its recorded size and (where recorded) SHA-256."""
    where = os.fspath(step_dir)
    for name, entry in _parse(step_dir, step).items():
        path = step_dir / name
        if not path.is_file():
            raise CorruptCheckpointError(
                f"checkpoint {where} (step {step}) is incomplete: file {name} is missing"
            )
        size = int(path.stat().length)
        if size != entry["bytes"]:
            raise CorruptCheckpointError(
                f"checkpoint {where} (step {step}): file {name} has {size} bytes, "
                f"{entry['bytes']} were written"
            )
        if "sha256" in entry and _digest(path) != entry["sha256"]:
            raise CorruptCheckpointError(
                f"checkpoint {where} (step {step}): file {name} fails its SHA-256 (altered "
                "after it was written)"
            )
