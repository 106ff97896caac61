"""In-memory backend: the reference implementation of the protocol, and a test double.

``memory://NAME`` opens a store shared by every backend opened with the same
name in this process (``memory://`` alone gives a fresh private store).
:meth:`MemoryBackend.plant` stores an object under any key, as another client
of a store with free-form keys (S3) could, so tests can see how listings and
their callers deal with malformed keys.
"""

from __future__ import annotations

import dataclasses
import io
import threading
import uuid
from typing import BinaryIO, Iterator

from .base import BaseBackend, BeforeCommit, Capabilities, Entry, ObjectInfo, check_key, check_prefix
from .errors import NotFound
from .options import parse_options

@dataclasses.dataclass(frozen=True)
class MemoryOptions:
    """memory:// takes no options."""


_SHARED: dict[str, dict[str, bytes]] = {}
_SHARED_LOCK = threading.Lock()


class MemoryBackend(BaseBackend):
    def __init__(self, name: str | None = None) -> None:
        if name:
            with _SHARED_LOCK:
                self._objects = _SHARED.setdefault(name, {})
            self.url = f"memory://{name}"
        else:
            self._objects = {}
            self.url = f"memory://{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self.capabilities = Capabilities(empty_prefixes=False, default_concurrency=8, local=True)

    @classmethod
    def from_url(cls, parts, query) -> "MemoryBackend":
        parse_options(MemoryOptions, query, scheme="memory")
        return cls(parts.netloc + parts.path.rstrip("/") or None)

    def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        with self._lock:
            data = self._objects.get(key)
        if data is None:
            raise NotFound(f"no such object: {key}", key=key)
        return ObjectInfo(key, len(data))

    def open_read(self, key: str) -> BinaryIO:
        check_key(key)
        with self._lock:
            data = self._objects.get(key)
        if data is None:
            raise NotFound(f"no such object: {key}", key=key)
        return io.BytesIO(data)

    def put(self, key: str, data: BinaryIO, *, size: int | None = None, before_commit: BeforeCommit | None = None) -> ObjectInfo:
        check_key(key)
        buffer = io.BytesIO()
        while chunk := data.read(1 << 20):
            buffer.write(chunk)
        if before_commit is not None:
            before_commit()
        content = buffer.getvalue()
        with self._lock:
            self._objects[key] = content
        return ObjectInfo(key, len(content))

    def plant(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` without checking the key (``a//b``, ``a/../b``): for tests only.

        Listings then yield it as stored; every operation given it raises InvalidKey.
        """
        with self._lock:
            self._objects[key] = bytes(data)

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def iter_children(self, prefix: str) -> Iterator[Entry]:
        check_prefix(prefix)
        with self._lock:
            keys = [k for k in self._objects if k.startswith(prefix)]
        seen: set[str] = set()
        for key in sorted(keys):
            rest = key[len(prefix):]
            name, slash, _ = rest.partition("/")
            if name not in seen:
                seen.add(name)
                yield Entry(name, bool(slash))

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        with self._lock:
            items = [(k, len(v)) for k, v in self._objects.items() if k.startswith(prefix)]
        for key, size in sorted(items):
            yield ObjectInfo(key, size)

