"""The replica marker: how syncagent recognises a destination it populated.

A destination that syncagent filled from empty carries ``.syncagent/replica.json``
(outside ``docker/``, so no registry sees it). Deleting on a destination
requires the marker (or ``--force``, which adopts the destination): a primary
registry given as the destination by mistake, e.g. with source and destination
swapped, has none.

Reading or writing the marker raises :class:`MarkerError` (a BackendError)
when the store fails, with the report problem kind it amounts to.
"""

from __future__ import annotations

import io
import json
import time

from backends import Backend, BackendError, NotFound

from .discovery import iter_repositories, read_small
from .jsonsafe import MalformedJSON, loads_bounded

MARKER_KEY = ".syncagent/replica.json"


class MarkerError(BackendError):
    """The marker could not be read or written; ``kind`` is ``read-failed`` or ``write-failed``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message, key=MARKER_KEY)
        self.kind = kind


def read_marker(backend: Backend) -> dict | None:
    """The marker's content, or None when the backend carries none (or an unreadable one).

    Raises MarkerError (read-failed) when the backend cannot be read.
    """
    try:
        data = read_small(backend, MARKER_KEY, 64 * 1024)
    except NotFound:
        return None
    except BackendError as exc:
        raise MarkerError("read-failed", f"cannot read the replica marker: {exc}") from exc
    try:
        marker = loads_bounded(data)
    except MalformedJSON:
        return None
    return marker if isinstance(marker, dict) else None


def write_marker(backend: Backend, source_url: str) -> None:
    """Raises MarkerError (write-failed) when the backend refuses the write (full, read-only, unreachable)."""
    content = json.dumps(
        {"kind": "syncagent-replica", "source": source_url, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    ).encode()
    try:
        backend.put(MARKER_KEY, io.BytesIO(content), size=len(content))
    except BackendError as exc:
        raise MarkerError("write-failed", f"cannot write the replica marker: {exc}") from exc


def mark_if_fresh(dest: Backend, source_url: str) -> bool:
    """Write the marker on an unmarked destination that holds no repository yet; True when it did
    (the destination was empty). Raises MarkerError."""
    if read_marker(dest) is not None:
        return False
    try:
        fresh = next(iter_repositories(dest), None) is None
    except NotFound:
        fresh = True
    except BackendError as exc:
        raise MarkerError("read-failed", f"cannot tell whether the destination is empty: {exc}") from exc
    if fresh:
        write_marker(dest, source_url)
    return fresh
