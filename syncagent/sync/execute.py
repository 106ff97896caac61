"""The executor: runs a plan's steps, each once the steps it needs have succeeded.

Blob steps (copies, waits for replication) answer with futures; every other
step runs inline, on whichever thread advances the run, and answers with its
outcome -- or with a future of it, when its writes become durable later (a
destination that makes writes durable in batches: durability.py). A run never
blocks on a future: when nothing is ready it returns, and the completion of a
step's future schedules it again (``schedule``). So one tag
waiting for a large blob holds back nothing but the steps that need that blob
(no head-of-line blocking), and a repository waiting for blobs holds no thread.

Outcomes: a step succeeds, is *skipped* (an optional blob absent from
storage: what needs it carries on without it), or fails with a
:class:`StepFailed`. A failure propagates to every step that needs the failed
one, with the same reason; the :class:`Performer` reports the steps whose
failure is news (a tag not published, a revision not published...). An
exception other than StepFailed fails its step (and what needs it) as an
internal error, and nothing else.
"""

from __future__ import annotations

import enum
import heapq
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from .steps import BLOB_STEPS, Step
from .transfer import Cancelled

log = logging.getLogger(__name__)

Schedule = Callable[[Callable[[], None]], None]


class Outcome(enum.Enum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class StepFailed(Exception):
    """Why a step (and everything that needs it) did not happen.

    ``kind``: the problem kind a tag that needed the step is reported with, when
    not the default ``tag-not-published`` (``verify-failed``, ``write-failed``).
    """

    reason: str
    kind: str | None = None

    def __str__(self) -> str:
        return self.reason


class Performer(Protocol):
    """What each step does; the executor only orders them."""

    def start_blob(self, step: Step) -> "Future[Outcome]":
        """Begin a blob step; the future's result is DONE or SKIPPED, or it raises StepFailed."""

    def perform(self, step: Step, needs: Sequence[Outcome]) -> "Outcome | Future[Outcome]":
        """Run any other step (``needs``: the outcomes of the steps it needs, in order); raises StepFailed.

        A future stands for a step whose writes are not durable yet: it resolves (to the outcome, or
        raising StepFailed) once they are, and only then do the steps that need it run."""

    def failed(self, step: Step, failure: StepFailed, *, propagated: bool) -> None:
        """A step failed (``propagated``: because a step it needs failed): report what is news."""


class RepositoryRun:
    """One plan being executed. :meth:`start` returns a future that ends when every step has ended."""

    def __init__(self, steps: Sequence[Step], performer: Performer, schedule: Schedule, cancelled: threading.Event) -> None:
        self.steps = list(steps)
        self.performer = performer
        self.schedule = schedule
        self.cancelled = cancelled
        self.outcomes: list[Outcome | None] = [None] * len(self.steps)
        self.failures: dict[int, StepFailed] = {}
        self._waiting = [len(step.needs) for step in self.steps]
        self._dependents: list[list[int]] = [[] for _ in self.steps]
        for index, step in enumerate(self.steps):
            for need in step.needs:
                self._dependents[need].append(index)
        self._ready = [index for index, count in enumerate(self._waiting) if count == 0]  # a heap (sorted already)
        self._finished: list[tuple[int, Outcome, StepFailed | None]] = []
        self._remaining = len(self.steps)
        self._lock = threading.Lock()
        self._advancing = False
        self._scheduled = False  # an advance is scheduled and has not begun
        self.done: Future = Future()

    def pending(self, kind: type) -> int:
        """Steps of ``kind`` that have not ended yet."""
        return sum(1 for step, outcome in zip(self.steps, self.outcomes) if outcome is None and isinstance(step, kind))

    def start(self) -> Future:
        if not self.steps:
            self.done.set_result(None)
            return self.done
        self.advance()
        return self.done

    def advance(self) -> None:
        """Run every step that is ready, and settle the blob steps that finished; return when nothing
        more can happen now. Only one thread advances a run at a time; others hand over."""
        with self._lock:
            self._scheduled = False
            if self._advancing:
                return
            self._advancing = True
        try:
            while True:
                with self._lock:
                    finished, self._finished = self._finished, []
                    if not finished and not self._ready:
                        self._advancing = False
                        break
                for index, outcome, failure in finished:
                    self._settle(index, outcome, failure)
                while True:
                    with self._lock:
                        if not self._ready:
                            break
                        index = heapq.heappop(self._ready)  # plan order among the ready ones
                    self._run(index)
        except BaseException:
            with self._lock:
                self._advancing = False
            raise
        self._check_done()

    def _run(self, index: int) -> None:
        step = self.steps[index]
        if self.cancelled.is_set():
            self._settle(index, Outcome.FAILED, StepFailed("cancelled"))
            return
        if isinstance(step, BLOB_STEPS):
            try:
                future = self.performer.start_blob(step)
            except StepFailed as exc:
                self._settle(index, Outcome.FAILED, exc)
                return
            except Cancelled:
                self._settle(index, Outcome.FAILED, StepFailed("cancelled"))
                return
            future.add_done_callback(lambda f, index=index: self._step_finished(index, f))
            return
        needs = [self.outcomes[need] for need in step.needs]
        try:
            outcome = self.performer.perform(step, needs)  # type: ignore[arg-type]
        except StepFailed as exc:
            self._settle(index, Outcome.FAILED, exc)
        except Cancelled:
            self._settle(index, Outcome.FAILED, StepFailed("cancelled"))
        except Exception as exc:  # noqa: BLE001 - one step's surprise must not take the repository down
            log.exception("unexpected error in %r", step)
            self._settle(index, Outcome.FAILED, StepFailed(f"internal error: {type(exc).__name__}", kind="internal-error"))
        else:
            if isinstance(outcome, Future):
                outcome.add_done_callback(lambda f, index=index: self._step_finished(index, f))
            else:
                self._settle(index, outcome, None)

    def _step_finished(self, index: int, future: Future) -> None:
        failure = None
        try:
            outcome = future.result()
        except StepFailed as exc:
            outcome, failure = Outcome.FAILED, exc
        except Cancelled:
            outcome, failure = Outcome.FAILED, StepFailed("cancelled")
        except Exception as exc:  # noqa: BLE001
            log.error("unexpected error in %r: %r", self.steps[index], exc)
            outcome, failure = Outcome.FAILED, StepFailed(f"internal error: {type(exc).__name__}", kind="internal-error")
        with self._lock:
            self._finished.append((index, outcome, failure))
            handover = not self._advancing and not self._scheduled
            self._scheduled = self._scheduled or handover
        if handover:
            self.schedule(self.advance)

    def _settle(self, index: int, outcome: Outcome, failure: StepFailed | None, *, propagated: bool = False) -> None:
        """Record a step's end and pass it on to the steps that need it."""
        pending = [(index, outcome, failure, propagated)]
        while pending:
            index, outcome, failure, propagated = pending.pop()
            if self.outcomes[index] is not None:
                continue
            self.outcomes[index] = outcome
            self._remaining -= 1
            if failure is not None:
                self.failures[index] = failure
                if not self.cancelled.is_set():
                    self.performer.failed(self.steps[index], failure, propagated=propagated)
            for dependent in self._dependents[index]:
                if outcome is Outcome.FAILED:
                    pending.append((dependent, Outcome.FAILED, failure, True))
                    continue
                self._waiting[dependent] -= 1
                if self._waiting[dependent] == 0:
                    with self._lock:
                        heapq.heappush(self._ready, dependent)

    def _check_done(self) -> None:
        with self._lock:
            done = self._remaining == 0 and not self.done.done()
        if done:
            self.done.set_result(None)


def run_inline(steps: Sequence[Step], performer: Performer, cancelled: threading.Event) -> RepositoryRun:
    """Run ``steps`` to the end on this thread (waiting for blob steps): for the small plans of a repair."""
    ready = threading.Event()
    queue: list[Callable[[], None]] = []
    lock = threading.Lock()

    def schedule(fn: Callable[[], None]) -> None:
        with lock:
            queue.append(fn)
        ready.set()

    run = RepositoryRun(steps, performer, schedule, cancelled)
    done = run.start()
    done.add_done_callback(lambda _: ready.set())
    while not done.done():
        ready.wait(0.5)
        with lock:
            work, queue[:] = list(queue), []
            ready.clear()
        for fn in work:
            fn()
    return run


__all__ = ["Outcome", "Performer", "RepositoryRun", "Schedule", "StepFailed", "run_inline"]
