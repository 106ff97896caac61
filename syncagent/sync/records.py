"""Records of passes that publish tags, so that the pass after a dead one finishes its work.

A tag is published in two writes: ``current/link``, then the tag's history
(``index``) link. A pass that dies between the two (SIGKILL, a lost host) or
whose second write fails leaves a tag whose ``current/link`` matches: the next
pass takes it as up to date and would never look at the history link. On
RADOS the same window can leave the history link committed without its
listing markers (an ``m:`` record that only a read of that key repairs).

So a pass puts ``.syncagent/passes/<id>.json`` on the destination (outside
``docker/``: no registry reads it) right before its first tag write, renews
it every ``RENEW_AFTER`` seconds while it runs, and deletes it when it ends
without an interruption or a failed write. A pass that finds records stats
the history link of every tag the destination holds in their scope (which on
RADOS also finishes pending markers) and writes the missing ones. It deletes
the dead ones among them once those checks are complete for its whole scope,
or when it leaves a record of its own that covers them (they do not pile up).
A pass that publishes nothing and finds no record writes nothing.

Dead or alive is decided when a pass starts, and only "dead" records are ever
deleted: one of this process whose pass has ended; one written on this host,
boot and pid namespace by a process that is gone (a record names its writer
with the fields of ``backends.processes.WriterIdentity``: host, boot, pidns,
pid, start); else one not renewed for
``STALE_AFTER`` seconds (hosts' clocks must agree within a few minutes). Right
before deleting, the record is read again and left alone if it was renewed
meanwhile. A record that cannot be parsed counts as a dead pass over
everything.
"""

from __future__ import annotations

import fnmatch
import io
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, replace

from backends import Backend, BackendError, NotFound
from backends.processes import WriterIdentity

from .discovery import read_small
from .jsonsafe import loads_bounded
from .shard import Shard

log = logging.getLogger(__name__)

RECORDS_PREFIX = ".syncagent/passes/"
EVERYTHING = "*"
RENEW_AFTER = 60.0
STALE_AFTER = 600.0
_MAX_SCOPE = 64  # longer scopes are recorded as everything (wider is safe)
_MAX_RECORD_BYTES = 64 * 1024

_ACTIVE: set[str] = set()  # the records of passes in progress in this process
_ACTIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class UnfinishedPass:
    """A record found on the destination. ``dead``: as judged when read (for a record of this
    process, ``local``, judged again when a pass starts). ``renewed``: as read, to see a renewal.
    ``shard``: the pass covered only that shard's repositories among those ``scope`` matches."""

    key: str
    scope: tuple[str, ...]
    dead: bool
    renewed: float | None = None
    local: bool = False
    shard: Shard | None = None

    def covers(self, repository: str) -> bool:
        if self.shard is not None and not self.shard.owns(repository):
            return False
        return any(fnmatch.fnmatchcase(repository, pattern) for pattern in self.scope)

    def within(self, scope: tuple[str, ...], shard: Shard | None = None) -> bool:
        """Whether a pass over ``scope`` (and ``shard``) covers every repository of this record's scope."""
        if shard is not None and shard != self.shard:
            return False
        if EVERYTHING in scope:
            return True
        return all(pattern in scope or (not _is_glob(pattern) and any(fnmatch.fnmatchcase(pattern, p) for p in scope))
                   for pattern in self.scope)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _running(key: str) -> bool:
    with _ACTIVE_LOCK:
        return key in _ACTIVE


def _parse(key: str, raw: bytes, now: float) -> UnfinishedPass:
    """A record from its bytes; anything unexpected makes it a dead pass over everything."""
    try:
        content = loads_bounded(raw)
        if not isinstance(content, dict):
            raise ValueError("not an object")
        writer = WriterIdentity.from_dict(content)
        scope, renewed = tuple(content["scope"]), content["renewed"]
        shard = Shard.parse(content["shard"]) if content.get("shard") is not None else None
        if not (scope and all(isinstance(p, str) and p for p in scope)
                and isinstance(renewed, (int, float)) and renewed == renewed):
            raise ValueError("unexpected fields")
    except Exception:  # noqa: BLE001 - whatever the bytes are, they are not a live syncagent's record
        return UnfinishedPass(key, (EVERYTHING,), dead=True)
    if writer == WriterIdentity.current():
        return UnfinishedPass(key, scope, dead=not _running(key), renewed=float(renewed), local=True, shard=shard)
    alive = writer.alive()
    if alive is not None:
        return UnfinishedPass(key, scope, dead=not alive, renewed=float(renewed), shard=shard)
    return UnfinishedPass(key, scope, dead=now - renewed > STALE_AFTER, renewed=float(renewed), shard=shard)


def _read_one(dest: Backend, key: str, now: float) -> UnfinishedPass | None:
    """The record at ``key``, None if it is gone. Raises BackendError."""
    try:
        return _parse(key, read_small(dest, key, _MAX_RECORD_BYTES), now)
    except NotFound:
        return None


def read_records(dest: Backend) -> list[UnfinishedPass]:
    """The records on ``dest``. Raises BackendError when they cannot be listed."""
    now = time.time()
    try:
        names = sorted(entry.name for entry in dest.iter_children(RECORDS_PREFIX) if not entry.is_prefix)
    except NotFound:
        return []
    records = []
    for name in names:
        try:
            record = _read_one(dest, RECORDS_PREFIX + name, now)
        except BackendError:
            record = UnfinishedPass(RECORDS_PREFIX + name, (EVERYTHING,), dead=False)  # unreadable: check, keep
        if record is not None:
            records.append(record)
    return records


