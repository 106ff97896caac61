"""Copying blobs: streamed, hashed while they stream, checked before they become visible.

A :class:`BlobCopier` copies each blob at most once per pass, whatever the
number of repositories that need it, on a bounded pool of threads (or, between
local stores, small blobs right on the thread that asks), and answers each
request with a future of :class:`BlobOutcome`.
"""

from __future__ import annotations

import io
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from backends import (Backend, BackendError, CopyUnverifiable, NotFound, ObjectInfo, SymlinkRefused, TransientError,
                      server_copy_of)
from backends.retry import RetryPolicy

from .durability import GroupCommit, pass_on
from .layout import BlobData, Digest, DigestSet, key_of
from .report import Problem, Report

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The run was interrupted; whatever was in flight was abandoned whole."""


class DigestMismatch(Exception):
    """Blob content, read whole (as many bytes as the source's stat announced), does not match its digest."""


class ShortRead(Exception):
    """The bytes read from the source are not as many as its stat announced: a read cut short (or an
    object replaced meanwhile), retried like a transient error -- never judged by its digest."""


class SourceReadError(Exception):
    """Reading the source failed while the destination was being written."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class HashingReader(io.RawIOBase):
    """Wraps a source stream: hashes and counts what passes, reports progress, honours cancellation."""

    def __init__(self, stream: BinaryIO, digest: Digest, report: Report, cancelled: threading.Event) -> None:
        self._stream = stream
        self._hasher = digest.hasher()
        self._report = report
        self._cancelled = cancelled
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._cancelled.is_set():
            raise Cancelled()
        try:
            data = self._stream.read(size)
        except Exception as exc:
            raise SourceReadError(exc) from exc
        if data:
            self._hasher.update(data)
            self.size += len(data)
            self._report.emit("bytes", amount=len(data))
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


@dataclass(frozen=True)
class BlobOutcome:
    """``ok``: present on the destination (copied now, or already there).

    ``absent``: missing at the source. ``problem``: why it is not on the destination.
    """

    ok: bool
    copied: bool = False
    absent: bool = False
    size: int = 0
    problem: Problem | None = None


class _Retry(Exception):
    """A copy attempt failed in a way worth another attempt."""

    def __init__(self, failure: BaseException, kind: str) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.kind = kind


def _completed(outcome: "BlobOutcome") -> Future:
    future: Future = Future()
    future.set_result(outcome)
    return future


_PRESENT = _completed(BlobOutcome(True))


class _HandOff(Exception):
    """An inline copy that belongs on the pool: a large blob, or one to retry after a wait (``retry``:
    how the inline attempt failed)."""

    def __init__(self, retry: "_Retry | None" = None) -> None:
        super().__init__()
        self.retry = retry


class BlobCopier:
    """Copies blobs for every repository of a pass, each at most once.

    Copies run on ``pool``, except between local stores (``inline_limit`` > 0):
    a blob of at most ``inline_limit`` bytes is copied right on the thread that
    asks for it (the executor's), which costs no thread hand-off; a larger one,
    or one whose copy must be retried after a wait, goes to the pool. With
    ``commits`` (a destination that makes writes durable in batches,
    durability.py) a copy's future resolves once the blob is durable.
    """

    def __init__(
        self,
        source: Backend,
        dest: Backend,
        pool: ThreadPoolExecutor,
        report: Report,
        cancelled: threading.Event,
        *,
        recopy: frozenset = frozenset(),
        confirmed: set | None = None,
        dest_has_blobs: bool = True,
        commits: GroupCommit | None = None,
        inline_limit: int = 0,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        """``confirmed``: the pass's set of blobs confirmed present on the destination,
        added to here. ``dest_has_blobs`` False: the destination held no blob data
        when the pass began, so none is stat'ed before it is copied."""
        self.source = source
        self.dest = dest
        self.pool = pool
        self.report = report
        self.cancelled = cancelled
        self.recopy = recopy
        self.confirmed = confirmed if confirmed is not None else DigestSet()
        self.dest_has_blobs = dest_has_blobs
        self.commits = commits
        self.inline_limit = inline_limit
        self.retry = retry
        self._futures: dict[Digest, Future] = {}  # copies in flight, and failed ones
        self._lock = threading.Lock()
        self._server_copy = server_copy_of(dest)  # None once the store cannot vouch for its copies

    def ensure(self, digest: Digest, content: bytes | None = None, *, fresh: bool = False) -> Future:
        """A future of the blob's :class:`BlobOutcome`; the copy starts at most once per pass.

        ``fresh``: check the destination again even if this pass already did
        (used to repair a destination found damaged).
        """
        with self._lock:
            if digest in self.confirmed and not fresh:
                return _PRESENT
            future = self._futures.get(digest)
            started = future is None or (fresh and future.done())
            if started:
                future = Future()
                self._futures[digest] = future
        if started:
            future.add_done_callback(lambda done, digest=digest: self._settle(digest, done))
            if self.inline_limit:
                self._ensure_inline(digest, content, future)
            else:
                self._submit(digest, content, future)
        return future

    def _submit(self, digest: Digest, content: bytes | None, result: Future, earlier: "_Retry | None" = None) -> None:
        try:
            self.pool.submit(self._ensure, digest, content, result, earlier)
        except RuntimeError:  # the pool shut down: the pass is over
            result.set_exception(Cancelled())

    def _settle(self, digest: Digest, future: Future) -> None:
        """A finished copy whose blob is confirmed on the destination is remembered as a digest only
        (memory stays small); failed ones keep their future."""
        with self._lock:
            if digest in self.confirmed and self._futures.get(digest) is future:
                del self._futures[digest]

    def _ensure_inline(self, digest: Digest, content: bytes | None, result: Future) -> None:
        """One attempt on this thread; a large blob, or a failure worth retrying, goes to the pool."""
        key = key_of(BlobData(digest))
        try:
            outcome = self._attempt(digest, key, content, inline=True)
        except _HandOff as handoff:
            self._submit(digest, content, result, handoff.retry)
            return
        except BaseException as exc:  # noqa: BLE001 - the copy's failure is its future's
            result.set_exception(exc)
            return
        self._resolve(result, outcome)

    def _ensure(self, digest: Digest, content: bytes | None, result: Future, earlier: "_Retry | None" = None) -> None:
        try:
            outcome = self._retrying(digest, content, earlier)
        except BaseException as exc:  # noqa: BLE001 - the copy's failure is its future's
            result.set_exception(exc)
            return
        self._resolve(result, outcome)

    def _resolve(self, result: Future, outcome: "BlobOutcome | Future") -> None:
        if isinstance(outcome, Future):
            outcome.add_done_callback(lambda done: pass_on(done, result))
        else:
            result.set_result(outcome)

    def _retrying(self, digest: Digest, content: bytes | None, earlier: "_Retry | None" = None) -> "BlobOutcome | Future":
        """Attempts until one succeeds or the pass's retry policy gives up (the whole copy is retried: the
        source is read and hashed again); ``earlier``: how a first attempt, made inline, failed."""
        key = key_of(BlobData(digest))
        made, failure = (0, None) if earlier is None else (1, earlier)
        while True:
            if failure is not None:
                if made >= self.retry.attempts or self.cancelled.is_set():
                    return self._failed(digest, key, failure.kind, f"gave up after {made} attempts: {failure.failure}")
                self.retry.sleep(self.retry.delay(made))
            try:
                return self._attempt(digest, key, content)
            except _Retry as exc:
                failure = exc
            made += 1

    def _attempt(self, digest: Digest, key: str, content: bytes | None, *, inline: bool = False) -> "BlobOutcome | Future":
        """One copy; raises _Retry for what is worth another attempt (_HandOff instead when ``inline``)."""
        try:
            return self._copy(digest, key, content, inline=inline)
        except TransientError as exc:
            failure, kind = exc, "write-failed"
        except SourceReadError as exc:
            if not isinstance(exc.cause, TransientError):
                kind = "symlink-refused" if isinstance(exc.cause, SymlinkRefused) else "read-failed"
                return self._failed(digest, key, kind, f"reading the source failed: {exc.cause}")
            failure, kind = exc.cause, "read-failed"
        except ShortRead as exc:
            failure, kind = exc, "read-failed"
        if inline:
            raise _HandOff(retry=_Retry(failure, kind))
        raise _Retry(failure, kind)

    def _copy(self, digest: Digest, key: str, content: bytes | None, *, inline: bool = False) -> "BlobOutcome | Future":
        if self.cancelled.is_set():
            raise Cancelled()
        try:
            size = len(content) if content is not None else self._source_size(key)
        except NotFound:
            return BlobOutcome(False, absent=True, problem=Problem("missing-blob", "blob data missing at the source", digest=str(digest), key=key))
        except BackendError as exc:
            raise SourceReadError(exc) from exc
        if inline and size > self.inline_limit:
            raise _HandOff()
        try:
            present = self.dest_has_blobs and self.dest.stat(key).size == size and digest not in self.recopy
        except (NotFound, SymlinkRefused):  # a link at the key is replaced by the put; one on the way refuses it
            present = False
        except TransientError:
            raise
        except BackendError as exc:
            return self._failed(digest, key, "write-failed", f"cannot stat the destination: {exc}")
        if present:
            self.confirmed.add(digest)
            self.report.count("blobs_skipped")
            self.report.count("bytes_skipped", size)
            return BlobOutcome(True, size=size)
        self.report.emit("blob-planned", size=size)
        try:
            stream = io.BytesIO(content) if content is not None else self.source.open_read(key)
        except NotFound:
            return BlobOutcome(False, absent=True, problem=Problem("missing-blob", "blob data missing at the source", digest=str(digest), key=key))
        except BackendError as exc:
            raise SourceReadError(exc) from exc
        with stream:
            reader = HashingReader(stream, digest, self.report, self.cancelled)

            def check_digest() -> None:
                if reader.size != size:
                    raise ShortRead(f"read {reader.size} bytes of the source's {size}")
                if reader.hexdigest() != digest.hex:
                    raise DigestMismatch(f"content hashes to {digest.algorithm}:{reader.hexdigest()}")

            try:
                if self.commits is not None:
                    durable = self.commits.put(key, reader, size=size, before_commit=check_digest)
                else:
                    return self._copied(digest, self._write(key, reader, size, check_digest, content is None))
            except CopyUnverifiable as exc:
                log.warning("server-side copies stop for this pass: %s", exc)
                self._server_copy = None
                return self._copy(digest, key, content, inline=inline)  # once more, streamed
            except DigestMismatch as exc:
                return self._failed(digest, key, "digest-mismatch", f"source blob is corrupt: {exc}")
            except TransientError:
                raise
            except BackendError as exc:
                return self._failed(digest, key, "write-failed", str(exc))
        outcome: Future = Future()
        durable.add_done_callback(lambda done: self._made_durable(digest, key, done, outcome))
        return outcome

    def _made_durable(self, digest: Digest, key: str, done: Future, outcome: Future) -> None:
        try:
            written = done.result()
        except BackendError as exc:
            outcome.set_result(self._failed(digest, key, "write-failed", str(exc)))
        except BaseException as exc:  # noqa: BLE001 - handed on
            outcome.set_exception(exc)
        else:
            outcome.set_result(self._copied(digest, written))

    def _copied(self, digest: Digest, written: ObjectInfo) -> BlobOutcome:
        self.confirmed.add(digest)
        self.report.count("blobs_copied")
        self.report.count("bytes_copied", written.size)
        return BlobOutcome(True, copied=True, size=written.size)

    def _write(self, key: str, reader: "HashingReader", size: int, check_digest, stored: bool):
        """A server-side copy when the destination can make one from the source (the same S3 service,
        docs/design.md: checked against the bytes ``reader`` hashes before it is visible), else a put."""
        copier = self._server_copy
        if stored and copier is not None and copier.can_copy_from(self.source, size):
            written = copier.copy_from(self.source, key, reader, size=size, before_commit=check_digest)
            self.report.count("blobs_copied_server_side")
            return written
        return self.dest.put(key, reader, size=size, before_commit=check_digest)

    def _source_size(self, key: str) -> int:
        return self.source.stat(key).size

    def _failed(self, digest: Digest, key: str, kind: str, reason: str) -> BlobOutcome:
        problem = Problem(kind, reason, digest=str(digest), key=key)
        self.report.add_problem(problem)
        return BlobOutcome(False, problem=problem)
