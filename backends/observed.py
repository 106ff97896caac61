"""Counting a backend's requests: a wrapper that reports each operation to an observer.

``observer(operation, seconds, error)`` is called once per operation --
``stat``, ``read`` (opening a stream, or a whole small read), ``put``,
``delete``, ``list`` (each listing call; the page count is the backend's
business) -- with its duration and the error it raised (None on success).
The sidecar turns these into Prometheus metrics; benchmarks count requests
with it. It never changes what the operation does.
"""

from __future__ import annotations

import time
from typing import BinaryIO, Callable, Iterator, TypeVar

from .base import BaseBackend, BeforeCommit, Entry, ObjectInfo

Observer = Callable[[str, float, BaseException | None], None]
T = TypeVar("T")


class ObservedBackend(BaseBackend):
    def __init__(self, inner, observer: Observer) -> None:
        self.inner = inner
        self.observer = observer
        self.url = inner.url
        self.capabilities = inner.capabilities

    def _timed(self, operation: str, call: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            result = call()
        except BaseException as exc:
            self.observer(operation, time.monotonic() - started, exc)
            raise
        self.observer(operation, time.monotonic() - started, None)
        return result

    def stat(self, key: str) -> ObjectInfo:
        return self._timed("stat", lambda: self.inner.stat(key))

    def open_read(self, key: str) -> BinaryIO:
        return self._timed("read", lambda: self.inner.open_read(key))

    def read_prefix(self, key: str, size: int) -> bytes:
        return self._timed("read", lambda: self.inner.read_prefix(key, size))

    def put(self, key: str, data: BinaryIO, *, size: int | None = None, before_commit: BeforeCommit | None = None) -> ObjectInfo:
        return self._timed("put", lambda: self.inner.put(key, data, size=size, before_commit=before_commit))

    def delete(self, key: str) -> None:
        self._timed("delete", lambda: self.inner.delete(key))

    def iter_children(self, prefix: str) -> Iterator[Entry]:
        return self._listing(lambda: self.inner.iter_children(prefix))

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        return self._listing(lambda: self.inner.iter_objects(prefix))

    def _listing(self, start: Callable[[], Iterator[T]]) -> Iterator[T]:
        started = time.monotonic()
        error: BaseException | None = None
        try:
            yield from start()
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.observer("list", time.monotonic() - started, error)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


__all__ = ["ObservedBackend", "Observer"]