def load_records(dest: Backend) -> list[UnfinishedPass]:
    """:func:`read_records`, or when they cannot be listed a stand-in that makes a pass check everything
    and delete nothing (logged)."""
    try:
        return read_records(dest)
    except BackendError as exc:
        log.warning("cannot list the pass records %s on %s (%s): checking every tag's history link", RECORDS_PREFIX, dest.url, exc)
        return [UnfinishedPass("", (EVERYTHING,), dead=False)]


def delete_records(dest: Backend, records: list[UnfinishedPass], scope: tuple[str, ...], shard: Shard | None = None) -> list[str]:
    """Delete the dead ``records`` a pass over ``scope`` (and ``shard``) covered, unless renewed since they
    were read; the keys deleted. Best effort: one left behind only makes a later pass check again."""
    deleted = []
    for record in records:
        if not (record.key and record.dead and record.within(scope, shard)):
            continue
        try:
            now = _read_one(dest, record.key, time.time())
            if now is None:
                deleted.append(record.key)  # gone already
                continue
            if not record.local and now.renewed != record.renewed:
                continue  # renewed meanwhile: its pass is alive (one of this process cannot be, once ended)
            dest.delete(record.key)
            deleted.append(record.key)
        except BackendError as exc:
            log.warning("cannot delete the pass record %s: %s", record.key, exc)
    return deleted


class PassRecords:
    """This pass's record and the ones it found when it started. Thread-safe: tags are published
    from several threads at once."""

    def __init__(self, dest: Backend, scope: tuple[str, ...], earlier: list[UnfinishedPass], *, dry_run: bool = False,
                 shard: Shard | None = None) -> None:
        self.dest = dest
        self.scope = scope or (EVERYTHING,)
        self.shard = shard
        # A record of this process is dead once its pass has ended; judged now, as this pass starts.
        self.earlier = [replace(r, dead=not _running(r.key)) if r.local else r for r in earlier]
        self.dry_run = dry_run
        self.key = f"{RECORDS_PREFIX}{uuid.uuid4().hex}.json"
        self.started = time.time()
        self.failed: BackendError | None = None  # why this pass has no record
        self.kept = False  # this pass ended leaving its record
        self.checked = False  # this pass ended with every history check it owed done
        self.deleted: list[str] = []  # earlier records this pass deleted
        self._written = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        with _ACTIVE_LOCK:
            _ACTIVE.add(self.key)

    @classmethod
    def load(cls, dest: Backend, scope: tuple[str, ...], *, dry_run: bool = False, shard: Shard | None = None) -> "PassRecords":
        return cls(dest, scope, load_records(dest), dry_run=dry_run, shard=shard)

    def may_lack_history(self, repository: str) -> bool:
        """Whether a pass that did not finish may have left a history link of ``repository`` unwritten."""
        return any(record.covers(repository) for record in self.earlier)

    def own_record(self) -> UnfinishedPass:
        """This pass's record as others will find it once the pass has ended (for the sidecar's list)."""
        return UnfinishedPass(self.key, self._recorded_scope(), dead=False, local=True, shard=self.shard)

    def before_tag_write(self) -> None:
        """Put this pass's record, once, before its first tag write, and start renewing it (transient
        failures are retried by the destination's retry wrapper, engine.py). A record that cannot be written is not tried again: ``failed`` says
        why, and the tags are published without it."""
        if self.dry_run:
            return
        with self._lock:
            if self._written or self.failed is not None:
                return
            try:
                self._put()
            except BackendError as exc:
                self.failed = exc
                log.error("cannot write the pass record %s: %s", self.key, exc)
                return
            self._written = True
        threading.Thread(target=self._renew, name="pass-record", daemon=True).start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_AFTER):
            try:
                with self._lock:
                    if not self._stop.is_set():
                        self._put()
            except BackendError as exc:
                log.warning("cannot renew the pass record %s: %s", self.key, exc)

    def _recorded_scope(self) -> tuple[str, ...]:
        return self.scope if len(self.scope) <= _MAX_SCOPE else (EVERYTHING,)

    def _put(self) -> None:
        content = json.dumps({
            "scope": list(self._recorded_scope()), **WriterIdentity.current().as_dict(), "started": self.started,
            "renewed": time.time(), **({"shard": str(self.shard)} if self.shard is not None else {}),
        }).encode()
        self.dest.put(self.key, io.BytesIO(content), size=len(content))

    def finish(self, *, wrote_all: bool, checked_all: bool) -> None:
        """At the end of a pass. ``wrote_all``: no interruption and no failed write; ``checked_all``:
        the pass went through every repository of its scope and every history check it owed ended.

        Without a failed write this pass's record goes. The dead earlier records it covers go when
        ``checked_all``, or when this pass keeps its own record (renewed now), which covers theirs.
        """
        self._stop.set()
        self.checked = checked_all
        try:
            if self.dry_run:
                return
            kept = False
            with self._lock:
                if self._written and not wrote_all:
                    try:
                        self._put()  # renewed now: not taken for dead while it matters
                        kept = True
                    except BackendError as exc:
                        log.warning("cannot renew the pass record %s: %s", self.key, exc)
            self.kept = kept
            if self._written and wrote_all:
                try:
                    self.dest.delete(self.key)
                except BackendError as exc:
                    log.warning("cannot delete the pass record %s: %s", self.key, exc)
            if checked_all or kept:
                self.deleted = delete_records(self.dest, self.earlier, self.scope, self.shard)
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(self.key)


__all__ = [
    "EVERYTHING", "RECORDS_PREFIX", "RENEW_AFTER", "STALE_AFTER", "PassRecords", "UnfinishedPass",
    "delete_records", "load_records", "read_records",
]
