"""Durable writes in batches: many puts share one barrier instead of each paying for its own fsyncs.

On a destination with the :class:`~backends.base.StagedPuts` ability (the
filesystem with fsync on), a :class:`GroupCommit` makes each write in three
moves, the last two on one thread that serves every write of the pass::

    stage     the bytes, under a staging name, checked (on the caller's thread)
    barrier   syncfs: the staged bytes are durable, and every name published before
    publish   rename to the key: visible, durable at the next barrier
    -> the write's future resolves

One barrier serves every write waiting at that point: while one ``syncfs``
runs, the next batch gathers. A step of the plan whose writes went this way
ends when their futures resolve (execute.py runs it asynchronously), and only
then may the steps that need it run. :meth:`GroupCommit.close` puts a last
barrier after the last publish, so a pass ends with everything durable.

Why no name can become durable before what it needs (docs/design.md,
"Durability in batches"): if X needs Y (a link needs the blob it names, a
revision link its layer links, a tag its revision link), X is staged only
after Y's step ended, so after Y was published; X is published only after a
barrier that began after X was staged. That barrier made Y's name durable,
and Y's bytes were durable before Y had a name. So after a crash at any
instant, every name on disk holds its whole, verified bytes, and whatever it
names is there too.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import BinaryIO, Sequence

from backends import BackendError, BeforeCommit, ObjectInfo, StagedObject, StagedPuts
from backends.retry import NO_RETRY, RetryPolicy

log = logging.getLogger(__name__)


class GroupCommit:
    """Writes through a :class:`StagedPuts` destination, made durable in shared barriers.

    :meth:`put` stages on the calling thread (raising as ``Backend.put`` does) and returns a future
    of the object's :class:`ObjectInfo`, resolved once it is published under its key after a barrier
    made its bytes durable (or failed with the BackendError of that barrier or of the publish).
    Anything staged after that is published after another barrier, which makes this name durable
    first. Futures resolve on the commit thread: their callbacks must not block. :meth:`close`
    finishes every write already staged and makes it durable.
    """

    def __init__(self, dest: StagedPuts, retry: RetryPolicy = NO_RETRY) -> None:
        """``retry``: how a stage that fails transiently is retried (when its data can be rewound)."""
        self._dest = dest
        self._retry = retry
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._staged: list[tuple[StagedObject, Future]] = []
        self._closing = False
        self._stopped = False
        self.barriers = 0
        self._failure: BackendError | None = None  # the last barrier's, raised by close()
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
        return self._retry.call_rewinding(data, lambda: self._dest.stage(key, data, size=size, before_commit=before_commit),
                                          what=f"put {key}")

    def close(self) -> None:
        """Publish every write staged so far, make everything durable, and stop the commit thread.

        Raises BackendError when the last barrier fails: the writes published since the one before
        may not be durable."""
        with self._lock:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        unsynced = False  # names published since the last barrier
        while True:
            with self._lock:
                while not self._staged and not self._closing:
                    self._wake.wait()
                batch, self._staged = self._staged, []
                last = not batch  # closing, nothing staged
                if last and not unsynced:
                    self._stopped = True
                    return
            failure = self._barrier()
            if last:
                with self._lock:
                    self._stopped = True
                self._failure = failure
                return
            if failure is not None:
                for staged, future in batch:
                    self._dest.discard(staged)
                    future.set_exception(failure)
                continue
            unsynced = bool(batch)
            for staged, future in batch:  # callbacks may stage more: the lock is not held here
                try:
                    info = self._dest.publish(staged)
                except Exception as exc:  # noqa: BLE001 - the write's failure, handed to its future
                    future.set_exception(exc)
                else:
                    future.set_result(info)

    def _barrier(self) -> BackendError | None:
        try:
            self._dest.barrier()
        except Exception as exc:  # noqa: BLE001 - what waits for it fails with it; the thread goes on
            log.error("a barrier failed: %s", exc)
            return exc if isinstance(exc, BackendError) else BackendError(f"the destination's barrier failed: {exc!r}")
        self.barriers += 1
        return None


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
