"""Records of passes that publish tags, so that the pass after a dead one finishes its work.

A tag is published in two writes: ``current/link``, then the tag's history
(``index``) link. A pass that dies between the two (SIGKILL, a lost host) or
whose second write fails leaves a tag whose ``current/link`` matches: the next
pass takes it as up to date and would never look at the history link. On
RADOS the same window can leave the history link committed without its
listing markers (an ``m:`` record that only a read of that key repairs).

So a pass writes ``.syncagent/passes/<id>.json`` on the destination (outside
``docker/``: no registry reads it) right before its first tag write, and
deletes it when it ends without an interruption or a failed write. A pass that
finds records of dead passes stats the history link of every tag the
destination holds in their scope (one stat each, which also lets RADOS finish
pending markers) and writes the missing ones. It deletes those records once it
has ended without any problem; if it ends with problems but left its own
record, which covers theirs, it deletes them too (they do not pile up). A pass
that publishes nothing and finds no record writes nothing.

Dead or alive: a record names its host, boot, pid and process start time, and
when it was last renewed (a pass re-puts it before a tag write once it is
``RENEW_AFTER`` seconds old). A pass deletes only records that were dead when
it started: written on this host by a process that is gone, or, from another
host, not renewed for ``STALE_AFTER`` seconds before it started. Every check it
makes comes after such a record's last tag write. A live record is checked
against, never deleted.
"""

from __future__ import annotations

import fnmatch
import io
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from backends import Backend, BackendError, NotFound, TransientError
from backends.processes import boot_id, process_start

log = logging.getLogger(__name__)

RECORDS_PREFIX = ".syncagent/passes/"
EVERYTHING = "*"
RENEW_AFTER = 60.0
STALE_AFTER = 600.0
_PUT_ATTEMPTS = 4

_ACTIVE: set[str] = set()  # the records of passes in progress in this process
_ACTIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class UnfinishedPass:
    """A record found on the destination, and whether its pass was known dead when it was read."""

    key: str
    scope: tuple[str, ...]
    dead: bool

    def covers(self, repository: str) -> bool:
        return any(fnmatch.fnmatchcase(repository, pattern) for pattern in self.scope)

    def within(self, scope: tuple[str, ...]) -> bool:
        """Whether a pass over ``scope`` covers every repository of this record's scope."""
        if EVERYTHING in scope:
            return True
        return all(pattern in scope or (not _is_glob(pattern) and any(fnmatch.fnmatchcase(pattern, p) for p in scope))
                   for pattern in self.scope)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _is_dead(key: str, content: dict, now: float) -> bool:
    """Dead for sure on this host (the process is gone), else not renewed for STALE_AFTER seconds."""
    try:
        host, boot, pid, start = str(content["host"]), str(content["boot"]), int(content["pid"]), str(content["start"])
        renewed = float(content["renewed"])
    except (KeyError, TypeError, ValueError):
        return True  # not written by a live syncagent
    if host == socket.gethostname() and boot and boot == boot_id():
        if pid == os.getpid() and start == process_start(pid):
            with _ACTIVE_LOCK:
                return key not in _ACTIVE  # this process's own: dead once its pass ended
        return process_start(pid) != start
    return now - renewed > STALE_AFTER


def read_records(dest: Backend) -> list[UnfinishedPass]:
    """The records on ``dest``. One that cannot be parsed counts as a dead pass over everything.

    Raises BackendError when the records cannot be listed.
    """
    now = time.time()
    try:
        names = sorted(entry.name for entry in dest.iter_children(RECORDS_PREFIX) if not entry.is_prefix)
    except NotFound:
        return []
    records = []
    for name in names:
        key = RECORDS_PREFIX + name
        try:
            with dest.open_read(key) as stream:
                content = json.loads(stream.read(64 * 1024))
        except NotFound:
            continue  # its pass just ended
        except (BackendError, ValueError):
            content = None
        if not isinstance(content, dict):
            records.append(UnfinishedPass(key, (EVERYTHING,), dead=True))
            continue
        scope = content.get("scope")
        if not isinstance(scope, list) or not scope or not all(isinstance(p, str) and p for p in scope):
            scope = [EVERYTHING]
        records.append(UnfinishedPass(key, tuple(scope), dead=_is_dead(key, content, now)))
    return records


