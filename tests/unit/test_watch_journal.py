"""The sidecar's SQLite journal: acknowledged work survives kill -9; generations decide what a pass covered."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from syncagent.sidecar.journal import Change, Journal, JournalError, PassRecord

ROOT = Path(__file__).resolve().parents[2]


def change(repository: str, when: float = 1.0, tag: str | None = None) -> Change:
    return Change(repository=repository, source="notification", event_time=when, action="push", tag=tag)


def test_generations_count_changes_and_a_pass_settles_only_what_it_saw(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    try:
        assert journal.record_changes([change("a", 5.0), change("a", 3.0), change("b")]) == {"a": 2, "b": 1}
        rows = {row.repository: row for row in journal.pending()}
        assert rows["a"].generation == 2 and rows["a"].first_event == 3.0 and rows["a"].last_event == 5.0
        record = PassRecord("a", "notification", 10.0, 11.0, "ok", tags_published=1)
        journal.record_changes([change("a")])  # arrives while the pass that started at generation 2 runs
        journal.finish_pass(record, generation=2, published=[("v1", "sha256:" + "1" * 64)])
        assert {row.repository for row in journal.pending()} == {"a", "b"}, "a newer change keeps the row"
        journal.finish_pass(record, generation=3)
        assert {row.repository for row in journal.pending()} == {"b"}
        assert journal.published("a") == {"v1": "sha256:" + "1" * 64}
        assert journal.pass_count("a") == 2 and journal.event_count() == 4
    finally:
        journal.close()


def test_failed_pass_keeps_the_row_with_its_retry_count(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    try:
        journal.record_changes([change("a")])
        journal.finish_pass(PassRecord("a", "n", 1, 2, "problems", detail="blob missing"), generation=1,
                            retry_at=100.0, attempts=1)
        row = journal.pending()[0]
        assert (row.attempts, row.not_before, row.last_error) == (1, 100.0, "blob missing")
        journal.finish_pass(PassRecord("a", "n", 1, 2, "problems"), generation=1, retry_at=200.0, attempts=5, drop=True)
        assert journal.pending() == []
    finally:
        journal.close()


def test_a_second_agent_cannot_open_the_same_journal(tmp_path):
    first = Journal(tmp_path / "j.sqlite3")
    try:
        with pytest.raises(JournalError, match="in use"):
            Journal(tmp_path / "j.sqlite3")
    finally:
        first.close()
    Journal(tmp_path / "j.sqlite3").close()


def test_prune_keeps_the_newest_rows(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    try:
        journal.record_changes([change(f"r{i}") for i in range(50)])
        journal.prune(events=10)
        assert journal.event_count() == 10
        assert len(journal.pending()) == 50, "pruning the log never drops pending work"
    finally:
        journal.close()


WRITER = textwrap.dedent(
    """
    import sys
    from syncagent.sidecar.journal import Change, Journal
    journal = Journal(sys.argv[1])
    for i in range(100000):
        journal.record_changes([Change(repository=f"repo{i}", source="notification", event_time=float(i))])
        print(i, flush=True)   # acknowledged: what a 200 would say
    """
)


def test_every_acknowledged_change_survives_kill_9(tmp_path):
    path = tmp_path / "j.sqlite3"
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    acknowledged: list[int] = []
    deadline = time.monotonic() + 30
    while len(acknowledged) < 30 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        acknowledged.append(int(line))
    process.send_signal(signal.SIGKILL)
    process.wait()
    acknowledged += [int(line) for line in process.stdout.read().split()]
    process.stdout.close()
    assert len(acknowledged) >= 30, "the writer did not get going"
    journal = Journal(path)
    try:
        pending = {row.repository for row in journal.pending()}
    finally:
        journal.close()
    assert {f"repo{i}" for i in acknowledged} <= pending
