"""The sidecar's work queue: one item per repository, coalesced, never worked on twice at once.

Every event source feeds :meth:`RepositoryQueue.add` (durable: the journal
records the change before ``add`` returns) or, for the periodic reconcile,
:meth:`RepositoryQueue.add_background` (not journaled: a restart reconciles
again). Workers call :meth:`take` and then :meth:`finish`.

Coalescing and timing, per repository:

- any number of changes to a repository waiting for a pass make one pass;
- a repository that is being synced is not handed out again until that pass
  finishes; changes that arrive meanwhile make exactly one more pass;
- *leading edge*: the first change to a quiet repository (none in the last
  ``settle`` seconds) is due at once, so an isolated push is copied without delay;
- *trailing debounce*: during a burst, the next pass waits until the repository
  has been quiet for ``settle`` seconds, but never more than ``max_delay`` after
  the first change it covers;
- a failed pass is retried with exponential backoff; after ``max_attempts`` the
  item is dropped (logged, and left to the next reconcile);
- event-driven items go before reconcile items.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .journal import Change, Journal, PassRecord

log = logging.getLogger(__name__)

RoundCallback = Callable[[str, bool], None]


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff after failed passes: ``base * 2**(attempt-1)``, capped; give up after ``max_attempts``."""

    base: float = 1.0
    cap: float = 300.0
    max_attempts: int = 10

    def delay(self, attempts: int) -> float:
        return min(self.cap, self.base * 2 ** max(0, attempts - 1))


@dataclass
class Ticket:
    """One pass handed to a worker: what it covers, for the journal and the lag measurement.

    ``tag_times``: tag -> when its earliest covered change happened (wall clock).
    ``expected``: tag -> the digest the latest covered notification announced for it.
    """

    repository: str
    generation: int
    trigger: str
    urgent: bool
    attempts: int
    first_event: float | None
    tag_times: dict[str, float]
    waiters: list[RoundCallback]
    started: float = field(default_factory=time.time)
    expected: dict[str, str] = field(default_factory=dict)
    delete_event: float | None = None  # the earliest delete notification this pass answers (wall clock)

    def event_time_of(self, tag: str) -> float | None:
        """When the change that this tag's publication answers happened (wall clock), if known."""
        return self.tag_times.get(tag, self.first_event)


@dataclass
class _Item:
    repository: str
    generation: int = 0
    urgent: bool = False
    triggers: list[str] = field(default_factory=list)
    first_event: float | None = None
    tag_times: dict[str, float] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)
    expected_times: dict[str, float] = field(default_factory=dict)
    attempts: int = 0
    due: float = 0.0
    deadline: float = math.inf
    waiters: list[RoundCallback] = field(default_factory=list)
    running: bool = False
    dirty: bool = False
    delete_event: float | None = None
    running_delete: bool = False  # the running pass answers a delete notification