def load_records(dest: Backend) -> list[UnfinishedPass]:
    """:func:`read_records`, or when they cannot be listed a stand-in that makes a pass check everything
    and delete nothing (logged)."""
    try:
        return read_records(dest)
    except BackendError as exc:
        log.warning("cannot list the pass records %s on %s (%s): checking every tag's history link", RECORDS_PREFIX, dest.url, exc)
        return [UnfinishedPass("", (EVERYTHING,), dead=False)]


def delete_records(dest: Backend, records: list[UnfinishedPass], scope: tuple[str, ...]) -> int:
    """Delete the dead ``records`` a pass over ``scope`` covered; how many. Best effort: one left
    behind only makes a later pass check again."""
    deleted = 0
    for record in records:
        if record.key and record.dead and record.within(scope):
            try:
                dest.delete(record.key)
                deleted += 1
            except BackendError as exc:
                log.warning("cannot delete the pass record %s: %s", record.key, exc)
    return deleted


class PassRecords:
    """This pass's record and the ones it found when it started. Thread-safe: tags are published
    from several threads at once."""

    def __init__(self, dest: Backend, scope: tuple[str, ...], earlier: list[UnfinishedPass], *, dry_run: bool = False) -> None:
        self.dest = dest
        self.scope = scope or (EVERYTHING,)
        self.earlier = earlier
        self.dry_run = dry_run
        self.key = f"{RECORDS_PREFIX}{uuid.uuid4().hex}.json"
        self.started = time.time()
        self.failed: BackendError | None = None  # why this pass has no record
        self.changed = False  # this pass left its record, or deleted earlier ones
        self._written_at: float | None = None
        self._lock = threading.Lock()
        with _ACTIVE_LOCK:
            _ACTIVE.add(self.key)

    @classmethod
    def load(cls, dest: Backend, scope: tuple[str, ...], *, dry_run: bool = False) -> "PassRecords":
        return cls(dest, scope, load_records(dest), dry_run=dry_run)

    def may_lack_history(self, repository: str) -> bool:
        """Whether a pass that did not finish may have left a history link of ``repository`` unwritten."""
        return any(record.covers(repository) for record in self.earlier)

    def before_tag_write(self) -> None:
        """Put this pass's record right before a tag write: the first time, and again once it is
        RENEW_AFTER seconds old (transient failures are retried). A record that cannot be written
        is not tried again: ``failed`` says why, and the tags are published without it."""
        if self.dry_run:
            return
        with self._lock:
            if self.failed is not None:
                return
            if self._written_at is not None and time.time() - self._written_at < RENEW_AFTER:
                return
            try:
                self._put()
            except BackendError as exc:
                self.failed = exc
                log.error("cannot write the pass record %s: %s", self.key, exc)

    def _put(self) -> None:
        pid = os.getpid()
        content = json.dumps({
            "scope": list(self.scope), "host": socket.gethostname(), "boot": boot_id(), "pid": pid,
            "start": process_start(pid) or "", "started": self.started, "renewed": time.time(),
        }).encode()
        for attempt in range(_PUT_ATTEMPTS):
            try:
                self.dest.put(self.key, io.BytesIO(content), size=len(content))
                break
            except TransientError:
                if attempt + 1 == _PUT_ATTEMPTS:
                    raise
                time.sleep(0.2 * 2**attempt)
        self._written_at = time.time()

    def finish(self, *, wrote_all: bool, problems: bool) -> None:
        """At the end of a pass. ``wrote_all``: no interruption, no failed write; ``problems``: the pass
        reported any problem or did not read everything in its scope.

        Without a failed write this pass's record goes; the dead earlier records it covers go when
        the pass saw no problem, or when its own record stays and covers them.
        """
        try:
            if self.dry_run:
                return
            with self._lock:
                written = self._written_at is not None
                if written and not wrote_all:
                    self.changed = True
                    try:
                        self._put()  # renewed: a concurrent pass must not take it for dead while it matters
                    except BackendError as exc:
                        log.warning("cannot renew the pass record %s: %s", self.key, exc)
            if written and wrote_all:
                try:
                    self.dest.delete(self.key)
                except BackendError as exc:
                    log.warning("cannot delete the pass record %s: %s", self.key, exc)
            if not problems or (written and not wrote_all):
                self.changed |= delete_records(self.dest, self.earlier, self.scope) > 0
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(self.key)


__all__ = [
    "EVERYTHING", "RECORDS_PREFIX", "RENEW_AFTER", "STALE_AFTER", "PassRecords", "UnfinishedPass",
    "delete_records", "load_records", "read_records",
]
