"""Durable writes in batches: many puts share one barrier instead of each paying for its own fsyncs.

On a destination with the :class:`~backends.base.StagedPuts` ability (the
filesystem with fsync on), a :class:`GroupCommit` makes each write in four
moves, on one thread that serves every write of the pass::

    stage     the bytes, under a staging name, checked (on the caller's thread)
    barrier   syncfs: the staged bytes are durable
    publish   rename to the key: visible, not yet durable
    barrier   the name is durable
    -> the write's future resolves

One barrier serves every write waiting at that point: while one ``syncfs``
runs, the next batch gathers, and the barrier after a batch's publish is the
barrier before the next batch's. A step of the plan whose writes went this
way ends when their futures resolve (execute.py runs it asynchronously), and
only then may the steps that need it run.

Why no link can become durable before the data it names (docs/design.md,
"Durability in batches"): a link is staged only by a step that needs the
steps writing what it names, and those steps end only after the barrier that
followed their publish; the link's own publish waits for another barrier. So
between the last write of a blob's data and the first rename that names it
there are at least two barriers, and a name never becomes durable before the
bytes it holds (a crash leaves either the old state or whole, verified
objects; never an empty file under a final name).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import BinaryIO, Sequence

from backends import BackendError, BeforeCommit, ObjectInfo, StagedObject, StagedPuts
from backends.retry import NO_RETRY, RetryPolicy

log = logging.getLogger(__name__)


class GroupCommit:
    """Writes through a :class:`StagedPuts` destination, made durable in shared barriers.

    :meth:`put` stages on the calling thread (raising as ``Backend.put`` does) and returns a future
    of the object's :class:`ObjectInfo`, resolved once the object is durable under its key (or
    failed with the BackendError of its publish or barrier). Futures resolve on the commit thread:
    their callbacks must not block. :meth:`close` finishes every write already staged.
    """

    def __init__(self, dest: StagedPuts, retry: RetryPolicy = NO_RETRY, *, gather: float = 0.0,
                 batch: int = 1024) -> None:
        """``retry``: how a stage that fails transiently is retried (when its data can be rewound).
        ``gather``: the least time between the starts of two barriers, unless ``batch`` writes are
        waiting (0: a barrier as soon as one is waiting); longer means fewer, larger batches, and
        each write waits longer."""
        self._dest = dest
        self._retry = retry
        self._gather = gather
        self._batch = batch
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._staged: list[tuple[StagedObject, Future]] = []
        self._closing = False
        self._stopped = False
        self.barriers = 0
        self._last_barrier = 0.0
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def put(self, key: str, data: BinaryIO, *, size: int | None = None,
            before_commit: BeforeCommit | None = None) -> "Future[ObjectInfo]":
        staged = self._stage(key, data, size, before_commit)
        future: Future = Future()
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._staged.append((staged, future))
                self._wake.notify()
        if stopped:
            self._dest.discard(staged)
            raise BackendError(f"{key}: the pass's writes are closed", key=key)
        return future

    def _stage(self, key: str, data: BinaryIO, size: int | None, before_commit: BeforeCommit | None) -> StagedObject:
        start = data.tell() if data.seekable() else None
        if start is None:
            return self._dest.stage(key, data, size=size, before_commit=before_commit)

        def attempt() -> StagedObject:
            data.seek(start)
            return self._dest.stage(key, data, size=size, before_commit=before_commit)

        return self._retry.call(attempt, what=f"put {key}")

    def close(self) -> None:
        """Publish and make durable every write staged so far, then stop the commit thread."""
        with self._lock:
            self._closing = True
            self._wake.notify()
        self._thread.join()

    def _run(self) -> None:
        published: list[tuple[ObjectInfo, Future]] = []
        while True:
            with self._lock:
                while not self._staged and not published and not self._closing:
                    self._wake.wait()
                if self._gather:
                    self._wake.wait_for(lambda: self._closing or len(self._staged) >= self._batch,
                                        timeout=self._last_barrier + self._gather - time.monotonic())
                self._last_barrier = time.monotonic()
                if not self._staged and not published:
                    self._stopped = True
                    return
                batch, self._staged = self._staged, []
            try:
                self._dest.barrier()
                self.barriers += 1
            except Exception as exc:  # noqa: BLE001 - every waiting write fails with it; the thread goes on
                log.error("a barrier failed: %s", exc)
                if not isinstance(exc, BackendError):
                    exc = BackendError(f"the destination's barrier failed: {exc!r}")
                for staged, future in batch:
                    self._dest.discard(staged)
                    future.set_exception(exc)
                for _, future in published:
                    future.set_exception(exc)
                published = []
                continue
            for info, future in published:  # callbacks may stage more: the lock is not held here
                future.set_result(info)
            published = []
            for staged, future in batch:
                try:
                    published.append((self._dest.publish(staged), future))
                except Exception as exc:  # noqa: BLE001 - the write's failure, handed to its future
                    future.set_exception(exc)


def all_of(futures: Sequence[Future]) -> Future:
    """A future that resolves once every one of ``futures`` has: to None, or to the first exception met."""
    result: Future = Future()
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            failure = next((f.exception() for f in futures if f.exception() is not None), None)
            if failure is None:
                result.set_result(None)
            else:
                result.set_exception(failure)

    if not futures:
        result.set_result(None)
    for future in futures:
        future.add_done_callback(one_done)
    return result


def pass_on(done: Future, result: Future) -> None:
    """Settle ``result`` as ``done`` was settled (a callback for ``done``)."""
    try:
        result.set_result(done.result())
    except BaseException as exc:  # noqa: BLE001 - handed on
        result.set_exception(exc)


__all__ = ["GroupCommit", "all_of", "pass_on"]
