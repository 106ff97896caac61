"""The sidecar's durable state, in one SQLite file: pending work, what was published, retry counts.

Tables::

    pending    one row per repository that has work waiting: a generation that
               every accepted event bumps, the wall time of the earliest event
               not yet handled, retry count, next retry time, last error
    events     every accepted event (source, repository, tag, digest, action,
               times); a bounded log for operators, pruned to ``EVENT_LOG_ROWS``
    published  the digest last published per (repository, tag), and when
    passes     one row per pass over a repository: trigger, times, result,
               counts (pruned to ``PASS_LOG_ROWS``)
    state      small key/value facts, e.g. the time of the last reconcile

An event is acknowledged only after :meth:`Journal.record_changes` committed
it (``synchronous=FULL``: committed means on disk), so ``kill -9`` at any
moment loses nothing that was acknowledged. A pass removes its repository's
``pending`` row only if no event arrived while it ran (the generation is
unchanged); otherwise the row stays and the repository is synced again.

One connection, serialised by a lock: the sidecar's write rate is a few
transactions per push. A second agent on the same journal is refused
(an exclusive ``flock`` on ``<journal>.lock``).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

SCHEMA_VERSION = 1
EVENT_LOG_ROWS = 10_000
PASS_LOG_ROWS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    repository  TEXT PRIMARY KEY,
    generation  INTEGER NOT NULL,
    first_event REAL NOT NULL,
    last_event  REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  REAL NOT NULL DEFAULT 0,
    last_error  TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    received   REAL NOT NULL,
    event_time REAL NOT NULL,
    source     TEXT NOT NULL,
    action     TEXT,
    repository TEXT NOT NULL,
    tag        TEXT,
    digest     TEXT,
    event_id   TEXT
);
CREATE TABLE IF NOT EXISTS published (
    repository   TEXT NOT NULL,
    tag          TEXT NOT NULL,
    digest       TEXT NOT NULL,
    published_at REAL NOT NULL,
    PRIMARY KEY (repository, tag)
);
CREATE TABLE IF NOT EXISTS passes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    repository     TEXT NOT NULL,
    trigger        TEXT NOT NULL,
    started        REAL NOT NULL,
    finished       REAL NOT NULL,
    result         TEXT NOT NULL,
    tags_published INTEGER NOT NULL,
    bytes_copied   INTEGER NOT NULL,
    problems       INTEGER NOT NULL,
    detail         TEXT
);
CREATE INDEX IF NOT EXISTS passes_by_repository ON passes (repository);
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class JournalError(RuntimeError):
    """The journal cannot be opened or written (locked by another agent, disk full, corrupt)."""


@dataclass(frozen=True)
class Change:
    """One reason to look at one repository: an accepted event (notification, filesystem) or a reconcile."""

    repository: str
    source: str
    event_time: float
    action: str | None = None
    tag: str | None = None
    digest: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class PendingRow:
    repository: str
    generation: int
    first_event: float
    last_event: float
    attempts: int
    not_before: float
    last_error: str | None


@dataclass(frozen=True)
class PassRecord:
    repository: str
    trigger: str
    started: float
    finished: float
    result: str
    tags_published: int = 0
    bytes_copied: int = 0
    problems: int = 0
    detail: str | None = None


class Journal:
    """The SQLite journal. Thread-safe; every public method is one transaction."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the journal's directory {self.path.parent}: {exc}") from exc
        self._lockfile = self._acquire_lockfile()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT OR IGNORE INTO state (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            version = self.get_state("schema_version")
            if version != str(SCHEMA_VERSION):
                raise JournalError(f"{self.path}: schema version {version}, this agent knows {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            self._release_lockfile()
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc

    def _acquire_lockfile(self):
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise JournalError(f"the journal {self.path} is in use by another agent (lock {lock_path})") from None
        return handle

    def _release_lockfile(self) -> None:
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._release_lockfile()

    def _transaction(self):
        return _Transaction(self._db)

    # --- pending work ------------------------------------------------------

    def record_changes(self, changes: Sequence[Change], *, received: float | None = None) -> dict[str, int]:
        """Durably record accepted events: log them and bump their repositories' pending rows.

        Returns each repository's pending generation after the change.
        """
        generations: dict[str, int] = {}
        if not changes:
            return generations
        received = time.time() if received is None else received
        with self._lock, self._transaction():
            for change in changes:
                self._db.execute(
                    "INSERT INTO events (received, event_time, source, action, repository, tag, digest, event_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (received, change.event_time, change.source, change.action, change.repository, change.tag,
                     change.digest, change.event_id),
                )
                self._db.execute(
                    "INSERT INTO pending (repository, generation, first_event, last_event) VALUES (?, 1, ?, ?)"
                    " ON CONFLICT (repository) DO UPDATE SET generation = generation + 1,"
                    " first_event = min(first_event, excluded.first_event),"
                    " last_event = max(last_event, excluded.last_event)",
                    (change.repository, change.event_time, change.event_time),
                )
            for repository in {change.repository for change in changes}:
                row = self._db.execute("SELECT generation FROM pending WHERE repository = ?", (repository,)).fetchone()
                generations[repository] = row[0]
        return generations

    def pending(self) -> list[PendingRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT repository, generation, first_event, last_event, attempts, not_before, last_error"
                " FROM pending ORDER BY first_event"
            ).fetchall()
        return [PendingRow(*row) for row in rows]

    def generation(self, repository: str) -> int:
        """The repository's pending generation; 0 when nothing is pending."""
        with self._lock:
            row = self._db.execute("SELECT generation FROM pending WHERE repository = ?", (repository,)).fetchone()
        return row[0] if row else 0

    def finish_pass(
        self,
        record: PassRecord,
        *,
        generation: int,
        published: Iterable[tuple[str, str]] = (),
        retry_at: float | None = None,
        attempts: int = 0,
        drop: bool = False,
    ) -> None:
        """Record a pass and settle its repository's pending row, in one transaction.

        ``generation`` is what the pass started from. Success (``retry_at`` None)
        or ``drop`` removes the row if no event arrived since; a failure to
        retry stores ``attempts``, ``retry_at`` and the error.
        """
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT INTO passes (repository, trigger, started, finished, result, tags_published, bytes_copied,"
                " problems, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.repository, record.trigger, record.started, record.finished, record.result,
                 record.tags_published, record.bytes_copied, record.problems, record.detail),
            )
            for tag, digest in published:
                self._db.execute(
                    "INSERT INTO published (repository, tag, digest, published_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest,"
                    " published_at = excluded.published_at",
                    (record.repository, tag, digest, record.finished),
                )
            if retry_at is None or drop:
                self._db.execute(
                    "DELETE FROM pending WHERE repository = ? AND generation = ?", (record.repository, generation)
                )
            else:
                self._db.execute(
                    "UPDATE pending SET attempts = ?, not_before = ?, last_error = ? WHERE repository = ?",
                    (attempts, retry_at, (record.detail or "")[:2000], record.repository),
                )

    def forget_pending(self, repository: str, generation: int) -> None:
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM pending WHERE repository = ? AND generation = ?", (repository, generation))

    # --- what was published and done --------------------------------------

    def published(self, repository: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT tag, digest FROM published WHERE repository = ?", (repository,)).fetchall()
        return dict(rows)

    def pass_count(self, repository: str | None = None) -> int:
        with self._lock:
            if repository is None:
                return self._db.execute("SELECT count(*) FROM passes").fetchone()[0]
            return self._db.execute("SELECT count(*) FROM passes WHERE repository = ?", (repository,)).fetchone()[0]

    def event_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM events").fetchone()[0]

    def prune(self, *, events: int = EVENT_LOG_ROWS, passes: int = PASS_LOG_ROWS) -> None:
        """Keep only the newest ``events`` event rows and ``passes`` pass rows."""
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", (events,))
            self._db.execute("DELETE FROM passes WHERE id <= (SELECT max(id) FROM passes) - ?", (passes,))

    # --- small facts --------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def get_float(self, key: str) -> float | None:
        with self._lock:
            value = self.get_state(key)
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); errors become JournalError."""

    def __init__(self, db: sqlite3.Connection | None) -> None:
        if db is None:
            raise JournalError("the journal is closed")
        self.db = db

    def __enter__(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot begin a journal transaction: {exc}") from exc
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as commit_error:
                self.db.execute("ROLLBACK")
                raise JournalError(f"cannot commit to the journal: {commit_error}") from commit_error
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if isinstance(exc, sqlite3.Error):
            raise JournalError(f"journal write failed: {exc}") from exc
