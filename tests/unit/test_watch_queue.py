"""The sidecar's work queue: coalescing, one pass per repository at a time, debounce, retries, priorities."""

from __future__ import annotations

import threading

import pytest

from syncagent.sidecar.journal import Change, Journal, PassRecord
from syncagent.sidecar.workqueue import RepositoryQueue, RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def change(repository: str, tag: str | None = None, when: float = 1.0, source: str = "notification") -> Change:
    return Change(repository=repository, source=source, event_time=when, action="push", tag=tag)


def record(ticket, result: str = "ok") -> PassRecord:
    return PassRecord(ticket.repository, ticket.trigger, ticket.started, ticket.started, result)


@pytest.fixture
def journal(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite3")
    yield journal
    journal.close()


def make_queue(journal=None, **kwargs) -> tuple[RepositoryQueue, FakeClock]:
    clock = FakeClock()
    return RepositoryQueue(journal, clock=clock, **kwargs), clock


def test_ten_changes_to_one_repository_make_one_pass(journal):
    queue, clock = make_queue(journal, settle=0.5, max_delay=5)
    queue.add([change("group/app", f"v{i}", when=float(i)) for i in range(10)])
    ticket = queue.take(timeout=0)
    assert ticket is not None and ticket.repository == "group/app"
    assert ticket.first_event == 0.0 and set(ticket.tag_times) == {f"v{i}" for i in range(10)}
    assert queue.take(timeout=0) is None
    queue.finish(ticket, record(ticket), ok=True)
    assert queue.take(timeout=0) is None
    assert queue.depth() == 0 and journal.pending() == []
    assert journal.pass_count("group/app") == 1


def test_a_repository_is_never_handed_out_twice_at_once_but_others_are(journal):
    queue, clock = make_queue(journal, settle=0.0)
    queue.add([change("a")])
    first = queue.take(timeout=0)
    queue.add([change("a"), change("b")])
    second = queue.take(timeout=0)
    assert (first.repository, second.repository) == ("a", "b")
    assert queue.take(timeout=0) is None, "a is running: its new change must wait"
    queue.finish(first, record(first), ok=True)
    again = queue.take(timeout=0)
    assert again is not None and again.repository == "a", "changes during a pass make one more pass"
    queue.finish(again, record(again), ok=True)
    queue.finish(second, record(second), ok=True)
    assert queue.take(timeout=0) is None and journal.pending() == []


def test_changes_during_a_pass_keep_the_journal_row(journal):
    queue, clock = make_queue(journal, settle=0.0)
    queue.add([change("a")])
    ticket = queue.take(timeout=0)
    queue.add([change("a", "late")])
    queue.finish(ticket, record(ticket), ok=True)
    assert [row.repository for row in journal.pending()] == ["a"], "the late change is not covered by the finished pass"
    again = queue.take(timeout=0)
    assert again.tag_times == {"late": 1.0}
    queue.finish(again, record(again), ok=True)
    assert journal.pending() == []


def test_leading_edge_then_trailing_debounce_capped_by_max_delay():
    queue, clock = make_queue(settle=2.0, max_delay=3.0)
    queue.add([change("a")])
    first = queue.take(timeout=0)
    assert first is not None, "the first change to a quiet repository is due at once"
    for _ in range(5):  # a burst, one change every 0.5 s (0.5 .. 2.5), while and after the pass runs
        clock.now += 0.5
        queue.add([change("a")])
    queue.finish(first, record(first), ok=True)
    assert queue.take(timeout=0) is None, "the burst goes on"
    clock.now += 0.9
    assert queue.take(timeout=0) is None
    clock.now += 0.1
    assert queue.take(timeout=0) is not None, "3 s after the first change it covers, a pass starts, burst or not"


def test_trailing_debounce_waits_for_quiet():
    queue, clock = make_queue(settle=1.0, max_delay=10.0)
    queue.add([change("a")])
    queue.finish(t := queue.take(timeout=0), record(t), ok=True)
    clock.now += 0.2
    queue.add([change("a")])
    assert queue.take(timeout=0) is None, "a change 0.2 s after the last waits for quiet"
    clock.now += 0.9
    assert queue.take(timeout=0) is None
    clock.now += 0.2
    assert queue.take(timeout=0) is not None


def test_failed_pass_is_retried_with_backoff_then_dropped(journal):
    queue, clock = make_queue(journal, settle=0.0, retry=RetryPolicy(base=2.0, cap=60, max_attempts=3))
    queue.add([change("a")])
    ticket = queue.take(timeout=0)
    for attempt, delay in ((1, 2.0), (2, 4.0)):
        queue.finish(ticket, record(ticket, "problems"), ok=False)
        assert journal.pending()[0].attempts == attempt, "retry counts are durable"
        clock.now += delay - 0.1
        assert queue.take(timeout=0) is None, "not before the backoff"
        clock.now += 0.1
        ticket = queue.take(timeout=0)
        assert ticket is not None and ticket.attempts == attempt and ticket.trigger == "retry"
    queue.finish(ticket, record(ticket, "problems"), ok=False)
    assert journal.pending() == [] and queue.depth() == 0, "dropped after max_attempts; reconcile retries later"
    assert journal.pass_count("a") == 3


def test_event_driven_work_goes_before_reconcile_work():
    queue, clock = make_queue(settle=0.0)
    for name in ("r1", "r2", "r3"):
        queue.add_background(name)
    queue.add([change("urgent")])
    assert queue.take(timeout=0).repository == "urgent"


def test_reconcile_round_callback_runs_after_a_pass_that_started_later():
    queue, clock = make_queue(settle=0.0)
    queue.add([change("a")])
    running = queue.take(timeout=0)
    seen = []
    queue.add_background("a", lambda repository, ok: seen.append((repository, ok)))
    queue.finish(running, record(running), ok=True)
    assert seen == [], "the pass that was running when the round asked does not count"
    later = queue.take(timeout=0)
    assert later is not None
    queue.finish(later, record(later), ok=True)
    assert seen == [("a", True)]


def test_restore_after_restart_resumes_acknowledged_work(tmp_path):
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path)
    queue, _ = make_queue(journal)
    queue.add([change("a", "v1", when=5.0), change("b", when=6.0)])
    ticket = queue.take(timeout=0)  # a crash in the middle of this pass: finish is never called
    assert ticket is not None
    journal.close()
    reopened = Journal(path)
    try:
        queue2, _ = make_queue(reopened)
        assert queue2.restore() == 2
        taken = {queue2.take(timeout=0).repository, queue2.take(timeout=0).repository}
        assert taken == {"a", "b"}
    finally:
        reopened.close()


def test_take_blocks_until_work_arrives_and_close_releases_it():
    queue = RepositoryQueue(None, settle=0.0)
    got = []
    worker = threading.Thread(target=lambda: got.append(queue.take()))
    worker.start()
    queue.add([change("a")])
    worker.join(5)
    assert got and got[0].repository == "a"
    waiting = threading.Thread(target=lambda: got.append(queue.take()))
    waiting.start()
    queue.close()
    waiting.join(5)
    assert not waiting.is_alive() and got[1] is None


def test_a_journal_that_fails_to_record_a_pass_still_releases_the_reconcile_waiting_for_it(journal):
    from syncagent.sidecar.journal import JournalError

    queue, clock = make_queue(journal, settle=0.0)
    seen = []
    queue.add_background("a", lambda repository, ok: seen.append((repository, ok)))
    ticket = queue.take(timeout=0)

    def broken(*args, **kwargs):
        raise JournalError("disk I/O error")

    journal.finish_pass = broken
    with pytest.raises(JournalError):
        queue.finish(ticket, record(ticket), ok=True)
    assert seen == [("a", True)]
    assert queue.running() == 0
