"""The replica marker when the destination fails, at the engine's level (memory backends as test doubles).

The CLI tests beside this one use a real full filesystem and a real RGW; these
run anywhere (no root, no Ceph) and reach the paths those cannot: a marker
that cannot be *read* (start of a pass, and the delete pass's safety checks),
and a gateway that keeps timing out (TransientError).
"""

from __future__ import annotations

import pytest

from backends import NotFound, TransientError
from backends.memory import MemoryBackend
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.replica import MARKER_KEY
from syncagent.testing.synthetic import TreeShape, write_tree

pytestmark = pytest.mark.faults


class FailingMarker(MemoryBackend):
    """A destination whose marker cannot be read or written (``fail_reads`` / ``fail_writes``)."""

    def __init__(self, *, fail_reads: bool = False, fail_writes: bool = False) -> None:
        super().__init__()
        self.fail_reads, self.fail_writes = fail_reads, fail_writes
        self.puts: list[str] = []

    def open_read(self, key):
        if key == MARKER_KEY and self.fail_reads:
            raise TransientError(f"{key}: read timed out", key=key)
        return super().open_read(key)

    def put(self, key, data, **kwargs):
        if key == MARKER_KEY and self.fail_writes:
            raise TransientError(f"{key}: PutObject failed: AWS_ERROR_HTTP_CHANNEL_THROUGHPUT_FAILURE", key=key)
        self.puts.append(key)
        return super().put(key, data, **kwargs)


@pytest.fixture
def source() -> MemoryBackend:
    backend = MemoryBackend()
    write_tree(backend, TreeShape(repositories=2, tags_per_repository=2))
    return backend


def kinds(report) -> list[tuple[str, str | None]]:
    return [(p.kind, p.key) for p in report.problems]


def test_a_marker_that_cannot_be_written_ends_the_pass_before_anything_is_written(source):
    dest = FailingMarker(fail_writes=True)
    report = Engine(source, dest).run()
    assert kinds(report) == [("write-failed", MARKER_KEY)]
    assert "cannot write the replica marker" in report.problems[0].reason
    assert dest.puts == [] and list(dest.iter_objects("")) == []
    assert report.counters["repositories"] == 0 and not report.ok


def test_a_marker_that_cannot_be_read_is_a_finding_and_the_pass_goes_on(source):
    dest = FailingMarker(fail_reads=True)
    report = Engine(source, dest).run()
    assert report.problems == [] and report.counters["tags_published"] == 4
    assert [(f.kind, f.key) for f in report.findings] == [("marker-unreadable", MARKER_KEY)]
    assert MARKER_KEY not in dest.puts


def test_the_delete_pass_reports_a_marker_it_cannot_read(source):
    dest = FailingMarker()
    assert Engine(source, dest).run().ok
    dest.fail_reads = True
    report = Engine(source, dest, SyncOptions(delete=True)).run()
    assert kinds(report) == [("delete-failed", MARKER_KEY)]
    assert "cannot read the replica marker" in report.problems[0].reason


def test_a_source_that_does_not_exist_writes_nothing_and_an_empty_one_marks_the_destination():
    dest = FailingMarker()
    report = Engine(MissingStore(), dest).run()
    assert [p.kind for p in report.problems] == ["read-failed"] and dest.puts == []
    assert Engine(MemoryBackend(), dest).run().ok  # no repositories, but it answers
    assert dest.puts == [MARKER_KEY]


class MissingStore(MemoryBackend):
    """A source whose root does not exist: every listing raises NotFound."""

    def iter_children(self, prefix):
        raise NotFound("the store does not exist", key=prefix)
