"""Pass records: a pass after a dead or failed one writes the history links it left unwritten."""

from __future__ import annotations

import io
import json
import time

import pytest

from backends import BackendError, PermissionDenied
from backends.memory import MemoryBackend
from syncagent.sync import records as pass_records
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import Digest, TagCurrentLink, TagIndexLink, key_of
from syncagent.sync.records import RECORDS_PREFIX, STALE_AFTER, PassRecords, read_records
from tests.support.engine_checks import sync
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree
from syncagent.check.verify import verify_backend


class Recording(MemoryBackend):
    """A destination that records puts and stats, and can fail the puts or listings of chosen keys."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: list[str] = []
        self.puts: list[str] = []
        self.failing = lambda key: None  # -> an exception to raise, or None
        self.after_put = lambda key: None
        self.unlistable: set[str] = set()

    def stat(self, key):
        self.stats.append(key)
        return super().stat(key)

    def put(self, key, data, **kwargs):
        error = self.failing(key)
        if error is not None:
            raise error
        info = super().put(key, data, **kwargs)
        self.puts.append(key)
        self.after_put(key)
        return info

    def iter_children(self, prefix):
        if prefix in self.unlistable:
            raise BackendError(f"{prefix}: Access Denied", key=prefix)
        return super().iter_children(prefix)




def history_keys(tree):
    return {
        key_of(TagIndexLink(repository, tag, Digest.parse(digest))): repository
        for repository, tags in tree.tags.items()
        for tag, digest in tags.items()
    }


def records(dest):
    return sorted(info.key for info in dest.iter_objects(RECORDS_PREFIX))


def plant(dest, scope=("*",), *, host="another-host", age=STALE_AFTER + 60, name=None) -> str:
    """A record as a pass on ``host`` leaves it, last renewed ``age`` seconds ago (dead once stale)."""
    key = f"{RECORDS_PREFIX}{name or 'planted-' + str(len(records(dest)))}.json"
    content = json.dumps({"scope": list(scope), "host": host, "boot": "b", "pidns": "1", "pid": 1, "start": "1",
                          "started": time.time() - age, "renewed": time.time() - age}).encode()
    MemoryBackend.put(dest, key, io.BytesIO(content), size=len(content))
    return key


@pytest.fixture
def source():
    return MemoryBackend()


@pytest.fixture
def tree(source):
    return write_tree(source, TreeShape(repositories=3, tags_per_repository=2, layer_bytes=(100, 1000)))


def test_a_clean_pass_leaves_no_record_and_a_no_op_pass_writes_and_checks_nothing(source, tree):
    dest = Recording()
    assert sync(source, dest).ok
    assert records(dest) == []
    dest.stats.clear()
    dest.puts.clear()
    again = sync(source, dest)
    assert again.ok and again.counters["tags_up_to_date"] == 6
    assert dest.puts == []
    assert not set(dest.stats) & set(history_keys(tree))
    repair = sync(source, dest, verify_existing=True)  # reads every closure back, publishes nothing
    assert repair.ok and repair.counters["tags_published"] == 0
    assert dest.puts == []


def test_history_links_a_failed_pass_left_unwritten_are_written_by_the_next(source, tree):
    dest = Recording()
    keys = history_keys(tree)
    dest.failing = lambda key: BackendError(f"{key}: Input/output error", key=key) if key in keys else None
    first = sync(source, dest)
    assert {p.kind for p in first.problems} == {"write-failed"}
    assert all(not dest.exists(key) for key in keys)
    assert len(records(dest)) == 1  # a failed write keeps the record
    dest.failing = lambda key: None
    second = sync(source, dest)
    assert second.ok, second.problems
    assert second.counters["tags_up_to_date"] == 6 and second.counters["tags_published"] == 0
    assert second.counters["history_repaired"] == 6
    assert all(dest.exists(key) for key in keys)
    assert records(dest) == []  # both records are gone
    assert verify_backend(dest).ok


def test_a_pass_stopped_between_current_link_and_history_link_is_finished_by_the_next(source, tree):
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
    assert published  # the stopped pass had published other tags whole
    dest.stats.clear()
    resumed = sync(source, dest, jobs=1)
    assert resumed.ok, resumed.problems
    assert dest.exists(victim)
    assert resumed.counters["history_repaired"] == 1
    # The history link of every tag the destination held was looked at (on RADOS that stat adds pending markers).
    assert {k for k in dest.stats if k in keys} == published | {victim}
    assert records(dest) == []


def test_a_tag_moved_to_a_broken_image_after_a_dead_pass_still_gets_the_history_it_points_to(source):
    writer = TreeWriter(source)
    old, _ = writer.image("app", [b"one"], tag="v1")
    dest = MemoryBackend()
    assert sync(source, dest).ok
    dest.delete(key_of(TagIndexLink("app", "v1", old)))  # the dead pass moved v1 here and died
    planted = plant(dest)
    writer.image("app", [b"three"], tag="v1")
    source.delete(next(info.key for info in source.iter_objects("docker/registry/v2/blobs/")
                       if source.read_bytes(info.key) == b"three"))
    report = sync(source, dest)
    assert {p.kind for p in report.problems} >= {"tag-not-published"}
    assert dest.read_bytes(key_of(TagCurrentLink("app", "v1"))).decode() == str(old)
    assert dest.exists(key_of(TagIndexLink("app", "v1", old)))  # checked although the tag is not up to date
    assert planted not in records(dest)  # every history check ended: an unrelated problem keeps nothing


def test_a_record_is_checked_and_cleared_only_within_its_scope(source, tree):
    dest = MemoryBackend()
    assert sync(source, dest).ok
    keys = history_keys(tree)
    first, second = tree.repositories[0], tree.repositories[1]
    lost = {k: r for k, r in keys.items() if r in (first, second)}
    for key in lost:
        dest.delete(key)
    plant(dest, (first,))  # as left by a dead pass limited to the first repository
    narrow = sync(source, dest, repositories=(second,))
    assert narrow.ok and narrow.counters["history_repaired"] == 0
    assert len(records(dest)) == 1  # a pass over the second does not cover the first's record
    own = sync(source, dest, repositories=(first.split("/")[0][:-1] + "*",))  # a pattern that matches the first
    assert own.counters["history_repaired"] == sum(1 for r in lost.values() if r == first) == 2
    assert records(dest) == []
    assert not any(dest.exists(k) for k, r in lost.items() if r == second)  # no record covered it


def test_an_unreadable_record_counts_as_a_dead_pass_over_everything(source, tree):
    dest = MemoryBackend()
    assert sync(source, dest).ok
    victim = sorted(history_keys(tree))[-1]
    dest.delete(victim)
    dest.put(RECORDS_PREFIX + "garbled.json", io.BytesIO(b"\x00not json"), size=9)
    assert [(r.scope, r.dead) for r in read_records(dest)] == [(("*",), True)]
    report = sync(source, dest, repositories=(tree.repositories[0],))
    assert report.ok
    assert records(dest) == [RECORDS_PREFIX + "garbled.json"]  # a narrower pass cannot clear it
    report = sync(source, dest)
    assert report.counters["history_repaired"] == 1 and dest.exists(victim)
    assert records(dest) == []


def test_records_that_cannot_be_listed_make_a_pass_check_everything_and_delete_nothing(source, tree):
    dest = Recording()
    assert sync(source, dest).ok
    victim = sorted(history_keys(tree))[0]
    dest.delete(victim)
    dest.unlistable.add(RECORDS_PREFIX)
    report = sync(source, dest)
    assert report.ok and report.counters["history_repaired"] == 1 and dest.exists(victim)


def test_a_live_record_is_checked_against_but_never_deleted(source, tree):
    dest = MemoryBackend()
    assert sync(source, dest).ok
    victim = sorted(history_keys(tree))[0]
    dest.delete(victim)
    elsewhere = plant(dest, host="another-host", age=5)  # renewed 5 s ago on another host: alive
    here = PassRecords(dest, ("*",), [])  # a pass of this process, still running
    here.before_tag_write()
    report = sync(source, dest)
    assert report.ok and report.counters["history_repaired"] == 1 and dest.exists(victim)
    assert records(dest) == sorted([elsewhere, here.key])
    here.finish(wrote_all=True, checked_all=True)
    assert records(dest) == [elsewhere]
    assert [r.dead for r in read_records(dest)] == [False]


def test_records_of_failing_passes_do_not_pile_up(source, tree):
    dest = Recording()
    keys = history_keys(tree)
    dest.failing = lambda key: BackendError(f"{key}: Input/output error", key=key) if key in keys else None
    for _ in range(5):
        assert not sync(source, dest).ok
    assert len(records(dest)) == 1


def test_a_record_that_cannot_be_written_is_reported_once_and_tags_are_still_published(source, tree):
    dest = Recording()
    dest.failing = lambda key: PermissionDenied(f"{key}: AccessDenied", key=key) if key.startswith(RECORDS_PREFIX) else None
    report = sync(source, dest)
    assert report.counters["tags_published"] == 6
    assert [(p.kind, p.key.startswith(RECORDS_PREFIX)) for p in report.problems] == [("pass-record-failed", True)]
    assert "AccessDenied" in report.problems[0].reason
    assert sum(1 for key in dest.puts if key in history_keys(tree)) == 6


def test_a_record_is_renewed_while_its_pass_runs_and_when_it_fails(source, tree, monkeypatch):
    monkeypatch.setattr(pass_records, "RENEW_AFTER", 0.05)
    dest = Recording()
    dest.after_put = lambda key: key.endswith("/current/link") and time.sleep(0.1)  # a slow pass: 0.6 s
    assert sync(source, dest).ok
    assert sum(1 for key in dest.puts if key.startswith(RECORDS_PREFIX)) >= 4
    monkeypatch.setattr(pass_records, "RENEW_AFTER", 3600.0)
    dest = Recording()
    victim = sorted(history_keys(tree))[0]
    dest.failing = lambda key: BackendError(f"{key}: Input/output error", key=key) if key == victim else None
    report = sync(source, dest)
    assert not report.ok
    assert sum(1 for key in dest.puts if key.startswith(RECORDS_PREFIX)) == 2  # written, then renewed at the end


def test_a_record_renewed_during_a_pass_is_not_deleted_by_it(source, tree):
    dest = Recording()
    assert sync(source, dest).ok
    planted = plant(dest, name="slow")  # stale when the pass starts: taken for dead
    renewed = []

    def renew_once(key):
        if not renewed and key.endswith(".json") is False:
            renewed.append(plant(dest, host="another-host", age=0, name="slow"))  # its pass was alive after all

    dest.after_put = renew_once
    dest.delete(sorted(history_keys(tree))[0])  # gives the pass one write to do
    report = sync(source, dest)
    assert report.ok and report.counters["history_repaired"] == 1
    assert renewed and records(dest) == [planted]


def test_records_with_a_long_scope_are_recorded_as_everything(source, tree):
    dest = Recording()
    keys = history_keys(tree)
    dest.failing = lambda key: BackendError(f"{key}: Input/output error", key=key) if key in keys else None
    many = tuple(f"repo{i}" for i in range(100)) + tuple(tree.repositories)
    sync(source, dest, repositories=many)
    assert [json.loads(dest.read_bytes(k))["scope"] for k in records(dest)] == [["*"]]


@pytest.mark.parametrize("raw", [b'{"scope": ["*"], "host": "h", "boot": "b", "pidns": "1", "pid": 1e999, "start": "1", "renewed": 1}',
                                 b"[" * 100000, b'{"scope": 5}', b"\xff\xfe"])
def test_a_malformed_record_is_a_dead_pass_over_everything(raw):
    dest = MemoryBackend()
    dest.put(RECORDS_PREFIX + "bad.json", io.BytesIO(raw), size=len(raw))
    assert [(r.scope, r.dead) for r in read_records(dest)] == [(("*",), True)]


def test_a_record_is_judged_by_its_writer_identity():
    """Dead by its pid only on this host, boot and pid namespace; elsewhere by its renewal time."""
    import subprocess
    import sys

    from backends.processes import WriterIdentity

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    here = WriterIdentity.current()
    dest = MemoryBackend()

    def judged(identity: WriterIdentity, renewed: float) -> bool:
        content = json.dumps({"scope": ["*"], **identity.as_dict(), "started": renewed, "renewed": renewed}).encode()
        dest.put(RECORDS_PREFIX + "r.json", io.BytesIO(content), size=len(content))
        (record,) = read_records(dest)
        return record.dead

    gone = WriterIdentity(here.host, here.boot, here.pidns, child.pid, here.start)
    assert judged(gone, time.time())
    other_namespace = WriterIdentity(here.host, here.boot, here.pidns + "0", child.pid, here.start)
    assert not judged(other_namespace, time.time())
    assert judged(other_namespace, time.time() - STALE_AFTER - 60)
    assert judged(here, time.time())  # this process, and no pass of it running


def test_a_history_check_that_fails_keeps_the_records(source, tree):
    dest = Recording()
    assert sync(source, dest).ok
    planted = plant(dest)
    victim = sorted(history_keys(tree))[0]
    dest.delete(victim)
    dest.failing = lambda key: BackendError(f"{key}: Input/output error", key=key) if key == victim else None
    report = sync(source, dest)
    assert [p.kind for p in report.problems] == ["write-failed"]
    left = records(dest)
    assert planted in left or [json.loads(dest.read_bytes(k))["scope"] for k in left] == [["*"]]  # its own covers it
    dest.failing = lambda key: None
    again = sync(source, dest)
    assert again.ok and again.counters["history_repaired"] == 1 and dest.exists(victim)
    assert records(dest) == []


def test_dry_run_plans_the_history_link_and_writes_nothing(source, tree):
    dest = MemoryBackend()
    assert sync(source, dest).ok
    victim = sorted(history_keys(tree))[0]
    dest.delete(victim)
    plant(dest)
    before = sorted(info.key for info in dest.iter_objects(""))
    report = sync(source, dest, dry_run=True)
    assert report.ok
    assert any(victim in line for line in report.planned)
    assert sorted(info.key for info in dest.iter_objects("")) == before


def test_the_sidecar_unit_keeps_a_record_of_its_own_repository(source, tree):
    dest = Recording()
    keys = history_keys(tree)
    repository = tree.repositories[1]
    dest.failing = lambda key: BackendError(f"{key}: Input/output error", key=key) if keys.get(key) == repository else None
    engine = Engine(source, dest, SyncOptions())
    engine.sync_repository(repository)
    assert [json.loads(dest.read_bytes(k))["scope"] for k in records(dest)] == [[repository]]
    assert engine.records.kept
    dest.failing = lambda key: None
    engine = Engine(source, dest, SyncOptions())
    engine.sync_repository(repository, unfinished=read_records(dest))
    assert engine.report.ok and engine.report.counters["history_repaired"] == 2
    assert records(dest) == []


def test_the_sidecar_unit_keeps_its_record_when_its_pass_is_cancelled(source, tree):
    from syncagent.sync.transfer import Cancelled

    dest = Recording()
    repository = tree.repositories[0]
    engine = Engine(source, dest, SyncOptions())
    dest.after_put = lambda key: key.endswith("/current/link") and engine.cancel()
    with pytest.raises(Cancelled):
        engine.sync_repository(repository)
    assert len(records(dest)) == 1
