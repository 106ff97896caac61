"""Records of passes that publish tags, so that the pass after a dead one finishes its work.

A tag is published in two writes: ``current/link``, then the tag's history
(``index``) link. A pass that dies between the two (SIGKILL, a lost host, a
failed write) leaves a tag whose ``current/link`` matches the source: the next
pass takes it as up to date and would never look at the history link. On
RADOS the same window can leave the history link committed without its
listing markers (an ``m:`` record that only a read of that key repairs).

So a pass writes ``.syncagent/passes/<id>.json`` (outside ``docker/``, no
registry sees it) before its first tag write, and deletes it when it ends
without an interruption or a failed write. A pass that finds records left by
others checks the history link of every tag it takes as up to date in their
scope (one stat each, which also lets RADOS finish pending markers) and writes
the missing ones; once that check has ended cleanly it deletes the records it
covered. A pass that publishes nothing and finds no record writes nothing.

A record's scope is ``["*"]`` for a pass over every repository, else the
repository patterns it was limited to (the sidecar's passes: one repository
each; a clean reconcile of the sidecar clears what was there when it started).
A record still being written by a live pass elsewhere only costs this pass its
stats.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from backends import Backend, BackendError, NotFound

RECORDS_PREFIX = ".syncagent/passes/"
EVERYTHING = "*"


@dataclass(frozen=True)
class UnfinishedPass:
    key: str
    scope: tuple[str, ...]

    def covers(self, repository: str) -> bool:
        return any(fnmatch.fnmatchcase(repository, pattern) for pattern in self.scope)


def read_records(dest: Backend) -> list[UnfinishedPass]:
    """The records on ``dest``; one that cannot be parsed counts as a pass over everything."""
    records = []
    try:
        names = [entry.name for entry in dest.iter_children(RECORDS_PREFIX) if not entry.is_prefix]
    except NotFound:
        return []
    for name in sorted(names):
        key = RECORDS_PREFIX + name
        try:
            with dest.open_read(key) as stream:
                scope = json.loads(stream.read(64 * 1024)).get("scope")
        except NotFound:
            continue  # its pass just ended
        except (BackendError, ValueError, AttributeError):
            scope = None
        if not isinstance(scope, list) or not scope or not all(isinstance(p, str) for p in scope):
            scope = [EVERYTHING]
        records.append(UnfinishedPass(key, tuple(scope)))
    return records


class PassRecords:
    """This pass's record and the ones it found. Thread-safe: tags are published from several threads."""

    def __init__(self, dest: Backend, scope: tuple[str, ...], *, dry_run: bool = False) -> None:
        self.dest = dest
        self.scope = scope or (EVERYTHING,)
        self.dry_run = dry_run
        try:
            self.earlier = read_records(dest)
        except BackendError:
            self.earlier = [UnfinishedPass("", (EVERYTHING,))]  # unknown: check everything, delete nothing
        self.key = f"{RECORDS_PREFIX}{uuid.uuid4().hex}.json"
        self._written = False
        self._lock = threading.Lock()

    def check_history(self, repository: str) -> bool:
        """Whether a dead pass may have left a history link of ``repository`` unwritten."""
        return any(record.covers(repository) for record in self.earlier)

    def before_tag_write(self) -> None:
        """Write this pass's record, once, before its first tag write. Raises BackendError."""
        if self.dry_run or self._written:
            return
        with self._lock:
            if self._written:
                return
            content = json.dumps(
                {
                    "scope": list(self.scope),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            ).encode()
            self.dest.put(self.key, io.BytesIO(content), size=len(content))
            self._written = True

    def finish(self, *, wrote_all: bool, checked_all: bool) -> None:
        """Drop this pass's record if ``wrote_all`` (no interruption, no failed write), and the earlier
        records its scope covers if also ``checked_all`` (every repository in scope was read).

        Best effort: a record that cannot be deleted only makes the next pass check again.
        """
        if self.dry_run or not wrote_all:
            return
        done = [UnfinishedPass(self.key, self.scope)] if self._written else []
        delete_records(self.dest, done + (self.earlier if checked_all else []), self.scope)


def delete_records(dest: Backend, records: list[UnfinishedPass], scope: tuple[str, ...]) -> None:
    """Delete the ``records`` a clean pass over ``scope`` covered: those whose scope lies inside it.

    Best effort: a record that cannot be deleted only makes the next pass check again.
    """
    for record in records:
        if record.key and (EVERYTHING in scope or set(record.scope) <= set(scope)):
            try:
                dest.delete(record.key)
            except BackendError:
                pass


__all__ = ["EVERYTHING", "RECORDS_PREFIX", "UnfinishedPass", "PassRecords", "delete_records", "read_records"]
