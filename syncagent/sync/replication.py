"""Waiting for blobs the storage's own replication brings (``--blobs external``, the supplement mode).

With S3 bucket replication, Ceph RGW multisite or MinIO replication carrying
``ROOT/docker/registry/v2/blobs/`` from the primary's bucket to the
secondary's, the pass copies no blob data: each blob a manifest needs is
*awaited* -- the destination is stat'ed until the object is there with the
size the source reports and, where both sides report one, the same ETag
(replication keeps it). A manifest blob, whose bytes the pass holds, is also
read back and compared. Only then do the links that need the blob get written,
so a tag still becomes current only once its whole closure has arrived.

One :class:`BlobWaiter` serves every repository of a pass (or of a sidecar):
a blob awaited by several repositories is looked for once, and its wait
started when it was first asked for. Checks are spaced by half the time
waited so far (from ``poll_min`` up to ``poll_max``): an arrival is seen at
most about half its replication lag late, and a slow blob costs few requests.
A blob still missing after ``copy_after`` seconds (when set) is copied by the
pass itself; after ``timeout`` seconds it fails as ``blob-not-replicated``.
"""

from __future__ import annotations

import heapq
import io
import itertools
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from backends import Backend, BackendError, NotFound

from .discovery import read_small
from .layout import ROOT, BlobData, Digest, DigestSet, key_of
from .report import Problem
from .steps import AwaitBlob
from .transfer import BlobOutcome

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 900.0  # S3 Replication Time Control's promise: 99.99% within 15 minutes
POLL_MIN = 0.05
POLL_MAX = 5.0

Copy = Callable[[Digest], Future]
Observer = Callable[[str, dict], None]


@dataclass
class _Wait:
    digest: Digest
    key: str
    started: float
    copy: Copy | None
    copy_after: float | None
    content: bytes | None = None  # a manifest's bytes, compared once the blob arrived
    size: int | None = None  # the source's size (known for manifests, else stat'ed at the source)
    etag: str | None = None
    source_checked: bool = False
    checks: int = 0
    future: Future = field(default_factory=Future)