class RepositoryQueue:
    def __init__(
        self,
        journal: Journal | None,
        *,
        settle: float = 0.25,
        max_delay: float = 3.0,
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.settle = settle
        self.max_delay = max_delay
        self.retry = retry
        self._clock = clock
        self._wall = wall
        self._items: dict[str, _Item] = {}
        self._last_change: dict[str, float] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.passes_started = 0

    # --- feeding -----------------------------------------------------------

    def restore(self) -> int:
        """Load the journal's pending rows (work acknowledged before a restart); returns how many."""
        if self.journal is None:
            return 0
        rows = self.journal.pending()
        now = self._clock()
        with self._cond:
            for row in rows:
                item = self._items.setdefault(row.repository, _Item(row.repository))
                item.generation = row.generation
                item.urgent = True
                item.triggers.append("journal")
                item.first_event = row.first_event if item.first_event is None else min(item.first_event, row.first_event)
                item.attempts = row.attempts
                item.due = now  # a restart retries at once: whatever failed may have been fixed
                item.deadline = min(item.deadline, now + self.max_delay)
            self._cond.notify_all()
        return len(rows)

    def add(self, changes: Sequence[Change], *, delay: float | None = None) -> None:
        """Durably accept changes (journal first; raises JournalError and changes nothing if that fails).

        ``delay``: the pass is due that many seconds from now, whatever the
        debounce says (a follow-up that waits for the source to catch up).
        """
        if not changes:
            return
        with self._cond:
            generations = self.journal.record_changes(changes) if self.journal is not None else {}
            now = self._clock()
            quiet_before = {
                change.repository: now - self._last_change.get(change.repository, -math.inf) >= self.settle
                for change in changes
            }
            for change in changes:
                item = self._items.get(change.repository)
                if item is None:
                    item = self._items[change.repository] = _Item(change.repository)
                if item.deadline == math.inf:
                    item.deadline = now + self.max_delay
                if delay is not None:
                    item.due = now + delay
                else:
                    item.due = now if quiet_before[change.repository] else min(now + self.settle, item.deadline)
                item.generation = generations.get(change.repository, item.generation)
                item.urgent = True
                item.dirty = item.dirty or item.running
                if change.source not in item.triggers:
                    item.triggers.append(change.source)
                item.first_event = change.event_time if item.first_event is None else min(item.first_event, change.event_time)
                if change.action == "delete":
                    item.delete_event = min(change.event_time, item.delete_event or change.event_time)
                if change.tag is not None:
                    item.tag_times.setdefault(change.tag, change.event_time)
                    if change.action == "push" and change.digest is not None:
                        if change.event_time >= item.expected_times.get(change.tag, -math.inf):
                            item.expected[change.tag] = change.digest
                            item.expected_times[change.tag] = change.event_time
                self._last_change[change.repository] = now
            if len(self._last_change) > 10_000:
                self._last_change = {r: t for r, t in self._last_change.items() if now - t < self.settle}
            self._cond.notify_all()

    def add_background(self, repository: str, on_done: RoundCallback | None = None) -> None:
        """Ask for a pass over ``repository`` that starts after this call (reconcile); not journaled."""
        with self._cond:
            item = self._items.get(repository)
            if item is None:
                item = self._items[repository] = _Item(repository, due=self._clock())
                item.triggers.append("reconcile")
            elif item.running:
                item.dirty = True
                if not item.urgent:
                    item.due = self._clock()
                if "reconcile" not in item.triggers:
                    item.triggers.append("reconcile")
            if on_done is not None:
                item.waiters.append(on_done)
            self._cond.notify_all()

    # --- working -----------------------------------------------------------

    def take(self, timeout: float | None = None) -> Ticket | None:
        """The next repository due for a pass, or None when closed or after ``timeout`` seconds."""
        end = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._closed:
                now = self._clock()
                best: _Item | None = None
                next_due = math.inf
                for item in self._items.values():
                    if item.running:
                        continue
                    if item.due > now:
                        next_due = min(next_due, item.due)
                        continue
                    if best is None or (item.urgent, -item.due) > (best.urgent, -best.due):
                        best = item
                if best is not None:
                    return self._start(best)
                wait = next_due - now
                if end is not None:
                    if now >= end:
                        return None
                    wait = min(wait, end - now)
                self._cond.wait(None if wait == math.inf else max(wait, 0.001))
            return None

    def _start(self, item: _Item) -> Ticket:
        ticket = Ticket(
            repository=item.repository,
            generation=item.generation,
            trigger="+".join(item.triggers) or "retry",
            urgent=item.urgent,
            attempts=item.attempts,
            first_event=item.first_event,
            tag_times=dict(item.tag_times),
            waiters=list(item.waiters),
            started=self._wall(),
            expected=dict(item.expected),
            delete_event=item.delete_event,
        )
        item.running = True
        item.running_delete = item.delete_event is not None
        item.dirty = False
        item.urgent = False
        item.triggers = []
        item.first_event = None
        item.tag_times = {}
        item.expected = {}
        item.expected_times = {}
        item.delete_event = None
        item.waiters = []
        item.deadline = math.inf
        self.passes_started += 1
        return ticket

    def finish(self, ticket: Ticket, record: PassRecord, *, ok: bool, published: Sequence[tuple[str, str]] = ()) -> None:
        """Settle a pass: journal it, then drop the item, schedule a retry, or run again for newer changes."""
        notify: list[RoundCallback] = ticket.waiters
        try:
            self._settle(ticket, record, ok=ok, published=published)
        finally:  # released even when the journal fails: a reconcile waiting for this pass must not wait for ever
            self._release(notify, ticket.repository, ok)

    def _settle(self, ticket: Ticket, record: PassRecord, *, ok: bool, published: Sequence[tuple[str, str]]) -> None:
        with self._cond:
            item = self._items[ticket.repository]
            attempts = 0 if ok else ticket.attempts + 1
            give_up = not ok and attempts >= self.retry.max_attempts
            retry_in = None if ok or give_up else self.retry.delay(attempts)
            try:
                if self.journal is not None:
                    self.journal.finish_pass(
                        record,
                        generation=ticket.generation,
                        published=published,
                        retry_at=None if retry_in is None else self._wall() + retry_in,
                        attempts=attempts,
                        drop=give_up,
                    )
            finally:
                item.running = False
                item.running_delete = False
                if give_up:
                    log.warning(
                        "giving up on %s after %d failed passes; the next reconcile will try again",
                        ticket.repository, attempts, extra={"repository": ticket.repository},
                    )
                if not item.dirty:
                    if ok or give_up:
                        del self._items[ticket.repository]
                    else:
                        self._requeue_failed(item, ticket, attempts, retry_in)
                else:
                    if not ok:
                        item.attempts = attempts if not give_up else 0
                        if retry_in is not None:
                            item.due = max(item.due, self._clock() + min(retry_in, self.max_delay))
                        self._merge_back(item, ticket)
                self._cond.notify_all()

    @staticmethod
    def _release(waiters: list[RoundCallback], repository: str, ok: bool) -> None:
        for waiter in waiters:
            try:
                waiter(repository, ok)
            except Exception:  # a round's bookkeeping must not kill a worker
                log.exception("reconcile callback failed")

    def _requeue_failed(self, item: _Item, ticket: Ticket, attempts: int, retry_in: float | None) -> None:
        item.attempts = attempts
        item.urgent = ticket.urgent
        item.due = self._clock() + (retry_in or 0.0)
        item.triggers = ["retry"]
        self._merge_back(item, ticket)

    @staticmethod
    def _merge_back(item: _Item, ticket: Ticket) -> None:
        if ticket.first_event is not None:
            item.first_event = ticket.first_event if item.first_event is None else min(item.first_event, ticket.first_event)
        for tag, when in ticket.tag_times.items():
            item.tag_times[tag] = min(when, item.tag_times.get(tag, when))
        for tag, digest in ticket.expected.items():
            item.expected.setdefault(tag, digest)
        if ticket.delete_event is not None:
            item.delete_event = min(ticket.delete_event, item.delete_event or ticket.delete_event)

    # --- observing and stopping ------------------------------------------

    def depth(self) -> int:
        """Repositories waiting for a pass (not counting those being synced)."""
        with self._cond:
            return sum(1 for item in self._items.values() if not item.running or item.dirty)

    def running(self) -> int:
        with self._cond:
            return sum(1 for item in self._items.values() if item.running)

    def deletes_pending(self) -> int:
        """Repositories with a delete notification that no finished pass has answered yet."""
        with self._cond:
            return sum(1 for item in self._items.values() if item.delete_event is not None or item.running_delete)

    def background_backlog(self) -> int:
        with self._cond:
            return sum(1 for item in self._items.values() if not item.urgent and not item.running)

    def wait_idle(self, timeout: float) -> bool:
        """Whether the queue became empty (nothing waiting, nothing running) within ``timeout``."""
        end = self._clock() + timeout
        with self._cond:
            while self._items:
                remaining = end - self._clock()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def wait_change(self, timeout: float) -> None:
        """Block until something in the queue changes, or ``timeout``."""
        with self._cond:
            self._cond.wait(timeout)

    def close(self) -> None:
        """Stop handing out work; waiting ``take`` calls return None. Pending work stays in the journal."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
