"""``syncagent watch``: the sidecar that keeps a secondary registry's storage a faithful copy of the primary's.

::

    registry notifications ─┐  POST /events (auth, size limit, journal, then 200)
    filesystem events ──────┼─> RepositoryQueue ──> workers (N) ──> Engine.sync_repository(repo)
    periodic reconcile ─────┘   (journaled,          one pass per repository at a time,
                                 coalesced per repo)  a fresh Engine per pass

Each pass is the core engine's ordered, verified pass over one repository, so
the invariant holds unchanged: nothing is visible on the destination before
everything it needs is there. The journal (``journal.py``) keeps pending work
across restarts and ``kill -9``; the reconcile is the safety net for events
that were never delivered (the registry keeps undelivered notifications in
memory only).

Stopping (SIGTERM/SIGINT, :meth:`WatchService.request_stop`): ``/events``
answers 503 (the registry keeps the events and retries), no further pass
starts, running passes get ``shutdown_grace`` seconds to finish and are then
cancelled -- the engine's writes are atomic and ordered, so an abandoned pass
leaves nothing half-published, and its repository stays pending in the journal.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from backends import Backend, BackendError, NotFound, open_for_run

from ..sync.discovery import UnreadableLink, iter_repositories, read_link, read_repository
from ..sync.engine import Engine, SyncOptions
from .fsevents import RepositoryWatcher
from .listener import EndpointContext, ServiceHTTPServer, make_server
from .journal import Change, Journal, JournalError, PassRecord
from ..sync.layout import InvalidPath, TagCurrentLink, key_of
from .metrics import Metrics
from ..check.registry import TokenConfigurationError, check_published_tags, checker_from_settings
from .auth import Authenticator
from ..sync.records import EVERYTHING, PassRecords, UnfinishedPass, delete_records, load_records
from ..sync.policy import DEFERRED, DeleteAllowance, DeletePolicy
from ..sync.replica import mark_if_fresh
from ..sync.replication import copy_after_advice, holds_blobs, place_canary, replication_too_wide
from ..sync.report import Problem, Report
from ..sync.transfer import Cancelled
from .config import ConfigError, WatchConfig
from .workqueue import RepositoryQueue, RetryPolicy, Ticket

log = logging.getLogger("syncagent.sidecar.service")

LAST_RECONCILE_KEY = "last_reconcile_completed"
UNFINISHED_TTL = 60.0  # seconds the sidecar trusts its list of the destination's pass records
FOLLOW_UP_WINDOW = 30.0
MAX_LOGGED_PROBLEMS = 20
PRUNE_EVERY = 600.0


@dataclass
class _Probe:
    ok: bool = False
    detail: str = "not probed yet"
    checked: float = 0.0


class WaitBook:
    """The blobs passes are waiting for (blobs = external), each since the first pass that awaited it:
    a blob given up on by one pass and awaited again by its retry keeps its age, so the oldest wait
    can pass the deadline (``/healthz`` then says so). Entries no pass mentioned for ``horizon``
    seconds are forgotten (their tag went away). Thread-safe."""

    def __init__(self, *, horizon: float, clock=time.monotonic) -> None:
        self.horizon = horizon
        self._clock = clock
        self._since: dict[str, tuple[float, float]] = {}  # digest -> (first awaited, last mentioned)
        self._lock = threading.Lock()

    def note(self, event: str, data: dict) -> None:
        digest, now = data.get("digest"), self._clock()
        if not digest:
            return
        with self._lock:
            if event in ("waiting", "gave-up"):
                first = self._since.get(digest, (now, now))[0]
                self._since[digest] = (first, now)
            elif event in ("arrived", "copy-after-wait"):
                self._since.pop(digest, None)

    def status(self) -> tuple[int, float]:
        """Blobs awaited, and the age in seconds of the oldest wait (0 when none)."""
        now = self._clock()
        with self._lock:
            self._since = {d: t for d, t in self._since.items() if now - t[1] <= self.horizon}
            oldest = max((now - first for first, _ in self._since.values()), default=0.0)
            return len(self._since), oldest


@dataclass(frozen=True)
class _Emptying:
    """A repository gone from the source, all of whose tags and revisions a delete would remove."""

    repository: str
    holding: int

    @property
    def removing(self) -> int:
        return self.holding


def _held(dest: Backend, repository: str) -> int:
    state = read_repository(dest, repository)
    return len(state.tags) + len(state.revisions)


@dataclass
class _ReconcileRound:
    """The repositories one reconcile asked passes for, and how those passes went."""

    outstanding: int = 0
    failed: int = 0
    listed: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expect(self) -> None:
        with self.lock:
            self.outstanding += 1

    def finished(self, repository: str, ok: bool) -> None:
        with self.lock:
            self.outstanding -= 1
            self.failed += 0 if ok else 1
            if self.listed and self.outstanding == 0:
                self.done.set()

    def listing_complete(self) -> None:
        with self.lock:
            self.listed = True
            if self.outstanding == 0:
                self.done.set()


class WatchService:
    """Event sources, the work queue, workers, reconcile, health and the HTTP listener, wired together."""

    def __init__(self, config: WatchConfig, *, source: Backend | None = None, dest: Backend | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.options = SyncOptions(
            jobs=config.jobs, repositories=config.repositories, delete=config.delete, max_delete_share=config.max_delete,
            blobs=config.blobs, copy_after=config.copy_after, external_timeout=config.external_timeout, shard=config.shard,
        )
        try:
            self.checker = checker_from_settings(config)
        except TokenConfigurationError as exc:
            raise ConfigError(str(exc)) from None
        self.authenticator = Authenticator(config.auth_settings()) if config.notifications else None
        self.source = source or open_for_run(config.source, max_requests_per_second=config.max_requests_per_second,
                                             observer=self.metrics.request_observer("source"))
        self.dest = dest or open_for_run(config.destination, max_requests_per_second=config.max_requests_per_second,
                                         observer=self.metrics.request_observer("destination"))
        if config.fs_events == "on" and self.source.capabilities.local_root is None:
            raise ConfigError(f"fs_events is on but the source {self.source.url} is not on a local filesystem; "
                              "notifications and the reconcile follow it (set fs_events to auto or off)")
        self.journal = Journal(config.journal)
        self.queue = RepositoryQueue(
            self.journal,
            settle=config.settle,
            max_delay=config.max_delay,
            retry=RetryPolicy(base=config.retry_base, cap=config.retry_cap, max_attempts=config.max_attempts),
        )
        self.metrics.queue_depth.set_function(self.queue.depth)
        self.metrics.passes_in_progress.set_function(self.queue.running)
        self.metrics.deletes_pending.set_function(self.queue.deletes_pending)
        self.waits = WaitBook(horizon=2 * config.reconcile_interval + config.retry_cap + config.external_timeout)
        self.metrics.blobs_awaiting.set_function(lambda: self.waits.status()[0])
        self.metrics.blob_wait_oldest.set_function(lambda: self.waits.status()[1])
        self.metrics.tags_held_back.set_function(self._tags_held_back)
        self.stopping = threading.Event()
        self.abandoning = threading.Event()
        self.stopped = threading.Event()
        self._engines: dict[str, Engine] = {}
        self._engines_lock = threading.Lock()
        self._unfinished: list[UnfinishedPass] | None = None
        self._unfinished_read = 0.0
        self._history_gaps: set[str] = set()  # repositories whose last pass left history checks undone
        self._unfinished_lock = threading.Lock()
        self.allowance = DeleteAllowance(DeletePolicy(self.source, self.dest, config.max_delete, scope=self.options.wants))
        self._deferred_deletes: set[str] = set()  # deletes the allowance could not judge yet
        self._granted: set[str] = set()  # repositories gone from the source whose deletes were granted together
        self._deletes_lock = threading.Lock()
        self._too_wide = False
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._reconcile_thread: threading.Thread | None = None
        self._probes = {"source": _Probe(), "destination": _Probe()}
        self._last_reconcile: float | None = self.journal.get_float(LAST_RECONCILE_KEY)
        if self._last_reconcile is not None:
            self.metrics.last_reconcile.set(self._last_reconcile)
        self.watcher: RepositoryWatcher | None = None
        self.server: ServiceHTTPServer | None = None
        if config.listen:
            self.server = make_server(config.listen, self._endpoint_context())

    # --- life cycle ------------------------------------------------------------

    def start(self) -> "WatchService":
        self._mark_fresh_destination()
        if self.config.blobs == "external":
            why_not = place_canary(self.source)
            if why_not is not None:
                log.warning("%s", why_not)
            if self.config.copy_after is None:
                advice = copy_after_advice([], first_run=not holds_blobs(self.dest) and holds_blobs(self.source))
                if advice is not None:
                    log.warning("%s (option copy_after)", advice.reason)
        restored = self.queue.restore()
        if restored:
            log.info("resuming %d repositories pending in the journal", restored, extra={"pending": restored})
        if self.server is not None:
            self._spawn(self.server.serve_forever, "http", 0.2)
            log.info("listening on %s:%d (%s)", *self.server.server_address[:2],
                     "/events, /healthz, /livez, /metrics" if self.config.notifications else "/healthz, /livez, /metrics")
        for index in range(self.config.workers):
            self._workers.append(self._spawn(self._worker_loop, f"worker-{index}"))
        if self.config.reconcile_at_start or self.config.reconcile_interval > 0:
            self._reconcile_thread = self._spawn(self._reconcile_loop, "reconcile")
        if self.config.fs_events_enabled() and self.source.capabilities.local_root:
            self._start_fs_events()
        self._spawn(self._housekeeping_loop, "health")
        return self

    def _mark_fresh_destination(self) -> None:
        """Like ``syncagent sync``: a destination filled from empty carries the replica marker (replica.py)."""
        try:
            mark_if_fresh(self.dest, self.source.url)
        except BackendError as exc:
            log.warning("cannot check or write the replica marker on %s: %s", self.dest.url, exc)

    def _spawn(self, target, name: str, *args) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def request_stop(self, *, abandon: bool = False) -> None:
        """Stop taking work; with ``abandon``, also cancel running passes now instead of after the grace period."""
        if not self.stopping.is_set():
            log.info("stopping: no new passes; running passes have %.0f s to finish", self.config.shutdown_grace)
        self.stopping.set()
        self.queue.close()
        if abandon:
            self._abandon()

    def _abandon(self) -> None:
        if not self.abandoning.is_set():
            log.info("abandoning running passes (nothing is left half-published; they stay pending in the journal)")
        self.abandoning.set()
        with self._engines_lock:
            for engine in self._engines.values():
                engine.cancel()

    def wait_stopped(self, poll: float = 0.2) -> None:
        """Block until :meth:`request_stop`, then shut down in order. Signal handlers run meanwhile."""
        while not self.stopping.wait(poll):
            pass
        self.shutdown()

    def shutdown(self) -> None:
        self.request_stop()
        if self.watcher is not None:
            self.watcher.stop()
        deadline = time.monotonic() + self.config.shutdown_grace
        for worker in self._workers:
            while worker.is_alive() and time.monotonic() < deadline and not self.abandoning.is_set():
                worker.join(0.2)
        if any(worker.is_alive() for worker in self._workers):
            self._abandon()
            for worker in self._workers:
                worker.join(30)
        if self._reconcile_thread is not None:
            self._reconcile_thread.join(5)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.journal.close()
        for backend in (self.source, self.dest):
            try:
                backend.close()
            except Exception:
                pass
        self.stopped.set()
        log.info("stopped")

    # --- intake ----------------------------------------------------------------------

    def accept_changes(self, changes: Sequence[Change]) -> None:
        """Queue changes durably (journal first). Raises JournalError: then nothing was accepted."""
        wanted = [change for change in changes if self.options.wants(change.repository)]
        if not wanted:
            return
        self.queue.add(wanted)
        for change in wanted:
            self.metrics.events_received.labels(change.source).inc()
            log.debug("queued %s (%s %s)", change.repository, change.source, change.action or "change",
                      extra={"repository": change.repository, "tag": change.tag, "source": change.source})

    def _start_fs_events(self) -> None:
        root = self.source.capabilities.local_root
        assert root is not None, "checked when the service was made"

        def on_changes(repositories: list[str], initial: bool) -> None:
            now = time.time()
            if initial:
                for repository in repositories:
                    if self.options.wants(repository):
                        self.queue.add_background(repository)
                return
            self.accept_changes([Change(repository=r, source="fs", event_time=now, action="change") for r in repositories])

        def on_error(message: str) -> None:
            self.metrics.errors.labels("fs-events").inc()
            log.error("%s", message)

        self.watcher = RepositoryWatcher(
            root, on_changes, on_error=on_error,
            list_repositories=lambda: iter_repositories(self.source),
            scan_at_start=not self.config.reconcile_at_start,
        )
        self.watcher.start()

    # --- work ------------------------------------------------------------------

    def _worker_loop(self) -> None:
        while True:
            ticket = self.queue.take()
            if ticket is None:
                return
            try:
                self._run_pass(ticket)
            except Exception:  # a worker must survive anything a pass throws
                log.exception("unexpected failure around the pass over %s", ticket.repository)
                self.metrics.errors.labels("internal-error").inc()

    def _run_pass(self, ticket: Ticket) -> None:
        repository = ticket.repository
        report = Report()
        engine = Engine(self.source, self.dest, self.options, report)
        published: list[tuple[str, str]] = []

        def on_event(event: str, data: dict) -> None:
            if event == "count":
                self.metrics.count_engine_event(data["name"], data["amount"])
            elif event == "tag-published":
                published.append((data["tag"], data["digest"]))
                when = ticket.event_time_of(data["tag"]) if ticket.urgent else None
                if when is not None:
                    self.metrics.replication_lag.observe(max(0.0, time.time() - when))
                log.info("published %s:%s", repository, data["tag"],
                         extra={"repository": repository, "tag": data["tag"], "digest": data["digest"]})
            elif event == "tag-unpublished":
                log.warning("unpublished %s:%s (%s): the primary deleted it and collected its blobs before the delete "
                            "reached the destination", repository, data["tag"], data["digest"],
                            extra={"repository": repository, "tag": data["tag"], "digest": data["digest"]})
            elif event == "problem":
                problem: Problem = data["problem"]
                self.metrics.errors.labels(problem.kind).inc()
            elif event.startswith("wait-"):
                self.waits.note(event[len("wait-"):], data)
                if event == "wait-arrived":
                    self.metrics.blob_wait.observe(data["seconds"])

        report.subscribe(on_event)
        if self.checker is not None:
            check_published_tags(report, self.checker)
        with self._engines_lock:
            self._engines[repository] = engine
        if self.abandoning.is_set():
            engine.cancel()
        started_wall, started = time.time(), time.monotonic()
        result, detail = "ok", None
        try:
            deletes_first = self.config.delete and ticket.delete_event is not None
            if deletes_first:  # a delete on the primary: its blobs may go soon (GC), so its tags go first
                self._delete_in(engine, repository)
                self.metrics.delete_lag.observe(max(0.0, time.time() - ticket.delete_event))
            engine.sync_repository(repository, unfinished=self._unfinished_passes())
            if self.config.delete and not deletes_first and not engine.cancelled.is_set():
                self._delete_in(engine, repository)
        except Cancelled:
            result = "cancelled"
        except BackendError as exc:
            result, detail = "error", f"{type(exc).__name__}: {exc}"
            self.metrics.errors.labels("backend").inc()
        except Exception as exc:
            log.exception("unexpected error in the pass over %s", repository)
            result, detail = "error", repr(exc)
            self.metrics.errors.labels("internal-error").inc()
        finally:
            with self._engines_lock:
                self._engines.pop(repository, None)
            if getattr(engine, "records", None) is not None:
                self._update_unfinished(repository, engine.records)
        if engine.cancelled.is_set():
            result = "cancelled"
        elif result == "ok" and report.problems:
            result = "problems"
            detail = "; ".join(problem.describe() for problem in report.problems[:5])
        elapsed = time.monotonic() - started
        if self.config.blobs == "external" and self.config.copy_after is None:
            advice = copy_after_advice(report.problems, first_run=False)
            if advice is not None:
                log.warning("%s: %s (option copy_after)", repository, advice.reason, extra={"repository": repository})
        self.metrics.passes.labels(result).inc()
        self.metrics.pass_duration.observe(elapsed)
        self._log_pass(ticket, report, result, detail, elapsed)
        if result == "cancelled":
            return  # stays pending in the journal; the next start resumes it
        record = PassRecord(
            repository=repository, trigger=ticket.trigger, started=started_wall, finished=time.time(), result=result,
            tags_published=report.counters["tags_published"], bytes_copied=report.counters["bytes_copied"],
            problems=len(report.problems), detail=detail,
        )
        try:
            self.queue.finish(ticket, record, ok=result == "ok", published=published)
            racing = {p.tag for p in report.problems if p.kind in ("missing-link", "invalid-link") and p.tag}
            self._follow_up(ticket, ok=result == "ok", racing=racing)
        except JournalError as exc:
            self.metrics.errors.labels("journal").inc()
            log.error("cannot record the pass over %s in the journal: %s", repository, exc)

    def _delete_in(self, engine: Engine, repository: str) -> None:
        """The delete pass of one repository, drawing on the allowance (policy.py); one the allowance
        cannot judge yet is asked again when the reconcile completes."""
        with self._deletes_lock:
            granted = repository in self._granted
            self._granted.discard(repository)
        if engine.delete_in_repository(repository, None if granted else self.allowance) is DEFERRED:
            log.info("deletes in %s wait until a reconcile has measured the destination", repository,
                     extra={"repository": repository})
            with self._deletes_lock:
                self._deferred_deletes.add(repository)

    def _follow_up(self, ticket: Ticket, *, ok: bool, racing: set[str]) -> None:
        """Pass again soon over tags a notification announced but the pass could not publish yet.

        Distribution sends a manifest push event when the manifest is stored,
        *before* it writes the tag's links: a pass started by the event can find
        the tag missing, half-written (its index link without ``current/link``)
        or still at its old digest. Such tags get a follow-up pass -- at once if
        the source has caught up meanwhile, else after a short, growing delay --
        for at most ``FOLLOW_UP_WINDOW`` seconds after the event; then the
        reconcile is the safety net. ``racing``: tags the pass found
        half-written; after any other failure the retry backoff applies.
        """
        if not ticket.expected:
            return
        now = time.time()
        follow_ups: list[tuple[Change, float]] = []
        for tag, digest in sorted(ticket.expected.items()):
            try:
                key = key_of(TagCurrentLink(ticket.repository, tag))
            except InvalidPath:
                continue
            if self._link(self.dest, key) == digest:
                continue
            if not ok and tag not in racing:
                continue  # a failure the retry backoff handles
            source = self._link(self.source, key)
            when = ticket.tag_times.get(tag, now)
            if source is not None and source != digest:
                continue  # moved on: a later event covers it
            if now - when > FOLLOW_UP_WINDOW:
                log.warning("%s:%s was announced as %s %.0f s ago and is not at the source yet; the reconcile will look again",
                            ticket.repository, tag, digest, now - when, extra={"repository": ticket.repository, "tag": tag})
                continue
            delay = 0.0 if source == digest else min(1.0, max(0.05, (now - when) / 4))
            follow_ups.append((Change(ticket.repository, "follow-up", when, "push", tag, digest), delay))
        if follow_ups:
            log.debug("following up %s: %s", ticket.repository, ", ".join(c.tag or "" for c, _ in follow_ups))
            self.queue.add([change for change, _ in follow_ups], delay=min(delay for _, delay in follow_ups))

    @staticmethod
    def _link(backend: Backend, key: str, attempts: int = 1) -> str | None:
        try:
            return str(read_link(backend, key, attempts=attempts))
        except (NotFound, UnreadableLink):
            return None
        except BackendError as exc:
            log.debug("cannot read %s: %s", key, exc)
            return None

    def _log_pass(self, ticket: Ticket, report: Report, result: str, detail: str | None, elapsed: float) -> None:
        counters = report.counters
        extra = {
            "repository": ticket.repository, "trigger": ticket.trigger, "result": result,
            "seconds": round(elapsed, 3), "tags_published": counters["tags_published"],
            "blobs_copied": counters["blobs_copied"], "bytes_copied": counters["bytes_copied"],
        }
        message = "pass over %s (%s): %s in %.2fs, %d tags published, %d blobs (%d bytes) copied"
        args = (ticket.repository, ticket.trigger, result, elapsed, counters["tags_published"],
                counters["blobs_copied"], counters["bytes_copied"])
        if result in ("ok", "cancelled"):
            log.log(logging.INFO if counters["tags_published"] or result == "cancelled" else logging.DEBUG,
                    message, *args, extra=extra)
            return
        log.warning(message + ": %s", *args, detail, extra=extra)
        for problem in report.problems[:MAX_LOGGED_PROBLEMS]:
            log.warning("  %s", problem.describe(), extra={"repository": ticket.repository, **problem.as_dict()})

    # --- reconcile ---------------------------------------------------------------

    def _reconcile_loop(self) -> None:
        interval = self.config.reconcile_interval
        if self.config.reconcile_at_start:
            self._reconcile_guarded()
        if interval <= 0:
            return
        while not self.stopping.wait(interval):
            self._reconcile_guarded()

    def _reconcile_guarded(self) -> None:
        """One reconcile; whatever it raises is logged and counted, and the next one runs on time."""
        try:
            self.reconcile_once()
        except Exception:
            log.exception("unexpected failure in the reconcile")
            self.metrics.errors.labels("internal-error").inc()

    def reconcile_once(self) -> bool:
        """Ask for a pass over every source repository, wait for them all; True when every pass was clean."""
        started_wall, started = time.time(), time.monotonic()
        round_ = _ReconcileRound()
        records = self._refresh_unfinished()
        backlog_limit = 2 * self.config.workers
        listed = 0
        seen: set[str] = set()
        try:
            for repository in iter_repositories(self.source, self._reconcile_problem):
                seen.add(repository)
                if self.stopping.is_set():
                    return False
                if not self.options.wants(repository):
                    continue
                while self.queue.background_backlog() >= backlog_limit and not self.stopping.is_set():
                    self.queue.wait_change(0.5)
                round_.expect()
                self.queue.add_background(repository, round_.finished)
                listed += 1
        except NotFound:
            pass  # no repositories yet: an empty source is reconciled
        except BackendError as exc:
            self.metrics.errors.labels("reconcile").inc()
            log.error("reconcile could not list the source's repositories: %s", exc)
            return False
        round_.listing_complete()
        if not self._wait_round(round_):
            return False
        if self.config.delete:
            gone = self._repositories_gone_from_source(seen)
            if gone:
                second = _ReconcileRound()
                for repository in gone:
                    second.expect()
                    self.queue.add_background(repository, second.finished)
                    listed += 1
                second.listing_complete()
                if not self._wait_round(second):
                    return False
                round_.failed += second.failed
        self.allowance.renew()
        with self._deletes_lock:
            deferred, self._deferred_deletes = sorted(self._deferred_deletes), set()
        for repository in deferred:
            self.queue.add_background(repository)
        with self._unfinished_lock:
            gaps = sorted(self._history_gaps)
        if not gaps and not self.options.dry_run:
            if delete_records(self.dest, records, self.options.repositories or (EVERYTHING,), self.options.shard):
                self._forget_unfinished()
        elif gaps:
            log.warning("pass records kept: history checks undone in %s", ", ".join(gaps[:5]))
        finished = time.time()
        self._last_reconcile = finished
        try:
            self.journal.set_state(LAST_RECONCILE_KEY, repr(finished))
        except JournalError as exc:
            log.error("cannot record the reconcile in the journal: %s", exc)
        self.metrics.last_reconcile.set(finished)
        self.metrics.last_reconcile_duration.set(time.monotonic() - started)
        self.metrics.last_reconcile_problems.set(round_.failed)
        log.info("reconcile done: %d repositories in %.1fs, %d with problems", listed, time.monotonic() - started,
                 round_.failed, extra={"repositories": listed, "problems": round_.failed, "started": started_wall})
        return round_.failed == 0

    def _wait_round(self, round_: _ReconcileRound) -> bool:
        """Wait for every pass a reconcile asked for; False when the service stops meanwhile."""
        while not round_.done.wait(0.5):
            if self.stopping.is_set():
                return False
        return True

    def _unfinished_passes(self) -> list[UnfinishedPass]:
        """The destination's records of passes that did not finish (pass_records.py): read again
        once they are UNFINISHED_TTL seconds old, and kept up to date in between with what this
        process's passes did, so that a pass does not list them every time."""
        with self._unfinished_lock:
            if self._unfinished is None or time.monotonic() - self._unfinished_read > UNFINISHED_TTL:
                self._unfinished = load_records(self.dest)
                self._unfinished_read = time.monotonic()
            return list(self._unfinished)

    def _refresh_unfinished(self) -> list[UnfinishedPass]:
        """Read again as a reconcile starts: every pass of the reconcile checks the history links in
        their scope, so a clean one deletes the dead ones (a killed one-shot sync's included)."""
        with self._unfinished_lock:
            self._unfinished = None
        return self._unfinished_passes()

    def _update_unfinished(self, repository: str, records: PassRecords) -> None:
        """What one pass did to the records: left its own, deleted earlier ones, checked its history."""
        with self._unfinished_lock:
            if records.checked:
                self._history_gaps.discard(repository)
            else:
                self._history_gaps.add(repository)
            if self._unfinished is None:
                return
            gone = set(records.deleted) | {records.key}
            self._unfinished = [r for r in self._unfinished if r.key not in gone]
            if records.kept:
                self._unfinished.append(records.own_record())

    def _forget_unfinished(self) -> None:
        with self._unfinished_lock:
            self._unfinished = None

    def _repositories_gone_from_source(self, at_source: set[str]) -> list[str]:
        """Destination repositories the source no longer has, when the delete policy lets them all go
        (policy.py: asked for together, against the allowance; watch --delete)."""
        try:
            at_dest = [r for r in iter_repositories(self.dest) if self.options.wants(r)]
        except NotFound:
            return []
        except BackendError as exc:
            log.error("reconcile could not list the destination's repositories: %s", exc)
            return []
        gone = [r for r in at_dest if r not in at_source]
        if not gone:
            return []
        refusal = self.allowance.policy.pass_refusal(at_source, source_listed=True)
        if refusal is None:
            try:
                emptying = [_Emptying(r, _held(self.dest, r)) for r in gone]
            except BackendError as exc:
                refusal = f"cannot read the destination: {exc}"
        if refusal is None:
            self.allowance.measured()  # this reconcile's passes surveyed every repository of the source
            decision = self.allowance.request(emptying)
            refusal = "the destination is not measured yet" if decision is DEFERRED else decision
        if refusal:
            self.metrics.errors.labels("delete-refused").inc()
            log.error("reconcile refuses to delete %d repositories gone from the source: %s", len(gone), refusal)
            return []
        with self._deletes_lock:
            self._granted.update(gone)
        return gone

    def _reconcile_problem(self, problem: Problem) -> None:
        self.metrics.errors.labels(problem.kind).inc()
        log.warning("reconcile: %s", problem.describe())

    # --- health -----------------------------------------------------------------------

    def _housekeeping_loop(self) -> None:
        next_prune = time.monotonic() + PRUNE_EVERY
        while True:
            self._probe("source", self.source, missing_ok=False)
            self._probe("destination", self.dest, missing_ok=self.dest.capabilities.empty_prefixes)
            if self.config.blobs == "external":
                self._check_replication_scope()
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY
                try:
                    self.journal.prune()
                except JournalError as exc:
                    log.error("cannot prune the journal: %s", exc)
            if self.stopping.wait(self.config.health_interval):
                return

    def _check_replication_scope(self) -> None:
        """The canary on the destination means a replication rule wider than blobs/ (replication.py)."""
        try:
            problem = replication_too_wide(self.dest)
        except BackendError as exc:
            log.debug("cannot look for the replication canary: %s", exc)
            return
        too_wide = problem is not None
        if too_wide and not self._too_wide:
            self.metrics.errors.labels(problem.kind).inc()
            log.error("%s", problem.reason)
        self._too_wide = too_wide
        self.metrics.replication_too_wide.set(1 if too_wide else 0)

    def _tags_held_back(self) -> int:
        with self._engines_lock:
            engines = list(self._engines.values())
        return sum(engine.tags_pending() for engine in engines)

    def _probe(self, name: str, backend: Backend, *, missing_ok: bool) -> None:
        try:
            list(itertools.islice(backend.iter_children(""), 1))
            probe = _Probe(True, "reachable", time.monotonic())
        except NotFound:
            probe = _Probe(missing_ok, "does not exist yet" if missing_ok else "does not exist", time.monotonic())
        except Exception as exc:
            probe = _Probe(False, f"{type(exc).__name__}: {exc}"[:300], time.monotonic())
        if probe.ok != self._probes[name].ok and self._probes[name].checked:
            log.warning("%s %s: %s", name, "reachable again" if probe.ok else "unreachable", probe.detail)
        self._probes[name] = probe

    def health(self) -> tuple[bool, dict]:
        now = time.monotonic()
        stale_after = 3 * self.config.health_interval + 5
        checks: dict[str, dict] = {}
        ready = not self.stopping.is_set()
        for name, probe in self._probes.items():
            fresh = probe.checked and now - probe.checked <= stale_after
            ok = probe.ok and bool(fresh)
            checks[name] = {"ok": ok, "detail": probe.detail if fresh else f"no probe for {now - probe.checked:.0f}s"}
            ready = ready and ok
        max_age = self.config.reconcile_max_age
        last = self._last_reconcile
        age = None if last is None else max(0.0, time.time() - last)
        reconcile_ok = max_age is None or (age is not None and age <= max_age)
        checks["reconcile"] = {
            "ok": reconcile_ok, "last_completed": last, "age_seconds": None if age is None else round(age, 1),
            "max_age_seconds": max_age,
        }
        ready = ready and reconcile_ok
        if self.config.blobs == "external":
            awaiting, oldest = self.waits.status()
            replication_ok = oldest <= self.config.external_timeout and not self._too_wide
            checks["replication"] = {
                "ok": replication_ok, "blobs_awaiting": awaiting, "oldest_wait_seconds": round(oldest, 1),
                "deadline_seconds": self.config.external_timeout, "rule_too_wide": self._too_wide,
            }
            ready = ready and replication_ok
        alive, liveness = self.liveness()
        return ready and alive, {
            "ready": ready and alive, "live": alive, "checks": checks, **liveness,
        }

    def liveness(self) -> tuple[bool, dict]:
        workers = sum(1 for worker in self._workers if worker.is_alive())
        alive = workers == len(self._workers) or self.stopping.is_set()
        if self._reconcile_thread is not None and self.config.reconcile_interval > 0 and not self.stopping.is_set():
            alive = alive and self._reconcile_thread.is_alive()
        return alive, {
            "workers_alive": workers, "queue_depth": self.queue.depth(), "passes_running": self.queue.running(),
            "stopping": self.stopping.is_set(),
        }

    def _endpoint_context(self) -> EndpointContext:
        return EndpointContext(
            metrics=self.metrics,
            authenticator=self.authenticator,
            accept_changes=self.accept_changes,
            health=self.health,
            liveness=self.liveness,
            is_stopping=self.stopping.is_set,
            max_body=self.config.max_body,
            notifications_enabled=self.config.notifications,
        )
