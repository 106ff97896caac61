"""Retrying transient failures: one policy, and a backend wrapper that applies it to every operation.

:class:`RetryPolicy` says how often and how long to wait (capped exponential
backoff with full jitter, as AWS's architecture blog recommends);
:meth:`RetryPolicy.call` retries one callable on :class:`TransientError`.
:class:`RetryingBackend` wraps a backend (restic's model: retries are a
wrapper, not code inside each backend or caller):

- ``stat``, ``open_read``, ``read_prefix``, ``delete`` are retried whole;
- ``put`` is retried when its data can be rewound (``seekable()``; links,
  records, manifests held in memory); a stream that cannot be rewound (a blob
  being copied) gets one attempt: its caller retries the whole copy, reading
  the source again (transfer.py, with the same policy);
- listings are retried until their first entry; a listing that fails after it
  has yielded entries raises (starting over would repeat them);
- a read from an open stream is not retried here: the caller sees the
  TransientError and retries what it was doing.

SDK-level retries (botocore's, the CRT's) happen below this wrapper; this one
covers what they do not: errors of whole operations, any backend, one policy.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, TypeVar

from .base import BaseBackend, BeforeCommit, Entry, ObjectInfo
from .errors import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (1: no retry); before attempt n+1 a random wait of up to
    ``min(cap, base * 2**(n-1))`` seconds."""

    attempts: int = 4
    base: float = 0.2
    cap: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based)."""
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))

    def call(self, operation: Callable[[], T], *, what: str = "", should_stop: Callable[[], bool] | None = None) -> T:
        """``operation()``, again after each TransientError until ``attempts`` are used (then the last
        error is raised) or ``should_stop()`` says so."""
        for attempt in range(1, self.attempts + 1):
            try:
                return operation()
            except TransientError as exc:
                if attempt == self.attempts or (should_stop is not None and should_stop()):
                    if attempt > 1:
                        raise TransientError(f"{exc} (tried {attempt} times)", key=exc.key) from exc
                    raise
                wait = self.delay(attempt)
                log.debug("retrying %s in %.2fs after attempt %d failed: %s", what or "an operation", wait, attempt, exc)
                self.sleep(wait)
        raise AssertionError("unreachable")


    def call_rewinding(self, data: BinaryIO, write: Callable[[], T], *, what: str = "") -> T:
        """``write()``, which reads ``data``, retried as :meth:`call` does with ``data`` rewound to where it
        stood first before each attempt; once only when ``data`` cannot be rewound."""
        start = _position(data)
        if start is None:
            return write()

        def attempt() -> T:
            data.seek(start)
            return write()

        return self.call(attempt, what=what)


NO_RETRY = RetryPolicy(attempts=1)


class RetryingBackend(BaseBackend):
    """A backend whose operations are retried on TransientError (see the module docstring)."""

    def __init__(self, inner, policy: RetryPolicy = RetryPolicy()) -> None:
        self.inner = inner
        self.policy = policy
        self.url = inner.url
        self.capabilities = inner.capabilities

    def stat(self, key: str) -> ObjectInfo:
        return self.policy.call(lambda: self.inner.stat(key), what=f"stat {key}")

    def open_read(self, key: str) -> BinaryIO:
        return self.policy.call(lambda: self.inner.open_read(key), what=f"read {key}")

    def read_prefix(self, key: str, size: int) -> bytes:
        return self.policy.call(lambda: self.inner.read_prefix(key, size), what=f"read {key}")

    def put(self, key: str, data: BinaryIO, *, size: int | None = None, before_commit: BeforeCommit | None = None) -> ObjectInfo:
        return self.policy.call_rewinding(data, lambda: self.inner.put(key, data, size=size, before_commit=before_commit),
                                          what=f"put {key}")

    def delete(self, key: str) -> None:
        self.policy.call(lambda: self.inner.delete(key), what=f"delete {key}")

    def iter_children(self, prefix: str) -> Iterator[Entry]:
        return self._listing(lambda: self.inner.iter_children(prefix), prefix)

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        return self._listing(lambda: self.inner.iter_objects(prefix), prefix)

    def _listing(self, start: Callable[[], Iterator[T]], prefix: str) -> Iterator[T]:
        for attempt in range(1, self.policy.attempts + 1):
            iterator = iter(start())
            try:
                first = next(iterator)
            except StopIteration:
                return
            except TransientError as exc:
                if attempt == self.policy.attempts:
                    raise TransientError(f"{exc} (tried {attempt} times)", key=exc.key) from exc
                self.policy.sleep(self.policy.delay(attempt))
                continue
            yield first
            yield from iterator
            return

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)  # the inner backend's optional abilities, unwrapped


def retrying(backend, policy: RetryPolicy = RetryPolicy()):
    """``backend`` with its operations retried by ``policy``; a backend already wrapped is returned as it is."""
    if isinstance(backend, RetryingBackend) or policy.attempts <= 1:
        return backend
    return RetryingBackend(backend, policy)


def _position(data: BinaryIO) -> int | None:
    try:
        return data.tell() if data.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


__all__ = ["NO_RETRY", "RetryPolicy", "RetryingBackend", "retrying"]
