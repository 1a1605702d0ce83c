"""Checkpoint directories as ``etils.epath`` paths: local folders, ``file://`` and object stores.

Orbax addresses every directory through ``etils.epath``, so ``gs://bucket/run`` (and the
other schemes epath registers: ``s3://``, ``az://``, ...) work as they are; a ``file://``
URL names a local folder. :func:`directory_path` turns what a user passes into that one
path type, so the checkpoint code never builds a ``pathlib.Path`` from a URL (which would
make a local ``gs:/bucket/run`` folder).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from etils import epath

__all__ = ["directory_path", "is_local"]


def directory_path(directory: Any) -> epath.Path:
    """The checkpoint directory ``directory`` as an absolute ``epath.Path``.

    Args:
      directory: a local path (``str`` or ``os.PathLike``, made absolute), a
        ``file://`` URL (its local path), a URL of a scheme ``etils.epath`` knows
        (``gs://bucket/run``, kept as it is), or an ``epath.Path``.

    Raises:
      TypeError: anything else.
      ValueError: a URL of a scheme epath does not know (naming it and the known ones).

    Example:
      >>> str(directory_path("gs://bucket/run1"))
      'gs://bucket/run1'
      >>> str(directory_path("file:///tmp/run1"))
      '/tmp/run1'
    """
    if isinstance(directory, epath.Path):
        return directory if not is_local(directory) else directory.absolute()
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a str or os.PathLike, got {directory!r}")
    text = os.fspath(directory)
    if isinstance(text, bytes):
        raise TypeError(f"directory must be a str path, got bytes {text!r}")
    if "://" not in text:
        return epath.Path(text).absolute()
    scheme = text.split("://", 1)[0]
    if scheme == "file":
        url = urllib.parse.urlparse(text)
        if url.netloc not in ("", "localhost"):
            raise ValueError(f"directory {text!r}: a file:// URL must name a local path")
        return epath.Path(urllib.parse.unquote(url.path)).absolute()
    try:
        return epath.Path(text)
    except (KeyError, NotImplementedError) as err:
        raise ValueError(
            f"directory {text!r}: unknown scheme {scheme + '://'!r}; etils.epath (which orbax "
            f"uses) knows file://, {', '.join(sorted(_known_schemes()))}"
        ) from err


def _known_schemes() -> list[str]:
    from etils.epath import register

    return list(getattr(register, "_URI_PREFIXES_TO_CLS", {}))


def is_local(path: Any) -> bool:
    """Whether ``path`` is on a local (or mounted) filesystem, not an object store URL."""
    return "://" not in os.fspath(path)
