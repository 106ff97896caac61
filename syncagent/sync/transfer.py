"""Copying blobs: streamed, hashed while they stream, checked before they become visible.

A :class:`BlobCopier` copies each blob at most once per pass, whatever the
number of repositories that need it, on a bounded pool of threads, and answers
each request with a future of :class:`BlobOutcome`.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from backends import Backend, BackendError, CopyUnverifiable, NotFound, SymlinkRefused, TransientError, server_copy_of

from .layout import BlobData, Digest, DigestSet, key_of
from .report import Problem, Report

RETRY_DELAYS = (0.2, 1.0, 3.0)
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


def _completed(outcome: "BlobOutcome") -> Future:
    future: Future = Future()
    future.set_result(outcome)
    return future


_PRESENT = _completed(BlobOutcome(True))


class BlobCopier:
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
            submitted = future is None or (fresh and future.done())
            if submitted:
                future = self.pool.submit(self._ensure, digest, content)
                self._futures[digest] = future
        if submitted:  # outside the lock: a copy that already finished runs the callback right here
            future.add_done_callback(lambda done, digest=digest: self._settle(digest, done))
        return future

    def _settle(self, digest: Digest, future: Future) -> None:
        """A finished copy whose blob is confirmed on the destination is remembered as a digest only
        (memory stays small); failed ones keep their future."""
        with self._lock:
            if digest in self.confirmed and self._futures.get(digest) is future:
                del self._futures[digest]

    def _ensure(self, digest: Digest, content: bytes | None) -> BlobOutcome:
        key = key_of(BlobData(digest))
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                return self._copy(digest, key, content)
            except TransientError as exc:
                failure, kind = exc, "write-failed"
            except SourceReadError as exc:
                if not isinstance(exc.cause, TransientError):
                    kind = "symlink-refused" if isinstance(exc.cause, SymlinkRefused) else "read-failed"
                    return self._failed(digest, key, kind, f"reading the source failed: {exc.cause}")
                failure, kind = exc.cause, "read-failed"
            except ShortRead as exc:
                failure, kind = exc, "read-failed"
            if delay is None or self.cancelled.is_set():
                return self._failed(digest, key, kind, f"gave up after {attempt + 1} attempts: {failure}")
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _copy(self, digest: Digest, key: str, content: bytes | None) -> BlobOutcome:
        if self.cancelled.is_set():
            raise Cancelled()
        try:
            size = len(content) if content is not None else self._source_size(key)
        except NotFound:
            return BlobOutcome(False, absent=True, problem=Problem("missing-blob", "blob data missing at the source", digest=str(digest), key=key))
        except BackendError as exc:
            raise SourceReadError(exc) from exc
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
                written = self._write(key, reader, size, check_digest, content is None)
            except CopyUnverifiable as exc:
                log.warning("server-side copies stop for this pass: %s", exc)
                self._server_copy = None
                return self._copy(digest, key, content)  # once more, streamed
            except DigestMismatch as exc:
                return self._failed(digest, key, "digest-mismatch", f"source blob is corrupt: {exc}")
            except TransientError:
                raise
            except BackendError as exc:
                return self._failed(digest, key, "write-failed", str(exc))
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
