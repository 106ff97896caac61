"""Pass records: a pass after a dead or failed one writes the history links it left unwritten."""

from __future__ import annotations

import io
import json

import pytest

from backends import BackendError
from backends.memory import MemoryBackend
from syncagent.engine import Engine, SyncOptions
from syncagent.layout import Digest, TagIndexLink, key_of
from syncagent.pass_records import RECORDS_PREFIX, PassRecords, read_records
from syncagent.synthetic import TreeShape, write_tree
from syncagent.verify import verify_backend


class Recording(MemoryBackend):
    """A destination that records stats and can fail or interrupt the puts of chosen keys."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: list[str] = []
        self.failing = lambda key: False
        self.after_put = lambda key: None

    def stat(self, key):
        self.stats.append(key)
        return super().stat(key)

    def put(self, key, data, **kwargs):
        if self.failing(key):
            raise BackendError(f"{key}: Input/output error", key=key)
        info = super().put(key, data, **kwargs)
        self.after_put(key)
        return info


def sync(source, dest, **options):
    return Engine(source, dest, SyncOptions(**options)).run()


def history_keys(tree):
    return {
        key_of(TagIndexLink(repository, tag, Digest.parse(digest))): repository
        for repository, tags in tree.tags.items()
        for tag, digest in tags.items()
    }


def records(dest):
    return [info.key for info in dest.iter_objects(RECORDS_PREFIX)]


@pytest.fixture
def source():
    return MemoryBackend()


@pytest.fixture
def tree(source):
    return write_tree(source, TreeShape(repositories=3, tags_per_repository=2, layer_bytes=(100, 1000)))


def test_a_clean_pass_leaves_no_record_and_a_no_op_pass_checks_no_history(source, tree):
    dest = Recording()
    assert sync(source, dest).ok
    assert records(dest) == []
    dest.stats.clear()
    again = sync(source, dest)
    assert again.ok and again.counters["tags_up_to_date"] == 6
    assert not set(dest.stats) & set(history_keys(tree))
    assert records(dest) == []


def test_history_links_a_failed_pass_left_unwritten_are_written_by_the_next(source, tree):
    dest = Recording()
    keys = history_keys(tree)
    dest.failing = lambda key: key in keys
    first = sync(source, dest)
    assert {p.kind for p in first.problems} == {"write-failed"}
    assert all(not dest.exists(key) for key in keys)
    assert len(records(dest)) == 1  # a failed write keeps the record
    dest.failing = lambda key: False
    second = sync(source, dest)
    assert second.ok, second.problems
    assert second.counters["tags_up_to_date"] == 6 and second.counters["tags_published"] == 0
    assert second.counters["history_repaired"] == 6
    assert all(dest.exists(key) for key in keys)
    assert records(dest) == []  # both records are gone
    assert verify_backend(dest).ok


def test_a_pass_killed_between_current_link_and_history_link_is_finished_by_the_next(source, tree):
    dest = Recording()
    keys = history_keys(tree)
    currents = {key.split("/index/")[0] + "/current/link": key for key in keys}
    written: list[str] = []
    engine = Engine(source, dest, SyncOptions(jobs=1))

    def stop_after_fourth_tag(key):
        if key in currents:
            written.append(key)
            if len(written) == 4:
                engine.cancel()  # stopped right after a current/link: its history link is not written

    dest.after_put = stop_after_fourth_tag
    killed = engine.run()
    assert killed.interrupted
    current, victim = written[-1], currents[written[-1]]
    assert dest.exists(current) and not dest.exists(victim)
    left = records(dest)
    assert len(left) == 1
    assert json.loads(dest.read_bytes(left[0]))["scope"] == ["*"]
    dest.after_put = lambda key: None
    published = {k for k in keys if dest.exists(k)}
    assert published  # the killed pass had published other tags whole
    dest.stats.clear()
    resumed = sync(source, dest, jobs=1)
    assert resumed.ok, resumed.problems
    assert dest.exists(victim)
    assert resumed.counters["history_repaired"] == 1
    # Every up-to-date tag had its history link looked at (on RADOS that stat adds pending markers).
    assert {k for k in dest.stats if k in keys} == published | {victim}
    assert records(dest) == []


def test_a_record_is_checked_and_cleared_only_within_its_scope(source, tree):
    dest = MemoryBackend()
    assert sync(source, dest).ok
    keys = history_keys(tree)
    first, second = tree.repositories[0], tree.repositories[1]
    lost = {k: r for k, r in keys.items() if r in (first, second)}
    for key in lost:
        dest.delete(key)
    PassRecords(dest, (first,)).before_tag_write()  # as left by a dead pass limited to the first repository
    narrow = sync(source, dest, repositories=(second,))
    assert narrow.ok and narrow.counters["history_repaired"] == 0
    assert len(records(dest)) == 1  # a pass over the second does not cover the first's record
    own = sync(source, dest, repositories=(first,))
    assert own.counters["history_repaired"] == sum(1 for r in lost.values() if r == first) == 2
    assert records(dest) == []
    assert not any(dest.exists(k) for k, r in lost.items() if r == second)  # no record covered it


def test_an_unreadable_record_counts_as_a_pass_over_everything(source, tree):
    dest = MemoryBackend()
    assert sync(source, dest).ok
    victim = sorted(history_keys(tree))[-1]
    dest.delete(victim)
    dest.put(RECORDS_PREFIX + "garbled.json", io.BytesIO(b"\x00not json"), size=9)
    assert [r.scope for r in read_records(dest)] == [("*",)]
    report = sync(source, dest, repositories=(tree.repositories[0],))
    assert report.ok
    assert records(dest) == [RECORDS_PREFIX + "garbled.json"]  # a narrower pass cannot clear it
    report = sync(source, dest)
    assert report.counters["history_repaired"] == 1 and dest.exists(victim)
    assert records(dest) == []


def test_dry_run_plans_the_history_link_and_writes_nothing(source, tree):
    dest = MemoryBackend()
    assert sync(source, dest).ok
    victim = sorted(history_keys(tree))[0]
    dest.delete(victim)
    PassRecords(dest, ("*",)).before_tag_write()
    before = sorted(info.key for info in dest.iter_objects(""))
    report = sync(source, dest, dry_run=True)
    assert report.ok
    assert any(victim in line for line in report.planned)
    assert sorted(info.key for info in dest.iter_objects("")) == before


def test_the_sidecar_unit_keeps_a_record_of_its_own_repository(source, tree):
    dest = Recording()
    keys = history_keys(tree)
    repository = tree.repositories[1]
    dest.failing = lambda key: keys.get(key) == repository
    engine = Engine(source, dest, SyncOptions())
    engine.sync_repository(repository)
    assert [json.loads(dest.read_bytes(k))["scope"] for k in records(dest)] == [[repository]]
    dest.failing = lambda key: False
    engine = Engine(source, dest, SyncOptions())
    engine.sync_repository(repository)
    assert engine.report.ok and engine.report.counters["history_repaired"] == 2
    assert records(dest) == []
