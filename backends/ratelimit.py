"""A ceiling on requests per second: a wrapper for gateways shared with other users.

``--max-requests-per-second N`` (an option of the command, as it concerns the
run rather than the store) puts a token bucket in front of a backend: each
operation takes one token (a listing one per call, and one more per
``page_size`` entries it yields, the usual page of S3 and RGW); the bucket holds
at most one second's worth, so bursts stay short. Waiting happens before the
request is sent; nothing else changes.
"""

from __future__ import annotations

import threading
import time
from typing import BinaryIO, Callable, Iterator, TypeVar

from .base import BaseBackend, BeforeCommit, Entry, ObjectInfo

T = TypeVar("T")


class TokenBucket:
    """``rate`` tokens a second, at most ``rate`` (one second's worth) stored. Thread-safe."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("a rate must be positive")
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            self._sleep(wait)


class RateLimitedBackend(BaseBackend):
    def __init__(self, inner, bucket: TokenBucket, *, page_size: int = 1000) -> None:
        self.inner = inner
        self.bucket = bucket
        self.page_size = page_size
        self.url = inner.url
        self.capabilities = inner.capabilities

    def stat(self, key: str) -> ObjectInfo:
        self.bucket.take()
        return self.inner.stat(key)

    def open_read(self, key: str) -> BinaryIO:
        self.bucket.take()
        return self.inner.open_read(key)

    def read_prefix(self, key: str, size: int) -> bytes:
        self.bucket.take()
        return self.inner.read_prefix(key, size)

    def put(self, key: str, data: BinaryIO, *, size: int | None = None, before_commit: BeforeCommit | None = None) -> ObjectInfo:
        self.bucket.take()
        return self.inner.put(key, data, size=size, before_commit=before_commit)

    def delete(self, key: str) -> None:
        self.bucket.take()
        self.inner.delete(key)

    def iter_children(self, prefix: str) -> Iterator[Entry]:
        return self._listing(lambda: self.inner.iter_children(prefix))

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        return self._listing(lambda: self.inner.iter_objects(prefix))

    def _listing(self, start: Callable[[], Iterator[T]]) -> Iterator[T]:
        self.bucket.take()
        for count, item in enumerate(start(), 1):
            if count % self.page_size == 0:
                self.bucket.take()
            yield item

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


__all__ = ["RateLimitedBackend", "TokenBucket"]