class BlobWaiter:
    """Awaits blobs on the destination (see the module docstring). :meth:`close` when done."""

    def __init__(
        self,
        source: Backend,
        dest: Backend,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        confirmed: DigestSet | None = None,
        workers: int = 4,
        poll_min: float = POLL_MIN,
        poll_max: float = POLL_MAX,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.dest = dest
        self.timeout = timeout
        self.confirmed = confirmed if confirmed is not None else DigestSet()
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.observer = observer or (lambda event, data: None)
        self._clock = clock
        self._waits: dict[Digest, _Wait] = {}
        self._due: list[tuple[float, int, Digest]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._held_tags = 0
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="await")
        self._thread = threading.Thread(target=self._schedule_loop, name="await-scheduler", daemon=True)
        self._thread.start()

    # --- asking -------------------------------------------------------------------------------------

    def await_blob(self, step: AwaitBlob, *, content: bytes | None = None, copy: Copy | None = None) -> Future:
        """A future of the blob's :class:`BlobOutcome`. ``content``: the bytes expected (a manifest);
        ``copy``: how to copy it after ``step.copy_after`` seconds."""
        with self._cond:
            if step.digest in self.confirmed:
                return _done(BlobOutcome(True))
            wait = self._waits.get(step.digest)
            if wait is not None:
                if step.copy_after is not None and copy is not None and wait.copy is None:
                    wait.copy, wait.copy_after = copy, step.copy_after
                return wait.future
            now = self._clock()
            wait = _Wait(step.digest, key_of(BlobData(step.digest)), now, copy, step.copy_after, content=content,
                         size=step.size if content is None else len(content))
            self._waits[step.digest] = wait
            heapq.heappush(self._due, (now, next(self._order), step.digest))
            self._cond.notify()
        self.observer("waiting", {"digest": str(step.digest)})
        return wait.future

    def hold_tags(self, count: int) -> None:
        """Tags whose publication now waits on awaited blobs (``count`` may be negative: released)."""
        with self._cond:
            self._held_tags += count

    def status(self) -> dict:
        """``awaiting`` blobs, the age of the ``oldest`` wait in seconds (0 when none), ``held_tags``."""
        with self._cond:
            now = self._clock()
            oldest = max((now - wait.started for wait in self._waits.values()), default=0.0)
            return {"awaiting": len(self._waits), "oldest": oldest, "held_tags": self._held_tags}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            waits, self._waits = list(self._waits.values()), {}
            self._cond.notify_all()
        for wait in waits:
            if not wait.future.done():
                wait.future.set_result(BlobOutcome(False, problem=Problem(
                    "blob-not-replicated", "the wait was abandoned (the pass stopped)", digest=str(wait.digest), key=wait.key)))
        self._pool.shutdown(wait=False, cancel_futures=True)  # may be called from one of its threads

    # --- looking ------------------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._due or self._due[0][0] > self._clock()):
                    timeout = None if not self._due else max(0.0, self._due[0][0] - self._clock())
                    self._cond.wait(timeout)
                if self._closed:
                    return
                _, _, digest = heapq.heappop(self._due)
                wait = self._waits.get(digest)
            if wait is not None:
                try:
                    self._pool.submit(self._check, wait)
                except RuntimeError:  # shut down meanwhile
                    return

    def _check(self, wait: _Wait) -> None:
        try:
            outcome = self._look(wait)
        except Exception as exc:  # noqa: BLE001 - a surprise fails this wait, not the waiter
            log.exception("unexpected error while awaiting %s", wait.digest)
            outcome = BlobOutcome(False, problem=Problem("read-failed", f"awaiting the blob failed: {type(exc).__name__}",
                                                         digest=str(wait.digest), key=wait.key))
        if outcome is not None:
            self._settle(wait, outcome)
            return
        waited = self._clock() - wait.started
        if wait.copy is not None and wait.copy_after is not None and waited >= wait.copy_after:
            self._hand_over(wait, waited)
            return
        if waited >= self.timeout:
            self._settle(wait, BlobOutcome(False, problem=Problem(
                "blob-not-replicated", f"waited {waited:.0f} s for the storage's replication", digest=str(wait.digest),
                key=wait.key)))
            return
        delay = min(self.poll_max, max(self.poll_min, waited / 2))
        if wait.copy_after is not None and wait.copy is not None:
            delay = min(delay, max(0.0, wait.copy_after - waited))
        delay = min(delay, max(0.0, self.timeout - waited))
        with self._cond:
            if self._waits.get(wait.digest) is wait:
                heapq.heappush(self._due, (self._clock() + delay, next(self._order), wait.digest))
                self._cond.notify()

    def _look(self, wait: _Wait) -> BlobOutcome | None:
        """The outcome when the wait is over, or None to look again later."""
        wait.checks += 1
        if not wait.source_checked:
            try:
                info = self.source.stat(wait.key)
            except NotFound:
                return BlobOutcome(False, absent=True, problem=Problem("missing-blob", "blob data missing at the source",
                                                                       digest=str(wait.digest), key=wait.key))
            except BackendError as exc:
                log.debug("cannot stat %s at the source yet: %s", wait.key, exc)
                return None
            wait.size, wait.etag, wait.source_checked = info.size, info.etag, True
        try:
            found = self.dest.stat(wait.key)
        except NotFound:
            return None
        except BackendError as exc:
            log.debug("cannot stat %s at the destination yet: %s", wait.key, exc)
            return None
        if found.size != wait.size or (wait.etag and found.etag and wait.etag != found.etag):
            return None  # another object (an older write, a rule copying something else): not ours yet
        if wait.content is not None and not self._holds(wait):
            return None
        return BlobOutcome(True, size=found.size)

    def _holds(self, wait: _Wait) -> bool:
        try:
            return read_small(self.dest, wait.key, len(wait.content or b"")) == wait.content
        except BackendError:
            return False

    def _hand_over(self, wait: _Wait, waited: float) -> None:
        self.observer("copy-after-wait", {"digest": str(wait.digest), "seconds": waited})
        copy = wait.copy(wait.digest)  # type: ignore[misc]
        copy.add_done_callback(lambda done: self._settle(wait, _result(done), copied=True))

    def _settle(self, wait: _Wait, outcome: BlobOutcome, *, copied: bool = False) -> None:
        with self._cond:
            if self._waits.get(wait.digest) is wait:
                del self._waits[wait.digest]
            if outcome.ok:
                self.confirmed.add(wait.digest)
        waited = self._clock() - wait.started
        if outcome.ok and not copied:
            self.observer("arrived", {"digest": str(wait.digest), "seconds": waited, "checks": wait.checks})
        elif not outcome.ok and not outcome.absent and not copied:
            self.observer("gave-up", {"digest": str(wait.digest), "seconds": waited, "problem": outcome.problem})
        if not wait.future.done():
            wait.future.set_result(outcome)


def _done(outcome: BlobOutcome) -> Future:
    future: Future = Future()
    future.set_result(outcome)
    return future


def _result(done: Future) -> BlobOutcome:
    try:
        return done.result()
    except Exception as exc:  # noqa: BLE001
        return BlobOutcome(False, problem=Problem("write-failed", f"copying after the wait failed: {type(exc).__name__}"))


# --- objects the replication never carries -------------------------------------------------------------

COPY_AFTER_HINT = "copy-after-suggested"


def holds_blobs(backend: Backend) -> bool:
    """Whether ``backend`` holds any blob data (one listing); True when it cannot be told."""
    try:
        return next(iter(backend.iter_children(f"{ROOT}/blobs/")), None) is not None
    except NotFound:
        return False
    except BackendError:
        return True


def copy_after_advice(problems: list[Problem], *, first_run: bool) -> Problem | None:
    """What to tell an operator of a ``--blobs external`` run without ``--copy-after``: a bucket
    replication rule never carries objects written before it existed (AWS replicates those only
    through S3 Batch Replication; RGW multisite can lose writes made before zone B had the bucket's
    policy). So after blobs that were never replicated, or on a ``first_run`` (a destination without
    any blob data, a source with some), suggest ``--copy-after``. None when there is nothing to say."""
    stuck = [p for p in problems if p.kind == "blob-not-replicated"]
    if stuck:
        reason = (f"{len(stuck)} blob(s) never arrived through the storage's replication. A replication rule does not "
                  "carry objects written before it existed (AWS: S3 Batch Replication does; Ceph RGW multisite: "
                  "`radosgw-admin bucket sync disable` then `enable` resends the bucket). To have syncagent copy "
                  "whatever is still missing after a while, run again with --copy-after DURATION (e.g. --copy-after 2m; "
                  "docs/supplement.md)")
    elif first_run:
        reason = ("the destination holds no blob data yet. If the registry existed before the replication "
                  "rule, its blobs are not replicated and every tag would wait --external-timeout and fail: give the "
                  "first run --copy-after DURATION (e.g. --copy-after 2m) so that syncagent copies what has not arrived "
                  "by then (docs/supplement.md)")
    else:
        return None
    return Problem(COPY_AFTER_HINT, reason)


# --- a replication rule that is too wide ---------------------------------------------------------------

CANARY_KEY = f"{ROOT}/.syncagent-canary"
"""An object syncagent places at the source, beside ``blobs/`` and ``repositories/``, and never writes
at a destination: a rule that replicates only ``ROOT/docker/registry/v2/blobs/`` never carries it, any
wider rule (no prefix, ``ROOT/``, ``ROOT/docker/``, RGW's default full mirror) does. No registry reads it."""


def place_canary(source: Backend) -> str | None:
    """Put the canary at the source unless it is there; None, or why it could not be placed."""
    try:
        source.stat(CANARY_KEY)
        return None
    except NotFound:
        pass
    except BackendError as exc:
        return f"cannot look for the canary {CANARY_KEY} at the source: {exc}"
    content = json.dumps({"kind": "syncagent-canary", "placed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "meaning": "replicated to a secondary, this shows the bucket replication rule is wider than "
                                     "docker/registry/v2/blobs/ (docs/supplement.md)"}).encode()
    try:
        source.put(CANARY_KEY, io.BytesIO(content), size=len(content))
    except BackendError as exc:
        return f"cannot place the canary {CANARY_KEY} at the source ({exc}): a replication rule that is too wide goes unnoticed"
    return None


def replication_too_wide(dest: Backend) -> Problem | None:
    """The problem a destination holding the canary shows, or None. Raises BackendError."""
    try:
        dest.stat(CANARY_KEY)
    except NotFound:
        return None
    return Problem(
        "replication-too-wide",
        "the destination holds the canary that syncagent places only at the source: the storage's replication carries "
        "more than docker/registry/v2/blobs/ (repositories/ too), so a registry reading the destination can list tags "
        "before their blobs arrive; restrict the rule to the prefix ROOTDIRECTORY/docker/registry/v2/blobs/ "
        "(docs/supplement.md)",
        key=CANARY_KEY,
    )


__all__ = [
    "BlobWaiter", "CANARY_KEY", "COPY_AFTER_HINT", "DEFAULT_TIMEOUT", "copy_after_advice", "holds_blobs",
    "place_canary", "replication_too_wide",
]
