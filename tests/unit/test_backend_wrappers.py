"""Cross-cutting concerns as wrappers around any backend: retries, a request ceiling, request counting."""

from __future__ import annotations

import io

import pytest

from backends import TransientError
from backends.memory import MemoryBackend
from backends.observed import ObservedBackend
from backends.ratelimit import RateLimitedBackend, TokenBucket
from backends.retry import RetryingBackend, RetryPolicy

NO_WAIT = RetryPolicy(attempts=3, sleep=lambda seconds: None)


class Flaky(MemoryBackend):
    """Fails the first ``failures`` calls of each operation with a TransientError, after reading part of a put."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls: dict[str, int] = {}

    def _maybe_fail(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        if self.calls[operation] <= self.failures:
            raise TransientError(f"{operation}: 503 SlowDown")

    def put(self, key, data, **kwargs):
        try:
            self._maybe_fail("put")
        except TransientError:
            data.read(3)  # a failure after part of the body was sent
            raise
        return super().put(key, data, **kwargs)

    def stat(self, key):
        self._maybe_fail("stat")
        return super().stat(key)

    def iter_children(self, prefix):
        self._maybe_fail("list")
        yield from super().iter_children(prefix)


def test_a_put_from_memory_is_retried_from_its_start():
    inner = Flaky(failures=2)
    backend = RetryingBackend(inner, NO_WAIT)
    backend.put("a/key", io.BytesIO(b"whole content"))
    assert inner.calls["put"] == 3
    assert inner.read_bytes("a/key") == b"whole content"


def test_a_put_from_a_stream_that_cannot_rewind_gets_one_attempt():
    class OneWay(io.RawIOBase):
        def __init__(self):
            self.inner = io.BytesIO(b"streamed content")

        def readable(self):
            return True

        def readinto(self, buffer):
            data = self.inner.read(len(buffer))
            buffer[: len(data)] = data
            return len(data)

    inner = Flaky(failures=1)
    with pytest.raises(TransientError):
        RetryingBackend(inner, NO_WAIT).put("a/key", OneWay())
    assert inner.calls["put"] == 1 and list(MemoryBackend.iter_objects(inner, "")) == []


def test_attempts_are_bounded_and_the_last_error_is_raised():
    inner = Flaky(failures=10)
    with pytest.raises(TransientError):
        RetryingBackend(inner, NO_WAIT).stat("k")
    assert inner.calls["stat"] == 3


def test_a_listing_is_retried_until_its_first_entry_only():
    inner = Flaky(failures=2)
    MemoryBackend.put(inner, "p/a", io.BytesIO(b"1"))
    assert [e.name for e in RetryingBackend(inner, NO_WAIT).iter_children("p/")] == ["a"]
    assert inner.calls["list"] == 3


def test_the_waits_grow_and_stay_under_the_cap():
    waits = []
    policy = RetryPolicy(attempts=6, base=0.5, cap=2.0, sleep=waits.append)
    with pytest.raises(TransientError):
        policy.call(lambda: (_ for _ in ()).throw(TransientError("down")))
    assert len(waits) == 5 and all(0 <= w <= 2.0 for w in waits)


def test_the_token_bucket_holds_requests_to_the_rate():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(10, clock=lambda: now[0], sleep=sleep)
    backend = RateLimitedBackend(MemoryBackend(), bucket)
    for n in range(30):
        backend.put_bytes(f"k{n}", b"x")
    assert now[0] == pytest.approx(2.0, abs=0.01)  # 10 from the full bucket, then 20 at 10 a second


def test_every_operation_is_reported_once_to_the_observer():
    seen = []
    backend = ObservedBackend(MemoryBackend(), lambda op, seconds, error: seen.append((op, error is None)))
    backend.put_bytes("a/b", b"x")
    backend.stat("a/b")
    backend.read_bytes("a/b")
    list(backend.iter_objects("a/"))
    backend.delete("a/b")
    with pytest.raises(Exception):
        backend.stat("a/b")
    assert seen == [("put", True), ("stat", True), ("read", True), ("list", True), ("delete", True), ("stat", False)]
