"""Filesystem events on a ``file://`` source: a changed tag or revision link means its repository needs a pass.

A watchdog observer (inotify on Linux) watches ``docker/registry/v2/repositories``
recursively. Any event under a repository's ``_manifests/tags/`` or
``_manifests/revisions/`` (a tag's ``current/link`` written in place by
registry 2.8, or renamed into place by later versions; a new revision link; a
tag directory created or removed) names that repository. Blob data,
``_layers`` and ``_uploads`` are ignored: they change nothing a client can see
until a manifest links them.

Events arrive in bursts (a push writes several links, each write several
events), so they are collected and handed to the queue every ``debounce``
seconds as one batch with each repository once. The queue's own settle time
coalesces further.

If the repositories directory does not exist yet (a new primary), it is
polled for; once it appears, every repository in it is queued, so the changes
made before the watch started are not missed (with ``scan_at_start``, the
same happens when the watch starts on an existing directory: for a service
that runs without a reconcile). If the watch cannot be set up
(e.g. the inotify watch limit, ``fs.inotify.max_user_watches``), the error is
logged and counted, and the reconcile remains the safety net.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from ..sync.layout import REPOSITORIES_PREFIX, InvalidPath, validate_repository

log = logging.getLogger(__name__)

MOVE_PAIRING_DELAY = 0.02
"""How long watchdog's inotify emitter holds an IN_MOVED_FROM to pair it with its IN_MOVED_TO.

Its default is 0.5 s, and a held event holds up every event behind it. A
registry commits an upload by renaming ``_uploads/<id>/data`` into ``blobs/``,
outside the watched tree, so every push produces a move that is never paired:
with the default, every change would reach the agent half a second late. The
two halves of a rename are queued together by the kernel; 20 ms is plenty.
"""


def _shorten_move_pairing_delay() -> None:
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # not Linux, or another watchdog version: keep its default
        return
    if getattr(InotifyMoveEventGrouper, "delay", 0) > MOVE_PAIRING_DELAY:
        InotifyMoveEventGrouper.delay = MOVE_PAIRING_DELAY
    # watchdog warns when a directory it already watches is added again (a new directory's walk); harmless.
    warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)

_WATCHED_EVENTS = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]
_MARKERS = ("/_manifests/tags/", "/_manifests/revisions/")


def repository_of(relative_key: str) -> str | None:
    """The repository a changed path under the registry root concerns, if it is a tag or revision path."""
    if not relative_key.startswith(REPOSITORIES_PREFIX):
        return None
    rest = relative_key[len(REPOSITORIES_PREFIX):]
    for marker in _MARKERS:
        repository, sep, _ = rest.partition(marker)
        if sep:
            break
    else:
        repository, sep, tail = rest.partition("/_manifests/")
        if not sep or tail not in ("tags", "revisions"):
            return None
    try:
        return validate_repository(repository)
    except InvalidPath:
        return None


class _Collector(FileSystemEventHandler):
    def __init__(self, root: str, found: Callable[[str], None]) -> None:
        self.root = root.rstrip("/") + "/"
        self.found = found

    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            if not path or not path.startswith(self.root):
                continue
            repository = repository_of(path[len(self.root):])
            if repository is not None:
                self.found(repository)


class RepositoryWatcher:
    """Watches a registry root; calls ``on_changes(repositories, initial)`` with batches of repositories."""

    def __init__(
        self,
        root: str | os.PathLike,
        on_changes: Callable[[list[str], bool], None],
        *,
        debounce: float = 0.1,
        on_error: Callable[[str], None] | None = None,
        list_repositories: Callable[[], Iterable[str]] | None = None,
        scan_at_start: bool = False,
    ) -> None:
        self.root = Path(root)
        self.repositories_dir = self.root / REPOSITORIES_PREFIX.rstrip("/")
        self.on_changes = on_changes
        self.debounce = debounce
        self.on_error = on_error or (lambda message: None)
        self.list_repositories = list_repositories
        self.scan_at_start = scan_at_start
        self._found: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observer: Observer | None = None
        self._thread: threading.Thread | None = None
        self.watching = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fs-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._stop_observer()

    def _note(self, repository: str) -> None:
        with self._lock:
            self._found.add(repository)

    def _run(self) -> None:
        initial = self.scan_at_start
        while not self._stop.is_set() and not self.watching.is_set():
            if self.repositories_dir.is_dir():
                if self._start_observer():
                    break
                return
            initial = True  # it appeared after we started: queue what is already there
            self._stop.wait(0.5)
        if self._stop.is_set():
            return
        if initial and self.list_repositories is not None:
            try:
                self._deliver(sorted(self.list_repositories()), True)
            except Exception as exc:  # the reconcile covers it
                self.on_error(f"listing repositories after the watch started: {exc}")
        while not self._stop.wait(self.debounce):
            with self._lock:
                batch, self._found = sorted(self._found), set()
            if batch:
                self._deliver(batch, False)
            observer = self._observer
            if observer is not None and not observer.is_alive():
                self.on_error("the filesystem observer stopped; filesystem events are off until restart")
                self.watching.clear()
                return

    def _deliver(self, batch: list[str], initial: bool) -> None:
        try:
            self.on_changes(batch, initial)
        except Exception as exc:
            log.error("could not queue filesystem changes for %d repositories: %s", len(batch), exc)
            with self._lock:
                self._found.update(batch)  # try again with the next batch

    def _start_observer(self) -> bool:
        _shorten_move_pairing_delay()
        observer = Observer()
        try:
            observer.schedule(
                _Collector(str(self.root), self._note), str(self.repositories_dir), recursive=True,
                event_filter=_WATCHED_EVENTS,
            )
            observer.start()
        except OSError as exc:
            self.on_error(f"cannot watch {self.repositories_dir}: {exc} (raise fs.inotify.max_user_watches?)")
            try:
                observer.stop()
            except Exception:
                pass
            return False
        self._observer = observer
        self.watching.set()
        log.info("watching %s for changes", self.repositories_dir)
        return True

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(10)

